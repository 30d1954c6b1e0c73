"""Paired cross-modality datasets: `build_dataset(spec, split, base_dir=None)` returns a torch Dataset of
`{"source": (C_src, H, W), "target": (C_tgt, H, W), "name": str}` items in [-1, 1]."""

from .config import build_dataset

__all__ = ["build_dataset"]
