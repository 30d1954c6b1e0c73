"""Peak memory and speed of tiled translation against the scene size: the same tiny model on square scenes
of 1k, 2k and 4k px (8k with the identity method, which runs the tiling alone), each translated from a PNG
file to a PNG file (`cdtsde.translate.translate_file`, as `cdtsde translate` does) in a fresh process whose
peak resident memory (`ru_maxrss`) is read when it ends; one pass over the whole scene (no tiling) beside
it at the smaller sizes, as translation ran before tiling.

    OMP_NUM_THREADS=1 python -m benchmarks.tiled_translation [--sizes 1024 2048 4096] [--threads 1]

The model: an untrained tiny CDTSDE (TINY_UNET, its weights perturbed so that it computes something,
linear field, 1 sampling step) on 64 px native-scale tiles, RGB; windows of 64 px overlapping by a
quarter, 16 per batch, Gaussian blending. What grows with the scene is its own arrays (the decoded PNG,
3 bytes a pixel, and a few float32 copies of the input and the output, 12 bytes a pixel each); the
network's memory depends on the window batch alone. Writes benchmarks/results/tiled_translation.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

WINDOW = 64


def scene(path: Path, size: int) -> None:
    """A smooth random RGB scene (bilinear upsampling of 1/32-scale noise) as an 8-bit PNG."""
    from PIL import Image

    coarse = np.random.default_rng(size).random((size // 32 + 1, size // 32 + 1, 3)) * 255
    image = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR)
    image.save(path)


def child(args) -> None:
    """Translate one scene in this process; print seconds and memory as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from cdtsde.methods import DataInfo
    from cdtsde.methods.cdtsde import CDTSDE, CDTSDEConfig
    from cdtsde.methods.cdtsde.fields import FieldConfig
    from cdtsde.methods.identity import Identity, IdentityConfig
    from cdtsde.networks.conditional_unet import TINY_UNET, UNetConfig
    from cdtsde.translate import Tiling, translate_file

    data = DataInfo(source_channels=3, target_channels=3, image_size=WINDOW, training_scale="native")
    torch.manual_seed(0)
    if args.method == "identity":
        method = Identity(IdentityConfig(), data)
    else:
        method = CDTSDE(CDTSDEConfig(field=FieldConfig("linear"), unet=UNetConfig(**TINY_UNET)), data).eval()
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    sampling = method.sampling_options(steps=1) if args.method != "identity" else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    tiling = Tiling(overlap=0.25, batch=args.tile_batch) if args.mode == "tiled" else None
    translate_file(method, args.scene, args.output, tiling=tiling, sampling=sampling, resize_to_training=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024, "rss_before_translation_mib": before / 1024}))


def measure(method: str, mode: str, size: int, folder: Path, threads: int, tile_batch: int) -> dict:
    path = folder / f"scene-{size}.png"
    if not path.exists():
        scene(path, size)
    output = folder / f"out-{method}-{mode}-{size}"
    output.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.tiled_translation", "--child", "--method", method, "--mode", mode,
               "--scene", str(path), "--output", str(output), "--threads", str(threads),
               "--tile-batch", str(tile_batch)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    row = {"method": method, "mode": mode, "size": size, "megapixels": size * size / 1e6,
           **json.loads(result.stdout.strip().splitlines()[-1])}
    row["seconds_per_megapixel"] = row["seconds"] / row["megapixels"]
    print(f"{method:9s} {mode:6s} {size:5d} px: {row['seconds']:7.1f} s ({row['seconds_per_megapixel']:6.2f} s/MP), "
          f"peak RSS {row['peak_rss_mib']:7.0f} MiB (before translating {row['rss_before_translation_mib']:5.0f})",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--identity-sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--whole-sizes", type=int, nargs="+", default=[512],
                        help="sizes also translated in one pass over the whole scene, as before tiling")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile-batch", type=int, default=16)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="cdtsde", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="tiled", help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.whole_sizes:
            rows.append(measure("cdtsde", "whole", size, Path(folder), args.threads, args.tile_batch))
        for size in sorted({*args.sizes, *args.whole_sizes}):
            rows.append(measure("cdtsde", "tiled", size, Path(folder), args.threads, args.tile_batch))
        for size in args.identity_sizes:
            rows.append(measure("identity", "tiled", size, Path(folder), args.threads, args.tile_batch))
    path = write_results("tiled_translation", {
        "config": {"sizes": args.sizes, "identity_sizes": args.identity_sizes, "whole_sizes": args.whole_sizes,
                   "threads": args.threads, "window": WINDOW, "overlap": 0.25, "tile_batch": args.tile_batch,
                   "blend": "gaussian", "model": "untrained tiny CDTSDE (TINY_UNET, linear field), 1 step, RGB; "
                   "identity: the tiling alone", "scene": "smooth random RGB 8-bit PNG, PNG out",
                   "command": "OMP_NUM_THREADS=1 python -m benchmarks.tiled_translation"},
        "rows": rows, "total_seconds": time.perf_counter() - started})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
