"""Perception metrics: zero on identical sets, moved the right way by blur, noise and colour casts, and
cross-checked against SciPy's Wasserstein distance and Laplacian."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, laplace
from scipy.stats import wasserstein_distance

from cdtsde.metrics.perception import (
    colour_fidelity,
    patch_sliced_wasserstein,
    perception_metrics,
    radial_log_spectrum,
    sharpness_ratio,
    spectral_distance,
    wasserstein_1d,
)


def textured(n, size=32, channels=1, seed=0):
    """Images with structure at every scale: smoothed noise plus fine noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = gaussian_filter(rng.random((size, size, channels)), (3, 3, 0))
        image = 0.6 * (coarse - coarse.min()) / np.ptp(coarse) + 0.4 * rng.random((size, size, channels))
        images.append(image)
    return images


def blurred(images, sigma=1.5):
    return [gaussian_filter(image, (sigma, sigma, 0)) for image in images]


def test_identical_sets_score_zero_distance_and_unit_sharpness():
    images = textured(6, channels=3)
    metrics = perception_metrics(images, images)
    assert metrics["patch_swd"] == 0 and metrics["spectral_distance"] == 0 and metrics["sharpness_ratio"] == 1
    assert metrics["mean_offset"] == 0 and metrics["histogram_w1"] == 0


def test_blur_raises_the_distances_and_lowers_sharpness_noise_raises_it():
    real, other = textured(8, seed=1), textured(8, seed=2)
    baseline = {"swd": patch_sliced_wasserstein(other, real), "spectral": spectral_distance(other, real)}
    soft = blurred(other)
    assert patch_sliced_wasserstein(soft, real) > baseline["swd"]
    assert spectral_distance(soft, real) > 3 * baseline["spectral"]
    assert sharpness_ratio(soft, real) < 0.5 < sharpness_ratio(other, real)
    noisy = [np.clip(image + np.random.default_rng(3).normal(0, 0.1, image.shape), 0, 1) for image in other]
    assert sharpness_ratio(noisy, real) > 1.2


def test_blur_removes_high_frequencies_from_the_radial_spectrum():
    image = textured(1)[0]
    sharp, soft = radial_log_spectrum(image), radial_log_spectrum(blurred([image])[0])
    assert sharp.shape == (17,)
    assert (sharp[-5:] - soft[-5:]).min() > 2 and abs(sharp[1] - soft[1]) < 1


def test_one_dimensional_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (500, 3)), rng.normal(0.5, 2, (400, 3))
    ours = wasserstein_1d(a, b, quantiles=2000)
    for column in range(3):
        assert ours[column] == pytest.approx(wasserstein_distance(a[:, column], b[:, column]), rel=0.02)
    equal = rng.random((256, 1)), rng.random((256, 1))
    assert wasserstein_1d(*equal, quantiles=256)[0] == pytest.approx(wasserstein_distance(equal[0][:, 0], equal[1][:, 0]))


def test_a_colour_cast_is_measured_per_channel():
    real = textured(4, channels=3, seed=4)
    cast = [np.clip(image + np.array([0.1, 0.0, -0.05]), 0, 1) for image in real]
    metrics = colour_fidelity(cast, real)
    assert metrics["mean_offset/0"] == pytest.approx(0.1, abs=0.01)
    assert abs(metrics["mean_offset/1"]) < 1e-12 and metrics["mean_offset/2"] == pytest.approx(-0.05, abs=0.01)
    assert metrics["histogram_w1/0"] == pytest.approx(0.1, abs=0.01) and metrics["histogram_w1/1"] < 1e-3


def test_the_sharpness_ratio_is_scipys_laplacian_variance_ratio():
    a, b = textured(3, seed=5), textured(3, seed=6)
    expected = np.mean([laplace(x[..., 0], mode="reflect").var() for x in a]) / np.mean(
        [laplace(x[..., 0], mode="reflect").var() for x in b])
    assert sharpness_ratio(a, b) == pytest.approx(expected)
    with pytest.raises(ValueError, match="flat"):
        sharpness_ratio(a, [np.zeros((32, 32))])
