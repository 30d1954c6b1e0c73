"""One table of the paired baselines across the real tasks of `benchmarks.baselines`, beside the CDTSDE
paper's Table 1 (their data), and a figure of the headline differences from the linear field.

    python -m benchmarks.baselines_summary --scale cpu

Reads <results>/<task>-<scale>/results.json for every task that has one (training seed 0) and writes
<results>/summary-<scale>.md and summary-<scale>.png (results: benchmarks/results/baselines by default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.baselines import PAPER_NAMES, PAPER_TABLE1, REFERENCE
from benchmarks.common import RESULTS

# per task: (column title, metric, the paper's metric of Table 1 it sits beside)
COLUMNS = {
    "brats-t1t2": [("BraTS T1->T2 brain PSNR", "psnr_fg", "psnr")],
    "brats-t2t1": [("BraTS T2->T1 brain PSNR", "psnr_fg", "psnr")],
    "sar-optical": [("SAR->optical PSNR", "psnr", "psnr"), ("SAR->optical SSIM", "ssim", "ssim")],
    "el-mask": [("EL defect Dice", "dice/defect", "dice"), ("EL defect Dice, defect images", "dice/defect-present", None)],
}
ORDER = ("cdtsde-linear", "cdtsde-dynamic", "bbdm", "bbdm-l2", "dbim", "abridge", "pix2pix", "identity")


def method_of(key: str) -> str:
    return key.split(" @ ")[0]


def row_order(keys) -> list[str]:
    def rank(key: str):
        name = method_of(key)
        nfe = int(key.split(" @ ")[1].split()[0])
        return (ORDER.index(name) if name in ORDER else len(ORDER), -nfe)
    return sorted(keys, key=rank)


def cell(result: dict, key: str, metric: str) -> str:
    summary = result["table"].get(key, {}).get(metric)
    if summary is None:
        return "-"
    digits = 2 if "psnr" in metric else 3
    text = f"{summary['mean']:.{digits}f}"
    comparison = result["paired"].get(key, {}).get(metric)
    if comparison is not None:
        c = comparison
        star = "*" if c["ci_low"] > 0 or c["ci_high"] < 0 else ""
        text += f" ({c['mean_difference']:+.{digits}f} [{c['ci_low']:+.{digits}f}, {c['ci_high']:+.{digits}f}]{star})"
    return text


def paper_cell(task: str, name: str, paper_metric: str | None) -> str:
    if paper_metric is None or task not in PAPER_TABLE1:
        return "-"
    _, metrics, rows = PAPER_TABLE1[task]
    values = rows.get(name)
    return "-" if values is None or paper_metric not in metrics else f"{values[metrics.index(paper_metric)]:g}"


def figure(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, title, metric) for task in results for title, metric, _ in COLUMNS[task][:1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for axis, (task, title, metric) in zip(axes[0], panels):
        result = results[task]
        keys = [k for k in row_order(result["paired"]) if metric in result["paired"][k]]
        means = [result["paired"][k][metric]["mean_difference"] for k in keys]
        low = [m - result["paired"][k][metric]["ci_low"] for k, m in zip(keys, means)]
        high = [result["paired"][k][metric]["ci_high"] - m for k, m in zip(keys, means)]
        axis.barh(range(len(keys)), means, xerr=[low, high], color="tab:blue", capsize=3)
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_yticks(range(len(keys)), keys, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{title}\nminus linear @ 5 NFE (95% CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--results", default=str(RESULTS / "baselines"))
    args = parser.parse_args()
    root = Path(args.results)
    results = {task: json.loads((root / f"{task}-{args.scale}" / "results.json").read_text())
               for task in COLUMNS if (root / f"{task}-{args.scale}" / "results.json").is_file()}
    columns = [(task, *column) for task in results for column in COLUMNS[task]]
    keys = row_order({key for result in results.values() for key in result["table"]})
    lines = [f"# Paired baselines across the real tasks, scale {args.scale}, training seed 0", "",
             f"Mean over test items; in brackets the paired difference from {REFERENCE} @ 5 NFE with its 95% BCa "
             "interval over test items (* excludes 0). Per-task tables, configurations and machines: "
             + ", ".join(f"[{task}]({task}-{args.scale}/results.md)" for task in results) + ".", "",
             "| method @ NFE | " + " | ".join(title for _, title, _, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(cell(results[task], key, metric) for task, _, metric, _ in columns) + " |")
    shown = [(task, title, paper_metric) for task, title, _, paper_metric in columns if paper_metric]
    lines += ["", "The CDTSDE paper's Table 1 on its own data (IXI T1<->T2, Sentinel, PSCDE EL masks; 256 px, its "
              "training and NFE): quoted, not comparable in absolute terms with the rows above.", "",
              "| method (paper) | " + " | ".join(f"{PAPER_TABLE1[t][0]} {m.upper()}" for t, _, m in shown) + " |",
              "|---" * (len(shown) + 1) + "|"]
    for name, label in PAPER_NAMES.items():
        lines.append(f"| {label} | " + " | ".join(paper_cell(t, name, m) for t, _, m in shown) + " |")
    (root / f"summary-{args.scale}.md").write_text("\n".join(lines) + "\n")
    figure(results, root / f"summary-{args.scale}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
