"""The recipe study: each lever changes one setting of the suite's cpu-scale cell (batch at equal images),
its report's plateau, time to 95%, verdicts and recipe, and a smoke run end to end on a BraTS-like data root
(held-out val subjects, the suite's test subjects, validation rows with CPU seconds, finished runs skipped)."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import brats_volumes

from benchmarks.common import curve_summary
from benchmarks.recipes import plan, report, run
from benchmarks.suite.presets import cell_config

ROOT = Path("/data")


def differences(a: dict, b: dict, prefix="") -> set[str]:
    keys = set(a) | set(b)
    out = set()
    for key in keys:
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out |= differences(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.add(f"{prefix}{key}")
    return out


def test_the_baseline_is_the_suite_cell_with_a_val_split_and_the_study_s_budget():
    config = plan.study_config("cdtsde-linear", "baseline", ROOT)
    suite = cell_config("brats-t1t2", "cdtsde-linear", 0, "cpu", ROOT, None)
    assert differences(config, suite) == {"data.val_subjects", "train.max_steps",
                                          "train.checkpoint_every", "train.snapshot_steps", "train.validation",
                                          "train.early_stopping"}
    assert config["data"]["val_subjects"] == 2 and config["data"]["test_subjects"] == suite["data"]["test_subjects"]
    assert config["train"]["max_steps"] * config["train"]["batch_size"] == plan.STUDY_IMAGES
    assert config["train"]["early_stopping"] == {"monitor": "val/psnr_fg", "patience": None}


@pytest.mark.parametrize(("method", "lever", "changed"), [
    ("cdtsde-linear", "lr-x2", {"train.lr": 2e-3}),
    ("bbdm", "warmup-100", {"train.warmup_steps": 100}),
    ("cdtsde-linear", "ema-off", {"train.ema_decay": 0.0}),
    ("bbdm", "bf16-mixed", {"train.precision": "bf16-mixed"}),
    ("cdtsde-linear", "width-48", {"model.unet.base_channels": 48}),
    # equal images: twice the steps, validations every 50 steps rather than 25
    ("cdtsde-linear", "batch-8", {"train.batch_size": 8, "train.max_steps": 1200, "train.log_every": 50,
                                  "train.checkpoint_every": 50, "train.validation.every": 50}),
    # the method's own rate (2.5e-3, its train_defaults) halved
    ("inversion", "lr-x0.5", {"train.lr": 1.25e-3}),
])
def test_a_lever_changes_its_setting_alone(method, lever, changed):
    baseline, changed_config = (plan.study_config(method, name, ROOT) for name in ("baseline", lever))
    assert differences(changed_config, baseline) == set(changed)
    for path, value in changed.items():
        node = changed_config
        for key in path.split("."):
            node = node[key]
        assert node == pytest.approx(value) if isinstance(value, float) else node == value


def test_width_is_a_lever_of_the_unet_methods_alone_and_the_prior_is_judged_by_its_loss():
    assert "width-48" in plan.levers_of("prior") and "width-48" not in plan.levers_of("pix2pix")
    assert plan.study_config("prior", "baseline", ROOT)["train"]["early_stopping"]["monitor"] == "val/loss"
    assert plan.study_config("prior", "baseline", ROOT)["data"]["target"] == "t1"  # brats-t2t1's target


def test_an_ema_lever_runs_only_where_it_changes_the_weights():
    # the warm-up caps the decay at (1 + step) / (10 + step): 0.985 at step 600, 0.99 from step 890
    assert plan.ema_is_inert(0.99, 0.999, 600) and not plan.ema_is_inert(0.99, 0.999, 1000)
    assert not plan.ema_is_inert(0.99, 0.0, 600) and plan.ema_is_inert(0.0, 0.0, 600)
    # the GANs and the inversion baseline keep no EMA: turning it off changes nothing
    assert "ema-off" in plan.levers_of("bbdm") and "ema-off" not in plan.levers_of("pix2pix")
    assert "ema-off" not in plan.levers_of("inversion")


def fake_run(method, lever, values, monitor="val/psnr_fg"):
    return {"method": method, "lever": lever, "monitor": monitor,
            "rows": [{"step": 10 * (i + 1), "images": 160 * (i + 1), "cpu_seconds": 12.0 * (i + 1), monitor: v}
                     for i, v in enumerate(values)]}


def test_the_plateau_is_the_smoothed_maximum_and_95_percent_of_the_gain_is_timed():
    summary = curve_summary(fake_run("m", "baseline", [10, 14, 18, 19, 20, 20, 20, 20]))
    # smoothed: 12, 14, 17, 19, 19.67, 20, 20, 20 -> plateau 20; 95% of the gain from 12: 19.6, first at #5
    assert summary["plateau"] == pytest.approx(20) and summary["best"] == 20
    assert summary["images_to_95"] == 5 * 160 and summary["cpu_minutes_to_95"] == pytest.approx(1.0)
    assert summary["cpu_seconds_per_step"] == pytest.approx(1.2)
    loss = curve_summary(fake_run("m", "baseline", [1.0, 0.5, 0.4, 0.4], monitor="val/loss"))
    assert loss["plateau"] == pytest.approx(0.4) and loss["best"] == 0.4  # the loss falls


def test_verdicts_read_the_baseline_s_spread_and_the_recipe_needs_every_representative():
    plateaued = [10, 15, 18, 19.9, 20.1, 20.1, 19.9, 20.1]  # the last quarter's spread: 0.14
    runs = {"a": {"baseline": fake_run("a", "baseline", plateaued),
                  "lr-x2": fake_run("a", "lr-x2", [v + 1 for v in plateaued]),
                  "lr-x0.5": fake_run("a", "lr-x0.5", [v + 0.5 for v in plateaued]),
                  "batch-8": fake_run("a", "batch-8", [v + 1 for v in plateaued]),
                  "ema-off": fake_run("a", "ema-off", [v - 1 for v in plateaued])},
            "b": {"baseline": fake_run("b", "baseline", plateaued),
                  "lr-x2": fake_run("b", "lr-x2", [v + 2 for v in plateaued]),
                  "batch-8": fake_run("b", "batch-8", [v + 0.05 for v in plateaued])}}
    tables = {method: report.method_table(levers) for method, levers in runs.items()}
    assert [tables["a"][lever]["verdict"] for lever in ("lr-x2", "lr-x0.5", "batch-8", "ema-off")] == [
        "better", "better", "better", "worse"]
    assert tables["b"]["batch-8"]["verdict"] == "same"
    runs["a"]["bf16-mixed"] = fake_run("a", "bf16-mixed", plateaued)
    for row in runs["a"]["bf16-mixed"]["rows"]:
        row["cpu_seconds"] /= 1.6
    assert report.bf16_speedup(report.method_table(runs["a"])) == pytest.approx(1.6)
    # lr-x2 beats lr-x0.5 and is better for both; batch-8 is better for one representative only
    assert report.recipe(tables) == {"lr": "lr-x2"}
    # a lever run by other code than its baseline (another reading of the data) is not judged, nor chosen
    runs["b"]["lr-x2"]["code"] = {"cdtsde": "0.1.0", "commit": "f" * 40, "modified": False}
    tables["b"] = report.method_table(runs["b"])
    assert tables["b"]["lr-x2"]["verdict"] == "other code" and tables["b"]["lr-x2"]["code"] == "f" * 12
    assert tables["b"]["batch-8"]["verdict"] == "same" and tables["b"]["baseline"]["code"] == "unrecorded"
    assert report.recipe(tables) == {"lr": "lr-x0.5"}  # lr-x2, not judged for b, is no longer better for both


@pytest.mark.slow
def test_a_smoke_study_trains_validates_on_held_out_subjects_and_reports(tmp_path, capsys):
    brats_volumes(tmp_path / "data" / "brats-mri")
    out = tmp_path / "recipes"
    argv = ["--smoke", "--families", "bridges", "--methods", "cdtsde-linear", "--levers", "baseline", "batch-32",
            "--data-root", str(tmp_path / "data"), "--output", str(out)]
    run.main(argv)
    folder = out / "brats-t1t2" / "bridges" / "cdtsde-linear"
    record = json.loads((folder / "baseline" / "study.json").read_text())
    subjects = record["subjects"]
    assert len(subjects["val"]) == 2 and len(subjects["test"]) == 4 and len(subjects["train"]) == 6
    assert not set(subjects["val"]) & (set(subjects["train"]) | set(subjects["test"]))
    assert not set(subjects["train"]) & set(subjects["test"])
    rows = record["rows"]
    assert [row["images"] for row in rows] == [32, 64] and [row["step"] for row in rows] == [2, 4]
    assert 0 < rows[0]["cpu_seconds"] < rows[1]["cpu_seconds"]
    assert all(np.isfinite(row["val/psnr_fg"]) and row["val/loss"] > 0 for row in rows)
    assert record["torch_threads"] == 1 and (folder / "baseline" / "run" / "model").is_dir()
    batch = json.loads((folder / "batch-32" / "study.json").read_text())
    assert [row["images"] for row in batch["rows"]] == [32, 64] and [row["step"] for row in batch["rows"]] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    table = summary["families"]["bridges"]["methods"]["cdtsde-linear"]
    assert table["batch-32"]["verdict"] in ("better", "worse", "same") and "min-snr" in summary["left_out"]
    assert (out / "curves-cdtsde-linear.png").stat().st_size > 0 and "| batch-32 |" in (out / "summary.md").read_text()
    capsys.readouterr()
    run.main(argv)
    assert "2 runs done, 0 to run" in capsys.readouterr().out
    # the same data at another path (another machine's): refused as another root, unless --data-copy says so
    import shutil

    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    moved = [*argv[:argv.index("--data-root") + 1], str(tmp_path / "moved"), "--output", str(out)]
    with pytest.raises(SystemExit, match="made on the data root .*--data-copy"):
        run.main(moved)
    run.main([*moved, "--data-copy"])
    assert "2 runs done, 0 to run" in capsys.readouterr().out
