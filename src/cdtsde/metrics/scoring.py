"""The one scoring path: per-item metric rows and their summary, whatever produced the items (a model's
translations in `cdtsde.evaluation.evaluate_model`, files in `cdtsde.metrics.folders.evaluate_folders`)."""

from __future__ import annotations

import numpy as np

from .image import image_metrics
from .masks import mask_metrics
from .perception import perception_metrics
from .segmentation import IntensityKMeans, kmeans_dice
from .summary import mean_interval, set_level, summarise
from .volume import ARRAY_AXCODES, volume_metrics

KINDS = ("image", "mask")


class ScoreAccumulator:
    """Scores items one at a time, as torchmetrics' and MONAI's metrics do: `update` adds one item's row,
    `compute` returns every row (in the order added) and their summary (`summarise`) together with the
    metrics of the whole set, which need every item (perception, `set_level`).

    kind "image": prediction and target (H, W) or (H, W, C) in [0, 1] (data range 1, `image_metrics`),
    plus the K-Means Dice of each clustering in `kmeans` (fit on target-modality training images,
    `fit_kmeans`) and, restricted to a foreground, the image metrics again under a "_fg" suffix: the
    region given to `update`, else with `nonzero_foreground` the target's nonzero pixels (the brain of
    skull-stripped MRI). `perception` adds the set-level perception metrics ("perception/...", summary only;
    images of one size).
    kind "mask": class-index arrays (H, W) scored per class of `classes` and for the `foreground` group of
    classes (`mask_metrics`, with `skeleton_tolerance` pixels).

    Whole volumes (kind "image") are scored beside the items: `update_volume` adds a row of volume metrics
    (`cdtsde.metrics.volume`), `compute_volumes` returns those rows and their summary with intervals over
    the volumes."""

    def __init__(self, kind: str = "image", classes: dict[int, str] | None = None,
                 foreground: tuple[int, ...] | None = None, skeleton_tolerance: float = 2.0,
                 nonzero_foreground: bool = False, kmeans: list[IntensityKMeans] | None = None,
                 perception: bool = False):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "mask":
            image_only = {"perception": perception, "kmeans": kmeans, "nonzero_foreground": nonzero_foreground}
            given = [name for name, value in image_only.items() if value]
            if given:
                raise ValueError(f"{', '.join(given)} score intensity images, not masks")
        self.kind, self.classes, self.foreground = kind, classes, foreground
        self.skeleton_tolerance, self.nonzero_foreground = skeleton_tolerance, nonzero_foreground
        self.kmeans, self.perception = list(kmeans or []), perception
        self._rows: list[dict] = []
        self._volume_rows: list[dict] = []
        self._sets: tuple[list, list] = ([], [])  # predictions and targets, for the set-level metrics

    def __len__(self) -> int:
        return len(self._rows)

    def update(self, name: str, prediction, target, region=None, **columns) -> dict:
        """Score one item and add its row: {"name", its metrics, then `columns` (e.g. seconds_per_image)}.
        `region` (images only): the foreground, of the target's shape or its (H, W). An item that cannot be
        scored raises and leaves the accumulator as it was."""
        prediction, target = np.asarray(prediction), np.asarray(target)
        if self.kind == "mask":
            if region is not None:
                raise ValueError("a foreground region restricts image metrics; masks are scored per class")
            scores = mask_metrics(prediction, target, classes=self.classes, foreground=self.foreground,
                                  skeleton_tolerance=self.skeleton_tolerance)
        else:
            scores = image_metrics(prediction, target)
            scores.update(kmeans_dice(self.kmeans, prediction, target))
            if region is None and self.nonzero_foreground:
                region = target > 0
            if region is not None:
                region = _region_of(np.asarray(region), target)
                scores.update({f"{k}_fg": v for k, v in image_metrics(prediction, target, mask=region).items()})
        row = {"name": name, **scores, **columns}
        self._rows.append(row)
        if self.perception:
            self._sets[0].append(prediction)
            self._sets[1].append(target)
        return dict(row)

    def update_volume(self, name: str, prediction, target, region=None, codes: tuple[str, str, str] = ARRAY_AXCODES,
                      slice_axis: int = 2, **columns) -> dict:
        """Score one volume, 3-D arrays in [0, 1], and add its volume row: {"name", `volume_metrics`, then
        `columns`}. The foreground is `region` (the target's shape), else with `nonzero_foreground` the
        target's nonzero voxels, the brain mask in 3-D; `codes` are the array axes' anatomical directions
        (`cdtsde.metrics.volume.axis_codes_of` a NIfTI volume as read), `slice_axis` the axis the prediction was
        translated along. A volume that cannot be scored raises and leaves the accumulator as it was."""
        if self.kind != "image":
            raise ValueError("volume metrics score intensity images, not masks")
        target = np.asarray(target)
        if region is None and self.nonzero_foreground:
            region = target > 0
        row = {"name": name, **volume_metrics(prediction, target, region, codes, slice_axis), **columns}
        self._volume_rows.append(row)
        return dict(row)

    def compute_volumes(self) -> tuple[list[dict], dict]:
        """(volume rows, summary): the rows in the order added and per metric `summarise`'s statistics with
        the BCa bootstrap interval of the mean over the volumes (`mean_interval`: ci_low, ci_high; NaN
        under two finite values); no volumes scored: ([], {})."""
        rows = [dict(row) for row in self._volume_rows]
        summary = summarise([{k: v for k, v in row.items() if k != "name"} for row in rows])
        for key, stats in summary.items():
            interval = mean_interval([row for row in rows if key in row], key)
            stats.update(ci_low=interval["ci_low"], ci_high=interval["ci_high"])
        return rows, summary

    def compute(self) -> tuple[list[dict], dict]:
        """(rows, summary): the rows in the order added, and per metric its mean, std, min, max and counts
        over the rows (`summarise`), with the set-level metrics of all items."""
        if not self._rows:
            raise ValueError("no items were scored: call update with a prediction and its target first")
        summary = summarise([{k: v for k, v in row.items() if k != "name"} for row in self._rows])
        if self.perception:
            perception = perception_metrics(*self._sets)
            summary.update(set_level({f"perception/{k}": v for k, v in perception.items()}, len(self._rows)))
        return [dict(row) for row in self._rows], summary


def _region_of(region: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The foreground over the target's pixels: its (H, W) is the target's; one without the channel axis
    holds for every channel."""
    if region.shape[:2] != target.shape[:2]:
        raise ValueError(f"foreground of shape {region.shape} does not match the target's {target.shape}")
    return np.broadcast_to(region[..., None], target.shape) if region.ndim < target.ndim else region
