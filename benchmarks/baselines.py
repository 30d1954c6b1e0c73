"""The paired baselines (issue 13) on one real task, beside CDTSDE's linear field (DoSSR), at the paper
benchmark's budget and test items.

    python -m benchmarks.baselines --task brats-t1t2 --scale cpu [--methods bbdm dbim pix2pix identity]

Every method trains with the data, training budget (steps, batch, lr, seed) and, for the diffusion methods,
the UNet of `benchmarks.paper` at that scale; Pix2Pix uses its own networks and its reference optimiser
(Adam, betas 0.5/0.999, no EMA) at the same steps and batch. Each is scored on the same test items at its
reference NFE and at 5 NFE (Pix2Pix and identity: one evaluation), with brain-restricted metrics for MRI
and defect scores for EL masks, and paired against linear (from `benchmarks.paper`'s run of that task and
seed, trained here if missing). Writes benchmarks/results/baselines/<task>-<scale>[-seed<N>]/ (results.md,
results.json with the configuration and the machine, translations.png: four test items by every method).
Runs resume after a kill; each method's test rows are kept beside its run, so adding a method re-scores
only that one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import RESULTS, paired_rows, test_items, write_report
from benchmarks.paper import (
    BRAIN_TASKS,
    LOWER_IS_BETTER,
    SCALES,
    TASKS,
    add_defect_present,
    defect_presence,
    headline_metric,
    paired_metrics,
    run_config,
)
from cdtsde.data import build_dataset
from cdtsde.data.masks import PV_EL_CLASSES, PV_EL_DEFECT
from cdtsde.evaluation import evaluate_model
from cdtsde.metrics import format_table, paired_comparison
from cdtsde.run import build_run
from cdtsde.training import load_pretrained, train
from cdtsde.visualize import save_image_columns

METHODS = ("bbdm", "dbim", "pix2pix", "identity", "abridge", "bbdm-l2", "cdtsde-dynamic")
DEFAULT_METHODS = ("bbdm", "dbim", "pix2pix", "identity", "abridge", "cdtsde-dynamic")
REFERENCE = "cdtsde-linear"
DIFFUSION = ("bbdm", "dbim", "abridge")
# the most network evaluations one translation may take at a scale (BBDM's reference 200 fits the CPU scale)
NFE_CAP = {"quick": 200, "cpu": 200, "gpu": None}
# named variants: (registry method, model options over its defaults)
VARIANTS = {"bbdm-l2": ("bbdm", {"loss": "l2"})}
# the CDTSDE paper's Table 1, on its data (IXI at 256 px, Sentinel, PSCDE) with its training: quoted, not ours
PAPER_TABLE1 = {
    "sar-optical": ("Sentinel", ("ssim", "psnr"), {"pix2pix": (.23, 15.12), "abridge": (.15, 12.50),
                                                  "cdtsde-linear": (.36, 17.14), "bbdm": (.02, 6.25),
                                                  "dbim": (.14, 13.48), "cdtsde-dynamic": (.38, 17.46)}),
    "brats-t1t2": ("IXI T1->T2", ("psnr",), {"pix2pix": (22.17,), "abridge": (13.73,), "cdtsde-linear": (23.28,),
                                            "bbdm": (8.63,), "dbim": (20.43,), "cdtsde-dynamic": (23.32,)}),
    "brats-t2t1": ("IXI T2->T1", ("psnr",), {"pix2pix": (22.24,), "abridge": (13.77,), "cdtsde-linear": (24.13,),
                                            "bbdm": (8.69,), "dbim": (21.65,), "cdtsde-dynamic": (24.33,)}),
    "el-mask": ("PSCDE", ("dice",), {"pix2pix": (.178,), "abridge": (.009,), "cdtsde-linear": (.460,),
                                     "bbdm": (.024,), "dbim": (.167,), "cdtsde-dynamic": (.488,)}),
}
PAPER_NAMES = {"pix2pix": "Pix2Pix", "abridge": "ABridge", "cdtsde-linear": "DOSSR (CDTSDE linear)", "bbdm": "BBDM",
               "dbim": "DBIM", "cdtsde-dynamic": "CDTSDE (dynamic field)"}


def method_config(task: str, scale: str, name: str, seed: int, data: dict | None = None) -> dict:
    if name.startswith("cdtsde-"):
        return run_config(task, scale, name.removeprefix("cdtsde-"), seed, data)
    config = run_config(task, scale, "linear", seed, data)
    method, options = VARIANTS.get(name, (name, {}))
    config["method"] = method
    unet = config["model"]["unet"]
    config["model"] = {"unet": unet, **options} if method in DIFFUSION else dict(options)
    if method == "pix2pix":  # its own optimiser settings, the benchmark's budget and batch
        config["train"].update(lr=2e-4, warmup_steps=1, ema_decay=0.0, grad_clip=0.0)
    return config


def evaluation_steps(model, scale: str) -> list[int | None]:
    """The sampler steps a method is scored at: its reference steps, cut to the largest count within the
    scale's NFE cap (ABridge's 1000 dual steps are 1998 network evaluations), and 5; [None] for one pass."""
    if not hasattr(model.sampling, "steps"):
        return [None]
    steps, cap = model.sampling.steps, NFE_CAP.get(scale)
    while cap is not None and steps > 5 and model.network_evaluations(model.sampling_options(steps=steps)) > cap:
        steps -= 1
    return sorted({steps, 5}, reverse=True)


@torch.no_grad()
def grid(path: Path, models: dict, test_set, is_mask: bool, count: int = 4, steps: int | None = 5) -> None:
    """Four test items (evenly spread) translated by every method at `steps` (one pass where it has none;
    None: each method's default sampling, titled with its network evaluations)."""
    items = [test_set[int(i * len(test_set) / count)] for i in range(count)]
    sources, targets = (torch.stack([item[side] for item in items]) for side in ("source", "target"))
    kind = "mask" if is_mask else "image"
    columns = [("source", sources, "image")]
    for name, model in models.items():
        chosen = {"steps": steps} if steps is not None and hasattr(model.sampling, "steps") else {}
        images = model.translate(sources, generator=torch.Generator().manual_seed(0), **chosen).images
        label = f"{name} @ {model.network_evaluations(model.sampling_options(**chosen))}" if hasattr(
            model.sampling, "steps") else name
        columns.append((label, images, kind))
    save_image_columns(path, columns + [("target", targets, kind)])


def paper_table(task: str) -> list[str]:
    data, metrics, rows = PAPER_TABLE1[task]
    lines = [f"The CDTSDE paper's Table 1 on {data} (their data, 256 px, their training; quoted for reference, "
             "not comparable in absolute terms with the rows above):", "",
             "| method (paper) | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {PAPER_NAMES[name]} | " + " | ".join(f"{v:g}" for v in values) + " |" for name, values in rows.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, help="override the scale's training budget (smoke runs)")
    parser.add_argument("--test-items", type=int, help="override the scale's number of test items")
    parser.add_argument("--output", help="default: benchmarks/results/baselines/<task>-<scale>[-seed<N>]")
    args = parser.parse_args()
    out = RESULTS / "baselines" / (f"{args.task}-{args.scale}" + (f"-seed{args.seed}" if args.seed else ""))
    out = Path(args.output) if args.output else out
    out.mkdir(parents=True, exist_ok=True)
    names = [REFERENCE, *args.methods]
    configs = {name: method_config(args.task, args.scale, name, args.seed) for name in names}
    for config in configs.values():
        if args.max_steps:
            config["train"]["max_steps"] = args.max_steps
    for name, config in configs.items():
        method, train_set, _, train_config = build_run(config)
        run_dir = out / "runs" / name  # a finished run resumes at its last step: nothing is trained again
        train(method, train_set, train_config, run_dir, resume=(run_dir / "state.pt").is_file(), run_config=config)
    test_set = build_dataset(configs[REFERENCE]["data"], "test")
    test_set = test_items(test_set, args.test_items or SCALES[args.scale]["test_items"])
    models = {name: load_pretrained(out / "runs" / name) for name in names}
    is_mask = models[REFERENCE].data.target_kind == "mask"
    options = ({"classes": PV_EL_CLASSES, "foreground": PV_EL_DEFECT} if is_mask
               else {"nonzero_foreground": args.task in BRAIN_TASKS})
    has_defect = defect_presence(test_set) if is_mask else {}
    rows, table = {}, {}
    for name, model in models.items():
        # samplers at their reference steps (within the scale's NFE cap) and at 5 steps; one-pass methods once
        for steps in evaluation_steps(model, args.scale):
            nfe = model.network_evaluations(model.sampling_options(**({} if steps is None else {"steps": steps})))
            key = f"{name} @ {nfe} NFE"
            # each evaluation is kept beside its run, so adding a method later re-scores nothing else
            saved = out / "runs" / name / f"test-rows-{steps or 1}steps-{len(test_set)}items.json"
            if saved.is_file():
                rows[key] = json.loads(saved.read_text())
            else:
                rows[key], _ = evaluate_model(model, test_set, seed=0, **options,
                                              **({} if steps is None else {"steps": steps}))
                saved.write_text(json.dumps(rows[key]))
            table[key] = add_defect_present(rows[key], has_defect)
    grid(out / "translations.png", models, test_set, is_mask)
    compared = {k: k not in LOWER_IS_BETTER for k in paired_metrics(args.task, is_mask)}
    reference_key = f"{REFERENCE} @ 5 NFE"
    paired = {key: {k: paired_comparison(r, rows[reference_key], k, higher_is_better=h) for k, h in compared.items()}
              for key, r in rows.items() if key != reference_key}
    headline = headline_metric(args.task, is_mask)
    metrics = ([f"{m}/defect" for m in ("dice", "iou", "hd95", "skeleton_f1")] + ["dice/defect-present"] if is_mask
               else ["ssim", "psnr", "mse", "mae"] + (["ssim_fg", "psnr_fg"] if args.task in BRAIN_TASKS else []))
    lines = [f"# Paired baselines on {args.task}, scale {args.scale}, training seed {args.seed}", "",
             f"Test items: {len(test_set)}; every setting fixed before any test result was seen. Budget: "
             f"`{json.dumps(configs[REFERENCE]['train'])}`. Samplers run at their reference steps within "
             f"{NFE_CAP[args.scale] or 'any number of'} network evaluations (NFE), and at 5 steps; torch threads: "
             f"{torch.get_num_threads()}.", "",
             format_table(table, [*metrics, "seconds_per_image"], label="method"), "",
             f"Paired against {reference_key} on the same items ({headline} and the other headline metrics; "
             "95% BCa interval over test items, which are correlated within a subject or scene):", "",
             *paired_rows(paired)]
    lines += ["", *paper_table(args.task)] if args.task in PAPER_TABLE1 else []
    write_report(out, lines, {"task": args.task, "scale": args.scale, "seed": args.seed, "configs": configs,
                              "table": table, "paired": paired})


if __name__ == "__main__":
    main()
