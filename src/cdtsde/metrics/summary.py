"""Summaries of per-image metric rows and the paper's "mean ± std" tables."""

from __future__ import annotations

import math

import numpy as np


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """mean, std (population), min, max over the finite values of each metric; n counts them and
    `non_finite` counts the NaN/inf values left out (e.g. PSNR of identical images)."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    summary = {}
    for key in keys:
        values = np.array([row[key] for row in rows if key in row], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[key] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "min": float(finite.min()) if finite.size else math.nan,
            "max": float(finite.max()) if finite.size else math.nan,
            "n": int(finite.size),
            "non_finite": int(values.size - finite.size),
        }
    return summary


def _cell(stats: dict | None) -> str:
    if stats is None or not stats["n"]:
        return "-"
    digits = 2 if abs(stats["mean"]) >= 10 else 4
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def format_table(summaries: dict[str, dict], metrics: list[str] | None = None, label: str = "method") -> str:
    """A markdown table, one row per summary (e.g. per method), one "mean ± std" column per metric."""
    if metrics is None:
        metrics = list(dict.fromkeys(key for summary in summaries.values() for key in summary))
    lines = [f"| {label} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, summary in summaries.items():
        lines.append(f"| {name} | " + " | ".join(_cell(summary.get(metric)) for metric in metrics) + " |")
    return "\n".join(lines)


def format_mask_table(summary: dict[str, dict]) -> str:
    """Mask metrics keyed "<metric>/<class>" as one row per class (or group), one column per metric."""
    metrics = list(dict.fromkeys(key.split("/", 1)[0] for key in summary if "/" in key))
    names = list(dict.fromkeys(key.split("/", 1)[1] for key in summary if "/" in key))
    per_class = {name: {metric: summary[f"{metric}/{name}"] for metric in metrics if f"{metric}/{name}" in summary}
                 for name in names}
    return format_table(per_class, metrics, label="class")
