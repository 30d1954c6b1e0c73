"""Loading throughput (pairs/s) of the data path at the training size, with DataLoader(num_workers=0)
and (num_workers=2), so that data never starves a CPU training run.

    python -m benchmarks.data_throughput [--size 64] [--batch-size 16] [--pairs 512]

Each case builds its dataset once (timed separately: NIfTI volumes and scenes are decoded there), then
reads `--pairs` pairs of the training split in shuffled batches; the time of a pass includes starting
the workers, and the median of `--repeats` passes is reported (2 cores make single passes noisy). Writes benchmarks/results/data_throughput.json with the configuration and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import code_version, machine
from cdtsde.data import build_dataset
from cdtsde.data.procedural import write_paired_folder

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def cases(workdir: Path, size: int) -> dict[str, dict]:
    png_folder = workdir / "mri-png"
    write_paired_folder("mri-phantom", 600, 2 * size, 0, png_folder)  # 16-bit PNGs, resized on load
    found = {
        "png-folder (16-bit, procedural)": {"kind": "paired-folder", "root": str(png_folder), "size": size}
    }
    if DATA.is_dir():
        found["brats-nifti (4 train of 6 subjects)"] = {
            "kind": "brats",
            "root": str(DATA / "brats-mri"),
            "size": size,
            "val_subjects": 1,
            "test_subjects": 1,
            "subjects": sorted(p.name for p in (DATA / "brats-mri").iterdir() if p.is_dir())[:6],
        }
        found["scene-tiles (SAR->optical JPG)"] = {
            "kind": "scene-tiles",
            "root": str(DATA / "sar-optical" / "scenes"),
            "tile": size,
            "stride": size // 2,
        }
        found["el-masks (JPG + class PNG)"] = {
            "kind": "el-masks",
            "root": str(DATA / "pv-el-cracks"),
            "size": size,
        }
    return found


def measure(dataset, pairs: int, batch_size: int, workers: int) -> float:
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:pairs].tolist()
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(batch["name"]) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "data_throughput.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # what each loader process gets; the training process keeps the cores busy
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in cases(Path(tmp), args.size).items():
            start = time.perf_counter()
            dataset = build_dataset(spec, "train")
            build_seconds = time.perf_counter() - start
            row = {
                "case": name,
                "spec": {k: v for k, v in spec.items() if k != "root"},
                "train_pairs": len(dataset),
                "build_seconds": round(build_seconds, 2),
            }
            for workers in args.workers:
                rates = [measure(dataset, args.pairs, args.batch_size, workers) for _ in range(args.repeats)]
                row[f"pairs_per_s_workers_{workers}"] = round(statistics.median(rates), 1)
            results.append(row)
            print(json.dumps(row))
    report = {
        "config": vars(args) | {"output": os.path.relpath(args.output, REPO)},
        "machine": machine(),
        "code": code_version(),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    header = f"{'case':38s} {'pairs':>6s} {'build s':>8s} " + " ".join(
        f"{'w=' + str(w) + ' pairs/s':>14s}" for w in args.workers
    )
    print("\n" + header)
    for row in results:
        rates = " ".join(f"{row[f'pairs_per_s_workers_{w}']:14.1f}" for w in args.workers)
        print(f"{row['case']:38s} {row['train_pairs']:6d} {row['build_seconds']:8.2f} {rates}")


if __name__ == "__main__":
    main()
