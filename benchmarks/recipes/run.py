"""The study's runner: one process per run (one torch thread), trained with validation into its folder
<output>/<task>/<family>/<method>/<lever>/ (run/ the training run, study.json written last); finished runs
are skipped, killed ones resume exactly (the training loop's --resume); then the report.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
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
    train_or_resume,
    validation_curve,
)
from benchmarks.recipes.plan import FAMILIES, LEVERS, family_of, levers_of, monitor_of, study_config
from benchmarks.suite.presets import DATA, task_data
from benchmarks.suite.run import cell_environment, last_line

OUTPUT = RESULTS / "recipes"


def run_dir(out: Path, method: str, lever: str) -> Path:
    family = family_of(method)
    return out / FAMILIES[family]["task"] / family / method / lever


def splits(task: str, config: dict, data_root: Path) -> dict[str, list[str]]:
    """The subjects of the run's train, val and test splits, checked disjoint, its test split the suite's."""
    from cdtsde.data import build_dataset

    subjects = {split: build_dataset(config["data"], split).subjects for split in ("train", "val", "test")}
    suite_spec = {**task_data(task, data_root), "size": config["data"]["size"]}
    for one, other in (("train", "val"), ("train", "test"), ("val", "test")):
        if set(subjects[one]) & set(subjects[other]):
            raise SystemExit(f"{one} and {other} share subjects {sorted(set(subjects[one]) & set(subjects[other]))}")
    if subjects["test"] != build_dataset(suite_spec, "test").subjects:
        raise SystemExit("the study's test subjects differ from the suite's")
    return subjects


def run_one(method: str, lever: str, data_root: Path, out: Path, smoke: bool) -> dict:
    """Train (or resume) one study run with validation; its study.json is written last."""
    from cdtsde.atomic import atomic_path
    from cdtsde.run import build_run

    torch.set_num_threads(1)
    folder, family, code = run_dir(out, method, lever), family_of(method), code_version()  # the code that trains
    config = study_config(method, lever, data_root, smoke)
    subjects = splits(FAMILIES[family]["task"], config, data_root)
    model, train_set, preview_set, train_config = build_run(config)
    validation = held_out_validation(model, train_set, preview_set, config["data"], train_config.validation.items)
    result = train_or_resume(model, train_set, train_config, folder / "run", run_config=config, progress=False,
                             validation=validation)
    record = {"method": method, "lever": lever, "task": FAMILIES[family]["task"], "family": family, "monitor": monitor_of(method), "config": config,
              "data_root": str(data_root), "smoke": smoke, "subjects": subjects, "train_pairs": len(train_set),
              "rows": validation_curve(folder / "run" / "metrics.csv", train_config.batch_size),
              "best_value": result.get("best_value"), "best_step": result.get("best_step"),
              "torch_threads": torch.get_num_threads(),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "machine": machine(), "code": code}
    with atomic_path(folder / "study.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return record


def finished(out: Path, method: str, lever: str, data_root: Path, smoke: bool, data_copy: bool = False) -> bool:
    """Whether the run is done; one made with another configuration is an error, as is one made on another
    data root unless `data_copy` says this root is a copy of it (the same data at another machine's path)."""
    path = run_dir(out, method, lever) / "study.json"
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    if record["data_root"] != str(data_root) and not data_copy:
        raise SystemExit(f"{path} was made on the data root {record['data_root']}, not {data_root}; if {data_root} is "
                         f"a copy of it (another machine's path): --data-copy, else use another --output")
    expected = study_config(method, lever, Path(record["data_root"]), smoke)
    if record["config"] != json.loads(json.dumps(expected)):
        raise SystemExit(f"{path} was made with another configuration; use another --output or delete the run")
    return True


def runs_of(args) -> list[tuple[str, str]]:
    return [(method, lever) for family in args.families for method in FAMILIES[family]["methods"]
            if not args.methods or method in args.methods
            for lever in levers_of(method) if lever in args.levers]


def run_study(args) -> None:
    runs = runs_of(args)
    pending = [run for run in runs if not finished(args.output, *run, args.data_root, args.smoke, args.data_copy)]
    print(f"{len(runs) - len(pending)} runs done, {len(pending)} to run", flush=True)
    env = {**cell_environment(args.jobs), "OMP_NUM_THREADS": "1"}  # one torch thread per run

    def launch(run):
        method, lever = run
        folder = run_dir(args.output, method, lever)
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "benchmarks.recipes", "--run", method, lever,
                   "--data-root", str(args.data_root), "--output", str(args.output)] + (["--smoke"] if args.smoke else [])
        began = time.perf_counter()
        with open(folder / "log.txt", "a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        print(f"{method}/{lever}: {'done' if code == 0 else f'FAILED (exit {code})'} in "
              f"{(time.perf_counter() - began) / 60:.1f} min", flush=True)
        return run, code

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        failed = [run for run, code in pool.map(launch, pending) if code]
    from benchmarks.recipes.report import write_report

    write_report(args.output)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed:\n" + "\n".join(
            f"  {'/'.join(run)}: {last_line(run_dir(args.output, *run) / 'log.txt')}" for run in failed))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipes", description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--methods", nargs="+", help="only these representatives of the families")
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    parser.add_argument("--data-root", type=Path, default=DATA, help="a folder with the layout of ../shared/data")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--data-copy", action="store_true",
                        help="--data-root is a copy of the root the finished runs used (another machine's path)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one core each)")
    parser.add_argument("--smoke", action="store_true", help="a few steps at 32 px (a test of the machinery)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the finished runs")
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "LEVER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.output, args.data_root = args.output.resolve(), args.data_root.resolve()
    if args.run:
        run_one(*args.run, args.data_root, args.output, args.smoke)
        return
    if args.report_only:
        from benchmarks.recipes.report import write_report

        write_report(args.output)
        return
    if not args.data_root.is_dir():
        raise SystemExit(f"--data-root {args.data_root}: no such folder (expected the layout of ../shared/data)")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    run_study(args)
