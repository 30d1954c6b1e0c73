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


MIN_CLUSTERS = 3  # fewer independent units give no usable interval


def bootstrap_mean(values: np.ndarray, labels=None, confidence: float = 0.95, resamples: int = 10000,
                   seed: int = 0) -> tuple[float, float, int]:
    """BCa bootstrap interval of the mean of `values`: (low, high, units). Without `labels` every value is
    a unit; with them (one cluster label per value) whole clusters are resampled (BCa over the ratio of the
    clusters' sums to their counts, so the estimate stays the item mean) and fewer than MIN_CLUSTERS
    clusters give NaN. No spread: the interval is the point."""
    from scipy import stats

    if labels is None:
        if np.ptp(values) == 0:
            return float(values[0]), float(values[0]), int(values.size)
        interval = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                   method="BCa", rng=np.random.default_rng(seed)).confidence_interval
        return float(interval.low), float(interval.high), int(values.size)
    labels = np.asarray(labels)
    units = sorted(set(labels))
    sums = np.array([values[labels == unit].sum() for unit in units])
    counts = np.array([(labels == unit).sum() for unit in units], dtype=np.float64)
    if len(units) < MIN_CLUSTERS:
        return math.nan, math.nan, len(units)
    if np.ptp(sums / counts) == 0:
        return float(values.mean()), float(values.mean()), len(units)
    interval = stats.bootstrap((sums, counts), lambda s, c, axis=-1: s.sum(axis) / c.sum(axis), paired=True,
                               vectorized=True, confidence_level=confidence, n_resamples=resamples, method="BCa",
                               rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high), len(units)


def mean_interval(rows: list[dict], key: str, cluster_of=None, confidence: float = 0.95, resamples: int = 10000,
                  seed: int = 0) -> dict[str, float]:
    """The mean of metric `key` over the rows' finite values with a bootstrap interval (over clusters with
    `cluster_of(name) -> str`, as in `paired_comparison`)."""
    ordered = sorted(rows, key=lambda row: row["name"])
    values = np.array([row[key] for row in ordered], dtype=np.float64)
    finite = np.isfinite(values)
    result = {"n": int(finite.sum()), "non_finite": int((~finite).sum())}
    if finite.sum() < 2:
        return {**result, "mean": float(values[finite].mean()) if finite.any() else math.nan,
                "ci_low": math.nan, "ci_high": math.nan}
    labels = None if cluster_of is None else [str(cluster_of(row["name"])) for row, keep in zip(ordered, finite) if keep]
    low, high, units = bootstrap_mean(values[finite], labels, confidence, resamples, seed)
    if cluster_of is not None:
        result["n_clusters"] = units
    return {**result, "mean": float(values[finite].mean()), "ci_low": low, "ci_high": high}


def paired_comparison(rows: list[dict], baseline_rows: list[dict], key: str, higher_is_better: bool = True,
                      confidence: float = 0.95, resamples: int = 10000, seed: int = 0,
                      cluster_of=None) -> dict[str, float]:
    """Method against baseline on the same items, paired by the rows' "name": the mean difference
    (method - baseline) of metric `key` with a BCa bootstrap confidence interval, the Wilcoxon
    signed-rank p-value, and the share of items on which the method is better. Items where either
    value is not finite (e.g. Dice with both masks empty) are left out and counted.

    Items within one subject or scene are not independent: without `cluster_of` the interval and p-value
    treat them as if they were (optimistic). `cluster_of(name) -> str` (e.g. the subject of a slice) makes
    the clusters the units: the bootstrap resamples whole clusters (`bootstrap_mean`) and the Wilcoxon test
    runs over the clusters' mean differences; `n_clusters` is reported, and with fewer than MIN_CLUSTERS
    clusters the interval and p-value are NaN: so few subjects cannot tell how a verdict would change with others."""
    from scipy import stats

    baseline = {row["name"]: row for row in baseline_rows}
    missing = [row["name"] for row in rows if row["name"] not in baseline]
    if missing:
        raise ValueError(f"{len(missing)} items have no baseline row, e.g. {missing[0]!r}")
    ordered = sorted(rows, key=lambda row: row["name"])  # so that the bootstrap does not depend on row order
    pairs = np.array([(row[key], baseline[row["name"]][key]) for row in ordered], dtype=np.float64).reshape(-1, 2)
    finite = np.isfinite(pairs).all(axis=1)
    differences = pairs[finite, 0] - pairs[finite, 1]
    result = {"n": int(differences.size), "non_finite": int((~finite).sum())}
    if differences.size < 2:
        return {**result, "mean_difference": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "wilcoxon_p": math.nan, "better_share": math.nan}
    better = differences > 0 if higher_is_better else differences < 0
    labels = None
    if cluster_of is not None:
        labels = np.array([str(cluster_of(row["name"])) for row, keep in zip(ordered, finite) if keep])
    low, high, units = bootstrap_mean(differences, labels, confidence, resamples, seed)
    if labels is None:
        units_differences = differences
    else:
        result["n_clusters"] = units
        units_differences = np.array([differences[labels == unit].mean() for unit in sorted(set(labels))])
    if labels is not None and units < MIN_CLUSTERS:
        p_value = math.nan
    elif np.any(units_differences != 0):
        p_value = float(stats.wilcoxon(units_differences).pvalue)
    else:  # no difference anywhere: the signed-rank test is undefined
        p_value = 1.0
    return {**result, "mean_difference": float(differences.mean()), "ci_low": low, "ci_high": high,
            "wilcoxon_p": p_value, "better_share": float(better.mean())}


def _cell(stats: dict | None) -> str:
    if stats is None or not stats["n"]:
        return "-"
    digits = 2 if abs(stats["mean"]) >= 10 else 4
    if math.isnan(stats["std"]):  # a set-level metric: one value for the whole set
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def set_level(values: dict[str, float], n: int) -> dict[str, dict[str, float]]:
    """Metrics of a whole set (perception metrics) in `summarise`'s form: the value as mean, min and max,
    std NaN (no spread over items), n the set's size."""
    return {key: {"mean": float(v), "std": math.nan, "min": float(v), "max": float(v), "n": n, "non_finite": 0}
            for key, v in values.items()}


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
