"""Evaluate a folder of predictions against a folder of targets, paired by file stem (or by relative path
and a modality suffix: `pairing_names`)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..data.masks import read_mask
from ..errors import CdtsdeError
from ..imagefiles import ImageMeta, list_images, list_images_under, read_image, stem
from ..intensity import to_unit_image
from .scoring import ScoreAccumulator
from .segmentation import IntensityKMeans, fit_kmeans
from .volume import axis_codes_of


def read_scored(path: Path, kind: str = "image") -> tuple[np.ndarray, ImageMeta | None]:
    """A file as it is scored: a class-index mask (no meta), or an image in [0, 1] (NIfTI normalised per
    volume, as training reads it) with its meta (a NIfTI's affine)."""
    if kind == "mask":
        return read_mask(path), None
    array, meta = read_image(path)
    return to_unit_image(array, meta.format == "nifti"), meta


def is_volume(array: np.ndarray, meta: ImageMeta | None) -> bool:
    """A NIfTI image with three axes of more than one voxel: scored as a volume too."""
    return meta is not None and meta.format == "nifti" and array.ndim == 3 and min(array.shape) > 1


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
    prediction named for its input modality, "_t1", under its target's name, "_t2"). Two files of one name
    (a.png and a.tif) are an error naming both: pairing either would silently drop the other."""
    folder = Path(folder)
    names = {}
    for path in list_images_under(folder) if recursive else list_images(folder):
        name = stem(path)
        if suffix is not None and not name.endswith(suffix):
            continue
        if renamed is not None:
            name = name[:len(name) - len(suffix)] + renamed
        key = (path.parent.relative_to(folder) / name).as_posix()
        if key in names:
            raise CdtsdeError(f"{names[key]} and {path} both pair as {key!r}: rename or move one of them")
        names[key] = path
    return names


class VolumeScores(NamedTuple):
    """The volumes among the scored pairs: their rows and summary (`ScoreAccumulator.compute_volumes`) and
    {name: (prediction file, target file)} of each."""

    rows: list[dict]
    summary: dict
    files: dict[str, tuple[Path, Path]]


def evaluate_folders(pred_dir: str | Path, target_dir: str | Path, kind: str = "image",
                     foreground_dir: str | Path | None = None, nonzero_foreground: bool = False,
                     classes: dict[int, str] | None = None, foreground: tuple[int, ...] | None = None,
                     skeleton_tolerance: float = 2.0, kmeans: list[IntensityKMeans] | None = None,
                     perception: bool = False, recursive: bool = False, rename: tuple[str, str] | None = None,
                     slice_axis: int = 2):
    """Returns (rows, summary, problems, volumes): one row of metrics per pair (with its "name") and their
    summary (`ScoreAccumulator`, which the options configure; no pair scored: no rows, an empty summary),
    (path, reason) for every file that was unpaired or unreadable (those are skipped, not fatal), and the
    `VolumeScores` of the volumes, with intervals over volumes.
    Images are read into [0, 1]; NIfTI volumes are scored as one image whose slices are channels, and as
    volumes (`ScoreAccumulator.update_volume`, planes named by the target's affine, the flicker along
    `slice_axis`, the array axis the translation cut them along; the foreground in 3-D). With
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
    volume_files = {}
    for name in sorted(set(preds) & set(targets)):
        try:
            (pred, _), (target, meta) = read_scored(preds[name], kind), read_scored(targets[name], kind)
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
            if is_volume(target, meta):
                scores.update_volume(name, pred, target, region, axis_codes_of(meta), slice_axis)
                volume_files[name] = (preds[name], targets[name])
        except (CdtsdeError, ValueError) as exc:
            problems.append((preds[name], str(exc)))
    rows, summary = scores.compute() if len(scores) else ([], {})
    return rows, summary, problems, VolumeScores(*scores.compute_volumes(), volume_files)


def fit_kmeans_on_folder(folder: str | Path, clusters: list[int], seed: int = 0) -> tuple[list[IntensityKMeans], list]:
    """`fit_kmeans` on every image of `folder` read into [0, 1] (target-modality training images, never
    the test targets); returns (clusterings, problems), the unreadable files."""
    images, problems = [], []
    for path in list_images(folder):
        try:
            images.append(read_scored(path)[0])
        except CdtsdeError as exc:
            problems.append((path, str(exc)))
    if not images:
        raise CdtsdeError(f"{folder}: no readable images to fit K-Means on")
    return fit_kmeans(images, clusters, seed), problems
