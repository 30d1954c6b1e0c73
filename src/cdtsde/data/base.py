"""The dataset every kind builds on: a list of entries, each read into a (source, target) pair of
channels-last arrays in [0, 1] (a mask target as class indices), then adapted to the configured channel
counts, transformed and mapped to [-1, 1] tensors.

Bad inputs never stop the dataset. Problems found while indexing (missing partner, unreadable header,
size mismatch) drop the entry at construction; problems found while decoding (truncated data, NaN)
drop it when first read and the next entry is returned instead. Either way `(path, reason)` is appended
to `.skipped` and a warning names the file. `verify=True` decodes every entry up front so that `.skipped`
is complete before training (what `cdtsde data inspect` uses). With DataLoader workers, files skipped
inside a worker are reported by its warning only: `.skipped` of the main process does not see them.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CdtsdeError
from ..intensity import unit_to_model
from .masks import encode_classes
from .transforms import PairedTransform


def adapt_channels(array: np.ndarray, channels: int, path) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W, channels): colour to grey by the mean of RGB, grey to colour by
    repetition, RGBA to RGB by dropping alpha; any other mismatch is an error naming the file."""
    if array.ndim == 2:
        array = array[..., None]
    have = array.shape[-1]
    if have == channels:
        return array
    if channels == 1 and have in (3, 4):
        # a matrix product is several times faster than mean(axis=-1) over the strided last axis
        return array[..., :3] @ np.full((3, 1), 1.0 / 3.0, dtype=array.dtype)
    if channels == 3 and have == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 3 and have == 4:
        return array[..., :3]
    raise CdtsdeError(f"{path}: has {have} channels, cannot use it as {channels}")


def natural_channels(array: np.ndarray) -> int:
    """Channel count an image really has: grey stored as RGB (SAR scenes, EL JPGs) counts as one."""
    if array.ndim == 2:
        return 1
    if array.shape[-1] in (3, 4) and (array[..., :3] == array[..., :1]).all():
        return 1
    return array.shape[-1]


class PairedDataset(Dataset, ABC):
    """Subclasses fill `self.entries` and implement `read(entry)` and `describe(entry)`, then call
    `self.finish(...)`."""

    target_classes: int | None = None

    def __init__(self):
        self.entries: list = []
        self.skipped: list[tuple[str, str]] = []

    @abstractmethod
    def read(self, entry) -> tuple[np.ndarray, np.ndarray, str]:
        """(source float32 HxW[xC] in [0, 1], target likewise or HxW class indices, name)."""

    @abstractmethod
    def describe(self, entry) -> str:
        """The file (or file region) an entry comes from, for error reports."""

    def target_files(self) -> list[Path]:
        """The files the targets are read whole from, whose headers say more of them (their band names);
        none for data that are not (volumes cut into slices, scenes cut into tiles, generated images)."""
        return []

    def finish(self, transform: PairedTransform, channels: dict | None, verify: bool) -> None:
        self.transform = transform
        self._bad: set[int] = set()
        if verify:
            good = []
            for entry in self.entries:
                try:
                    self.read_checked(entry)
                    good.append(entry)
                except CdtsdeError as exc:
                    self.skip(entry, exc)
            self.entries = good
        channels = channels or {}
        self.source_channels = channels.get("source")
        self.target_channels = self.target_classes or channels.get("target")
        if (self.source_channels is None or self.target_channels is None) and self.entries:
            source, target, _ = self._first_readable()
            self.source_channels = self.source_channels or natural_channels(source)
            self.target_channels = self.target_channels or natural_channels(target)

    def _first_readable(self):
        for index, entry in enumerate(self.entries):
            if index in self._bad:
                continue
            try:
                return self.read_checked(entry)
            except CdtsdeError as exc:
                self._bad.add(index)
                self.skip(entry, exc)
        raise CdtsdeError(f"no readable pairs among {len(self.entries)} entries")

    def skip(self, entry, reason) -> None:
        self.skipped.append((self.describe(entry), str(reason)))
        warnings.warn(f"skipping {self.describe(entry)}: {reason}", stacklevel=3)

    def read_checked(self, entry):
        source, target, name = self.read(entry)
        if source.shape[:2] != target.shape[:2]:
            raise CdtsdeError(
                f"{self.describe(entry)}: source is {source.shape[1]}x{source.shape[0]} but target is "
                f"{target.shape[1]}x{target.shape[0]}"
            )
        if self.target_classes and target.size and (target.min() < 0 or target.max() >= self.target_classes):
            raise CdtsdeError(f"{self.describe(entry)}: mask values {int(target.min())}..{int(target.max())} "
                              f"outside the {self.target_classes} declared classes 0..{self.target_classes - 1}")
        return source, target, name

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        # past the end is an IndexError (the sequence protocol: `for item in dataset` stops); the wrap below
        # only steps over unreadable entries
        if not -len(self.entries) <= index < len(self.entries):
            raise IndexError(f"item {index} of a dataset of {len(self.entries)}")
        for attempt in range(len(self.entries)):
            current = (index + attempt) % len(self.entries)
            if current in self._bad:
                continue
            try:
                source, target, name = self.read_checked(self.entries[current])
                return self._to_item(source, target, name, self.entries[current])
            except CdtsdeError as exc:
                self._bad.add(current)
                self.skip(self.entries[current], exc)
        raise CdtsdeError(f"no readable pairs among {len(self.entries)} entries")

    def _to_item(self, source, target, name, entry) -> dict:
        where = self.describe(entry)
        source = torch.from_numpy(np.ascontiguousarray(adapt_channels(source, self.source_channels, where)))
        if self.target_classes:
            # class indices go through the transforms (nearest resize) and are encoded at the final size
            target = torch.from_numpy(target.astype(np.int64))[None]
        else:
            target = torch.from_numpy(
                np.ascontiguousarray(adapt_channels(target, self.target_channels, where))
            )
            target = target.permute(2, 0, 1)
        source, target = self.transform(
            source.permute(2, 0, 1).float(), target.float(), target_is_mask=bool(self.target_classes)
        )
        if self.target_classes:
            target = torch.from_numpy(encode_classes(target[0].to(torch.int64).numpy(), self.target_classes))
        else:
            target = unit_to_model(target)
        return {"source": unit_to_model(source), "target": target, "name": name}
