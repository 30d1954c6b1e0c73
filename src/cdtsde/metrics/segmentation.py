"""Zero-shot evaluation by segmentation (seed 002): K-Means on intensities, fit on target-modality images
only, applied to translated and real target images; clusters are matched by intensity order (cluster k is
the k-th darkest centre), and Dice is reported per cluster class."""

from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2

from .masks import overlap_scores


class IntensityKMeans:
    def __init__(self, clusters: int = 3, seed: int = 0, max_pixels: int = 200_000):
        if clusters < 2:
            raise ValueError(f"clusters must be >= 2, got {clusters}")
        self.clusters, self.seed, self.max_pixels = clusters, seed, max_pixels
        self.centres: np.ndarray | None = None

    def fit(self, target_images: list[np.ndarray]) -> IntensityKMeans:
        """Fit on target-modality images (intensities in [0, 1]); at most `max_pixels` pixels, drawn evenly."""
        pixels = np.concatenate([np.asarray(image, np.float64).reshape(-1) for image in target_images])
        rng = np.random.default_rng(self.seed)
        if pixels.size > self.max_pixels:
            pixels = rng.choice(pixels, self.max_pixels, replace=False)
        centres, _ = kmeans2(pixels[:, None], self.clusters, seed=rng, minit="++")
        self.centres = np.sort(centres[:, 0])
        return self

    def segment(self, image: np.ndarray) -> np.ndarray:
        if self.centres is None:
            raise RuntimeError("fit the clustering on target images first")
        return np.abs(np.asarray(image, np.float64)[..., None] - self.centres).argmin(-1)


def segmentation_dice(kmeans: IntensityKMeans, translated: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Dice per cluster class between the segmentations of a translated and a real target image."""
    pred, true = kmeans.segment(translated), kmeans.segment(target)
    return {f"dice/cluster{k}": overlap_scores(pred == k, true == k)["dice"] for k in range(kmeans.clusters)}


def kmeans_dice(models: list[IntensityKMeans], translated: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Per model ("kmeans<K>/..."): Dice per cluster class and their mean, the seed's zero-shot score."""
    scores = {}
    for kmeans in models:
        per_cluster = segmentation_dice(kmeans, translated, target)
        prefix = f"kmeans{kmeans.clusters}"
        scores.update({f"{prefix}/{key}": value for key, value in per_cluster.items()})
        scores[f"{prefix}/dice/mean"] = float(np.mean(list(per_cluster.values())))
    return scores


def fit_kmeans(images: list[np.ndarray], clusters: list[int], seed: int = 0) -> list[IntensityKMeans]:
    """One clustering per count in `clusters`, each fit on the intensities of `images` (target-modality
    training images in [0, 1], never the test targets)."""
    if not len(images):
        raise ValueError("no images to fit K-Means on")
    return [IntensityKMeans(k, seed=seed).fit(images) for k in clusters]
