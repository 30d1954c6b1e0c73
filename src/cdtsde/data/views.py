"""The forms a method trains on besides paired sets, as views of built datasets (`cdtsde.run` chooses by the
method's data kind; the training loop draws their index streams, `stream_sizes`):

* unpaired: `UnpairedData(sources, targets)`, two sets drawn independently (index pairs (i, j));
* target-only: `TargetOnlyData(dataset)`, the targets alone.

`input_reading` says how such training data read the files `translate` will later be given, `file_reading`
how they read either side (the targets: how `evaluate` reads the targets a model is scored against), and
`target_band_names` what the bands of the target they teach are called.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..imagefiles import band_descriptions
from .readers import FileReading


def side(item: dict, name: str) -> torch.Tensor:
    """One side of an item: `name` ("source" or "target") of a paired item, or "image" of a one-sided one."""
    return item[name] if name in item else item["image"]


class UnpairedData(Dataset):
    """Sources and targets from two unaligned sets (paired sets give their own side; one-sided sets, items
    with an "image", give theirs), indexed by (i, j)."""

    paired = False

    def __init__(self, sources: Dataset, targets: Dataset):
        self.sources, self.targets = sources, targets
        self.source_channels = getattr(sources, "source_channels", None) or getattr(sources, "channels", None)
        self.target_channels = getattr(targets, "target_channels", None) or getattr(targets, "channels", None)
        self.target_classes = getattr(targets, "target_classes", None)
        # both sides of one paired set (its pairing ignored) must not report its skipped files twice
        self.skipped = list(dict.fromkeys(getattr(sources, "skipped", []) + getattr(targets, "skipped", [])))
        self.stream_sizes = (len(sources), len(targets))

    def __len__(self) -> int:
        return max(self.stream_sizes)

    def __getitem__(self, index) -> dict:
        i, j = index if isinstance(index, tuple) else (index % self.stream_sizes[0], index % self.stream_sizes[1])
        source, target = self.sources[i], self.targets[j]
        return {"source": side(source, "source"), "target": side(target, "target"),
                "name": f"{source['name']}|{target['name']}"}


class TargetOnlyData(Dataset):
    """The targets of a paired set (or the images of a one-sided set) alone."""

    paired = False
    source_channels = None

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.target_channels = getattr(dataset, "target_channels", None) or getattr(dataset, "channels", None)
        self.target_classes = getattr(dataset, "target_classes", None)
        self.skipped = getattr(dataset, "skipped", [])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> dict:
        item = self.dataset[index]
        return {"target": side(item, "target"), "name": item["name"]}


def side_set(dataset, read_side: str):
    """The built set whose `read_side` ("source" or "target") files a training set reads: an unpaired set's
    set of that side, a target-only set's images, else the set itself."""
    if isinstance(dataset, UnpairedData):
        return dataset.sources if read_side == "source" else dataset.targets
    if isinstance(dataset, TargetOnlyData):
        return dataset.dataset
    return dataset


def file_reading(dataset, read_side: str) -> dict | None:
    """The record of how a built training set read its `read_side` files (`side_set`); None where no file
    reader applies (class-index mask targets)."""
    reader = getattr(side_set(dataset, read_side), f"{read_side}_reader", None)
    return reader.record() if isinstance(reader, FileReading) else None


def input_reading(dataset) -> dict | None:
    """The record of how the training data read the files `translate` will be given: the sources, or, for
    a target-only method (its inputs are images of another modality stored alike), the targets."""
    return file_reading(dataset, "target" if isinstance(dataset, TargetOnlyData) else "source")


def target_band_names(dataset) -> tuple[str, ...] | None:
    """The names of the target's bands as the training data read them: the band descriptions every target
    file gives alike (a GeoTIFF's, e.g. Sentinel-2 "B4", "B3", "B2", "B8"), picked as the target's reader
    picks its bands (`target_bands`). None where the targets are not files of named bands (a mask, NIfTI
    slices, PNGs), where their files name their bands differently or where the names do not count the
    target's channels."""
    channels = dataset.target_channels  # as the method is told them: after any change of channel count
    dataset = side_set(dataset, "target")
    reader = getattr(dataset, "target_reader", None)
    if not isinstance(reader, FileReading) or getattr(dataset, "target_classes", None):
        return None
    named = None
    for path in dataset.target_files():
        names = band_descriptions(path)
        if names is None or named not in (None, names):
            return None
        named = names
    names = None if named is None else reader.band_names(named)
    return names if names is not None and len(names) == channels else None
