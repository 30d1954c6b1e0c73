"""PNG figures: translation grids with the mixing field, for training previews, the demo and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .io import atomic_path


def to_display(image: torch.Tensor, kind: str = "image") -> np.ndarray:
    """One (C, H, W) model-space image in [-1, 1] as something imshow can draw: grey (H, W) in [0, 1],
    RGB (H, W, 3), or class indices (H, W) for masks."""
    image = image.detach().float().cpu()
    if kind == "mask":
        return image.argmax(0).numpy()
    unit = ((image.clamp(-1, 1) + 1) / 2).numpy()
    return unit.transpose(1, 2, 0) if unit.shape[0] == 3 else unit[0]


def _draw(axis, array: np.ndarray, kind: str, title: str) -> None:
    if kind == "mask":
        axis.imshow(array, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    elif kind == "field":
        axis.imshow(array, cmap="magma", vmin=0, vmax=1)
    else:
        axis.imshow(array, cmap="gray", vmin=0, vmax=1)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def save_translation_grid(path: str | Path, sources, translations, targets, fields: dict[int, torch.Tensor],
                          target_kind: str = "image", source_kind: str = "image") -> Path:
    """One row per item: source, translation, target, then the field Lambda_t (channel mean) at each t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = len(sources), 3 + len(fields)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows), squeeze=False)
    for i in range(rows):
        _draw(axes[i, 0], to_display(sources[i], source_kind), source_kind, "source")
        _draw(axes[i, 1], to_display(translations[i], target_kind), target_kind, "translation")
        _draw(axes[i, 2], to_display(targets[i], target_kind), target_kind, "target")
        for j, (t, field) in enumerate(sorted(fields.items())):
            _draw(axes[i, 3 + j], field[i].float().mean(0).cpu().numpy(), "field", f"Lambda, t={t}")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return path


@torch.no_grad()
def save_preview(model, dataset, path: str | Path, steps: int = 5, count: int = 4, seed: int = 0) -> Path:
    """Translate the first `count` items of `dataset` and draw them with the field at t1/4, t1/2, 3t1/4."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    device = next(model.parameters()).device
    sources = torch.stack([item["source"] for item in items]).to(device)
    targets = torch.stack([item["target"] for item in items])
    result = model.translate(sources, steps=steps, generator=torch.Generator(device).manual_seed(seed))
    t1 = model.schedule.t1
    anchor = model.anchor(sources)
    fields = {t: model.field(t, anchor) for t in (t1 // 4, t1 // 2, 3 * t1 // 4)}
    return save_translation_grid(path, sources, result.x0, targets, fields, target_kind=model.config.target_kind)
