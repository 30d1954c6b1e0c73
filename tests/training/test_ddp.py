"""Multi-process training (Lightning Fabric DDP, gloo, 2 CPU processes) through the command line: the
ranks split each global batch, the log holds the global batch's loss, only rank 0 writes and speaks, the
loss curve equals a single process's with the same global batch (per-item draws), a run killed under
DDP resumes exactly, and early stopping ends every rank at one process's step."""

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import TINY_UNET, kill_when
from safetensors.torch import load_file

from cdtsde.training.batches import StepBatchSampler

pytestmark = pytest.mark.slow  # every test starts processes (gloo DDP, kills, resumes)

STEPS = 30


def test_the_ranks_split_the_single_process_batch_without_overlap():
    for step in (0, 3, 17):
        whole = StepBatchSampler(10, 8, seed=4, start_step=0, max_steps=20).batch(step)
        parts = [StepBatchSampler(10, 4, seed=4, start_step=0, max_steps=20, rank=rank, world_size=2).batch(step)
                 for rank in (0, 1)]
        assert parts[0] + parts[1] == whole


def write_config(path, batch_size, devices, checkpoint_every=5, **options):
    train = {"max_steps": STEPS, "batch_size": batch_size, "lr": 0.002, "warmup_steps": 2, "log_every": 1,
             "checkpoint_every": checkpoint_every, "sample_every": 0, **options}
    if devices > 1:
        train.update(devices=devices, strategy="ddp")
    path.write_text(yaml.safe_dump({"data": {"kind": "procedural", "task": "mri-phantom", "n": 64, "size": 16, "seed": 0},
                                    "model": {"field": {"variant": "linear"}, "unet": TINY_UNET}, "train": train}))
    return path


def losses(run):
    with open(run / "metrics.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def command(config, output, *extra):
    return [sys.executable, "-m", "cdtsde", "train", "--config", str(config), "--output", str(output), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    config = write_config(root / "ddp.yaml", batch_size=4, devices=2)
    result = subprocess.run(command(config, root / "run"), env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, config, result


def test_ddp_follows_one_process_with_the_same_global_batch(ddp_run, tmp_path):
    """Same items per step (2 ranks x 4 = 8) and the same per-item draws (cdtsde.draws): the curves agree to
    float tolerance, step by step (the gradient is averaged in another order)."""
    root, _, _ = ddp_run
    single = write_config(tmp_path / "single.yaml", batch_size=8, devices=1)
    subprocess.run(command(single, tmp_path / "single"), env=ENV, check=True, capture_output=True, timeout=300)
    ddp, one = losses(root / "run"), losses(tmp_path / "single")
    assert len(ddp) == len(one) == STEPS
    assert ddp == pytest.approx(one, rel=2e-5)  # measured: 1.9e-6, the log's six digits
    assert sum(ddp[-10:]) < 0.5 * sum(ddp[:10])
    a = load_file(str(root / "run" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=1e-3, atol=1e-5, msg=key)


def test_only_rank_zero_writes_and_reports(ddp_run):
    root, _, result = ddp_run
    assert result.stdout.count(f"step {STEPS}: loss") == 1 and result.stdout.count("training cdtsde on") == 1
    assert sorted(p.name for p in (root / "run").iterdir()) == ["config.yaml", "metrics.csv", "model",
                                                               "state-previous.pt", "state.pt"]
    assert [row.split(",")[0] for row in (root / "run" / "metrics.csv").read_text().splitlines()[1:]] == [
        str(step) for step in range(1, STEPS + 1)]


def test_a_ddp_run_killed_and_resumed_equals_the_uninterrupted_one(ddp_run, tmp_path):
    root, config, _ = ddp_run  # the uninterrupted run
    kill_when(command(config, tmp_path / "killed"), (tmp_path / "killed" / "state.pt").is_file, ENV)  # both ranks
    assert torch.load(tmp_path / "killed" / "state.pt", weights_only=False)["step"] < STEPS
    subprocess.run(command(config, tmp_path / "killed", "--resume"), env=ENV, check=True, capture_output=True,
                   timeout=300)
    a = load_file(str(root / "run" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    for key, tensor in a.items():
        assert torch.equal(b[key], tensor), key
    assert losses(tmp_path / "killed") == losses(root / "run")


def test_a_ddp_run_resumed_on_one_process_keeps_its_global_batch(ddp_run, tmp_path):
    """batch_size is per process: a 2 x 4 run resumes on one process only with batch_size 8 (told so
    otherwise), and then follows the uninterrupted 2-process run to float tolerance."""
    root, config, _ = ddp_run
    subprocess.run(command(config, tmp_path / "run", "--max-steps", "10"), env=ENV, check=True, capture_output=True,
                   timeout=300)
    refused = subprocess.run(command(write_config(tmp_path / "four.yaml", batch_size=4, devices=1), tmp_path / "run",
                                     "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert "global batch of 4 (train.batch_size 4 x 1 process(es)); the run's is 8" in refused.stderr
    assert "set train.batch_size: 8" in refused.stderr
    single = write_config(tmp_path / "eight.yaml", batch_size=8, devices=1)
    subprocess.run(command(single, tmp_path / "run", "--resume"), env=ENV, check=True, capture_output=True, timeout=300)
    assert losses(tmp_path / "run") == pytest.approx(losses(root / "run"), rel=2e-5)
    a = load_file(str(root / "run" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=1e-3, atol=1e-5, msg=key)


def test_under_ddp_every_rank_stops_where_one_process_stops(tmp_path):
    """Rank 0 validates and sends its row to rank 1: both end at the step one process with the same global
    batch ends at (the PSNR cannot rise by 10 dB: the best is the first validation, and 2 more end the run;
    a rank that went on would wait for the other forever), with the same validation rows."""
    validation = {"validation": {"every": 5, "items": 4, "nfe": 2},
                  "early_stopping": {"monitor": "val/psnr", "patience": 2, "min_delta": 10.0}}
    ends = {}
    for devices, batch_size in ((2, 4), (1, 8)):
        config = write_config(tmp_path / f"{devices}.yaml", batch_size=batch_size, devices=devices, **validation)
        result = subprocess.run(command(config, tmp_path / f"run{devices}"), env=ENV, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.count("best val/psnr") == 1
        with open(tmp_path / f"run{devices}" / "metrics.csv", newline="") as handle:
            ends[devices] = [(row["step"], float(row["val/psnr"])) for row in csv.DictReader(handle)
                             if row["val/psnr"] != ""]
    assert [step for step, _ in ends[2]] == [step for step, _ in ends[1]] == ["5", "10", "15"]
    assert [value for _, value in ends[2]] == pytest.approx([value for _, value in ends[1]], rel=1e-4)
