"""Translate image files with a trained model, keeping each input's format: PNG/TIFF bit depth, NIfTI
volumes translated slice by slice (last axis) and written back with the input's affine.

Inputs are mapped to [0, 1] by `cdtsde.io.to_unit_image` (integer images by their dtype's range, NIfTI
volumes by the 99.5th percentile of their non-zero voxels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.base import adapt_channels
from .errors import CdtsdeError
from .io import ImageMeta, from_unit, image_format, read_image, stem, to_unit_image, write_image
from .model import TranslationModel


@dataclass
class Translation:
    """Per-file result: the translation (slices, channels last, [0, 1] or class indices) and, with several
    samples, the per-pixel standard deviation across them."""

    mean: np.ndarray
    std: np.ndarray | None
    clamped_pixels: int


def source_slices(array: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """(S, H, W, C) float32 in [0, 1] (`cdtsde.io.to_unit_image`): one slice for a 2-D image, one per
    position along the last axis for a NIfTI volume."""
    unit = to_unit_image(array, meta)
    if meta.format == "nifti":
        if unit.ndim == 2:
            return unit[None, :, :, None]
        if unit.ndim == 3:
            return np.moveaxis(unit, -1, 0)[..., None]
        raise CdtsdeError(f"{meta.path}: NIfTI with {unit.ndim} dimensions; expected a 2-D slice or a 3-D volume")
    if unit.ndim not in (2, 3):
        raise CdtsdeError(f"{meta.path}: image of shape {array.shape}; expected (H, W) or (H, W, C)")
    return (unit if unit.ndim == 3 else unit[..., None])[None]


@torch.no_grad()
def translate_slices(model: TranslationModel, slices: np.ndarray, steps: int = 5, gamma: float = 1.0,
                     seed: int = 0, samples: int = 1, batch_size: int = 16, resize: bool = True,
                     spacing: str = "uniform", solver: str = "first-order") -> Translation:
    """Translate (S, H, W, C_src) slices in [0, 1]. With `resize`, slices are resized to the model's
    training size and the result back to the input's size."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    size = model.config.image_size if resize else None
    height, width = slices.shape[1:3]
    means, stds, clamped = [], [], 0
    for start in range(0, len(slices), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(slices[start:start + batch_size])).permute(0, 3, 1, 2).to(device)
        if size and (height, width) != (size, size):
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        source = (chunk * 2 - 1).repeat_interleave(samples, dim=0)
        result = model.translate(source, steps=steps, gamma=gamma, generator=generator, spacing=spacing,
                                 solver=solver)
        clamped += result.clamped_pixels
        out = result.x0.view(-1, samples, *result.x0.shape[1:])
        if size and (height, width) != (size, size):
            out = F.interpolate(out.flatten(0, 1), size=(height, width), mode="bilinear", align_corners=False)
            out = out.view(-1, samples, *out.shape[1:])
        out = (out.clamp(-1, 1) + 1) / 2
        means.append(out.mean(1))
        if samples > 1:
            stds.append(out.std(1).mean(1, keepdim=True))
    mean = torch.cat(means).permute(0, 2, 3, 1).cpu().numpy()
    std = torch.cat(stds).permute(0, 2, 3, 1).cpu().numpy() if stds else None
    if model.config.target_kind == "mask":
        mean = mean.argmax(-1).astype(np.uint8)[..., None]
    return Translation(mean=mean, std=std, clamped_pixels=clamped)


def output_path(path: Path, output_dir: Path) -> Path:
    suffixes = {"nifti": ".nii.gz" if str(path).endswith(".gz") else ".nii", "jpg": ".png"}
    return output_dir / (stem(path) + suffixes.get(image_format(path), path.suffix))


def write_translation(translation: Translation, meta: ImageMeta, output_dir: Path, mask: bool) -> list[Path]:
    """Write the translation in the input's format (JPG inputs become lossless PNG) and, if present, the
    uncertainty map as float32 TIFF `<stem>_std.tif`."""
    target = output_path(meta.path, output_dir)
    array = translation.mean
    if meta.format == "nifti":
        is_volume = len(meta.extra["header"].get_data_shape()) == 3
        volume = np.moveaxis(array[..., 0], 0, -1) if is_volume else array[0, ..., 0]
        volume = volume.astype(np.uint8 if mask else np.float32)
        written = [write_image(target, volume, meta)]
    else:
        image = array[0]
        image = image[..., 0] if image.shape[-1] == 1 else image
        if mask:
            out = image.astype(np.uint8)
        elif meta.dtype.kind in "ui" and not (meta.dtype == np.uint16 and image.ndim == 3 and meta.format == "png"):
            out = from_unit(image, meta.dtype)
        elif meta.format in ("png", "jpg"):
            out = from_unit(image, np.uint8)
        else:
            out = image.astype(np.float32)
        written = [write_image(target, out, meta)]
    if translation.std is not None:
        std = translation.std[..., 0]
        std = np.moveaxis(std, 0, -1) if std.shape[0] > 1 else std[0]
        written.append(write_image(output_dir / f"{stem(meta.path)}_std.tif", std.astype(np.float32)))
    return written


def translate_file(model: TranslationModel, path: Path, output_dir: Path, **options) -> tuple[list[Path], int]:
    array, meta = read_image(path)
    slices = adapt_channels(source_slices(array, meta), model.config.source_channels, path)
    translation = translate_slices(model, slices, **options)
    return write_translation(translation, meta, output_dir, mask=model.config.target_kind == "mask"), translation.clamped_pixels
