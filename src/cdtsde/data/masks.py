"""Class-index masks <-> multi-channel target images.

A mask with K classes becomes K channels, +1 where the pixel has that class and -1 elsewhere (the
[-1, 1] range every target lives in). Decoding is argmax over the class channels, so a translated
(noisy) mask image decodes to the class with the strongest channel.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CdtsdeError
from ..imagefiles import read_image

# the pv-el-cracks classes (value -> name) and the defect group its scores report
PV_EL_CLASSES = {0: "background", 1: "dark area", 2: "cross crack", 3: "crack", 4: "busbar"}
PV_EL_DEFECT = (1, 2, 3)


def encode_classes(index_array, num_classes: int) -> np.ndarray:
    """Class indices (..., H, W) -> float32 (..., K, H, W) with +1 for the pixel's class, -1 elsewhere."""
    indices = np.asarray(index_array)
    if indices.dtype.kind not in "ui":
        raise CdtsdeError(f"class-index mask must be integer, got {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise CdtsdeError(
            f"class indices {int(indices.min())}..{int(indices.max())} outside 0..{num_classes - 1}"
        )
    one_hot = indices[..., None, :, :] == np.arange(num_classes).reshape(-1, 1, 1)
    return np.where(one_hot, 1.0, -1.0).astype(np.float32)


def decode_classes(encoded) -> np.ndarray:
    """Class channels -> class indices (int64) by argmax over the channel axis.

    (K, H, W) decodes along axis 0; a batch (N, K, H, W) along axis 1. Accepts tensors or arrays.
    """
    values = encoded.detach().cpu().numpy() if isinstance(encoded, torch.Tensor) else np.asarray(encoded)
    if values.ndim not in (3, 4):
        raise CdtsdeError(f"expected (K, H, W) or (N, K, H, W) class channels, got shape {values.shape}")
    return np.argmax(values, axis=values.ndim - 3).astype(np.int64)


def read_mask(path) -> np.ndarray:
    """A class-index mask file -> (H, W) integer class indices (`mask_to_indices`); a palette PNG's
    indices are its classes."""
    array, _ = read_image(path, palette="indices")
    return mask_to_indices(array, path)


def mask_to_indices(array: np.ndarray, path) -> np.ndarray:
    """A mask as read from disk -> (H, W) class indices. Masks saved as grey RGB(A) (all colour channels
    equal, as in pv-el-cracks) and binary masks are accepted; colour-coded masks are not."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.ndim == 3:
        colour = array[..., :3]
        if not (colour == colour[..., :1]).all():
            raise CdtsdeError(
                f"{path}: mask has differing colour channels; expected one class index per pixel"
            )
        array = colour[..., 0]
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise CdtsdeError(f"{path}: mask must be a 2-D integer image, got {array.dtype} {array.shape}")
    return array
