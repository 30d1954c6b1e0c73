"""One table across the tasks of `benchmarks.paper`, for the paper's claim that the gains of the
learned fields over linear grow with the heterogeneity of the modality gap (EL masks > SAR > MRI).

    python -m benchmarks.paper_summary --scale cpu

Reads <results>/<task>-<scale>/results.json for every task that has one (training seed 0) and
<results>/<task>-<scale>-seed<N>/results.json for the other training seeds, and writes
<results>/summary-<scale>.md (results: benchmarks/results/paper by default).
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import torch

from benchmarks.common import RESULTS
from benchmarks.paper import COLLAPSED, headline_metric
from cdtsde.methods.cdtsde.fields import DynamicField, field_envelopes

DEFAULT_SQUASH_EPS = inspect.signature(DynamicField.__init__).parameters["squash_eps"].default

# the paper's order of heterogeneity, most heterogeneous first
TASK_ORDER = ("el-mask", "sar-optical", "sar-scenes", "brats-t1t2", "brats-t2t1")
# the fields set against linear in the headline tables
COMPARED = ("channel", "dynamic", "content", COLLAPSED)


def difference_cell(comparison: dict | None) -> str:
    """'mean [low, high]' of a paired comparison, with * where the interval excludes 0."""
    if comparison is None:
        return "-"
    c = comparison
    significant = "*" if c["ci_low"] > 0 or c["ci_high"] < 0 else ""
    return f"{c['mean_difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]{significant}"


def headline_keys(task: str, result: dict) -> list[str]:
    is_mask = "dice/defect" in result["table"]["linear"]
    return [headline_metric(task, is_mask)] + (["dice/defect-present"] if is_mask else [])


def difference_table_head(labels: list[str]) -> list[str]:
    columns = labels + ["linear"] + [f"{field} - linear" for field in COMPARED]
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def difference_row(labels: list[str], result: dict, key: str) -> str:
    """One row: the labels, linear's mean of `key`, then each compared field's paired difference."""
    cells = [difference_cell(result["paired_against_linear"].get(field, {}).get(key)) for field in COMPARED]
    return "| " + " | ".join(labels + [f"{result['table']['linear'][key]['mean']:.4f}"] + cells) + " |"


def summary_lines(results: dict[str, dict]) -> list[str]:
    lines = ["Headline quality at 5 steps (mean over test items), and each field's paired difference from "
             "linear with its 95% bootstrap interval; * marks an interval that excludes 0.", ""]
    lines += difference_table_head(["task", "metric"])
    lines += [difference_row([task, key], result, key) for task, result in results.items()
              for key in headline_keys(task, result)]
    lines += ["", "Steps each field needs to reach linear's quality at 10 steps with the same gamma (matched "
              "fidelity; gamma 1 is the paper's stochastic solver, 0 the deterministic one):", "",
              "| task | gamma | linear at 10 steps | linear | dynamic | content |", "|---|---|---|---|---|---|"]
    for task, result in results.items():
        for gamma, matched in result["matched"].items():  # JSON keys: "1.0", "0.0"
            steps = [("-" if f not in matched else str(matched[f]["steps"] or "> 20")) for f in ("linear", "dynamic", "content")]
            lines.append(f"| {task} | {float(gamma):g} | {matched['linear']['goal']:.4f} | " + " | ".join(steps) + " |")
    return lines


def band_lines(by_seed: dict[str, dict[int, dict]]) -> list[str]:
    """Where the learned dynamic and content fields sit inside the band Eq. 2 allows, per training seed."""
    lines = ["Where the learned fields sit inside the band Eq. 2 allows (0: on the lower envelope f = eta^2, "
             "which lets the most target into x_t; 1: on the upper envelope f = 2 eta - eta^2; both "
             "through Eq. 3), over the t where 0.01 < eta_t < 0.99: the position of the mean field, and the "
             "smallest and largest position of any pixel:", "",
             "| task | training seed | field | mean position | pixel range | largest spatial std |",
             "|---|---|---|---|---|---|"]
    for task, seeds in by_seed.items():
        for seed, result in sorted(seeds.items()):
            for field in ("dynamic", "content"):
                if field not in result.get("fields", {}):
                    continue
                eps = result["configs"][field]["model"]["field"].get("squash_eps", DEFAULT_SQUASH_EPS)
                # where the band is narrower than float32 resolution of the stored field, position is noise
                rows = [row for row in result["fields"][field] if 0.01 < row["eta"] < 0.99]
                mean, low, high = (envelope_position(rows, eps, key) for key in ("mean", "min", "max"))
                lines.append(f"| {task} | {seed} | {field} | {mean.mean():.3f} (from {mean.min():.3f} to {mean.max():.3f}) | "
                             f"{low.min():.3f} to {high.max():.3f} | {max(row['spatial_std'] for row in rows):.3f} |")
    return lines


def seed_lines(by_seed: dict[str, dict[int, dict]]) -> list[str]:
    """The headline differences from linear once per training seed: the paired intervals above cover
    the test items only, not the training run."""
    lines = ["Headline differences from linear for each training seed (the intervals cover the test items, "
             "not the training run; repeating training shows how much of a difference survives):", ""]
    lines += difference_table_head(["task", "metric", "training seed"])
    lines += [difference_row([task, key, str(seed)], result, key) for task, seeds in by_seed.items()
              for key in headline_keys(task, next(iter(seeds.values()))) for seed, result in sorted(seeds.items())]
    return lines


def envelope_position(rows: list[dict], squash_eps: float, key: str) -> torch.Tensor:
    """Position of rows[i][key] between the squashed envelopes of Eq. 2 at rows[i]["eta"]: 0 on the lower
    envelope, 1 on the upper."""
    eta = torch.tensor([row["eta"] for row in rows], dtype=torch.float64)
    value = torch.tensor([row[key] for row in rows], dtype=torch.float64)
    lower, upper = field_envelopes(eta, squash_eps)
    return (value - lower) / (upper - lower)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--results", type=Path, default=RESULTS / "paper", help="folder of the per-task results")
    args = parser.parse_args()
    results, by_seed = {}, {}
    for task in TASK_ORDER:
        path = args.results / f"{task}-{args.scale}" / "results.json"
        if path.is_file():
            results[task] = json.loads(path.read_text())
            by_seed[task] = {0: results[task]}
            for other in sorted(args.results.glob(f"{task}-{args.scale}-seed*/results.json")):
                result = json.loads(other.read_text())
                by_seed[task][result["configs"]["linear"]["train"]["seed"]] = result
    if not results:
        raise SystemExit(f"no results for scale {args.scale!r}: run python -m benchmarks.paper first")
    first = next(iter(results.values()))
    lines = [f"# The paper's comparisons, scale {args.scale}", "",
             f"Training per model: `{json.dumps(first['configs']['linear']['train'])}` at "
             f"{first['configs']['linear']['data'].get('size') or first['configs']['linear']['data'].get('tile')} px; "
             f"machine: `{json.dumps(first['machine'])}`.", ""] + summary_lines(results)
    if any(len(seeds) > 1 for seeds in by_seed.values()):
        lines += [""] + seed_lines({task: seeds for task, seeds in by_seed.items() if len(seeds) > 1})
    lines += [""] + band_lines(by_seed)
    (args.results / f"summary-{args.scale}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
