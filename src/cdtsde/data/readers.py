"""File -> float32 array in [0, 1], channels last. Integer images use their dtype's full range (8-bit
PNG/JPG, 16-bit PNG, uint16 TIFF); float images are taken as already in [0, 1] unless a `value_range`
[low, high] says otherwise (values are clipped to it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imagefiles import read_image
from ..intensity import to_unit


@dataclass(frozen=True)
class UnitReader:
    value_range: tuple[float, float] | None = None

    def __call__(self, path) -> np.ndarray:
        array, _ = read_image(path)
        return scale_to_unit(array, self.value_range)


def scale_to_unit(array: np.ndarray, value_range=None) -> np.ndarray:
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        return np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    if array.dtype.kind == "f":
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    return to_unit(array)
