"""Training and translation throughput of the ~1.6M-parameter UNet preset on this machine.

    python -m benchmarks.train_throughput [--steps 30] [--batch 16]

* training images/s of `cdtsde.training.train` (Fabric, EMA, logging, step-seeded draws) against a bare
  PyTorch loop with the same model, loss, optimizer and batch;
* translation images/s with 5 steps at 64 and 128 px, batch 16;
* peak resident memory of each measurement (each runs in a fresh process, so the peaks are its own).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time

import torch

from benchmarks.common import write_results


class RandomPairs(torch.utils.data.Dataset):
    source_channels = target_channels = 1

    def __init__(self, n: int, size: int):
        generator = torch.Generator().manual_seed(0)
        self.data = torch.rand(n, 2, 1, size, size, generator=generator) * 2 - 1

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return {"source": self.data[index, 0], "target": self.data[index, 1], "name": str(index)}


def build_model(size: int):
    from cdtsde.methods import DataInfo
    from cdtsde.methods.cdtsde import CDTSDE, CDTSDEConfig
    from cdtsde.networks.conditional_unet import UNetConfig

    torch.manual_seed(0)
    return CDTSDE(CDTSDEConfig(unet=UNetConfig.small()), DataInfo(1, 1, image_size=size))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_library(steps: int, batch: int, size: int, queue) -> None:
    from cdtsde.training import TrainConfig, train

    model = build_model(size)
    data = RandomPairs(steps * batch, size)
    config = TrainConfig(max_steps=steps + 3, batch_size=batch, log_every=10, sample_every=0,
                         checkpoint_every=10**9, flips=True)
    with tempfile.TemporaryDirectory() as run_dir:
        # three warm-up steps, then the timed ones through the same loop (resume)
        train(model, data, TrainConfig(**{**config.__dict__, "max_steps": 3, "checkpoint_every": 3}), run_dir, progress=False)
        result = train(model, data, config, run_dir, resume=True, progress=False)
    queue.put({"images_per_s": steps * batch / result["seconds"], "peak_mb": peak_mb()})


def measure_bare(steps: int, batch: int, size: int, queue) -> None:
    model = build_model(size)
    data = RandomPairs(steps * batch, size).data
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)

    def step(i):
        chunk = data[(i * batch) % len(data):][:batch]
        loss = model({"source": chunk[:, 0], "target": chunk[:, 1]})["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(3):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    queue.put({"images_per_s": steps * batch / (time.perf_counter() - start), "peak_mb": peak_mb()})


def measure_translation(size: int, batch: int, repeats: int, queue) -> None:
    model = build_model(size).eval()
    source = torch.rand(batch, 1, size, size) * 2 - 1
    model.translate(source, steps=5)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.translate(source, steps=5)
        times.append(time.perf_counter() - start)
    times.sort()
    queue.put({"images_per_s": batch / times[len(times) // 2], "peak_mb": peak_mb()})


def in_fresh_process(target, *args) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating library/bare rounds; medians reported")
    args = parser.parse_args()
    library, bare = [], []
    for _ in range(args.rounds):  # alternate, so that machine noise hits both alike
        library.append(in_fresh_process(measure_library, args.steps, args.batch, args.size))
        bare.append(in_fresh_process(measure_bare, args.steps, args.batch, args.size))
    median = lambda rows: sorted(r["images_per_s"] for r in rows)[len(rows) // 2]  # noqa: E731
    ratios = sorted(a["images_per_s"] / b["images_per_s"] for a, b in zip(library, bare))
    translation = {size: in_fresh_process(measure_translation, size, 16, 5) for size in (64, 128)}
    print(f"training at {args.size} px, batch {args.batch}: cdtsde {median(library):.1f} images/s, "
          f"bare PyTorch {median(bare):.1f} images/s, ratio {ratios[len(ratios) // 2]:.3f} (median of {args.rounds}), "
          f"peak {max(r['peak_mb'] for r in library):.0f} MB vs {max(r['peak_mb'] for r in bare):.0f} MB")
    for size, row in translation.items():
        print(f"translation, 5 steps, batch 16, {size} px: {row['images_per_s']:.1f} images/s, peak {row['peak_mb']:.0f} MB")
    path = write_results("train_throughput", {
        "config": vars(args) | {"unet": "UNetConfig.small", "field": "dynamic"},
        "training": {"library": library, "bare": bare, "ratio_median": ratios[len(ratios) // 2]},
        "translation": {str(k): v for k, v in translation.items()},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
