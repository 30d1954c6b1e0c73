"""Local mutual information maps (cdtsde.mutual_information, docs/lmi.md): the estimator against scikit-learn, the
properties the definition promises (remaps, self-similarity, symmetry, borders, gradients), the aligned
image, and the reference mode against an independent loop-by-loop transcription of the authors' algorithm."""

import math

import numpy as np
import pytest
import torch

import cdtsde.mutual_information as lmi
from cdtsde.mutual_information import (
    LMIOptions,
    candidate_offsets,
    lmi_candidates,
    lmi_condition,
    local_mutual_information,
    patch_nmi,
)

GREY = dict(value_range=(0.0, 255.0))  # inputs given directly in grey levels
STEP = 255.0 / 26  # spacing of the 27 default bin centres


def bin_image(labels: np.ndarray) -> torch.Tensor:
    """Bin labels 0..26 -> grey levels exactly at the bin centres, float64 (N, C, H, W)."""
    return torch.from_numpy(labels * STEP).double()


def rng_labels(shape, seed, levels=27):
    return np.random.default_rng(seed).integers(0, levels, size=shape)


def gather_b(b: torch.Tensor, offset: torch.Tensor, fill: float) -> torch.Tensor:
    """b[p + offset[p]] at every pixel, `fill` where that is outside b."""
    N, C, H, W = b.shape
    rows = torch.arange(H)[:, None] + offset[..., 0]
    cols = torch.arange(W)[None, :] + offset[..., 1]
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    n = torch.arange(N)[:, None, None, None]
    c = torch.arange(C)[None, :, None, None]
    values = b[n, c, rows.clamp(0, H - 1), cols.clamp(0, W - 1)]
    return torch.where(inside, values, torch.full_like(values, fill))


# ------------------------------------------------------------------------------------ estimator vs sklearn


@pytest.mark.parametrize("sigma", [0.0, 0.5])
@pytest.mark.parametrize("n, levels", [(9, 27), (9, 4), (25, 27), (200, 27), (9, 1)])
def test_patch_nmi_equals_scikit_learn_on_binned_values(sigma, n, levels):
    """On values at the bin centres, hard bins (sigma 0) and a Parzen window far narrower than a bin give
    scikit-learn's NMI with arithmetic averaging, 2 I / (H1 + H2), including constant sets (1 if both)."""
    metrics = pytest.importorskip("sklearn.metrics")
    x_labels, y_labels = rng_labels((40, n), 1, levels), rng_labels((40, n), 2, levels)
    y_labels[:5] = x_labels[:5]  # identical sets
    y_labels[5:10] = (x_labels[5:10] * 7 + 3) % 27  # a non-monotone bijective remap of the labels
    y_labels[10:12] = 4  # constant against varied
    x_labels[12:14], y_labels[12:14] = 9, 4  # both constant
    ours = patch_nmi(bin_image(x_labels), bin_image(y_labels), sigma=sigma, **GREY)
    expected = [
        metrics.normalized_mutual_info_score(xl, yl, average_method="arithmetic")
        for xl, yl in zip(x_labels, y_labels)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10)


def test_patch_nmi_drops_missing_samples_like_a_shorter_set():
    metrics = pytest.importorskip("sklearn.metrics")
    x, y = rng_labels(12, 3), rng_labels(12, 4)
    xs, ys = bin_image(x), bin_image(y)
    xs[[2, 7]] = math.nan
    ys[10] = math.nan
    keep = [i for i in range(12) if i not in (2, 7, 10)]
    expected = metrics.normalized_mutual_info_score(x[keep], y[keep], average_method="arithmetic")
    assert patch_nmi(xs, ys, sigma=0.0, **GREY).item() == pytest.approx(expected, abs=1e-12)


def test_map_candidates_equal_scikit_learn_on_their_valid_pairs():
    """Each clean candidate is the NMI of the pairs (a[p + u], b[p + d + u]) with both pixels inside the
    images: checked at every pixel (borders and corners included) and offset, patch 3 and 5."""
    metrics = pytest.importorskip("sklearn.metrics")
    a_labels, b_labels = rng_labels((1, 1, 6, 7), 5, levels=6), rng_labels((1, 1, 6, 7), 6, levels=6)
    for patch, search in ((3, 3), (5, 3), (3, 5)):
        opts = LMIOptions(patch=patch, search=search, sigma=0.0, **GREY)
        candidates = lmi_candidates(bin_image(a_labels), bin_image(b_labels), opts)
        r = patch // 2
        for j, (dy, dx) in enumerate(candidates.offsets.tolist()):
            for i in range(6):
                for k in range(7):
                    score = candidates.scores[0, 0, i, k, j].item()
                    if not (0 <= i + dy < 6 and 0 <= k + dx < 7):
                        assert score == -math.inf  # centred outside b: not a candidate
                        continue
                    pairs = [
                        (a_labels[0, 0, i + uy, k + ux], b_labels[0, 0, i + dy + uy, k + dx + ux])
                        for uy in range(-r, r + 1)
                        for ux in range(-r, r + 1)
                        if 0 <= i + uy < 6
                        and 0 <= k + ux < 7
                        and 0 <= i + dy + uy < 6
                        and 0 <= k + dx + ux < 7
                    ]
                    xs, ys = zip(*pairs)
                    expected = metrics.normalized_mutual_info_score(xs, ys, average_method="arithmetic")
                    assert score == pytest.approx(expected, abs=1e-10), (patch, search, i, k, dy, dx)


# ------------------------------------------------------------------------------------ properties


def test_non_monotone_bijective_remap_gives_lmi_one_everywhere():
    """NMI only sees which values pair with which: b = f(a) for a bijection f of the grey levels, here far
    from monotone, gives LMI = 1 at every pixel (hard bins: exactly; a Parzen window much narrower than a
    bin: to rounding), flat regions included (both patches constant: 1), and the alignment stays put."""
    labels = rng_labels((2, 1, 9, 11), 7, levels=27)
    labels[0, 0, 2:6, 3:8] = 13  # a flat region
    permutation = np.random.default_rng(8).permutation(27)
    assert not (np.all(np.diff(permutation) > 0) or np.all(np.diff(permutation) < 0))
    a, b = bin_image(labels), bin_image(permutation[labels])
    for sigma in (0.0, 0.5):
        result = local_mutual_information(a, b, sigma=sigma, **GREY)
        torch.testing.assert_close(result.similarity, torch.ones_like(result.similarity), atol=1e-9, rtol=0)
        assert torch.equal(result.offset, torch.zeros_like(result.offset))
        assert torch.equal(result.aligned, b)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (3, 3), (7, 10)])
def test_lmi_of_an_image_with_itself_is_one_with_hard_bins(shape):
    image = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for patch in (3, 5):
        result = local_mutual_information(image, image, patch=patch, sigma=0.0)
        torch.testing.assert_close(result.similarity, torch.ones_like(result.similarity), atol=1e-6, rtol=0)
        assert torch.equal(result.aligned, image)
        assert torch.equal(result.offset, torch.zeros_like(result.offset))


def test_parzen_smoothing_makes_self_lmi_less_than_one_and_breaks_property_1():
    """With the Gaussian Parzen window the estimator smooths a patch against itself: NMI(x, x) < 1, and 0
    for a constant patch (its joint histogram is the product of its marginals). Property 1 of the paper,
    LMI(x, y) <= LMI(x, x), holds for the exact NMI but not for the smoothed one: a patch whose values lie
    within a kernel width of each other is more informative about a stretched copy than about itself."""
    x = torch.tensor([100.0, 104, 108, 112, 116, 120, 124, 128, 132], dtype=torch.float64)
    y = torch.linspace(0, 255, 9, dtype=torch.float64)  # x stretched: the same order, a monotone bijection
    flat = torch.full((9,), 77.0, dtype=torch.float64)
    for mode, extra in (("clean", {}), ("reference", {"quantize": False})):
        self_nmi = patch_nmi(x, x, mode=mode, **GREY, **extra).item()
        assert 0 < self_nmi < 0.2
        assert patch_nmi(x, y, mode=mode, **GREY, **extra).item() > self_nmi + 0.04
        assert abs(patch_nmi(flat, flat, mode=mode, **GREY, **extra).item()) < 1e-7
    assert patch_nmi(x, x, sigma=0.0, **GREY).item() == pytest.approx(1.0)
    assert patch_nmi(flat, flat, sigma=0.0, **GREY).item() == 1.0


def test_clean_lmi_is_a_true_nmi_in_zero_one():
    generator = torch.Generator().manual_seed(4)
    a = torch.rand(3, 1, 12, 9, generator=generator) * 2 - 1
    b = 3 * torch.randn(3, 1, 12, 9, generator=generator)  # mostly outside the value range
    scores = lmi_candidates(a, b).scores
    finite = scores[torch.isfinite(scores)]
    assert finite.min() > -1e-6 and finite.max() < 1 + 1e-6


def test_each_candidate_is_symmetric_the_max_over_offsets_is_not():
    """NMI is symmetric, and candidate d of `a` at p uses exactly the pairs of candidate -d of `b` at p + d,
    so scores_ab[p, d] = scores_ba[p + d, -d] everywhere, borders included; without a search (search=1)
    LMI(a, b) = LMI(b, a). The max over the offsets at a fixed pixel is not symmetric."""
    generator = torch.Generator().manual_seed(5)
    a = torch.rand(2, 1, 7, 8, generator=generator, dtype=torch.float64) * 2 - 1
    b = torch.tanh(3 * a) + 0.3 * torch.randn(2, 1, 7, 8, generator=generator, dtype=torch.float64)
    ab, ba = lmi_candidates(a, b), lmi_candidates(b, a)
    offsets = ab.offsets.tolist()
    for j, (dy, dx) in enumerate(offsets):
        mirror = offsets.index([-dy, -dx])
        for i in range(7):
            for k in range(8):
                if 0 <= i + dy < 7 and 0 <= k + dx < 8:
                    torch.testing.assert_close(
                        ab.scores[:, :, i, k, j], ba.scores[:, :, i + dy, k + dx, mirror]
                    )
    centre_ab = local_mutual_information(a, b, search=1).similarity
    torch.testing.assert_close(centre_ab, local_mutual_information(b, a, search=1).similarity)
    asymmetry = local_mutual_information(a, b).similarity - local_mutual_information(b, a).similarity
    assert asymmetry.abs().max() > 1e-2


def test_self_comparison_shortcut_equals_the_full_computation():
    """`local_mutual_information(x, x)` computes half the offsets and mirrors the rest (the symmetry above);
    a copy of x takes the full path."""
    x = torch.rand(2, 1, 6, 9, generator=torch.Generator().manual_seed(6)) * 2 - 1
    for patch, search in ((3, 3), (3, 5), (5, 3)):
        fast = lmi_candidates(x, x, patch=patch, search=search).scores
        full = lmi_candidates(x, x.clone(), patch=patch, search=search).scores
        assert torch.equal(torch.isinf(fast), torch.isinf(full))
        finite = torch.isfinite(full)
        torch.testing.assert_close(fast[finite], full[finite], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (2, 2), (5, 8), (9, 4)])
@pytest.mark.parametrize("patch, search", [(3, 3), (5, 3), (3, 5), (1, 3)])
def test_clean_mode_handles_every_size_and_border(shape, patch, search):
    generator = torch.Generator().manual_seed(7)
    a = torch.rand(2, 1, *shape, generator=generator) * 2 - 1
    b = torch.rand(2, 1, *shape, generator=generator) * 2 - 1
    result = local_mutual_information(a, b, patch=patch, search=search)
    assert result.similarity.shape == a.shape and result.aligned.shape == a.shape
    assert result.offset.shape == (*a.shape, 2)
    assert torch.isfinite(result.similarity).all()
    assert result.similarity.min() > -1e-6 and result.similarity.max() < 1 + 1e-6
    # the chosen candidate is centred inside b, and the aligned image is b there
    H, W = shape
    rows = torch.arange(H)[:, None] + result.offset[..., 0]
    cols = torch.arange(W)[None, :] + result.offset[..., 1]
    assert ((rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)).all()
    assert torch.equal(result.aligned, gather_b(b, result.offset, math.nan))


def test_one_pixel_images_follow_the_conventions():
    a, b = torch.tensor([[[[0.2]]]]), torch.tensor([[[[0.7]]]])
    assert local_mutual_information(a, b).similarity.item() == pytest.approx(0.0, abs=1e-6)  # one pair: I = 0
    assert local_mutual_information(a, b, sigma=0.0).similarity.item() == 1.0  # both constant: 1


def test_aligned_image_is_the_other_image_at_the_best_offset():
    generator = torch.Generator().manual_seed(8)
    a = torch.rand(2, 1, 10, 11, generator=generator) * 2 - 1
    b = -torch.roll(a, shifts=(1, -1), dims=(2, 3))  # b[p + (1, -1)] = -a[p]
    for mode in ("clean", "reference"):
        opts = LMIOptions(mode=mode).resolved()
        result = local_mutual_information(a, b, opts)
        candidates = lmi_candidates(a, b, opts)
        best = candidates.scores.max(-1).values
        assert (result.similarity >= best - opts.tie_tol).all() and (result.similarity <= best).all()
        index = (
            (candidates.offsets[None, None, None, None] == result.offset[..., None, :])
            .all(-1)
            .int()
            .argmax(-1)
        )
        torch.testing.assert_close(
            result.similarity, candidates.scores.gather(-1, index[..., None]).squeeze(-1)
        )
        assert torch.equal(result.aligned, gather_b(b, result.offset, opts.value_range[0]))
    # a true shift of a remapped copy is found in the interior, and the aligned image undoes it
    clean = local_mutual_information(a, b)
    found = (clean.offset[:, :, 2:-2, 2:-2] == torch.tensor([1, -1])).all(-1)
    assert found.all()
    assert torch.equal(clean.aligned[:, :, 2:-2, 2:-2], -a[:, :, 2:-2, 2:-2])


def test_ties_prefer_the_centre_in_clean_mode_and_the_first_raster_candidate_in_reference_mode():
    a = torch.zeros(1, 1, 5, 5)
    b = torch.full((1, 1, 5, 5), 0.4)
    clean = local_mutual_information(a, b)
    assert torch.equal(clean.offset, torch.zeros_like(clean.offset))
    reference = local_mutual_information(a, b, mode="reference")
    # every candidate ties: MaxPool2d keeps the first
    assert reference.offset[0, 0, 2, 2].tolist() == [-1, -1]
    assert candidate_offsets(LMIOptions()).tolist()[0] == [0, 0]
    assert candidate_offsets(LMIOptions(mode="reference")).tolist()[0] == [-1, -1]


# ------------------------------------------------------------------------------------ gradients


def test_gradcheck_patch_nmi_both_estimators():
    generator = torch.Generator().manual_seed(9)
    x = (torch.rand(3, 9, generator=generator, dtype=torch.float64) * 200 + 20).requires_grad_()
    y = (torch.rand(3, 9, generator=generator, dtype=torch.float64) * 200 + 20).requires_grad_()
    for options in (LMIOptions(**GREY), LMIOptions(mode="reference", quantize=False, **GREY)):
        assert torch.autograd.gradcheck(lambda u, v, o=options: patch_nmi(u, v, o), (x, y))


@pytest.mark.parametrize("mode", ["clean", "reference"])
def test_gradcheck_lmi_maps_on_a_tiny_image(mode):
    generator = torch.Generator().manual_seed(10)
    a = (torch.rand(1, 1, 3, 4, generator=generator, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    b = (torch.rand(1, 1, 3, 4, generator=generator, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    options = LMIOptions(mode=mode, quantize=False if mode == "reference" else None)

    def maps(u, v):
        result = local_mutual_information(u, v, options)
        return result.similarity, result.aligned

    assert torch.autograd.gradcheck(maps, (a, b))


def test_gradcheck_self_lmi_through_the_mirrored_offsets():
    x = torch.rand(1, 1, 3, 4, generator=torch.Generator().manual_seed(18), dtype=torch.float64) - 0.5
    assert torch.autograd.gradcheck(
        lambda u: local_mutual_information(u, u).similarity, (x.requires_grad_(),)
    )


def test_quantized_reference_passes_gradients_to_the_aligned_image_only():
    a = torch.rand(1, 1, 6, 6, requires_grad=True)
    b = torch.rand(1, 1, 6, 6, requires_grad=True)
    result = local_mutual_information(a, b, mode="reference")
    (result.similarity.sum() + result.aligned.sum()).backward()
    assert a.grad is None  # the authors' .int() truncation cuts the graph: nothing reaches a
    # each aligned pixel is one pixel of b, or the zero pad (no gradient) where the offset leaves the image
    rows = torch.arange(6)[:, None] + result.offset[..., 0]
    cols = torch.arange(6)[None, :] + result.offset[..., 1]
    inside = ((rows >= 0) & (rows < 6) & (cols >= 0) & (cols < 6)).sum().item()
    assert b.grad.sum().item() == pytest.approx(inside)


def test_gradients_are_finite_for_hard_bins_and_out_of_range_values():
    a = (torch.randn(2, 1, 8, 8) * 3).requires_grad_()
    b = (torch.randn(2, 1, 8, 8) * 3).requires_grad_()
    for sigma in (8.0, 0.0):
        a.grad = b.grad = None
        result = local_mutual_information(a, b, sigma=sigma)
        (result.similarity.sum() + result.aligned.sum()).backward()
        assert torch.isfinite(b.grad).all()
        assert a.grad is None or torch.isfinite(a.grad).all()


# ------------------------------------------------------------------------------------ reference mode


def _authors_nmi(x: np.ndarray, y: np.ndarray, bins: int, sigma: float, eps: float = 1e-10) -> float:
    """utils/MutualInformation.py, written out for one pair of integer grey-level sample sets."""
    centres = np.linspace(0, 255, bins)
    kx = np.exp(-0.5 * ((x[:, None] - centres) / sigma) ** 2)
    ky = np.exp(-0.5 * ((y[:, None] - centres) / sigma) ** 2)
    px, py = kx.mean(0), ky.mean(0)
    px, py = px / (px.sum() + eps), py / (py.sum() + eps)
    joint = kx.T @ ky
    joint = joint / (joint.sum() + eps)
    hx, hy = -(px * np.log2(px + eps)).sum(), -(py * np.log2(py + eps)).sum()
    hxy = -(joint * np.log2(joint + eps)).sum()
    return 2 * (hx + hy - hxy + eps) / (hx + hy + eps)


def _authors_lmi(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """models/conditioner.py statistical_align for one (H, W) image pair in [0, 1], loop by loop: the mosaic
    of zero-padded k x k patches of b, padded by r, its k x k windows centred on the k x k positions of each
    pixel's block, each against the pixel's zero-padded patch of a; scores (H, W, k, k) and the mosaic of b
    values (what the aligned image is read from)."""
    H, W = a.shape
    r = k // 2
    grey_a, grey_b = np.pad(np.trunc(a * 255), r), np.pad(np.trunc(b * 255), r)
    values_b = np.pad(b, r)
    mosaic, mosaic_values = np.zeros((k * H, k * W)), np.zeros((k * H, k * W))
    for i in range(H):
        for j in range(W):
            mosaic[k * i : k * i + k, k * j : k * j + k] = grey_b[i : i + k, j : j + k]
            mosaic_values[k * i : k * i + k, k * j : k * j + k] = values_b[i : i + k, j : j + k]
    padded = np.pad(mosaic, r)
    scores = np.zeros((H, W, k, k))
    for i in range(H):
        for j in range(W):
            patch_a = grey_a[i : i + k, j : j + k].ravel()
            for alpha in range(k):
                for beta in range(k):
                    window = padded[k * i + alpha : k * i + alpha + k, k * j + beta : k * j + beta + k]
                    scores[i, j, alpha, beta] = _authors_nmi(patch_a, window.ravel(), k**3, 8.0)
    return scores, mosaic_values


@pytest.mark.parametrize("k, shape", [(3, (5, 6)), (3, (1, 4)), (5, (6, 5))])
def test_reference_mode_reproduces_the_authors_algorithm(k, shape):
    generator = torch.Generator().manual_seed(11)
    a = torch.rand(1, 1, *shape, generator=generator, dtype=torch.float64)
    # x_t-like: partly outside [0, 1], where the authors' kernel values vanish
    b = 0.7 * a + 0.6 * torch.randn(1, 1, *shape, generator=generator, dtype=torch.float64)
    opts = LMIOptions(mode="reference", patch=k, value_range=(0.0, 1.0))
    result = local_mutual_information(a, b, opts)
    scores, mosaic_values = _authors_lmi(a[0, 0].numpy(), b[0, 0].numpy(), k)
    ours = lmi_candidates(a, b, opts).scores[0, 0].reshape(*shape, k, k).numpy()
    np.testing.assert_allclose(ours, scores, atol=1e-9)
    np.testing.assert_allclose(result.similarity[0, 0].numpy(), scores.reshape(*shape, -1).max(-1), atol=1e-9)
    H, W = shape
    r = k // 2
    for i in range(H):
        for j in range(W):
            alpha, beta = (result.offset[0, 0, i, j] + r).tolist()
            assert scores[i, j, alpha, beta] >= scores[i, j].max() - 1e-9
            assert result.aligned[0, 0, i, j].item() == mosaic_values[k * i + alpha, k * j + beta]


def test_reference_only_the_centre_candidate_is_a_real_patch_of_b():
    generator = torch.Generator().manual_seed(12)
    a = torch.rand(1, 1, 6, 6, generator=generator, dtype=torch.float64)
    b = torch.rand(1, 1, 6, 6, generator=generator, dtype=torch.float64)
    opts = LMIOptions(mode="reference", value_range=(0.0, 1.0))
    scores = lmi_candidates(a, b, opts).scores[0, 0]
    pa = torch.nn.functional.pad(a, (1, 1, 1, 1))[0, 0]
    pb = torch.nn.functional.pad(b, (1, 1, 1, 1))[0, 0]
    i, j = 3, 2
    patch_a = pa[i : i + 3, j : j + 3].reshape(9)
    for index, (dy, dx) in enumerate(candidate_offsets(opts).tolist()):
        neighbour = pb[i + dy : i + dy + 3, j + dx : j + dx + 3].reshape(9)  # the patch of b centred on p + d
        true_nmi = patch_nmi(patch_a, neighbour, opts).item()
        if (dy, dx) == (0, 0):
            assert scores[i, j, index].item() == pytest.approx(true_nmi, abs=1e-12)
        else:
            assert abs(scores[i, j, index].item() - true_nmi) > 1e-4


def test_reference_nmi_is_not_bounded_by_one():
    """The authors' separately normalised marginals: a patch of b entirely beyond about 115 grey levels
    outside [0, 255] has no kernel mass, the joint histogram is empty, I = H_a and NMI = 2; partly outside,
    values between 1 and 2. Clean mode stays in [0, 1]."""
    a = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(13))
    far = torch.full_like(a, -1.0)
    reference = local_mutual_information(a, far, mode="reference", value_range=(0.0, 1.0)).similarity
    torch.testing.assert_close(reference, torch.full_like(reference, 2.0))
    clean = local_mutual_information(a, far, value_range=(0.0, 1.0)).similarity
    assert clean.max() < 1e-6


# ------------------------------------------------------------------------------------ batching, channels, API


def test_batches_and_channels_are_independent_and_one_channel_broadcasts():
    generator = torch.Generator().manual_seed(14)
    a = torch.rand(3, 2, 6, 7, generator=generator) * 2 - 1
    b = torch.rand(3, 2, 6, 7, generator=generator) * 2 - 1
    for mode in ("clean", "reference"):
        full = local_mutual_information(a, b, mode=mode)
        for n in range(3):
            for c in range(2):
                single = local_mutual_information(a[n : n + 1, c : c + 1], b[n : n + 1, c : c + 1], mode=mode)
                torch.testing.assert_close(full.similarity[n, c], single.similarity[0, 0])
                assert torch.equal(full.aligned[n, c], single.aligned[0, 0])
        broadcast = local_mutual_information(a[:, :1], b, mode=mode)
        torch.testing.assert_close(
            broadcast.similarity, local_mutual_information(a[:, :1].expand_as(b), b, mode=mode).similarity
        )


def test_block_and_chunk_sizes_do_not_change_the_result(monkeypatch):
    generator = torch.Generator().manual_seed(15)
    a = torch.rand(3, 1, 9, 10, generator=generator) * 2 - 1
    b = torch.rand(3, 1, 9, 10, generator=generator) * 2 - 1
    expected = {mode: lmi_candidates(a, b, mode=mode).scores for mode in ("clean", "reference")}
    monkeypatch.setattr(lmi, "PIXELS_PER_BLOCK", 50)  # one image per block
    monkeypatch.setattr(lmi, "CELLS_PER_CHUNK", 729 * 25)  # runs of 2 rows of one image
    for mode, scores in expected.items():
        torch.testing.assert_close(lmi_candidates(a, b, mode=mode).scores, scores)


def test_lmi_condition_stacks_the_cross_and_the_self_maps():
    generator = torch.Generator().manual_seed(16)
    x0 = torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1
    xt = 0.8 * x0 + 0.6 * torch.randn(2, 1, 8, 8, generator=generator)
    condition = lmi_condition(x0, xt)
    assert condition.shape == (2, 2, 8, 8)
    torch.testing.assert_close(condition[:, :1], local_mutual_information(x0, xt).similarity)
    torch.testing.assert_close(condition[:, 1:], local_mutual_information(x0, x0.clone()).similarity)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"mode": "fast"}, "mode must be one of"),
        ({"patch": 4}, "patch must be an odd positive integer"),
        ({"patch": 1, "mode": "reference"}, "reference LMI needs patch >= 3"),
        ({"mode": "reference", "search": 5}, "searches a patch x patch window"),
        ({"quantize": True}, "quantize=True is a reference-mode option"),
        ({"mode": "reference", "sigma": 0.0}, "sigma must be > 0"),
        ({"sigma": -1.0}, "sigma must be > 0"),
        ({"bins": 1}, "bins must be an integer >= 2"),
        ({"value_range": (1.0, 1.0)}, "value_range must be"),
        ({"tie_tol": -1.0}, "tie_tol must be >= 0"),
    ],
)
def test_bad_options_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        LMIOptions(**overrides).resolved()


def test_bad_inputs_are_refused():
    image = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        local_mutual_information(image[0], image[0])
    with pytest.raises(ValueError, match="floating"):
        local_mutual_information((image * 255).to(torch.uint8), image)
    with pytest.raises(ValueError, match="one batch and size"):
        local_mutual_information(image, torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="channel"):
        local_mutual_information(torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4))


def test_reference_defaults_are_the_authors():
    opts = LMIOptions(mode="reference").resolved()
    assert (opts.bins, opts.sigma, opts.search, opts.quantize, opts.tie_tol) == (27, 8.0, 3, True, 0.0)
    assert LMIOptions(mode="reference", patch=5).resolved().bins == 125
    clean = LMIOptions().resolved()
    assert (clean.bins, clean.sigma, clean.search, clean.quantize) == (27, 8.0, 3, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu():
    generator = torch.Generator().manual_seed(17)
    a = torch.rand(2, 1, 16, 12, generator=generator) * 2 - 1
    b = torch.rand(2, 1, 16, 12, generator=generator) * 2 - 1
    for mode in ("clean", "reference"):
        cpu = local_mutual_information(a, b, mode=mode)
        gpu = local_mutual_information(a.cuda(), b.cuda(), mode=mode)
        torch.testing.assert_close(gpu.similarity.cpu(), cpu.similarity, atol=1e-5, rtol=0)
