"""Seams of tiled translation, measured on a real SAR -> optical scene: the error along window borders
against the error inside windows, and the jump across window borders against the image's gradient
elsewhere, for windows without overlap (no blending) and with overlap and Gaussian or linear blending.

    OMP_NUM_THREADS=1 python -m benchmarks.tiled_seams [--steps 150] [--crop 1024]

A tiny Pix2Pix (deterministic: one network pass, so any seam comes from the windows, not from noise) is
trained for a few steps on 64 px tiles of the scene pair-1 of ../shared/data/sar-optical/scenes
(`scene-tiles`, native scale) and translates a crop of the other scene, pair-2, window by window
(`cdtsde.translate.translate_tiled`). For each tiling, with e = |translation - target| averaged over the
channels:

* border error: the mean of e within 2 px of an interior window edge; inside error: the mean of e at least
  8 px from every window edge; their ratio is 1 where windows leave no mark;
* seam jump: the mean |difference between the two pixels either side of a window edge| over the image's
  interior window edges, against the same difference between neighbouring pixels everywhere else; the
  target's ratio at the same places is the reference (the scene's own gradients there).

The model is far from converged (its error is the error of a few minutes of training); what is measured
is whether the windows add to it at their borders. Writes benchmarks/results/tiled_seams.json and
benchmarks/results/tiled_seams.png (SAR source, translation without and with blending, target, a 256 px
region at full resolution).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, write_results
from cdtsde.data.base import adapt_channels
from cdtsde.imagefiles import read_image, write_image
from cdtsde.intensity import unit_to_model
from cdtsde.run import build_run
from cdtsde.tiling import TileGrid
from cdtsde.training import train
from cdtsde.translate import Tiling, source_slices, translate_tiled

SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "sar-optical" / "scenes"
WINDOW = 64
TILINGS = {"no overlap, no blending": Tiling(overlap=0.0, batch=32),
           "overlap 1/4, gaussian": Tiling(overlap=0.25, batch=32, blend="gaussian"),
           "overlap 1/4, linear": Tiling(overlap=0.25, batch=32, blend="linear"),
           "overlap 1/2, gaussian": Tiling(overlap=0.5, batch=32, blend="gaussian")}


def edges(length: int, overlap: int) -> list[int]:
    """Interior window edges along one axis: the first pixel of every window but the first and the pixel
    after every window but the last (where a window's output starts or stops)."""
    starts = [origin for origin, _ in TileGrid(length, 1, WINDOW, overlap).origins()]
    return sorted({*starts[1:], *(start + WINDOW for start in starts[:-1])})


def seam_figures(prediction: np.ndarray, target: np.ndarray, overlap: int) -> dict:
    """prediction, target: (H, W, C) in [0, 1]."""
    height, width = prediction.shape[:2]
    rows, cols = edges(height, overlap), edges(width, overlap)
    error = np.abs(prediction - target).mean(-1)
    distance_rows = np.min(np.abs(np.arange(height)[:, None] - np.array(rows)[None, :]), axis=1)
    distance_cols = np.min(np.abs(np.arange(width)[:, None] - np.array(cols)[None, :]), axis=1)
    distance = np.minimum(distance_rows[:, None], distance_cols[None, :])
    border, inside = error[distance <= 2].mean(), error[distance >= 8].mean()

    def jumps(image: np.ndarray) -> tuple[float, float]:
        across_cols = np.abs(np.diff(image, axis=1)).mean(-1)  # [:, x - 1] is between x - 1 and x
        across_rows = np.abs(np.diff(image, axis=0)).mean(-1)
        col_mask = np.zeros(width - 1, bool)
        col_mask[[c - 1 for c in cols]] = True
        row_mask = np.zeros(height - 1, bool)
        row_mask[[r - 1 for r in rows]] = True
        seam = np.concatenate([across_cols[:, col_mask].ravel(), across_rows[row_mask].ravel()]).mean()
        rest = np.concatenate([across_cols[:, ~col_mask].ravel(), across_rows[~row_mask].ravel()]).mean()
        return float(seam), float(rest)

    seam, rest = jumps(prediction)
    target_seam, target_rest = jumps(target)
    return {"border_error": float(border), "inside_error": float(inside), "border_to_inside": float(border / inside),
            "seam_jump": seam, "jump_elsewhere": rest, "seam_jump_ratio": seam / rest,
            "target_jump_ratio_same_places": target_seam / target_rest,
            "mae": float(error.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of the tiny Pix2Pix")
    parser.add_argument("--crop", type=int, default=1024, help="side of the centre crop of pair-2 translated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tiled-seams-run"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    config = {"method": "pix2pix",
              "data": {"kind": "scene-tiles", "root": str(SCENES), "tile": WINDOW, "split_by": "scene",
                       "val_scenes": 0, "test_scenes": ["pair-2"], "seed": 0},
              "model": {"generator_filters": 16, "discriminator_filters": 16, "discriminator_layers": 2},
              "train": {"max_steps": args.steps, "batch_size": 8, "lr": 1e-3, "sample_every": 0,
                        "checkpoint_every": args.steps, "seed": 0}}
    method, train_set, _, train_config = build_run(config)
    train(method, train_set, train_config, args.out, progress=False, overwrite=True)
    method.eval()
    trained = time.perf_counter() - started
    sar, sar_meta = read_image(SCENES / "pair-2" / "SAR-Image-2.jpg")
    optical, _ = read_image(SCENES / "pair-2" / "Optical-Image-2.jpg")
    height, width = sar.shape[:2]
    top, left = (height - args.crop) // 2, (width - args.crop) // 2
    slices = adapt_channels(source_slices(sar, sar_meta, method.data), method.data.source_channels, sar_meta.path)
    source = slices[0, top:top + args.crop, left:left + args.crop]
    target = optical[top:top + args.crop, left:left + args.crop].astype(np.float32) / 255
    sources = unit_to_model(torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)[None])
    rows, panels = {}, {}
    for name, tiling in TILINGS.items():
        start = time.perf_counter()
        images = translate_tiled(method, sources, tiling=tiling).images
        prediction = ((images[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
        rows[name] = {**seam_figures(prediction, target, round(tiling.overlap * WINDOW)),
                      "seconds": time.perf_counter() - start}
        panels[name] = prediction
        print(f"{name:24s}: " + ", ".join(f"{key} {value:.4f}" for key, value in rows[name].items()), flush=True)
    region = slice(0, 256)
    figure = np.concatenate([np.repeat(source[region, region].mean(-1, keepdims=True), 3, -1),
                             panels["no overlap, no blending"][region, region],
                             panels["overlap 1/4, gaussian"][region, region], target[region, region]], axis=1)
    figure_path = RESULTS / "tiled_seams.png"
    write_image(figure_path, (figure * 255).round().astype(np.uint8))
    path = write_results("tiled_seams", {
        "config": {**config, "crop": [top, left, args.crop], "window": WINDOW, "threads": args.threads,
                   "tilings": {name: vars(tiling) for name, tiling in TILINGS.items()},
                   "figure": f"{figure_path.name}: the crop's top-left 256 px, left to right SAR source, translation "
                             "without overlap, with overlap 1/4 and Gaussian blending, optical target",
                   "command": "OMP_NUM_THREADS=1 python -m benchmarks.tiled_seams"},
        "training_seconds": trained, "rows": rows, "total_seconds": time.perf_counter() - started})
    print(f"wrote {path} and {figure_path}")


if __name__ == "__main__":
    main()
