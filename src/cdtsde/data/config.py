"""`build_dataset(spec, split)`: the one entry point the training loop uses. The spec's keys, their
defaults and checks are the dataclasses of `cdtsde.data.specs`, one per kind; an unknown key is an
error, so typos do not pass silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..settings import to_plain
from .base import PairedDataset
from .masks import PV_EL_CLASSES, decode_classes
from .nifti import build_nifti
from .paired import build_image_folder, build_list_file, build_paired_folder
from .procedural import make_pairs
from .readers import UnitReader
from .sar import build_sar_patches
from .specs import DataSpec, data_spec
from .splits import check_split
from .tiles import build_scene_tiles
from .transforms import PairedTransform

SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}
PROCEDURAL_SIZE = 32  # a procedural spec without `size` generates pairs of this size


class ProceduralDataset(PairedDataset):
    """Pairs generated in memory by `make_pairs`; each split uses its own seed so splits never share a pair.
    Files of the same images (`cdtsde data make`: 8-bit PNG, class-index masks) are read by `UnitReader`."""

    source_reader = target_reader = UnitReader()

    def __init__(self, task, n, size, seed, heterogeneity):
        super().__init__()
        self.pairs = make_pairs(task, n, size, seed, heterogeneity)
        self.task = task
        self.target_classes = len(PV_EL_CLASSES) if task == "el-cell" else None
        self.entries = list(range(n))

    def read(self, entry):
        source, target = self.pairs[entry]
        if self.target_classes:
            target = decode_classes(np.moveaxis(target, -1, 0))
        return source, target, f"{self.task}-{entry:05d}"

    def describe(self, entry) -> str:
        return f"{self.task} pair {entry}"


def build_dataset(spec: dict | DataSpec, split: str, base_dir=None) -> PairedDataset:
    """Dataset of `{"source", "target", "name"}` items for `split` ("train", "val" or "test") from a spec
    (plain data or a `cdtsde.data.specs.DataSpec`). Relative paths (`root`, `list`, `lists`) are resolved
    against `base_dir` (default: the working directory)."""
    check_split(split)
    spec = data_spec(spec)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if spec.kind == "procedural":
        held_out = spec.n_val if split == "val" else spec.n_test
        n = spec.n if split == "train" else held_out or max(1, spec.n // 10)
        dataset = ProceduralDataset(spec.task, n, spec.size or PROCEDURAL_SIZE, spec.seed + SPLIT_SEED_OFFSET[split],
                                    spec.heterogeneity)
    elif spec.kind == "list-file":
        dataset = build_list_file(base, split, spec)
    else:
        builders = {
            "paired-folder": build_paired_folder,
            "el-masks": build_paired_folder,
            "nifti": build_nifti,
            "brats": build_nifti,
            "ixi": build_nifti,
            "sar-patches": build_sar_patches,
            "scene-tiles": build_scene_tiles,
            "image-folder": build_image_folder,
        }
        dataset = builders[spec.kind](base / Path(spec.root).expanduser(), split, spec)
    transform = PairedTransform(spec.size, spec.resize, train=split == "train", hflip=spec.hflip, vflip=spec.vflip)
    channels = to_plain(spec.channels) or {}
    if spec.context_slices:  # one channel per slice: the slice and its neighbours (cdtsde.data.nifti)
        channels = {**channels, "source": 2 * spec.context_slices + 1}
    dataset.finish(transform, channels, spec.verify)
    return dataset
