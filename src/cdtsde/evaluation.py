"""Evaluate a trained model on a paired dataset: translate every pair, score it (DESIGN 6), summarise."""

from __future__ import annotations

import time

import torch

from .model import TranslationModel


@torch.no_grad()
def evaluate_model(model: TranslationModel, dataset, steps: int = 5, gamma: float = 1.0, seed: int = 0,
                   batch_size: int = 16, classes: dict[int, str] | None = None,
                   foreground: tuple[int, ...] | None = None, nonzero_foreground: bool = False,
                   **sampler_options) -> tuple[list[dict], dict]:
    """Per-pair metric rows and their summary. Images are scored in [0, 1] (`image_metrics`); mask targets
    are decoded by argmax and scored per class (`mask_metrics`). With `nonzero_foreground` image metrics
are also computed over the target's nonzero pixels (the brain of skull-stripped MRI) under a "_fg"
suffix, as `cdtsde evaluate --nonzero-foreground` does. Each row also carries the pair's name and
    the seconds per image of the translation."""
    from .metrics import image_metrics, mask_metrics, summarise

    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    rows: list[dict] = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        sources = torch.stack([item["source"] for item in items]).to(device)
        began = time.perf_counter()
        result = model.translate(sources, steps=steps, gamma=gamma, generator=generator, **sampler_options)
        seconds = (time.perf_counter() - began) / len(items)
        for item, prediction in zip(items, result.x0.cpu()):
            target = item["target"]
            if model.config.target_kind == "mask":
                scores = mask_metrics(prediction.argmax(0).numpy(), target.argmax(0).numpy(), classes=classes,
                                      foreground=foreground)
            else:
                unit = lambda x: ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()  # noqa: E731
                scores = image_metrics(unit(prediction), unit(target))
                if nonzero_foreground:
                    region = unit(target) > 0
                    scores.update({f"{k}_fg": v for k, v in image_metrics(unit(prediction), unit(target), region).items()})
            rows.append({"name": item["name"], **scores, "seconds_per_image": seconds})
    numeric = [{k: v for k, v in row.items() if k != "name"} for row in rows]
    return rows, summarise(numeric)
