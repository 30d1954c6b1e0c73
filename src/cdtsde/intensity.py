"""Intensities: one home for every mapping between stored values, [0, 1] (metrics, files) and [-1, 1]
(inside the models).

* `to_unit` / `from_unit`: an integer dtype's full range <-> [0, 1].
* `unit_to_model` / `model_to_unit`: [0, 1] <-> [-1, 1].
* `volume_steps` / `normalise_volume`: the one MRI normalisation, used both by the training datasets and
  by `translate` of a NIfTI file, so that a slice reaches the network identically either way: zero stays
  zero and the `percentile` of the non-zero voxels maps to 1 (robust to hot voxels, ignores the zero
  background of skull-stripped data), quantised to steps of 1 / 65535 (stored as uint16: a quarter of
  float64's memory, exact to 1.5e-5).
* `to_unit_image`: the rule `cdtsde evaluate` scores files by.
"""

from __future__ import annotations

import numpy as np

NIFTI_PERCENTILE = 99.5
VOLUME_STEPS = 65535


def to_unit(array: np.ndarray) -> np.ndarray:
    """Map an integer image to [0, 1] by its dtype's range; float images are returned as float32 unchanged."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype.kind in "ui":
        info = np.iinfo(array.dtype)
        return (array.astype(np.float32) - max(info.min, 0)) / float(info.max - max(info.min, 0))
    return array.astype(np.float32)


def from_unit(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of `to_unit`: clip to [0, 1] and quantise to an integer dtype (float dtypes: cast only)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        low = max(info.min, 0)
        return np.round(np.clip(array, 0.0, 1.0) * (info.max - low) + low).astype(dtype)
    return np.asarray(array, dtype=dtype)


def unit_to_model(x):
    """[0, 1] -> [-1, 1], the range every image lives in inside the models."""
    return x * 2.0 - 1.0


def model_to_unit(x):
    """[-1, 1] -> [0, 1], clipping first (tensors or arrays)."""
    clipped = x.clamp(-1, 1) if hasattr(x, "clamp") else np.clip(x, -1, 1)
    return (clipped + 1) / 2


def volume_steps(volume: np.ndarray, percentile: float = NIFTI_PERCENTILE) -> np.ndarray:
    """An MRI volume (or slice) normalised to [0, 1] in uint16 steps of 1 / VOLUME_STEPS: zero stays zero,
    the `percentile` of the non-zero voxels maps to 1, and negative intensities (if any) are shifted by the
    mirror percentile."""
    volume = volume.astype(np.float32)
    nonzero = volume[volume != 0]
    if nonzero.size == 0:
        return np.zeros(volume.shape, np.uint16)
    high = float(np.percentile(nonzero, percentile))
    low = min(0.0, float(np.percentile(nonzero, 100.0 - percentile)))
    unit = (volume != 0).astype(np.float32) if high <= low else np.clip((volume - low) / (high - low), 0.0, 1.0)
    return np.round(unit * VOLUME_STEPS).astype(np.uint16)


def normalise_volume(volume: np.ndarray, percentile: float = NIFTI_PERCENTILE) -> np.ndarray:
    """`volume_steps` as float32 in [0, 1]."""
    return volume_steps(volume, percentile) / np.float32(VOLUME_STEPS)


def to_unit_image(array: np.ndarray, is_nifti: bool, percentile: float = NIFTI_PERCENTILE) -> np.ndarray:
    """An image as float32 in [0, 1] for scoring: integer images (not NIfTI) by their dtype's range; values
    already in [0, 1] as they are (a translation written back); NIfTI otherwise by `normalise_volume`
    (what training used); other float images by their 0.5th-99.5th percentiles."""
    if not is_nifti and array.dtype.kind in "uib":
        return to_unit(array)
    values = array.astype(np.float32)
    if values.min() >= 0 and values.max() <= 1:
        return values
    if is_nifti:
        return normalise_volume(values, percentile)
    low, high = np.percentile(values, [0.5, 99.5])
    return np.clip((values - low) / max(high - low, 1e-12), 0, 1).astype(np.float32)
