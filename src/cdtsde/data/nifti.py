"""NIfTI volume pairs -> 2-D slices, paired by subject id and split by subject.

File names give subject and modality: BraTS `<id>/<id>_t1.nii.gz`, IXI `IXI002-Guys-0828-T1.nii.gz`;
2-D slice files such as `IXI002-Guys-0828-T1_slice90.nii.gz` pair by subject and slice tag. Each volume is
scaled to [0, 1] by `cdtsde.intensity.volume_steps` (a high percentile of its non-zero voxels maps to 1),
the same function `translate` applies to a NIfTI file. Slices whose foreground (normalised source or target above
`FOREGROUND_LEVEL`) covers less than `min_foreground` of the slice are left out.

With `context_slices` k each source slice carries its k neighbours on each side of the volume (the slices
left out included) as extra channels, in volume order, so that the slice itself is the middle one; at the
volume's edges the first and last slices stand in for the missing ones (`with_context`, which `translate`
applies to a volume in the same way). The target stays the one slice.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import CdtsdeError
from ..imagefiles import folders_below, read_image
from ..intensity import NIFTI_PERCENTILE, VOLUME_STEPS, volume_steps
from .base import PairedDataset
from .readers import NiftiReading
from .specs import NiftiSpec
from .splits import split_groups

NAME_PATTERN = re.compile(
    r"^(?P<subject>.+?)[-_](?P<modality>t1ce|t1|t2|flair|pd|seg)(?P<tag>_slice\d+)?$", re.IGNORECASE
)
FOREGROUND_LEVEL = 0.02


def parse_nifti_name(path: Path) -> tuple[str, str, str] | None:
    """(subject, modality lower-case, slice tag) from a NIfTI file name, or None if it does not match."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        return None
    match = NAME_PATTERN.match(name)
    if not match:
        return None
    return match["subject"], match["modality"].lower(), match["tag"] or ""


def find_volume_pairs(root: Path, source: str, target: str):
    """({(subject, tag): (source path, target path)}, unmatched [(path, reason)])."""
    if not root.is_dir():
        raise CdtsdeError(f"{root}: not a directory")
    found: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(p for folder in folders_below(root) for p in folder.glob("*.nii*") if p.is_file()):
        parsed = parse_nifti_name(path)
        if parsed and parsed[1] in (source, target):
            found.setdefault((parsed[0], parsed[2]), {})[parsed[1]] = path
    pairs, unmatched = {}, []
    for key, paths in sorted(found.items()):
        if len(paths) == 2:
            pairs[key] = (paths[source], paths[target])
        else:
            ((have, path),) = paths.items()
            unmatched.append(
                (str(path), f"no {target if have == source else source} volume for subject {key[0]}")
            )
    return pairs, unmatched


def as_slices(volume: np.ndarray, axis: int, path) -> np.ndarray:
    """(N, H, W) slices along `axis`; a 2-D image (or a volume with one slice) is one slice."""
    volume = np.squeeze(volume) if volume.ndim > 2 and 1 in volume.shape else volume
    if volume.ndim == 2:
        return volume[None]
    if volume.ndim != 3:
        raise CdtsdeError(f"{path}: expected a 2-D or 3-D NIfTI image, got shape {volume.shape}")
    return np.moveaxis(volume, axis, 0)


def context_indices(count: int, context_slices: int) -> np.ndarray:
    """(count, 2k + 1) slice indices: row i holds i - k .. i + k, those outside the volume replaced by its
    first or last slice (edges replicated)."""
    offsets = np.arange(-context_slices, context_slices + 1)
    return np.clip(np.arange(count)[:, None] + offsets, 0, count - 1)


def with_context(slices: np.ndarray, context_slices: int) -> np.ndarray:
    """(S, H, W, C) slices of one volume -> (S, H, W, (2k + 1) C): each slice with its k neighbours on each
    side as extra channels, slice-major (slice i - k's C channels first), so the slice itself is the middle
    C channels; edges replicated (`context_indices`)."""
    count, height, width, channels = slices.shape
    stacked = slices[context_indices(count, context_slices)]  # (S, 2k + 1, H, W, C)
    return np.moveaxis(stacked, 1, 3).reshape(count, height, width, -1)


class NiftiSliceDataset(PairedDataset):
    """Entries are (pair index, slice index); decoded, normalised volumes are kept per instance (the source's
    whole, for its slices' neighbours)."""

    def __init__(self, pairs, axis=2, min_foreground=0.1, percentile=NIFTI_PERCENTILE, slice_step=1,
                 context_slices=0):
        # what `translate` replays (cdtsde.data.readers); the volumes are read below, in uint16 steps
        self.source_reader = self.target_reader = NiftiReading(percentile)
        super().__init__()
        self.context_slices = context_slices
        self.paths, self.slices = [], []
        for (subject, tag), (source_path, target_path) in pairs:
            try:
                source = self._load(source_path, axis, percentile)
                target = self._load(target_path, axis, percentile)
            except CdtsdeError as exc:
                self.skipped.append((f"{source_path} | {target_path}", str(exc)))
                continue
            if source.shape != target.shape:
                self.skipped.append(
                    (f"{source_path} | {target_path}", f"shape mismatch {source.shape} vs {target.shape}")
                )
                continue
            if context_slices and len(source) == 1:
                self.skipped.append((str(source_path), f"a 2-D slice has no neighbouring slices for "
                                                       f"context_slices: {context_slices}"))
                continue
            foreground = ((source > FOREGROUND_LEVEL * VOLUME_STEPS) | (target > FOREGROUND_LEVEL * VOLUME_STEPS)).mean(
                axis=(1, 2)
            )
            keep = np.flatnonzero(foreground >= min_foreground)[::slice_step]
            pair_index = len(self.paths)
            self.paths.append((source_path, target_path, f"{subject}{tag}"))
            self.slices.append((source, target[keep], keep))
            self.entries.extend((pair_index, position) for position in range(len(keep)))

    @staticmethod
    def _load(path, axis, percentile) -> np.ndarray:
        volume, _ = read_image(path)
        # the one MRI normalisation, shared with `translate` (cdtsde.intensity), kept in uint16 steps
        return as_slices(volume_steps(volume, percentile), axis, path)

    def read(self, entry):
        pair_index, position = entry
        source, target, numbers = self.slices[pair_index]
        number = int(numbers[position])
        pair_name = self.paths[pair_index][2]
        # a 2-D slice file already names its slice (`..._slice90`)
        name = pair_name if "_slice" in pair_name else f"{pair_name}_slice{number:03d}"
        around = context_indices(len(source), self.context_slices)[number]  # the slice and its neighbours
        return (np.moveaxis(source[around], 0, -1) / np.float32(VOLUME_STEPS),
                target[position] / np.float32(VOLUME_STEPS), name)

    def describe(self, entry) -> str:
        source_path, target_path, _ = self.paths[entry[0]]
        return f"{source_path} | {target_path} slice {int(self.slices[entry[0]][2][entry[1]])}"


def build_nifti(root: Path, split: str, spec: NiftiSpec) -> NiftiSliceDataset:
    """Subjects (optionally restricted to `subjects`) are split into `val_subjects` / `test_subjects` /
    the rest with `seed`; only the requested split's volumes are decoded."""
    source, target = spec.source.lower(), spec.target.lower()
    pairs, unmatched = find_volume_pairs(root, source, target)
    if spec.subjects is not None:
        wanted = set(spec.subjects)
        pairs = {key: value for key, value in pairs.items() if key[0] in wanted}
    if not pairs:
        raise CdtsdeError(f"{root}: no {source}/{target} NIfTI pairs found")
    assignment = split_groups([key[0] for key in pairs], spec.val_subjects, spec.test_subjects, spec.seed)
    chosen = [(key, paths) for key, paths in pairs.items() if assignment[key[0]] == split]
    dataset = NiftiSliceDataset(chosen, axis=spec.axis, min_foreground=spec.min_foreground,
                                percentile=spec.percentile, slice_step=spec.slice_step,
                                context_slices=spec.context_slices)
    dataset.subjects = sorted({key[0] for key, _ in chosen})
    dataset.skipped[:0] = unmatched
    return dataset
