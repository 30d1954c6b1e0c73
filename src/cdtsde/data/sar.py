"""Sentinel-1 SAR / Sentinel-2 optical patch pairs (SEN12MS-CR GeoTIFFs, SEN1-2 PNGs).

SAR backscatter stored as float dB is clipped to `db_range` and scaled to [0, 1]; bands are picked by
name (`source_bands`: `VV`, `VH`, the SEN12MS order). Optical uint16 reflectance is divided by `reflectance_max`
(Sentinel-2 stores reflectance x 10000; 3000 keeps natural scenes visible) and clipped. 8-bit PNGs
(SEN1-2) use the full 8-bit range; `target_bands` keeps some bands by index (BigEarthNet's
[B4, B3, B2, B8] -> RGB: [0, 1, 2]). Patches are paired by name with the modality token (`s1`, `s2`, `gt`)
removed and split by scene (the name without its `_p<N>` patch number), so neighbouring patches of one
scene never straddle splits; a `groups` table (e.g. BigEarthNet's pairs.csv with its tile or country
column) assigns the scenes instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CdtsdeError
from ..imagefiles import list_images, stem
from .paired import PairedFilesDataset
from .readers import OpticalReader, SarReader
from .specs import SarPatchesSpec
from .splits import grouped_split

MODALITY_TOKEN = re.compile(r"_(s1|s2|gt)_", re.IGNORECASE)
PATCH_NUMBER = re.compile(r"_p\d+$")


def patch_key(path: Path) -> str:
    return MODALITY_TOKEN.sub("_", stem(path))


def scene_of(key: str) -> str:
    return PATCH_NUMBER.sub("", key)


def build_sar_patches(root: Path, split: str, spec: SarPatchesSpec) -> PairedFilesDataset:
    source_folder, target_folder = root / spec.source_dir, root / spec.target_dir
    sources = {patch_key(p): p for p in list_images(source_folder)}
    targets = {patch_key(p): p for p in list_images(target_folder)}
    keys = sorted(sources.keys() & targets.keys())
    if not keys:
        raise CdtsdeError(f"{root}: no SAR/optical pairs in {source_folder.name}/ and {target_folder.name}/")
    unmatched = [
        (str(sources[k]), f"no partner in {target_folder}") for k in sorted(sources.keys() - targets.keys())
    ]
    unmatched += [
        (str(targets[k]), f"no partner in {source_folder}") for k in sorted(targets.keys() - sources.keys())
    ]
    chosen, unlisted = grouped_split(keys, split, spec.groups, (spec.val_scenes, spec.test_scenes), spec.seed, root,
                                     scene_of)
    unmatched += [(str(sources[k]), reason) for k, reason in unlisted]
    pairs = [(sources[k], targets[k], k) for k in chosen]
    source_reader = SarReader(spec.db_range, tuple(band.upper() for band in spec.source_bands))
    target_reader = OpticalReader(spec.reflectance_max, spec.target_bands)
    dataset = PairedFilesDataset(pairs, source_reader, target_reader)
    dataset.skipped[:0] = unmatched
    dataset.scenes = sorted(set(chosen.values()))
    return dataset
