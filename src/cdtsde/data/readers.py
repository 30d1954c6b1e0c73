"""File -> float32 array in [0, 1], channels last. Integer images use their dtype's full range (8-bit
PNG/JPG, 16-bit PNG, uint16 TIFF); float images are taken as already in [0, 1] unless a `value_range`
[low, high] says otherwise (values are clipped to it); a float image beyond [0, 1] (by more than
UNIT_OVERSHOOT) without one is refused, naming the file and its range, not clipped.

Every reader is a `FileReading` and every one lives here (the dataset modules build them, this module
imports none of them): `to_unit(array, path)` maps a decoded file to [0, 1], and `record()` describes it as
plain data. The training data's record of its sources (`cdtsde.data.views.input_reading`) is kept in the
checkpoint (`DataInfo.source_reading`) and `translate` rebuilds the reader from it
(`reading_from_record`), so that a file reaches the network identically in training and translation,
whatever its kind (NIfTI, dB SAR (Sentinel-1), Sentinel-2 reflectance, 8/16-bit, float with a value range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import CdtsdeError
from ..imagefiles import read_image
from ..intensity import NIFTI_PERCENTILE, normalise_volume, to_unit
from ..settings import from_plain, to_plain

SAR_BANDS = ("VV", "VH")  # the band order of SEN12MS-CR's Sentinel-1 GeoTIFFs


class FileReading:
    """A file's mapping to [0, 1]; subclasses are frozen dataclasses of their settings with a `kind`."""

    kind: ClassVar[str]

    def __call__(self, path) -> np.ndarray:
        array, _ = read_image(path)
        return self.to_unit(array, path)

    def to_unit(self, array: np.ndarray, path) -> np.ndarray:
        raise NotImplementedError

    def record(self) -> dict:
        return {"kind": self.kind, **to_plain(self)}

    def band_names(self, file_bands: tuple[str, ...]) -> tuple[str, ...] | None:
        """The names of the bands this reading gives of a file whose bands are named `file_bands`; None where
        it does not keep a file's bands as they are or picked by index (NIfTI volumes, dB SAR)."""
        return None


@dataclass(frozen=True)
class UnitReader(FileReading):
    kind: ClassVar[str] = "unit"
    value_range: tuple[float, float] | None = None
    bands: tuple[int, ...] | None = None  # indices of the channels to keep (e.g. RGB of a 4-band TIFF: 0, 1, 2)

    def to_unit(self, array: np.ndarray, path) -> np.ndarray:
        return scale_to_unit(select_bands(array, self.bands, path), self.value_range, path)

    def band_names(self, file_bands: tuple[str, ...]) -> tuple[str, ...] | None:
        return selected_band_names(file_bands, self.bands)


def select_bands(array: np.ndarray, bands: tuple[int, ...] | None, path) -> np.ndarray:
    """The channels `bands` (indices, in that order) of a channels-last image; None keeps all."""
    if bands is None:
        return array
    channels = array.shape[-1] if array.ndim == 3 else 1
    if max(bands) >= channels or min(bands) < 0:
        raise CdtsdeError(f"{path}: bands {list(bands)} asked of an image with {channels} band(s) "
                          f"(indices start at 0)")
    return array[..., list(bands)] if array.ndim == 3 else array[..., None]


def selected_band_names(file_bands: tuple[str, ...], bands: tuple[int, ...] | None) -> tuple[str, ...] | None:
    """The names of the bands `select_bands` keeps of a file whose bands are named `file_bands`; None where
    it asks for a band the file does not have."""
    if bands is None:
        return tuple(file_bands)
    return tuple(file_bands[band] for band in bands) if max(bands) < len(file_bands) and min(bands) >= 0 else None


@dataclass(frozen=True)
class NiftiReading(FileReading):
    """The MRI normalisation of `cdtsde.intensity.normalise_volume`, over the whole volume."""

    kind: ClassVar[str] = "nifti"
    percentile: float = NIFTI_PERCENTILE

    def to_unit(self, array: np.ndarray, path) -> np.ndarray:
        return normalise_volume(array, self.percentile)


# how far a float image without a value_range may stray outside [0, 1] and be clipped (a resampling's
# overshoot); beyond it the file is refused: clipping would flatten its values silently
UNIT_OVERSHOOT = 0.01


def scale_to_unit(array: np.ndarray, value_range=None, path=None) -> np.ndarray:
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        return np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    if array.dtype.kind == "f":
        values = array.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        if low < -UNIT_OVERSHOOT or high > 1 + UNIT_OVERSHOOT:
            raise CdtsdeError(f"{path}: float values {low:g}..{high:g}, outside [0, 1], would be clipped; give "
                              f"the data spec the range of your data as its value_range (docs/data.md; this "
                              f"file's: [{low:g}, {high:g}])")
        return np.clip(values, 0.0, 1.0)
    return to_unit(array)


@dataclass(frozen=True)
class SarReader(FileReading):
    kind: ClassVar[str] = "sar-db"
    db_range: tuple[float, float] = (-25.0, 0.0)
    bands: tuple[str, ...] = SAR_BANDS

    def to_unit(self, array: np.ndarray, path) -> np.ndarray:
        if array.dtype.kind != "f":
            return to_unit(array)
        if array.ndim == 3:
            if array.shape[-1] != len(SAR_BANDS):
                raise CdtsdeError(
                    f"{path}: expected {len(SAR_BANDS)} SAR bands {SAR_BANDS}, got {array.shape[-1]}"
                )
            array = array[..., [SAR_BANDS.index(band) for band in self.bands]]
        low, high = self.db_range
        return np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)


@dataclass(frozen=True)
class OpticalReader(FileReading):
    kind: ClassVar[str] = "optical"
    reflectance_max: float = 3000.0
    bands: tuple[int, ...] | None = None  # indices of the bands to keep (BigEarthNet [B4, B3, B2, B8] -> RGB: 0, 1, 2)

    def band_names(self, file_bands: tuple[str, ...]) -> tuple[str, ...] | None:
        return selected_band_names(file_bands, self.bands)

    def to_unit(self, array: np.ndarray, path) -> np.ndarray:
        array = select_bands(array, self.bands, path)
        if array.dtype == np.uint16:
            return np.clip(array.astype(np.float32) / self.reflectance_max, 0.0, 1.0)
        return scale_to_unit(array, None, path)


READINGS: dict[str, type[FileReading]] = {cls.kind: cls for cls in (UnitReader, NiftiReading, SarReader, OpticalReader)}


def reading_from_record(record: dict, where: str = "data.source_reading") -> FileReading:
    """The reader a `FileReading.record()` describes; an unknown kind or setting is an error naming `where`."""
    if not isinstance(record, dict) or record.get("kind") not in READINGS:
        kind = record.get("kind") if isinstance(record, dict) else record
        raise CdtsdeError(f"{where}: unknown input reading {kind!r} (known: {', '.join(READINGS)})")
    try:
        return from_plain(READINGS[record["kind"]], {k: v for k, v in record.items() if k != "kind"}, where)
    except ValueError as exc:
        raise CdtsdeError(str(exc)) from exc

