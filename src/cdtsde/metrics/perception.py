"""Perception metrics that need no downloaded network: how much a set of translations looks like a set of
real target images, where PSNR and SSIM reward the blurry posterior mean (Blau and Michaeli 2018, the
perception-distortion trade-off). Each compares two *sets* of images (float arrays H x W [x C] in [0, 1]);
none pairs a translation with its own target, so each can be computed for unpaired and zero-shot methods.

* `patch_sliced_wasserstein`: the sliced Wasserstein-1 distance between the sets' local patches (random
  patches, random unit projections, fixed seeds): the 1-D Wasserstein distance of the two projected patch
  sets, averaged over projections. 0 for identical sets; blur, noise and texture changes raise it.
* `spectral_distance`: the root-mean-square difference between the sets' radially averaged log power
  spectra (natural log of |FFT|^2 averaged over rings of integer radius, mean over images and channels):
  blur removes high frequencies and raises it, as do grid artefacts.
* `sharpness_ratio`: the mean variance of the Laplacian (scipy.ndimage.laplace) of the translations over
  that of the real images: 1 when the sets are equally sharp, below 1 for blur, above 1 for noise.
* `colour_fidelity`: per channel, the mean intensity offset (translated minus real; a colour cast) and the
  Wasserstein-1 distance between the two sets' intensity distributions (histogram distance), and their
  means over channels.
"""

from __future__ import annotations

import numpy as np


def _channels_last(images) -> list[np.ndarray]:
    out = []
    for image in images:
        array = np.asarray(image, dtype=np.float64)
        out.append(array[..., None] if array.ndim == 2 else array)
    if not out:
        raise ValueError("an empty set of images")
    if len({a.shape[-1] for a in out}) != 1:
        raise ValueError(f"images with different channel counts: {sorted({a.shape[-1] for a in out})}")
    return out


def wasserstein_1d(a: np.ndarray, b: np.ndarray, quantiles: int = 1024) -> np.ndarray:
    """W1 between the empirical distributions of a (N, P) and b (M, P) along axis 0, per column: the mean
    absolute difference of their quantile functions on a uniform grid (exact when N = M = quantiles)."""
    levels = (np.arange(quantiles) + 0.5) / quantiles
    qa = np.quantile(a, levels, axis=0, method="inverted_cdf")
    qb = np.quantile(b, levels, axis=0, method="inverted_cdf")
    return np.abs(qa - qb).mean(axis=0)


def random_patches(images, size: int, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """(len(images) * per_image, size * size * C) patches at uniformly random positions."""
    patches = []
    for image in _channels_last(images):
        height, width = image.shape[:2]
        if height < size or width < size:
            raise ValueError(f"a {height}x{width} image is smaller than the {size} px patches")
        ys = rng.integers(0, height - size + 1, per_image)
        xs = rng.integers(0, width - size + 1, per_image)
        patches += [image[y:y + size, x:x + size].ravel() for y, x in zip(ys, xs)]
    return np.stack(patches)


def patch_sliced_wasserstein(preds, trues, patch: int = 7, per_image: int = 64, projections: int = 128,
                             seed: int = 0) -> float:
    """Sliced W1 between random patches of the two sets (module docstring); patch positions and projections
    from `seed`, the same for both sets."""
    # the same positions in both sets (identical sets score exactly 0), projections from their own stream
    a = random_patches(preds, patch, per_image, np.random.default_rng(seed))
    b = random_patches(trues, patch, per_image, np.random.default_rng(seed))
    directions = np.random.default_rng([seed, 1]).standard_normal((a.shape[1], projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    return float(wasserstein_1d(a @ directions, b @ directions, quantiles=max(len(a), len(b))).mean())


def radial_log_spectrum(image: np.ndarray) -> np.ndarray:
    """Mean log power |FFT|^2 (mean removed, +1e-12) over rings of integer radius 0 .. min(H, W) // 2,
    averaged over channels."""
    image = _channels_last([image])[0]
    height, width = image.shape[:2]
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean(axis=(0, 1)), axes=(0, 1)), axes=(0, 1))) ** 2
    log_power = np.log(power.mean(axis=-1) + 1e-12)
    y, x = np.indices((height, width))
    radius = np.hypot(y - height // 2, x - width // 2).round().astype(int)
    keep = radius <= min(height, width) // 2
    sums = np.bincount(radius[keep], weights=log_power[keep])
    counts = np.bincount(radius[keep])
    return sums / counts


def spectral_distance(preds, trues) -> float:
    """RMS difference of the two sets' mean radial log power spectra (images of one size)."""
    a = np.mean([radial_log_spectrum(image) for image in _channels_last(preds)], axis=0)
    b = np.mean([radial_log_spectrum(image) for image in _channels_last(trues)], axis=0)
    if a.shape != b.shape:
        raise ValueError("spectral_distance compares images of one size")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def laplacian_variance(image: np.ndarray) -> float:
    from scipy.ndimage import laplace

    image = _channels_last([image])[0]
    return float(np.mean([laplace(image[..., c], mode="reflect").var() for c in range(image.shape[-1])]))


def sharpness_ratio(preds, trues) -> float:
    """Mean variance of the Laplacian of the translations over that of the real images."""
    real = np.mean([laplacian_variance(image) for image in _channels_last(trues)])
    if real == 0:
        raise ValueError("the real images are flat: their Laplacian variance is 0")
    return float(np.mean([laplacian_variance(image) for image in _channels_last(preds)]) / real)


def colour_fidelity(preds, trues) -> dict[str, float]:
    """Per channel c: `mean_offset/c` (mean translated intensity minus mean real) and `histogram_w1/c` (W1
    between the sets' pixel intensities); `mean_offset` (mean absolute offset) and `histogram_w1` over
    channels."""
    a = np.concatenate([image.reshape(-1, image.shape[-1]) for image in _channels_last(preds)])
    b = np.concatenate([image.reshape(-1, image.shape[-1]) for image in _channels_last(trues)])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{a.shape[1]} translated channels against {b.shape[1]} real ones")
    offsets = a.mean(axis=0) - b.mean(axis=0)
    distances = wasserstein_1d(a, b, quantiles=4096)
    out = {f"mean_offset/{c}": float(v) for c, v in enumerate(offsets)}
    out.update({f"histogram_w1/{c}": float(v) for c, v in enumerate(distances)})
    out.update(mean_offset=float(np.abs(offsets).mean()), histogram_w1=float(distances.mean()))
    return out


def perception_metrics(preds, trues, seed: int = 0) -> dict[str, float]:
    """Every metric of this module for one pair of sets (colour fidelity only for colour images)."""
    preds, trues = _channels_last(preds), _channels_last(trues)
    out = {"patch_swd": patch_sliced_wasserstein(preds, trues, seed=seed),
           "spectral_distance": spectral_distance(preds, trues), "sharpness_ratio": sharpness_ratio(preds, trues)}
    if preds[0].shape[-1] == 3:
        out.update(colour_fidelity(preds, trues))
    return out
