"""The suite's runner: the cells to run, one process per cell (train or resume, then score), the command line.

    python -m benchmarks.suite --scale cpu [--methods ...] [--tasks ...] [--seeds 0 1 2]
        [--data-root DIR [--data-copy]] [--output DIR] [--jobs N] [--sweep]
    python -m benchmarks.suite --score-only --from DIR --data-root DIR --output NEW_DIR [--tasks ...] [...]
    python -m benchmarks.suite --summary-only [--output DIR] [--readme] [--mix-code-versions]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import (
    RESULTS,
    code_version,
    held_out_validation,
    machine,
    test_items,
    train_or_resume,
    validation_curve,
)
from benchmarks.suite.presets import (
    COMMON_STEPS,
    DATA,
    FIELDS,
    OBJECTIVES,
    SCALES,
    SWEEP_GAMMAS,
    SWEEP_NFES,
    TASKS,
    cell_config,
    held_out_data,
    recipe_of,
    runs_on,
    suite_methods,
    task_data,
)
from benchmarks.suite.report import write_summary

# the field's state at the end of training, as the log's last row has it (docs/cdtsde.md, section 4)
DIAGNOSTICS = ("g_mean", "g_spatial_std", "g_at_lower", "g_at_upper", "lambda_rank_corr_intensity",
               "lambda_rank_corr_gradient", "lambda_minus_eta")
DEFECT_PRESENT = ("dice/defect", "hd95/defect")


def defect_presence(test_set, headline) -> dict[str, bool]:
    """Whether each test item's target has a defect, by the task's headline (`cdtsde.run.headline_score`),
    so what training monitors and what the tables lead with count the same items. Defects are rare and an
    empty prediction of an empty target scores Dice 1 (cdtsde.metrics.masks), so masks are also scored over
    the items that have one."""
    from cdtsde.data.masks import decode_classes

    return {item["name"]: headline.has_defect(decode_classes(item["target"])) for item in test_set}


def add_defect_present(rows: list[dict], has_defect: dict[str, bool]) -> dict:
    """Add the "<metric>-present" scores (NaN on items without a defect) to `rows`; returns their summary."""
    from cdtsde.metrics import summarise

    for row in rows:
        for metric in DEFECT_PRESENT if has_defect else ():
            row[f"{metric}-present"] = row[metric] if has_defect[row["name"]] else math.nan
    return summarise([{k: v for k, v in row.items() if k != "name"} for row in rows])


def evaluation_steps(model, scale: str) -> list[int | None]:
    """The sampler steps a method is scored at: its reference steps, cut to the largest count within the
    scale's NFE cap, and COMMON_STEPS; [None] for a one-pass method (no `steps` sampling option)."""
    if not hasattr(model.sampling, "steps"):
        return [None]
    steps, cap = model.sampling.steps, SCALES[scale]["nfe_cap"]
    while cap is not None and steps > COMMON_STEPS and model.network_evaluations(model.sampling_options(steps=steps)) > cap:
        steps -= 1
    return sorted({steps, COMMON_STEPS}, reverse=True)


def cell_dir(out: Path, task: str, method: str, seed: int) -> Path:
    return out / "cells" / task / method / f"seed{seed}"


def scoring_setup(task: str, data_root: Path, scale: str, limit: int | None, final) -> tuple:
    """The test split of `task` under `data_root` (at most `limit` items, else the scale's number) and the
    scoring options of the task: brain-restricted metrics and K-Means Dice (fitted on the root's training
    targets) for MRI, perception metrics for images, mask metrics and defect presence for masks."""
    from cdtsde.data import build_dataset
    from cdtsde.intensity import model_to_unit
    from cdtsde.metrics.segmentation import IntensityKMeans
    from cdtsde.run import headline_score, mask_classes

    data = task_data(task, data_root, scale)
    test_set = test_items(build_dataset(data, "test"), limit if limit is not None else SCALES[scale]["test_items"])
    headline = headline_score(data, final.data)
    is_mask = final.data.target_kind == "mask"
    options = {"classes": mask_classes(data), "foreground": headline.defect} if is_mask else {"perception": True}
    if data["kind"] == "brats":
        targets = build_dataset(data, "train")
        fit_on = [model_to_unit(targets[i]["target"]).permute(1, 2, 0).numpy()
                  for i in range(0, len(targets), max(1, len(targets) // 256))]
        options.update(nonzero_foreground=True, kmeans=[IntensityKMeans(3).fit(fit_on)])
    return test_set, options, defect_presence(test_set, headline) if is_mask else {}


def evaluation_key(fraction: float, steps: int | None, chosen: dict) -> str:
    return f"{round(100 * fraction)}%@{steps or 1}" + (f"/gamma{chosen['gamma']:g}" if "gamma" in chosen else "")


def score(plan: list[tuple], final, run_dir: Path, max_steps: int, test_set, options: dict, has_defect: dict,
          folder: Path, evaluations: dict, device: str) -> dict:
    """Score the plan's (fraction of the budget, steps, gamma) evaluations not yet in `evaluations`: the
    final model, or the EMA snapshot at that fraction; each one's item rows go to their own file."""
    from cdtsde.evaluation import evaluate_model
    from cdtsde.training import load_pretrained

    evaluations = dict(evaluations)
    for fraction, steps, gamma in plan:
        chosen = {} if steps is None else {"steps": steps}
        if gamma is not None and gamma != final.sampling.gamma:
            chosen["gamma"] = gamma
        key = evaluation_key(fraction, steps, chosen)
        if key in evaluations:
            continue
        model = final if fraction == 1.0 else load_pretrained(
            run_dir / "snapshots" / f"step-{round(fraction * max_steps):07d}", device=device)
        rows, summary = evaluate_model(model, test_set, seed=0, **options, **chosen)
        summary = {**summary, **add_defect_present(rows, has_defect)} if has_defect else summary
        rows_file = f"rows-{key.replace('%@', 'pct-').replace('/', '-')}.json"
        (folder / rows_file).write_text(json.dumps(rows))
        evaluations[key] = {"fraction": fraction, "steps": steps, "gamma": chosen.get("gamma"),
                            "nfe": model.network_evaluations(model.sampling_options(**chosen)), "rows": rows_file,
                            "summary": {k: v for k, v in summary.items() if k != "name"}}
    return evaluations


def scoring_device(scale: str) -> str:
    device = "cuda" if scale == "gpu" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return device


def process_record(device: str, began: float, previous: dict) -> dict:
    """What a cell records of the process that made it: machine, code, peak memory and time."""
    return {"machine": machine(), "device": device,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            # this cell's processes: training and scoring, and any later scoring added to it
            "cell_seconds": previous.get("cell_seconds", 0.0) + time.perf_counter() - began,
            # the code that trained the cell and gave its first scores (scores added later keep it)
            "code": previous.get("code") if previous else code_version()}


def run_cell(task: str, method: str, seed: int, scale: str, data_root: Path, out: Path,
             limit: int | None, max_steps: int | None, sweep: bool = False) -> dict:
    """Train (or resume) and score one cell; its cell.json is written last. With `sweep` a CDTSDE field is
    also scored at every NFE of SWEEP_NFES with gamma 1 and 0."""
    from cdtsde.atomic import atomic_path
    from cdtsde.run import build_run
    from cdtsde.training import load_pretrained

    began = time.perf_counter()
    config = cell_config(task, method, seed, scale, data_root, max_steps)
    folder = cell_dir(out, task, method, seed)
    run_dir = folder / "run"
    model, train_set, preview_set, train_config = build_run(config)
    validation = None if train_config.validation is None else cell_validation(
        task, data_root, model, train_set, preview_set, config, train_config.validation.items)
    from_state = (run_dir / "state.pt").is_file()  # else trained from the start (a cell copied without run/)
    result = train_or_resume(model, train_set, train_config, run_dir, run_config=config, progress=False,
                             validation=validation)
    device = scoring_device(scale)
    final = load_pretrained(run_dir, device=device)
    test_set, options, has_defect = scoring_setup(task, data_root, scale, limit, final)
    common = None if not hasattr(final.sampling, "steps") else COMMON_STEPS
    plan = [(1.0, steps, None) for steps in evaluation_steps(final, scale)]
    if model.optimizers(train_config):  # a method with nothing to learn (the identity) has no snapshots
        plan += [(step / config["train"]["max_steps"], common, None) for step in config["train"]["snapshot_steps"]]
    previous = json.loads((folder / "cell.json").read_text()) if (folder / "cell.json").is_file() else {}
    swept = (sweep or previous.get("sweep", False)) and method in FIELDS  # a swept cell trained on is swept again
    if swept:
        plan += [(1.0, n, gamma) for gamma in SWEEP_GAMMAS for n in SWEEP_NFES]
    images_seen = result["step"] * train_config.batch_size  # per process: the suite runs one per cell
    # a finished cell asked for more scores only adds them; one whose training went on is scored afresh
    same_model = previous.get("images_seen") == images_seen
    evaluations = score(plan, final, run_dir, config["train"]["max_steps"], test_set, options, has_defect, folder,
                        previous.get("evaluations", {}) if same_model else {}, device)
    reference = f"100%@{plan[0][1] or 1}"
    with open(run_dir / "metrics.csv", newline="") as handle:
        log = list(csv.DictReader(handle))
    seconds = float(log[-1]["seconds"]) if log else 0.0
    diagnostics = {key: float(log[-1][key]) for key in DIAGNOSTICS if log and log[-1].get(key) not in (None, "")}
    record = {"task": task, "method": method, "seed": seed, "scale": scale, "config": config,
              "data_root": str(data_root), "limit": limit, "max_steps": max_steps,  # max_steps: an override
              "sweep": swept,
              "test_items": len(test_set), "test_image_size": list(test_set[0]["target"].shape[-2:]),
              "train_pairs": len(train_set), "train_seconds": seconds,
              "images_seen": images_seen,
              # training resumed after the cell was finished (a stop today's early-stopping rule reverses)
              "continued": previous.get("continued", []) + ([] if same_model or not previous else [
                  {"code": code_version(), "from_images": previous["images_seen"], "from_state": from_state}]),
              **(converged_record(result, train_config, run_dir, method) if validation is not None else {}),
              **process_record(device, began, previous),
              "reference": reference, "common": f"100%@{common or 1}", "evaluations": evaluations,
              "diagnostics": diagnostics}
    with atomic_path(folder / "cell.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return record


def cell_validation(task: str, data_root: Path, model, train_set, preview_set, config: dict, items: int):
    """A converged cell's validation data: its val split (`presets.held_out_data`) in the method's training
    form, with its pairs for the headline; an unpaired method's sides (disjoint halves of the training
    subjects, no val split) are validated on the paired val split read as two sides."""
    from cdtsde.run import build_training_data

    spec = config["data"]
    if spec["kind"] == "unpaired":
        spec = held_out_data(task, data_root)
        train_set, preview_set = build_training_data(spec, "unpaired")
    return held_out_validation(model, train_set, preview_set, spec, items)


# what a converged cell records of its training (`converged_record`); a rescored cell keeps it
CONVERGED_RECORD = ("stopped", "stop_reason", "monitor", "best_value", "best_step", "recipe", "validation_rows")


def converged_record(result: dict, train_config, run_dir: Path, method: str) -> dict:
    """What a converged cell records of its training: why it stopped (early, or at the cap), the best
    validation and its step, the validation curve, and the recipe it trained with."""
    stopped = result["stopped"]
    record = {"stopped": "early" if stopped.startswith(train_config.early_stopping.monitor) else
              "nothing to train" if stopped == "nothing to train" else "cap", "stop_reason": stopped,
              "monitor": train_config.early_stopping.monitor, "best_value": result.get("best_value"),
              "best_step": result.get("best_step"), "recipe": recipe_of(method),
              "validation_rows": validation_curve(run_dir / "metrics.csv", train_config.batch_size)
              if (run_dir / "metrics.csv").is_file() else []}
    return record


def rescore_cell(task: str, method: str, seed: int, source: Path, data_root: Path, out: Path,
                 limit: int | None) -> dict:
    """Score the trained models of the finished cell under `source` on the test split of `data_root`,
    never training: every evaluation the source cell has (final model and snapshots, its NFEs and gammas).
    The new cell keeps the source's training record and names the source cell and the data root."""
    from cdtsde.atomic import atomic_path
    from cdtsde.training import load_pretrained

    began = time.perf_counter()
    origin = cell_dir(source, task, method, seed)
    trained = json.loads((origin / "cell.json").read_text())
    folder = cell_dir(out, task, method, seed)
    folder.mkdir(parents=True, exist_ok=True)
    device = scoring_device(trained["scale"])
    final = load_pretrained(origin / "run", device=device)
    test_set, options, has_defect = scoring_setup(task, data_root, trained["scale"], limit, final)
    plan = [(ev["fraction"], ev["steps"], ev["gamma"]) for ev in trained["evaluations"].values()]
    evaluations = score(plan, final, origin / "run", trained["config"]["train"]["max_steps"], test_set, options,
                        has_defect, folder, {}, device)
    kept = ("task", "method", "seed", "scale", "config", "sweep", "train_pairs", "train_seconds", "images_seen",
            "reference", "common", "diagnostics", "predates_per_item_draws", "continued", *CONVERGED_RECORD)
    record = {**{key: trained[key] for key in kept if key in trained}, "source_cell": str(origin),
              "data_root": str(data_root), "limit": limit, "test_items": len(test_set),
              "test_image_size": list(test_set[0]["target"].shape[-2:]), **process_record(device, began, {}),
              "evaluations": evaluations}
    with atomic_path(folder / "cell.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return record


def finished(out: Path, task: str, method: str, seed: int, args) -> bool:
    """Whether the cell is done. A cell made under another data root is refused (its scores are for that
    root's test split) unless --data-copy says the root is a copy of it (another machine's path); a cell made
    with another configuration is an error. With --score-only: whether the cell scoring the --from cell on
    --data-root is done (one scoring another cell or data root is an error)."""
    path = cell_dir(out, task, method, seed) / "cell.json"
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    if args.score_only:
        source = cell_dir(args.source, task, method, seed)
        if (record.get("source_cell"), record["data_root"]) != (str(source), str(args.data_root)):
            raise SystemExit(f"{path} scored {record.get('source_cell', 'its own training')} on "
                             f"{record['data_root']}, not {source} on {args.data_root}; use another --output")
        return True
    if record["data_root"] != str(args.data_root) and not args.data_copy:
        raise SystemExit(f"{path} was made on the data root {record['data_root']}, not {args.data_root}: its scores "
                         f"are for that root's test split. To score its trained model on {args.data_root}: --score-only "
                         f"--from {out} --output NEW_FOLDER; if {args.data_root} is a copy of {record['data_root']} "
                         "(another machine's path): --data-copy")
    expected = cell_config(task, method, seed, args.scale, Path(record["data_root"]), args.max_steps)
    if record["config"] != json.loads(json.dumps(expected)) or record.get("limit") != args.test_items:
        raise SystemExit(f"{path} was made with another configuration; use another --output or delete the cell")
    if record.get("stopped") == "early" and not stops_today(record):
        saved = (path.parent / "run" / "state.pt").is_file()
        print(f"{task}/{method}/seed{seed}: stopped early after {record['images_seen']} images under an earlier "
              "early-stopping rule, which today's reverses: its training goes on "
              + ("from its saved state" if saved else "from the start (no saved state in run/)"), flush=True)
        return False
    return record.get("sweep", False) or not (args.sweep and method in FIELDS)


def stops_today(record: dict) -> bool:
    """Whether today's early stopping, replaying the validation rows of a cell that stopped early, stops it
    too (`cdtsde.training.validation.EarlyStopping`)."""
    from cdtsde.training.config import EarlyStoppingConfig
    from cdtsde.training.validation import EarlyStopping

    stopping = EarlyStopping(EarlyStoppingConfig(**record["config"]["train"]["early_stopping"]))
    stopping.replay(record["validation_rows"])
    return stopping.stop


def cells_of(args) -> list[tuple[str, str, int]]:
    return [(task, method, seed) for task in args.tasks for method in args.methods if runs_on(task, method)
            for seed in args.seeds]


def scorable(args, cells: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The cells whose trained models --score-only can score: a finished --from cell with its run folder;
    the others are named and skipped."""
    kept = []
    for cell in cells:
        origin = cell_dir(args.source, *cell)
        if not (origin / "cell.json").is_file():
            print(f"{'/'.join(map(str, cell))}: not finished in {args.source}; skipped", flush=True)
        elif not (origin / "run" / "model").is_dir():
            print(f"{'/'.join(map(str, cell))}: no trained model in {origin / 'run'} (only its cell.json); "
                  "skipped", flush=True)
        elif predates_ras_reading(cell[0], origin / "run" / "model"):
            print(f"{'/'.join(map(str, cell))}: its model was trained before NIfTI volumes were read in RAS "
                  f"orientation ({origin / 'run' / 'model'} records none); today's test slices of volumes not stored "
                  "RAS (BraTS: LPS) are flipped against its training; skipped (retrain the cell)", flush=True)
        else:
            kept.append(cell)
    return kept


def predates_ras_reading(task: str, model: Path) -> bool:
    """Whether a NIfTI task's trained model saw its volumes in their stored directions (its checkpoint
    records no `nifti_orientation`: written before RAS reading, `cdtsde.training.checkpoint`)."""
    from cdtsde.run import NIFTI_KINDS

    if TASKS[task]["spec"]["kind"] not in NIFTI_KINDS:
        return False
    data = json.loads((model / "config.json").read_text()).get("data") or {}
    return data.get("nifti_orientation", "axes") != "ras"


def cell_environment(jobs: int) -> dict[str, str]:
    """A cell process's environment: the caller's OMP_NUM_THREADS where set (the committed cpu cells ran
    with 1: --jobs 2 on 2 cores), else the cores shared between the cells running at once."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    return {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    return lines[-1].strip() if lines else "no output"


def run_suite(args) -> None:
    from tqdm import tqdm

    from benchmarks.suite.report import load_cells

    cells = scorable(args, cells_of(args)) if args.score_only else cells_of(args)
    pending = [cell for cell in cells if not finished(args.output, *cell, args)]
    print(f"{len(cells) - len(pending)} cells done, {len(pending)} to run", flush=True)
    env = cell_environment(args.jobs)

    def launch(cell):
        task, method, seed = cell
        folder = cell_dir(args.output, task, method, seed)
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "benchmarks.suite", "--cell", task, method, str(seed), "--scale", args.scale,
                   "--data-root", str(args.data_root), "--output", str(args.output)]
        command += ["--test-items", str(args.test_items)] if args.test_items is not None else []
        command += ["--max-steps", str(args.max_steps)] if args.max_steps else []
        command += ["--sweep"] if args.sweep else []
        command += ["--score-only", "--from", str(args.source)] if args.score_only else []
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
    if load_cells(args.output) or not failed:
        write_summary(args.output, args.readme, args.mix_code_versions)
    if failed:  # each failure's last log line (the error), after the summary's output
        raise SystemExit(f"{len(failed)} cell(s) failed:\n" + "\n".join(
            f"  {'/'.join(map(str, c))}: {last_line(cell_dir(args.output, *c) / 'log.txt')} "
            f"({cell_dir(args.output, *c) / 'log.txt'})" for c in failed))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), default="cpu")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=[*suite_methods(), *OBJECTIVES], default=suite_methods(),
                        help="the field objectives (issue 15's ablation) on request")
    parser.add_argument("--sweep", action="store_true",
                        help=f"also score CDTSDE cells at NFE {SWEEP_NFES} with gamma 1 and 0 (the field ablation)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data-root", type=Path, default=DATA, help="a folder with the layout of ../shared/data")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/suite/<scale>")
    parser.add_argument("--data-copy", action="store_true",
                        help="--data-root is a copy of the data the finished cells recorded (another machine's path)")
    parser.add_argument("--score-only", action="store_true",
                        help="score the trained models of the finished cells in --from on --data-root's test "
                             "splits into --output, never training")
    parser.add_argument("--from", dest="source", type=Path,
                        help="with --score-only: the suite output whose cells are scored (default: the scale's)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (the cores split between them unless OMP_NUM_THREADS is set)")
    parser.add_argument("--test-items", type=int, help="override the scale's number of test items")
    parser.add_argument("--max-steps", type=int, help="override every training budget (smoke runs)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the summary from the finished cells")
    parser.add_argument("--readme", action="store_true", help="also regenerate the results blocks of README.md and docs/results.md")
    parser.add_argument("--mix-code-versions", action="store_true",
                        help="average seeds that ran different code versions into one row (refused otherwise)")
    parser.add_argument("--cell", nargs=3, metavar=("TASK", "METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.output = (args.output or RESULTS / "suite" / args.scale).resolve()
    args.data_root = args.data_root.resolve()
    args.source = (args.source or RESULTS / "suite" / args.scale).resolve()
    if args.cell and args.score_only:
        task, method, seed = args.cell
        rescore_cell(task, method, int(seed), args.source, args.data_root, args.output, args.test_items)
        return
    if args.cell:
        task, method, seed = args.cell
        run_cell(task, method, int(seed), args.scale, args.data_root, args.output, args.test_items, args.max_steps,
                 args.sweep)
        return
    if args.summary_only:
        write_summary(args.output, args.readme, args.mix_code_versions)
        return
    if not args.data_root.is_dir():
        raise SystemExit(f"--data-root {args.data_root}: no such folder (expected the layout of ../shared/data)")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    if args.score_only and args.output == args.source:
        raise SystemExit(f"--score-only writes new cells: give an --output other than --from ({args.source})")
    args.output.mkdir(parents=True, exist_ok=True)
    run_suite(args)

