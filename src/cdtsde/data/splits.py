"""Deterministic train/val/test assignment. Whole groups (subjects, scenes, file stems) are assigned, so
no group ever appears in two splits, and the same spec always gives the same split."""

from __future__ import annotations

import random
import zlib

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


def split_groups(groups, val_count: int, test_count: int, seed: int = 0) -> dict[str, str]:
    """Assign `test_count` groups to test and `val_count` to val (shuffled with `seed`), the rest to train."""
    ordered = sorted(set(groups))
    if val_count + test_count > len(ordered):
        raise CdtsdeError(
            f"asked for {val_count} val + {test_count} test groups but only {len(ordered)} exist"
        )
    random.Random(seed).shuffle(ordered)
    assignment = {group: "test" for group in ordered[:test_count]}
    assignment.update({group: "val" for group in ordered[test_count : test_count + val_count]})
    assignment.update({group: "train" for group in ordered[test_count + val_count :]})
    return assignment
