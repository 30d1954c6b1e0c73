"""Metrics of whole volumes (3-D arrays in [0, 1], data range 1), which see the third axis that slice-wise
scores miss.

* "psnr3d": 10 log10(1 / MSE) over every voxel (+inf for identical volumes).
* "ssim3d": SSIM with a 3-D Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11 voxels a side), population
  covariance, K1 = 0.01, K2 = 0.03, as the BraSyn challenge scores: scikit-image's
  `structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=1)` on the 3-D
  arrays, its mean over the window centres at least 5 voxels from every face. NaN for a volume under 11
  voxels along an axis.
* "psnr_<plane>", "ssim_<plane>" (axial, coronal, sagittal): the mean over the volume's cuts in that plane
  of the 2-D `image_metrics` (PSNR; SSIM as scikit-image's defaults, the paper's); cuts without a score
  (an empty mask, or identical cuts, whose PSNR is infinite) are left out of the mean, as `summarise` leaves
  out non-finite values; every cut identical gives +inf; NaN for a plane whose cuts are under 7 voxels.
  Which array axis a plane cuts is read from the NIfTI affine's axis codes (`nibabel.aff2axcodes`: the axis
  along L/R is cut in sagittal planes, A/P in coronal, S/I in axial; `axis_codes_of` a volume as read);
  without an affine the array axes are taken as (R, A, S), NIfTI's own order.
* "flicker": the mean squared difference between adjacent slices along the slice axis (the axis the
  translation cut the volume along) of the prediction over that of the target. 1 is ideal: the prediction
  changes from slice to slice as much as the target; above 1 it flickers (slices translated alone, noise
  drawn afresh per slice); below 1 it is smoother along the axis than the anatomy. NaN when the target
  does not change along the axis.
* With a mask (the brain of skull-stripped MRI), every metric again under a "_fg" suffix: PSNR over the
  mask's voxels, SSIM the mean of its map over the mask's voxels among the scored centres (as `image_metrics`
  restricts the 2-D SSIM), plane metrics over each cut's part of the mask, flicker over the adjacent voxel
  pairs both inside the mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .image import WINDOW_SIZES, image_metrics_batch

PLANES = ("axial", "coronal", "sagittal")
PLANE_OF_CODE = {"R": "sagittal", "L": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}
OPPOSITE_CODE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
ARRAY_AXCODES = ("R", "A", "S")  # NIfTI's own voxel order, assumed when no affine is known
SSIM_SIGMA, SSIM_WINDOW = 1.5, 11
CUTS_PER_BATCH = 32  # 2-D cuts scored at once: bounds the memory of the float64 SSIM maps
MIN_CUT = WINDOW_SIZES["skimage"]  # cuts under the 2-D SSIM window have no plane scores


def axis_codes(affine: np.ndarray | None) -> tuple[str, str, str]:
    """The anatomical direction of each array axis, e.g. ("L", "P", "S") for BraTS, from a NIfTI affine;
    ARRAY_AXCODES without one (or for an affine whose axes are not one of each direction)."""
    if affine is None:
        return ARRAY_AXCODES
    import nibabel

    codes = tuple(nibabel.aff2axcodes(np.asarray(affine)))
    return codes if sorted(PLANE_OF_CODE[c] for c in codes if c in PLANE_OF_CODE) == sorted(PLANES) else ARRAY_AXCODES


def axis_codes_of(meta) -> tuple[str, str, str]:
    """The anatomical direction of each axis of a volume as `cdtsde.imagefiles.read_image` returned it
    (`meta` its ImageMeta): the affine's axis codes, moved and flipped as the reader put the voxels in
    canonical order (`meta.extra["orientation"]`: R, A, S for any clear affine); ARRAY_AXCODES without an
    affine."""
    if meta is None or meta.affine is None:
        return ARRAY_AXCODES
    codes = axis_codes(meta.affine)
    orientation = meta.extra.get("orientation")
    if orientation is None:
        return codes
    canonical = list(codes)
    for axis, (target, flip) in enumerate(orientation):
        canonical[int(target)] = codes[axis] if flip > 0 else OPPOSITE_CODE[codes[axis]]
    return tuple(canonical)


def plane_axes(codes: tuple[str, str, str] = ARRAY_AXCODES) -> dict[str, int]:
    """{plane: the array axis its cuts are taken across} for volumes with these axis codes."""
    return {PLANE_OF_CODE[code]: axis for axis, code in enumerate(codes)}


def _check(prediction, target, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    prediction = np.clip(np.asarray(prediction, dtype=np.float64), 0, 1)
    target = np.clip(np.asarray(target, dtype=np.float64), 0, 1)
    if prediction.ndim != 3 or prediction.shape != target.shape:
        raise ValueError(f"volume metrics compare two 3-D volumes of one shape, got {prediction.shape} and "
                         f"{target.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != target.shape:
            raise ValueError(f"mask of shape {mask.shape} does not match the volumes' {target.shape}")
    return prediction, target, mask


def psnr_3d(prediction, target, mask=None) -> float:
    """PSNR over the volume's voxels (the mask's, if given; NaN for an empty mask)."""
    prediction, target, mask = _check(prediction, target, mask)
    squared = (prediction - target) ** 2
    if mask is not None:
        if not mask.any():
            return math.nan
        squared = squared[mask]
    mse = float(squared.mean())
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def ssim_3d_map(prediction, target) -> np.ndarray | None:
    """The 3-D SSIM at every voxel (scikit-image's full map, module docstring), None for a volume under
    SSIM_WINDOW voxels along an axis."""
    from skimage.metrics import structural_similarity

    prediction, target, _ = _check(prediction, target, None)
    if min(target.shape) < SSIM_WINDOW:
        return None
    _, full = structural_similarity(prediction, target, data_range=1.0, gaussian_weights=True, sigma=SSIM_SIGMA,
                                    use_sample_covariance=False, full=True)
    return full


def _interior_mean(ssim_map: np.ndarray | None, mask=None) -> float:
    """The mean of a 3-D SSIM map over the centres at least half a window from every face (within the
    mask, if given): scikit-image's mean, or the 2-D "_fg" restriction in 3-D."""
    if ssim_map is None:
        return math.nan
    pad = SSIM_WINDOW // 2
    inner = (slice(pad, -pad),) * 3
    if mask is None:
        return float(ssim_map[inner].mean(dtype=np.float64))
    inside = np.asarray(mask, dtype=bool)[inner]
    return float(ssim_map[inner][inside].mean()) if inside.any() else math.nan


def ssim_3d(prediction, target, mask=None) -> float:
    """3-D SSIM (module docstring); with a mask, the mean of its map over the mask's scored voxels."""
    prediction, target, mask = _check(prediction, target, mask)
    return _interior_mean(ssim_3d_map(prediction, target), mask)


def _mean_of_cuts(values: np.ndarray) -> float:
    """Mean over the cuts with a finite score; +inf if every scored cut is identical, NaN if none is scored."""
    finite = values[np.isfinite(values)]
    if finite.size:
        return float(finite.mean())
    return math.inf if np.isposinf(values).any() else math.nan


def plane_metrics(prediction, target, mask=None, codes: tuple[str, str, str] = ARRAY_AXCODES) -> dict[str, float]:
    """{"psnr_<plane>", "ssim_<plane>"}: the mean of the 2-D PSNR and SSIM (`image_metrics_batch`, restricted
    to each cut's part of the mask, if given) over the cuts of each anatomical plane."""
    prediction, target, mask = _check(prediction, target, mask)
    scores, axes = {}, plane_axes(codes)
    for plane in PLANES:
        axis = axes[plane]
        cuts = [np.moveaxis(array, axis, 0)[:, None] for array in (prediction, target)]
        cut_mask = None if mask is None else np.moveaxis(mask, axis, 0)[:, None]
        if min(cuts[0].shape[-2:]) < MIN_CUT:
            scores[f"psnr_{plane}"] = scores[f"ssim_{plane}"] = math.nan
            continue
        psnr, ssim = [], []
        for start in range(0, cuts[0].shape[0], CUTS_PER_BATCH):
            part = slice(start, start + CUTS_PER_BATCH)
            batch = image_metrics_batch(*(torch.from_numpy(np.ascontiguousarray(c[part])) for c in cuts),
                                        None if cut_mask is None else torch.from_numpy(cut_mask[part].copy()))
            psnr.append(batch["psnr"])
            ssim.append(batch["ssim"])
        scores[f"psnr_{plane}"] = _mean_of_cuts(np.concatenate(psnr))
        scores[f"ssim_{plane}"] = _mean_of_cuts(np.concatenate(ssim))
    return scores


def adjacent_difference(volume: np.ndarray, axis: int, mask=None) -> float:
    """The mean squared difference between neighbouring slices along `axis` (over the voxel pairs both in
    the mask, if given; NaN for none)."""
    volume = np.moveaxis(np.asarray(volume, dtype=np.float64), axis, 0)
    squared = (volume[1:] - volume[:-1]) ** 2
    if mask is not None:
        inside = np.moveaxis(np.asarray(mask, dtype=bool), axis, 0)
        squared = squared[inside[1:] & inside[:-1]]
    return float(squared.mean()) if squared.size else math.nan


def flicker_ratio(prediction, target, slice_axis: int = 2, mask=None) -> float:
    """`adjacent_difference` of the prediction over the target's along the slice axis (module docstring)."""
    prediction, target, mask = _check(prediction, target, mask)
    reference = adjacent_difference(target, slice_axis, mask)
    if not reference > 0:
        return math.nan
    return adjacent_difference(prediction, slice_axis, mask) / reference


def volume_metrics(prediction, target, mask=None, codes: tuple[str, str, str] = ARRAY_AXCODES,
                   slice_axis: int = 2) -> dict[str, float]:
    """Every volume metric of the module docstring over the whole volume, and with a mask again under a
    "_fg" suffix; `codes` the array axes' anatomical directions (`axis_codes`), `slice_axis` the array axis
    the prediction was translated slice by slice along."""
    prediction, target, mask = _check(prediction, target, mask)
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    ssim_map = ssim_3d_map(prediction, target)  # computed once, averaged over the volume and over the mask
    scores = {"psnr3d": psnr_3d(prediction, target), "ssim3d": _interior_mean(ssim_map),
              **plane_metrics(prediction, target, None, codes), "flicker": flicker_ratio(prediction, target, slice_axis)}
    if mask is not None:
        restricted = {"psnr3d": psnr_3d(prediction, target, mask), "ssim3d": _interior_mean(ssim_map, mask),
                      **plane_metrics(prediction, target, mask, codes),
                      "flicker": flicker_ratio(prediction, target, slice_axis, mask)}
        scores.update({f"{key}_fg": value for key, value in restricted.items()})
    return scores
