"""PNG figures: translation grids beside a method's own maps (CDTSDE: the mixing field), for training
previews, the demo and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .data.masks import decode_classes
from .intensity import model_to_unit


def to_display(image: torch.Tensor, kind: str = "image") -> np.ndarray:
    """One (C, H, W) model-space image in [-1, 1] as something imshow can draw: grey (H, W) in [0, 1],
    RGB (H, W, 3), or class indices (H, W) for masks."""
    image = image.detach().float().cpu()
    if kind == "mask":
        return decode_classes(image)
    unit = model_to_unit(image).numpy()
    return unit.transpose(1, 2, 0) if unit.shape[0] == 3 else unit[0]


def _draw(axis, array: np.ndarray, kind: str, title: str):
    if kind == "mask":
        shown = axis.imshow(array, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    elif kind == "field":
        shown = axis.imshow(array, cmap="magma", vmin=0, vmax=1)
    else:
        shown = axis.imshow(array, cmap="gray", vmin=0, vmax=1)
    axis.set_title(title, fontsize=8)
    axis.axis("off")
    return shown


def save_image_columns(path: str | Path, columns: list[tuple[str, torch.Tensor, str]]) -> Path:
    """One row per item, one column per (title, batch (B, C, H, W), kind): kind "image" and "mask" are
    model-space images in [-1, 1], "field" a map in [0, 1] drawn as its channel mean, on one colour scale
    (0..1) shown by a colour bar under its column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(columns[0][1])
    figure, axes = plt.subplots(rows, len(columns), figsize=(1.9 * len(columns), 1.9 * rows), squeeze=False)
    drawn = {}
    for i in range(rows):
        for j, (title, batch, kind) in enumerate(columns):
            shown = batch[i].float().mean(0).cpu().numpy() if kind == "field" else to_display(batch[i], kind)
            drawn[j] = _draw(axes[i, j], shown, kind, title)
    figure.tight_layout()
    for j, (_, _, kind) in enumerate(columns):
        if kind == "field":
            bar = figure.colorbar(drawn[j], ax=axes[-1, j], orientation="horizontal", fraction=0.08, pad=0.04)
            bar.set_ticks([0, 0.5, 1])
            bar.ax.tick_params(labelsize=7)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return path


def save_translation_grid(path: str | Path, sources, translations, targets, maps: dict[str, torch.Tensor],
                          target_kind: str = "image", source_kind: str = "image") -> Path:
    """One row per item: source, translation, target, then each of `maps` (title -> (B, C, H, W) in
    [0, 1], drawn as its channel mean)."""
    columns = [("source", sources, source_kind), ("translation", translations, target_kind),
               ("target", targets, target_kind)]
    return save_image_columns(path, columns + [(title, values, "field") for title, values in maps.items()])


@torch.no_grad()
def save_preview(method, dataset, path: str | Path, count: int = 4, seed: int = 0) -> Path | None:
    """Translate the first `count` items of `dataset` with the method's default sampling options and draw
    them with the method's preview maps. Data without sources (target-only
    training) has nothing to translate: no figure, None."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if not items or "source" not in items[0]:
        return None
    device = next(method.parameters(), torch.empty(0)).device
    sources = torch.stack([item["source"] for item in items]).to(device)
    targets = torch.stack([item["target"] for item in items])
    result = method.translate(sources, generator=torch.Generator(device).manual_seed(seed))
    return save_translation_grid(path, sources, result.images, targets, method.preview_maps(sources),
                                 target_kind=method.data.target_kind)


def previews_of(dataset, count: int = 4) -> Callable[[torch.nn.Module, Path], Path | None]:
    """What draws the training loop's previews (`cdtsde.training.train(preview=...)`): `save_preview` of the
    first `count` items of `dataset`, with the weights and at the path the loop gives."""
    return lambda method, path: save_preview(method, dataset, path, count)
