"""Deterministic train/val/test assignment. Whole groups (subjects, scenes, file stems) are assigned, so
no group ever appears in two splits, and the same spec always gives the same split."""

from __future__ import annotations

import csv
import random
import re
import zlib
from pathlib import Path

from ..errors import CdtsdeError

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise CdtsdeError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def split_by_hash(name: str, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """Split of one item from a hash of its name: stable when other files are added or removed."""
    position = zlib.crc32(f"{seed}:{name}".encode()) / 2**32
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"


def split_groups(groups, val, test, seed: int = 0) -> dict[str, str]:
    """Assign groups to val and test, the rest to train. `val` and `test` are counts (that many groups,
    shuffled with `seed`) or lists of group names (exactly those)."""
    ordered = sorted(set(groups))
    named = [names for names in (test, val) if not isinstance(names, int)]
    for names in named:
        missing = sorted(set(map(str, names)) - set(ordered))
        if missing:
            raise CdtsdeError(f"unknown group(s) {missing}; the data has {ordered}")
    if len(named) == 2 and set(map(str, val)) & set(map(str, test)):
        raise CdtsdeError(f"group(s) {sorted(set(map(str, val)) & set(map(str, test)))} named for both val and test")
    assignment = {}
    for split, names in (("test", test), ("val", val)):
        if not isinstance(names, int):
            assignment.update({str(group): split for group in names})
    counted = [(split, count) for split, count in (("test", test), ("val", val)) if isinstance(count, int)]
    free = [group for group in ordered if group not in assignment]
    if sum(count for _, count in counted) > len(free):
        raise CdtsdeError(
            f"asked for {' + '.join(f'{count} {split}' for split, count in counted)} groups but only "
            f"{len(free)} are left to assign"
        )
    random.Random(seed).shuffle(free)
    for split, count in counted:
        assignment.update({group: split for group in free[:count]})
        free = free[count:]
    assignment.update({group: "train" for group in free})
    return assignment


def read_group_table(path: Path, key_column: str, group_column: str) -> dict[str, str]:
    """Item name -> group from a CSV table with a header row (e.g. a dataset's pairs.csv mapping each pair
    to its region), so that a split can hold out whole regions, subjects or countries."""
    if not path.is_file():
        raise CdtsdeError(f"{path}: group table not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (key_column, group_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise CdtsdeError(f"{path}: no column(s) {missing}; the table has {reader.fieldnames}")
        table = {}
        for number, row in enumerate(reader, start=2):
            key, group = row[key_column], row[group_column]
            if not key or not group:
                raise CdtsdeError(f"{path}:{number}: empty {key_column!r} or {group_column!r}")
            if table.setdefault(key, group) != group:
                raise CdtsdeError(f"{path}:{number}: {key!r} is listed in groups {table[key]!r} and {group!r}")
    return table


def pattern_groups(keys, pattern: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Item name -> group from a regular expression searched in the name: its group named `group`, else
    its first group, else the whole match (`^(\\d+)_` groups `003_r1c1` and `003_r2c2` as `003`). Returns
    ({key: group}, [(key, reason)] for names the pattern does not match)."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise CdtsdeError(f"groups pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    grouped, unmatched = {}, []
    for key in keys:
        found = regex.search(key)
        if found is None:
            unmatched.append((key, f"name does not match the groups pattern {pattern!r}"))
            continue
        if "group" in regex.groupindex:
            grouped[key] = found.group("group")
        else:
            grouped[key] = found.group(1) if regex.groups else found.group(0)
    return grouped, unmatched


def grouped_split(keys, split: str, groups, held_out, seed: int, base: Path, default_groups,
                  ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The keys of `split`, each key's group read from the spec's `groups` (a `specs.Groups`), else
    `default_groups(key)`: a CSV table relative to the data root (`table`, `column`, `key`: the column of
    item names, default pair_id) or a regular expression on the item name (`pattern`, `pattern_groups`).
    `held_out` (val, test) are counts of groups or lists of group names, `split_groups` assigns them with
    `seed`. Returns ({key: group} of the split, [(key, reason)] for keys no group holds)."""
    unlisted = []
    if groups is None:
        group_of = {key: default_groups(key) for key in keys}
    elif groups.pattern is not None:
        group_of, unlisted = pattern_groups(keys, groups.pattern)
    else:
        table_path = base / groups.table
        table = read_group_table(table_path, groups.key or "pair_id", groups.column)
        group_of = {key: table[key] for key in keys if key in table}
        unlisted = [(key, f"not listed in {table_path}") for key in keys if key not in table]
    assignment = split_groups(group_of.values(), *held_out, seed)
    return {key: group for key, group in group_of.items() if assignment[group] == split}, unlisted
