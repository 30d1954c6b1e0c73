"""Validation in the training loop (issue 30): its rows for paired, unpaired and target-only methods, the
fixed-draw loss, early stopping with the best weights in model/ and the last in last/, exact resume after a
kill between validations, runs without validation unchanged, and settings refused by name."""

import csv
import math
import os
import random
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import TINY_UNET, InversionPairs, kill_when, tiny_model, tiny_run_config
from safetensors.torch import load_file

from cdtsde.cli import main
from cdtsde.errors import CdtsdeError
from cdtsde.metrics.headline import HeadlineScore
from cdtsde.run import build_run, validation_data
from cdtsde.settings import from_plain
from cdtsde.training import TrainConfig, train
from cdtsde.training.config import EarlyStoppingConfig
from cdtsde.training.validation import EarlyStopping, ValidationData, fixed_draw_loss

VALIDATION = {"every": 2, "items": 3, "nfe": 2}


def log_rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def run_tiny(name, tmp_path, data=None, **train_options):
    config = tiny_run_config(name, **train_options)
    config["data"] = data or {**config["data"], "n_val": 4}
    method, train_set, preview_set, train_config = build_run(config)
    validation = validation_data(method, train_set, preview_set, config["data"])
    result = train(method, train_set, train_config, tmp_path / name, validation=validation, progress=False)
    return result, validation, log_rows(tmp_path / name)


@pytest.mark.parametrize(("name", "losses"), [("cdtsde", ["val/loss"]),  # paired
                                              ("cyclegan", ["val/loss_generators", "val/loss_discriminators"]),
                                              ("prior", ["val/loss"])])  # target-only
def test_validation_rows_come_at_their_steps_for_every_kind_of_method(name, losses, tmp_path):
    """Every 2 steps and after the last (5), in the rows of those steps, empty cells elsewhere; the val split
    of the paired spec is read as pairs for every method, so each has its translations' PSNR."""
    result, validation, rows = run_tiny(name, tmp_path, max_steps=5, log_every=1, validation=VALIDATION)
    columns = ["val/psnr", *losses]
    assert list(rows[0])[-len(columns):] == columns
    validated = [int(row["step"]) for row in rows if row["val/psnr"] != ""]
    assert validated == [2, 4, 5]
    for row in rows:
        filled = [row[column] != "" for column in [*columns, "cpu_seconds"]]
        assert filled == [int(row["step"]) in validated] * (len(columns) + 1)
    cpu = [float(row["cpu_seconds"]) for row in rows if row["cpu_seconds"]]
    assert 0 < cpu[0] < cpu[1] < cpu[2]  # the training process's CPU seconds, growing with the steps
    assert result["stopped"] == "max_steps (5) reached" and result["step"] == 5
    assert (tmp_path / name / "samples" / "validation.png").stat().st_size > 0
    assert validation.pairs is not None and len(validation.items) == 4


def test_an_unpaired_spec_validates_the_loss_alone_and_a_paired_one_also_translates():
    """Two independently drawn sides have no pairing to score translations against."""
    side = {"kind": "procedural", "task": "mri-phantom", "n": 8, "size": 16, "seed": 0}
    unpaired = {**tiny_run_config("cyclegan"), "data": {"kind": "unpaired", "source": side, "target": side}}
    method, train_set, preview_set, _ = build_run(unpaired)
    data = validation_data(method, train_set, preview_set, unpaired["data"])
    assert data.pairs is None and data.score is None and len(data.items) > 0
    paired = tiny_run_config("cyclegan")
    method, train_set, preview_set, _ = build_run(paired)
    data = validation_data(method, train_set, preview_set, paired["data"])
    assert data.pairs is preview_set.sources and data.score == HeadlineScore("psnr")
    assert "source" in data.pairs[0] and "target" in data.pairs[0]


def test_the_headline_score_is_the_task_s():
    brats = {"kind": "brats", "root": "x"}
    el = {"kind": "procedural", "task": "el-cell"}
    method = build_run(tiny_run_config("cdtsde"))[0]
    from cdtsde.run import headline_score

    assert headline_score(brats, method.data) == HeadlineScore("psnr_fg")
    assert headline_score({"kind": "procedural", "task": "mri-phantom"}, method.data) == HeadlineScore("psnr")
    mask_data = type(method.data)(source_channels=1, target_channels=5, target_kind="mask", image_size=16)
    assert headline_score(el, mask_data) == HeadlineScore("dice/defect-present", (1, 2, 3))
    three = type(method.data)(source_channels=1, target_channels=3, target_kind="mask", image_size=16)
    assert headline_score({"kind": "list-file"}, three) == HeadlineScore("dice/defect-present", (1, 2))


def test_mask_scores_name_the_classes_the_data_spec_gives():
    from cdtsde.data.masks import PV_EL_CLASSES
    from cdtsde.run import mask_classes

    assert mask_classes({"kind": "el-masks", "root": "x"}) == PV_EL_CLASSES
    assert mask_classes({"kind": "procedural", "task": "el-cell"}) == PV_EL_CLASSES
    named = {"kind": "paired-folder", "root": "x", "classes": ["background", "rust", "scratch"]}
    assert mask_classes(named) == {0: "background", 1: "rust", 2: "scratch"}
    assert mask_classes({"kind": "paired-folder", "root": "x", "classes": 3}) is None  # a count names nothing


def test_brain_psnr_counts_the_target_s_nonzero_pixels_and_defect_dice_the_defect_classes():
    target = -torch.ones(1, 1, 8, 8)
    target[..., :4, :] = 1.0  # half the image is brain, at intensity 1
    translation = target - 0.1  # 0.05 off in [0, 1] inside the brain: 26.02 dB there
    translation[..., 4:, :] = 1.0  # wholly wrong outside
    assert HeadlineScore("psnr_fg")(translation, target) == pytest.approx(20 * math.log10(1 / 0.05))
    assert HeadlineScore("psnr")(translation, target) == pytest.approx(-10 * math.log10((0.05**2 + 1) / 2))
    classes = torch.zeros(1, 8, 8, dtype=torch.long)
    classes[0, :2] = 1  # 16 defect pixels
    predicted = classes.clone()
    predicted[0, 2:4] = 4  # 16 busbar pixels: not a defect
    predicted[0, 0, :4] = 3  # another defect class: still the defect
    assert HeadlineScore("dice/defect-present", (1, 2, 3))(one_hot_masks(predicted), one_hot_masks(classes)) == 1.0
    assert HeadlineScore("dice/defect-present", (1, 2, 3, 4))(
        one_hot_masks(predicted), one_hot_masks(classes)) == pytest.approx(2 / 3)


def one_hot_masks(classes, count=5):
    return torch.nn.functional.one_hot(classes, count).permute(0, 3, 1, 2).float() * 2 - 1


def test_defect_dice_is_scored_over_the_items_with_a_defect():
    """An empty prediction of an empty target would score Dice 1: over every item, a model that predicts no
    defect would lead the validation curve. Over the items with a defect it scores 0, and a spurious defect
    on a defect-free item does not count."""
    targets = torch.zeros(3, 8, 8, dtype=torch.long)
    targets[0, :2] = 1  # item 0 has a crack; items 1 and 2 have none
    nothing = torch.zeros_like(targets)
    perfect_but_spurious = targets.clone()
    perfect_but_spurious[1, 5:] = 2  # a spurious defect on a defect-free item
    score = HeadlineScore("dice/defect-present", (1, 2, 3))
    assert score(one_hot_masks(nothing), one_hot_masks(targets)) == 0.0
    assert score(one_hot_masks(perfect_but_spurious), one_hot_masks(targets)) == 1.0
    assert math.isnan(score(one_hot_masks(nothing[1:]), one_hot_masks(targets[1:])))
    score.check_targets(iter(one_hot_masks(targets)))  # one item has a defect: defined
    with pytest.raises(CdtsdeError, match=r"the validation targets \(2 items\) have no defect"):
        score.check_targets(iter(one_hot_masks(targets[1:])))


def test_validation_targets_without_a_defect_are_refused_before_the_first_step(tmp_path):
    class DefectFree(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return {"source": torch.zeros(1, 8, 8), "target": one_hot_masks(torch.zeros(1, 8, 8, dtype=torch.long))[0]}

    score = HeadlineScore("dice/defect-present", (1, 2, 3))
    with pytest.raises(CdtsdeError, match=r"the validation targets \(4 items\) have no defect \(classes 1, 2, 3\)"):
        train(tiny_model(), InversionPairs(), early_stopping_config(monitor="val/dice/defect-present"),
              tmp_path / "run", validation=ValidationData(DefectFree(), DefectFree(), score), progress=False)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_the_fixed_draw_loss_repeats_and_leaves_the_method_as_it_was(tmp_path):
    """Two calls with the same weights give the same losses; CycleGAN's history pools (filled by the
    discriminator phase) are restored; other weights give other losses."""
    config = tiny_run_config("cyclegan")
    config["data"]["n_val"] = 4
    method, train_set, preview_set, train_config = build_run(config)
    data = validation_data(method, train_set, preview_set, config["data"])
    options = from_plain(TrainConfig, {**config["train"], "validation": VALIDATION}, "train").validation
    before = {name: buffer.clone() for name, buffer in method.named_buffers()}
    first = fixed_draw_loss(method, data, ["generators", "discriminators"], options, 2, torch.device("cpu"))
    second = fixed_draw_loss(method, data, ["generators", "discriminators"], options, 2, torch.device("cpu"))
    assert first == second and set(first) == {"generators", "discriminators"}
    assert all(torch.equal(buffer, before[name]) for name, buffer in method.named_buffers())
    with torch.no_grad():
        next(method.parameters()).add_(0.1)
    assert fixed_draw_loss(method, data, ["generators", "discriminators"], options, 2, torch.device("cpu")) != first


class ScriptedScore:
    """A headline score that returns the figures of a script, one per validation, whatever the weights."""

    name = "psnr"

    def __init__(self, figures):
        self.figures = list(figures)

    def __call__(self, translations, targets):
        return self.figures.pop(0)

    def check_targets(self, targets):
        pass  # any targets: the figures are scripted


def early_stopping_config(max_steps=40, **early_stopping):
    return from_plain(TrainConfig, {
        "max_steps": max_steps, "batch_size": 4, "lr": 2e-3, "warmup_steps": 1, "log_every": 2, "sample_every": 0,
        "checkpoint_every": 3, "seed": 1, "snapshot_steps": list(range(2, 41, 2)),
        "validation": {"every": 2, "items": 4, "nfe": 1}, "early_stopping": early_stopping}, "train")


def early_stopping_run(tmp_path, figures, resume=False, folder="run", **early_stopping):
    pairs = InversionPairs(n=4, seed=9)
    return train(tiny_model(), InversionPairs(), early_stopping_config(**early_stopping), tmp_path / folder,
                 resume=resume, validation=ValidationData(pairs, pairs, ScriptedScore(figures)), progress=False)


def test_early_stopping_ends_the_run_and_model_holds_the_best_weights_last_the_last(tmp_path):
    """Figures 1, 3, 2, 3.4, 2.9 at steps 2..10 (mode max, min_delta 0.5, patience 3): 3.4 is no improvement
    on 3 by more than 0.5, so the best is step 4's and the run ends after step 10, 3 validations later."""
    result = early_stopping_run(tmp_path, [1.0, 3.0, 2.0, 3.4, 2.9] + [9.0] * 20, monitor="val/psnr",
                                patience=3, min_delta=0.5)
    run = tmp_path / "run"
    assert result["step"] == 10 and result["best_step"] == 4 and result["best_value"] == 3.0
    assert "did not improve" in result["stopped"] and result["monitor"] == "val/psnr"
    assert same_weights(weights(run / "model"), weights(run / "snapshots" / "step-0000004"))
    assert same_weights(weights(run / "last"), weights(run / "snapshots" / "step-0000010"))
    assert not same_weights(weights(run / "model"), weights(run / "last"))
    assert [int(row["step"]) for row in log_rows(run)][-1] == 10
    state = torch.load(run / "state.pt", weights_only=False)
    # the state keeps the rows, which a resume replays
    assert state["step"] == 10 and [row["val/psnr"] for row in state["validation"]["rows"]] == [1.0, 3.0, 2.0, 3.4, 2.9]
    # resumed, a run that stopped has nothing left to do
    again = early_stopping_run(tmp_path, [], resume=True, monitor="val/psnr", patience=3, min_delta=0.5)
    assert again["step"] == 10 and again["losses"] == [] and again["best_step"] == 4


# steps 2..14 before min_steps 15: an early best (3.0 at step 4); from step 16 on a curve that rises from
# 1.0 past it (3.6 at step 24, better by more than min_delta 0.5) and then stays flat
BEFORE_MIN_STEPS = [1.0, 3.0, 2.0, 3.4, 2.9, 1.0, 1.0]
FROM_MIN_STEPS = [1.0, 1.6, 2.2, 2.8, 3.6] + [3.6] * 10


def test_patience_counts_from_the_best_at_or_after_min_steps(tmp_path):
    """A best before min_steps does not end the run: patience (3) counts from the best of the validations at
    or after min_steps 15 (step 16's 1.0, then each rise by more than 0.5), so the run goes on while the curve
    rises, takes step 24's 3.6 as its best (model/ holds it) and ends 3 flat validations later, at step 30.
    Counted from step 4's 3.0, as before, it would have ended at step 16. A bad min_steps is named."""
    result = early_stopping_run(tmp_path, BEFORE_MIN_STEPS + FROM_MIN_STEPS, monitor="val/psnr", patience=3,
                                min_delta=0.5, min_steps=15)
    assert result["step"] == 30 and result["best_step"] == 24 and result["best_value"] == 3.6
    assert "for 3 validations" in result["stopped"]
    run = tmp_path / "run"
    assert same_weights(weights(run / "model"), weights(run / "snapshots" / "step-0000024"))
    # the best overall is kept even when patience counts from a later one
    flat = early_stopping_run(tmp_path, BEFORE_MIN_STEPS + [2.0] * 20, folder="flat", monitor="val/psnr",
                              patience=3, min_delta=0.5, min_steps=15)
    assert flat["step"] == 22 and flat["best_step"] == 4 and "best at or after step 15: 2 after step 16" in flat["stopped"]
    assert same_weights(weights(tmp_path / "flat" / "model"), weights(tmp_path / "flat" / "snapshots" / "step-0000004"))
    with pytest.raises(ValueError, match="min_steps must be a whole number >= 0"):
        early_stopping_config(monitor="val/psnr", min_steps=-1)


def test_a_run_stopped_under_the_earlier_rule_goes_on_from_its_state(tmp_path):
    """A state written by the rule before (patience counted from the best overall, the stop recorded in the
    state) is judged again by its validation rows: resumed, the run goes on from step 16 and ends where the
    uninterrupted run of the test above ends, with the same best and last weights."""
    options = dict(monitor="val/psnr", patience=3, min_delta=0.5, min_steps=15)
    straight = early_stopping_run(tmp_path, BEFORE_MIN_STEPS + FROM_MIN_STEPS, folder="straight", **options)
    early_stopping_run(tmp_path, BEFORE_MIN_STEPS + FROM_MIN_STEPS[:1], max_steps=16, **options)
    path = tmp_path / "run" / "state.pt"
    state = torch.load(path, weights_only=False)
    assert state["step"] == 16
    state["validation"].update(stopped="val/psnr did not improve by more than 0.5 for 6 validations (best 3 after "
                               "step 4)", early_stopping={"best": 3.0, "best_step": 4, "waited": 6})
    torch.save(state, path)
    resumed = early_stopping_run(tmp_path, FROM_MIN_STEPS[1:], resume=True, **options)
    assert (resumed["step"], resumed["best_step"], resumed["stopped"]) == (30, 24, straight["stopped"])
    for folder in ("model", "last"):
        assert same_weights(weights(tmp_path / "run" / folder), weights(tmp_path / "straight" / folder))


@pytest.mark.slow
def test_without_patience_the_run_keeps_its_best_weights_and_trains_on(tmp_path):
    result = early_stopping_run(tmp_path, [1.0, 3.0] + [2.0] * 18, monitor="val/psnr", patience=None)
    assert result["step"] == 40 and result["best_step"] == 4 and result["stopped"] == "max_steps (40) reached"
    run = tmp_path / "run"
    assert same_weights(weights(run / "model"), weights(run / "snapshots" / "step-0000004"))
    assert same_weights(weights(run / "last"), weights(run / "snapshots" / "step-0000040"))


def test_validation_changes_nothing_the_run_trains(tmp_path):
    """The same weights and training log columns with validation as without; without it the run writes
    what runs wrote before validation existed: no val columns, no last/, no validation in state.pt."""
    options = dict(max_steps=6, log_every=1, checkpoint_every=3)
    run_tiny("cyclegan", tmp_path / "plain", **options)
    run_tiny("cyclegan", tmp_path / "validated", **options, validation=VALIDATION)
    plain, validated = tmp_path / "plain" / "cyclegan", tmp_path / "validated" / "cyclegan"
    plain_state = torch.load(plain / "state.pt", weights_only=False)
    validated_state = torch.load(validated / "state.pt", weights_only=False)
    assert all(torch.equal(plain_state["model"][key], value) for key, value in validated_state["model"].items())
    assert same_weights(weights(plain / "model"), weights(validated / "model"))
    plain_rows = log_rows(plain)
    assert list(plain_rows[0]) == ["step", "loss_generators", "loss_discriminators", "gan_g", "gan_f",
                                   "cycle_source", "cycle_target", "identity_g", "identity_f", "d_target_real",
                                   "d_target_fake", "d_source_real", "d_source_fake", "lr", "seconds"]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in plain_rows] == [
        {k: v for k, v in row.items() if k in plain_rows[0] and k != "seconds"} for row in log_rows(validated)]
    assert "validation" not in plain_state and not (plain / "last").exists()
    assert not {"validation", "early_stopping"} & (set(plain_state["train"]) | set(plain_state["settings"]["train"]))
    assert not (plain / "samples").exists()


def write_run_config(path, **train_options):
    path.write_text(yaml.safe_dump({
        "data": {"kind": "procedural", "task": "mri-phantom", "n": 24, "n_val": 4, "size": 16, "seed": 1},
        "model": {"field": {"variant": "linear"}, "unet": TINY_UNET},
        "train": {"max_steps": 400, "batch_size": 4, "lr": 1e-6, "log_every": 5, "checkpoint_every": 5,
                  "sample_every": 0, "validation": {"every": 10, "items": 4, "nfe": 2},
                  "early_stopping": {"monitor": "val/psnr", "patience": 5, "min_delta": 1.0}, **train_options}}))
    return path


@pytest.mark.slow
def test_a_kill_between_validations_then_resume_ends_where_the_uninterrupted_run_ends(tmp_path):
    """Through the CLI: the rate is too small for the PSNR to rise by 1 dB, so the run stops 5 validations
    after its first (step 60). Killed with SIGKILL once step 25's log row is written (the best and the
    patience counter in its state), resumed: the same end step, best weights, last weights and log rows."""
    run_config = write_run_config(tmp_path / "run.yaml")
    command = [sys.executable, "-m", "cdtsde", "train", "--config", str(run_config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run([*command, "--output", str(tmp_path / "straight")], check=True, env=env,
                              capture_output=True, text=True)
    assert "best val/psnr" in straight.stdout and "after step 10" in straight.stdout

    killed = tmp_path / "killed"

    def past_step_25():
        try:
            return "\n25," in (killed / "metrics.csv").read_text()
        except FileNotFoundError:
            return False

    kill_when([*command, "--output", str(killed)], past_step_25, env, delay=random.Random(1).uniform(0.0, 0.05))
    state = torch.load(killed / "state.pt", weights_only=False)
    # the log is written before the state: the kill may have come between the two, with the state at step 20
    assert 20 <= state["step"] < 60
    replayed = EarlyStopping(EarlyStoppingConfig(monitor="val/psnr", patience=5, min_delta=1.0))
    replayed.replay(state["validation"]["rows"])
    assert replayed.best_step == 10 and replayed.waited and not replayed.stop
    resumed = subprocess.run([*command, "--output", str(killed), "--resume"], check=True, env=env,
                             capture_output=True, text=True)
    assert resumed.stdout.splitlines()[-1] == straight.stdout.splitlines()[-1].replace("straight", "killed")
    for folder in ("model", "last"):
        assert same_weights(weights(killed / folder), weights(tmp_path / "straight" / folder))
    timings = ("seconds", "cpu_seconds")
    assert [{k: v for k, v in row.items() if k not in timings} for row in log_rows(killed)] == [
        {k: v for k, v in row.items() if k not in timings} for row in log_rows(tmp_path / "straight")]
    cpu = [float(row["cpu_seconds"]) for row in log_rows(killed) if row["cpu_seconds"]]
    assert cpu == sorted(cpu) and cpu[0] > 0  # the CPU seconds continue across the resume
    assert log_rows(killed)[-1]["step"] == "60"
    assert torch.load(killed / "state.pt", weights_only=False)["step"] == 60


@pytest.mark.parametrize(("options", "message"), [
    ({"validation": {"every": 0}}, "train.validation.every must be an integer >= 1"),
    ({"validation": {"items": 0}}, "train.validation.items must be an integer >= 1"),
    ({"validation": {"nfe": 1.5}}, "train.validation.nfe"),
    ({"validation": {"often": 3}}, "unknown train.validation option(s): often"),
    ({"early_stopping": {"monitor": "val/loss"}}, "train.early_stopping monitors validation figures"),
    ({"validation": {}, "early_stopping": {"monitor": "psnr"}}, "train.early_stopping.monitor must name"),
    ({"validation": {}, "early_stopping": {"mode": "up"}}, "train.early_stopping.mode must be one of max, min"),
    ({"validation": {}, "early_stopping": {"patience": 0}}, "train.early_stopping.patience must be an integer >= 1"),
    ({"validation": {}, "early_stopping": {"min_delta": -1.0}}, "train.early_stopping.min_delta must be a number"),
])
def test_bad_validation_settings_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_plain(TrainConfig, options, "train")


@pytest.mark.parametrize(("name", "options", "message"), [
    ("cyclegan", {"early_stopping": {"monitor": "val/loss"}},
     "train.early_stopping.monitor: 'val/loss' is not a validation column of this cyclegan run; it produces "
     "val/psnr, val/loss_generators, val/loss_discriminators"),
    ("cdtsde", {"early_stopping": {"monitor": "val/psnr_fg"}}, "'val/psnr_fg' is not a validation column"),
    ("bbdm", {"validation": {"every": 2, "nfe": 5000}}, "train.validation.nfe: "),
])
def test_what_a_run_cannot_validate_is_refused_before_the_first_step(name, options, message, tmp_path):
    with pytest.raises(CdtsdeError, match=message):
        run_tiny(name, tmp_path, **{"validation": VALIDATION, **options})
    assert not (tmp_path / name / "metrics.csv").exists()


def test_validation_needs_a_val_split_and_its_data(tmp_path):
    config = tiny_run_config("cdtsde", validation=VALIDATION)
    method, train_set, _, train_config = build_run(config)
    # build_run previews the training set when the val split is empty; validation does not score it
    with pytest.raises(CdtsdeError, match="needs the data spec's val split, which is empty"):
        validation_data(method, train_set, train_set, config["data"])
    with pytest.raises(CdtsdeError, match="train.validation is set but no validation data were given"):
        train(method, train_set, train_config, tmp_path / "run", progress=False)


def test_the_command_line_validates_and_reports_the_best(tmp_path, capsys):
    run_config = write_run_config(tmp_path / "run.yaml", max_steps=20, lr=2e-3,
                                  early_stopping={"monitor": "val/loss", "patience": None})
    assert main(["train", "--config", str(run_config), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = [row for row in log_rows(tmp_path / "out") if row["val/loss"] != ""]
    best = min(rows, key=lambda row: float(row["val/loss"]))
    assert f"best val/loss: {float(best['val/loss']):.6g} after step {best['step']}" in out
    assert "max_steps (20) reached" in out


def test_a_method_with_nothing_to_learn_keeps_its_model_whatever_the_validation_settings(tmp_path):
    result, _, _ = run_tiny("identity", tmp_path, validation=VALIDATION, early_stopping={"monitor": "val/psnr"})
    assert result["stopped"] == "nothing to train"
    assert (tmp_path / "identity" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "identity" / "last").exists()
