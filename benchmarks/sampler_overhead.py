"""The sampler's own arithmetic per step against one forward pass of a ~1.6M-parameter UNet.

    python -m benchmarks.sampler_overhead [--device cpu|cuda] [--repeats 5]

For each image size and batch: the median time of one UNet forward pass, and the median per-step time of
`cdtsde.sampler.sample` with a free denoiser (it returns its input), once with the linear field (the
sampler's arithmetic alone) and once with the dynamic field (arithmetic plus the mixer S_theta). The
overhead is their ratio to the forward pass, all measured side by side in one run.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import median_seconds, write_results
from cdtsde.methods.cdtsde.domain_shift import DomainShiftSchedule
from cdtsde.methods.cdtsde.fields import make_field
from cdtsde.methods.cdtsde.sampler import sample
from cdtsde.networks.conditional_unet import ConditionalUNet, UNetConfig, count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="sampler steps per timed call")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = device.type == "cuda"
    channels = args.channels
    net = ConditionalUNet(channels, channels, UNetConfig.small()).to(device).eval()
    schedule = DomainShiftSchedule()
    fields = {v: make_field(v, schedule, channels).to(device) for v in ("linear", "dynamic")}
    rows = []
    with torch.no_grad():
        for size in args.sizes:
            for batch in args.batches:
                x = torch.randn(batch, channels, size, size, device=device)
                t = torch.full((batch,), 250, device=device)
                forward = median_seconds(lambda x=x, t=t: net(x, x, t), args.repeats, sync=sync)
                row = {"size": size, "batch": batch, "unet_forward_s": forward}
                for variant, field in fields.items():
                    per_call = median_seconds(
                        lambda field=field, x=x: sample(lambda x_t, src, s: x_t, x, field, steps=args.steps, gamma=1.0),
                        args.repeats, sync=sync)
                    row[f"sampler_step_{variant}_s"] = per_call / args.steps
                    row[f"overhead_{variant}"] = per_call / args.steps / forward
                rows.append(row)
                print(f"{size:4d} px batch {batch:3d}: UNet {forward * 1e3:9.2f} ms | sampler step "
                      f"{row['sampler_step_linear_s'] * 1e3:7.3f} ms ({row['overhead_linear']:.2%}) linear, "
                      f"{row['sampler_step_dynamic_s'] * 1e3:7.3f} ms ({row['overhead_dynamic']:.2%}) with the dynamic mixer",
                      flush=True)
    name = "sampler_overhead" if device.type == "cpu" else f"sampler_overhead_{device.type}"
    path = write_results(name, {
        "config": {**vars(args), "unet_parameters": count_parameters(net), "unet": "UNetConfig.small"},
        "rows": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
