"""Does the slice-flicker ratio tell flickering translations from smooth ones on real volumes?

    python -m benchmarks.volume_flicker [--subjects 2] [--rms 0.05] [--figure cuts.png]

Targets: real BraTS T2 volumes (../shared/data/brats-mri, normalised as training reads them). Two fake
"translations" of each: the target plus noise of one RMS inside the brain (the nonzero voxels), either
drawn independently for every axial slice (white noise smoothed in-plane with sigma 2 voxels: what a
per-slice sampler adds) or smooth in 3-D (the same white noise smoothed with sigma 2 along all three
axes). PSNR sees two equal errors; the flicker ratio along the axial slices (array axis 2) should not.
Writes benchmarks/results/volume_flicker.json and, with --figure, the cuts of the first subject.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.common import write_results
from cdtsde.imagefiles import read_image
from cdtsde.intensity import normalise_volume
from cdtsde.metrics.volume import axis_codes, volume_metrics

BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-mri"
SLICE_AXIS, SIGMA = 2, 2.0
SHOWN = ("psnr3d_fg", "ssim3d_fg", "psnr_axial_fg", "psnr_sagittal_fg", "ssim_sagittal_fg", "flicker_fg")


def noises(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Unit-RMS noise fields: independent per axial slice, and smooth in 3-D."""
    white = rng.standard_normal(shape)
    fields = {"per-slice": ndimage.gaussian_filter(white, (SIGMA, SIGMA, 0)),
              "smooth 3-D": ndimage.gaussian_filter(white, SIGMA)}
    return {name: field / field.std() for name, field in fields.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--rms", type=float, default=0.05, help="noise RMS in the [0, 1] range")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results, figure_rows = {}, []
    for folder in sorted(BRATS.iterdir())[: args.subjects]:
        array, meta = read_image(folder / f"{folder.name}_t2.nii.gz")
        target = normalise_volume(array).astype(np.float64)
        brain, codes = target > 0, axis_codes(meta.affine)
        translations = {name: np.clip(target + args.rms * field, 0, 1) * brain
                        for name, field in noises(target.shape, rng).items()}
        results[folder.name] = {name: {key: volume_metrics(volume, target, brain, codes, SLICE_AXIS)[key]
                                       for key in SHOWN} for name, volume in translations.items()}
        for name, scores in results[folder.name].items():
            print(f"{folder.name} {name:10s} " + "  ".join(f"{key} {value:.4f}" for key, value in scores.items()))
        if args.figure and not figure_rows:
            from cdtsde.visualize import VolumeRow, save_volume_cuts

            figure_rows = [VolumeRow(f"{folder.name} {name}", {"translation": volume, "target": target}, brain, codes)
                           for name, volume in translations.items()]
            save_volume_cuts(args.figure, figure_rows)
    write_results("volume_flicker", {"data": "brats-mri T2", "rms": args.rms, "sigma": SIGMA,
                                     "slice_axis": SLICE_AXIS, "subjects": results})


if __name__ == "__main__":
    main()
