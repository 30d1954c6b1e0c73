"""One benchmark suite: every method on every real task, one table (issue 16).

    python -m benchmarks.suite --scale cpu [--methods ...] [--tasks ...] [--seeds 0 1 2]
        [--data-root DIR] [--output DIR] [--jobs N]
    python -m benchmarks.suite --summary-only [--output DIR] [--readme]

A cell is one (task, method, training seed). Each cell runs in its own process: it trains with the
method's preset at the scale (the budget, network and optimiser of `benchmarks.paper`, `.baselines` and
`.zero_shot`), keeping the EMA weights at 25% and 50% of the budget (`train.snapshot_steps`); then scores
the test split on the machine's accelerator: the final model at the method's reference NFE (within the
scale's cap) and at a common 5 NFE (one pass for one-pass methods) with distortion metrics (brain-restricted
for MRI), perception metrics (`cdtsde.metrics.perception`; images only), K-Means Dice for MRI, mask metrics
for EL; the snapshots at the common NFE. It writes `cells/<task>/<method>/seed<N>/cell.json` last, with
its seconds per image, peak memory, training time and images seen. A finished cell is skipped; an
unfinished one resumes its training; the summary (`summary.md`, `summary.json`, `compute-<task>.png`) is
rebuilt from whatever cells exist, so a suite can be spread over several runs or machines.

Statistics: every interval is a 95% cluster bootstrap over the units that are independent (subjects for
MRI, fragments or tiles for SAR, modules for EL; `TASKS[...]["cluster"]`) of the item scores averaged over
the training seeds; the spread over seeds is the standard deviation of the seeds' means. Every method is
paired against CDTSDE-linear (DoSSR) on the same items. `--data-root` points every task at another folder
with the layout of ../shared/data (held-out data as a drop-in).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, test_items
from benchmarks.paper import DATA, SCALES, add_defect_present, defect_presence

PAIRED = ("cdtsde-linear", "cdtsde-envelope", "cdtsde-channel", "cdtsde-dynamic", "cdtsde-content", "pix2pix",
          "bbdm", "dbim", "abridge", "identity")
ZERO_SHOT = ("sdedit", "lmi", "cyclegan", "inversion")
REFERENCE = "cdtsde-linear"
# the field objectives of the ablation (issue 15): (field variant, model settings over the paper's). beta = 0.01,
# fixed before any result: the order of the x0 error at the end of the CPU budget, so neither term dominates
OBJECTIVES = {"cdtsde-dynamic-budget": ("dynamic", {"field": {"variant": "dynamic", "budget": True}}),
              "cdtsde-content-budget": ("content", {"field": {"variant": "content", "budget": True}}),
              "cdtsde-dynamic-elbo": ("dynamic", {"mixer_objective": "elbo", "restoring_weight": 0.01}),
              "cdtsde-content-elbo": ("content", {"mixer_objective": "elbo", "restoring_weight": 0.01})}
FIELDS = ("cdtsde-linear", "cdtsde-envelope", "cdtsde-channel", "cdtsde-dynamic", "cdtsde-content", *OBJECTIVES)
SWEEP_NFES = (1, 2, 3, 5, 10, 20)
SWEEP_GAMMAS = (1.0, 0.0)  # the paper's stochastic solver and the deterministic update
DIAGNOSTICS = ("g_mean", "g_spatial_std", "g_at_lower", "g_at_upper", "lambda_rank_corr_intensity",
               "lambda_rank_corr_gradient", "lambda_minus_eta")
COMMON_STEPS = 5
SNAPSHOT_FRACTIONS = (0.25, 0.5)
BRATS = {"kind": "brats", "root": "brats-mri", "min_foreground": 0.1, "val_subjects": 0, "test_subjects": 4, "seed": 0}
IMAGE_PERCEPTION = ["perception/patch_swd", "perception/spectral_distance", "perception/sharpness_ratio"]
COLOUR_PERCEPTION = IMAGE_PERCEPTION + ["perception/mean_offset", "perception/histogram_w1"]
MRI_METRICS = ["psnr_fg", "ssim_fg", "kmeans3/dice/mean"]
MASK_METRICS = ["dice/defect", "dice/defect-present", "hd95/defect-present", "skeleton_f1/defect"]
# column titles: what each metric is, and which way is better
TITLES = {"psnr_fg": "brain PSNR", "ssim_fg": "brain SSIM", "kmeans3/dice/mean": "K-Means-3 Dice",
          "perception/patch_swd": "patch SWD (lower)", "perception/spectral_distance": "spectral dist. (lower)",
          "perception/sharpness_ratio": "sharpness ratio (1)", "perception/mean_offset": "colour offset (lower)",
          "perception/histogram_w1": "histogram W1 (lower)", "dice/defect": "defect Dice",
          "dice/defect-present": "defect Dice, defect items", "hd95/defect-present": "HD95, defect items (lower)",
          "skeleton_f1/defect": "skeleton F1"}
LOWER_IS_BETTER = {"hd95/defect-present"}  # of the paired metrics (perception metrics are set-level, not paired)


def subject(name: str) -> str:
    return name.rsplit("_slice", 1)[0]


def prefix(name: str) -> str:
    return name.split("_")[0]


def module(name: str) -> str:  # pv-el-cracks: <module>_<cell>, e.g. EL103_14, FSEC_2AXI10_16
    return name.rsplit("_", 1)[0]


# Every setting below was fixed before any suite result was seen. Held-out units: 4 of the 12 BraTS subjects
# (val 0: nothing selects on it), the Texas region of volkov-s1s2 (62 crops of 31 fragments), Finland's 25
# BigEarthNet patches (10 tiles), pv-el-cracks' own val/ folder (its cells share modules with train/: noted)
TASKS = {
    "brats-t1t2": {"spec": {**BRATS, "source": "t1", "target": "t2"}, "cluster": subject, "unit": "subjects",
                   "methods": PAIRED,
                   "metrics": MRI_METRICS + IMAGE_PERCEPTION},
    "brats-t2t1": {"spec": {**BRATS, "source": "t2", "target": "t1"}, "cluster": subject, "unit": "subjects",
                   "methods": PAIRED + ZERO_SHOT, "metrics": MRI_METRICS + IMAGE_PERCEPTION},
    "brats-flairt1": {"spec": {**BRATS, "source": "flair", "target": "t1"}, "cluster": subject, "unit": "subjects",
                      "methods": (REFERENCE, *ZERO_SHOT), "metrics": MRI_METRICS + IMAGE_PERCEPTION},
    "sar-optical": {"spec": {"kind": "paired-folder", "root": "sar-optical/volkov-s1s2", "source_dir": "sar",
                             "target_dir": "opt", "groups": {"table": "pairs.csv", "column": "s2_tile"},
                             "val_groups": 0, "test_groups": ["T14RNT"], "seed": 0},
                    "cluster": prefix, "unit": "fragments", "methods": PAIRED,
                    "metrics": ["psnr", "ssim"] + COLOUR_PERCEPTION},
    "sar-bigearthnet": {"spec": {"kind": "sar-patches", "root": "sar-optical/bigearthnet-mm", "target_bands": [0, 1, 2],
                                 "groups": {"table": "pairs.csv", "column": "country"}, "val_scenes": 0,
                                 "test_scenes": ["Finland"], "seed": 0},
                        "cluster": prefix, "unit": "tiles", "methods": PAIRED,
                        "metrics": ["psnr", "ssim"] + COLOUR_PERCEPTION},
    "el-mask": {"spec": {"kind": "el-masks", "root": "pv-el-cracks"}, "cluster": module, "unit": "modules",
                "methods": PAIRED,
                "metrics": MASK_METRICS},
}
SUITE_SCALES = ("quick", "cpu", "gpu")
ZERO_SHOT_ONLY = ("brats-flairt1",)  # tasks whose paired side is the reference alone
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


def task_data(task: str, data_root: Path, scale: str | None = None) -> dict:
    """The task's data spec under `data_root`; with `scale`, at the scale's image size (the test split)."""
    from benchmarks.paper import run_config

    spec = dict(TASKS[task]["spec"])
    spec["root"] = str(Path(data_root) / spec["root"])
    return spec if scale is None else run_config(task, scale, "linear", data=spec)["data"]


def cell_config(task: str, method: str, seed: int, scale: str, data_root: Path, max_steps: int | None) -> dict:
    from benchmarks import baselines, zero_shot

    data = task_data(task, data_root)
    if method in ZERO_SHOT:
        config = zero_shot.method_config(task, method, scale, seed, data)
    elif method in OBJECTIVES:
        variant, model = OBJECTIVES[method]
        config = baselines.method_config(task, scale, f"cdtsde-{variant}", seed, data)
        config["model"].update(model)
    else:
        config = baselines.method_config(task, scale, method, seed, data)
    if max_steps:
        config["train"]["max_steps"] = max_steps
    if scale == "gpu":  # evaluation and training on the GPU; the identity has nothing to train
        config["train"]["accelerator"] = "gpu"
    steps = config["train"]["max_steps"]
    config["train"]["snapshot_steps"] = sorted({max(1, round(f * steps)) for f in SNAPSHOT_FRACTIONS} - {steps})
    config["train"]["checkpoint_every"] = min(config["train"].get("checkpoint_every", 100), steps)
    return config


def cell_dir(out: Path, task: str, method: str, seed: int) -> Path:
    return out / "cells" / task / method / f"seed{seed}"


def run_cell(task: str, method: str, seed: int, scale: str, data_root: Path, out: Path,
             limit: int | None, max_steps: int | None, sweep: bool = False) -> dict:
    """Train (or resume) and score one cell; its cell.json is written last. With `sweep` a CDTSDE field is
    also scored at every NFE of SWEEP_NFES with gamma 1 and 0."""
    from benchmarks.baselines import evaluation_steps
    from cdtsde.atomic import atomic_path
    from cdtsde.data import build_dataset
    from cdtsde.data.masks import PV_EL_CLASSES, PV_EL_DEFECT
    from cdtsde.evaluation import evaluate_model
    from cdtsde.intensity import model_to_unit
    from cdtsde.metrics.segmentation import IntensityKMeans
    from cdtsde.run import build_run
    from cdtsde.training import load_pretrained, train

    began = time.perf_counter()
    config = cell_config(task, method, seed, scale, data_root, max_steps)
    folder = cell_dir(out, task, method, seed)
    run_dir = folder / "run"
    model, train_set, _, train_config = build_run(config)
    train(model, train_set, train_config, run_dir, resume=(run_dir / "state.pt").is_file(), run_config=config,
          progress=False)
    device = "cuda" if scale == "gpu" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    data = task_data(task, data_root, scale)
    test_set = test_items(build_dataset(data, "test"), limit if limit is not None else SCALES[scale]["test_items"])
    final = load_pretrained(run_dir, device=device)
    is_mask = final.data.target_kind == "mask"
    options = {"classes": PV_EL_CLASSES, "foreground": PV_EL_DEFECT} if is_mask else {"perception": True}
    if data["kind"] == "brats":
        targets = build_dataset(data, "train")
        fit_on = [model_to_unit(targets[i]["target"]).permute(1, 2, 0).numpy()
                  for i in range(0, len(targets), max(1, len(targets) // 256))]
        options.update(nonzero_foreground=True, kmeans=[IntensityKMeans(3).fit(fit_on)])
    has_defect = defect_presence(test_set) if is_mask else {}
    common = None if not hasattr(final.sampling, "steps") else COMMON_STEPS
    plan = [(1.0, steps, None) for steps in evaluation_steps(final, scale)]
    if model.optimizers(train_config):  # a method with nothing to learn (the identity) has no snapshots
        plan += [(step / config["train"]["max_steps"], common, None) for step in config["train"]["snapshot_steps"]]
    swept = sweep and method in FIELDS
    if swept:
        plan += [(1.0, n, gamma) for gamma in SWEEP_GAMMAS for n in SWEEP_NFES]
    previous = json.loads((folder / "cell.json").read_text()) if (folder / "cell.json").is_file() else {}
    evaluations = dict(previous.get("evaluations", {}))  # a finished cell asked for more scores only adds them
    for fraction, steps, gamma in plan:
        chosen = {} if steps is None else {"steps": steps}
        if gamma is not None and gamma != final.sampling.gamma:
            chosen["gamma"] = gamma
        key = f"{round(100 * fraction)}%@{steps or 1}" + (f"/gamma{gamma:g}" if "gamma" in chosen else "")
        if key in evaluations:
            continue
        model = final if fraction == 1.0 else load_pretrained(
            run_dir / "snapshots" / f"step-{round(fraction * config['train']['max_steps']):07d}", device=device)
        rows, summary = evaluate_model(model, test_set, seed=0, **options, **chosen)
        summary = {**summary, **add_defect_present(rows, has_defect)} if is_mask else summary
        rows_file = f"rows-{key.replace('%@', 'pct-').replace('/', '-')}.json"
        (folder / rows_file).write_text(json.dumps(rows))
        evaluations[key] = {"fraction": fraction, "steps": steps, "gamma": chosen.get("gamma"),
                            "nfe": model.network_evaluations(model.sampling_options(**chosen)), "rows": rows_file,
                            "summary": {k: v for k, v in summary.items() if k != "name"}}
    reference = f"100%@{plan[0][1] or 1}"
    with open(run_dir / "metrics.csv", newline="") as handle:
        log = list(csv.DictReader(handle))
    seconds = float(log[-1]["seconds"]) if log else 0.0
    # the field's state at the end of training, as the log's last row has it (docs/cdtsde.md, section 4)
    diagnostics = {key: float(log[-1][key]) for key in DIAGNOSTICS if log and log[-1].get(key) not in (None, "")}
    batch = config["train"].get("batch_size", 1)
    record = {"task": task, "method": method, "seed": seed, "scale": scale, "config": config,
              "data_root": str(data_root), "limit": limit, "sweep": swept or previous.get("sweep", False),
              "machine": machine(), "device": device, "test_items": len(test_set),
              "test_image_size": list(test_set[0]["target"].shape[-2:]),
              "train_pairs": len(train_set), "train_seconds": seconds,
              "images_seen": config["train"]["max_steps"] * batch,  # per process: the suite runs one per cell
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
              # this cell's processes: training and scoring, and any later scoring added to it
              "cell_seconds": previous.get("cell_seconds", 0.0) + time.perf_counter() - began,
              "reference": reference, "common": f"100%@{common or 1}", "evaluations": evaluations,
              "diagnostics": diagnostics}
    with atomic_path(folder / "cell.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return record


def finished(out: Path, task: str, method: str, seed: int, args) -> bool:
    """Whether the cell is done. A cell made under another data root (another machine's copy of the data)
    counts when its configuration is otherwise the one this run would use; a different one is an error."""
    path = cell_dir(out, task, method, seed) / "cell.json"
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    expected = cell_config(task, method, seed, args.scale, Path(record["data_root"]), args.max_steps)
    if record["config"] != json.loads(json.dumps(expected)) or record.get("limit") != args.test_items:
        raise SystemExit(f"{path} was made with another configuration; use another --output or delete the cell")
    return record.get("sweep", False) or not (args.sweep and method in FIELDS)


def cells_of(args) -> list[tuple[str, str, int]]:
    return [(task, method, seed) for task in args.tasks for method in (*TASKS[task]["methods"], *OBJECTIVES)
            if method in args.methods and (method not in OBJECTIVES or task not in ZERO_SHOT_ONLY)
            for seed in args.seeds]


def run_suite(args) -> None:
    from tqdm import tqdm

    pending = [cell for cell in cells_of(args) if not finished(args.output, *cell, args)]
    print(f"{len(cells_of(args)) - len(pending)} cells done, {len(pending)} to run", flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def launch(cell):
        task, method, seed = cell
        folder = cell_dir(args.output, task, method, seed)
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "benchmarks.suite", "--cell", task, method, str(seed), "--scale", args.scale,
                   "--data-root", str(args.data_root), "--output", str(args.output)]
        command += ["--test-items", str(args.test_items)] if args.test_items is not None else []
        command += ["--max-steps", str(args.max_steps)] if args.max_steps else []
        command += ["--sweep"] if args.sweep else []
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
        began = time.perf_counter()
        with open(folder / "log.txt", "a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        return cell, code, time.perf_counter() - began

    failed = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool, tqdm(total=len(pending), desc="suite",
                                                                          unit="cell") as bar:
        for cell, code, seconds in pool.map(launch, pending):
            bar.update(1)
            bar.write(f"{'/'.join(map(str, cell))}: {'done' if code == 0 else f'FAILED (exit {code})'} "
                      f"in {seconds / 60:.1f} min")
            if code:
                failed.append(cell)
    write_summary(args.output, args.readme)
    if failed:
        raise SystemExit(f"{len(failed)} cell(s) failed; see their log.txt: " +
                         ", ".join("/".join(map(str, c)) for c in failed))


def load_cells(out: Path) -> dict[str, dict[str, list[dict]]]:
    """{task: {method: [cell records, by seed]}} of the finished cells under `out`."""
    cells: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(out.glob("cells/*/*/seed*/cell.json")):
        record = json.loads(path.read_text())
        record["folder"] = str(path.parent)
        cells.setdefault(record["task"], {}).setdefault(record["method"], []).append(record)
    order = [*PAIRED, *OBJECTIVES, *ZERO_SHOT]
    return {task: dict(sorted(methods.items(), key=lambda kv: order.index(kv[0]))) for task, methods in cells.items()}


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
                           "images_seen": first["images_seen"], "seeds": [r["seed"] for r in records]}
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


def translations_figure(path: Path, task: str, methods: dict[str, list[dict]]) -> bool:
    """Four test items translated by every method of the task (its first seed, at the common NFE), when
    the cells' weights and the data are on this machine; False (nothing drawn) otherwise."""
    from benchmarks.baselines import grid
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
    grid(path, models, test_set, next(iter(models.values())).data.target_kind == "mask", steps=COMMON_STEPS)
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
    """method - linear on the test items at the common NFE, each side averaged over the seeds both have (so
    the item interval is centred where the seed-matched differences are); cluster-bootstrap interval."""
    from cdtsde.metrics import paired_comparison

    seeds = {r["seed"] for r in records} & {r["seed"] for r in linear}
    mine, theirs = ([r for r in side if r["seed"] in seeds] for side in (records, linear))
    mine, theirs = seed_averaged_rows(mine, mine[0]["common"]), seed_averaged_rows(theirs, theirs[0]["common"])
    shared = {row["name"] for row in mine} & {row["name"] for row in theirs}
    return paired_comparison([r for r in mine if r["name"] in shared], [r for r in theirs if r["name"] in shared],
                             metric, higher_is_better=metric not in LOWER_IS_BETTER, cluster_of=TASKS[task]["cluster"])


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
    headline = TASKS[task]["metrics"][0]
    if REFERENCE in swept:
        linear = swept[REFERENCE]
        for field, records in swept.items():
            if field == REFERENCE:
                continue
            common = sweep_key(COMMON_STEPS, 1.0)
            beats = seed_interval(differences(seed_values(records, common, headline),
                                              seed_values(linear, common, headline)))
            items = matched_items_comparison(task, records, linear, headline)
            fewer = {}
            for metric in TASKS[task]["metrics"]:
                for gamma in SWEEP_GAMMAS:
                    at_common, at_ten = sweep_key(COMMON_STEPS, gamma), sweep_key(10, gamma)
                    goal = seed_values(linear, at_ten, metric)
                    mine = seed_interval(differences(seed_values(records, at_common, metric), goal))
                    control = seed_interval(differences(seed_values(linear, at_common, metric), goal))
                    fewer[f"{metric}|{gamma:g}"] = {"field_minus_linear10": mine, "linear_minus_linear10": control,
                                                     "verdict": fewer_steps_verdict(mine, control)}
            verdicts[field] = {"beats_linear": {"metric": headline, "seeds": beats, "items": items,
                                                "verdict": beats_verdict(beats, items)},
                               "fewer_steps": fewer}
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
        lines += ["", f"Claim 1, a field beats linear: {headline} minus linear at {COMMON_STEPS} NFE (gamma 1), mean "
                  "over seed-matched pairs [95% t interval over seeds] and [cluster interval of the seed-averaged "
                  "items]; a verdict needs both intervals on one side of 0:", "",
                  "| field | seeds | over seeds | over items | verdict |", "|---|---|---|---|---|"]
        for field, verdict in summary["verdicts"].items():
            beats, items = verdict["beats_linear"], verdict["beats_linear"]["items"] or {}
            item_text = (f"[{items['ci_low']:+.3f}, {items['ci_high']:+.3f}]"
                         if math.isfinite(items.get("ci_low", math.nan)) else "-")
            lines.append(f"| {field} | {beats['seeds']['seeds']} | {format_interval(beats['seeds'])} | {item_text} | "
                         f"{beats['verdict']} |")
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


def verdict_lines(summaries: dict) -> list[str]:
    """The two claims across the tasks with a field ablation: claim 1 per field and task (the seed-matched
    difference from linear at the common NFE and its verdict); claim 2 as counts of verdicts over each
    task's metrics and both gammas (summary.md's per-task tables give the intervals)."""
    ablated = {task: s["sweep"]["verdicts"] for task, s in summaries.items() if s.get("sweep", {}).get("verdicts")}
    if not ablated:
        return []
    fields = [f for f in FIELDS if any(f in verdicts for verdicts in ablated.values())]
    tasks = list(ablated)
    headlines = ", ".join(f"{task}: {TASKS[task]['metrics'][0]}" for task in tasks)
    lines = [f"**Claim 1, a field beats linear at {COMMON_STEPS} NFE** (headline metric minus linear's, mean over "
             f"seed-matched pairs, seeds in brackets; {headlines}):", "",
             "| field | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for field in fields:
        cells = []
        for task in tasks:
            claim = ablated[task].get(field, {}).get("beats_linear")
            cells.append(f"{claim['seeds']['mean']:+.3f} ({claim['seeds']['seeds']}): {claim['verdict']}" if claim else "-")
        lines.append(f"| {field} | " + " | ".join(cells) + " |")
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
    from benchmarks.baselines import PAPER_TABLE1, paper_table
    from benchmarks.zero_shot import SEED_TABLE1

    lines = ["", *paper_table(task)] if task in PAPER_TABLE1 else []
    if task == "brats-t2t1" or task == "brats-flairt1":
        lines += ["", "The LMI paper's Table 1 (IXI PD -> T1, their data and training; quoted, not comparable in "
                  "absolute terms):", "", "| method (LMI paper) | Dice | PSNR | SSIM |", "|---|---|---|---|"]
        lines += [f"| {name} | {d:g} | {p:g} | {s:g} |" for name, (d, p, s) in SEED_TABLE1.items()]
    return lines


def write_summary(out: Path, readme: bool = False) -> dict:
    """summary.md / summary.json / compute-<task>.png from every finished cell under `out`."""
    from benchmarks.common import write_report

    _averaged_rows.cache_clear()  # the rows files as they are now
    cells = load_cells(out)
    if not cells:
        raise SystemExit(f"{out}: no finished cells (cells/<task>/<method>/seed<N>/cell.json) to summarise")
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
                  f"training pairs: {some['train_pairs']}; scale {some['scale']}; device {some['device']}.", "",
                  "| method | " + " | ".join(TITLES.get(m, m) for m in metrics) + " | s/image | peak MB | train min | images seen |",
                  "|---" * (len(metrics) + 5) + "|"]
        for label, row in summary["rows"].items():
            lines.append(f"| {label} | " + " | ".join(format_value(row[m]) for m in metrics) +
                         f" | {row['seconds_per_image']:.3f} | {row['peak_cuda_mb'] or row['peak_rss_mb']:.0f} | "
                         f"{row['train_minutes']:.1f} | {row['images_seen']} |")
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
        lines += ["", f"{metrics[0]} against training compute (at {COMMON_STEPS} NFE; compute-{task}.png):", "",
                  "| method | " + " | ".join(f"{100 * float(f):.0f}%" for f in fractions) + " |",
                  "|---" * (len(fractions) + 1) + "|"]
        lines += [f"| {method} | " + " | ".join(f"{curve.get(f, math.nan):.3f}" for f in fractions) + " |"
                  for method, curve in summary["compute"].items()]
        compute_figure(out / f"compute-{task}.png", task, summary["compute"], metrics[0])
        if translations_figure(out / f"translations-{task}.png", task, cells[task]):
            lines += ["", f"Four test items by every method: translations-{task}.png."]
        if any(r.get("sweep") for records in cells[task].values() for r in records):
            summary["sweep"] = sweep_summary(task, cells[task])
            lines += sweep_lines(task, summary["sweep"])
            sweep_figures(out, task, summary["sweep"], cells[task])
        lines += paper_lines(task) + [""]
        brief += [f"**{task}** ({some['test_items']} test items, {metrics[0]} and {metrics[1]}):", "",
                  f"| method | {TITLES.get(metrics[0], metrics[0])} | {TITLES.get(metrics[1], metrics[1])} | s/image |",
                  "|---|---|---|---|"]
        brief += [f"| {label} | {format_value(row[metrics[0]])} | {format_value(row[metrics[1]])} | "
                  f"{row['seconds_per_image']:.3f} |" for label, row in summary["rows"].items()] + [""]
    verdicts = verdict_lines(summaries)
    if verdicts:
        header += ["## The field ablation's verdicts (docs/cdtsde.md section 4 gives the rules)", "", *verdicts]
    write_report(out, header + lines, {"tasks": summaries})
    (out / "results.md").rename(out / "summary.md")
    (out / "results.json").rename(out / "summary.json")
    if readme:
        update_readme(Path(__file__).resolve().parents[1] / "README.md", out, brief + verdicts)
    return summaries


def update_readme(path: Path, out: Path, brief: list[str]) -> None:
    """Replace the README's suite block (between BEGIN and END) with the summary's headline tables."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to regenerate")
    where = out.resolve().relative_to(path.parent) if out.resolve().is_relative_to(path.parent) else out
    block = [BEGIN, f"Generated by `python -m benchmarks.suite --summary-only --output {where} --readme` from "
             f"{where}/summary.md (intervals, perception metrics, paired comparisons and compute curves there).", "",
             *brief, END]
    path.write_text(re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", lambda _: "\n".join(block), text, flags=re.S))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SUITE_SCALES, default="cpu")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=PAIRED + ZERO_SHOT + tuple(OBJECTIVES),
                        default=list(PAIRED + ZERO_SHOT), help="the field objectives (issue 15's ablation) on request")
    parser.add_argument("--sweep", action="store_true",
                        help=f"also score CDTSDE cells at NFE {SWEEP_NFES} with gamma 1 and 0 (the field ablation)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data-root", type=Path, default=DATA, help="a folder with the layout of ../shared/data")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/suite/<scale>")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (threads split between them)")
    parser.add_argument("--test-items", type=int, help="override the scale's number of test items")
    parser.add_argument("--max-steps", type=int, help="override every training budget (smoke runs)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the summary from the finished cells")
    parser.add_argument("--readme", action="store_true", help="also regenerate the README's results block")
    parser.add_argument("--cell", nargs=3, metavar=("TASK", "METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.output = (args.output or RESULTS / "suite" / args.scale).resolve()
    args.data_root = args.data_root.resolve()
    if args.cell:
        task, method, seed = args.cell
        run_cell(task, method, int(seed), args.scale, args.data_root, args.output, args.test_items, args.max_steps,
                 args.sweep)
        return
    if args.summary_only:
        write_summary(args.output, args.readme)
        return
    if not args.data_root.is_dir():
        raise SystemExit(f"--data-root {args.data_root}: no such folder (expected the layout of ../shared/data)")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    args.output.mkdir(parents=True, exist_ok=True)
    run_suite(args)


if __name__ == "__main__":
    main()
