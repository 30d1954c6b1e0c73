"""Evaluate a trained method on a paired dataset: translate every pair and score it on the one scoring
path (`cdtsde.metrics.ScoreAccumulator`)."""

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
    """Per-pair metric rows and their summary (`ScoreAccumulator`, which the options configure). `sampling`
    (default: the checkpoint's) with `overrides` (e.g. steps=10) are the method's sampling options. Images
    are scored in [0, 1]; mask targets are decoded by argmax and scored per class. With `nonzero_foreground`
    image metrics are also computed over the target's nonzero pixels (the brain of skull-stripped MRI)
    under a "_fg" suffix, as `cdtsde evaluate --nonzero-foreground` does; `kmeans` (IntensityKMeans fit on
    target training images, `fit_kmeans`) adds the zero-shot K-Means Dice; `perception` adds the set-level
    perception metrics of the translations against the targets (keys `perception/...`, in the summary
    only). Each row also carries the pair's name and the seconds per image."""
    from .metrics import ScoreAccumulator

    is_mask = method.data.target_kind == "mask"
    scores = ScoreAccumulator("mask" if is_mask else "image", classes=classes, foreground=foreground,
                              nonzero_foreground=nonzero_foreground, kmeans=kmeans, perception=perception)
    sampling = method.sampling_options(sampling, **overrides)
    device = next(method.parameters(), torch.empty(0)).device
    generator = torch.Generator(device).manual_seed(seed)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        sources = torch.stack([item["source"] for item in items]).to(device)
        began = time.perf_counter()
        predictions = method.translate(sources, sampling, generator).images.cpu()
        seconds = (time.perf_counter() - began) / len(items)
        for item, prediction in zip(items, predictions):
            if is_mask:
                pred, true = decode_classes(prediction), decode_classes(item["target"])
            else:
                pred, true = (model_to_unit(x).permute(1, 2, 0).numpy() for x in (prediction, item["target"]))
            scores.update(item["name"], pred, true, seconds_per_image=seconds)
    return scores.compute()
