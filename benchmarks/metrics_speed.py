"""Images per second of the metrics on this machine.

    python -m benchmarks.metrics_speed [--images 64] [--repeats 5]

Image metrics (PSNR, both SSIMs, MSE, MAE) at 128 px, one image at a time and batched; mask metrics
(5 classes + the defect group: Dice, IoU, precision, recall, HD, HD95, skeleton F1) at 400 px on the real
pv-el-cracks annotations when ../shared/data is present, else on smooth random masks. Medians of repeats.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from benchmarks.common import median_seconds, write_results
from cdtsde.metrics import PV_EL_CLASSES, PV_EL_DEFECT, image_metrics, image_metrics_batch, mask_metrics

ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pv-el-cracks" / "val" / "ann"


def masks(count: int) -> tuple[list[np.ndarray], str]:
    if ANNOTATIONS.is_dir():
        from cdtsde.data.masks import read_mask

        return [read_mask(p) for p in sorted(ANNOTATIONS.glob("*.png"))[:count]], "pv-el-cracks val"
    rng = np.random.default_rng(0)
    return [np.digitize(ndimage.gaussian_filter(rng.random((400, 400)), 8), [0.47, 0.49, 0.5, 0.51, 0.53]) % 5
            for _ in range(count)], "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--masks", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    targets = rng.random((args.images, 128, 128))
    preds = np.clip(targets + 0.1 * rng.standard_normal(targets.shape), 0, 1)
    single = median_seconds(lambda: [image_metrics(p, t) for p, t in zip(preds, targets)], args.repeats)
    batch_p, batch_t = torch.tensor(preds)[:, None], torch.tensor(targets)[:, None]
    batched = median_seconds(lambda: image_metrics_batch(batch_p, batch_t), args.repeats)
    truth, source = masks(args.masks)
    predicted = truth[1:] + truth[:1]
    mask_time = median_seconds(lambda: [mask_metrics(p, t, classes=PV_EL_CLASSES, foreground=PV_EL_DEFECT)
                                        for p, t in zip(predicted, truth)], max(1, args.repeats // 2))
    rows = {
        "image_metrics_128px_per_image": args.images / single,
        "image_metrics_128px_batched": args.images / batched,
        "mask_metrics_400px": len(truth) / mask_time,
    }
    for name, rate in rows.items():
        print(f"{name:32s} {rate:8.1f} images/s")
    print(f"wrote {write_results('metrics_speed', {'config': vars(args) | {'masks_from': source}, 'images_per_s': rows})}")


if __name__ == "__main__":
    main()
