"""The paper's claims on real data, measured side by side (issue 6).

    python -m benchmarks.paper --task brats-t1t2 --scale cpu      # or quick, gpu

For one task: trains the linear (DoSSR), channel, dynamic and content fields with the same network,
budget and seed; scores each on the test split at 5 steps (plus the dynamic model with the field
collapsed to its mean, as the authors' code samples), with brain-restricted metrics for MRI and the
defect scores of the items that have defects for EL masks; compares every field with linear on the
same items (mean paired difference, bootstrap interval, Wilcoxon p); sweeps quality against NFE (1, 2,
3, 5, 10, 20) for linear, dynamic and content, with the paper's stochastic solver (gamma 1) and the
deterministic one (gamma 0); reports the steps each needs to reach linear's quality at 10 steps with
the same gamma; and tabulates and draws the learned fields against eta_t. Writes
benchmarks/results/paper/<task>-<scale>/ (results.md, results.json, PNG figures, the configuration and
the machine). Training runs resume when re-invoked after a kill; `--train-only` stops after training.
`python -m benchmarks.paper_summary` puts the tasks side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, test_items
from cdtsde.data.masks import decode_classes
from cdtsde.evaluation import evaluate_model
from cdtsde.methods.cdtsde.fields import field_envelopes
from cdtsde.metrics import (
    PV_EL_CLASSES,
    PV_EL_DEFECT,
    format_mask_table,
    format_table,
    paired_comparison,
    summarise,
)
from cdtsde.run import build_run
from cdtsde.training import load_pretrained, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TASKS = {
    "brats-t1t2": {"kind": "brats", "root": str(DATA / "brats-mri"), "source": "t1", "target": "t2",
                   "min_foreground": 0.1, "val_subjects": 2, "test_subjects": 2, "seed": 0},
    "brats-t2t1": {"kind": "brats", "root": str(DATA / "brats-mri"), "source": "t2", "target": "t1",
                   "min_foreground": 0.1, "val_subjects": 2, "test_subjects": 2, "seed": 0},
    # the zero-shot protocol's secondary task (seed paper 002): the same subjects and split as T2 -> T1
    "brats-flairt1": {"kind": "brats", "root": str(DATA / "brats-mri"), "source": "flair", "target": "t1",
                      "min_foreground": 0.1, "val_subjects": 2, "test_subjects": 2, "seed": 0},
    # 200 Sentinel-1 VH / Sentinel-2 RGB pairs: trained on California (tiles T11SLT, T11SMT), tested on Texas
    # (T14RNT, another Sentinel-1 pass): the region split the data card asks for
    "sar-optical": {"kind": "paired-folder", "root": str(DATA / "sar-optical" / "volkov-s1s2"), "source_dir": "sar",
                    "target_dir": "opt", "groups": {"table": "pairs.csv", "column": "s2_tile"}, "val_groups": 0,
                    "test_groups": ["T14RNT"], "seed": 0},
    # the task's earlier data, kept so that its published rows reproduce: tiles of two large scenes, one per split
    "sar-scenes": {"kind": "scene-tiles", "root": str(DATA / "sar-optical" / "scenes"), "split_by": "scene",
                   "val_scenes": 0, "test_scenes": 1, "seed": 0},
    "el-mask": {"kind": "el-masks", "root": str(DATA / "pv-el-cracks")},
}
SMALL_UNET = {"base_channels": 32, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 1, "attention_resolutions": [8]}
SCALES = {
    # a few minutes per model on 2 CPU cores: a smoke-level comparison, not the paper's setting
    "quick": {"size": 32, "train": {"max_steps": 600, "batch_size": 16, "lr": 1e-3, "warmup_steps": 50,
                                    "ema_decay": 0.995}, "unet": SMALL_UNET, "test_items": 64},
    # about 7 minutes per model on 2 CPU cores, so that the four fields of all four tasks fit in two hours
    "cpu": {"size": 64, "train": {"max_steps": 200, "batch_size": 16, "lr": 1e-3, "warmup_steps": 20,
                                  "ema_decay": 0.99}, "unet": SMALL_UNET, "test_items": 64},
    # three times the cpu budget: at most 30 minutes per model on 2 CPU cores for every zero-shot method
    "cpu-long": {"size": 64, "train": {"max_steps": 600, "batch_size": 16, "lr": 1e-3, "warmup_steps": 20,
                                       "ema_decay": 0.995}, "unet": SMALL_UNET, "test_items": 64},
    # the zero-shot seed paper's 128 px, for a larger machine (a GPU or many cores)
    "128": {"size": 128, "train": {"max_steps": 4000, "batch_size": 16, "lr": 2e-4, "warmup_steps": 100, "accelerator": "auto",
                                   "ema_decay": 0.999},
            "unet": {"base_channels": 64, "channel_mults": [1, 2, 2, 4], "num_res_blocks": 2,
                     "attention_resolutions": [16]}, "test_items": None},
    # the paper's 256 px setting, for a GPU
    "gpu": {"size": 256, "train": {"max_steps": 10000, "batch_size": 16, "lr": 2e-4, "accelerator": "gpu",
                                   "precision": "bf16-mixed"},
            "unet": {"base_channels": 64, "channel_mults": [1, 1, 2, 2, 4], "num_res_blocks": 2,
                     "attention_resolutions": [16]}, "test_items": None},
}
BRAIN_TASKS = ("brats-t1t2", "brats-t2t1", "brats-flairt1")
COLLAPSED = "dynamic, field collapsed (authors' sampling)"
LOWER_IS_BETTER = {"hd/defect", "hd95/defect", "hd95/defect-present", "mse", "mae"}
DEFECT_PRESENT = ("dice/defect", "hd95/defect")
VARIANTS = ("linear", "channel", "dynamic", "content")
SWEPT = ("linear", "dynamic", "content")
NFES = (1, 2, 3, 5, 10, 20)
# the sampler's stochasticity (docs/cdtsde.md, section 5): 1 is the paper's SDE solver and the setting of every table;
# 0, the deterministic update, is swept too, since with gamma 1 quality can fall as steps are added
GAMMAS = (1.0, 0.0)


def run_config(task: str, scale: str, variant: str, seed: int = 0, data: dict | None = None) -> dict:
    """The run of one field variant on `task` at `scale` (`data`: another spec for the task's data)."""
    preset = SCALES[scale]
    data = dict(TASKS[task] if data is None else data)
    data["tile" if data["kind"] == "scene-tiles" else "size"] = preset["size"]
    if data["kind"] == "scene-tiles":
        data["stride"] = preset["size"]
    return {"data": data, "model": {"field": {"variant": variant}, "unet": preset["unet"]},
            "train": {**preset["train"], "log_every": 25, "sample_every": 0, "checkpoint_every": 100, "seed": seed}}


def headline_metric(task: str, is_mask: bool) -> str:
    """The quality the NFE sweep and matched fidelity use: defect Dice for masks; for MRI the PSNR over
    the brain, since the zero background inflates whole-image PSNR."""
    if is_mask:
        return "dice/defect"
    return "psnr_fg" if task in BRAIN_TASKS else "psnr"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--max-steps", type=int, help="override the scale's training budget")
    parser.add_argument("--test-items", type=int, help="override the scale's number of test items")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/paper/<task>-<scale>[-seed<N>]")
    parser.add_argument("--train-only", action="store_true", help="train (or finish training) and stop")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (initialisation, batches, noise); the data split and the test items stay fixed")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA}")
    out = args.output or RESULTS / "paper" / (f"{args.task}-{args.scale}" + (f"-seed{args.seed}" if args.seed else ""))
    out.mkdir(parents=True, exist_ok=True)
    configs = {v: run_config(args.task, args.scale, v, args.seed) for v in args.variants}
    for config in configs.values():
        if args.max_steps:
            config["train"]["max_steps"] = args.max_steps
    test_set = None
    for variant, config in configs.items():
        model, train_set, _, train_config = build_run(config)
        run_dir = out / "runs" / variant
        resume = (run_dir / "state.pt").is_file()
        train(model, train_set, train_config, run_dir, resume=resume, run_config=config)
        train_pairs = len(train_set)
        if test_set is None:
            from cdtsde.data import build_dataset

            test_set = build_dataset(config["data"], "test")
    if args.train_only:
        return
    test_set = test_items(test_set, args.test_items or SCALES[args.scale]["test_items"])
    models = {v: load_pretrained(out / "runs" / v) for v in args.variants}
    training = {v: {"pairs": train_pairs, **training_record(out / "runs" / v)} for v in args.variants}
    is_mask = next(iter(models.values())).data.target_kind == "mask"
    options = ({"classes": PV_EL_CLASSES, "foreground": PV_EL_DEFECT} if is_mask
               else {"nonzero_foreground": args.task in BRAIN_TASKS})
    key = headline_metric(args.task, is_mask)

    has_defect = defect_presence(test_set) if is_mask else {}

    def score(model, steps, gamma=1.0, **sampler_options):
        rows, _ = evaluate_model(model, test_set, steps=steps, gamma=gamma, seed=0, **options, **sampler_options)
        summary = add_defect_present(rows, has_defect)
        # the process's peak so far: it only grows, so read it as an upper bound per row
        summary["peak_rss_mb"] = {"mean": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "std": 0.0, "n": 1}
        return rows, summary

    scored = {v: score(m, 5) for v, m in models.items()}
    if "dynamic" in models:
        scored[COLLAPSED] = score(models["dynamic"], 5, collapse_field=True)
    table = {name: summary for name, (_, summary) in scored.items()}
    paired = {}
    if "linear" in scored:
        compared = {k: k not in LOWER_IS_BETTER for k in paired_metrics(args.task, is_mask)}
        paired = {name: {k: paired_comparison(rows, scored["linear"][0], k, higher_is_better=higher)
                         for k, higher in compared.items()}
                  for name, (rows, _) in scored.items() if name != "linear"}
    sweep = {gamma: {v: {n: score(models[v], n, gamma)[1][key]["mean"] for n in NFES} for v in SWEPT if v in models}
             for gamma in GAMMAS}
    matched = {gamma: matched_fidelity(by_variant, table) for gamma, by_variant in sweep.items() if "linear" in by_variant}
    fields = field_statistics_over_t(models, test_set)
    figures(out, models, test_set, sweep, key, fields)
    write_report(out, args, configs, training, table, paired, sweep, matched, fields, key, is_mask)


def defect_presence(test_set) -> dict[str, bool]:
    """Whether each test item's target has a defect. Defects are rare and an empty prediction of an empty
    target scores Dice 1 (cdtsde.metrics.masks), so masks are also scored over the items that have one."""
    return {item["name"]: bool(np.isin(decode_classes(item["target"]), PV_EL_DEFECT).any()) for item in test_set}


def add_defect_present(rows: list[dict], has_defect: dict[str, bool]) -> dict:
    """Add the "<metric>-present" scores (NaN on items without a defect) to `rows`; returns their summary."""
    for row in rows:
        for metric in DEFECT_PRESENT if has_defect else ():
            row[f"{metric}-present"] = row[metric] if has_defect[row["name"]] else math.nan
    return summarise([{k: v for k, v in row.items() if k != "name"} for row in rows])


def matched_fidelity(sweep: dict[str, dict[int, float]], table: dict) -> dict[str, dict]:
    """The fewest steps at which each variant reaches linear's quality at 10 steps, and the seconds per
    image that costs (scaled from the 5-step timing: the network dominates every step)."""
    goal = sweep["linear"][10]
    matched = {}
    for variant, by_nfe in sweep.items():
        reached = next((n for n in NFES if by_nfe[n] >= goal), None)
        matched[variant] = {"goal": goal, "steps": reached,
                            "seconds_per_image": table[variant]["seconds_per_image"]["mean"] / 5 * reached if reached else None}
    return matched


def training_record(run_dir: Path) -> dict:
    """Steps, final logged loss and wall time of a finished run, from its metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    return {"steps": int(last["step"]), "loss": float(last["loss"]), "seconds": float(last["seconds"])}


def paired_metrics(task: str, is_mask: bool) -> list[str]:
    if is_mask:
        return ["dice/defect", "dice/defect-present", "hd95/defect-present", "skeleton_f1/defect"]
    return ["psnr", "ssim"] + (["psnr_fg", "ssim_fg"] if task in BRAIN_TASKS else [])


@torch.no_grad()
def field_statistics_over_t(models, test_set, points: int = 9, items: int = 16) -> dict[str, list[dict]]:
    """Lambda against eta_t for each model over t in [0, t1): the mean over pixels and items, the mean
    spatial spread (std over pixels within an image), and the extremes, on the first test sources."""
    sources = torch.stack([test_set[i]["source"] for i in range(min(items, len(test_set)))])
    statistics = {}
    for variant, model in models.items():
        t1 = model.schedule.t1
        anchor = model.in_target_space(sources.to(next(model.parameters()).device))  # the model's device (GPU runs)
        rows = []
        for t in torch.linspace(0, t1 - 1, points).round().long().tolist():
            mixing = model.field(t, anchor)
            eta = float(model.schedule.eta_at(t, mixing).flatten()[0])
            rows.append({"t": t, "t_over_t1": t / t1, "eta": eta, "mean": float(mixing.mean()),
                         "spatial_std": float(mixing.flatten(2).std(dim=2).mean()),
                         "min": float(mixing.min()), "max": float(mixing.max())})
        statistics[variant] = rows
    return statistics


def figures(out: Path, models, test_set, sweep, key, fields) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cdtsde.visualize import save_translation_grid

    figure, axes = plt.subplots(1, len(sweep), figsize=(4.5 * len(sweep), 3.5), sharey=True, squeeze=False)
    for axis, (gamma, by_variant) in zip(axes[0], sweep.items()):
        for variant, by_nfe in by_variant.items():
            axis.plot(list(by_nfe), list(by_nfe.values()), marker="o", label=variant)
        axis.set_xscale("log")
        axis.set_xlabel("network evaluations (NFE)")
        axis.set_title(f"gamma {gamma:g}" + (" (stochastic, the paper's)" if gamma == 1 else " (deterministic)"))
    axes[0][0].set_ylabel(key)
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(out / "quality_vs_nfe.png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(fields), figsize=(3 * len(fields), 3), sharey=True, squeeze=False)
    for axis, (variant, rows) in zip(axes[0], fields.items()):
        x = [row["t_over_t1"] for row in rows]
        mean = torch.tensor([row["mean"] for row in rows])
        spread = torch.tensor([row["spatial_std"] for row in rows])
        axis.plot(x, [row["eta"] for row in rows], "k--", label="eta_t")
        axis.plot(x, mean, label="mean Lambda")
        axis.fill_between(x, mean - spread, mean + spread, alpha=0.3, label="± spatial std")
        axis.plot(x, [row["min"] for row in rows], ":", color="grey", label="min / max")
        axis.plot(x, [row["max"] for row in rows], ":", color="grey")
        squash_eps = getattr(models[variant].field, "squash_eps", None)
        if squash_eps is not None:  # the band Eq. 2 lets the dynamic and content fields occupy
            eta = torch.tensor([row["eta"] for row in rows], dtype=torch.float64)
            lower, upper = field_envelopes(eta, squash_eps)
            axis.fill_between(x, lower, upper, color="grey", alpha=0.12, label="Eq. 2 band")
        axis.set_title(variant)
        axis.set_xlabel("t / t1")
    axes[0][0].set_ylabel("mixing field")
    legend = {label: handle for axis in axes[0] for handle, label in zip(*axis.get_legend_handles_labels())}
    axes[0][0].legend(legend.values(), legend.keys(), fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "field_vs_eta.png", dpi=120)
    plt.close(figure)

    items = [test_set[i] for i in range(min(4, len(test_set)))]
    sources = torch.stack([item["source"] for item in items])
    targets = torch.stack([item["target"] for item in items])
    for variant, model in models.items():
        t1 = model.schedule.t1
        maps = model.field_maps(sources, (t1 // 8, t1 // 4, t1 // 2, 3 * t1 // 4))
        with torch.no_grad():
            result = model.translate(sources, steps=5, generator=torch.Generator().manual_seed(0))
        save_translation_grid(out / f"fields_{variant}.png", sources, result.images, targets, maps,
                              target_kind=model.data.target_kind)


def write_report(out, args, configs, training, table, paired, sweep, matched, fields, key, is_mask) -> None:
    metrics = ([f"{m}/defect" for m in ("dice", "iou", "precision", "recall", "hd", "hd95", "skeleton_f1")]
               + [f"{m}-present" for m in DEFECT_PRESENT]
               if is_mask else ["ssim", "psnr", "mse", "mae", "ssim_fg", "psnr_fg"])
    metrics = [m for m in metrics if m in next(iter(table.values()))] + ["seconds_per_image", "peak_rss_mb"]
    first = next(iter(configs.values()))
    lines = [f"# {args.task}, scale {args.scale}", "",
             f"Test split ({next(iter(table.values()))['seconds_per_image']['n']} items), 5 steps, gamma 1, "
             f"training seed {args.seed}; "
             f"identical network, budget and seed for every field. Every setting was fixed before any test "
             f"result was seen; nothing was tuned, so no validation subset was used.", "",
             f"Data: `{json.dumps(first['data'])}`.", "",
             f"Training: `{json.dumps(first['train'])}`; "
             + ", ".join(f"{v} {r['seconds'] / 60:.1f} min (final loss {r['loss']:.4f})" for v, r in training.items())
             + f"; {next(iter(training.values()))['pairs']} training pairs.", "",
             format_table(table, metrics, label="field"), ""]
    if paired:
        lines += ["Paired against linear on the same test items (difference = field - linear; 95% BCa bootstrap "
                  "interval; Wilcoxon signed-rank p; items from one subject or scene are correlated, so both "
                  "are optimistic):", "",
                  "| field | metric | mean difference [95% CI] | p | better on | n |", "|---|---|---|---|---|---|"]
        for name, by_metric in paired.items():
            for metric, c in by_metric.items():
                lines.append(f"| {name} | {metric} | {c['mean_difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] "
                             f"| {c['wilcoxon_p']:.3g} | {c['better_share']:.0%} | {c['n']} |")
        lines.append("")
    lines += [f"Quality ({key}) against NFE:", "",
              "| gamma | field | " + " | ".join(str(n) for n in NFES) + " |", "|---" * (len(NFES) + 2) + "|"]
    lines += [f"| {gamma:g} | {v} | " + " | ".join(f"{by[n]:.4f}" for n in NFES) + " |"
              for gamma, by_variant in sweep.items() for v, by in by_variant.items()]
    for gamma, by_variant in matched.items():
        lines += ["", f"Steps to reach linear's {key} at 10 steps with gamma {gamma:g} "
                      f"({next(iter(by_variant.values()))['goal']:.4f}):", ""]
        lines += [f"- {v}: " + (f"{m['steps']} step{'s' if m['steps'] > 1 else ''}" if m["steps"] else "not reached within 20 steps")
                  + (f", {m['seconds_per_image']:.4f} s per image" if m["seconds_per_image"] else "") for v, m in by_variant.items()]
    lines += ["", "Learned field against eta_t (mean over pixels of 16 test sources; spatial std within an image):", "",
              "| field | " + " | ".join(f"t/t1={row['t_over_t1']:.2f}" for row in next(iter(fields.values()))) + " |",
              "|---" * (len(next(iter(fields.values()))) + 1) + "|"]
    lines.append("| eta_t | " + " | ".join(f"{row['eta']:.3f}" for row in next(iter(fields.values()))) + " |")
    lines += [f"| {v} | " + " | ".join(f"{row['mean']:.3f} ± {row['spatial_std']:.3f}" for row in rows) + " |"
              for v, rows in fields.items()]
    if is_mask:
        lines += ["", "Per class (dynamic, 5 steps):", "", format_mask_table({k: v for k, v in table.get("dynamic", {}).items() if "/" in k})]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"machine": machine(), "task": args.task, "scale": args.scale,
                                                  "configs": configs, "training": training, "table": table,
                                                  "paired_against_linear": paired, "nfe_sweep": sweep,
                                                  "matched": matched, "fields": fields}, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
