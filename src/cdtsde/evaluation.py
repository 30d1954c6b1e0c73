"""Evaluate a trained method on a paired dataset: translate every pair, score it (`cdtsde.metrics`),
summarise."""

from __future__ import annotations

import time

import torch

from .data.masks import decode_classes
from .intensity import model_to_unit
from .methods import Method


@torch.no_grad()
def evaluate_model(method: Method, dataset, sampling=None, seed: int = 0, batch_size: int = 16,
                   classes: dict[int, str] | None = None, foreground: tuple[int, ...] | None = None,
                   nonzero_foreground: bool = False, kmeans=None, perception: bool = False,
                   **overrides) -> tuple[list[dict], dict]:
    """Per-pair metric rows and their summary. `sampling` (default: the checkpoint's) with `overrides`
    (e.g. steps=10) are the method's sampling options. Images are scored in [0, 1] (`image_metrics`);
    mask targets are decoded by argmax and scored per class (`mask_metrics`). With `nonzero_foreground`
    image metrics are also computed over the target's nonzero pixels (the brain of skull-stripped MRI)
    under a "_fg" suffix, as `cdtsde evaluate --nonzero-foreground` does; `kmeans` (IntensityKMeans fit on
    target training images) adds the zero-shot K-Means Dice; `perception` adds the set-level perception
    metrics of the translations against the targets (`cdtsde.metrics.perception`, keys `perception/...`,
    in the summary only). Each row also carries the pair's name and the seconds per image."""
    from .metrics import image_metrics, mask_metrics, perception_metrics, summarise
    from .metrics.segmentation import kmeans_dice
    from .metrics.summary import set_level

    if perception and method.data.target_kind == "mask":
        raise ValueError("perception metrics compare images; this method translates to masks")
    sets: tuple[list, list] = ([], [])

    sampling = method.sampling_options(sampling, **overrides)
    device = next(method.parameters(), torch.empty(0)).device
    generator = torch.Generator(device).manual_seed(seed)
    rows: list[dict] = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        sources = torch.stack([item["source"] for item in items]).to(device)
        began = time.perf_counter()
        predictions = method.translate(sources, sampling, generator).images.cpu()
        seconds = (time.perf_counter() - began) / len(items)
        for item, prediction in zip(items, predictions):
            target = item["target"]
            if method.data.target_kind == "mask":
                scores = mask_metrics(decode_classes(prediction), decode_classes(target), classes=classes,
                                      foreground=foreground)
            else:
                pred, true = (model_to_unit(x).permute(1, 2, 0).numpy() for x in (prediction, target))
                scores = image_metrics(pred, true)
                scores.update(kmeans_dice(kmeans or [], pred, true))
                if perception:
                    sets[0].append(pred)
                    sets[1].append(true)
                if nonzero_foreground:
                    scores.update({f"{k}_fg": v for k, v in image_metrics(pred, true, true > 0).items()})
            rows.append({"name": item["name"], **scores, "seconds_per_image": seconds})
    numeric = [{k: v for k, v in row.items() if k != "name"} for row in rows]
    summary = summarise(numeric)
    if perception and rows:
        summary.update(set_level({f"perception/{k}": v for k, v in perception_metrics(*sets).items()}, len(rows)))
    return rows, summary
