"""The suite's converged scale: a cell trains with its family's recipe (the recipe study's picks, else the cpu
scale's settings), validates on a split disjoint from train and test, stops early, keeps its best weights and
records its curve; a cell killed before its first checkpoint starts again; the report flags curves that are
not flat over their last quarter."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import brats_volumes

from benchmarks.suite import presets, report, run
from cdtsde.data import build_dataset
from cdtsde.training import load_pretrained

ROOT = Path("/data")


def recipe_summary(path: Path, picks: dict) -> Path:
    path.write_text(json.dumps({"families": {family: {"task": "brats-t1t2", "methods": {}, "recipe": recipe}
                                             for family, recipe in picks.items()}}))
    return path


def test_a_converged_cell_trains_with_its_family_s_recipe_until_validation_stops_improving(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "RECIPES", recipe_summary(tmp_path / "summary.json",
                                                           {"bridges": {"lr": "lr-x2", "batch": "batch-32"},
                                                            "gans": {}}))
    cpu = presets.cell_config("brats-t1t2", "bbdm", 0, "cpu", ROOT, None)
    config = presets.cell_config("brats-t1t2", "bbdm", 0, "converged", ROOT, None)
    train = config["train"]
    # the levers' changes: twice the learning rate, batch 32 over the cap in images
    assert train["lr"] == pytest.approx(2 * cpu["train"]["lr"]) and train["batch_size"] == 32
    assert train["max_steps"] == presets.CONVERGED["max_images"] // 32
    assert train["validation"] == {"every": presets.CONVERGED["validate_every_images"] // 32,
                                   "items": presets.CONVERGED["val_items"], "nfe": presets.COMMON_STEPS}
    assert train["early_stopping"] == {"monitor": "val/psnr_fg", "patience": presets.CONVERGED["patience"],
                                       "min_delta": presets.CONVERGED["min_delta"],
                                       "min_steps": presets.CONVERGED["min_images"] // 32}
    assert train["snapshot_steps"] == [] and train["checkpoint_every"] == train["validation"]["every"]
    assert config["data"]["val_subjects"] == 2 and config["data"]["test_subjects"] == cpu["data"]["test_subjects"]
    assert config["model"] == cpu["model"]
    assert presets.recipe_of("cdtsde-envelope")["levers"] == {"lr": "lr-x2", "batch": "batch-32"}
    # the GANs' study picked the baseline: the cpu settings, from the study; the inversion has no study result
    pix2pix = presets.cell_config("brats-t1t2", "pix2pix", 0, "converged", ROOT, None)["train"]
    assert pix2pix["lr"] == presets.PRESETS["pix2pix"]["train"]["lr"] and pix2pix["batch_size"] == 16
    assert "recipe study's picks: the baseline" in presets.recipe_of("pix2pix")["source"]
    assert presets.recipe_of("inversion") == {"family": "inversion", "levers": {}, "source":
                                              "the cpu scale's settings (no recipe study result for the family)"}
    # the inversion validates at the study's NFE (its iterations); CycleGAN's batch 1 over the same images
    assert presets.cell_config("brats-t2t1", "inversion", 0, "converged", ROOT, None)["train"]["validation"]["nfe"] == 20
    monkeypatch.setattr(presets, "training_subjects", lambda data: [f"s{i}" for i in range(6)])
    cyclegan = presets.cell_config("brats-t2t1", "cyclegan", 0, "converged", ROOT, None)["train"]
    assert cyclegan["max_steps"] == presets.CONVERGED["max_images"] and cyclegan["decay_steps"] == cyclegan["max_steps"] // 2
    assert cyclegan["validation"]["every"] == presets.CONVERGED["validate_every_images"]
    # a batch lever of the GANs (picked on Pix2Pix) leaves CycleGAN its reference batch 1
    monkeypatch.setattr(presets, "RECIPES", recipe_summary(tmp_path / "gans.json", {"gans": {"batch": "batch-32"}}))
    assert presets.cell_config("brats-t1t2", "pix2pix", 0, "converged", ROOT, None)["train"]["batch_size"] == 32
    assert presets.cell_config("brats-t2t1", "cyclegan", 0, "converged", ROOT, None)["train"] == cyclegan


def test_every_converged_cell_trains_the_cpu_scale_s_networks(tmp_path, monkeypatch):
    """The converged scale is the cpu scale trained longer: with no width lever picked, every method's model
    section is the cpu cell's (CycleGAN's 16 filters included, not its 256 px reference's 64)."""
    monkeypatch.setattr(presets, "RECIPES", recipe_summary(tmp_path / "summary.json", {}))
    monkeypatch.setattr(presets, "training_subjects", lambda data: [f"s{i}" for i in range(6)])
    monkeypatch.setattr(presets, "held_out_data", lambda task, root: presets.task_data(task, root, "converged"))
    cells = [(task, method) for task in presets.TASKS for method in presets.suite_methods()
             if presets.runs_on(task, method)]
    assert ("brats-t2t1", "cyclegan") in cells
    for task, method in cells:
        cpu = presets.cell_config(task, method, 0, "cpu", ROOT, None)
        converged = presets.cell_config(task, method, 0, "converged", ROOT, None)
        assert converged.get("model") == cpu.get("model"), (task, method)
    assert presets.cell_config("brats-t2t1", "cyclegan", 0, "converged", ROOT, None)["model"] == presets.SMALL_GAN
    assert presets.cell_config("brats-t2t1", "cyclegan", 0, "gpu", ROOT, None)["model"] == {}


def names(spec: dict, split: str) -> set[str]:
    """The item names of a split (BraTS: its subjects)."""
    dataset = build_dataset(spec, split)
    return set(dataset.subjects) if spec["kind"] == "brats" else {entry[2] for entry in dataset.entries}


@pytest.mark.slow
@pytest.mark.skipif(not presets.DATA.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("task", list(presets.TASKS))
def test_the_val_split_is_disjoint_from_train_and_test_on_the_real_data(task):
    """The converged cell's train and val splits partition the suite's train split, with no independent unit
    (subject, fragment, tile, module) in both; the test split is the suite's, untouched, and shares no unit
    with the val split (EL's train/ and val/ folders share modules at every scale: its val split avoids them)."""
    config = presets.cell_config(task, presets.REFERENCE, 0, "converged", presets.DATA, None)
    train, val = names(config["data"], "train"), names(config["data"], "val")
    suite = presets.task_data(task, presets.DATA, "converged")
    suite_train, test = names(suite, "train"), names(suite, "test")
    assert val and train and not val & train and not val & test and not train & test
    assert train | val == suite_train
    unit = (lambda name: name) if suite["kind"] == "brats" else presets.TASKS[task]["cluster"]
    units = {split: {unit(name) for name in items} for split, items in (("train", train), ("val", val), ("test", test))}
    assert not units["val"] & units["train"] and not units["val"] & units["test"]
    assert len(units["val"]) == {"sar-optical": 8, "sar-bigearthnet": 3, "el-mask": 40}.get(task, 2)


def test_the_flag_reads_the_trend_of_the_last_quarter_against_its_spread():
    def rows(values, monitor="val/psnr"):
        return [{"step": i + 1, "images": 16 * (i + 1), monitor: v} for i, v in enumerate(values)]

    plateau = [10, 15, 18, 19.9, 20.1, 20.0, 19.9, 20.1, 20.0, 19.9, 20.1, 20.0]
    assert report.flat_over_last_quarter(rows(plateau), "val/psnr")
    rising = [10 + 0.1 * i for i in range(12)]  # still gaining: its last quarter beats the rest by 0.3 > 0.1
    assert not report.flat_over_last_quarter(rows(rising), "val/psnr")
    assert report.flat_over_last_quarter(rows([20 - 0.1 * i for i in range(12)]), "val/psnr")  # falling: stopped
    # a loss gains by falling
    assert not report.flat_over_last_quarter(rows([1 - 0.01 * i for i in range(12)], "val/loss"), "val/loss")
    assert not report.flat_over_last_quarter(rows([20, 20, 20]), "val/psnr")  # three validations cannot show it


@pytest.mark.slow
def test_a_smoke_converged_cell_stops_early_is_scored_with_its_best_weights_and_restarts_when_killed_early(
        tmp_path, monkeypatch):
    brats_volumes(tmp_path / "data" / "brats-mri")
    out = tmp_path / "suite"
    # an improvement needs more than any PSNR can gain: the first validation stays the best, the run ends after
    # `patience` more
    monkeypatch.setitem(presets.CONVERGED, "validate_every_images", 16)
    monkeypatch.setitem(presets.CONVERGED, "val_items", 2)
    monkeypatch.setitem(presets.CONVERGED, "patience", 2)
    monkeypatch.setitem(presets.CONVERGED, "min_delta", 1e9)
    monkeypatch.setitem(presets.CONVERGED, "min_images", 0)
    monkeypatch.setitem(presets.SCALES["converged"], "size", 32)
    monkeypatch.setattr(presets, "RECIPES", tmp_path / "no-study.json")
    # what a run killed before its first checkpoint leaves: its log and configuration, no state
    run_dir = run.cell_dir(out, "brats-t1t2", "cdtsde-linear", 0) / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("step,loss\n")
    (run_dir / "config.yaml").write_text("killed: true\n")
    record = run.run_cell("brats-t1t2", "cdtsde-linear", 0, "converged", tmp_path / "data", out, 2, 10)
    assert set(run.CONVERGED_RECORD) <= set(record)
    assert record["stopped"] == "early" and record["stop_reason"].startswith("val/psnr_fg did not improve")
    assert record["images_seen"] == 3 * 16 and record["best_step"] == 1 and record["monitor"] == "val/psnr_fg"
    assert [row["step"] for row in record["validation_rows"]] == [1, 2, 3]
    assert record["best_value"] == pytest.approx(record["validation_rows"][0]["val/psnr_fg"], abs=1e-3)
    assert record["recipe"]["source"] == "the cpu scale's settings (no recipe study result for the family)"
    assert (run_dir / "model").is_dir() and (run_dir / "last").is_dir() and "killed" not in (run_dir / "config.yaml").read_text()
    # scored with model/, the best validation's weights (step 1), not last/ (step 3); no snapshots
    best, last = (load_pretrained(run_dir / name).state_dict() for name in ("model", "last"))
    assert any(not torch.equal(best[key], last[key]) for key in best)
    assert "100%@5" in record["evaluations"] and {ev["fraction"] for ev in record["evaluations"].values()} == {1.0}
    summary = report.write_summary(out)["brats-t1t2"]
    (cell,) = summary["convergence"]["cdtsde-linear"]
    # three validations cannot show a plateau: flagged
    assert cell["stopped"] == "early" and cell["best_step"] == 1 and cell["flat"] is False
    assert (out / "validation-brats-t1t2.png").stat().st_size > 0
    assert "| cdtsde-linear | 0 | cpu settings | early | 48 | val/psnr_fg" in (out / "summary.md").read_text()
    assert "**NOT FLAT** |" in (out / "summary.md").read_text()
    # the README's converged table: the headline with its interval, the seeds, where training stopped
    (line,) = [line for line in report.converged_lines({"brats-t1t2": summary}, report.load_cells(out))
               if line.startswith("| cdtsde-linear |")]
    assert line.startswith("| cdtsde-linear | 1 | ") and " | - | 48 | early | " in line
    # beside the brain PSNR, ours over the whole slice (the papers' figure) and the paper's number
    rows = json.loads((run_dir.parent / record["evaluations"][record["common"]]["rows"]).read_text())
    assert line.endswith(f" | {np.mean([item['psnr'] for item in rows]):.2f} | 23.28 PSNR, CDTSDE paper on IXI T1->T2 |")
    # finished: recognised as such with the same configuration (the suite skips it)
    parsed = type("Args", (), {"score_only": False, "data_root": tmp_path / "data", "data_copy": False,
                               "scale": "converged", "max_steps": 10, "test_items": 2, "sweep": False})()
    assert run.finished(out, "brats-t1t2", "cdtsde-linear", 0, parsed)
    # a cell whose early stop today's rule, replaying its validation rows, reverses (here rows rising by more than
    # min_delta) is not finished: its training resumes from its state
    path = run_dir.parent / "cell.json"
    rising = [{**row, "val/psnr_fg": 2e9 * row["step"]} for row in record["validation_rows"]]
    path.write_text(json.dumps({**record, "validation_rows": rising}))
    assert not run.finished(out, "brats-t1t2", "cdtsde-linear", 0, parsed)
    # a cell whose training went on past what it recorded is scored afresh and says from where it continued
    path.write_text(json.dumps({**record, "images_seen": 32, "evaluations": {
        **record["evaluations"], "100%@99": record["evaluations"]["100%@5"]}}))
    again = run.run_cell("brats-t1t2", "cdtsde-linear", 0, "converged", tmp_path / "data", out, 2, 10)
    assert again["images_seen"] == 48 and set(again["evaluations"]) == set(record["evaluations"])
    assert [(entry["from_images"], entry["from_state"]) for entry in again["continued"]] == [(32, True)]
    assert record["continued"] == []


@pytest.mark.slow
def test_an_unpaired_converged_cell_validates_on_the_paired_val_split_and_records_a_cap(tmp_path, monkeypatch):
    """CycleGAN trains on disjoint halves of the training subjects (no val split of their own): it validates
    on the held-out subjects' pairs with the headline; a run that ends at its budget says so."""
    brats_volumes(tmp_path / "data" / "brats-mri")
    monkeypatch.setitem(presets.CONVERGED, "val_items", 2)
    monkeypatch.setitem(presets.SCALES["converged"], "size", 32)
    monkeypatch.setattr(presets, "RECIPES", tmp_path / "no-study.json")
    record = run.run_cell("brats-t2t1", "cyclegan", 0, "converged", tmp_path / "data", tmp_path / "suite", 2, 2)
    halves = record["config"]["data"]["source"]["subjects"] + record["config"]["data"]["target"]["subjects"]
    val = names(presets.held_out_data("brats-t2t1", tmp_path / "data"), "val")
    assert len(halves) == 6 and len(val) == 2 and not val & set(halves)
    assert record["stopped"] == "cap" and record["stop_reason"] == "max_steps (2) reached"
    assert record["images_seen"] == 2 and record["best_step"] == 2
    (row,) = record["validation_rows"]
    assert row["step"] == 2 and row["val/psnr_fg"] == pytest.approx(record["best_value"], abs=1e-3)


def test_a_converged_cell_reports_the_compute_to_95_percent_of_its_plateau():
    """The recipe study's definition (`benchmarks.common.curve_summary`) on a cell's validation curve; a
    cell with nothing to learn has no curve and no time."""
    rows = [{"step": 50 * (i + 1), "images": 800 * (i + 1), "cpu_seconds": 60.0 * (i + 1), "val/psnr_fg": v}
            for i, v in enumerate([10, 14, 18, 19, 20, 20, 20, 20])]
    # smoothed: 12, 14, 17, 19, 19.67, 20, 20, 20 -> 95% of the gain from 12 is 19.6, first at the 5th
    assert report.to_plateau({"validation_rows": rows, "monitor": "val/psnr_fg"}) == {
        "images_to_95": 4000, "cpu_minutes_to_95": 5.0}
    assert report.to_plateau({"validation_rows": [], "monitor": "val/psnr_fg"}) == {
        "images_to_95": None, "cpu_minutes_to_95": None}
    # the recipe column: the levers, else the baseline the study picked, else the cpu settings for want of one
    cell = {"seed": 0, "stopped": "early", "images_seen": 6400, "monitor": "val/psnr_fg", "best_value": 19.6,
            "best_step": 150, "flat": True, "images_to_95": 2400, "cpu_minutes_to_95": 2.2}
    recipes = [{"levers": {"lr": "lr-x2"}, "source": "benchmarks/results/recipes/summary.json (the recipe study's picks)"},
               {"levers": {}, "source": "benchmarks/results/recipes/summary.json (the recipe study's picks: the baseline)"},
               {"levers": {}, "source": "the cpu scale's settings (no recipe study result for the family)"}]
    lines = report.convergence_lines("brats-t1t2", {"m": [{**cell, "recipe": recipe} for recipe in recipes]})
    assert [line.split(" | ")[2] for line in lines if line.startswith("| m |")] == [
        "lr-x2", "baseline (study)", "cpu settings"]
    # a cell whose early stop was reopened says from where
    lines = report.convergence_lines("brats-t1t2", {"m": [{**cell, "recipe": recipes[0], "continued_from": [4800]}]})
    assert [line.split(" | ")[3] for line in lines if line.startswith("| m |")] == ["early (reopened at 4800)"]
