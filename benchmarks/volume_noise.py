"""Which noise should the slices of a translated volume draw? The volume-noise options of the diffusion
methods compared on whole BraTS T1 -> T2 volumes, at one training budget.

    OMP_NUM_THREADS=1 python -m benchmarks.volume_noise [--methods cdtsde-linear bbdm] [--steps 600]
        [--size 48] [--sampling-steps 10] [--noise independent shared correlated] [--correlation 0.9]
        [--context 0 ...] [--out DIR] [--smoke]

Each method (`cdtsde-linear`: CDTSDE with DoSSR's linear mixing field; any registered method by its name)
is trained for `--steps` steps of batch `--batch` on the axial slices of the training subjects of
../shared/data/brats-mri (12 subjects: 2 validation, 4 test, 6 training, split by subject with seed 0;
slices resized to `--size` px, the smallest UNet; Pix2Pix the suite's CPU-scale networks). Every validation and test volume is then translated
whole through `cdtsde.translate.translate_file` (155 axial slices, resized back to 240 px, written with
its affine and read back) once per volume-noise option (`cdtsde.translate.VolumeNoise`: independent,
shared, correlated with `--correlation`), with the method's sampler at `--sampling-steps` steps and one
seed, and scored against the target T2 volume (normalised as training reads it) inside the brain (its
nonzero voxels) by `cdtsde.metrics.volume.volume_metrics`: 3-D PSNR and SSIM, PSNR and SSIM per
anatomical plane, and the slice-flicker ratio along the axial slices (1: the target's own slice-to-slice
change; above 1: flicker). Intervals are 95% BCa bootstraps over subjects (each subject one unit, its
volume one row), and each option's paired difference to `independent` over the same subjects.

The default option is chosen on the validation volumes alone, by their 3-D SSIM inside the brain (BraSyn's
headline); the test volumes only report. `--context K ...` adds models trained with K neighbouring
slices on each side as extra source channels (`data.context_slices`; 0: single slices) as one more axis
of the comparison: each such model's paired difference to the same method on single slices, per noise
option (`--noise`, default all three), over the test subjects (`vs_context_0`). Each finished model's
scores are kept in <out>/volume_noise-parts/, so a killed run goes on from the next model; with several
contexts, volume_context.png draws those gains against k. `--smoke` runs the whole pipeline in seconds on small volumes (`--data`: a folder of at
least 3 subjects in BraTS's layout; 2 training steps, 8 px, 2 sampling steps, one validation and one test
subject, independent and shared) for the tests. Writes benchmarks/results/volume_noise.json (the configuration, the
machine, per-subject rows, summaries) and volume_noise.png (the three cuts of one test subject's
translation with each option, the flicker showing in the sagittal and coronal cuts).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, write_results
from benchmarks.suite.presets import SMALL_GAN, has_unet
from cdtsde.data.config import build_dataset
from cdtsde.imagefiles import read_image
from cdtsde.intensity import normalise_volume
from cdtsde.methods import method_class
from cdtsde.metrics.summary import mean_interval, paired_comparison
from cdtsde.metrics.volume import axis_codes, volume_metrics
from cdtsde.networks.conditional_unet import TINY_UNET
from cdtsde.run import build_run
from cdtsde.training import train
from cdtsde.translate import VOLUME_NOISES, VolumeNoise, translate_file

BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-mri"
SLICE_AXIS = 2  # BraTS volumes are cut into axial slices along their third array axis
# the scores reported, the first the one the default is chosen by; flicker: closer to 1 is better
METRICS = ("ssim3d_fg", "psnr3d_fg", "psnr_axial_fg", "psnr_coronal_fg", "psnr_sagittal_fg", "ssim_axial_fg",
           "ssim_coronal_fg", "ssim_sagittal_fg", "flicker_fg")
VARIANTS = {"cdtsde-linear": ("cdtsde", {"field": {"variant": "linear"}})}


def run_config(name: str, context: int, args) -> dict:
    """The training run of method `name` (a registry name or a VARIANTS name) with `context` slices."""
    method, options = VARIANTS.get(name, (name, {}))
    data = {"kind": "brats", "root": str(args.data), "source": "t1", "target": "t2", "size": args.size,
            "min_foreground": 0.1, "val_subjects": 1 if args.smoke else 2, "test_subjects": 1 if args.smoke else 4,
            "seed": 0,
            **({"context_slices": context} if context else {})}
    # the diffusion methods' smallest UNet; a method with other networks (Pix2Pix) its suite CPU-scale ones, its
    # U-Net 4 halvings deep (48 px is no power of two: 48 -> 3 px at the bottleneck)
    networks = {"unet": TINY_UNET} if has_unet(method_class(method)) else {**SMALL_GAN, "depth": 4}
    return {"method": method, "data": data, "model": {**options, **networks},
            "sampling": {"steps": args.sampling_steps} if method_class(method).is_diffusion_sampler() else {},
            "train": {"max_steps": args.steps, "batch_size": args.batch, "sample_every": 0,
                      "checkpoint_every": args.steps, "seed": 0}}


def noise_options(args) -> dict[str, VolumeNoise]:
    kinds = ("independent", "shared") if args.smoke else args.noise
    return {kind if kind != "correlated" else f"correlated {args.correlation:g}": VolumeNoise(kind, args.correlation)
            for kind in kinds}


def translated_volumes(method, pairs, noises: dict[str, VolumeNoise], work: Path, seed: int):
    """For each (source path, target path, subject) and option: the translated volume, with the target."""
    for source_path, target_path, subject in pairs:
        array, meta = read_image(target_path)
        target = normalise_volume(array, method.data.nifti_percentile).astype(np.float64)
        translations = {}
        for label, noise in noises.items():
            folder = work / f"{subject}-{label.replace(' ', '-')}"
            written, _ = translate_file(method, Path(source_path), folder, noise=noise, seed=seed)
            translations[label] = read_image(written[0])[0].astype(np.float64)
        yield subject, target, axis_codes(meta.affine), translations


def paired(rows: list[dict], reference: list[dict]) -> dict:
    """Each metric's paired difference of `rows` to `reference` over the same subjects (better_share: of the
    subjects; flicker compared by its distance to 1)."""
    def distance(found):
        return [{**row, "flicker_fg": abs(row["flicker_fg"] - 1)} for row in found]

    return {key: paired_comparison(*(distance(found) if key == "flicker_fg" else found for found in (rows, reference)),
                                   key, higher_is_better=key != "flicker_fg") for key in METRICS}


def summary(rows: dict[str, list[dict]]) -> dict:
    """Per option: each metric's mean with its interval over subjects, and its paired difference to
    independent where that ran."""
    result = {}
    for label, option_rows in rows.items():
        result[label] = {"mean": {key: mean_interval(option_rows, key) for key in METRICS}}
        if label != "independent" and "independent" in rows:
            result[label]["vs_independent"] = paired(option_rows, rows["independent"])
    return result


def against_single_slices(results: dict, methods: list[str], contexts: list[int]) -> None:
    """Each model trained with context: its paired difference to the same method on single slices (context
    0), per noise option both ran, on the test subjects, in its entry's `vs_context_0`."""
    for name in methods:
        if name not in results:
            continue
        for context in contexts:
            entry = results.get(f"{name} context {context}")
            if context == 0 or entry is None:
                continue
            single = results[name]["test"]["rows"]
            entry["vs_context_0"] = {option: paired(rows, single[option])
                                     for option, rows in entry["test"]["rows"].items() if option in single}


def plot_context(results: dict, methods: list[str], contexts: list[int], path: Path) -> None:
    """volume_context.png: per method and noise option, the test volumes' 3-D SSIM and 3-D PSNR in the brain
    as paired differences to the same method on single slices (`vs_context_0`), with their 95% intervals
    over subjects, against the context k (0 at k = 0 by definition)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, metric, title in zip(axes, ("ssim3d_fg", "psnr3d_fg"), ("3-D SSIM in the brain", "3-D PSNR in the brain, dB")):
        axis.axhline(0, color="grey", linewidth=0.8)
        for name in methods:
            options = results.get(name, {}).get("test", {}).get("rows", {})
            for option in options:
                points = [(0, 0.0, 0.0, 0.0)]
                for k in contexts:
                    compared = results.get(f"{name} context {k}", {}).get("vs_context_0", {}).get(option)
                    if k and compared:
                        found = compared[metric]
                        points.append((k, found["mean_difference"], found["ci_low"], found["ci_high"]))
                ks, means, lows, highs = (np.array(column) for column in zip(*points))
                axis.errorbar(ks, means, yerr=[means - lows, highs - means], marker="o", capsize=3,
                              label=name if len(options) == 1 else f"{name}, {option}")
        axis.set_xticks(contexts)
        axis.set_xlabel("neighbouring slices on each side (data.context_slices)")
        axis.set_title(f"{title}: gain over single slices", fontsize=10)
    axes[0].legend(fontsize=8)
    figure.suptitle("BraTS T1 -> T2 test volumes (paired over subjects, 95% intervals)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["cdtsde-linear", "bbdm"])
    parser.add_argument("--context", nargs="+", type=int, default=[0],
                        help="neighbouring slices on each side as extra source channels (data.context_slices)")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="training size of the slices, px")
    parser.add_argument("--sampling-steps", type=int, default=10)
    parser.add_argument("--noise", nargs="+", choices=VOLUME_NOISES, default=list(VOLUME_NOISES),
                        help="the volume-noise options each model translates with")
    parser.add_argument("--correlation", type=float, default=0.9, help="adjacent-slice correlation of 'correlated'")
    parser.add_argument("--seed", type=int, default=0, help="the translations' seed")
    parser.add_argument("--data", type=Path, default=BRATS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON and PNG results")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: the pipeline, not a measurement")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.batch, args.size, args.sampling_steps = 2, 2, 8, 2
    noises = noise_options(args)
    results, figure_rows = {}, []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for context in args.context:
            for name in args.methods:
                label = name if context == 0 else f"{name} context {context}"
                config = run_config(name, context, args)
                part = args.out / "volume_noise-parts" / f"{label.replace(' ', '-')}.json"
                if part.is_file():  # a finished model of an interrupted run, with the same settings and options
                    entry = json.loads(part.read_text())
                    if entry["config"] == config and list(entry["test"]["rows"]) == list(noises):
                        print(f"{label}: finished in {part}", flush=True)
                        results[label] = entry
                        continue
                began = time.perf_counter()
                method, train_set, _, train_config = build_run(config)
                train(method, train_set, train_config, work / f"run-{label.replace(' ', '-')}", progress=False,
                      overwrite=True)
                method.eval()
                trained = time.perf_counter() - began
                entry = {"config": config, "train_seconds": trained}
                for split in ("val", "test"):
                    pairs = build_dataset(config["data"], split).paths
                    rows: dict[str, list[dict]] = {option: [] for option in noises}
                    began = time.perf_counter()
                    for subject, target, codes, translations in translated_volumes(method, pairs, noises, work,
                                                                                   args.seed):
                        brain = target > 0
                        for option, volume in translations.items():
                            scores = volume_metrics(volume, target, brain, codes, SLICE_AXIS)
                            rows[option].append({"name": subject, **{key: scores[key] for key in METRICS}})
                            print(f"{label} {split} {subject} {option:16s} "
                                  + "  ".join(f"{key} {scores[key]:.4f}" for key in METRICS[:3] + METRICS[-1:]),
                                  flush=True)
                        if split == "test" and not figure_rows:
                            figure_rows = [(label, subject, target, brain, codes, translations)]
                    entry[split] = {"seconds": time.perf_counter() - began, "rows": rows, "summary": summary(rows)}
                val = entry["val"]["summary"]
                entry["default_by_val"] = max(val, key=lambda option: val[option]["mean"][METRICS[0]]["mean"])
                results[label] = entry
                part.parent.mkdir(parents=True, exist_ok=True)
                part.write_text(json.dumps(entry))
    against_single_slices(results, args.methods, args.context)
    args.out.mkdir(parents=True, exist_ok=True)
    if figure_rows:
        from cdtsde.visualize import VolumeRow, save_volume_cuts

        label, subject, target, brain, codes, translations = figure_rows[0]
        save_volume_cuts(args.out / "volume_noise.png",
                         [VolumeRow(f"{label} {subject} {option}", {"translation": volume, "target": target}, brain,
                                    codes) for option, volume in translations.items()])
    if len(args.context) > 1:
        plot_context(results, args.methods, args.context, args.out / "volume_context.png")
    write_results("volume_noise", {"data": "brats-mri T1 -> T2, whole volumes", "slice_axis": SLICE_AXIS,
                                   "options": {label: {"kind": noise.kind, "correlation": noise.correlation}
                                               for label, noise in noises.items()},
                                   "arguments": {key: str(value) if isinstance(value, Path) else value
                                                 for key, value in vars(args).items()},
                                   "chosen_by": f"validation {METRICS[0]}", "methods": results}, args.out)


if __name__ == "__main__":
    main()
