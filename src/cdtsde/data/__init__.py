"""Paired cross-modality datasets: `build_dataset(spec, split, base_dir=None)` returns a torch Dataset of
`{"source": (C_src, H, W), "target": (C_tgt, H, W), "name": str}` items in [-1, 1]; `UnpairedData` and
`TargetOnlyData` view built datasets as unpaired and target-only methods train on them."""

from .config import build_dataset
from .views import TargetOnlyData, UnpairedData

__all__ = ["TargetOnlyData", "UnpairedData", "build_dataset"]
