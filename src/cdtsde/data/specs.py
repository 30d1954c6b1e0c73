"""The data spec (a run configuration's `data:` section) as typed dataclasses, one per kind, parsed by
`cdtsde.settings.from_plain` like the `train:` and `model:` sections: an unknown key, a wrong type or a
value out of range is refused with a message naming `data.<key>` and what it must be.

`data_spec(plain)` picks the class from `kind` (`DATA_SPECS`); the keys every kind takes live on
`DataSpec`, those of each kind on its class, each with its default; docs/data.md lists the same keys
(tests/data/test_data_specs.py holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from ..errors import CdtsdeError
from ..intensity import NIFTI_PERCENTILE
from ..settings import Rule, from_plain
from .masks import PV_EL_CLASSES
from .procedural import TASKS
from .readers import SAR_BANDS

Count = Annotated[int, Rule("an integer >= 1", lambda value: value >= 1)]
ContextSlices = Annotated[int, Rule("an integer >= 0", lambda value: value >= 0)]
Fraction = Annotated[float, Rule("a number in [0, 1]", lambda value: 0 <= value <= 1)]
# held-out subjects, scenes or groups: how many (drawn with `seed`), or which by name
HeldOut = Annotated[int | tuple[str, ...], Rule("an integer >= 0 or a list of names",
                                                lambda value: not isinstance(value, int) or value >= 0)]
BandIndices = Annotated[tuple[int, ...], Rule("a non-empty list of band indices (0 = the first band)",
                                              lambda value: bool(value) and min(value) >= 0)]
SarBands = Annotated[tuple[str, ...], Rule(f"a non-empty list of SAR band names ({', '.join(SAR_BANDS)})",
                                           lambda value: bool(value) and {b.upper() for b in value} <= set(SAR_BANDS))]
ValueRange = Annotated[tuple[float, float], Rule("[low, high] with low < high", lambda value: value[0] < value[1])]
Classes = Annotated[int | tuple[str, ...], Rule("a class count >= 1 or a non-empty list of class names",
                                                lambda value: value >= 1 if isinstance(value, int) else bool(value))]


@dataclass(frozen=True, kw_only=True)
class Channels:
    """Channel counts to convert to (RGB->grey by mean, grey->RGB by repetition); omitted: the first pair's."""

    source: Count | None = None
    target: Count | None = None


@dataclass(frozen=True, kw_only=True)
class SplitFolders:
    """The sub-folders holding each split's files."""

    train: str = "train"
    val: str = "val"
    test: str = "test"


@dataclass(frozen=True, kw_only=True)
class SplitLists:
    """One list file per split (`source_path,target_path` lines)."""

    train: str | None = None
    val: str | None = None
    test: str | None = None


@dataclass(frozen=True, kw_only=True)
class ValueRanges:
    """[low, high] of float images per side, scaled to [0, 1]; a side omitted is taken as in [0, 1]."""

    source: ValueRange | None = None
    target: ValueRange | None = None


@dataclass(frozen=True, kw_only=True)
class Groups:
    """Each item's group: from a CSV table (`table` relative to the root, `column` the group, `key` the
    column naming the file stem) or from a regular expression on the file stem (`pattern`)."""

    table: str | None = None
    column: str | None = None
    key: str | None = None  # None: pair_id
    pattern: str | None = None

    def complete(self) -> bool:
        if self.pattern is not None:
            return self.table is None and self.column is None and self.key is None
        return self.table is not None and self.column is not None


PairedRanges = Annotated[ValueRanges, Rule(
    "{source: [low, high], target: [low, high]} with low < high (either side may be omitted)",
    lambda value: value.source is not None or value.target is not None)]
GroupsRule = Annotated[Groups, Rule("{table: FILE, column: NAME[, key: NAME]} or {pattern: REGEX}", Groups.complete)]


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """The keys of every kind: the training size (None: native) and how to reach it (`resize` scales,
    `crop` takes a window), paired random flips (training split only), channel counts, `verify`
    (decode every pair up front so `.skipped` is complete), and `context_slices`: the k neighbouring
    slices on each side of a source slice given as extra source channels, which only kinds cut from
    volumes (`has_slices`) take."""

    has_slices: ClassVar[bool] = False

    kind: str
    size: Count | None = None
    resize: Literal["resize", "crop"] = "resize"
    hflip: bool = True
    vflip: bool = False
    channels: Channels | None = None
    verify: bool = False
    context_slices: ContextSlices = 0

    def __post_init__(self):
        if self.context_slices and not self.has_slices:
            volumes = ", ".join(kind for kind, cls in DATA_SPECS.items() if cls.has_slices)
            raise ValueError(f"data.context_slices applies to slices cut from volumes (kinds {volumes}); "
                             f"kind {self.kind!r} has no neighbouring slices, got {self.context_slices}")


@dataclass(frozen=True, kw_only=True)
class FileSplitSpec(DataSpec):
    """Kinds that list files: whole groups held out (`groups` with `val_groups` / `test_groups`), else
    each file by a hash of its stem (`val_fraction`, `test_fraction`, `seed`)."""

    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    seed: int = 0
    groups: GroupsRule | None = None
    val_groups: HeldOut = 1
    test_groups: HeldOut = 1


@dataclass(frozen=True, kw_only=True)
class PairedFilesSpec(FileSplitSpec):
    """Pairs of image files: a mask target (`classes`), float ranges, bands kept per side."""

    classes: Classes | None = None
    value_range: PairedRanges | None = None
    source_bands: BandIndices | None = None
    target_bands: BandIndices | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.classes is not None and self.target_bands is not None:
            raise ValueError("data.target_bands does not apply to a mask target (data.classes is set)")

    @property
    def class_count(self) -> int | None:
        return len(self.classes) if isinstance(self.classes, tuple) else self.classes


@dataclass(frozen=True, kw_only=True)
class PairedFolderSpec(PairedFilesSpec):
    root: str
    source_dir: str | None = None  # with target_dir; neither: source/ + target/, else A/ + B/
    target_dir: str | None = None
    split_dirs: SplitFolders | None = None  # None: train/ val/ test/ if the root has train/


@dataclass(frozen=True, kw_only=True)
class ElMasksSpec(PairedFolderSpec):
    """The pv-el-cracks layout; it ships train/ and val/ only, so its test split reads val/."""

    source_dir: str | None = "img"
    target_dir: str | None = "ann"
    classes: Classes | None = tuple(PV_EL_CLASSES.values())
    split_dirs: SplitFolders | None = SplitFolders(test="val")


@dataclass(frozen=True, kw_only=True)
class ListFileSpec(PairedFilesSpec):
    """Paths relative to the configuration; `lists` names one list per split, else `list` is split."""

    list: str | None = None
    lists: SplitLists | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.list is None and self.lists is None:
            raise ValueError("data.list (one list to split) or data.lists (one per split) is required")


@dataclass(frozen=True, kw_only=True)
class ImageFolderSpec(FileSplitSpec):
    """One modality alone (unpaired and target-only methods); `channels: {source: C}` sets its count."""

    root: str
    split_dirs: SplitFolders | None = None
    value_range: ValueRange | None = None
    bands: BandIndices | None = None


@dataclass(frozen=True, kw_only=True)
class NiftiSpec(DataSpec):
    """Volumes paired by subject (`subjects` restricts them), split by subject, cut into slices along
    `axis`; slices whose foreground covers less than `min_foreground` are left out. With `context_slices`
    k each source slice comes with its k neighbours on each side (cdtsde.data.nifti.with_context)."""

    has_slices: ClassVar[bool] = True

    root: str
    source: str = "t1"
    target: str = "t2"
    axis: Annotated[int, Rule("0, 1 or 2 (a volume's axis)", lambda value: 0 <= value <= 2)] = 2
    min_foreground: Fraction = 0.1
    percentile: Annotated[float, Rule("a number in (0, 100]", lambda value: 0 < value <= 100)] = NIFTI_PERCENTILE
    slice_step: Count = 1
    subjects: tuple[str, ...] | None = None
    val_subjects: HeldOut = 1
    test_subjects: HeldOut = 1
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.context_slices and self.channels is not None and self.channels.source not in (None, 1):
            raise ValueError(f"data.channels.source must be 1 (a NIfTI slice has one channel) with "
                             f"data.context_slices, got {self.channels.source}")


@dataclass(frozen=True, kw_only=True)
class SarPatchesSpec(DataSpec):
    """Sentinel-1 / Sentinel-2 patches, split by scene (or by a `groups` table's column)."""

    renamed: ClassVar[dict[str, str]] = {"optical_bands": "target_bands", "bands": "source_bands"}  # issue 16

    root: str
    source_dir: str = "s1"
    target_dir: str = "s2"
    source_bands: SarBands = SAR_BANDS
    db_range: ValueRange = (-25.0, 0.0)
    reflectance_max: Annotated[float, Rule("a number > 0", lambda value: value > 0)] = 3000.0
    target_bands: BandIndices | None = None
    groups: GroupsRule | None = None
    val_scenes: HeldOut = 1
    test_scenes: HeldOut = 1
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class SceneTilesSpec(DataSpec):
    """Large scenes cut into `tile` px tiles every `stride` px (None: one tile), split by region (bands
    across the width, `gap` px apart, None: one tile) or by scene."""

    root: str
    source_pattern: str = "SAR*"
    target_pattern: str = "Optical*"
    tile: Count = 64
    stride: Count | None = None
    split_by: Literal["region", "scene"] = "region"
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15
    gap: int | None = None
    val_scenes: HeldOut = 0
    test_scenes: HeldOut = 1
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class ProceduralSpec(DataSpec):
    """Pairs generated in memory, `size` px (32 when not given); `n_val` / `n_test` default to n/10."""

    task: Literal[TASKS] = "mri-phantom"
    n: Count = 200
    n_val: Count | None = None
    n_test: Count | None = None
    seed: int = 0
    heterogeneity: Fraction = 0.5


DATA_SPECS = {
    "paired-folder": PairedFolderSpec,
    "el-masks": ElMasksSpec,
    "list-file": ListFileSpec,
    "nifti": NiftiSpec,
    "brats": NiftiSpec,
    "ixi": NiftiSpec,
    "sar-patches": SarPatchesSpec,
    "scene-tiles": SceneTilesSpec,
    "procedural": ProceduralSpec,
    "image-folder": ImageFolderSpec,
}


def data_spec(plain) -> DataSpec:
    """The typed spec of a plain one (YAML), or a CdtsdeError naming the key and what it must be."""
    if isinstance(plain, DataSpec):
        return plain
    if not isinstance(plain, dict) or "kind" not in plain:
        raise CdtsdeError(f"data must be a mapping with a 'kind' key, one of {', '.join(DATA_SPECS)}")
    if plain["kind"] not in DATA_SPECS:
        raise CdtsdeError(f"data.kind must be one of {', '.join(DATA_SPECS)}, got {plain['kind']!r}")
    cls = DATA_SPECS[plain["kind"]]
    renamed = [f"{old} is now {new}" for old, new in getattr(cls, "renamed", {}).items() if old in plain]
    if renamed:
        raise CdtsdeError(f"data: {'; '.join(renamed)}")
    try:
        return from_plain(cls, plain, "data")
    except ValueError as exc:
        raise CdtsdeError(str(exc)) from exc
