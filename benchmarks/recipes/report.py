"""The study's report, from whatever runs have finished (`study.json`): per representative, the monitored
validation figure against images seen and against CPU minutes for every lever (curves-<method>.png), and a
table; per family the recipe chosen by validation alone; summary.json and summary.md in the output folder.

Definitions (the monitor's direction: up for the headline, down for val/loss):
* smoothed curve: the mean of each validation and its neighbours (3 points; 2 at the ends);
* plateau: the best value of the smoothed curve;
* time to 95%: the first validation whose smoothed value has made 95% of the gain from the first validation
  to the plateau, in images seen and in the training process's CPU minutes (validations left out);
* validation spread: the standard deviation of the baseline's validations over the last quarter of its run
  (at least two), the noise of a figure once it has stopped gaining;
* verdict: a lever whose plateau beats the baseline's by more than the spread is "better", one that falls
  short by more is "worse", else "same"; a run of other code than its baseline's ("other code": e.g. another
  reading of the data) gets no verdict until both ran one code version;
* recipe: per group of levers (lr, batch, ...) the one "better" for every representative of the family
  that ran it, the largest mean gain if several; none: the baseline's setting.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.common import curve_summary
from benchmarks.recipes.plan import FAMILIES, LEFT_OUT, LEVERS, levers_of
from benchmarks.suite.report import code_label


def load_runs(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*/*/*/*/study.json"))]


def spread(run: dict) -> float:
    """The standard deviation of the run's validations over its last quarter (at least two)."""
    values = [row[run["monitor"]] for row in run["rows"]]
    last = values[-max(2, len(values) // 4):]
    return statistics.stdev(last) if len(last) > 1 else 0.0


def verdict(gain: float, noise: float) -> str:
    return "better" if gain > noise else "worse" if gain < -noise else "same"


def method_table(runs: dict[str, dict]) -> dict:
    """{lever: its summary, with the verdict against the baseline} for one representative's runs."""
    summaries = {lever: {**curve_summary(run), "code": code_label(run)} for lever, run in runs.items()}
    if "baseline" in runs:
        noise = spread(runs["baseline"])
        monitor = runs["baseline"]["monitor"]
        for lever, summary in summaries.items():
            summary["gain"] = (summary["plateau"] - summaries["baseline"]["plateau"]) * (
                -1 if monitor.startswith("val/loss") else 1)
            if lever == "baseline":
                summary["verdict"] = "-"
            elif summary["code"] != summaries["baseline"]["code"]:
                summary["verdict"] = "other code"
            else:
                summary["verdict"] = verdict(summary["gain"], noise)
        summaries["baseline"]["spread"] = noise
    return summaries


def bf16_speedup(table: dict) -> float:
    """32-true's CPU seconds per step over bf16-mixed's (the baseline's and its bf16 run's)."""
    return table["baseline"]["cpu_seconds_per_step"] / table["bf16-mixed"]["cpu_seconds_per_step"]


def recipe(tables: dict[str, dict]) -> dict[str, str]:
    """{group: the lever chosen} of a family, by validation alone (see the module's definitions)."""
    chosen = {}
    groups = {lever["group"] for lever in LEVERS.values() if "group" in lever}
    for group in sorted(groups):
        candidates = []
        for name, lever in LEVERS.items():
            if lever.get("group") != group:
                continue
            ran = [table[name] for table in tables.values() if name in table and "verdict" in table[name]]
            if ran and all(summary["verdict"] == "better" for summary in ran):
                candidates.append((statistics.fmean(summary["gain"] for summary in ran), name))
        if candidates:
            chosen[group] = max(candidates)[1]
    return chosen


def plot(method: str, runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for lever, run in runs.items():
        values = [row[run["monitor"]] for row in run["rows"]]
        style = {"color": "black", "linewidth": 2} if lever == "baseline" else {"linewidth": 1}
        axes[0].plot([row["images"] for row in run["rows"]], values, label=lever, **style)
        axes[1].plot([row["cpu_seconds"] / 60 for row in run["rows"]], values, label=lever, **style)
    monitor = next(iter(runs.values()))["monitor"]
    axes[0].set(xlabel="images seen", ylabel=f"{monitor} (val split)", title=method)
    axes[1].set(xlabel="training CPU minutes (one thread)")
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(out: Path) -> dict:
    """summary.json, summary.md and the curves of every representative with finished runs."""
    runs = load_runs(out)
    by_method: dict[str, dict[str, dict]] = {}
    for run in sorted(runs, key=lambda run: list(LEVERS).index(run["lever"])):
        by_method.setdefault(run["method"], {})[run["lever"]] = run
    families, lines = {}, ["# Recipe study: the cheapest route to convergence, per family", "",
                           "Generated by `python -m benchmarks.recipes` (definitions: benchmarks/recipes/report.py). "
                           "Validation on 2 held-out training subjects; the test split is never scored.", ""]
    for family, spec in FAMILIES.items():
        tables = {method: method_table(by_method[method]) for method in spec["methods"] if method in by_method}
        if not tables:
            continue
        families[family] = {"task": spec["task"], "methods": tables, "recipe": recipe(tables)}
        lines += [f"## {family} ({spec['task']})", ""]
        for method, table in tables.items():
            monitor = by_method[method][next(iter(table))]["monitor"]
            plot(method, by_method[method], out / f"curves-{method}.png")
            noise = table.get("baseline", {}).get("spread")
            lines += [f"### {method}: {monitor}" + (f" (validation spread {noise:.3g})" if noise is not None else ""),
                      "", f"![{method}](curves-{method}.png)", "",
                      "| lever | best | plateau | images to 95% | CPU min to 95% | CPU min | CPU s/step | verdict | code |",
                      "|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {lever} | {s['best']:.4g} | {s['plateau']:.4g} | {s['images_to_95']} | "
                      f"{s['cpu_minutes_to_95']:.1f} | {s['cpu_minutes']:.1f} | {s['cpu_seconds_per_step']:.2f} | "
                      f"{s.get('verdict', '?')} | {s['code']} |" for lever, s in table.items()]
            missing = [lever for lever in levers_of(method) if lever not in table]
            if missing:
                lines += ["", f"Not run: {', '.join(missing)}."]
            if {"baseline", "bf16-mixed"} <= set(table):
                lines += ["", f"bf16-mixed's speed-up per step over 32-true: {bf16_speedup(table):.2f}x in CPU seconds "
                          f"(validation in float32 for both: the EMA weights)"]
            lines.append("")
        chosen = families[family]["recipe"]
        lines += [f"Recipe (by validation): {', '.join(chosen.values()) if chosen else 'the baseline'}", ""]
    lines += ["Levers left out of the study:", "", *(f"- {name}: {why}" for name, why in LEFT_OUT.items()), ""]
    summary = {"families": families, "left_out": LEFT_OUT}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text("\n".join(lines))
    return summary
