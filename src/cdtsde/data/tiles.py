"""Large co-registered scenes cut into tiles.

`root` holds one sub-folder per scene with a source and a target image (found by the glob patterns
`source_pattern` / `target_pattern`). Splitting is by whole scene (`split_by: scene`) or by region
(`split_by: region`, the default): each scene is cut across its width into train | val | test bands
(`val_fraction`, `test_fraction`, 0.15 each by default) and tiles are only taken wholly inside a band and at least `gap`
pixels (default: one tile) past the previous band, so no tile touches a tile of another split.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import CdtsdeError
from ..imagefiles import read_image
from .base import PairedDataset
from .readers import UnitReader
from .specs import SceneTilesSpec
from .splits import check_split, split_groups


def find_scenes(root: Path, source_pattern: str, target_pattern: str):
    """([(scene name, source path, target path)], problems [(path, reason)])."""
    if not root.is_dir():
        raise CdtsdeError(f"{root}: not a directory")
    scenes, problems = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        sources, targets = sorted(folder.glob(source_pattern)), sorted(folder.glob(target_pattern))
        if len(sources) == 1 and len(targets) == 1:
            scenes.append((folder.name, sources[0], targets[0]))
        else:
            problems.append(
                (
                    str(folder),
                    f"expected one {source_pattern!r} and one {target_pattern!r} image, "
                    f"found {len(sources)} and {len(targets)}",
                )
            )
    return scenes, problems


def tile_origins(height: int, width: int, tile: int, stride: int, x_start: int = 0, x_end: int | None = None):
    """Top-left corners of the tiles lying wholly inside columns [x_start, x_end)."""
    x_end = width if x_end is None else x_end
    return [
        (y, x) for y in range(0, height - tile + 1, stride) for x in range(x_start, x_end - tile + 1, stride)
    ]


def region_columns(width: int, split: str, val_fraction: float, test_fraction: float, gap: int):
    """Column range [start, end) of `split`'s band; val and test bands begin `gap` pixels late."""
    val_start = round(width * (1.0 - val_fraction - test_fraction))
    test_start = round(width * (1.0 - test_fraction))
    return {"train": (0, val_start), "val": (val_start + gap, test_start), "test": (test_start + gap, width)}[
        split
    ]


class SceneTileDataset(PairedDataset):
    """Entries are (scene index, y, x). Decoded scenes are kept per instance (uint8 or as stored)."""

    source_reader = target_reader = UnitReader()  # integer scenes by their dtype's range

    def __init__(
        self,
        scenes,
        split,
        tile,
        stride,
        split_by,
        val_fraction,
        test_fraction,
        gap,
        assignment,
    ):
        super().__init__()
        check_split(split)
        self.tile = tile
        self.scenes = []
        gap = tile if gap is None else gap
        for name, source_path, target_path in scenes:
            if split_by == "scene" and assignment[name] != split:
                continue
            try:
                source, _ = read_image(source_path)
                target, _ = read_image(target_path)
            except CdtsdeError as exc:
                self.skipped.append((f"{source_path} | {target_path}", str(exc)))
                continue
            if source.shape[:2] != target.shape[:2]:
                self.skipped.append(
                    (
                        f"{source_path} | {target_path}",
                        f"size mismatch {source.shape[:2]} vs {target.shape[:2]}",
                    )
                )
                continue
            height, width = source.shape[:2]
            columns = (
                (0, width)
                if split_by == "scene"
                else region_columns(width, split, val_fraction, test_fraction, gap)
            )
            origins = tile_origins(height, width, tile, stride, *columns)
            if not origins:
                warnings.warn(
                    f"{source_path}: the {split} region, columns {columns[0]}..{columns[1]}, holds no {tile} px tile; "
                    f"raise {split}_fraction or lower gap/tile",
                    stacklevel=2,
                )
            index = len(self.scenes)
            self.scenes.append((name, source_path, target_path, source, target))
            self.entries.extend((index, y, x) for y, x in origins)

    def read(self, entry):
        index, y, x = entry
        name, _, _, source, target = self.scenes[index]
        window = (slice(y, y + self.tile), slice(x, x + self.tile))
        return (self.source_reader.to_unit(source[window], name), self.target_reader.to_unit(target[window], name),
                f"{name}_y{y}_x{x}")

    def describe(self, entry) -> str:
        index, y, x = entry
        return f"{self.scenes[index][1]} | {self.scenes[index][2]} tile y={y} x={x}"


def build_scene_tiles(root: Path, split: str, spec: SceneTilesSpec) -> SceneTileDataset:
    scenes, problems = find_scenes(root, spec.source_pattern, spec.target_pattern)
    if not scenes:
        raise CdtsdeError(f"{root}: no scene folders with a source and a target image")
    assignment = None
    if spec.split_by == "scene":
        assignment = split_groups([s[0] for s in scenes], spec.val_scenes, spec.test_scenes, spec.seed)
    dataset = SceneTileDataset(
        scenes,
        split,
        spec.tile,
        spec.tile if spec.stride is None else spec.stride,
        spec.split_by,
        spec.val_fraction,
        spec.test_fraction,
        spec.gap,
        assignment,
    )
    dataset.skipped[:0] = problems
    return dataset
