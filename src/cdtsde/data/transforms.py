"""Paired geometric transforms on (C, H, W) tensors in [0, 1] (or class-index maps): resize or crop to the training size and,
for training only, random flips and crops drawn once and applied identically to source and target."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CdtsdeError


def resize(image: torch.Tensor, height: int, width: int, nearest: bool = False) -> torch.Tensor:
    """Resize (C, H, W) or a batch (B, C, H, W); bilinear with antialiasing for images in [0, 1], nearest for
    class-index maps (which keeps every value a valid class). Training data and `translate` both use it."""
    if image.shape[-2:] == (height, width):
        return image
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    if nearest:
        out = F.interpolate(batch, size=(height, width), mode="nearest-exact")
    else:
        out = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return out if image.ndim == 4 else out.squeeze(0)


@dataclass
class PairedTransform:
    """`mode="resize"` scales the whole image to size x size; `mode="crop"` takes a size x size window
    (random when training, centred otherwise), first upscaling images whose shorter side is too small."""

    size: int | None
    mode: str = "resize"
    train: bool = False
    hflip: bool = True
    vflip: bool = False

    def __post_init__(self):
        if self.mode not in ("resize", "crop"):
            raise CdtsdeError(f"transform mode must be 'resize' or 'crop', got {self.mode!r}")

    def __call__(self, source: torch.Tensor, target: torch.Tensor, target_is_mask: bool = False):
        if self.size is not None:
            source, target = self._fit(source, target, target_is_mask)
        if self.train and self.hflip and torch.rand(()) < 0.5:
            source, target = source.flip(-1), target.flip(-1)
        if self.train and self.vflip and torch.rand(()) < 0.5:
            source, target = source.flip(-2), target.flip(-2)
        return source, target

    def _fit(self, source, target, target_is_mask):
        size = self.size
        if self.mode == "resize":
            return resize(source, size, size), resize(target, size, size, nearest=target_is_mask)
        height, width = source.shape[-2:]
        if min(height, width) < size:
            scale = size / min(height, width)
            height, width = max(size, round(height * scale)), max(size, round(width * scale))
            source, target = (
                resize(source, height, width),
                resize(target, height, width, nearest=target_is_mask),
            )
        if self.train:
            top = int(torch.randint(0, height - size + 1, ()))
            left = int(torch.randint(0, width - size + 1, ()))
        else:
            top, left = (height - size) // 2, (width - size) // 2
        window = (..., slice(top, top + size), slice(left, left + size))
        return source[window], target[window]
