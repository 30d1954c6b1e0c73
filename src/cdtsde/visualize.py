"""PNG figures: translation grids beside a method's own maps (CDTSDE: the mixing field), for training
previews, the demo and benchmarks; the three orthogonal cuts of translated volumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    # the source slice itself: neighbouring slices given as context are not drawn
    return save_translation_grid(path, method.centre_slice(sources), result.images, targets,
                                 method.preview_maps(sources), target_kind=method.data.target_kind)


def previews_of(dataset, count: int = 4) -> Callable[[torch.nn.Module, Path], Path | None]:
    """What draws the training loop's previews (`cdtsde.training.train(preview=...)`): `save_preview` of the
    first `count` items of `dataset`, with the weights and at the path the loop gives."""
    return lambda method, path: save_preview(method, dataset, path, count)


VOLUME_PANEL_INCHES, VOLUME_DPI = 2.0, 100
ANATOMICAL_AXES = (("R", "L"), ("A", "P"), ("S", "I"))  # RAS+: the direction an index increases towards
CUTS = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class VolumeRow:
    """One row of `save_volume_cuts`: its label, {column title: volume (3-D, in [0, 1])}, the region whose
    bounding-box centre the cuts pass through (None: the volume's centre), and the anatomical direction of
    each array axis (nibabel's axis codes, e.g. ("L", "P", "S"); NIfTI's own ("R", "A", "S") by default)."""

    name: str
    volumes: dict[str, np.ndarray]
    region: np.ndarray | None = None
    codes: tuple[str, str, str] = ("R", "A", "S")


def to_ras(volume: np.ndarray, codes: tuple[str, str, str]) -> np.ndarray:
    """The volume with its axes permuted and flipped so that indices increase towards R, A and S."""
    order, flips = [], []
    for positive, negative in ANATOMICAL_AXES:
        axis = next(i for i, code in enumerate(codes) if code in (positive, negative))
        order.append(axis)
        flips.append(codes[axis] == negative)
    volume = np.transpose(volume, order)
    return volume[tuple(slice(None, None, -1) if flip else slice(None) for flip in flips)]


def _centre(shape: tuple[int, ...], region: np.ndarray | None) -> tuple[int, ...]:
    if region is None or not region.any():
        return tuple(size // 2 for size in shape)
    return tuple((int(where.min()) + int(where.max())) // 2 for where in np.nonzero(region))


def save_volume_cuts(path: str | Path, rows: list[VolumeRow]) -> Path:
    """One row per volume: for each of its volumes (e.g. source, translation, target) the axial, coronal and
    sagittal cut through the centre of its row's region, grey on 0..1, square voxels, in the neurological
    convention (the patient's right on the right; anterior up in the axial cut, superior up in the others).
    The figure is VOLUME_PANEL_INCHES per panel at VOLUME_DPI: 200 x 200 px a panel. A translation whose
    slices were translated alone shows its flicker as streaks across the cuts perpendicular to the slices
    (the sagittal and coronal cuts of axially translated volumes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = list(dict.fromkeys(title for row in rows for title in row.volumes))
    columns = [(title, cut) for title in titles for cut in CUTS]
    figure, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                                figsize=(VOLUME_PANEL_INCHES * len(columns), VOLUME_PANEL_INCHES * len(rows)))
    for i, row in enumerate(rows):
        region = None if row.region is None else to_ras(np.asarray(row.region, dtype=bool), row.codes)
        shape = to_ras(next(iter(row.volumes.values())), row.codes).shape
        x, y, z = _centre(shape, region)
        for j, (title, cut) in enumerate(columns):
            axis = axes[i, j]
            axis.set_xticks([])
            axis.set_yticks([])
            if title not in row.volumes:
                axis.set_frame_on(False)
                continue
            volume = to_ras(np.asarray(row.volumes[title], dtype=np.float32), row.codes)
            # each cut transposed so that its second RAS axis runs upwards (origin lower)
            shown = {"axial": volume[:, :, z], "coronal": volume[:, y, :], "sagittal": volume[x, :, :]}[cut].T
            axis.imshow(shown, cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
            axis.set_title(f"{title} {cut}", fontsize=8)
            if j == 0:
                axis.set_ylabel(row.name, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=VOLUME_DPI)
    plt.close(figure)
    return path
