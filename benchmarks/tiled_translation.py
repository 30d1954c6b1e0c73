"""Peak memory and speed of tiled translation against the scene size: the same model on square RGB scenes
of 1k, 4k and 8k px, each translated file to file (`cdtsde.translate.translate_file`, as `cdtsde translate`
does) in a fresh process whose peak resident memory (`ru_maxrss`) is read when it ends, beside one batch of
64 px windows translated alone (the reference the scenes' memory is a factor of).

    OMP_NUM_THREADS=1 nice -n 5 python -m benchmarks.tiled_translation [--models tiny suite identity]
        [--sizes 1024 4096 8192] [--modes disk memory] [--formats tif png] [--steps 2] [--merge]

Models: an untrained CDTSDE with the linear field, its weights perturbed so that it computes something, on
64 px native-scale tiles: `tiny` (TINY_UNET, 0.18 M parameters) and `suite` (the benchmark suite's CPU-scale
UNet, SMALL_UNET, 1.6 M); `identity` runs the reading, tiling and writing alone. Windows of 64 px
overlapping by a quarter, 16 per batch, Gaussian blending, `--steps` sampling steps. Modes: `disk`, the
scene read by rows and stitched on disk (`translate_scene`, what scenes above `Tiling.on_disk_above` get);
`memory`, the tiled translation held in memory (smaller scenes); `batch`, one batch of windows through the
method alone. Scenes: smooth random 8-bit RGB, as a zlib-compressed tiled TIFF (read tile by tile) or a
PNG (decoded whole), written back in their format. `--merge` replaces the rows measured now in
benchmarks/results/tiled_translation.json and keeps the others; `--plot` draws that file's rows (peak memory
and seconds per megapixel against the scene's side) into tiled_translation.png beside it.
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

from benchmarks.common import RESULTS, write_results

WINDOW = 64
SMALL_UNET = {"base_channels": 32, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 1, "attention_resolutions": [8]}


def scene(path: Path, size: int) -> None:
    """A smooth random RGB scene (bilinear upsampling of 1/32-scale noise), 8-bit, as PNG or tiled TIFF."""
    import tifffile
    from PIL import Image

    coarse = np.random.default_rng(size).random((size // 32 + 1, size // 32 + 1, 3)) * 255
    image = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR)
    if path.suffix == ".png":
        image.save(path)
    else:
        tifffile.imwrite(path, np.asarray(image), photometric="rgb", compression="zlib", tile=(256, 256))


def build(model: str):
    import torch

    from cdtsde.methods import DataInfo
    from cdtsde.methods.cdtsde import CDTSDE, CDTSDEConfig
    from cdtsde.methods.cdtsde.fields import FieldConfig
    from cdtsde.methods.identity import Identity, IdentityConfig
    from cdtsde.networks.conditional_unet import TINY_UNET, UNetConfig

    data = DataInfo(source_channels=3, target_channels=3, image_size=WINDOW, training_scale="native")
    torch.manual_seed(0)
    if model == "identity":
        return Identity(IdentityConfig(), data)
    unet = TINY_UNET if model == "tiny" else SMALL_UNET
    method = CDTSDE(CDTSDEConfig(field=FieldConfig("linear"), unet=UNetConfig(**unet)), data).eval()
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return method


def child(args) -> None:
    """Translate one scene (or one window batch) in this process; print seconds and memory as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from cdtsde.translate import Tiling, translate_file

    method = build(args.model)
    sampling = method.sampling_options(steps=args.steps) if args.model != "identity" else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if args.mode == "batch":
        windows = torch.rand(args.tile_batch, 3, WINDOW, WINDOW, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            method.translate(windows, sampling, torch.Generator().manual_seed(0))
    else:
        on_disk_above = 0 if args.mode == "disk" else 2**62
        tiling = Tiling(overlap=0.25, batch=args.tile_batch, on_disk_above=on_disk_above)
        translate_file(method, args.scene, args.output, tiling=tiling, sampling=sampling, resize_to_training=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024, "rss_before_translation_mib": before / 1024}))


def measure(model: str, mode: str, size: int, fmt: str, folder: Path, args) -> dict:
    path = folder / f"scene-{size}.{fmt}"
    if mode != "batch" and not path.exists():
        # in a process of its own: Linux keeps a process's peak resident memory across fork and exec, so a
        # scene made here would raise the peak every later measurement reads
        subprocess.run([sys.executable, "-m", "benchmarks.tiled_translation", "--make-scene", str(path),
                        "--scene-size", str(size)], check=True)
    output = folder / f"out-{model}-{mode}-{size}-{fmt}"
    output.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.tiled_translation", "--child", "--model", model, "--mode", mode,
               "--scene", str(path), "--output", str(output), "--threads", str(args.threads),
               "--tile-batch", str(args.tile_batch), "--steps", str(args.steps)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    pixels = args.tile_batch * WINDOW * WINDOW if mode == "batch" else size * size
    row = {"model": model, "mode": mode, "size": size if mode != "batch" else WINDOW,
           "format": fmt if mode != "batch" else None, "steps": args.steps if model != "identity" else None,
           "megapixels": pixels / 1e6, **json.loads(result.stdout.strip().splitlines()[-1])}
    row["seconds_per_megapixel"] = row["seconds"] / row["megapixels"]
    print(f"{model:8s} {mode:6s} {row['size']:5d} px {fmt if mode != 'batch' else '':3s}: {row['seconds']:7.1f} s "
          f"({row['seconds_per_megapixel']:7.2f} s/MP), peak RSS {row['peak_rss_mib']:7.0f} MiB (before translating "
          f"{row['rss_before_translation_mib']:5.0f})", flush=True)
    return row


def plot(results: Path) -> Path:
    """Peak resident memory and seconds per megapixel against the scene's side, one line per model and mode
    (TIFF scenes), the window batch alone as a dotted level per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(results.read_text())["rows"]
    figure, (memory, speed) = plt.subplots(1, 2, figsize=(10, 4))
    colours = {"tiny": "tab:blue", "suite": "tab:red", "identity": "tab:grey"}
    for model, colour in colours.items():
        for mode, style in (("disk", "-o"), ("memory", "--s")):
            chosen = sorted((row for row in rows if row["model"] == model and row["mode"] == mode
                             and row["format"] == "tif"), key=lambda row: row["size"])
            if chosen:
                label = f"{model}, {'read by rows, stitched on disk' if mode == 'disk' else 'held in memory'}"
                sizes = [row["size"] for row in chosen]
                memory.plot(sizes, [row["peak_rss_mib"] for row in chosen], style, color=colour, label=label)
                speed.plot(sizes, [row["seconds_per_megapixel"] for row in chosen], style, color=colour, label=label)
        batch = [row for row in rows if row["model"] == model and row["mode"] == "batch"]
        if batch:
            memory.axhline(batch[0]["peak_rss_mib"], color=colour, linestyle=":", linewidth=1,
                           label=f"{model}, one batch of 16 windows alone")
    for axes, title in ((memory, "peak resident memory (MiB)"), (speed, "seconds per megapixel")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("scene side (px)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    memory.legend(fontsize=7)
    figure.suptitle("Tiled translation of square RGB TIFF scenes, 64 px windows, 1 CPU thread", fontsize=10)
    figure.tight_layout()
    target = results.with_suffix(".png")
    figure.savefig(target, dpi=110)
    return target


def key(row: dict) -> tuple:
    return row["model"], row["mode"], row["size"], row["format"], row["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "suite", "identity"],
                        choices=["tiny", "suite", "identity"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--modes", nargs="+", default=["batch", "disk", "memory"], choices=["batch", "disk", "memory"])
    parser.add_argument("--formats", nargs="+", default=["tif"], choices=["tif", "png"])
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[1024, 4096],
                        help="the sizes translated in memory too (the 8k one would need about 5 GiB)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile-batch", type=int, default=16)
    parser.add_argument("--merge", action="store_true", help="keep the other rows of the results file")
    parser.add_argument("--plot", action="store_true", help="only draw the results file's rows")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scene-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="disk", help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.make_scene:
        scene(args.make_scene, args.scene_size)
        return
    if args.plot:
        print(f"wrote {plot(RESULTS / 'tiled_translation.json')}")
        return
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            if "batch" in args.modes:
                rows.append(measure(model, "batch", WINDOW, "", Path(folder), args))
            for fmt in args.formats:
                for size in args.sizes:
                    for mode in ("disk", "memory"):
                        if mode in args.modes and (mode == "disk" or size in args.memory_sizes):
                            rows.append(measure(model, mode, size, fmt, Path(folder), args))
    previous = json.loads((RESULTS / "tiled_translation.json").read_text()) if args.merge else {}
    measured = {key(row) for row in rows}
    kept = [row for row in previous.get("rows", []) if "model" in row and key(row) not in measured]
    path = write_results("tiled_translation", {
        "config": {"window": WINDOW, "overlap": 0.25, "tile_batch": args.tile_batch, "blend": "gaussian",
                   "threads": args.threads,
                   "models": {"tiny": "untrained CDTSDE, linear field, TINY_UNET (0.18 M parameters)",
                              "suite": "untrained CDTSDE, linear field, the suite's CPU-scale UNet SMALL_UNET "
                                       f"{SMALL_UNET} (1.6 M parameters)",
                              "identity": "the reading, tiling and writing alone"},
                   "modes": {"batch": "one batch of windows through the method alone (the reference)",
                             "disk": "read by rows, stitched in memory maps, written tile by tile (translate_scene)",
                             "memory": "the tiled translation held in memory (Tiling.on_disk_above not reached)"},
                   "scene": "smooth random RGB 8-bit; tif: zlib-compressed, 256 px tiles; png; written back alike",
                   "command": "OMP_NUM_THREADS=1 nice -n 5 python -m benchmarks.tiled_translation "
                              + " ".join(sys.argv[1:])},
        "rows": kept + rows, "total_seconds": time.perf_counter() - started})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
