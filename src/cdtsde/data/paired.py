"""Pairs of image files: a folder with `source/` + `target/` (or `A/` + `B/`) matched by file stem,
the EL-crack layout (`img/` + `ann/` masks), and list files of `source_path,target_path` lines."""

from __future__ import annotations

from pathlib import Path

from ..errors import CdtsdeError
from ..imagefiles import image_shape, list_images, stem
from .base import PairedDataset
from .masks import read_mask
from .readers import UnitReader
from .specs import (
    FileSplitSpec,
    ImageFolderSpec,
    ListFileSpec,
    PairedFilesSpec,
    PairedFolderSpec,
    SplitFolders,
    ValueRanges,
)
from .splits import grouped_split, split_by_hash

FOLDER_NAMES = (("source", "target"), ("A", "B"))


class PairedFilesDataset(PairedDataset):
    """Entries are (source path, target path, name). Each pair's headers are read at construction:
    pairs whose files are unreadable or differ in size are skipped and reported."""

    def __init__(self, pairs, source_reader, target_reader, num_classes=None):
        super().__init__()
        self.source_reader, self.target_reader = source_reader, target_reader
        self.target_classes = num_classes
        for source_path, target_path, name in pairs:
            entry = (Path(source_path), Path(target_path), name)
            try:
                source_shape = image_shape(entry[0])
                target_shape = source_shape if entry[1] == entry[0] else image_shape(entry[1])
            except CdtsdeError as exc:
                self.skip(entry, exc)
                continue
            if source_shape[:2] != target_shape[:2]:
                self.skip(entry, f"size mismatch: source {source_shape[:2]} vs target {target_shape[:2]}")
                continue
            self.entries.append(entry)

    def read(self, entry):
        source_path, target_path, name = entry
        return self.source_reader(source_path), self.target_reader(target_path), name

    def describe(self, entry) -> str:
        return f"{entry[0]} | {entry[1]}"

    def target_files(self) -> list[Path]:
        return [target for _, target, _ in self.entries]


def find_pair_folders(root: Path, source_dir: str | None, target_dir: str | None) -> tuple[Path, Path]:
    if source_dir or target_dir:
        names = [(source_dir or "source", target_dir or "target")]
    else:
        names = FOLDER_NAMES
    for source_name, target_name in names:
        if (root / source_name).is_dir() and (root / target_name).is_dir():
            return root / source_name, root / target_name
    wanted = " or ".join(f"{a}/ + {b}/" for a, b in names)
    raise CdtsdeError(f"{root}: expected sub-folders {wanted}")


def match_by_stem(source_folder: Path, target_folder: Path):
    """(matched [(source, target, stem)], unmatched [(path, reason)]), sorted by stem."""
    sources = {stem(p): p for p in list_images(source_folder)}
    targets = {stem(p): p for p in list_images(target_folder)}
    matched = [(sources[key], targets[key], key) for key in sorted(sources.keys() & targets.keys())]
    unmatched = [
        (str(sources[key]), f"no partner in {target_folder}")
        for key in sorted(sources.keys() - targets.keys())
    ]
    unmatched += [
        (str(targets[key]), f"no partner in {source_folder}")
        for key in sorted(targets.keys() - sources.keys())
    ]
    return matched, unmatched


def split_folder(root: Path, split: str, spec: PairedFolderSpec | ImageFolderSpec) -> Path | None:
    """The folder of `split` when `root` has `train/`, `val/`, `test/` sub-folders (names overridable by
    `split_dirs`), else None (then a hash of each file stem assigns it)."""
    split_dirs = spec.split_dirs
    if split_dirs is None and (root / "train").is_dir():
        split_dirs = SplitFolders()
    if split_dirs is None:
        return None
    folder = root / getattr(split_dirs, split)
    if not folder.is_dir():
        raise CdtsdeError(f"{folder}: folder for split {split!r} not found")
    return folder


def paired_folder_pairs(root: Path, split: str, spec: PairedFolderSpec):
    """Pairs of one split. With `train/`, `val/`, `test/` sub-folders (names overridable by `split_dirs`)
    each split reads its own folder; otherwise `split_pairs` assigns them (whole groups or a hash)."""
    folder = split_folder(root, split, spec)
    if folder is not None:
        return *match_by_stem(*find_pair_folders(folder, spec.source_dir, spec.target_dir)), None
    matched, unmatched = match_by_stem(*find_pair_folders(root, spec.source_dir, spec.target_dir))
    chosen, unassigned, groups = split_pairs(matched, split, spec, root)
    return chosen, unmatched + unassigned, groups


def split_pairs(pairs, split: str, spec: FileSplitSpec, base: Path):
    """(the (source, target, name) pairs of `split`, [(path, reason)] of pairs no group holds, the sorted
    names of the split's groups or None without groups). With
    `groups` (a table column or a regex on the name, `splits.grouped_split`) whole groups (regions,
    subjects, scenes) are held out by `val_groups` / `test_groups`; otherwise each pair by a hash of its name."""
    if spec.groups is not None:
        chosen, unlisted = grouped_split([pair[2] for pair in pairs], split, spec.groups,
                                         (spec.val_groups, spec.test_groups), spec.seed, base, None)
        paths = {pair[2]: str(pair[0]) for pair in pairs}
        return ([pair for pair in pairs if pair[2] in chosen], [(paths[k], why) for k, why in unlisted],
                sorted(set(chosen.values())))
    fractions = (spec.val_fraction, spec.test_fraction, spec.seed)
    return [pair for pair in pairs if split_by_hash(pair[2], *fractions) == split], [], None


def read_list_file(list_path: Path):
    """`source_path,target_path` per line (paths relative to the list file); blank lines and `#` comments
    ignored. Names are the source stems, made unique with the line number when they repeat."""
    if not list_path.is_file():
        raise CdtsdeError(f"{list_path}: list file not found")
    pairs, seen = [], set()
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2 or not all(parts):
            raise CdtsdeError(f"{list_path}:{number}: expected 'source_path,target_path', got {line!r}")
        source, target = (
            Path(part) if Path(part).is_absolute() else list_path.parent / part for part in parts
        )
        name = stem(source) if stem(source) not in seen else f"{stem(source)}-{number}"
        seen.add(name)
        pairs.append((source, target, name))
    return pairs


def list_file_pairs(base: Path, split: str, spec: ListFileSpec):
    """`lists: {train: ..., val: ..., test: ...}` gives one list per split; `list: FILE` one list split by
    `split_pairs` (groups, or a hash of the names). Returns (pairs, [(path, reason)] left out, groups)."""
    if spec.lists is not None:
        if getattr(spec.lists, split) is None:
            raise CdtsdeError(f"data.lists has no list for split {split!r}")
        return read_list_file(base / getattr(spec.lists, split)), [], None
    list_path = base / spec.list
    return split_pairs(read_list_file(list_path), split, spec, list_path.parent)


class ImageFolderDataset(PairedFilesDataset):
    """Images of one modality alone, for unpaired or target-only training: items {"image", "name"},
    `channels` as the first image has them (or the spec's `channels: {source: C}`)."""

    def read(self, entry):
        image = self.source_reader(entry[0])
        return image, image, entry[2]

    def describe(self, entry) -> str:
        return str(entry[0])

    def _to_item(self, source, target, name, entry) -> dict:
        return {"image": super()._to_item(source, target, name, entry)["source"], "name": name}

    @property
    def channels(self) -> int | None:
        return self.source_channels


def build_image_folder(root: Path, split: str, spec: ImageFolderSpec) -> ImageFolderDataset:
    """Every image in `root` (or in its split sub-folders), split by groups or a hash of the file stem otherwise."""
    folder = split_folder(root, split, spec)
    if folder is None:
        images = [(path, path, stem(path)) for path in list_images(root)]
        images, unassigned, groups = split_pairs(images, split, spec, root)
    else:
        images, unassigned, groups = [(path, path, stem(path)) for path in list_images(folder)], [], None
    reader = UnitReader(spec.value_range, spec.bands)
    dataset = ImageFolderDataset(images, reader, reader)
    dataset.skipped[:0] = unassigned
    dataset.groups = groups
    if not dataset.entries and not dataset.skipped and split == "train":
        raise CdtsdeError(f"{root} ({split}): no images found")
    return dataset


def build_paired_folder(root: Path, split: str, spec: PairedFolderSpec) -> PairedFilesDataset:
    pairs, unmatched, groups = paired_folder_pairs(root, split, spec)
    # a held-out split may be empty by design (`val_groups: 0`); training on nothing may not
    may_be_empty = spec.groups is not None and split != "train"
    dataset = _files_dataset(pairs, spec, unmatched, f"{root} ({split})", may_be_empty)
    dataset.groups = groups
    return dataset


def build_list_file(base: Path, split: str, spec: ListFileSpec) -> PairedFilesDataset:
    pairs, unassigned, groups = list_file_pairs(base, split, spec)
    dataset = _files_dataset(pairs, spec, unassigned, f"list file ({split})", spec.groups is not None and split != "train")
    dataset.groups = groups
    return dataset


def _files_dataset(pairs, spec: PairedFilesSpec, unmatched, where, may_be_empty=False) -> PairedFilesDataset:
    num_classes = spec.class_count
    ranges = spec.value_range or ValueRanges()
    source_reader = UnitReader(ranges.source, spec.source_bands)
    target_reader = read_mask if num_classes else UnitReader(ranges.target, spec.target_bands)
    dataset = PairedFilesDataset(pairs, source_reader, target_reader, num_classes)
    dataset.skipped[:0] = unmatched
    if not dataset.entries and not dataset.skipped and not may_be_empty:
        raise CdtsdeError(f"{where}: no image pairs found")
    return dataset

