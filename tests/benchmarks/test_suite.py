"""The benchmark suite: end to end on a tiny scale (a drop-in data root with the layout of ../shared/data,
two methods on one task, a few steps; finished cells are skipped; the README block is regenerated), the
configurations it derives from the method classes (every committed cell still recognised), its statistics."""

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from benchmarks.suite import presets, report, run
from cdtsde.methods import DataInfo, method_class
from cdtsde.settings import from_plain
from cdtsde.training import TrainConfig


def volkov_like(root: Path, seed: int = 0, first: int = 0) -> None:
    """Eight SAR/optical pairs of 40 px in volkov-s1s2's layout: four fragments of two crops (numbered from
    `first`), two tiles; the last fragment is the test split."""
    folder = root / "sar-optical" / "volkov-s1s2"
    rng = np.random.default_rng(seed)
    rows = ["pair_id,fragment,s2_tile"]
    for fragment in range(first, first + 4):
        for crop in ("r1c1", "r2c2"):
            name = f"{fragment:03d}_{crop}"
            base = rng.random((40, 40))
            for side, image in (("sar", base), ("opt", np.stack([base, 1 - base, base ** 2], -1))):
                (folder / side).mkdir(parents=True, exist_ok=True)
                Image.fromarray((image * 255).astype(np.uint8)).save(folder / side / f"{name}.png")
            rows.append(f"{name},{fragment:03d}.png,{'T14RNT' if fragment == first + 3 else 'T11SLT'}")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_the_suite_runs_skips_finished_cells_and_summarises(tmp_path, capsys):
    volkov_like(tmp_path / "data")
    out = tmp_path / "suite"
    argv = ["--scale", "quick", "--tasks", "sar-optical", "--methods", "cdtsde-linear", "identity",
            "--data-root", str(tmp_path / "data"), "--output", str(out), "--max-steps", "4", "--test-items", "2"]
    run.main(argv)
    cell = json.loads((out / "cells/sar-optical/cdtsde-linear/seed0/cell.json").read_text())
    assert cell["config"]["train"]["snapshot_steps"] == [1, 2] and cell["test_items"] == 2
    assert cell["test_image_size"] == [32, 32]  # tested at the size it trained at (the quick scale's)
    assert cell["config"]["data"]["root"] == str(tmp_path / "data" / "sar-optical" / "volkov-s1s2")
    assert sorted(ev["fraction"] for ev in cell["evaluations"].values()) == [0.25, 0.5, 1.0]
    final = cell["evaluations"][cell["reference"]]["summary"]
    assert {"psnr", "ssim", "perception/patch_swd", "perception/mean_offset"} <= set(final)
    assert cell["train_pairs"] == 6 and cell["images_seen"] == 4 * 16 and cell["peak_rss_mb"] > 0
    summary = json.loads((out / "summary.json").read_text())["tasks"]["sar-optical"]
    assert set(summary["paired"]) == {"identity"} and (out / "compute-sar-optical.png").is_file()
    assert (out / "translations-sar-optical.png").is_file()
    identity = summary["rows"]["identity @ 1 NFE"]
    assert identity["psnr"]["mean"] == pytest.approx(
        json.loads((out / "cells/sar-optical/identity/seed0/cell.json").read_text())
        ["evaluations"]["100%@1"]["summary"]["psnr"]["mean"])
    assert "cdtsde-linear @ 5 NFE" in (out / "summary.md").read_text()

    stamp = (out / "cells/sar-optical/identity/seed0/cell.json").stat().st_mtime_ns
    capsys.readouterr()
    run.main(argv)
    assert "2 cells done, 0 to run" in capsys.readouterr().out
    assert (out / "cells/sar-optical/identity/seed0/cell.json").stat().st_mtime_ns == stamp
    shutil.copytree(tmp_path / "data", tmp_path / "copy")  # another data root: refused unless it is a copy
    with pytest.raises(SystemExit, match="not .*copy: its scores are for that root's test split.*--score-only"):
        run.main([*argv[:7], "--data-root", str(tmp_path / "copy"), *argv[9:]])
    run.main([*argv[:7], "--data-root", str(tmp_path / "copy"), *argv[9:], "--data-copy"])
    assert "2 cells done, 0 to run" in capsys.readouterr().out

    # the field ablation on the same cells: linear only gains its NFE sweep (not retrained); the ELBO field is new
    log = (out / "cells/sar-optical/cdtsde-linear/seed0/run/metrics.csv").read_text()
    run.main([*argv[:4], "--methods", "cdtsde-linear", "cdtsde-dynamic-elbo", *argv[7:], "--sweep"])
    assert (out / "cells/sar-optical/cdtsde-linear/seed0/run/metrics.csv").read_text() == log
    linear = json.loads((out / "cells/sar-optical/cdtsde-linear/seed0/cell.json").read_text())
    assert linear["sweep"] and {"100%@1", "100%@20", "100%@1/gamma0", "100%@20/gamma0", "25%@5"} <= set(linear["evaluations"])
    elbo = json.loads((out / "cells/sar-optical/cdtsde-dynamic-elbo/seed0/cell.json").read_text())
    assert elbo["config"]["model"]["mixer_objective"] == "elbo" and "g_mean" in elbo["diagnostics"]
    ablation = json.loads((out / "summary.json").read_text())["tasks"]["sar-optical"]["sweep"]
    assert set(ablation["curves"]["psnr|0"]) == {"cdtsde-linear", "cdtsde-dynamic-elbo"}
    assert ablation["matched"]["psnr|1"]["cdtsde-linear"] <= 10
    assert (out / "quality_vs_nfe-sar-optical.png").is_file() and (out / "fields-sar-optical-cdtsde-dynamic-elbo.png").is_file()
    assert "Field ablation on sar-optical" in (out / "summary.md").read_text()
    assert "| cdtsde-dynamic-elbo | " in (out / "summary.md").read_text().split("## sar-optical")[0]  # the verdicts

    readme = tmp_path / "README.md"
    begin, end = report.markers(out)
    readme.write_text(f"intro\n{begin}\nold\n{end}\nrest\n<!-- suite:converged:begin -->\nkept\n"
                      "<!-- suite:converged:end -->\n")
    report.update_block(readme, out, ["| new table |"], "the details")
    text = readme.read_text()
    assert "old" not in text and "| new table |" in text and text.startswith("intro") and "rest\n" in text
    assert "kept" in text and begin == f"<!-- suite:{out.name}:begin -->"  # another scale's block stays
    assert f"--output {out} --readme` from {out}/summary.md (the details)." in text
    # the README's table across tasks: each method's headline at the common NFE, the best in bold
    headline = report.headline_lines(report.write_summary(out), report.load_cells(out))
    rows = {line.split(" | ")[0]: line for line in headline if line.startswith("| cdtsde") or line.startswith("| identity")}
    assert set(rows) == {"| cdtsde-linear", "| cdtsde-dynamic-elbo", "| identity"}
    values = {name: float(line.split(" | ")[1].strip(" |*")) for name, line in rows.items()}
    assert values["| identity"] == pytest.approx(identity["psnr"]["mean"], abs=0.006)
    assert sum("**" in line for line in rows.values()) == 1 and "**" in rows[max(values, key=values.get)]
    with pytest.raises(SystemExit, match="another configuration"):
        run.main([*argv[:-4], "--max-steps", "5", "--test-items", "2"])


CHANNELS = {"brats-t1t2": (1, 1, "image"), "brats-t2t1": (1, 1, "image"), "brats-flairt1": (1, 1, "image"),
            "sar-optical": (1, 3, "image"), "sar-bigearthnet": (2, 3, "image"), "el-mask": (1, 5, "mask")}


def build(config: dict, task: str):
    """The method of a cell's configuration, built as training would (no data read): its train settings."""
    source, target, kind = CHANNELS[task]
    cls = method_class(config.get("method", "cdtsde"))
    train = from_plain(TrainConfig, {**cls.train_defaults, **config["train"]}, "train")
    data = config["data"] if "root" in config["data"] else config["data"]["target"]
    cls(from_plain(cls.config_class, config.get("model"), "model"),
        DataInfo(source_channels=None if cls.data_kind == "target-only" else source, target_channels=target,
                 target_kind=kind, image_size=data["size"]))
    return train, data


def stub_subjects(monkeypatch, subjects=tuple(f"s{i}" for i in range(8))):
    monkeypatch.setattr(presets, "training_subjects", lambda data: list(subjects))


@pytest.mark.slow
@pytest.mark.parametrize("scale,tasks", [("cpu", list(presets.TASKS)), ("gpu", ["brats-t2t1", "sar-bigearthnet"])])
def test_every_cell_of_a_scale_builds_its_method(scale, tasks, monkeypatch):
    """Every (task, method) cell's configuration is valid at the scale (no data read: CycleGAN's subject
    list is stubbed); snapshots at 25% and 50% of the budget; the GPU scale trains at 256 px in bf16 on the GPU;
    every method of a task sees the same images (CycleGAN: more steps of batch 1, on disjoint halves)."""
    stub_subjects(monkeypatch)
    for task in tasks:
        methods = [m for m in [*presets.suite_methods(), *presets.OBJECTIVES] if presets.runs_on(task, m)]
        assert presets.REFERENCE in methods and presets.TASKS[task]["zero_shot"] == ("sdedit" in methods)
        assert presets.TASKS[task]["paired"] == ("pix2pix" in methods)
        images = set()
        for method in methods:
            config = presets.cell_config(task, method, 0, scale, Path("/data"), None)
            train, data = build(config, task)
            assert list(train.snapshot_steps) == [round(train.max_steps / 4), round(train.max_steps / 2)]
            assert data["root"].startswith("/data/")
            images.add(train.max_steps * train.batch_size)
            if scale == "gpu":
                assert (train.accelerator, train.precision, data["size"]) == ("gpu", "bf16-mixed", 256)
            if method == "cyclegan":
                halves = config["data"]["source"]["subjects"], config["data"]["target"]["subjects"]
                assert sorted(halves[0] + halves[1]) == [f"s{i}" for i in range(8)] and not set(halves[0]) & set(halves[1])
        assert len(images) == 1


# the cells of each scale's output (converged-v1, the retired first converged protocol, is a record only)
COMMITTED = sorted(path for scale in presets.SCALES
                   for path in (REPO / "benchmarks/results/suite" / scale / "cells").glob("*/*/seed*/cell.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: "/".join(path.parts[-6:-1]))
def test_every_committed_cell_is_recognised_as_finished(path, monkeypatch):
    """The configuration the suite derives now for a committed cell is the one it ran with (what `finished`
    compares), so no committed cell is run again. Its data is not read: CycleGAN's training subjects are
    the ones the cell recorded; a converged cell's val split outside BraTS is drawn from the data (skipped
    without it)."""
    record = json.loads(path.read_text())
    if record["scale"] == "converged" and presets.CONVERGED_VAL[record["task"]] is not None \
            and not Path(record["data_root"]).is_dir():
        pytest.skip(f"the val split of {record['task']} is drawn from {record['data_root']}, absent here")
    data = record["config"]["data"]
    stub_subjects(monkeypatch, data["source"]["subjects"] + data["target"]["subjects"] if data["kind"] == "unpaired" else ())
    assert presets.runs_on(record["task"], record["method"])
    config = presets.cell_config(record["task"], record["method"], record["seed"], record["scale"],
                                 Path(record["data_root"]), None)
    assert json.loads(json.dumps(config)) == record["config"]


def test_a_method_added_to_the_registry_gets_cells_with_no_edit_to_the_suite(monkeypatch):
    """A paired method with a conditional UNet and a `steps` option (as an I2SB bridge would be) runs on every
    paired task with the scale's UNet and budget (the generic preset), and its rows follow the paired ones."""
    from cdtsde.methods import REGISTRY
    from cdtsde.methods.bbdm import BBDM

    class Newcomer(BBDM):
        name = "newcomer"

    monkeypatch.setitem(REGISTRY, "newcomer", "unused:Newcomer")
    monkeypatch.setattr(presets, "method_class", lambda name: Newcomer if name == "newcomer" else method_class(name))
    methods = presets.suite_methods()
    assert methods.index("identity") < methods.index("newcomer") < methods.index("sdedit")  # after the paired rows
    tasks = [task for task in presets.TASKS if presets.runs_on(task, "newcomer")]
    assert tasks == [task for task in presets.TASKS if presets.TASKS[task]["paired"]] and "brats-flairt1" not in tasks
    config = presets.cell_config("sar-optical", "newcomer", 2, "cpu", Path("/data"), None)
    assert config["method"] == "newcomer" and config["model"] == {"unet": presets.SMALL_UNET}
    assert config["train"] == {**presets.SCALES["cpu"]["train"], **presets.RUN, "seed": 2, "snapshot_steps": [50, 100]}
    assert presets.row_order("newcomer") < presets.row_order("sdedit")
    assert ("sar-optical", "newcomer", 0) in run.cells_of(argparse.Namespace(
        tasks=list(presets.TASKS), methods=methods, seeds=[0]))


def test_a_cell_value_averages_the_seeds_and_reports_their_spread(tmp_path):
    """Two seeds of one cell: the mean over seeds, their sample std, and a cluster interval over the
    seed-averaged items (three items in each of four clusters)."""
    from benchmarks.suite.report import cell_value

    records = []
    for seed, shift in ((0, 0.0), (1, 1.0)):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        rows = [{"name": f"s{k}_{i}", "psnr": 10.0 + k + shift + 0.1 * i} for k in range(4) for i in range(3)]
        (folder / "rows.json").write_text(json.dumps(rows))
        summary = {"psnr": {"mean": sum(r["psnr"] for r in rows) / len(rows)}}
        records.append({"folder": str(folder), "evaluations": {"100%@5": {"rows": "rows.json", "summary": summary}}})
    value = cell_value(records, "100%@5", "psnr", cluster_of=lambda name: name.split("_")[0])
    assert value["mean"] == pytest.approx(12.1) and value["seeds"] == 2 and value["clusters"] == 4
    assert value["seed_std"] == pytest.approx(2 ** -0.5)  # the sample std of 11.6 and 12.6
    assert 10.6 < value["ci_low"] < 12.1 < value["ci_high"] < 13.6
    one = cell_value(records[:1], "100%@5", "psnr", cluster_of=lambda name: name.split("_")[0])
    assert one["mean"] == pytest.approx(11.6) and math.isnan(one["seed_std"])


def test_the_field_verdicts_read_intervals_over_seeds(tmp_path):
    """The t interval over seeds (3 seeds: t(0.975, 2) = 4.303), and the verdict rules: both intervals on
    one side of 0 for claim 1; claim 2 vacuous when linear loses nothing by stopping at 5 NFE."""
    from benchmarks.suite.report import beats_verdict, fewer_steps_verdict, seed_interval, sweep_summary

    interval = seed_interval([1.0, 2.0, 3.0])
    assert interval["mean"] == 2.0 and interval["ci_high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3))
    assert math.isnan(seed_interval([1.0])["ci_low"])
    above, around, below = ({"mean": m, "ci_low": m - 1, "ci_high": m + 1} for m in (2.0, 0.0, -2.0))
    assert beats_verdict(above, {"ci_low": 0.5, "ci_high": 3}) == "better"
    assert beats_verdict(above, {"ci_low": -0.5, "ci_high": 3}) == "not resolved"  # the items disagree
    assert beats_verdict(below, None) == "worse" and beats_verdict(around, None) == "not resolved"
    assert fewer_steps_verdict(around, {"mean": 0.1, "ci_low": -1, "ci_high": 1.2}) == "vacuous"
    assert fewer_steps_verdict(around, below) == "supported"  # level with linear@10 where linear@5 falls short
    assert fewer_steps_verdict(above, around | {"mean": -0.1}) == "supported"
    assert fewer_steps_verdict(around, around | {"mean": -0.1}) == "not resolved"
    assert fewer_steps_verdict(below, below) == "not supported"

    def records(method, psnr):  # psnr[seed][(nfe, gamma)]; the 5-NFE items: four fragments of two crops
        made = []
        for seed, by_key in enumerate(psnr):
            folder = tmp_path / method / str(seed)
            folder.mkdir(parents=True)
            items = [{"name": f"{k:03d}_r{i}", "psnr": by_key[(5, 1.0)] + 0.1 * k} for k in range(4) for i in range(2)]
            (folder / "rows.json").write_text(json.dumps(items))
            evaluations = {report.sweep_key(n, g): {"rows": "rows.json", "summary": {
                m: {"mean": value + (m == "ssim")} for m in presets.TASKS["sar-optical"]["metrics"]}}
                for (n, g), value in by_key.items()}
            made.append({"method": method, "seed": seed, "sweep": True, "diagnostics": {}, "folder": str(folder),
                         "common": report.sweep_key(5, 1.0), "evaluations": evaluations})
        return made

    def grid(at5, at10, other=0.0):
        return {(n, g): at5 if n == 5 else at10 if n == 10 else other for n in presets.SWEEP_NFES for g in presets.SWEEP_GAMMAS}

    linear = records("cdtsde-linear", [grid(10.0, 11.0), grid(10.5, 11.5), grid(9.5, 10.5)])
    field = records("cdtsde-dynamic", [grid(12.0, 12.0), grid(12.5, 12.5), grid(11.0, 11.0)])
    summary = sweep_summary("sar-optical", {"cdtsde-linear": linear, "cdtsde-dynamic": field})
    claim = summary["verdicts"]["cdtsde-dynamic"]
    assert claim["beats_linear"]["seeds"]["mean"] == pytest.approx(11 / 6) and claim["beats_linear"]["verdict"] == "better"
    assert claim["beats_linear"]["items"]["mean_difference"] == pytest.approx(11 / 6)  # the same seeds' items
    one = sweep_summary("sar-optical", {"cdtsde-linear": linear, "cdtsde-dynamic": field[:1]})["verdicts"]
    assert one["cdtsde-dynamic"]["beats_linear"]["items"]["mean_difference"] == pytest.approx(2.0)  # seed 0 only
    assert one["cdtsde-dynamic"]["beats_linear"]["verdict"] == "one seed"
    psnr = claim["fewer_steps"]["psnr|1"]
    assert psnr["linear_minus_linear10"]["mean"] == pytest.approx(-1.0) and psnr["verdict"] == "supported"
    assert summary["matched"]["psnr|1"] == {"cdtsde-linear": 10, "cdtsde-dynamic": 5}
    table = report.verdict_lines({"sar-optical": {"sweep": summary, "beats_linear": {
        field: claims["beats_linear"] for field, claims in summary["verdicts"].items()}}})
    assert "| cdtsde-dynamic | +1.833 (3): better |" in table
    # PSNR and SSIM (x 2 gammas) rise with the value: supported; the five perception metrics are distances or
    # a ratio far above 1, so there the larger values at 10 NFE are worse and linear@5 already beats linear@10
    assert "| cdtsde-dynamic | 4 / 0 / 0 / 10 |" in table
    # a task scored at the common NFE alone (no sweep) is judged on claim 1 too, with the same numbers, and
    # has no claim 2 to count
    unswept = {m: [r | {"sweep": False, "evaluations": {k: v for k, v in r["evaluations"].items() if k == r["common"]}}
                   for r in made] for m, made in (("cdtsde-linear", linear), ("cdtsde-dynamic", field))}
    claims = report.beats_linear_summary("sar-optical", unswept)
    assert claims["cdtsde-dynamic"] == claim["beats_linear"]
    assert sweep_summary("sar-optical", unswept)["verdicts"] == {}
    table = report.verdict_lines({"sar-optical": {"beats_linear": claims}})
    assert "| cdtsde-dynamic | +1.833 (3): better |" in table and not any("Claim 2" in line for line in table)
    assert report.beats_linear_summary("sar-optical", {"cdtsde-dynamic": field}) == {}  # nothing to judge without linear


def test_the_lmi_papers_order_is_judged_step_by_step_on_the_same_items(tmp_path):
    """Four zero-shot methods on six subjects: LMI above CycleGAN on every subject (the step holds), CycleGAN
    below SDEdit on every subject (reversed), SDEdit and inversion level up to noise across subjects (not
    resolved): the claim is contradicted, and our order is by the means. Two methods suffice for a verdict; one
    gives none."""
    swings = (0.4, -0.4, 0.7, -0.7, 0.2, -0.2)  # inversion's per-subject difference from its mean
    means = {"lmi": 15.0, "cyclegan": 13.0, "sdedit": 14.0, "inversion": 13.9}
    methods = {}
    for method, mean in means.items():
        folder = tmp_path / method
        folder.mkdir()
        rows = [{"name": f"Brats18_S{k}_slice{i:03d}",
                 "psnr_fg": mean + 0.3 * k + (swings[k] if method == "inversion" else 0.0)}
                for k in range(6) for i in range(3)]
        (folder / "rows.json").write_text(json.dumps(rows))
        methods[method] = [{"folder": str(folder), "seed": 0, "common": "100%@5",
                            "evaluations": {"100%@5": {"rows": "rows.json"}}}]
    ordering = report.ordering_summary("brats-t2t1", methods)
    assert [(s["above"], s["below"], s["verdict"]) for s in ordering["steps"]] == [
        ("lmi", "cyclegan", "holds"), ("cyclegan", "sdedit", "reversed"), ("sdedit", "inversion", "not resolved")]
    assert ordering["steps"][0]["mean_difference"] == pytest.approx(2.0)
    assert ordering["verdict"] == "contradicted"
    assert ordering["observed"] == ["lmi", "sdedit", "inversion", "cyclegan"]
    lines = report.ordering_lines({"brats-t2t1": {"ordering": ordering}})
    assert "| brats-t2t1 (psnr_fg) | lmi - cyclegan +2.00 [+2.00, +2.00] holds; cyclegan - sdedit -1.00" in lines[4]
    two = report.ordering_summary("brats-t2t1", {m: methods[m] for m in ("lmi", "cyclegan")})
    assert two["verdict"] == "supported"
    assert report.ordering_summary("brats-t2t1", {"lmi": methods["lmi"]}) is None


def fake_cell(out: Path, method: str, seed: int, psnr: float, **extra) -> dict:
    """A finished sar-optical cell scored at 5 NFE (eight items of four fragments), as run_cell writes it."""
    folder = run.cell_dir(out, "sar-optical", method, seed)
    folder.mkdir(parents=True)
    rows = [{"name": f"{k:03d}_r{i}", "psnr": psnr + 0.1 * k, "ssim": 0.5} for k in range(4) for i in range(2)]
    (folder / "rows.json").write_text(json.dumps(rows))
    summary = {"psnr": {"mean": psnr + 0.15}, "ssim": {"mean": 0.5}, "seconds_per_image": {"mean": 0.01}}
    record = {"task": "sar-optical", "method": method, "seed": seed, "scale": "cpu", "data_root": str(out / "data"),
              "test_items": 8, "train_pairs": 6, "device": "cpu", "peak_rss_mb": 100.0, "peak_cuda_mb": None,
              "train_seconds": 60.0, "images_seen": 3200, "reference": "100%@5", "common": "100%@5",
              "evaluations": {"100%@5": {"fraction": 1.0, "steps": 5, "nfe": 5, "rows": "rows.json",
                                         "summary": summary}}, **extra}
    (folder / "cell.json").write_text(json.dumps(record))
    return record


def test_the_summary_judges_claim_1_on_a_task_without_a_sweep(tmp_path):
    """Linear and a field scored at 5 NFE only (no NFE sweep): the summary still judges the field against
    linear, in the task's section with both intervals and in the claims table at the top."""
    out = tmp_path / "suite"
    for seed, (linear, field) in enumerate([(14.0, 15.0), (14.5, 15.6), (13.5, 14.4)]):
        fake_cell(out, "cdtsde-linear", seed, linear)
        fake_cell(out, "cdtsde-dynamic", seed, field)
    summary = report.write_summary(out)["sar-optical"]
    claims = summary["beats_linear"]
    assert list(claims) == ["cdtsde-dynamic"] and "sweep" not in summary
    assert claims["cdtsde-dynamic"]["seeds"]["mean"] == pytest.approx(1.0)
    assert claims["cdtsde-dynamic"]["verdict"] == "better"
    text = (out / "summary.md").read_text()
    assert "| cdtsde-dynamic | +1.000 (3): better |" in text
    assert "| cdtsde-dynamic | 3 | +1 [+0.752, +1.25] | [+1.000, +1.000] | better |" in text and "Claim 2" not in text


def test_the_published_numbers_beside_ours_name_their_paper_and_data():
    """A paired method's number comes from the CDTSDE paper's Table 1 (PSNR, its Dice on EL), a zero-shot
    method's from the LMI paper's, each with the data it was measured on; none where no paper has it."""
    assert report.published("brats-t2t1", "cdtsde-linear") == "24.13 PSNR, CDTSDE paper on IXI T2->T1"
    assert report.published("brats-t2t1", "lmi") == "20.22 PSNR, LMI paper on IXI PD->T1"
    assert report.published("sar-optical", "pix2pix") == "15.12 PSNR, CDTSDE paper on Sentinel"
    assert report.published("el-mask", "cdtsde-linear") == "0.46 Dice, CDTSDE paper on PSCDE"
    assert report.published("brats-flairt1", "cyclegan") == "18.88 PSNR, LMI paper on IXI PD->T1"
    assert report.published("brats-t1t2", "cdtsde-content") is None
    assert report.published("sar-bigearthnet", "cdtsde-linear") is None


def test_seeds_of_different_code_versions_are_not_averaged_unless_asked(tmp_path):
    """Two seeds of one method that ran different commits: the summary refuses (naming them) unless told
    to mix; cells that recorded no code version are one version ("unrecorded"); a recorded one is named
    under its task's table, and a row with a seed trained before per-item draws carries the footnote mark."""
    out = tmp_path / "suite"
    commit = {"cdtsde": "0.1.0", "commit": "a" * 40, "modified": False}
    fake_cell(out, "cdtsde-linear", 0, 14.0, predates_per_item_draws=True)
    fake_cell(out, "cdtsde-linear", 1, 15.0)
    fake_cell(out, "pix2pix", 0, 16.0, code=commit)
    fake_cell(out, "pix2pix", 1, 17.0, code={**commit, "commit": "b" * 40, "modified": True})
    with pytest.raises(SystemExit, match=r"sar-optical/pix2pix \(seed 0: aaaaaaaaaaaa, seed 1: bbbbbbbbbbbb\+modified\)"):
        run.main(["--summary-only", "--output", str(out)])
    run.main(["--summary-only", "--output", str(out), "--mix-code-versions"])
    text = (out / "summary.md").read_text()
    assert "| cdtsde-linear @ 5 NFE † | 14.65 [" in text and "| pix2pix @ 5 NFE | 16.65" in text
    assert f"† {report.PREDATES_DRAWS[1]}." in text
    assert "Code versions: unrecorded: cdtsde-linear; aaaaaaaaaaaa + bbbbbbbbbbbb+modified: pix2pix." in text

    shutil.rmtree(run.cell_dir(out, "sar-optical", "pix2pix", 1))
    summaries = report.write_summary(out)
    assert summaries["sar-optical"]["rows"]["pix2pix @ 5 NFE"]["code"] == ["aaaaaaaaaaaa"]
    headline = report.headline_lines(summaries, report.load_cells(out))
    assert "| cdtsde-linear | 14.65 † |" in headline and "| pix2pix | **16.15** |" in headline
    assert report.code_label({"code": {"cdtsde": "0.1.0", "commit": None, "modified": None}}) == "cdtsde 0.1.0 (no commit)"
    reopened = {"code": commit, "continued": [{"code": {**commit, "commit": "c" * 40}, "from_images": 4800}]}
    assert report.history_label(reopened) == "aaaaaaaaaaaa continued by cccccccccccc"
    assert report.version_lines({"pix2pix": [reopened]}) == ["", "Code versions: aaaaaaaaaaaa continued by cccccccccccc: pix2pix."]


def test_a_cell_records_the_code_and_the_machine_it_ran_on():
    """The code version is the checkout's commit (this repository is one) and whether its code differs;
    the machine names the processor model and torch's build libraries."""
    import subprocess

    from benchmarks.common import ROOT, code_version, machine

    code = code_version()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code["commit"] == head and isinstance(code["modified"], bool) and code["cdtsde"]
    described = machine()
    assert described["cpu_model"] and any("CPU capability" in line for line in described["torch_build"])
    assert not any(line.startswith("Build settings") for line in described["torch_build"])


@pytest.mark.slow
def test_trained_cells_are_scored_on_another_data_root_without_training(tmp_path, capsys):
    """--score-only scores the trained models of finished cells on the test split of another data root
    (other fragments, other images) into a new output: the scores are those of the other test items, the
    source's training is untouched and not repeated, a cell without its run folder is named and skipped,
    and a cell that fails shows its error in the last lines (not only "no finished cells")."""
    volkov_like(tmp_path / "data")
    volkov_like(tmp_path / "held-out", seed=1, first=10)
    trained, rescored = tmp_path / "suite", tmp_path / "rescored"
    common = ["--scale", "quick", "--tasks", "sar-optical", "--methods", "cdtsde-linear", "identity",
              "--max-steps", "2", "--test-items", "2"]
    run.main([*common, "--data-root", str(tmp_path / "data"), "--output", str(trained)])
    log = (trained / "cells/sar-optical/cdtsde-linear/seed0/run/metrics.csv").read_text()
    shutil.copytree(trained / "cells/sar-optical/identity", tmp_path / "identity")
    shutil.rmtree(trained / "cells/sar-optical/identity/seed0/run")  # as committed: cell.json and rows only
    capsys.readouterr()
    run.main([*common, "--score-only", "--from", str(trained), "--data-root", str(tmp_path / "held-out"),
              "--output", str(rescored)])
    printed = capsys.readouterr().out
    assert "sar-optical/identity/0: no trained model in" in printed and "1 cells done, 0 to run" not in printed
    assert not (rescored / "cells/sar-optical/identity").exists()
    source = json.loads((trained / "cells/sar-optical/cdtsde-linear/seed0/cell.json").read_text())
    cell = json.loads((rescored / "cells/sar-optical/cdtsde-linear/seed0/cell.json").read_text())
    assert cell["data_root"] == str(tmp_path / "held-out") and cell["source_cell"] == str(
        trained / "cells/sar-optical/cdtsde-linear/seed0")
    assert cell["config"] == source["config"] and cell["train_seconds"] == source["train_seconds"]
    assert set(cell["evaluations"]) == set(source["evaluations"]) and cell["code"]["commit"]
    rows = json.loads((rescored / "cells/sar-optical/cdtsde-linear/seed0" / cell["evaluations"]["100%@5"]["rows"]).read_text())
    assert {row["name"] for row in rows} <= {"013_r1c1", "013_r2c2"}  # the held-out root's test fragment
    assert cell["evaluations"]["100%@5"]["summary"]["psnr"] != source["evaluations"]["100%@5"]["summary"]["psnr"]
    assert (trained / "cells/sar-optical/cdtsde-linear/seed0/run/metrics.csv").read_text() == log
    assert not (rescored / "cells/sar-optical/cdtsde-linear/seed0/run").exists()
    assert f"Scored on {tmp_path / 'held-out'}'s test split by the trained models of {trained}" in (
        rescored / "summary.md").read_text()

    # scoring it again is done; the training suite pointed at the held-out root refuses its cells
    run.main([*common, "--score-only", "--from", str(trained), "--data-root", str(tmp_path / "held-out"),
              "--output", str(rescored)])
    assert "1 cells done, 0 to run" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="made on the data root .*--score-only --from"):
        run.main([*common, "--data-root", str(tmp_path / "held-out"), "--output", str(trained)])
    # a failing cell: its error is the last thing printed
    shutil.rmtree(trained / "cells/sar-optical/identity")
    shutil.copytree(tmp_path / "identity", trained / "cells/sar-optical/identity")
    (trained / "cells/sar-optical/identity/seed0/run/model/model.safetensors").write_bytes(b"damaged")
    with pytest.raises(SystemExit) as failure:
        run.main([*common, "--score-only", "--from", str(trained), "--data-root", str(tmp_path / "held-out"),
                  "--output", str(tmp_path / "fails"), "--methods", "identity"])
    assert "1 cell(s) failed" in str(failure.value) and "does not match the SHA-256" in str(failure.value)


def test_the_cells_keep_the_callers_thread_setting(monkeypatch):
    """OMP_NUM_THREADS set by the caller reaches every cell (--jobs 1 too); unset, the cores are shared."""
    monkeypatch.setattr(run.os, "cpu_count", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert run.cell_environment(1)["OMP_NUM_THREADS"] == "1"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert run.cell_environment(1)["OMP_NUM_THREADS"] == "8" and run.cell_environment(3)["OMP_NUM_THREADS"] == "2"


def test_score_only_skips_a_nifti_model_trained_before_ras_reading(tmp_path, capsys):
    """A BraTS cell whose checkpoint records no nifti_orientation saw its volumes in their stored directions:
    --score-only names it and skips it (today's slices are flipped against its training); a recorded RAS
    model, or a task of other files, is scored."""
    def trained_cell(task, data):
        model = run.cell_dir(tmp_path, task, "cdtsde-linear", 0) / "run" / "model"
        model.mkdir(parents=True)
        (model.parents[1] / "cell.json").write_text("{}")
        (model / "config.json").write_text(json.dumps({"method": "cdtsde", "data": data}))

    trained_cell("brats-t1t2", {"target_channels": 1})
    trained_cell("brats-t2t1", {"target_channels": 1, "nifti_orientation": "ras"})
    trained_cell("sar-optical", {"target_channels": 3})
    args = type("Args", (), {"source": tmp_path})()
    cells = [(task, "cdtsde-linear", 0) for task in ("brats-t1t2", "brats-t2t1", "sar-optical")]
    assert run.scorable(args, cells) == cells[1:]
    assert "brats-t1t2/cdtsde-linear/0: its model was trained before NIfTI volumes were read in RAS" in \
        capsys.readouterr().out


@pytest.mark.parametrize("options", [{}, {"sweep": True, "limit": 8, "max_steps": 20}])
def test_a_cell_s_rerun_command_rebuilds_its_configuration(tmp_path, monkeypatch, options):
    """The command the summary gives for a cell, run, asks the suite for that cell alone with the settings it
    ran with (the configuration `finished` compares, its test items, budget and sweep) at its code version."""
    import shlex

    config = presets.cell_config("brats-t1t2", "cdtsde-envelope", 2, "converged", tmp_path, options.get("max_steps"))
    record = {"task": "brats-t1t2", "method": "cdtsde-envelope", "seed": 2, "scale": "converged", "config": config,
              "data_root": str(tmp_path), "limit": options.get("limit"), "sweep": options.get("sweep", False),
              "max_steps": options.get("max_steps"), "code": {"cdtsde": "0.1.0", "commit": "a" * 40, "modified": False}}
    command = report.rerun_command(record)
    assert command.startswith(f"git checkout {'a' * 40} && OMP_NUM_THREADS=1 python -m benchmarks.suite ")
    # a cell reopened under a later early-stopping rule is reproduced by the code that continued it
    reopened = {**record, "continued": [{"code": {**record["code"], "commit": "b" * 40}, "from_images": 4800,
                                         "from_state": True}]}
    assert report.rerun_command(reopened) == command.replace("a" * 40, "b" * 40)
    asked = []
    monkeypatch.setattr(run, "run_suite", asked.append)
    argv = shlex.split(command.split("python -m benchmarks.suite ")[1].replace("RERUN_FOLDER", str(tmp_path / "rerun")))
    run.main(argv)
    (args,) = asked
    assert run.cells_of(args) == [("brats-t1t2", "cdtsde-envelope", 2)]
    assert presets.cell_config("brats-t1t2", "cdtsde-envelope", 2, args.scale, args.data_root, args.max_steps) == config
    assert (args.test_items, args.sweep, args.max_steps) == (record["limit"], record["sweep"], record["max_steps"])


@pytest.mark.slow
def test_verify_compares_a_rerun_with_the_committed_cell_and_refuses_other_code(tmp_path, monkeypatch, capsys):
    """A cell run twice by one code version reproduces to the last digit (weights and every score); a
    changed score is found and named; a rerun from another checkout is refused with the cell's command."""
    from benchmarks.suite import verify

    volkov_like(tmp_path / "data")
    common = ["--scale", "quick", "--tasks", "sar-optical", "--methods", "cdtsde-linear", "--max-steps", "2",
              "--test-items", "2", "--data-root", str(tmp_path / "data")]
    for name in ("committed", "rerun"):
        run.main([*common, "--output", str(tmp_path / name)])
    cell = ["--cell", "sar-optical", "cdtsde-linear", "0"]
    verify.main(["--output", str(tmp_path / "committed"), *cell, "--against", str(tmp_path / "rerun")])
    result = json.loads((run.cell_dir(tmp_path / "committed", "sar-optical", "cdtsde-linear", 0) / "verify.json").read_text())
    assert result["reproduced"] and result["largest_difference"] == 0 and result["values_compared"] >= 20
    assert result["weights_sha256"]["committed"] == result["weights_sha256"]["rerun"] is not None
    rerun = run.cell_dir(tmp_path / "rerun", "sar-optical", "cdtsde-linear", 0)
    rows_file = rerun / json.loads((rerun / "cell.json").read_text())["evaluations"]["100%@5"]["rows"]
    rows = json.loads(rows_file.read_text())
    rows[1]["psnr"] += 0.01
    rows_file.write_text(json.dumps(rows))
    with pytest.raises(SystemExit):
        verify.main(["--output", str(tmp_path / "committed"), *cell, "--against", str(tmp_path / "rerun")])
    assert "NOT reproduced" in capsys.readouterr().out
    monkeypatch.setattr(verify, "code_version", lambda: {"cdtsde": "0.1.0", "commit": "b" * 40, "modified": False})
    with pytest.raises(SystemExit, match="this checkout is bbbbbbbbbbbb: rerun it at its commit .*--output RERUN_FOLDER.*--against"):
        verify.main(["--output", str(tmp_path / "committed"), *cell])


def test_the_tables_and_the_validation_agree_on_which_mask_items_have_a_defect():
    """The suite's "-present" rows and the training monitor's headline count the same items: a busbar alone
    (class 4) is no defect, any pixel of dark area or crack (1-3) is one."""
    import torch

    from cdtsde.data.masks import PV_EL_CLASSES, encode_classes
    from cdtsde.run import headline_score

    masks = {"empty": np.zeros((8, 8), np.int64), "busbar": np.full((8, 8), 4, np.int64)}
    for defect in (1, 2, 3):
        masks[f"class{defect}"] = np.zeros((8, 8), np.int64)
        masks[f"class{defect}"][3, 5] = defect
    items = [{"name": name, "target": torch.from_numpy(encode_classes(mask, len(PV_EL_CLASSES)))}
             for name, mask in masks.items()]
    headline = headline_score(run.task_data("el-mask", Path("data"), "cpu"), DataInfo(3, len(PV_EL_CLASSES), "mask"))
    presence = run.defect_presence(items, headline)
    assert presence == {"empty": False, "busbar": False, "class1": True, "class2": True, "class3": True}
