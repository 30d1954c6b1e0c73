"""One table across the tasks of `benchmarks.paper`, for the paper's claim that the gains of the
learned fields over linear grow with the heterogeneity of the modality gap (EL masks > SAR > MRI).

    python -m benchmarks.paper_summary --scale cpu

Reads <results>/<task>-<scale>/results.json for every task that has one and writes
<results>/summary-<scale>.md (results: benchmarks/results/paper by default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.paper import COLLAPSED, headline_metric

# the paper's order of heterogeneity, most heterogeneous first
TASK_ORDER = ("el-mask", "sar-optical", "brats-t1t2", "brats-t2t1")


def summary_lines(results: dict[str, dict]) -> list[str]:
    fields = ["channel", "dynamic", "content", COLLAPSED]
    lines = ["Headline quality at 5 steps (mean over test items), and each field's paired difference from "
             "linear with its 95% bootstrap interval; * marks an interval that excludes 0.", "",
             "| task | metric | linear | " + " | ".join(f"{f} - linear" for f in fields) + " |",
             "|---" * (len(fields) + 3) + "|"]
    for task, result in results.items():
        is_mask = "dice/defect" in result["table"]["linear"]
        for key in [headline_metric(task, is_mask)] + (["dice/defect-present"] if is_mask else []):
            cells = []
            for field in fields:
                c = result["paired_against_linear"].get(field, {}).get(key)
                if c is None:
                    cells.append("-")
                    continue
                significant = "*" if c["ci_low"] > 0 or c["ci_high"] < 0 else ""
                cells.append(f"{c['mean_difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]{significant}")
            lines.append(f"| {task} | {key} | {result['table']['linear'][key]['mean']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "Steps each field needs to reach linear's quality at 10 steps (matched fidelity):", "",
              "| task | linear at 10 steps | linear | dynamic | content |", "|---|---|---|---|---|"]
    for task, result in results.items():
        matched = result["matched"]
        steps = [("-" if f not in matched else str(matched[f]["steps"] or "> 20")) for f in ("linear", "dynamic", "content")]
        lines.append(f"| {task} | {matched['linear']['goal']:.4f} | " + " | ".join(steps) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--results", type=Path, default=RESULTS / "paper", help="folder of the per-task results")
    args = parser.parse_args()
    results = {}
    for task in TASK_ORDER:
        path = args.results / f"{task}-{args.scale}" / "results.json"
        if path.is_file():
            results[task] = json.loads(path.read_text())
    if not results:
        raise SystemExit(f"no results for scale {args.scale!r}: run python -m benchmarks.paper first")
    first = next(iter(results.values()))
    lines = [f"# The paper's comparisons, scale {args.scale}", "",
             f"Training per model: `{json.dumps(first['configs']['linear']['train'])}` at "
             f"{first['configs']['linear']['data'].get('size') or first['configs']['linear']['data'].get('tile')} px; "
             f"machine: `{json.dumps(first['machine'])}`.", ""] + summary_lines(results)
    (args.results / f"summary-{args.scale}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
