"""Metrics with one documented definition each (each module states its own): images, masks, zero-shot
segmentation, perception (set-level, no downloaded network); `ScoreAccumulator` scores items with them
and summarises."""

from .image import image_metrics, image_metrics_batch, ssim_map
from .masks import MASK_METRICS, PV_EL_CLASSES, PV_EL_DEFECT, binary_mask_metrics, mask_metrics
from .perception import perception_metrics
from .scoring import ScoreAccumulator
from .segmentation import IntensityKMeans, fit_kmeans, segmentation_dice
from .summary import format_mask_table, format_table, mean_interval, paired_comparison, summarise

__all__ = [
    "MASK_METRICS", "PV_EL_CLASSES", "PV_EL_DEFECT", "IntensityKMeans", "ScoreAccumulator", "binary_mask_metrics",
    "fit_kmeans", "format_mask_table", "format_table", "image_metrics", "image_metrics_batch", "mask_metrics",
    "mean_interval", "paired_comparison", "perception_metrics", "segmentation_dice", "ssim_map", "summarise",
]
