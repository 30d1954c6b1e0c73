"""Mask metrics on integer class-index images; definitions below.

Per class (background excluded unless asked) and for a foreground group (pv-el-cracks: the defects,
classes 1-3, named "defect"), keys "<metric>/<name>":
* dice, iou, precision, recall of the binary masks;
* hd, hd95: Hausdorff distance between the masks' borders in pixels, its maximum and the 95th percentile
  of both directed border-distance sets together (the medpy convention; borders = mask minus its
  4-connected erosion);
* skeleton_f1: skeletons of both masks; precision = share of predicted skeleton pixels within r px of
  the true skeleton, recall symmetric, F1 their harmonic mean (r = 2 by default).
Empty-mask policy: both empty -> dice, iou, precision, recall, skeleton_f1 = 1 and hd, hd95 = 0; exactly
one empty -> dice, iou, skeleton_f1 = 0 and hd, hd95 = the image diagonal (precision or recall with an
empty denominator is 0, as scikit-learn's zero_division=0).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..data.masks import PV_EL_CLASSES, PV_EL_DEFECT  # noqa: F401  (re-exported by cdtsde.metrics)

MASK_METRICS = ("dice", "iou", "precision", "recall", "hd", "hd95", "skeleton_f1")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _border(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def hausdorff(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(HD, HD95) between two non-empty binary masks, in pixels."""
    pred_border, true_border = _border(pred), _border(true)
    to_true = ndimage.distance_transform_edt(~true_border)[pred_border]
    to_pred = ndimage.distance_transform_edt(~pred_border)[true_border]
    distances = np.concatenate([to_true, to_pred])
    return float(distances.max()), float(np.percentile(distances, 95))


def skeleton_f1(pred: np.ndarray, true: np.ndarray, tolerance: float = 2.0) -> float:
    from skimage.morphology import skeletonize

    pred_skeleton, true_skeleton = skeletonize(pred), skeletonize(true)
    if not pred_skeleton.any() and not true_skeleton.any():
        return 1.0
    if not pred_skeleton.any() or not true_skeleton.any():
        return 0.0
    precision = (ndimage.distance_transform_edt(~true_skeleton)[pred_skeleton] <= tolerance).mean()
    recall = (ndimage.distance_transform_edt(~pred_skeleton)[true_skeleton] <= tolerance).mean()
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def overlap_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and recall of two binary masks of any dimension (both empty: all 1)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and target {true.shape} differ in shape")
    overlap, n_pred, n_true = int((pred & true).sum()), int(pred.sum()), int(true.sum())
    if n_pred == 0 and n_true == 0:
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    return {
        "dice": _ratio(2 * overlap, n_pred + n_true),
        "iou": _ratio(overlap, n_pred + n_true - overlap),
        "precision": _ratio(overlap, n_pred),
        "recall": _ratio(overlap, n_true),
    }


def binary_mask_metrics(pred: np.ndarray, true: np.ndarray, skeleton_tolerance: float = 2.0) -> dict[str, float]:
    """All of MASK_METRICS for one pair of binary masks, with the empty-mask policy above."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    scores = overlap_scores(pred, true)
    n_pred, n_true = int(pred.sum()), int(true.sum())
    if n_pred == 0 and n_true == 0:
        return {**scores, "hd": 0.0, "hd95": 0.0, "skeleton_f1": 1.0}
    if n_pred == 0 or n_true == 0:
        diagonal = math.hypot(*pred.shape)
        return {**scores, "hd": diagonal, "hd95": diagonal, "skeleton_f1": 0.0}
    scores["hd"], scores["hd95"] = hausdorff(pred, true)
    scores["skeleton_f1"] = skeleton_f1(pred, true, skeleton_tolerance)
    return scores


def mask_metrics(pred_classes: np.ndarray, true_classes: np.ndarray, classes: dict[int, str] | None = None,
                 foreground: tuple[int, ...] | None = None, foreground_name: str = "defect",
                 skeleton_tolerance: float = 2.0, include_background: bool = False) -> dict[str, float]:
    """Scores of a predicted class-index image against the true one. `classes` maps class values to names
    (default: every value present in either image, named by its number); `foreground` groups classes into
    one binary mask named `foreground_name`."""
    pred_classes, true_classes = np.asarray(pred_classes), np.asarray(true_classes)
    if pred_classes.shape != true_classes.shape:
        raise ValueError(f"prediction {pred_classes.shape} and target {true_classes.shape} differ in shape")
    if classes is None:
        values = np.union1d(np.unique(pred_classes), np.unique(true_classes))
        classes = {int(v): str(int(v)) for v in values}
    out: dict[str, float] = {}
    for value, name in classes.items():
        if value == 0 and not include_background:
            continue
        for metric, score in binary_mask_metrics(pred_classes == value, true_classes == value, skeleton_tolerance).items():
            out[f"{metric}/{name}"] = score
    if foreground:
        group = list(foreground)
        for metric, score in binary_mask_metrics(np.isin(pred_classes, group), np.isin(true_classes, group),
                                                 skeleton_tolerance).items():
            out[f"{metric}/{foreground_name}"] = score
    return out
