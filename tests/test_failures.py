"""Fault injection: what a kill, a damaged file, a changed configuration or a careless output path does,
each asserting the behaviour README's "Failure behaviour" section documents."""

import csv
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_UNET, InversionPairs, grey, kill_when, tiny_model, tiny_run_config, translate
from PIL import Image
from safetensors.torch import load_file

from cdtsde.cli import main
from cdtsde.errors import CdtsdeError
from cdtsde.methods import REGISTRY
from cdtsde.settings import from_plain
from cdtsde.training import TrainConfig, train
from cdtsde.translate import record_translations


def config(**overrides):
    options = dict(max_steps=8, batch_size=4, lr=2e-3, warmup_steps=2, log_every=2, sample_every=0,
                   checkpoint_every=3, seed=1)
    return TrainConfig(**{**options, **overrides})


def log_rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


class CrashingPairs(InversionPairs):
    """Raises (as a kill would stop the process) when the item `after` items from now is fetched."""

    def __init__(self, after, **kwargs):
        super().__init__(**kwargs)
        self.left = after

    def __getitem__(self, index):
        if self.left == 0:
            raise KeyboardInterrupt("killed")
        self.left -= 1
        return super().__getitem__(index)


def write_run_config(path, **train_options):
    path.write_text(yaml.safe_dump({
        "data": {"kind": "procedural", "task": "el-cell", "n": 24, "n_val": 4, "size": 16, "seed": 1},
        "model": {"field": {"variant": "linear"}, "unet": TINY_UNET},
        "train": {"max_steps": 6, "batch_size": 4, "log_every": 2, "checkpoint_every": 3, "sample_every": 0,
                  **train_options}}))
    return path


# --- training ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_minus_9_at_a_random_point_then_resume_equals_the_uninterrupted_run(tmp_path):
    """Through the CLI, in subprocesses: the run is killed with SIGKILL at a random moment after its first
    checkpoint, resumed, and ends with the same weights and the same log rows as a run never killed."""
    run_config = write_run_config(tmp_path / "run.yaml", max_steps=60, checkpoint_every=4, log_every=4)
    command = [sys.executable, "-m", "cdtsde", "train", "--config", str(run_config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--output", str(tmp_path / "straight")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    kill_when([*command, "--output", str(killed)], (killed / "state.pt").is_file, env,
              delay=random.Random(0).uniform(0.0, 0.3))
    state_step = torch.load(killed / "state.pt", weights_only=False)["step"]
    assert 0 < state_step < 60
    subprocess.run([*command, "--output", str(killed), "--resume"], check=True, env=env, capture_output=True)

    straight_weights = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed_weights = load_file(str(killed / "model" / "model.safetensors"))
    assert straight_weights.keys() == resumed_weights.keys()
    for key, tensor in straight_weights.items():
        assert torch.equal(resumed_weights[key], tensor), key
    straight_rows, resumed_rows = log_rows(tmp_path / "straight"), log_rows(killed)
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed_rows] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in straight_rows]
    assert not [p for p in killed.rglob(".*.tmp")]


def test_a_crash_between_checkpoints_loses_no_log_row_and_seconds_continue(tmp_path):
    """Logged every 2 steps, saved every 3: the run dies fetching step 6's batch (state at step 3, half of
    the step-4 row's interval inside it); resumed, its rows equal the straight run's, `seconds` keeps
    rising across the resume, and a temporary a kill left behind is removed."""
    straight = train(tiny_model(), InversionPairs(), config(), tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), CrashingPairs(after=5 * 4), config(), tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=False)["step"] == 3
    leftover = tmp_path / "b" / ".state.pt.k1ll3d.tmp"
    leftover.write_bytes(b"half a file")
    resumed = train(tiny_model(seed=5), InversionPairs(), config(), tmp_path / "b", resume=True, progress=False)
    assert resumed["losses"] == straight["losses"][3:]
    rows_a, rows_b = log_rows(tmp_path / "a"), log_rows(tmp_path / "b")
    assert [(r["step"], r["loss"]) for r in rows_b] == [(r["step"], r["loss"]) for r in rows_a]
    assert [r["step"] for r in rows_b] == ["2", "4", "6", "8"]
    seconds = [float(r["seconds"]) for r in rows_b]
    assert seconds == sorted(seconds) and seconds[1] >= seconds[0]
    assert not leftover.exists()


def test_a_truncated_state_falls_back_to_the_previous_checkpoint_with_a_warning(tmp_path):
    straight = train(tiny_model(), InversionPairs(), config(), tmp_path / "a", progress=False)
    train(tiny_model(), InversionPairs(), config(max_steps=6), tmp_path / "b", progress=False)
    state = tmp_path / "b" / "state.pt"
    assert torch.load(tmp_path / "b" / "state-previous.pt", weights_only=False)["step"] == 3
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"state.pt: cannot read the training state .*previous checkpoint "
                                         r"state-previous.pt \(step 3\)"):
        resumed = train(tiny_model(seed=5), InversionPairs(), config(), tmp_path / "b", resume=True, progress=False)
    assert resumed["losses"] == straight["losses"][3:]
    with pytest.raises(CdtsdeError, match="nothing to resume"):
        train(tiny_model(), InversionPairs(), config(), tmp_path / "empty", resume=True, progress=False)


def test_an_existing_run_is_neither_wiped_nor_continued_without_being_asked(tmp_path, capsys):
    run_config = write_run_config(tmp_path / "run.yaml")
    run = tmp_path / "run"
    command = ["train", "--config", str(run_config), "--output", str(run)]
    assert main([*command, "--max-steps", "3"]) == 0
    before = (run / "metrics.csv").read_text()
    assert main(command) == 2
    assert "already holds a training run; resume it (--resume) or start again (--overwrite" in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == before
    assert main([*command, "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    (run / "notes.txt").write_text("mine")
    (run / "snapshots" / "step-0000001").mkdir(parents=True)  # the old run's snapshots go with it
    assert main([*command, "--overwrite", "--max-steps", "2"]) == 0
    assert not (run / "snapshots").exists()
    assert [row["step"] for row in log_rows(run)] == ["2"]
    assert torch.load(run / "state.pt", weights_only=False)["step"] == 2
    assert not (run / "state-previous.pt").exists() and (run / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    assert main(["train", "--config", str(run_config), "--output", str(tmp_path / "file")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_a_resume_with_a_changed_configuration_lists_the_differences(tmp_path):
    train(tiny_model(), InversionPairs(), config(max_steps=3), tmp_path, progress=False)
    with pytest.raises(CdtsdeError, match=r"changed configuration \(train.lr: 0.002 -> 0.001; train.seed: 1 -> 2\)"):
        train(tiny_model(), InversionPairs(), config(lr=1e-3, seed=2), tmp_path, resume=True, progress=False)
    with pytest.raises(CdtsdeError, match=r"model.field.variant: 'dynamic' -> 'content'"):
        train(tiny_model(variant="content"), InversionPairs(), config(), tmp_path, resume=True, progress=False)
    with pytest.warns(UserWarning, match=r"train.log_every: 2 -> 1"):
        train(tiny_model(), InversionPairs(), config(max_steps=4, log_every=1), tmp_path, resume=True, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a longer run is what resuming is for: no warning
        train(tiny_model(), InversionPairs(), config(max_steps=5, log_every=1), tmp_path, resume=True, progress=False)
    # the per-process batch on as many processes: a different global batch, another run
    with pytest.raises(CdtsdeError, match=r"global batch of 8 \(train.batch_size 8 x 1 process\(es\)\); the run's is 4"):
        train(tiny_model(), InversionPairs(), config(max_steps=6, log_every=1, batch_size=8), tmp_path, resume=True,
              progress=False)


def test_a_longer_resume_with_a_decaying_rate_says_where_the_decay_now_ends(tmp_path):
    train(tiny_model(), InversionPairs(), config(max_steps=3, decay_steps=2), tmp_path, progress=False)
    with pytest.warns(UserWarning, match=r"train.max_steps: 3 -> 5 \(the learning rate's linear decay now ends"):
        train(tiny_model(), InversionPairs(), config(max_steps=5, decay_steps=2), tmp_path, resume=True,
              progress=False)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("batch_size", 0, "train.batch_size must be an integer >= 1, got 0"),
    ("log_every", 0, "train.log_every must be an integer >= 1, got 0"),
    ("checkpoint_every", -5, "train.checkpoint_every must be an integer >= 1, got -5"),
    ("max_steps", "100", "train.max_steps"),
    ("lr", -1e-3, "train.lr must be > 0, got -0.001"),
    ("ema_decay", 1.0, r"train.ema_decay must lie in \[0, 1\), got 1.0"),
    ("warmup_steps", -1, "train.warmup_steps must be an integer >= 0, got -1"),
])
def test_training_settings_are_range_checked_by_name(setting, value, message):
    with pytest.raises(ValueError, match=message):
        from_plain(TrainConfig, {setting: value}, "train")


def test_bad_settings_on_the_command_line_are_errors_not_tracebacks(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path), "--target", str(tmp_path), "--skeleton-tolerance", "-1"]) == 2
    assert "--skeleton-tolerance must be >= 0 pixels, got -1.0" in capsys.readouterr().err
    assert main(["demo", "--steps", "0", "--output", str(tmp_path / "demo")]) == 2
    assert "steps must be an integer >= 1, got 0" in capsys.readouterr().err
    run_config = write_run_config(tmp_path / "run.yaml", batch_size=0)
    assert main(["train", "--config", str(run_config), "--output", str(tmp_path / "run")]) == 2
    assert "train.batch_size must be an integer >= 1, got 0" in capsys.readouterr().err
    run_config = write_run_config(tmp_path / "gpu.yaml", accelerator="gpu")
    if not torch.cuda.is_available():
        assert main(["train", "--config", str(run_config), "--output", str(tmp_path / "gpu")]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


# --- translation ------------------------------------------------------------------------------------------

def test_existing_translations_are_kept_unless_overwrite_is_given(model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for index in range(2):
        grey(tmp_path / "in" / f"x{index}.png", seed=index)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x1.png").write_bytes(b"an earlier result")
    record_translations(out, ["x1.png"])  # as a translation into `out` records its files
    assert translate(model_dir, tmp_path / "in", out) == 2
    err = capsys.readouterr().err
    assert "1 output file(s) exist already" in err and "pass --overwrite to replace them" in err
    assert (out / "x1.png").read_bytes() == b"an earlier result" and not (out / "x0.png").exists()
    assert translate(model_dir, tmp_path / "in", out, "--overwrite") == 0
    assert Image.open(out / "x1.png").size == (16, 16)


def test_outputs_never_replace_or_sit_inside_the_inputs(model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    source = grey(tmp_path / "in" / "a.png")
    original = source.read_bytes()
    for output in (tmp_path / "in", tmp_path / "in" / "translated"):
        assert translate(model_dir, tmp_path / "in", output, "--overwrite") == 2
        assert "is the input folder" in capsys.readouterr().err
    assert translate(model_dir, source, tmp_path / "in", "--overwrite") == 2  # one file, its own folder
    assert "would replace its input" in capsys.readouterr().err
    assert source.read_bytes() == original and not (tmp_path / "in" / "translated").exists()
    (tmp_path / "file").write_text("")
    assert translate(model_dir, source, tmp_path / "file") == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_two_inputs_that_would_write_one_file_are_refused_before_any_work(model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    grey(tmp_path / "in" / "x.png")
    Image.open(tmp_path / "in" / "x.png").convert("L").save(tmp_path / "in" / "x.jpg")
    grey(tmp_path / "in" / "y.png", seed=1)
    assert translate(model_dir, tmp_path / "in", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "x.jpg and" in err and "x.png would all be written to" in err and "out/x.png" in err
    assert not list((tmp_path / "out").glob("*"))
    (tmp_path / "std").mkdir()  # with --samples 2, a.png's uncertainty map is a_std.tif
    grey(tmp_path / "std" / "a.png")
    np.save(tmp_path / "std" / "b.npy", np.zeros((16, 16), np.float32))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "std" / "a_std.tif", np.zeros((16, 16), np.float32))
    assert translate(model_dir, tmp_path / "std", tmp_path / "out2", "--samples", "2") == 2
    assert "a_std.tif would all be written to" in capsys.readouterr().err


def test_a_non_finite_translation_is_a_reported_failure_not_a_black_image(model_dir, tmp_path, capsys, monkeypatch):
    from cdtsde import translate as translate_module

    original = translate_module.translate_slices

    def broken(*args, **kwargs):
        result = original(*args, **kwargs)
        result.mean[...] = np.nan
        return result

    monkeypatch.setattr(translate_module, "translate_slices", broken)
    grey(tmp_path / "a.png")
    assert translate(model_dir, tmp_path / "a.png", tmp_path / "out") == 1
    assert "a.png: the translation holds NaN or infinite values" in capsys.readouterr().out
    assert not (tmp_path / "out" / "a.png").exists()


def test_bad_translate_flags_are_named(model_dir, tmp_path, capsys):
    grey(tmp_path / "a.png")
    assert translate(model_dir, tmp_path / "a.png", tmp_path / "out", "--batch-size", "0") == 2
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err
    assert translate(model_dir, tmp_path / "a.png", tmp_path / "out", "--device", "tpu9") == 2
    assert "--device 'tpu9': not a device name" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert translate(model_dir, tmp_path / "a.png", tmp_path / "out", "--device", "cuda") == 2
        assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


# --- masks ------------------------------------------------------------------------------------------------

def test_data_inspect_fails_on_mask_values_outside_the_declared_classes(tmp_path, capsys):
    for side in ("source", "target"):
        (tmp_path / side).mkdir()
    for index in range(3):
        grey(tmp_path / "source" / f"m{index}.png", seed=index)
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 7 if index == 1 else 1
        Image.fromarray(mask).save(tmp_path / "target" / f"m{index}.png")
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(
        {"kind": "paired-folder", "root": ".", "classes": ["background", "crack"], "val_fraction": 0.0,
         "test_fraction": 0.0}))
    assert main(["data", "inspect", str(tmp_path), "--grid", str(tmp_path / "grid.png")]) == 1
    out = capsys.readouterr().out
    assert "m1.png" in out and "mask values 0..7 outside the 2 declared classes 0..1" in out


def test_evaluate_masks_refuses_grey_images_and_undeclared_values(tmp_path, capsys):
    for folder in ("pred", "truth"):
        (tmp_path / folder).mkdir()
        grey(tmp_path / folder / "a.png", seed=0)  # 8-bit grey: about 200 distinct values
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "truth"), "--kind", "mask",
                 "--out", str(tmp_path / "scores.json")]) == 2
    captured = capsys.readouterr()
    assert "distinct values, not a class-index mask" in captured.out + captured.err
    mask = np.zeros((16, 16), np.uint8)
    mask[:4] = 3
    for folder in ("pred", "truth"):
        Image.fromarray(mask).save(tmp_path / folder / "a.png")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "truth"), "--kind", "mask",
                 "--classes", "0:background,1:crack", "--out", str(tmp_path / "scores.json")]) == 2
    captured = capsys.readouterr()
    assert "mask values [3] are not among the declared classes [0, 1]" in captured.out + captured.err


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("config", "unet.base_channels", "x", "model.unet.base_channels must be an integer, got 'x'"),
    ("data", "target_channels", "3", "data.target_channels must be an integer, got '3'"),
    ("sampling", "steps", -2, "steps must be an integer >= 1, got -2"),
    ("data", "source_reading", {"kind": "zip"}, "unknown input reading 'zip'"),
    ("data", "target_reading", {"kind": "optical", "gain": 2}, "unknown data.target_reading option"),
])
def test_a_checkpoint_config_with_wrong_values_is_named(model_dir, section, key, value, message):
    import json

    from cdtsde.training import load_pretrained

    record = json.loads((model_dir / "config.json").read_text())
    *parents, last = key.split(".")
    place = record[section]
    for parent in parents:
        place = place[parent]
    place[last] = value
    (model_dir / "config.json").write_text(json.dumps(record))
    with pytest.raises(CdtsdeError, match=f"config.json: invalid cdtsde configuration .*{message}"):
        load_pretrained(model_dir)


def numeric_settings(cls, prefix=""):
    """(dotted name, int or float) of every number among a configuration dataclass's settings, nested ones too."""
    import dataclasses
    import types
    import typing

    from cdtsde.settings import _hints

    hints = _hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        annotation = hints[field.name]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if dataclasses.is_dataclass(annotation):
            yield from numeric_settings(annotation, f"{prefix}{field.name}.")
        elif annotation in (int, float):
            yield f"{prefix}{field.name}", annotation


def test_no_numeric_setting_of_any_method_accepts_minus_one_or_nan():
    """Every number in every registered method's model and sampling options refuses -1 and (floats) NaN,
    with the setting named: the generic rule (finite, integers >= 0) and each class's own ranges."""
    from cdtsde.methods import method_classes

    checked = 0
    for cls in method_classes():
        for section, options in (("model", cls.config_class), ("sampling", cls.sampling_class)):
            for name, kind in numeric_settings(options):
                for bad in (-1, float("nan")) if kind is float else (-1,):
                    plain = bad
                    for part in reversed(name.split(".")):
                        plain = {part: plain}
                    with pytest.raises(ValueError, match=name.rpartition(".")[2]):
                        from_plain(options, plain, section)
                    checked += 1
    assert checked > 100


@pytest.mark.slow
def test_a_translation_killed_midway_leaves_only_whole_files_and_continues_with_skip_existing(model_dir, tmp_path):
    """SIGKILL while a folder is translated (subprocess): every file already in the output is complete and
    equals the uninterrupted run's; `--skip-existing` translates the rest, leaving no temporaries."""
    (tmp_path / "in").mkdir()
    for index in range(40):
        grey(tmp_path / "in" / f"x{index:02d}.png", seed=index, size=32)
    command = [sys.executable, "-m", "cdtsde", "translate", "--checkpoint", str(model_dir), "--input",
               str(tmp_path / "in"), "--steps", "20"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--output", str(tmp_path / "straight")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    kill_when([*command, "--output", str(killed)], lambda: len(list(killed.glob("*.png"))) >= 3, env)
    done = sorted(p.name for p in killed.glob("*.png"))
    assert 3 <= len(done) < 40
    for name in done:
        assert (killed / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    result = subprocess.run([*command, "--output", str(killed), "--skip-existing"], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert f"{len(done)} of 40 file(s) already translated" in result.stdout
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in (tmp_path / "straight").iterdir())
    for path in (tmp_path / "straight").iterdir():
        assert (killed / path.name).read_bytes() == path.read_bytes()
    assert main(["translate", "--checkpoint", str(model_dir), "--input", str(tmp_path / "in"), "--output",
                 str(killed), "--overwrite", "--skip-existing"]) == 2


@pytest.mark.parametrize("name", REGISTRY)
def test_one_configuration_trains_to_bit_identical_weights_for_every_method(name, tmp_path):
    """`train.seed` fixes the initialisation, the batches and every draw: two runs of one run configuration
    (built from scratch, the global RNG disturbed in between) end with equal weights, for each method."""
    from cdtsde.run import build_run

    config = tiny_run_config(name, size=32)
    weights = []
    for run in ("a", "b"):
        torch.rand(10)  # whatever happened before must not matter
        method, train_set, _, train_config = build_run(config)
        train(method, train_set, train_config, tmp_path / run, progress=False)
        weights.append(load_file(str(tmp_path / run / "model" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for key, tensor in weights[0].items():
        assert torch.equal(weights[1][key], tensor), key


def test_an_unwritable_output_is_refused_before_any_work(model_dir, tmp_path, capsys, monkeypatch):
    """(chmod does not stop root, who runs CI: the write probe itself is made to fail.)"""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    grey(tmp_path / "a.png")
    run_config = write_run_config(tmp_path / "run.yaml")
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert translate(model_dir, tmp_path / "a.png", tmp_path / "out") == 2
    assert "cannot write there (Permission denied)" in capsys.readouterr().err
    assert main(["train", "--config", str(run_config), "--output", str(tmp_path / "run")]) == 2
    assert "cannot write the run there (Permission denied)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "state.pt").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("n", "8", "n must be an integer >= 1, got '8'"),
    ("size", 0, "size must be an integer >= 1, got 0"),
    ("seed", -3, "seed must be an integer >= 0, got -3"),
    ("heterogeneity", 1.5, r"heterogeneity must be a number in \[0, 1\], got 1.5"),
    ("hflip", "yes", "hflip must be true or false, got 'yes'"),
])
def test_data_spec_values_are_checked_by_name(key, value, message):
    from cdtsde.data import build_dataset

    spec = {"kind": "procedural", "task": "mri-phantom", "n": 8, "size": 16, key: value}
    with pytest.raises(CdtsdeError, match=f"data.{message}"):
        build_dataset(spec, "train")


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("paired-folder", [0, 1], r"value_range must be \{source: \[low, high\], target: \[low, high\]\}"),
    ("paired-folder", {"source": [1, 1]}, r"value_range must be \{source"),
    ("list-file", {"sources": [0, 1]}, r"value_range must be \{source"),
    ("image-folder", {"source": [0, 1]}, r"value_range must be \[low, high\] with low < high"),
    ("image-folder", [0, float("nan")], r"value_range must be \[low, high\]"),
])
def test_value_ranges_are_checked_by_form_and_order(kind, value, message):
    from cdtsde.data.specs import data_spec

    spec = {"kind": kind, "root": "data"} if kind != "list-file" else {"kind": kind, "list": "pairs.txt"}
    with pytest.raises(CdtsdeError, match=f"data.{message}"):
        data_spec({**spec, "value_range": value})
    good = data_spec({**spec, "value_range": [0, 4000] if kind == "image-folder" else {"target": [0, 4000]}})
    assert good.value_range == (0.0, 4000.0) if kind == "image-folder" else good.value_range.target == (0.0, 4000.0)


def test_held_out_counts_and_names_are_both_accepted_and_other_values_named(tmp_path):
    from cdtsde.data.specs import data_spec

    spec = data_spec({"kind": "sar-patches", "root": "s", "test_scenes": ["T14RNT"], "val_scenes": 0, "db_range": [-25, 0]})
    assert (spec.val_scenes, spec.test_scenes, spec.db_range) == (0, ("T14RNT",), (-25.0, 0.0))
    with pytest.raises(CdtsdeError, match=r"data.test_subjects must be an integer >= 0 or a list of names, got 1.5"):
        data_spec({"kind": "nifti", "root": "v", "test_subjects": 1.5})
    with pytest.raises(CdtsdeError, match=r"data.val_groups must be an integer >= 0 or a list of names, got -1"):
        data_spec({"kind": "paired-folder", "root": "p", "val_groups": -1})
    with pytest.raises(CdtsdeError, match=r"data.db_range must be \[low, high\] with low < high, got \[0, -25\]"):
        data_spec({"kind": "sar-patches", "root": "s", "db_range": [0, -25]})


def test_a_data_root_spelled_through_a_symlink_is_the_same_setting(tmp_path):
    from cdtsde.training.run_directory import same_setting

    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    assert same_setting(str(tmp_path / "data"), str(tmp_path / "link"))
    assert not same_setting(str(tmp_path / "data"), str(tmp_path / "elsewhere"))
    assert not same_setting("linear", "content") and same_setting(3, 3)
