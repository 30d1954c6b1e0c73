"""The zero-shot and unpaired methods (issue 14) on BraTS T2 -> T1 or FLAIR -> T1, the seed paper's (002)
protocol on our data, beside a paired CDTSDE model trained on the same subjects as the upper reference.

    python -m benchmarks.zero_shot --task brats-t2t1|brats-flairt1 --scale cpu|cpu-long|128
        [--methods sdedit lmi cyclegan prior inversion]

Zero-shot methods (prior, sdedit, lmi, inversion) train on the T1 slices of the training subjects alone;
CycleGAN trains on T2 slices of one half of the training subjects and T1 slices of the other half (never
a slice and its partner); the paired reference (CDTSDE, linear field) on the aligned pairs. Every model
has the same budget of images seen (steps x batch). Scores on the test subjects: K-Means Dice with 3 and 5
intensity clusters fit on T1 training slices only, brain PSNR / SSIM, seconds per image; paired
comparisons against SDEdit. Writes benchmarks/results/zero-shot/<task>-<scale>/ (results.md,
results.json, translations.png). Runs resume after a kill, evaluations are kept beside each run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.baselines import grid
from benchmarks.common import RESULTS, paired_rows, test_items, write_report
from benchmarks.paper import SCALES, run_config
from cdtsde.data import build_dataset
from cdtsde.evaluation import evaluate_model
from cdtsde.intensity import model_to_unit
from cdtsde.metrics import format_table, paired_comparison, summarise
from cdtsde.metrics.segmentation import IntensityKMeans
from cdtsde.run import build_run
from cdtsde.training import load_pretrained, train

TASKS = ("brats-t2t1", "brats-flairt1")
SMALL_GAN_SCALES = ("quick", "cpu", "cpu-long")
METHODS = ("sdedit", "lmi", "cyclegan", "inversion", "prior")
REFERENCE = "sdedit"
UPPER = "cdtsde-linear (paired)"
KMEANS = (3, 5)
# the seed paper's Table 1 (IXI PD -> T1; their data and training): quoted, not comparable in absolute terms
SEED_TABLE1 = {"CycleGAN": (.85, 18.88, .27), "StyleGAN (inversion)": (.66, 10.15, .06),
               "SDEdit": (.82, 15.96, .50), "LMI-guided diffusion": (.88, 20.22, .69)}


def training_subjects(data: dict) -> list[str]:
    return build_dataset(data, "train").subjects


def method_config(task: str, name: str, scale: str, seed: int, data: dict | None = None) -> dict:
    """Each method's run configuration at the scale's budget of images seen."""
    base = run_config(task, scale, "linear", seed, data)
    if name == UPPER:
        return base
    budget = base["train"]["max_steps"] * base["train"]["batch_size"]
    config = {"method": name, "data": base["data"], "train": dict(base["train"])}
    if name == "cyclegan":  # batch 1 (its reference), as many images as the others; unaligned halves
        subjects = training_subjects(base["data"])
        half = len(subjects) // 2
        side = {k: v for k, v in base["data"].items() if k not in ("val_subjects", "test_subjects", "seed")}
        config["data"] = {"kind": "unpaired",
                          "source": {**side, "subjects": subjects[:half], "val_subjects": 0, "test_subjects": 0},
                          "target": {**side, "subjects": subjects[half:], "val_subjects": 0, "test_subjects": 0}}
        # the CPU presets' networks (16 filters); the reference 64 at 128 px and above; its own optimiser
        config["model"] = {"generator_filters": 16, "discriminator_filters": 16} if scale in SMALL_GAN_SCALES else {}
        config["train"] = {key: value for key, value in config["train"].items()
                           if key not in ("lr", "warmup_steps", "ema_decay", "batch_size")}
        config["train"].update(max_steps=budget, decay_steps=budget // 2, checkpoint_every=budget // 2)
    elif name == "inversion":  # its own networks and optimiser settings
        config["train"] = {key: value for key, value in config["train"].items()
                           if key not in ("lr", "warmup_steps", "ema_decay")}
    else:  # the DDPM prior and the methods built on it: the benchmark's UNet
        config["model"] = {"unet": base["model"]["unet"]}
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default=TASKS[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS[:4]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, help="override every training budget (smoke runs)")
    parser.add_argument("--test-items", type=int, help="override the scale's number of test items")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    out = args.output or RESULTS / "zero-shot" / (f"{args.task}-{args.scale}" + (f"-seed{args.seed}" if args.seed else ""))
    out.mkdir(parents=True, exist_ok=True)
    names = [UPPER, *args.methods]
    configs = {name: method_config(args.task, name, args.scale, args.seed) for name in names}
    for name, config in configs.items():
        if args.max_steps:
            config["train"]["max_steps"] = args.max_steps
        method, train_set, _, train_config = build_run(config)
        run_dir = out / "runs" / name.split()[0]
        train(method, train_set, train_config, run_dir, resume=(run_dir / "state.pt").is_file(), run_config=config)
    data = configs[UPPER]["data"]
    test_set = build_dataset(data, "test")
    test_set = test_items(test_set, args.test_items or SCALES[args.scale]["test_items"])
    train_targets = build_dataset(data, "train")
    fit_on = [model_to_unit(train_targets[i]["target"]).permute(1, 2, 0).numpy()
              for i in range(0, len(train_targets), max(1, len(train_targets) // 256))]
    kmeans = [IntensityKMeans(k).fit(fit_on) for k in KMEANS]
    models = {name: load_pretrained(out / "runs" / name.split()[0]) for name in names}
    rows, table = {}, {}
    for name, model in models.items():
        saved = out / "runs" / name.split()[0] / f"test-rows-{len(test_set)}items.json"
        if saved.is_file():
            rows[name] = json.loads(saved.read_text())
        else:
            rows[name], _ = evaluate_model(model, test_set, seed=0, nonzero_foreground=True, kmeans=kmeans)
            saved.write_text(json.dumps(rows[name]))
        table[name] = summarise([{k: v for k, v in row.items() if k != "name"} for row in rows[name]])
    grid(out / "translations.png", models, test_set, False, steps=None)  # what the table scores
    metrics = ["kmeans3/dice/mean", "kmeans5/dice/mean", "psnr_fg", "ssim_fg"]
    paired = {name: {m: paired_comparison(rows[name], rows[REFERENCE], m) for m in metrics}
              for name in names if name != REFERENCE and REFERENCE in rows}
    lines = [f"# Zero-shot and unpaired translation on {args.task}, scale {args.scale}, training seed {args.seed}", "",
             f"Test items: {len(test_set)} slices of the held-out subjects; K-Means fit on {len(fit_on)} T1 training "
             f"slices. Budgets: " + "; ".join(f"{n}: {c['train']['max_steps']} x {c['train'].get('batch_size', 1)}"
                                              for n, c in configs.items()) + ". Every setting fixed before any "
             "test result was seen.", "",
             format_table(table, [*metrics, "seconds_per_image"], label="method"), "",
             f"Paired against {REFERENCE} (95% BCa interval over test items):", "", *paired_rows(paired)]
    lines += ["", "The seed paper's Table 1 (IXI PD -> T1, their data and training; quoted, not comparable in "
              "absolute terms):", "", "| method (seed paper) | Dice | PSNR | SSIM |", "|---|---|---|---|"]
    lines += [f"| {name} | {d:g} | {p:g} | {s:g} |" for name, (d, p, s) in SEED_TABLE1.items()]
    write_report(out, lines, {"task": args.task, "scale": args.scale, "seed": args.seed, "configs": configs,
                              "table": table, "paired": paired})


if __name__ == "__main__":
    main()
