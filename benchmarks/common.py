"""Shared helpers for the benchmark scripts: machine description, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    (out / "results.json").write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    print("\n".join(lines))


def write_results(name: str, payload: dict, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
