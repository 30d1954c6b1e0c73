"""`build_dataset(spec, split)`: the one entry point the training loop uses.

Keys common to every kind: `size` (training size; omitted -> native size), `resize` ("resize" or
"crop"), `hflip` / `vflip` (paired random flips, training split only), `channels: {source: C, target: C}`
(default: what the first pair has), `verify` (decode every pair up front so `.skipped` is complete).
Kind-specific keys are listed in KIND_KEYS; an unknown key is an error, so typos do not pass silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import CdtsdeError
from .base import PairedDataset
from .masks import PV_EL_CLASSES, decode_classes
from .nifti import build_nifti
from .paired import build_image_folder, build_list_file, build_paired_folder
from .procedural import make_pairs
from .readers import UnitReader
from .sar import build_sar_patches
from .splits import check_split
from .tiles import build_scene_tiles
from .transforms import PairedTransform

COMMON_KEYS = {"kind", "size", "resize", "hflip", "vflip", "channels", "verify"}
FOLDER_KEYS = {
    "root",
    "source_dir",
    "target_dir",
    "split_dirs",
    "classes",
    "value_range",
    "val_fraction",
    "test_fraction",
    "groups",
    "val_groups",
    "test_groups",
    "source_bands",
    "target_bands",
    "seed",
}
GROUP_KEYS = {"groups", "val_groups", "test_groups"}
NIFTI_KEYS = {
    "root",
    "source",
    "target",
    "axis",
    "min_foreground",
    "percentile",
    "slice_step",
    "subjects",
    "val_subjects",
    "test_subjects",
    "seed",
}
KIND_KEYS = {
    "paired-folder": FOLDER_KEYS,
    "el-masks": FOLDER_KEYS,
    "list-file": {"list", "lists", "classes", "value_range", "val_fraction", "test_fraction", "seed",
                  "source_bands", "target_bands", *GROUP_KEYS},
    "nifti": NIFTI_KEYS,
    "brats": NIFTI_KEYS,
    "ixi": NIFTI_KEYS,
    "sar-patches": {
        "root",
        "source_dir",
        "target_dir",
        "source_bands",
        "db_range",
        "reflectance_max",
        "target_bands",
        "groups",
        "val_scenes",
        "test_scenes",
        "seed",
    },
    "scene-tiles": {
        "root",
        "source_pattern",
        "target_pattern",
        "tile",
        "stride",
        "split_by",
        "val_fraction",
        "test_fraction",
        "gap",
        "val_scenes",
        "test_scenes",
        "seed",
    },
    "procedural": {"task", "n", "n_val", "n_test", "seed", "heterogeneity"},
    # one modality alone (unpaired and target-only methods): items {"image", "name"}
    "image-folder": {"root", "split_dirs", "value_range", "bands", "val_fraction", "test_fraction", "seed", *GROUP_KEYS},
}
# pv-el-cracks ships train/ and val/ only, so its test split reads val/ unless `split_dirs` says otherwise
EL_MASK_DEFAULTS = {
    "source_dir": "img",
    "target_dir": "ann",
    "classes": list(PV_EL_CLASSES.values()),
    "split_dirs": {"train": "train", "val": "val", "test": "val"},
}
SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _integer(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _band_list(value):
    return isinstance(value, list) and bool(value) and (
        all(_integer(v, 0) for v in value) or all(isinstance(v, str) for v in value))


def _count_or_names(value):  # held-out subjects, scenes or groups: how many, or which by name
    return _integer(value, 0) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


# the plain-valued keys of the specs: what each must be, as the error message says it
KEY_RULES = {
    **{key: (lambda v: _integer(v, 1), "an integer >= 1") for key in ("size", "tile", "stride", "n", "n_val",
                                                                      "n_test", "slice_step")},
    **{key: (lambda v: _integer(v, 0), "an integer >= 0") for key in ("seed", "gap")},
    "axis": (lambda v: _integer(v, 0) and v <= 2, "0, 1 or 2 (a volume's axis)"),
    **{key: (_count_or_names, "an integer >= 0 or a list of names")
       for key in ("val_subjects", "test_subjects", "val_scenes", "test_scenes", "val_groups", "test_groups")},
    **{key: (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")
       for key in ("val_fraction", "test_fraction", "min_foreground", "heterogeneity")},
    "percentile": (lambda v: _number(v) and 0 < v <= 100, "a number in (0, 100]"),
    "reflectance_max": (lambda v: _number(v) and v > 0, "a number > 0"),
    "db_range": (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_number, v)) and v[0] < v[1],
                 "[low, high] with low < high"),
    **{key: (lambda v: isinstance(v, bool), "true or false") for key in ("hflip", "vflip", "verify")},
    **{key: (_band_list, "a non-empty list of band indices (0 = the first band; SAR: names VV, VH)")
       for key in ("bands", "source_bands", "target_bands")},
}
RENAMED_KEYS = {"optical_bands": "target_bands", "bands": "source_bands"}  # sar-patches, before issue 16


def _value_pair(value):
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_number, value)) and value[0] < value[1]


def check_spec_values(spec: dict, kind: str) -> None:
    for key, value in spec.items():
        if key in KEY_RULES and not KEY_RULES[key][0](value):
            raise CdtsdeError(f"{kind} spec: {key} must be {KEY_RULES[key][1]}, got {value!r}")
    if "value_range" in spec:  # one modality: [lo, hi]; a pair: per side
        value = spec["value_range"]
        if kind == "image-folder":
            ok, expected = _value_pair(value), "[low, high] with low < high"
        else:
            ok = (isinstance(value, dict) and bool(value) and set(value) <= {"source", "target"}
                  and all(map(_value_pair, value.values())))
            expected = "{source: [low, high], target: [low, high]} with low < high (either side may be omitted)"
        if not ok:
            raise CdtsdeError(f"{kind} spec: value_range must be {expected}, got {value!r}")


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


def build_dataset(spec: dict, split: str, base_dir=None) -> PairedDataset:
    """Dataset of `{"source", "target", "name"}` items for `split` ("train", "val" or "test"). Relative
    paths (`root`, `list`, `lists`) are resolved against `base_dir` (default: the working directory)."""
    check_split(split)
    if not isinstance(spec, dict) or "kind" not in spec:
        raise CdtsdeError("dataset spec must be a mapping with a 'kind' key")
    kind = spec["kind"]
    if kind not in KIND_KEYS:
        raise CdtsdeError(f"unknown dataset kind {kind!r}; choose from {', '.join(KIND_KEYS)}")
    unknown = set(spec) - COMMON_KEYS - KIND_KEYS[kind]
    if unknown:
        renamed = [f"{key} is now {RENAMED_KEYS[key]}" for key in sorted(unknown) if key in RENAMED_KEYS and kind == "sar-patches"]
        raise CdtsdeError(f"{kind} spec: unknown key(s) {', '.join(sorted(unknown))}"
                          + (f" ({'; '.join(renamed)})" if renamed else ""))
    check_spec_values(spec, kind)
    options = {**EL_MASK_DEFAULTS, **spec} if kind == "el-masks" else dict(spec)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if kind == "procedural":
        n = (
            options.get("n", 200)
            if split == "train"
            else options.get(f"n_{split}", max(1, options.get("n", 200) // 10))
        )
        dataset = ProceduralDataset(
            options.get("task", "mri-phantom"),
            n,
            int(options.get("size", 32)),
            int(options.get("seed", 0)) + SPLIT_SEED_OFFSET[split],
            float(options.get("heterogeneity", 0.5)),
        )
    elif kind == "list-file":
        dataset = build_list_file(base, split, options)
    else:
        if "root" not in options:
            raise CdtsdeError(f"{kind} spec needs a 'root'")
        root = base / Path(options["root"]).expanduser()
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
        dataset = builders[kind](root, split, options)
    transform = PairedTransform(
        options.get("size"),
        options.get("resize", "resize"),
        train=split == "train",
        hflip=options.get("hflip", True),
        vflip=options.get("vflip", False),
    )
    dataset.finish(transform, options.get("channels"), bool(options.get("verify", False)))
    return dataset
