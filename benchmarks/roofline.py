"""Speed against the hardware limit: for each configuration, the FLOPs of one image (counted by
torch.utils.flop_counter, not estimated), the achieved FLOP/s, the machine's measured matrix-product peak
in the same run, and their ratio.

    python -m benchmarks.roofline [--repeats 5] [--output benchmarks/results/roofline-<device>.json]

CPU always (fp32): the peak is a 2048^3 fp32 matrix product; configurations are CDTSDE translation with
the 1.63M-parameter `UNetConfig.small` at 64 px (batch 1 and 16, 5 steps) and one training step (batch
16, forward + backward). On a GPU (when present) also bf16: the peak is an 8192^3 bf16 product, the
configurations the paper-sized 256 px UNet (translation at batch 1 and 64, 5 steps, bf16 autocast; a
training step at batch 16). Times are medians of `--repeats` after a warm-up.

`--levers` also measures translation (batch 16 on the CPU, 64 on a GPU) with each speed lever alone,
side by side with eager in the same run: torch.inference_mode, channels_last, torch.compile (default and,
on the CPU, max-autotune without CUDA graphs; on a GPU reduce-overhead, i.e. CUDA graphs), bf16 autocast,
and on the CPU the network exported to ONNX and run by ONNX Runtime (when onnxruntime is installed);
each row gives the speed-up over eager and the largest difference from eager's translation (the same
seed and weights), so a lever is kept only if it is faster and equal within tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import RESULTS, code_version, machine

PAPER_UNET = {"base_channels": 64, "channel_mults": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attention_resolutions": [16]}


def timed(function, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    function()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a size^3 matrix product (2 size^3 FLOPs)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / timed(lambda: a @ b, repeats, device)


def counted_flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def build(unet: dict, size: int, device: torch.device):
    from cdtsde.methods import DataInfo
    from cdtsde.methods.cdtsde import CDTSDE, CDTSDEConfig
    from cdtsde.networks.conditional_unet import UNetConfig

    torch.manual_seed(0)
    model = CDTSDE(CDTSDEConfig(unet=UNetConfig(**unet)), DataInfo(1, 1, image_size=size))
    return model.to(device)


def configurations(device: torch.device, repeats: int, peak: float, unet: dict, size: int, batches: list[int],
                   train_batch: int, autocast: torch.dtype | None) -> list[dict]:
    model = build(unet, size, device)

    def precision():
        return torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()

    rows = []
    for batch in batches:
        sources = torch.rand(batch, 1, size, size, device=device) * 2 - 1

        def run(sources=sources):
            with precision():
                model.eval().translate(sources, steps=5, generator=torch.Generator(device).manual_seed(0))

        flops = counted_flops(run)
        seconds = timed(run, repeats, device)
        rows.append(row(f"translate {size} px, batch {batch}, 5 steps", flops / batch, flops / seconds, peak,
                        seconds, batch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = {"source": torch.rand(train_batch, 1, size, size, device=device) * 2 - 1,
             "target": torch.rand(train_batch, 1, size, size, device=device) * 2 - 1}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with precision():
            loss = model.train()(batch, "model", torch.Generator(device).manual_seed(0), {})["loss"]
        loss.backward()
        optimizer.step()

    flops = counted_flops(step)
    seconds = timed(step, repeats, device)
    rows.append(row(f"train step {size} px, batch {train_batch}", flops / train_batch, flops / seconds, peak,
                    seconds, train_batch))
    return rows


def run(model, inputs: torch.Tensor, lever: dict) -> torch.Tensor:
    """One 5-step translation with a lever's grad mode and precision."""
    device = inputs.device
    grad = torch.inference_mode() if lever.get("inference_mode") else torch.no_grad()
    precision = (torch.autocast(device.type, dtype=lever["autocast"]) if "autocast" in lever
                 else contextlib.nullcontext())
    with grad, precision:
        return model.translate(inputs, steps=5, generator=torch.Generator(device).manual_seed(0)).images.float()


class OnnxRuntimeNetwork(torch.nn.Module):
    """The conditional UNet exported to ONNX (batch dimension dynamic) and run by ONNX Runtime's CPU
    provider with torch's thread count: the CPU lever of issue 17 (needs onnxruntime, onnx, onnxscript)."""

    def __init__(self, net: torch.nn.Module, example: torch.Tensor):
        import tempfile

        import onnxruntime

        super().__init__()
        t = torch.zeros(example.shape[0], dtype=torch.long)
        batch = torch.export.Dim("batch")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory() as folder:  # the session holds the graph once loaded
            path = Path(folder) / "unet.onnx"
            # two distinct tensors: the exporter would fold one passed twice into a single input
            torch.onnx.export(net, (example, example.clone(), t), path, input_names=["x_t", "x_src", "t"],
                              output_names=["x0"], dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
                              dynamo=True, verbose=False)
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x_t: torch.Tensor, x_src: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long).expand(x_t.shape[0]).contiguous()
        feeds = {"x_t": x_t.contiguous().numpy(), "x_src": x_src.contiguous().numpy(), "t": t.numpy()}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def levers(device: torch.device, repeats: int, peak: float, unet: dict, size: int, batch: int) -> list[dict]:
    """Translation with each lever alone against eager, same weights, inputs and seed."""
    sources = torch.rand(batch, 1, size, size, device=device, generator=torch.Generator(device).manual_seed(1)) * 2 - 1
    cuda = device.type == "cuda"
    options = {
        "eager (no_grad)": {},
        "inference_mode": {"inference_mode": True},
        "channels_last": {"channels_last": True},
        "compile (default)": {"compile": "default"},
        ("compile (reduce-overhead: CUDA graphs)" if cuda else "compile (max-autotune-no-cudagraphs)"):
            {"compile": "reduce-overhead" if cuda else "max-autotune-no-cudagraphs"},
        "bf16 autocast": {"autocast": torch.bfloat16},
    }
    if not cuda:
        options["onnxruntime (the network exported)"] = {"onnxruntime": True}
    rows, reference, flops = [], None, None
    for name, lever in options.items():
        model = build(unet, size, device).eval()
        with torch.no_grad():  # away from the zero-initialised output layer, so that translations differ when numerics do
            for parameter in model.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))
        inputs = sources
        if lever.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
            inputs = sources.contiguous(memory_format=torch.channels_last)
        if "compile" in lever:
            model.net = torch.compile(model.net, mode=lever["compile"])
        try:
            if lever.get("onnxruntime"):
                model.net = OnnxRuntimeNetwork(model.net, inputs)
            images = run(model, inputs, lever)  # also the compilation, outside the timing
        except Exception as exc:  # a lever this machine cannot run is reported, not fatal
            rows.append({"configuration": f"translate {size} px, batch {batch}: {name}", "error": repr(exc)[:300]})
            continue
        timed_run = functools.partial(run, model, inputs, lever)
        if reference is None:
            reference, flops = images, counted_flops(timed_run)
        seconds = timed(timed_run, repeats, device)
        result = row(f"translate {size} px, batch {batch}: {name}", flops / batch, flops / seconds, peak, seconds, batch)
        result.update(speedup_over_eager=(rows[0]["seconds"] / seconds) if rows else 1.0,
                      max_abs_difference=float((images - reference).abs().max()))
        rows.append(result)
    return rows


def row(name, flops_per_image, achieved, peak, seconds, batch) -> dict:
    return {"configuration": name, "gflop_per_image": flops_per_image / 1e9, "achieved_gflops": achieved / 1e9,
            "peak_gflops": peak / 1e9, "ratio_to_peak": achieved / peak, "seconds": seconds,
            "images_per_second": batch / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--levers", action="store_true", help="also each speed lever against eager")
    args = parser.parse_args()

    from cdtsde.networks.conditional_unet import UNetConfig

    small = {k: v for k, v in dataclasses.asdict(UNetConfig.small()).items()}
    cpu = torch.device("cpu")
    peak = matmul_peak(cpu, torch.float32, 2048, args.repeats)
    results = {"cpu": {"peak_fp32_gflops": peak / 1e9,
                       "rows": configurations(cpu, args.repeats, peak, small, 64, [1, 16], 16, None)}}
    if args.levers:
        results["cpu"]["levers"] = levers(cpu, args.repeats, peak, small, 64, 16)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        peak = matmul_peak(gpu, torch.bfloat16, 8192, args.repeats)
        results["gpu"] = {"peak_bf16_gflops": peak / 1e9,
                          "rows": configurations(gpu, args.repeats, peak, PAPER_UNET, 256, [1, 64], 16, torch.bfloat16)}
        if args.levers:
            results["gpu"]["levers"] = levers(gpu, args.repeats, peak, PAPER_UNET, 256, 64)
    lines = []
    for device, result in results.items():
        lines += [f"## {device} (measured peak {next(v for k, v in result.items() if k.startswith('peak')):.1f} "
                  "GFLOP/s)", "", "| configuration | GFLOP/image | achieved GFLOP/s | ratio to peak | images/s |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['configuration']} | {r['gflop_per_image']:.2f} | {r['achieved_gflops']:.1f} | "
                  f"{r['ratio_to_peak']:.2f} | {r['images_per_second']:.2f} |" for r in result["rows"]]
        lines.append("")
        if "levers" in result:
            lines += ["| lever | ratio to peak | images/s | speed-up over eager | max abs difference from eager |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['configuration']} | " + (f"failed: {r['error']} | | | |" if "error" in r else
                      f"{r['ratio_to_peak']:.2f} | {r['images_per_second']:.2f} | {r['speedup_over_eager']:.2f}x | "
                      f"{r['max_abs_difference']:.2e} |") for r in result["levers"]]
            lines.append("")
    output = args.output or RESULTS / f"roofline-{'gpu' if torch.cuda.is_available() else 'cpu'}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"machine": machine(), "code": code_version(), "repeats": args.repeats, **results}, indent=2))
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
