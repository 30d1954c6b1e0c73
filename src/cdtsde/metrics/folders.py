"""Evaluate a folder of predictions against a folder of targets, paired by file stem (or by relative path
and a modality suffix: `pairing_names`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..data.masks import read_mask
from ..data.readers import FileReading
from ..errors import CdtsdeError
from ..imagefiles import ImageMeta, list_images, list_images_under, read_image, stem
from ..imagefiles import renamed as renamed_name
from ..intensity import to_unit_image
from .scoring import ScoreAccumulator
from .segmentation import IntensityKMeans, fit_kmeans
from .volume import axis_codes_of


def read_scored(path: Path, kind: str = "image", reading: FileReading | None = None) -> tuple[np.ndarray, ImageMeta | None]:
    """A file as it is scored: a class-index mask (no meta), or an image in [0, 1] (`unit_scored`) with its
    meta (a NIfTI's affine)."""
    if kind == "mask":
        return read_mask(path), None
    array, meta = read_image(path)
    return unit_scored(array, meta, reading)[0], meta


def unit_scored(array: np.ndarray, meta: ImageMeta, reading: FileReading | None = None) -> tuple[np.ndarray, str | None]:
    """An image in [0, 1] as it is scored, and how it was scaled where that is a guess: by `reading`, the
    training data's reader (a target read as the model's targets were), else by `to_unit_image` (the dtype's
    range; NIfTI normalised per volume at the default percentile), which guesses for all but 8-bit images and
    floats already in [0, 1] (raw uint16 Sentinel-2 reflectance, divided by 3000 in training, would be
    divided by 65535)."""
    if reading is not None:
        return reading.to_unit(array, meta.path), None
    in_unit_range = array.dtype.kind == "f" and array.min() >= 0 and array.max() <= 1
    guess = None
    if meta.format == "nifti" and not in_unit_range:
        guess = "NIfTI normalised at the default percentile"
    elif array.dtype.kind in "ui" and array.dtype.itemsize > 1:
        guess = f"{array.dtype} by its full range"
    elif array.dtype.kind == "f" and not in_unit_range:
        guess = "float by its 0.5-99.5th percentiles"
    return to_unit_image(array, meta.format == "nifti"), guess


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


def pairing_names(folder: str | Path, recursive: bool | str = False, suffix: str | None = None,
                  renamed: str | None = None) -> dict[str, Path]:
    """{name: file} of a folder's images: the name is the file's stem, with `recursive` its path below
    `folder` without the extension ("Brats18_x/Brats18_x_t2"); a `recursive` glob keeps the files whose
    names match it ("*_t2.nii.gz": the T2 volumes of subject folders holding every modality). `suffix` keeps the files whose stem ends
    with it (the target modality of a folder holding every modality); `renamed` replaces that suffix (a
    prediction named for its input modality, "_t1", under its target's name, "_t2"). Two files of one name
    (a.png and a.tif) are an error naming both: pairing either would silently drop the other."""
    folder = Path(folder)
    names = {}
    pattern = recursive if isinstance(recursive, str) else "*"
    for path in list_images_under(folder, pattern) if recursive else list_images(folder):
        name = stem(path)
        if suffix is not None and not name.endswith(suffix):
            continue
        if renamed is not None:
            name = renamed_name(name, (suffix, renamed))
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
                     perception: bool = False, recursive: bool | str = False, rename: tuple[str, str] | None = None,
                     slice_axis: int = 2, target_reading: FileReading | None = None):
    """Returns (rows, summary, problems, volumes): one row of metrics per pair (with its "name") and their
    summary (`ScoreAccumulator`, which the options configure; no pair scored: no rows, an empty summary),
    (path, reason) for every file that was unpaired or unreadable (those are skipped, not fatal), and the
    `VolumeScores` of the volumes, with intervals over volumes.
    Images are read into [0, 1]; NIfTI volumes are scored as one image whose slices are channels, and as
    volumes (`ScoreAccumulator.update_volume`, planes named by the target's affine, the flicker along
    `slice_axis`, the array axis the translation cut them along; the foreground in 3-D). With
    `foreground_dir` (masks by stem) the "_fg" metrics are restricted to the mask of each pair's name.
    `kmeans` are clusterings fit on target-modality training images (`fit_kmeans_on_folder`). With `recursive`
    files pair by their path below each folder (a glob: the files matching it, `pairing_names`); `rename` =
    (input suffix, target suffix) pairs a prediction "<name><input suffix>" with the target
    "<name><target suffix>", and only the targets with that suffix
    count (`pairing_names`). `target_reading` (the training data's reader of its targets,
    `DataInfo.target_reading`) reads the image targets as the model's targets were read; without it they are
    scaled by `to_unit_image`, with a warning where that guesses (`unit_scored`). Predictions, written by
    `translate` in [0, 1] or an integer dtype's range, are read by `read_scored`."""
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
    volume_files, guesses = {}, {}
    for name in sorted(set(preds) & set(targets)):
        try:
            pred, _ = read_scored(preds[name], kind)
            if kind == "mask":
                target, meta = read_scored(targets[name], kind)
            else:
                array, meta = read_image(targets[name])
                target, guess = unit_scored(array, meta, target_reading)
                if guess:
                    guesses[guess] = guesses.get(guess, 0) + 1
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
    if guesses:
        warnings.warn(f"targets scaled into [0, 1] by a guess, not as the model's training data were read "
                      f"({', '.join(f'{count} {how}' for how, count in guesses.items())}): pass the training "
                      f"data's target_reading (cdtsde evaluate --checkpoint RUN or --data SPEC)", stacklevel=2)
    rows, summary = scores.compute() if len(scores) else ([], {})
    return rows, summary, problems, VolumeScores(*scores.compute_volumes(), volume_files)


def fit_kmeans_on_folder(folder: str | Path, clusters: list[int], seed: int = 0,
                         reading: FileReading | None = None) -> tuple[list[IntensityKMeans], list]:
    """`fit_kmeans` on every image of `folder` read into [0, 1] (target-modality training images, never
    the test targets; by `reading`, as the scored targets are read); returns (clusterings, problems), the
    unreadable files."""
    images, problems = [], []
    for path in list_images(folder):
        try:
            images.append(read_scored(path, reading=reading)[0])
        except CdtsdeError as exc:
            problems.append((path, str(exc)))
    if not images:
        raise CdtsdeError(f"{folder}: no readable images to fit K-Means on")
    return fit_kmeans(images, clusters, seed), problems
