"""Shared helpers for the benchmark scripts: machine and code description, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# what decides a benchmark's numbers: a change elsewhere (results, docs) leaves the code version unmodified
CODE_PATHS = ("src", "benchmarks", "pyproject.toml", ":(exclude)benchmarks/results")


def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo's "model name" on Linux; `platform` elsewhere, or the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_build() -> list[str]:
    """torch's build summary (compiler, BLAS, oneDNN, OpenMP, the CPU capability used), without its long
    list of compiler flags: the libraries whose kernels decide the last digits of a result."""
    lines = [line.strip(" -") for line in torch.__config__.show().splitlines()[1:]]
    return [line for line in lines if line and not line.startswith("Build settings")]


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_build": torch_build(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def code_version() -> dict:
    """The package version and, when run from a git checkout, its commit and whether the code differs from
    it (tracked or untracked changes under CODE_PATHS); commit and modified are None outside a checkout."""
    from cdtsde import __version__

    def git(*arguments):
        return subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        modified = bool(git("status", "--porcelain", "--", *CODE_PATHS).strip())
    except (OSError, subprocess.CalledProcessError):
        commit, modified = None, None
    return {"cdtsde": __version__, "commit": commit, "modified": modified}


def median_seconds(function, repeats: int, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of `function()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_items(dataset, limit: int | None):
    """At most `limit` items, evenly spread over the split (not its first slices)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    return torch.utils.data.Subset(dataset, [i * len(dataset) // limit for i in range(limit)])


def write_report(out: Path, lines: list[str], payload: dict) -> None:
    """`results.md` (the lines) and `results.json` (the machine and `payload`) in `out`; the report printed."""
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"machine": machine(), "code": code_version(), **payload}, indent=2,
                                                 default=str))
    print("\n".join(lines))


def write_results(name: str, payload: dict, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "code": code_version(), **payload}, indent=2))
    return path


def train_or_resume(model, train_set, train_config, run_dir: Path, **options) -> dict:
    """Train a benchmark's run into `run_dir` (`cdtsde.training.train`, `options` passed on), resuming it where
    it holds a checkpoint. A run killed before its first checkpoint has no state to resume: it starts again
    (the files it wrote are removed), rather than being refused as a folder holding a run's files."""
    from cdtsde.training import train

    resume = (run_dir / "state.pt").is_file()
    return train(model, train_set, train_config, run_dir, resume=resume, overwrite=not resume, **options)


def held_out_validation(model, train_set, preview_set, spec: dict, items: int):
    """A run's validation data (`cdtsde.run.validation_data`, which refuses a data spec without a val split)
    from the training and val sets `cdtsde.run.build_training_data` built of `spec`: `items` of the val split,
    spread over it."""
    from cdtsde.run import validation_data
    from cdtsde.training.validation import ValidationData

    data = validation_data(model, train_set, preview_set, spec)
    return ValidationData(test_items(data.items, items), test_items(data.pairs, items), data.score)


PLATEAU_SHARE = 0.95


def smoothed(values: list[float]) -> list[float]:
    return [statistics.fmean(values[max(0, i - 1):i + 2]) for i in range(len(values))]


def curve_summary(run: dict) -> dict:
    """Best value, plateau, the images and CPU minutes to 95% of the gain, CPU seconds per step of a validation
    curve (`run`: its "rows", `validation_curve`, and its "monitor"). Plateau: the best of the curve smoothed
    over each validation and its neighbours; 95%: the first validation whose smoothed value has made 95% of
    the gain from the first validation to the plateau (the monitor's direction: down for val/loss)."""
    rows, monitor = run["rows"], run["monitor"]
    sign = -1.0 if monitor.startswith("val/loss") else 1.0
    values = [sign * row[monitor] for row in rows]
    smooth = smoothed(values)
    plateau = max(smooth)
    target = smooth[0] + PLATEAU_SHARE * (plateau - smooth[0])
    reached = next(i for i, value in enumerate(smooth) if value >= target)
    return {"best": sign * max(values), "plateau": sign * plateau, "images_to_95": rows[reached]["images"],
            "cpu_minutes_to_95": rows[reached]["cpu_seconds"] / 60, "cpu_minutes": rows[-1]["cpu_seconds"] / 60,
            "cpu_seconds_per_step": rows[-1]["cpu_seconds"] / rows[-1]["step"], "validations": len(rows)}


def validation_curve(path: Path, batch: int) -> list[dict]:
    """The validation rows of a run's metrics.csv: step, images seen, CPU seconds and the val/ columns."""
    import csv

    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("cpu_seconds")]
    return [{"step": int(row["step"]), "images": int(row["step"]) * batch, "cpu_seconds": float(row["cpu_seconds"]),
             **{key: float(value) for key, value in row.items() if key.startswith("val/") and value != ""}}
            for row in rows]
