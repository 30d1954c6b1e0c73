"""Evaluate a folder of predictions against a folder of targets, paired by file stem (or by relative path
and a modality suffix: `pairing_names`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.masks import read_mask
from ..errors import CdtsdeError
from ..imagefiles import list_images, list_images_under, read_image, stem
from ..intensity import to_unit_image
from .scoring import ScoreAccumulator
from .segmentation import IntensityKMeans, fit_kmeans


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


def pairing_names(folder: str | Path, recursive: bool = False, suffix: str | None = None,
                  renamed: str | None = None) -> dict[str, Path]:
    """{name: file} of a folder's images: the name is the file's stem, with `recursive` its path below
    `folder` without the extension ("Brats18_x/Brats18_x_t2"). `suffix` keeps the files whose stem ends
    with it (the target modality of a folder holding every modality); `renamed` replaces that suffix (a
    prediction named for its input modality, "_t1", under its target's name, "_t2")."""
    folder = Path(folder)
    names = {}
    for path in list_images_under(folder) if recursive else list_images(folder):
        name = stem(path)
        if suffix is not None and not name.endswith(suffix):
            continue
        if renamed is not None:
            name = name[:len(name) - len(suffix)] + renamed
        names[(path.parent.relative_to(folder) / name).as_posix()] = path
    return names


def evaluate_folders(pred_dir: str | Path, target_dir: str | Path, kind: str = "image",
                     foreground_dir: str | Path | None = None, nonzero_foreground: bool = False,
                     classes: dict[int, str] | None = None, foreground: tuple[int, ...] | None = None,
                     skeleton_tolerance: float = 2.0, kmeans: list[IntensityKMeans] | None = None,
                     perception: bool = False, recursive: bool = False, rename: tuple[str, str] | None = None):
    """Returns (rows, summary, problems): one row of metrics per pair (with its "name") and their summary
    (`ScoreAccumulator`, which the options configure; no pair scored: no rows, an empty summary), and
    (path, reason) for every file that was unpaired or unreadable (those are skipped, not fatal).
    Images are read into [0, 1]; NIfTI volumes are scored as one image whose slices are channels. With
    `foreground_dir` (masks by stem) the "_fg" metrics are restricted to the mask of each pair's name.
    `kmeans` are clusterings fit on target-modality training images (`fit_kmeans_on_folder`). With `recursive`
    files pair by their path below each folder; `rename` = (input suffix, target suffix) pairs a prediction
    "<name><input suffix>" with the target "<name><target suffix>", and only the targets with that suffix
    count (`pairing_names`)."""
    scores = ScoreAccumulator(kind, classes=classes, foreground=foreground, skeleton_tolerance=skeleton_tolerance,
                              nonzero_foreground=nonzero_foreground, kmeans=kmeans, perception=perception)
    if foreground_dir and kind != "image":
        raise ValueError("a foreground folder restricts image metrics; masks are scored per class")
    source_suffix, target_suffix = rename or (None, None)
    preds = pairing_names(pred_dir, recursive, source_suffix, target_suffix)
    targets = pairing_names(target_dir, recursive, target_suffix)
    masks = {stem(p): p for p in list_images(foreground_dir)} if foreground_dir else {}
    problems = [(preds[k], "no target with this name") for k in sorted(set(preds) - set(targets))]
    problems += [(targets[k], "no prediction with this name") for k in sorted(set(targets) - set(preds))]
    for name in sorted(set(preds) & set(targets)):
        try:
            pred, target = _load(preds[name], kind), _load(targets[name], kind)
            if pred.shape != target.shape:
                raise CdtsdeError(f"{preds[name]}: shape {pred.shape} differs from the target's {target.shape}")
            if kind == "mask":
                for path, values in ((preds[name], pred), (targets[name], target)):
                    check_mask_values(values, classes, path)
            region = None
            if foreground_dir:
                if name not in masks:
                    raise CdtsdeError(f"{targets[name]}: no foreground mask named {name} in {foreground_dir}")
                region = read_image(masks[name])[0] > 0
                if region.ndim == 3 and region.shape != target.shape:
                    region = region.any(-1)  # an RGB mask image
            scores.update(name, pred, target, region)
        except (CdtsdeError, ValueError) as exc:
            problems.append((preds[name], str(exc)))
    rows, summary = scores.compute() if len(scores) else ([], {})
    return rows, summary, problems


def fit_kmeans_on_folder(folder: str | Path, clusters: list[int], seed: int = 0) -> tuple[list[IntensityKMeans], list]:
    """`fit_kmeans` on every image of `folder` read into [0, 1] (target-modality training images, never
    the test targets); returns (clusterings, problems), the unreadable files."""
    images, problems = [], []
    for path in list_images(folder):
        try:
            images.append(_load(path, "image"))
        except CdtsdeError as exc:
            problems.append((path, str(exc)))
    if not images:
        raise CdtsdeError(f"{folder}: no readable images to fit K-Means on")
    return fit_kmeans(images, clusters, seed), problems
