"""Image metrics on images in [0, 1], vectorised over a batch in PyTorch (float64).

* PSNR = 10 log10(1 / MSE) (data range 1; +inf for identical images), MSE, MAE.
* SSIM "skimage": scikit-image's `structural_similarity(data_range=1)` defaults, which the paper's numbers
  used: 7x7 uniform window, sample covariance (N / (N - 1)), K1 = 0.01, K2 = 0.03, the mean over the
  window centres at least 3 px from the border, channels averaged. Equal to scikit-image to 1e-6.
* SSIM "gaussian" (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5 (truncated at 3.5 sigma, as
  scikit-image's `gaussian_weights=True`), population covariance, border of 5 px excluded.
  Images under 11 px get NaN here; under 7 px, SSIM is an error.
* With a foreground mask, MSE/MAE/PSNR use the mask's pixels and SSIM the mean of its map over the mask's
  pixels inside the scored interior.
"""

from __future__ import annotations

import math

import numpy as np
import torch

K1, K2 = 0.01, 0.03
SSIM_VARIANTS = ("skimage", "gaussian")


WINDOW_SIZES = {"skimage": 7, "gaussian": 2 * int(3.5 * 1.5 + 0.5) + 1}


def _local_means(x: torch.Tensor, variant: str) -> torch.Tensor:
    """Window means at every interior centre: SciPy's uniform (7x7) or Gaussian (sigma 1.5, truncated at
    3.5 sigma) filter over H and W, as scikit-image applies them, then the border cropped. SciPy's C loops
    are far faster than float64 convolutions in PyTorch on the CPU."""
    from scipy import ndimage

    array = x.detach().cpu().numpy()
    if variant == "skimage":
        filtered = ndimage.uniform_filter(array, size=(1, 1, 7, 7))
    else:
        filtered = ndimage.gaussian_filter(array, sigma=(0, 0, 1.5, 1.5), truncate=3.5)
    crop = WINDOW_SIZES[variant] // 2
    return torch.from_numpy(filtered[..., crop:-crop, crop:-crop]).to(x.device)


def ssim_map(pred: torch.Tensor, target: torch.Tensor, variant: str = "skimage") -> torch.Tensor:
    """SSIM at every window centre of the interior: (B, C, H - w + 1, W - w + 1), data range 1."""
    if variant not in SSIM_VARIANTS:
        raise ValueError(f"ssim variant must be one of {SSIM_VARIANTS}, got {variant!r}")
    size = WINDOW_SIZES[variant]
    if min(pred.shape[-2:]) < size:
        raise ValueError(f"images of {tuple(pred.shape[-2:])} px are smaller than the {size}x{size} SSIM window")
    channels = pred.shape[1]
    # one filtering pass over the five images the statistics need
    moments = _local_means(torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1), variant)
    ux, uy, uxx, uyy, uxy = moments.split(channels, dim=1)
    n = size * size
    covariance_norm = n / (n - 1) if variant == "skimage" else 1.0
    vx, vy, vxy = covariance_norm * (uxx - ux * ux), covariance_norm * (uyy - uy * uy), covariance_norm * (uxy - ux * uy)
    c1, c2 = K1**2, K2**2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def _as_batch(array) -> torch.Tensor:
    """numpy (H, W) / (H, W, C) or torch (B, C, H, W) -> float64 (B, C, H, W)."""
    if isinstance(array, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).double()
        return tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    tensor = array.double()
    if tensor.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(tensor.shape)}")
    return tensor


def image_metrics_batch(pred, target, mask=None) -> dict[str, np.ndarray]:
    """Per-image metrics of a batch: pred and target (B, C, H, W) in [0, 1] (clipped), optional mask
    (B, 1 or C, H, W) of the foreground. Keys: psnr, ssim, ssim_gaussian, mse, mae."""
    pred, target = _as_batch(pred).clamp(0, 1), _as_batch(target).clamp(0, 1)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if mask is None:
        weights = torch.ones_like(pred)
    else:
        weights = _as_batch(mask).to(pred.device).bool().double().expand_as(pred)
    count = weights.flatten(1).sum(1)
    empty = count == 0
    difference = (pred - target) * weights
    mse = difference.square().flatten(1).sum(1) / count.clamp(min=1)
    mae = difference.abs().flatten(1).sum(1) / count.clamp(min=1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1 / mse.clamp(min=1e-300)), torch.full_like(mse, math.inf))
    out = {"psnr": psnr, "mse": mse, "mae": mae}
    for key, variant in (("ssim", "skimage"), ("ssim_gaussian", "gaussian")):
        if min(pred.shape[-2:]) < WINDOW_SIZES[variant] and variant == "gaussian":
            out[key] = torch.full_like(mse, math.nan)  # too small for the 11x11 window: no score
            continue
        values = ssim_map(pred, target, variant)
        crop = (pred.shape[-1] - values.shape[-1]) // 2
        inner = weights[..., crop : crop + values.shape[-2], crop : crop + values.shape[-1]]
        out[key] = (values * inner).flatten(1).sum(1) / inner.flatten(1).sum(1).clamp(min=1)
    result = {k: v.cpu().numpy() for k, v in out.items()}
    for value in result.values():
        value[empty.cpu().numpy()] = np.nan  # an empty foreground has no score
    return result


def image_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one image pair, (H, W) or (H, W, C) in [0, 1]; see `image_metrics_batch`."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    batch = image_metrics_batch(pred, target, None if mask is None else np.asarray(mask))
    return {key: float(value[0]) for key, value in batch.items()}
