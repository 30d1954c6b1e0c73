"""The suite's report: summary.md / summary.json and the figures, rebuilt from whatever cells exist, and the
results blocks of README.md (the headline per task) and docs/results.md (every task's table and the verdicts).

Statistics: every interval is a 95% cluster bootstrap over the units that are independent (subjects for
MRI, fragments or tiles for SAR, modules for EL; `TASKS[...]["cluster"]`) of the item scores averaged over
the training seeds; the spread over seeds is the standard deviation of the seeds' means. Every method is
paired against CDTSDE-linear (DoSSR) on the same items.

Versions: the seeds of one row are averaged only when their cells ran the same code (`code_label`: the commit,
and whether the tree was modified; cells written before cells recorded it count as one "unrecorded" version)
unless told to mix them (a reopened cell counts as the code that made it: continuing changes when its
training stops, and the version lines name the code that continued it, `history_label`); a row with a seed
trained before per-item random draws (its cell says `predates_per_item_draws`) is marked, since today's code
does not reproduce it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import curve_summary, test_items
from benchmarks.suite.presets import (
    COMMON_STEPS,
    FIELDS,
    REFERENCE,
    SWEEP_GAMMAS,
    SWEEP_NFES,
    TASKS,
    from_study,
    row_order,
    task_data,
)

ROOT = Path(__file__).resolve().parents[2]
# column titles: what each metric is, and which way is better
TITLES = {"psnr_fg": "brain PSNR", "ssim_fg": "brain SSIM", "kmeans3/dice/mean": "K-Means-3 Dice",
          "perception/patch_swd": "patch SWD (lower)", "perception/spectral_distance": "spectral dist. (lower)",
          "perception/sharpness_ratio": "sharpness ratio (1)", "perception/mean_offset": "colour offset (lower)",
          "perception/histogram_w1": "histogram W1 (lower)", "dice/defect": "defect Dice, all items",
          "dice/defect-present": "defect Dice, defect items", "hd95/defect-present": "HD95, defect items (lower)",
          "skeleton_f1/defect": "skeleton F1"}
LOWER_IS_BETTER = {"hd95/defect-present"}  # of the paired metrics (perception metrics are set-level, not paired)


def markers(out: Path) -> tuple[str, str]:
    """The lines around the block a suite output regenerates in README.md and docs/results.md, named by the
    output folder (the scale: cpu, converged), so that the blocks of several scales live side by side."""
    return f"<!-- suite:{out.name}:begin -->", f"<!-- suite:{out.name}:end -->"


# the CDTSDE paper's Table 1, on its data (IXI at 256 px, Sentinel, PSCDE) with its training: quoted, not ours
PAPER_TABLE1 = {
    "sar-optical": ("Sentinel", ("ssim", "psnr"), {"pix2pix": (.23, 15.12), "abridge": (.15, 12.50),
                                                  "cdtsde-linear": (.36, 17.14), "bbdm": (.02, 6.25),
                                                  "dbim": (.14, 13.48), "cdtsde-dynamic": (.38, 17.46)}),
    "brats-t1t2": ("IXI T1->T2", ("psnr",), {"pix2pix": (22.17,), "abridge": (13.73,), "cdtsde-linear": (23.28,),
                                            "bbdm": (8.63,), "dbim": (20.43,), "cdtsde-dynamic": (23.32,)}),
    "brats-t2t1": ("IXI T2->T1", ("psnr",), {"pix2pix": (22.24,), "abridge": (13.77,), "cdtsde-linear": (24.13,),
                                            "bbdm": (8.69,), "dbim": (21.65,), "cdtsde-dynamic": (24.33,)}),
    "el-mask": ("PSCDE", ("dice",), {"pix2pix": (.178,), "abridge": (.009,), "cdtsde-linear": (.460,),
                                     "bbdm": (.024,), "dbim": (.167,), "cdtsde-dynamic": (.488,)}),
}
PAPER_NAMES = {"pix2pix": "Pix2Pix", "abridge": "ABridge", "cdtsde-linear": "DOSSR (CDTSDE linear)", "bbdm": "BBDM",
               "dbim": "DBIM", "cdtsde-dynamic": "CDTSDE (dynamic field)"}
PREDATES_DRAWS = ("†", "a seed trained before per-item random draws (commit 804d91d): today's code trains it "
                  "differently, and a mean over seeds mixes its old draws with the other seeds' new ones")
# the LMI paper's (seed paper 002) Table 1 (IXI PD -> T1; their data and training): Dice, PSNR, SSIM
LMI_TABLE1 = {"cyclegan": (.85, 18.88, .27), "inversion": (.66, 10.15, .06), "sdedit": (.82, 15.96, .50),
              "lmi": (.88, 20.22, .69)}
LMI_NAMES = {"cyclegan": "CycleGAN", "inversion": "StyleGAN (inversion)", "sdedit": "SDEdit",
             "lmi": "LMI-guided diffusion"}


def published(task: str, method: str) -> str | None:
    """The papers' number for a method on the task's protocol, saying whose it is (their data and training):
    the CDTSDE paper's Table 1 PSNR (its Dice on EL) for the paired methods, the LMI paper's PSNR for the
    zero-shot ones; None where neither paper has the method on the task."""
    if method in PAPER_TABLE1.get(task, ("", (), {}))[2]:
        data, metrics, rows = PAPER_TABLE1[task]
        column = metrics.index("psnr") if "psnr" in metrics else 0
        return f"{rows[method][column]:g} {'PSNR' if metrics[column] == 'psnr' else 'Dice'}, CDTSDE paper on {data}"
    if TASKS[task]["zero_shot"] and method in LMI_TABLE1:
        return f"{LMI_TABLE1[method][1]:g} PSNR, LMI paper on IXI PD->T1"
    return None


def load_cells(out: Path) -> dict[str, dict[str, list[dict]]]:
    """{task: {method: [cell records, by seed]}} of the finished cells under `out`."""
    cells: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(out.glob("cells/*/*/seed*/cell.json")):
        record = json.loads(path.read_text())
        record["folder"] = str(path.parent)
        cells.setdefault(record["task"], {}).setdefault(record["method"], []).append(record)
    return {task: dict(sorted(methods.items(), key=lambda kv: row_order(kv[0]))) for task, methods in cells.items()}


def code_label(record: dict) -> str:
    """The code version a cell ran: its commit (12 digits; "+modified" when the tree differed from it), the
    package version outside a git checkout, "unrecorded" for a cell written before cells recorded it."""
    code = record.get("code")
    if not code:
        return "unrecorded"
    if code.get("commit") is None:
        return f"cdtsde {code['cdtsde']} (no commit)"
    return code["commit"][:12] + ("+modified" if code.get("modified") else "")


def history_label(record: dict) -> str:
    """`code_label` of the code that made the cell, then of each that continued its training (a reopened
    cell, `run.run_cell`'s "continued"): "aaaaaaaaaaaa continued by bbbbbbbbbbbb"."""
    return " continued by ".join([code_label(record)] + [code_label(entry) for entry in record.get("continued", [])])


def reproducing_code(record: dict) -> dict:
    """The code version that trains and scores the cell again as it is: the last that continued its training
    (`run.run_cell`'s "continued"), else the one that made it."""
    return ([entry["code"] for entry in record.get("continued", [])] or [record.get("code") or {}])[-1]


def rerun_command(record: dict) -> str:
    """The commands that train and score a cell again as it ran (into a new output: the suite skips a
    finished cell): the checkout of its code version, then the suite on its task, method and seed with the
    options it ran with (test items, a budget override, the sweep) and one torch thread, as the committed
    cells ran. A score-only cell names the trained cells it scored. A cell whose training was reopened
    (`continued`) is reproduced by the code that continued it: the one before stops where it first stopped."""
    code = reproducing_code(record)
    command = ([f"git checkout {code['commit']} &&"] if code.get("commit") else []) + [
        "OMP_NUM_THREADS=1 python -m benchmarks.suite", "--scale", record["scale"], "--tasks", record["task"],
        "--methods", record["method"], "--seeds", str(record["seed"])]
    command += ["--sweep"] if record.get("sweep") else []
    command += ["--test-items", str(record["limit"])] if record.get("limit") is not None else []
    command += ["--max-steps", str(record["max_steps"])] if record.get("max_steps") is not None else []
    if "source_cell" in record:
        command += ["--score-only", "--from", shlex.quote(str(Path(record["source_cell"]).parents[3]))]
    return " ".join(command + ["--data-root", shlex.quote(record["data_root"]), "--output", "RERUN_FOLDER"])


def check_code_versions(cells: dict[str, dict[str, list[dict]]], mix: bool) -> None:
    """Refuse to average seeds that ran different code into one row, naming them, unless `mix`."""
    mixed = [f"{task}/{method} (" + ", ".join(f"seed {r['seed']}: {code_label(r)}" for r in records) + ")"
             for task, methods in cells.items() for method, records in methods.items()
             if len({code_label(r) for r in records}) > 1]
    if mixed and not mix:
        raise SystemExit("seeds from different code versions would be averaged into one row: " + "; ".join(mixed) +
                         ". Rerun them with one version, or pass --mix-code-versions to average them anyway")


def version_lines(methods: dict[str, list[dict]]) -> list[str]:
    """Which code version each method's row comes from, when any of the task's cells recorded one."""
    labels = {method: sorted({history_label(r) for r in records}) for method, records in methods.items()}
    if all(found == ["unrecorded"] for found in labels.values()):
        return []
    by_version: dict[str, list[str]] = {}
    for method, found in labels.items():
        by_version.setdefault(" + ".join(found), []).append(method)
    return ["", "Code versions: " + "; ".join(f"{version}: {', '.join(names)}" for version, names in by_version.items())
            + "."]


def predates_draws(records: list[dict]) -> bool:
    return any(r.get("predates_per_item_draws") for r in records)


def seed_averaged_rows(records: list[dict], key: str) -> list[dict]:
    """Each test item's scores averaged over the seeds (the items every seed scored); read once per
    evaluation however many metrics and comparisons ask for it."""
    return _averaged_rows(tuple(str(Path(r["folder"]) / r["evaluations"][key]["rows"]) for r in records
                                if key in r["evaluations"]))


@functools.cache
def _averaged_rows(paths: tuple[str, ...]) -> list[dict]:
    per_seed = [json.loads(Path(path).read_text()) for path in paths]
    names = set.intersection(*({row["name"] for row in rows} for rows in per_seed))
    by_name = [{row["name"]: row for row in rows} for rows in per_seed]
    averaged = []
    for name in sorted(names):
        metrics = set.intersection(*(set(rows[name]) for rows in by_name)) - {"name"}
        averaged.append({"name": name, **{m: float(np.mean([rows[name][m] for rows in by_name])) for m in metrics}})
    return averaged


def cell_value(records: list[dict], key: str, metric: str, cluster_of) -> dict:
    """Mean over seeds, spread over seeds, and the cluster interval of the seed-averaged items."""
    from cdtsde.metrics import mean_interval

    seeds = [r["evaluations"][key]["summary"][metric]["mean"] for r in records
             if key in r["evaluations"] and metric in r["evaluations"][key]["summary"]]
    if not seeds:
        return {"mean": math.nan}
    value = {"mean": float(np.mean(seeds)), "seed_std": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else math.nan,
             "seeds": len(seeds)}
    if metric.startswith("perception/"):  # a set-level metric: no item interval
        return value
    interval = mean_interval(seed_averaged_rows(records, key), metric, cluster_of=cluster_of)
    return {**value, "ci_low": interval["ci_low"], "ci_high": interval["ci_high"],
            "clusters": interval.get("n_clusters")}


def format_value(value: dict) -> str:
    if not math.isfinite(value.get("mean", math.nan)):
        return "-"
    digits = 2 if abs(value["mean"]) >= 10 else 3
    text = f"{value['mean']:.{digits}f}"
    if math.isfinite(value.get("ci_low", math.nan)):
        text += f" [{value['ci_low']:.{digits}f}, {value['ci_high']:.{digits}f}]"
    if math.isfinite(value.get("seed_std", math.nan)):
        text += f" ±{value['seed_std']:.{digits}f}s"
    return text


def task_summary(task: str, methods: dict[str, list[dict]]) -> dict:
    from cdtsde.metrics import paired_comparison

    cluster_of, metrics = TASKS[task]["cluster"], TASKS[task]["metrics"]
    rows, paired, compute = {}, {}, {}
    for method, records in methods.items():
        first = records[0]
        for role in ("reference", "common"):
            key = first[role]
            label = f"{method} @ {first['evaluations'][key]['nfe']} NFE"
            if label in rows:
                continue
            rows[label] = {"method": method, "key": key, **{m: cell_value(records, key, m, cluster_of) for m in metrics},
                           "seconds_per_image": float(np.mean([r["evaluations"][key]["summary"]["seconds_per_image"]["mean"]
                                                               for r in records])),
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
                           "peak_cuda_mb": first.get("peak_cuda_mb"),
                           "train_minutes": float(np.mean([r["train_seconds"] for r in records])) / 60,
                           "images_seen": first["images_seen"], "seeds": [r["seed"] for r in records],
                           "code": sorted({history_label(r) for r in records}), "predates_draws": predates_draws(records),
                           "rerun": [rerun_command(r) for r in records]}
        common = first["common"]
        compute[method] = {f"{ev['fraction']:.2f}": cell_value(records, key, metrics[0], cluster_of)["mean"]
                           for key, ev in sorted(first["evaluations"].items(), key=lambda kv: kv[1]["fraction"])
                           if ev["steps"] == first["evaluations"][common]["steps"]}
    if REFERENCE in methods:
        reference = seed_averaged_rows(methods[REFERENCE], methods[REFERENCE][0]["common"])
        for method, records in methods.items():
            if method == REFERENCE:
                continue
            mine = seed_averaged_rows(records, records[0]["common"])
            shared = {row["name"] for row in mine} & {row["name"] for row in reference}
            paired[method] = {m: paired_comparison([r for r in mine if r["name"] in shared],
                                                   [r for r in reference if r["name"] in shared], m,
                                                   higher_is_better=m not in LOWER_IS_BETTER, cluster_of=cluster_of)
                              for m in metrics if not m.startswith("perception/") and all(m in r for r in mine)}
    some = next(iter(methods.values()))[0]
    names = [row["name"] for row in json.loads((Path(some["folder"]) / some["evaluations"][some["common"]]["rows"]).read_text())]
    return {"rows": rows, "paired": paired, "compute": compute, "units": len({cluster_of(name) for name in names})}


def compute_figure(path: Path, task: str, compute: dict, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for method, curve in compute.items():
        if len(curve) > 1:
            axis.plot([100 * float(f) for f in curve], list(curve.values()), marker="o", label=method)
    axis.set(xlabel="% of the training budget", ylabel=metric, title=f"{task}: {metric} at {COMMON_STEPS} NFE")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def flat_over_last_quarter(rows: list[dict], monitor: str) -> bool:
    """Whether a validation curve has stopped gaining: the best of its last quarter of validations (at least
    3) beats the best before it (in the monitor's direction: down for a loss, up for the headline) by no more
    than the spread of that quarter (its standard deviation, the recipe study's noise of a figure). A run that
    stopped early after at least a quarter of its validations without a gain is flat by construction. Fewer
    than 4 validations cannot show it: not flat."""
    if len(rows) < 4:
        return False
    sign = -1.0 if monitor.startswith("val/loss") else 1.0
    values = [sign * row[monitor] for row in rows]
    cut = len(values) - max(3, len(values) // 4)
    return max(values[cut:]) - max(values[:cut]) <= float(np.std(values[cut:], ddof=1))


def convergence_summary(methods: dict[str, list[dict]]) -> dict:
    """Per converged cell (those with a validation curve): why it stopped, images seen, its best validation
    and step, whether its curve is flat over its last quarter (None: it learns nothing), the images and
    training CPU minutes to 95% of its plateau (`benchmarks.common.curve_summary`), its recipe."""
    return {method: [{"seed": r["seed"], "stopped": r["stopped"], "images_seen": r["images_seen"],
                      "monitor": r["monitor"], "best_value": r["best_value"], "best_step": r["best_step"],
                      "flat": None if r["stopped"] == "nothing to train" else
                      flat_over_last_quarter(r["validation_rows"], r["monitor"]),
                      **to_plateau(r), "recipe": r["recipe"],
                      # the images where a stop under an earlier early-stopping rule was reopened
                      "continued_from": [entry["from_images"] for entry in r.get("continued", [])]}
                     for r in records if "validation_rows" in r]
            for method, records in methods.items() if any("validation_rows" in r for r in records)}


def to_plateau(record: dict) -> dict:
    """The images and CPU minutes a converged cell took to 95% of its plateau (None where it has no curve)."""
    if not record["validation_rows"]:
        return {"images_to_95": None, "cpu_minutes_to_95": None}
    summary = curve_summary({"rows": record["validation_rows"], "monitor": record["monitor"]})
    return {key: summary[key] for key in ("images_to_95", "cpu_minutes_to_95")}


def validation_figure(path: Path, task: str, methods: dict[str, list[dict]]) -> None:
    """Every converged cell's monitored validation figure against images seen and against its training
    process's CPU minutes, the best marked; one colour per method, one line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    monitor = next(record["monitor"] for records in methods.values() for record in records if "monitor" in record)
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20").colors
    styles = ("-", "--", ":", "-.")
    for index, (method, records) in enumerate(methods.items()):
        for order, record in enumerate(records):
            rows = record.get("validation_rows")
            if not rows:
                continue
            values = [r[record["monitor"]] for r in rows]
            best = None if record["best_step"] is None else next(
                (r for r in rows if r["step"] == record["best_step"]), None)
            for axis, x in ((axes[0], "images"), (axes[1], "cpu_seconds")):
                scale = 60.0 if x == "cpu_seconds" else 1.0
                colour = colours[index % len(colours)]
                axis.plot([r[x] / scale for r in rows], values, styles[order % len(styles)], color=colour,
                          label=f"{method} s{record['seed']}", linewidth=1)
                if best is not None:
                    axis.plot(best[x] / scale, record["best_value"], "o", color=colour, markersize=4)
    axes[0].set(xlabel="images seen", ylabel=f"{monitor} (val split)", title=f"{task}: validation (best marked)")
    axes[1].set(xlabel="training CPU minutes", title="against compute")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def convergence_lines(task: str, convergence: dict) -> list[str]:
    lines = ["", f"Convergence (validation-{task}.png; flat: the best of the last quarter of the validations beats "
             "the best before it by no more than that quarter's spread):",
             "", "| method | seed | recipe | stopped | images seen | best validation (step) | images to 95% | "
             "CPU min to 95% | flat over last quarter |", "|---|---|---|---|---|---|---|---|---|"]
    for method, cells in convergence.items():
        for cell in cells:
            # no lever: the cpu scale's settings, as the study's pick (its baseline) or for want of a study
            levers = ", ".join(cell["recipe"]["levers"].values()) or (
                "baseline (study)" if from_study(cell["recipe"]) else "cpu settings")
            best = "-" if cell["best_value"] is None else f"{cell['monitor']} {cell['best_value']:.4g} ({cell['best_step']})"
            flat = "-" if cell["flat"] is None else "yes" if cell["flat"] else "**NOT FLAT**"
            to_95 = ("- | -" if cell["images_to_95"] is None else
                     f"{cell['images_to_95']} | {cell['cpu_minutes_to_95']:.1f}")
            stopped = cell["stopped"] + "".join(f" (reopened at {images})" for images in cell.get("continued_from", []))
            lines.append(f"| {method} | {cell['seed']} | {levers} | {stopped} | {cell['images_seen']} | {best} | "
                         f"{to_95} | {flat} |")
    return lines


def translations_figure(path: Path, task: str, methods: dict[str, list[dict]]) -> bool:
    """Four test items translated by every method of the task (its first seed, at the common NFE), when
    the cells' weights and the data are on this machine; False (nothing drawn) otherwise."""
    from cdtsde.data import build_dataset
    from cdtsde.training import load_pretrained

    firsts = {method: records[0] for method, records in methods.items()}
    if not all((Path(r["folder"]) / "run" / "model").is_dir() for r in firsts.values()):
        return False
    some = next(iter(firsts.values()))
    data = task_data(task, Path(some["data_root"]), some["scale"])  # the test split every cell of the task scored
    if not Path(data["root"]).exists():
        return False
    test_set = test_items(build_dataset(data, "test"), some["test_items"])
    models = {method: load_pretrained(Path(r["folder"]) / "run") for method, r in firsts.items()}
    grid(path, models, test_set, next(iter(models.values())).data.target_kind == "mask")
    return True


HIGHER_IS_BETTER = ("psnr", "ssim", "dice", "kmeans", "skeleton_f1")


def quality(metric: str, value: float) -> float:
    """A metric oriented so that larger is better (a sharpness ratio is best at 1, on either side)."""
    if metric.endswith("sharpness_ratio"):
        return -abs(math.log(value)) if value > 0 else -math.inf
    return value if metric.split("/")[0].startswith(HIGHER_IS_BETTER) else -value


def sweep_key(nfe: int, gamma: float) -> str:
    return f"100%@{nfe}" + ("" if gamma == 1.0 else f"/gamma{gamma:g}")


def seed_interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean over training seeds and its Student-t interval (none from one seed): the spread that retraining
    gives, which the item intervals (one test set for every seed) do not contain."""
    from scipy import stats

    mean = float(np.mean(values)) if values else math.nan
    if len(values) < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "seeds": len(values)}
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "seeds": len(values)}


def seed_values(records: list[dict], key: str, metric: str) -> dict[int, float]:
    """{seed: the metric oriented so that larger is better} at one evaluation of a cell's seeds."""
    return {r["seed"]: quality(metric, r["evaluations"][key]["summary"][metric]["mean"]) for r in records
            if key in r["evaluations"] and metric in r["evaluations"][key]["summary"]}


def differences(mine: dict[int, float], theirs: dict[int, float]) -> list[float]:
    """Seed-matched differences (seed s of both trained on the same data order and draws)."""
    return [mine[seed] - theirs[seed] for seed in sorted(mine.keys() & theirs.keys())]


def beats_verdict(seeds: dict, items: dict | None) -> str:
    """'better' / 'worse' when the interval over seeds and, for item metrics, the cluster interval over the
    test items both exclude zero on the same side; 'one seed' without a seed interval; else 'not resolved'."""
    if not math.isfinite(seeds["ci_low"]):
        return "one seed"
    lows = [seeds["ci_low"]] + ([items["ci_low"]] if items and math.isfinite(items.get("ci_low", math.nan)) else [])
    highs = [seeds["ci_high"]] + ([items["ci_high"]] if items and math.isfinite(items.get("ci_high", math.nan)) else [])
    return "better" if min(lows) > 0 else "worse" if max(highs) < 0 else "not resolved"


def fewer_steps_verdict(field_at_common: dict, linear_at_common: dict) -> str:
    """The paper's claim that a field at COMMON_STEPS NFE reaches linear's 10-NFE quality, from the seed
    intervals of (field@common - linear@10) and of the control (linear@common - linear@10): 'vacuous' when
    linear itself loses nothing by stopping early, 'supported' when the field is above linear@10 or level
    with it while linear@common is below it, 'not supported' when the field is below linear@10."""
    if not math.isfinite(field_at_common["ci_low"]):
        return "one seed"
    if linear_at_common["mean"] >= 0:
        return "vacuous"
    if field_at_common["ci_low"] > 0 or (field_at_common["ci_high"] >= 0 and linear_at_common["ci_high"] < 0):
        return "supported"
    return "not supported" if field_at_common["ci_high"] < 0 else "not resolved"


def matched_items_comparison(task: str, records: list[dict], linear: list[dict], metric: str) -> dict:
    """method - linear (or any other method's records) on the test items at the common NFE, each side averaged
    over the seeds both have (so the item interval is centred where the seed-matched differences are);
    cluster-bootstrap interval."""
    from cdtsde.metrics import paired_comparison

    seeds = {r["seed"] for r in records} & {r["seed"] for r in linear}
    mine, theirs = ([r for r in side if r["seed"] in seeds] for side in (records, linear))
    mine, theirs = seed_averaged_rows(mine, mine[0]["common"]), seed_averaged_rows(theirs, theirs[0]["common"])
    shared = {row["name"] for row in mine} & {row["name"] for row in theirs}
    return paired_comparison([r for r in mine if r["name"] in shared], [r for r in theirs if r["name"] in shared],
                             metric, higher_is_better=metric not in LOWER_IS_BETTER, cluster_of=TASKS[task]["cluster"])


def beats_linear_summary(task: str, methods: dict[str, list[dict]]) -> dict[str, dict]:
    """The CDTSDE paper's first claim per learned field: the headline at COMMON_STEPS NFE (gamma 1) minus
    linear's, over seed-matched pairs (t interval over seeds) and over the seed-averaged test items (cluster
    interval), with `beats_verdict`; for every field that has the evaluation, whether or not its task sweeps."""
    common = sweep_key(COMMON_STEPS, 1.0)
    present = {m: [r for r in records if common in r["evaluations"]] for m, records in methods.items() if m in FIELDS}
    present = {m: records for m, records in present.items() if records}
    if REFERENCE not in present:
        return {}
    headline, linear = TASKS[task]["metrics"][0], present[REFERENCE]
    claims = {}
    for field, records in present.items():
        if field == REFERENCE:
            continue
        seeds = seed_interval(differences(seed_values(records, common, headline), seed_values(linear, common, headline)))
        items = matched_items_comparison(task, records, linear, headline)
        claims[field] = {"metric": headline, "seeds": seeds, "items": items, "verdict": beats_verdict(seeds, items)}
    return claims


def sweep_summary(task: str, methods: dict[str, list[dict]]) -> dict:
    """The field ablation of one task: each metric against NFE per field and gamma (mean over seeds), the
    fewest NFE at which each field reaches linear's 10-step value, the fields' end-of-training diagnostics,
    and the verdicts on the paper's two claims per field (a learned field beats linear at the common NFE on
    the headline metric; it reaches linear's 10-NFE value at the common NFE, per metric and gamma)."""
    swept = {m: [r for r in records if r.get("sweep")] for m, records in methods.items() if m in FIELDS}
    swept = {m: records for m, records in swept.items() if records}
    curves, matched, verdicts, diagnostics = {}, {}, {}, {}
    for metric in TASKS[task]["metrics"]:
        for gamma in SWEEP_GAMMAS:
            by_field = {m: {n: float(np.mean([r["evaluations"][sweep_key(n, gamma)]["summary"][metric]["mean"]
                                              for r in records])) for n in SWEEP_NFES}
                        for m, records in swept.items()}
            curves[f"{metric}|{gamma:g}"] = by_field
            if REFERENCE in by_field:
                goal = by_field[REFERENCE][10]
                matched[f"{metric}|{gamma:g}"] = {
                    m: next((n for n in SWEEP_NFES if quality(metric, by_nfe[n]) >= quality(metric, goal)), None)
                    for m, by_nfe in by_field.items()}
    beats = beats_linear_summary(task, swept)
    if REFERENCE in swept:
        linear = swept[REFERENCE]
        for field, records in swept.items():
            if field == REFERENCE:
                continue
            fewer = {}
            for metric in TASKS[task]["metrics"]:
                for gamma in SWEEP_GAMMAS:
                    at_common, at_ten = sweep_key(COMMON_STEPS, gamma), sweep_key(10, gamma)
                    goal = seed_values(linear, at_ten, metric)
                    mine = seed_interval(differences(seed_values(records, at_common, metric), goal))
                    control = seed_interval(differences(seed_values(linear, at_common, metric), goal))
                    fewer[f"{metric}|{gamma:g}"] = {"field_minus_linear10": mine, "linear_minus_linear10": control,
                                                     "verdict": fewer_steps_verdict(mine, control)}
            verdicts[field] = {"beats_linear": beats[field], "fewer_steps": fewer}
    for m, records in swept.items():
        keys = sorted({k for r in records for k in r.get("diagnostics", {})})
        diagnostics[m] = {k: float(np.mean([r["diagnostics"][k] for r in records if k in r["diagnostics"]]))
                          for k in keys}
    return {"curves": curves, "matched": matched, "verdicts": verdicts, "diagnostics": diagnostics}


def format_interval(value: dict) -> str:
    text = f"{value['mean']:+.3g}"
    return text + (f" [{value['ci_low']:+.3g}, {value['ci_high']:+.3g}]" if math.isfinite(value["ci_low"]) else "")


def sweep_lines(task: str, summary: dict) -> list[str]:
    headline = TASKS[task]["metrics"][0]
    lines = ["", f"### Field ablation on {task}", "", f"{headline} against NFE (mean over seeds):", "",
             "| gamma | field | " + " | ".join(map(str, SWEEP_NFES)) + " |", "|---" * (len(SWEEP_NFES) + 2) + "|"]
    for gamma in SWEEP_GAMMAS:
        for field, by_nfe in summary["curves"][f"{headline}|{gamma:g}"].items():
            lines.append(f"| {gamma:g} | {field} | " + " | ".join(f"{by_nfe[n]:.3f}" for n in SWEEP_NFES) + " |")
    if summary["matched"]:
        fields = list(next(iter(summary["matched"].values())))
        lines += ["", "Fewest NFE reaching linear's 10-NFE value (- : not within 20), per metric and gamma:", "",
                  "| metric | gamma | " + " | ".join(fields) + " |", "|---" * (len(fields) + 2) + "|"]
        for key, by_field in summary["matched"].items():
            metric, gamma = key.split("|")
            lines.append(f"| {metric} | {gamma} | " + " | ".join(str(by_field[f] or "-") for f in fields) + " |")
    if summary["verdicts"]:
        lines += beats_lines(headline, {field: claims["beats_linear"] for field, claims in summary["verdicts"].items()})
        fields = list(summary["verdicts"])
        lines += ["", f"Claim 2, {COMMON_STEPS} NFE of a field reach linear's 10: field@{COMMON_STEPS} minus "
                  f"linear@10 with its verdict, beside the control linear@{COMMON_STEPS} minus linear@10; larger is "
                  "better (distances negated, a sharpness ratio r as -|log r|); [95% t interval over seeds]:", "",
                  f"| metric | gamma | linear@{COMMON_STEPS} - linear@10 | " + " | ".join(fields) + " |",
                  "|---" * (len(fields) + 3) + "|"]
        for key, claim in summary["verdicts"][fields[0]]["fewer_steps"].items():
            metric, gamma = key.split("|")
            cells = [summary["verdicts"][f]["fewer_steps"][key] for f in fields]
            lines.append(f"| {metric} | {gamma} | {format_interval(claim['linear_minus_linear10'])} | " +
                         " | ".join(f"{format_interval(c['field_minus_linear10'])}: {c['verdict']}" for c in cells) + " |")
    keys = sorted({k for d in summary["diagnostics"].values() for k in d})
    if keys:
        lines += ["", "The fields at the end of training (last log row; docs/cdtsde.md section 4):", "",
                  "| field | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {field} | " + " | ".join(f"{d[k]:.3f}" if k in d else "-" for k in keys) + " |"
                  for field, d in summary["diagnostics"].items() if d]
    return lines


def beats_lines(headline: str, claims: dict[str, dict]) -> list[str]:
    """One task's table of claim 1 (`beats_linear_summary`) with both intervals."""
    lines = ["", f"Claim 1, a field beats linear: {headline} minus linear at {COMMON_STEPS} NFE (gamma 1), mean "
             "over seed-matched pairs [95% t interval over seeds] and [cluster interval of the seed-averaged "
             "items]; a verdict needs both intervals on one side of 0:", "",
             "| field | seeds | over seeds | over items | verdict |", "|---|---|---|---|---|"]
    for field, claim in claims.items():
        items = claim["items"] or {}
        item_text = f"[{items['ci_low']:+.3f}, {items['ci_high']:+.3f}]" if math.isfinite(items.get("ci_low", math.nan)) else "-"
        lines.append(f"| {field} | {claim['seeds']['seeds']} | {format_interval(claim['seeds'])} | {item_text} | "
                     f"{claim['verdict']} |")
    return lines


def verdict_lines(summaries: dict) -> list[str]:
    """The CDTSDE paper's two claims across the tasks: claim 1 per field and task wherever linear and the
    field were scored at the common NFE (the seed-matched difference and its verdict); claim 2, over the
    tasks with a field ablation (an NFE sweep), as counts of verdicts over each task's metrics and both
    gammas (summary.md's per-task tables give the intervals)."""
    claimed = {task: s["beats_linear"] for task, s in summaries.items() if s.get("beats_linear")}
    ablated = {task: s["sweep"]["verdicts"] for task, s in summaries.items() if s.get("sweep", {}).get("verdicts")}
    if not claimed:
        return []
    fields = [f for f in FIELDS if any(f in claims for claims in claimed.values())]
    tasks = list(claimed)
    headlines = ", ".join(f"{task}: {TASKS[task]['metrics'][0]}" for task in tasks)
    lines = [f"**Claim 1, a field beats linear at {COMMON_STEPS} NFE** (headline metric minus linear's, mean over "
             f"seed-matched pairs, seeds in brackets; {headlines}):", "",
             "| field | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for field in fields:
        cells = []
        for task in tasks:
            claim = claimed[task].get(field)
            cells.append(f"{claim['seeds']['mean']:+.3f} ({claim['seeds']['seeds']}): {claim['verdict']}" if claim else "-")
        lines.append(f"| {field} | " + " | ".join(cells) + " |")
    if not ablated:
        return lines + [""]
    tasks = list(ablated)
    lines += ["", f"**Claim 2, {COMMON_STEPS} NFE of a field reach linear's 10** (verdicts over each task's metrics "
              "x gamma 1 and 0: supported / not supported / not resolved / vacuous, the last where linear itself "
              f"loses nothing by stopping at {COMMON_STEPS}):", "",
              "| field | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for field in fields:
        cells = []
        for task in tasks:
            claims = ablated[task].get(field, {}).get("fewer_steps", {}).values()
            counts = [sum(c["verdict"] == v for c in claims)
                      for v in ("supported", "not supported", "not resolved", "vacuous")]
            one_seed = sum(c["verdict"] == "one seed" for c in claims)
            cells.append("-" if not claims else f"one seed ({one_seed})" if one_seed == len(claims)
                         else " / ".join(map(str, counts)))
        lines.append(f"| {field} | " + " | ".join(cells) + " |")
    return lines + [""]


# The LMI paper's claim, its Table 1 (IXI PD -> T1) read best to worst: what the zero-shot tasks test
LMI_ORDER = ("lmi", "cyclegan", "sdedit", "inversion")


def ordering_summary(task: str, methods: dict[str, list[dict]]) -> dict | None:
    """The LMI paper's order on one task, step by step: each method of LMI_ORDER the task has, against the
    next one down, on the same test items at the common NFE (`matched_items_comparison`: the seeds both have,
    cluster-bootstrap interval of the headline's difference). A step 'holds' when its interval is above 0, is
    'reversed' when below, else 'not resolved'; the claim is 'supported' when every step holds, 'contradicted'
    when any is reversed. `observed`: the same methods in the order of their headline means."""
    present = [method for method in LMI_ORDER if method in methods]
    if len(present) < 2:
        return None
    metric = TASKS[task]["metrics"][0]
    steps = []
    for above, below in zip(present, present[1:]):
        pair = matched_items_comparison(task, methods[above], methods[below], metric)
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # a step holds when `above` is the better one
        low, high = sorted((sign * pair["ci_low"], sign * pair["ci_high"]))
        verdict = "holds" if low > 0 else "reversed" if high < 0 else "not resolved"
        steps.append({"above": above, "below": below, **pair, "verdict": verdict})
    verdicts = {step["verdict"] for step in steps}
    means = {method: float(np.mean([row[metric] for row in seed_averaged_rows(methods[method], methods[method][0]["common"])]))
             for method in present}
    return {"metric": metric, "steps": steps, "observed": sorted(present, key=lambda m: -quality(metric, means[m])),
            "verdict": "supported" if verdicts == {"holds"} else "contradicted" if "reversed" in verdicts
            else "not resolved"}


def ordering_lines(summaries: dict) -> list[str]:
    """The LMI paper's ordering claim on every task that has two or more of its methods."""
    tested = {task: s["ordering"] for task, s in summaries.items() if s.get("ordering")}
    if not tested:
        return []
    lines = [f"**Claim 3, the LMI paper's order {' > '.join(LMI_ORDER)}** (each step: the headline's difference "
             f"on the same test items at {COMMON_STEPS} NFE [95% cluster interval]; a step holds when its interval "
             "is above 0):", "", "| task | steps | verdict | our order |", "|---|---|---|---|"]
    for task, ordering in tested.items():
        steps = "; ".join(f"{s['above']} - {s['below']} {s['mean_difference']:+.2f} [{s['ci_low']:+.2f}, "
                          f"{s['ci_high']:+.2f}] {s['verdict']}" for s in ordering["steps"])
        lines.append(f"| {task} ({ordering['metric']}) | {steps} | {ordering['verdict']} | "
                     f"{' > '.join(ordering['observed'])} |")
    return lines + [""]


def sweep_figures(out: Path, task: str, summary: dict, methods: dict[str, list[dict]]) -> None:
    """quality-vs-NFE per gamma for the headline metric, and Lambda maps of each learned field (seed 0
    weights when on this machine) with the eta_t value in each title and a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cdtsde.data import build_dataset
    from cdtsde.training import load_pretrained
    from cdtsde.visualize import save_translation_grid

    headline = TASKS[task]["metrics"][0]
    figure, axes = plt.subplots(1, len(SWEEP_GAMMAS), figsize=(4.5 * len(SWEEP_GAMMAS), 3.5), sharey=True, squeeze=False)
    for axis, gamma in zip(axes[0], SWEEP_GAMMAS):
        for field, by_nfe in summary["curves"][f"{headline}|{gamma:g}"].items():
            axis.plot(SWEEP_NFES, [by_nfe[n] for n in SWEEP_NFES], marker="o", label=field)
        axis.set(xscale="log", xlabel="NFE", title=f"gamma {gamma:g}")
    axes[0][0].set_ylabel(headline)
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(out / f"quality_vs_nfe-{task}.png", dpi=120)
    plt.close(figure)
    records = {m: rs[0] for m, rs in methods.items() if m in FIELDS and rs[0].get("sweep")}
    runs = {m: Path(r["folder"]) / "run" for m, r in records.items() if (Path(r["folder"]) / "run" / "model").is_dir()}
    if not runs:
        return
    some = next(iter(records.values()))
    data = task_data(task, Path(some["data_root"]), some["scale"])
    if not Path(data["root"]).exists():
        return
    test_set = build_dataset(data, "test")
    items = [test_set[int(i * len(test_set) / 4)] for i in range(4)]
    sources, targets = (torch.stack([item[side] for item in items]) for side in ("source", "target"))
    for field, run in runs.items():
        model = load_pretrained(run)
        t1 = model.schedule.t1
        with torch.no_grad():
            maps = model.field_maps(sources, (t1 // 8, t1 // 4, t1 // 2, 3 * t1 // 4))
            images = model.translate(sources, steps=COMMON_STEPS, generator=torch.Generator().manual_seed(0)).images
        save_translation_grid(out / f"fields-{task}-{field}.png", sources, images, targets, maps,
                              target_kind=model.data.target_kind)


def paper_lines(task: str) -> list[str]:
    """The published tables of the task's protocol, quoted beside ours."""
    lines = []
    if task in PAPER_TABLE1:
        data, metrics, rows = PAPER_TABLE1[task]
        lines += ["", f"The CDTSDE paper's Table 1 on {data} (their data, 256 px, their training; quoted for reference, "
                  "not comparable in absolute terms with the rows above):", "",
                  "| method (paper) | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {PAPER_NAMES[name]} | " + " | ".join(f"{v:g}" for v in values) + " |"
                  for name, values in rows.items()]
    if TASKS[task]["zero_shot"]:
        lines += ["", "The LMI paper's Table 1 (IXI PD -> T1, their data and training; quoted, not comparable in "
                  "absolute terms):", "", "| method (LMI paper) | Dice | PSNR | SSIM |", "|---|---|---|---|"]
        lines += [f"| {LMI_NAMES[name]} | {d:g} | {p:g} | {s:g} |" for name, (d, p, s) in LMI_TABLE1.items()]
    return lines


@torch.no_grad()
def grid(path: Path, models: dict, test_set, is_mask: bool, count: int = 4) -> None:
    """Four test items (evenly spread) translated by every method at COMMON_STEPS (one pass where it has no
    `steps` option), titled with the network evaluations."""
    from cdtsde.visualize import save_image_columns

    items = [test_set[int(i * len(test_set) / count)] for i in range(count)]
    sources, targets = (torch.stack([item[side] for item in items]) for side in ("source", "target"))
    kind = "mask" if is_mask else "image"
    columns = [("source", sources, "image")]
    for name, model in models.items():
        chosen = {"steps": COMMON_STEPS} if hasattr(model.sampling, "steps") else {}
        images = model.translate(sources, generator=torch.Generator().manual_seed(0), **chosen).images
        label = f"{name} @ {model.network_evaluations(model.sampling_options(**chosen))}" if chosen else name
        columns.append((label, images, kind))
    save_image_columns(path, columns + [("target", targets, kind)])


def marked(label: str, row: dict) -> str:
    return f"{label} {PREDATES_DRAWS[0]}" if row["predates_draws"] else label


def footnote(rows) -> list[str]:
    return ["", f"{PREDATES_DRAWS[0]} {PREDATES_DRAWS[1]}."] if any(row["predates_draws"] for row in rows) else []


def write_summary(out: Path, readme: bool = False, mix_code_versions: bool = False) -> dict:
    """summary.md / summary.json / compute-<task>.png from every finished cell under `out`; seeds that ran
    different code are averaged into one row only with `mix_code_versions`."""
    from benchmarks.common import write_report

    _averaged_rows.cache_clear()  # the rows files as they are now
    cells = load_cells(out)
    if not cells:
        raise SystemExit(f"{out}: no finished cells (cells/<task>/<method>/seed<N>/cell.json) to summarise")
    check_code_versions(cells, mix_code_versions)
    summaries = {task: task_summary(task, methods) for task, methods in cells.items()}
    header = [f"# Benchmark suite ({out.name})", "",
             "Values: mean over training seeds [95% cluster-bootstrap interval of the seed-averaged items] ±seed std "
             "(s). Perception metrics are set-level (no item interval). Paired: method - cdtsde-linear at "
             f"{COMMON_STEPS} NFE on the same items (interval over clusters). peak MB: the cell process's peak "
             "resident memory (GPU: allocated), training and scoring, or scoring alone where training finished in "
             "an earlier process.", ""]
    lines, brief = [], []
    for task, summary in summaries.items():
        metrics = TASKS[task]["metrics"]
        some = next(iter(cells[task].values()))[0]
        lines += [f"## {task}", "", f"Test items: {some['test_items']} ({summary['units']} {TASKS[task]['unit']}); "
                  f"training pairs: {some['train_pairs']}; scale {some['scale']}; device {some['device']}." +
                  (f" Scored on {some['data_root']}'s test split by the trained models of "
                   f"{Path(some['source_cell']).parents[3]} (--score-only)." if "source_cell" in some else ""), "",
                  "| method | " + " | ".join(TITLES.get(m, m) for m in metrics) + " | s/image | peak MB | train min | images seen |",
                  "|---" * (len(metrics) + 5) + "|"]
        for label, row in summary["rows"].items():
            lines.append(f"| {marked(label, row)} | " + " | ".join(format_value(row[m]) for m in metrics) +
                         f" | {row['seconds_per_image']:.3f} | {row['peak_cuda_mb'] or row['peak_rss_mb']:.0f} | "
                         f"{row['train_minutes']:.1f} | {row['images_seen']} |")
        lines += footnote(summary["rows"].values()) + version_lines(cells[task])
        lines += ["", "To rerun a cell as it ran (every cell's command is in summary.json, its row's \"rerun\"): "
                  f"`{rerun_command(some)}`."]
        if summary["paired"]:
            lines += ["", f"Paired against {REFERENCE}:", "", "| method | metric | difference [95% CI] | clusters |",
                      "|---|---|---|---|"]
            for method, by_metric in summary["paired"].items():
                for metric, c in by_metric.items():
                    if math.isfinite(c["mean_difference"]):
                        interval = (f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if math.isfinite(c["ci_low"])
                                    else "(too few clusters)")
                        lines.append(f"| {method} | {metric} | {c['mean_difference']:+.3f} {interval} | "
                                     f"{c.get('n_clusters')} |")
        fractions = sorted({f for curve in summary["compute"].values() for f in curve})
        if len(fractions) > 1:  # converged cells keep no snapshots: their validation curves stand for it
            lines += ["", f"{metrics[0]} against training compute (at {COMMON_STEPS} NFE; compute-{task}.png):", "",
                      "| method | " + " | ".join(f"{100 * float(f):.0f}%" for f in fractions) + " |",
                      "|---" * (len(fractions) + 1) + "|"]
            lines += [f"| {method} | " + " | ".join(f"{curve.get(f, math.nan):.3f}" for f in fractions) + " |"
                      for method, curve in summary["compute"].items()]
            compute_figure(out / f"compute-{task}.png", task, summary["compute"], metrics[0])
        convergence = convergence_summary(cells[task])
        if convergence:
            summary["convergence"] = convergence
            lines += convergence_lines(task, convergence)
            validation_figure(out / f"validation-{task}.png", task, cells[task])
        if translations_figure(out / f"translations-{task}.png", task, cells[task]):
            lines += ["", f"Four test items by every method: translations-{task}.png."]
        ordering = ordering_summary(task, cells[task])
        if ordering:
            summary["ordering"] = ordering
        if any(r.get("sweep") for records in cells[task].values() for r in records):
            summary["sweep"] = sweep_summary(task, cells[task])
            lines += sweep_lines(task, summary["sweep"])
            sweep_figures(out, task, summary["sweep"], cells[task])
        # claim 1 from the swept cells where the task sweeps (its sweep table says the same), else from every cell
        if "sweep" in summary:
            beats = {field: claims["beats_linear"] for field, claims in summary["sweep"]["verdicts"].items()}
        else:
            beats = beats_linear_summary(task, cells[task])
            lines += beats_lines(metrics[0], beats) if beats else []
        if beats:
            summary["beats_linear"] = beats
        lines += paper_lines(task) + [""]
        brief += [f"**{task}** ({some['test_items']} test items, {metrics[0]} and {metrics[1]}):", "",
                  f"| method | {TITLES.get(metrics[0], metrics[0])} | {TITLES.get(metrics[1], metrics[1])} | s/image |",
                  "|---|---|---|---|"]
        brief += [f"| {marked(label, row)} | {format_value(row[metrics[0]])} | {format_value(row[metrics[1]])} | "
                  f"{row['seconds_per_image']:.3f} |" for label, row in summary["rows"].items()]
        brief += footnote(summary["rows"].values()) + [""]
    verdicts = verdict_lines(summaries) + ordering_lines(summaries)
    if verdicts:
        header += ["## The papers' claims (the rules: docs/cdtsde.md section 4 for the fields, `ordering_summary` "
                   "for the LMI paper's order)", "", *verdicts]
    write_report(out, header + lines, {"tasks": summaries})
    (out / "results.md").rename(out / "summary.md")
    (out / "results.json").rename(out / "summary.json")
    if readme:
        update_block(ROOT / "README.md", out, headline_lines(summaries, cells) + converged_lines(summaries, cells),
                     "every task's table with intervals, the verdicts and the discussion in docs/results.md")
        update_block(ROOT / "docs" / "results.md", out, brief + verdicts,
                     "intervals, perception metrics, paired comparisons and compute curves there")
    return summaries


def headline_lines(summaries: dict, cells: dict) -> list[str]:
    """One table across the tasks: each method's headline metric at the common NFE (one pass for a one-pass
    method), the mean over its training seeds; the best of each task in bold."""
    tasks = list(summaries)
    methods = sorted({method for task in tasks for method in cells[task]}, key=row_order)
    at_common = {task: {row["method"]: row for row in summaries[task]["rows"].values()
                        if row["key"] == cells[task][row["method"]][0]["common"]} for task in tasks}
    values = {task: {method: row[TASKS[task]["metrics"][0]]["mean"] for method, row in at_common[task].items()}
              for task in tasks}
    best = {}
    for task in tasks:
        metric, finite = TASKS[task]["metrics"][0], {m: v for m, v in values[task].items() if math.isfinite(v)}
        best[task] = max(finite, key=lambda m: quality(metric, finite[m]), default=None)
    lines = [f"Headline metric at {COMMON_STEPS} sampling steps (one pass for one-pass methods), mean over training "
             "seeds; the best of each task in bold:", "",
             "| method | " + " | ".join(f"{task} {TITLES.get(TASKS[task]['metrics'][0], TASKS[task]['metrics'][0])}"
                                       for task in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for method in methods:
        cells_text = []
        for task in tasks:
            text = format_value({"mean": values[task].get(method, math.nan)})
            text = f"**{text}**" if best[task] == method else text
            cells_text.append(marked(text, at_common[task][method]) if method in at_common[task] else text)
        lines.append(f"| {method} | " + " | ".join(cells_text) + " |")
    return lines + footnote(row for rows in at_common.values() for row in rows.values())


def converged_lines(summaries: dict, cells: dict) -> list[str]:
    """Per task of a converged output, each method at the common NFE: its headline with the interval over
    the test clusters and the seeds' spread, its paired difference to the reference, its seeds, and where its
    training stopped (images seen, mean over seeds) and why; beside it, where a paper reports the task's
    protocol, its number for the method (`published`: their data and training, labelled theirs), and where our
    headline is a foreground figure (brain PSNR), ours over the whole slice, the figure papers report."""
    lines = []
    for task, summary in summaries.items():
        if "convergence" not in summary:
            continue
        metric = TASKS[task]["metrics"][0]
        title = TITLES.get(metric, metric)
        whole = metric.removesuffix("_fg") if metric.endswith("_fg") else None
        lines += ["", f"**{task}** (at {COMMON_STEPS} NFE; {summary['units']} {TASKS[task]['unit']} in the test split):",
                  "", f"| method | seeds | {title} | minus {REFERENCE} | images at the stop | stopped | "
                  + (f"{whole.upper()}, whole slice | " if whole else "")
                  + "published (theirs: their data, size and training) |", "|---" * (8 if whole else 7) + "|"]
        for row in summary["rows"].values():
            method = row["method"]
            records = cells[task][method]
            if row["key"] != records[0]["common"]:
                continue
            pair = summary["paired"].get(method, {}).get(metric)
            difference = "-" if pair is None else (f"{pair['mean_difference']:+.2f} [{pair['ci_low']:+.2f}, "
                                                  f"{pair['ci_high']:+.2f}]")
            stops = sorted({r.get("stopped", "?") for r in records})
            lines.append(f"| {method} | {len(records)} | {format_value(row[metric])} | {difference} | "
                         f"{np.mean([r['images_seen'] for r in records]):.0f} | {', '.join(stops)} | "
                         + (f"{np.mean([item[whole] for item in seed_averaged_rows(records, row['key'])]):.2f} | "
                            if whole else "")
                         + f"{published(task, method) or '-'} |")
    return lines


def update_block(path: Path, out: Path, lines: list[str], details: str) -> None:
    """Replace the block of the suite output `out` in a Markdown file (between its `markers`) with `lines`."""
    text = path.read_text()
    begin, end = markers(out)
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no {begin} ... {end} block to regenerate")
    where = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    block = [begin, f"Generated by `python -m benchmarks.suite --summary-only --output {where} --readme` from "
             f"{where}/summary.md ({details}).", "", *lines, end]
    path.write_text(re.sub(f"{re.escape(begin)}.*?{re.escape(end)}", lambda _: "\n".join(block), text, flags=re.S))
