"""Evaluate a folder of predictions against a folder of targets, paired by file stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.masks import read_mask
from ..errors import CdtsdeError
from ..imagefiles import list_images, read_image, stem
from ..intensity import to_unit_image
from .image import image_metrics
from .masks import mask_metrics
from .perception import perception_metrics
from .segmentation import IntensityKMeans, kmeans_dice
from .summary import set_level, summarise


def _load(path: Path, kind: str) -> np.ndarray:
    if kind == "mask":
        return read_mask(path)
    array, meta = read_image(path)
    return to_unit_image(array, meta.format == "nifti")


# more distinct values than any class-index mask of this field holds: a grey image, not a mask
MAX_UNDECLARED_CLASSES = 32


def check_mask_values(values: np.ndarray, classes: dict[int, str] | None, path) -> None:
    """A class-index mask holds the declared class values only, or without declared classes few values."""
    present = np.unique(values)
    if classes is not None:
        unknown = sorted(set(present.tolist()) - set(classes))
        if unknown:
            raise CdtsdeError(f"{path}: mask values {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not among "
                              f"the declared classes {sorted(classes)}")
    elif present.size > MAX_UNDECLARED_CLASSES:
        raise CdtsdeError(f"{path}: {present.size} distinct values, not a class-index mask (declare the classes "
                          f"with --classes VALUE:NAME,..., or score grey images with --kind image)")


def evaluate_folders(pred_dir: str | Path, target_dir: str | Path, kind: str = "image",
                     foreground_dir: str | Path | None = None, nonzero_foreground: bool = False,
                     classes: dict[int, str] | None = None, foreground: tuple[int, ...] | None = None,
                     skeleton_tolerance: float = 2.0, kmeans: list[IntensityKMeans] | None = None,
                     perception: bool = False):
    """Returns (rows, summary, problems): one row of metrics per pair (with its "name"), their summary,
    and (path, reason) for every file that was unpaired or unreadable (those are skipped, not fatal).
    `perception` (images of one size) adds the set-level perception metrics (`perception/...`).
    Kind "image": metrics in [0, 1]; with `foreground_dir` (masks by stem) or `nonzero_foreground` (target
    > 0, the brain in skull-stripped MRI) the same metrics restricted to the foreground are added with a
    "_fg" suffix. NIfTI volumes are scored as one image whose slices are channels. `kmeans` (clusterings
    fit on target-modality training images, `fit_kmeans`) adds the K-Means Dice of seed 002 per model."""
    if kind not in ("image", "mask"):
        raise CdtsdeError(f"kind must be 'image' or 'mask', got {kind!r}")
    preds = {stem(p): p for p in list_images(pred_dir)}
    targets = {stem(p): p for p in list_images(target_dir)}
    masks = {stem(p): p for p in list_images(foreground_dir)} if foreground_dir else {}
    problems = [(preds[k], "no target with this name") for k in sorted(set(preds) - set(targets))]
    problems += [(targets[k], "no prediction with this name") for k in sorted(set(targets) - set(preds))]
    rows = []
    sets: tuple[list, list] = ([], [])
    if perception and kind != "image":
        raise CdtsdeError("--perception compares images: use it with --kind image")
    for name in sorted(set(preds) & set(targets)):
        try:
            pred, target = _load(preds[name], kind), _load(targets[name], kind)
            if pred.shape != target.shape:
                raise CdtsdeError(f"{preds[name]}: shape {pred.shape} differs from the target's {target.shape}")
            if kind == "mask":
                for path, values in ((preds[name], pred), (targets[name], target)):
                    check_mask_values(values, classes, path)
                row = mask_metrics(pred, target, classes=classes, foreground=foreground,
                                   skeleton_tolerance=skeleton_tolerance)
            else:
                row = image_metrics(pred, target)
                row.update(kmeans_dice(kmeans or [], pred, target))
                if perception:
                    sets[0].append(pred)
                    sets[1].append(target)
                region = None
                if foreground_dir:
                    if name not in masks:
                        raise CdtsdeError(f"{targets[name]}: no foreground mask named {name} in {foreground_dir}")
                    region = read_image(masks[name])[0] > 0
                elif nonzero_foreground:
                    region = target > 0
                if region is not None:
                    if region.ndim == 3 and region.shape != target.shape:
                        region = region.any(-1)  # an RGB mask image
                    if region.shape[:2] != target.shape[:2]:
                        raise CdtsdeError(f"{masks.get(name, targets[name])}: foreground of shape {region.shape} "
                                          f"does not match the target's {target.shape}")
                    if region.ndim < target.ndim:
                        region = np.broadcast_to(region[..., None], target.shape)
                    row.update({f"{k}_fg": v for k, v in image_metrics(pred, target, mask=region).items()})
            rows.append({"name": name, **row})
        except (CdtsdeError, ValueError) as exc:
            problems.append((preds[name], str(exc)))
    summary = summarise([{k: v for k, v in row.items() if k != "name"} for row in rows])
    if perception and sets[0]:
        summary.update(set_level({f"perception/{k}": v for k, v in perception_metrics(*sets).items()}, len(sets[0])))
    return rows, summary, problems


def fit_kmeans(folder: str | Path, clusters: list[int], seed: int = 0) -> tuple[list[IntensityKMeans], list]:
    """K-Means on the intensities of every image in `folder` (target-modality training images, never the
    test targets), one clustering per count in `clusters`; returns (clusterings, problems)."""
    images, problems = [], []
    for path in list_images(folder):
        try:
            images.append(_load(path, "image"))
        except CdtsdeError as exc:
            problems.append((path, str(exc)))
    if not images:
        raise CdtsdeError(f"{folder}: no readable images to fit K-Means on")
    return [IntensityKMeans(k, seed=seed).fit(images) for k in clusters], problems
