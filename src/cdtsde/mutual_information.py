"""Local mutual information (LMI) maps: the conditioning signal of LMI-guided zero-shot diffusion.

Seed paper 002: Wang et al., "Diffusion based Zero-shot Medical Image-to-Image Translation for Cross
Modality Segmentation" (NeurIPS 2023 workshop, arXiv:2404.01102), section 2.2 "Local-wise Mutual
Information", Eq. 1; the maps condition the score network in section 2.3 (Eqs. 2 and 3). The authors' code
is github.com/mgh-ccni/midiffusion (`models/conditioner.py`, `utils/MutualInformation.py`). The mathematics,
both modes and the list of the authors' estimator quirks are in docs/lmi.md.

At every pixel p of image `a`, the k x k patch of `a` centred on p (k = `patch`, 3 or 5) is compared with
patches of image `b` centred on the neighbours p + d of p (d in an s x s window, s = `search`) by the
normalised mutual information NMI = 2 I / (H_a + H_b) of the intensity pairs (a[p + u], b[p + d + u]),
estimated with Gaussian Parzen windows on a grid of grey-level bins. The best offset wins (a max-pool over
the candidates): `similarity` is its NMI, `aligned` is b[p + d*], `offset` is d*.

Two modes (`LMIOptions.mode`):

* ``"clean"``: the definition above, correct at every size and border. Grey levels are not truncated;
  every sample spreads unit mass over the bins (a normalised Gaussian kernel, so the joint histogram's
  marginals are exactly the marginal histograms and the result is a true NMI in [0, 1]); pairs with a
  pixel outside an image are dropped and candidates centred outside `b` are excluded; ties go to the
  candidate nearest the centre. ``sigma=0`` is hard binning (nearest bin), the limit of the Parzen
  estimate, equal to scikit-learn's `normalized_mutual_info_score` with arithmetic averaging.
* ``"reference"``: the authors' estimator, so that maps compare with theirs: 27 bins (patch**3), a
  Gaussian kernel of std 8 grey levels on a 0-255 scale (2 * MIsigma**2 with MIsigma = 2), grey levels
  truncated to integers, unnormalised kernels with separately normalised marginals, eps = 1e-10 inside
  every log and in the ratio, zero padding, and their 9 (25 for 5x5) "candidates" taken from a mosaic of
  patches, of which only the centre one is a real patch of `b`; ties go to the first in raster order.

Channels: C > 1 is handled per channel (channel c of `a` against channel c of `b`, as the authors'
`statistical_align` does); a single-channel image is broadcast against a multi-channel one. Everything is
vectorised torch (unfold-style slicing and gathers), device-agnostic, batched over (N, C) and
differentiable (the joint entropy has its own backward that recomputes the joint histograms chunk by chunk
instead of storing them). `local_mutual_information(x, x)` (the same tensor twice) computes half the
clean-mode offsets and mirrors the rest: candidate -d at p has the pairs of candidate d at p - d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

MODES = ("clean", "reference")
GREY_MAX = 255.0
# The authors' kernel std: MutualInformation(sigma=MIsigma) stores 2 * MIsigma**2 and uses it as the std
# (utils/MutualInformation.py line 9 and 20); every config has MIsigma: 2.
REFERENCE_SIGMA = 8.0
REFERENCE_EPS = 1e-10  # utils/MutualInformation.py line 12: added in every normalisation, log and ratio
DEFAULT_BINS = 27  # the authors' patch_size**3 for 3x3 patches (models/conditioner.py line 95)
# Images are processed in blocks of about PIXELS_PER_BLOCK pixels (their padded Parzen weights: about 7 MB
# of float32 at 27 bins), and each block in chunks of rows holding about CELLS_PER_CHUNK joint-histogram
# cells (4 MB in float32: they stay in cache; measured fastest among 2^18 .. 2^21).
PIXELS_PER_BLOCK = 1 << 16
CELLS_PER_CHUNK = 1 << 20


@dataclass(frozen=True)
class LMIOptions:
    """How LMI maps are computed; `None` fields take the mode's default (see `resolved`).

    mode: "clean" or "reference" (module docstring).
    patch: side of the compared patches (odd; the paper's code uses 3 or 5).
    search: side of the window of candidate centres (odd). Clean default 3; the reference ties it to
        `patch` (the authors' max-pool is patch x patch) and refuses any other value.
    bins: grey-level bins, centred at 255 k / (bins - 1). Clean default 27; reference default patch**3.
    sigma: std of the Gaussian Parzen kernel in grey levels of the 0-255 scale (default 8 in both modes).
        Clean mode accepts 0: hard binning to the nearest bin (not differentiable).
    value_range: the input intensities mapped to grey levels 0 and 255 (the project's models work in
        [-1, 1]; the authors' data are in [0, 1]). Clean mode does not clip: values beyond the range fall to
        the edge bins; the reference kernels vanish far outside it, as the authors' do.
    quantize: truncate grey levels toward zero like the authors' `.int()` (reference default True; then the
        similarity has zero gradient, the aligned image keeps its gradient). Clean mode never truncates.
    tie_tol: candidates within this much NMI of the best are ties, resolved by the mode's candidate order.
        Clean default 1e-6 (rounding-level differences must not move the alignment off the centre);
        reference default 0 (the authors' max-pool keeps the first exact maximum).
    """

    mode: str = "clean"
    patch: int = 3
    search: int | None = None
    bins: int | None = None
    sigma: float | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)
    quantize: bool | None = None
    tie_tol: float | None = None

    def resolved(self) -> LMIOptions:
        """These options with every default filled in and checked; raises ValueError on a bad value."""
        if self.mode not in MODES:
            raise ValueError(f"LMI mode must be one of {MODES}, got {self.mode!r}")
        reference = self.mode == "reference"
        if not isinstance(self.patch, int) or self.patch < 1 or self.patch % 2 == 0:
            raise ValueError(f"LMI patch must be an odd positive integer, got {self.patch!r}")
        if reference and self.patch < 3:
            raise ValueError("reference LMI needs patch >= 3 (its mosaic geometry has no 1x1 form)")
        search = self.search if self.search is not None else (self.patch if reference else 3)
        if not isinstance(search, int) or search < 1 or search % 2 == 0:
            raise ValueError(f"LMI search must be an odd positive integer, got {search!r}")
        if reference and search != self.patch:
            raise ValueError(
                f"reference LMI searches a patch x patch window ({self.patch}), got search={search}"
            )
        bins = self.bins if self.bins is not None else (self.patch**3 if reference else DEFAULT_BINS)
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"LMI bins must be an integer >= 2, got {bins!r}")
        sigma = float(self.sigma) if self.sigma is not None else REFERENCE_SIGMA
        if not (sigma > 0 or (sigma == 0 and not reference)) or not math.isfinite(sigma):
            raise ValueError(f"LMI sigma must be > 0 (or 0 for hard bins in clean mode), got {self.sigma!r}")
        lo, hi = (float(v) for v in self.value_range)
        if not lo < hi:
            raise ValueError(f"LMI value_range must be (low, high) with low < high, got {self.value_range!r}")
        quantize = self.quantize if self.quantize is not None else reference
        if quantize and not reference:
            raise ValueError(
                "clean LMI never truncates grey levels; quantize=True is a reference-mode option"
            )
        tie_tol = float(self.tie_tol) if self.tie_tol is not None else (0.0 if reference else 1e-6)
        if not tie_tol >= 0:
            raise ValueError(f"LMI tie_tol must be >= 0, got {self.tie_tol!r}")
        return replace(
            self,
            search=search,
            bins=bins,
            sigma=sigma,
            value_range=(lo, hi),
            quantize=bool(quantize),
            tie_tol=tie_tol,
        )


@dataclass
class LMIResult:
    """similarity: (N, C, H, W) NMI of the chosen candidate; aligned: (N, C, H, W) `b` at p + offset
    (reference mode: the zero-grey pad value, value_range[0], where that lies outside `b`);
    offset: (N, C, H, W, 2) int64 (dy, dx) of the chosen candidate."""

    similarity: torch.Tensor
    aligned: torch.Tensor
    offset: torch.Tensor


@dataclass
class LMICandidates:
    """scores: (N, C, H, W, J) NMI of every candidate (-inf for clean candidates centred outside `b`);
    offsets: (J, 2) int64 (dy, dx) of candidate j, in the mode's tie-breaking order (clean: nearest the
    centre first, then raster; reference: raster, which is the authors' max-pool order)."""

    scores: torch.Tensor
    offsets: torch.Tensor


# ---------------------------------------------------------------------------------------------- estimator


def grey_levels(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Intensities -> grey levels: value_range maps linearly onto [0, 255] (no clipping)."""
    lo, hi = value_range
    return (x - lo) * (GREY_MAX / (hi - lo))


def bin_centres(bins: int, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """The bin centres 255 k / (bins - 1), k = 0 .. bins - 1 (the authors' torch.linspace(0, 255, bins))."""
    return torch.linspace(0.0, GREY_MAX, bins, dtype=dtype, device=device)


def parzen_weights(grey: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """Clean-mode Parzen window: (..., ) grey levels -> (..., bins) weights that sum to 1.

    w_k(g) = exp(-(g - c_k)^2 / (2 sigma^2)) / sum_j exp(-(g - c_j)^2 / (2 sigma^2)). Normalising per sample
    (a partition of unity, as B-spline Parzen windows are in MI registration) makes every sample count once,
    including those near or beyond the ends of the range, and makes the marginals of the joint histogram the
    marginal histograms; computed as a softmax so that far-out values do not underflow to 0 / 0.
    sigma = 0: one-hot on the nearest bin (hard binning)."""
    centres = bin_centres(bins, grey.dtype, grey.device)
    if sigma == 0:
        step = GREY_MAX / (bins - 1)
        index = torch.round(grey.detach() / step).clamp(0, bins - 1).long()
        return F.one_hot(index, bins).to(grey.dtype)
    return torch.softmax(-0.5 * ((grey.unsqueeze(-1) - centres) / sigma) ** 2, dim=-1)


def reference_kernel(grey: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """The authors' unnormalised kernel values exp(-0.5 ((g - c_k) / sigma)^2) (utils/MutualInformation.py
    lines 19-20); they vanish (underflow) for grey levels far outside [0, 255]."""
    centres = bin_centres(bins, grey.dtype, grey.device)
    return torch.exp(-0.5 * ((grey.unsqueeze(-1) - centres) / sigma) ** 2)


def _tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def _log(t: torch.Tensor) -> torch.Tensor:
    """Natural log into a new tensor. On the CPU, NumPy's vectorised log is about 5x faster than torch's
    (measured here: 0.45 against 2.2 ns per float32), and the K^2 logs of the joint histograms are most of the
    work."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not t.requires_grad:
        out = torch.empty_like(t)
        np.log(t.numpy(), out=out.numpy())
        return out
    return t.log()


class _JointHistogram(torch.autograd.Function):
    """Joint-histogram statistics for At of shape (m, K, n) and B of shape (m, n, K) (n samples, K bins):
    with P = At @ B, returns H = -sum_kl P_kl log(P_kl + eps) and P's row and column sums (the marginals, in
    clean mode). eps = 0 means eps = the dtype's smallest normal number, i.e. 0 log 0 = 0 and nothing else
    changes. The K x K histograms are rebuilt in backward instead of being stored: memory stays O(m n K)
    rather than O(m K^2)."""

    @staticmethod
    def forward(ctx, At: torch.Tensor, B: torch.Tensor, eps: float):
        if eps == 0:  # P + tiny straight from the product: log never sees 0, and P + tiny = P for P > 1e-30
            P = torch.baddbmm(At.new_full((1, 1, 1), _tiny(At.dtype)), At, B)
            entropy = _log(P).mul_(P)
        else:
            P = torch.bmm(At, B)
            entropy = _log(P + eps).mul_(P)
        ctx.save_for_backward(At, B)
        ctx.eps = eps
        return entropy.flatten(1).sum(1).neg_(), P.sum(2), P.sum(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_entropy: torch.Tensor, grad_rows: torch.Tensor, grad_cols: torch.Tensor):
        At, B = ctx.saved_tensors
        if ctx.eps == 0:  # dH/dP = -(log P + 1), finite at P = 0 through the tiny shift
            P = torch.baddbmm(At.new_full((1, 1, 1), _tiny(At.dtype)), At, B)
            G = _log(P).add_(1.0)
        else:  # dH/dP = -(log(P + eps) + P / (P + eps))
            P = torch.bmm(At, B)
            shifted = P + ctx.eps
            G = _log(shifted).add_(P.div_(shifted))
        G.mul_(-grad_entropy[:, None, None]).add_(grad_rows[:, :, None]).add_(grad_cols[:, None, :])
        grad_at = torch.bmm(G, B.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_b = torch.bmm(At.transpose(1, 2), G) if ctx.needs_input_grad[1] else None
        return grad_at, grad_b, None


def _entropy(p: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Shannon entropy in nats over the last dim: -sum p log(p + eps); eps = 0: 0 log 0 = 0, finite gradients."""
    return -(p * (p.clamp_min(_tiny(p.dtype)) if eps == 0 else p + eps).log()).sum(-1)


def _clean_nmi(At: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """NMI of the Parzen joint histograms P = At @ B for At (m, K, n), B (m, n, K) already divided by the
    number of valid pairs |V|.

    A sample's weights (a column of At, a row of B) are its normalised Parzen weights, or all zeros for a
    pixel outside the image, so a pair counts if both pixels are inside and P sums to 1. The marginals are
    P's own row and column sums, which makes I = H_a + H_b - H_ab the mutual information of one discrete
    distribution: 0 <= I <= min(H_a, H_b), so NMI = 2 I / (H_a + H_b) lies in [0, 1]. Both entropies 0
    (both patches constant to the estimator): NMI = 1, scikit-learn's convention."""
    h_ab, p_a, p_b = _JointHistogram.apply(At, B, 0.0)
    h_a, h_b = _entropy(p_a), _entropy(p_b)
    denominator = h_a + h_b
    threshold = 64 * torch.finfo(At.dtype).eps  # below: both patches constant up to rounding
    nmi = 2 * (denominator - h_ab) / denominator.clamp_min(threshold)
    return torch.where(denominator > threshold, nmi, torch.ones_like(nmi))


def _reference_marginal_entropy(kernels: torch.Tensor, dim: int) -> torch.Tensor:
    """The authors' marginal entropy in bits: p = mean over samples of the kernel values, divided by (its sum
    + eps), H = -sum p log2(p + eps) (utils/MutualInformation.py lines 22-24 and 60-61)."""
    p = kernels.mean(dim)
    p = p / (p.sum(-1, keepdim=True) + REFERENCE_EPS)
    return _entropy(p, REFERENCE_EPS) / math.log(2)


def _reference_nmi(At: torch.Tensor, B: torch.Tensor, h_a: torch.Tensor | None = None) -> torch.Tensor:
    """The authors' NMI (utils/MutualInformation.py lines 17-69) for unnormalised kernel values At (m, K, n),
    B (m, n, K): marginals normalised on their own (not the joint's), joint K_a^T K_b divided by (its sum +
    eps), entropies in bits with eps inside every log, NMI = 2 (I + eps) / (H_a + H_b + eps). `h_a`: the a
    patch's entropy if already known (it does not depend on the candidate)."""
    eps = REFERENCE_EPS
    if h_a is None:
        h_a = _reference_marginal_entropy(At, -1)
    h_b = _reference_marginal_entropy(B, 1)
    joint_total = (At.sum(1) * B.sum(-1)).sum(-1)  # = sum_kl (A^T B)_kl
    h_ab = _JointHistogram.apply(At, B / (joint_total + eps)[:, None, None], eps)[0] / math.log(2)
    return 2 * (h_a + h_b - h_ab + eps) / (h_a + h_b + eps)


def patch_nmi(
    x: torch.Tensor, y: torch.Tensor, options: LMIOptions | None = None, **overrides
) -> torch.Tensor:
    """NMI of two sets of paired samples along the last dim, (..., n) -> (...), with the mode's estimator
    (the one the maps use; `options.bins`, `sigma`, `value_range`, `quantize` apply; the geometry does not).
    NaN samples are treated as missing (clean mode only): their pairs are dropped."""
    opts = replace(options or LMIOptions(), **overrides).resolved()
    if x.shape != y.shape:
        raise ValueError(f"patch_nmi needs samples of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    batch, n = x.shape[:-1], x.shape[-1]
    gx, gy = _grey(x.reshape(-1, n), opts), _grey(y.reshape(-1, n), opts)
    if opts.mode == "reference":
        A, B = reference_kernel(gx, opts.bins, opts.sigma), reference_kernel(gy, opts.bins, opts.sigma)
        nmi = _reference_nmi(A.transpose(1, 2), B)
    else:
        present_x, present_y = ~gx.isnan(), ~gy.isnan()
        A = parzen_weights(gx.nan_to_num(0.0), opts.bins, opts.sigma) * present_x[..., None]
        B = parzen_weights(gy.nan_to_num(0.0), opts.bins, opts.sigma) * present_y[..., None]
        pairs = (present_x & present_y).sum(-1).clamp_min(1).to(B.dtype)
        nmi = _clean_nmi(A.transpose(1, 2), B / pairs[:, None, None])
    return nmi.reshape(batch)


def _grey(x: torch.Tensor, opts: LMIOptions) -> torch.Tensor:
    grey = grey_levels(x, opts.value_range)
    # the authors' (input * 255).int(): truncation toward zero, no gradient (MutualInformation.py 47-48)
    return torch.trunc(grey.detach()) if opts.quantize else grey


# ---------------------------------------------------------------------------------------------- geometry


def _square_offsets(side: int) -> list[tuple[int, int]]:
    r = side // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def candidate_offsets(options: LMIOptions) -> torch.Tensor:
    """(J, 2) int64 candidate offsets (dy, dx) in tie-breaking order (see LMICandidates)."""
    opts = options.resolved()
    offsets = _square_offsets(opts.search)
    if opts.mode == "clean":
        offsets.sort(key=lambda d: (d[0] ** 2 + d[1] ** 2, d[0], d[1]))
    return torch.tensor(offsets, dtype=torch.long)


def _mosaic_index(n_pixels: int, k: int, device) -> torch.Tensor:
    """Reference geometry along one axis: (k, n_pixels, k) indices into the image padded by r = k // 2, for
    candidate alpha, pixel i, window element u.

    The authors lay the k x k zero-padded patches of b side by side in a (k H) x (k W) mosaic, pad the
    mosaic by r and take the k x k window centred on mosaic position (k i + alpha, k j + beta) as candidate
    (alpha, beta) of pixel (i, j) (models/conditioner.py lines 101-112). Mosaic row R = k i + alpha - r + u is
    row s = R mod k of the patch of pixel R div k, i.e. image row R div k + s - r; rows outside the mosaic are
    the mosaic's own zero pad, mapped here to padded row 0 (a zero-pad row). Only alpha = r gives the patch
    of b centred on i; e.g. for k = 3 and alpha = 0 the window's rows are i, i - 1, i."""
    r = k // 2
    i = torch.arange(n_pixels, device=device)[None, :, None]
    alpha = torch.arange(k, device=device)[:, None, None]
    u = torch.arange(k, device=device)[None, None, :]
    R = k * i + alpha - r + u
    inside = (R >= 0) & (R < k * n_pixels)
    padded = torch.div(R, k, rounding_mode="floor") + torch.remainder(R, k)  # image row + r
    return torch.where(inside, padded, torch.zeros_like(padded))


def _chunks(items: int, H: int, W: int, bins: int):
    """(i0, i1, r0, r1) blocks of about CELLS_PER_CHUNK joint-histogram cells: whole images when they are
    small, else runs of rows of one image (so that the patch tensors' slices stay views)."""
    joints = max(1, CELLS_PER_CHUNK // (bins * bins))
    if joints >= H * W:
        step = joints // (H * W)
        for i0 in range(0, items, step):
            yield i0, min(i0 + step, items), 0, H
    else:
        rows = max(1, joints // W)
        for i in range(items):
            for r0 in range(0, H, rows):
                yield i, i + 1, r0, min(r0 + rows, H)


def _pair_counts(H: int, W: int, r: int, dy: int, dx: int, dtype, device) -> torch.Tensor:
    """(H, W) number of patch offsets u with both p + u and p + d + u inside the image (clean mode's |V|);
    separable: (valid rows) x (valid columns). At least 1 (a candidate with none is excluded anyway)."""

    def valid(n: int, shift: int) -> torch.Tensor:
        i = torch.arange(n, device=device)[:, None]
        u = torch.arange(-r, r + 1, device=device)[None, :]
        return ((i + u >= 0) & (i + u < n) & (i + shift + u >= 0) & (i + shift + u < n)).sum(1)

    return (valid(H, dy)[:, None] * valid(W, dx)[None, :]).clamp_min(1).to(dtype)


def _shift_map(score: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(I, H, W) -> out[p] = score[p - d], -inf where p - d is outside."""
    _, H, W = score.shape
    s = max(abs(dy), abs(dx))
    padded = F.pad(score, (s, s, s, s), value=-math.inf)
    return padded[:, s - dy : s - dy + H, s - dx : s - dx + W]


def _candidate_scores(
    ga: torch.Tensor, gb: torch.Tensor, opts: LMIOptions, offsets: torch.Tensor, same: bool = False
) -> torch.Tensor:
    """(I, H, W) grey levels -> (I, H, W, J) NMI of every candidate: clean (-inf where centred outside b)
    or the authors' k x k mosaic candidates. `same`: b is a (clean mode then computes half the offsets:
    the pairs of (p, d) are those of (p + d, -d) with the roles swapped, and NMI is symmetric).

    Works a block of rows at a time (`_chunks`): the patch tensors of a block are built from slices of the
    padded weights, used for every candidate while they are in cache, and never exist for the whole image."""
    items, H, W = ga.shape
    K, r, s = opts.bins, opts.patch // 2, opts.search // 2
    side = 2 * r + 1
    todo = offsets.tolist()
    reference = opts.mode == "reference"
    if reference:
        # zero padding in grey levels: pad pixels are real samples at grey 0 (conditioner.py lines 101, 115)
        wa = reference_kernel(F.pad(ga, (r, r, r, r)), K, opts.sigma)
        wb = reference_kernel(F.pad(gb, (r, r, r, r)), K, opts.sigma)
        row_index, col_index = (
            _mosaic_index(H, opts.patch, ga.device),
            _mosaic_index(W, opts.patch, ga.device),
        )
    else:
        # zero weights outside the image: such pixels carry no mass, so their pairs drop out of the histograms
        wa = F.pad(parzen_weights(ga, K, opts.sigma), (0, 0, r, r, r, r))
        wb = F.pad(parzen_weights(gb, K, opts.sigma), (0, 0, r + s, r + s, r + s, r + s))
        if same:
            todo = [d for d in todo if tuple(d) >= (0, 0)]  # the centre and one of every pair (d, -d)
        inverse_counts = [1.0 / _pair_counts(H, W, r, dy, dx, ga.dtype, ga.device) for dy, dx in todo]

    blocks = []
    for i0, i1, r0, r1 in _chunks(items, H, W, K):
        # the patch of a at every pixel of the block, (m, K, n); the reference tiles it against every candidate
        At = torch.stack(
            [wa[i0:i1, r0 + uy : r1 + uy, ux : ux + W] for uy in range(side) for ux in range(side)], dim=-1
        ).flatten(0, 2)
        if reference:
            h_a = _reference_marginal_entropy(At, -1)  # the same for every candidate
        scores = []
        for j, (dy, dx) in enumerate(todo):
            if reference:
                # the mosaic windows, (m, k k, K): rows and columns are chosen separately (two index_selects
                # are about twice as fast as one advanced index), then (i, rows, u, W, v) -> (i, rows, W, u, v)
                B = wb[i0:i1].index_select(1, row_index[dy + r, r0:r1].flatten())
                B = B.index_select(2, col_index[dx + r].flatten())
                B = B.view(i1 - i0, r1 - r0, side, W, side, K).transpose(2, 3).reshape(-1, side * side, K)
                scores.append(_reference_nmi(At, B, h_a))
            else:
                y0, x0 = r0 + s + dy, s + dx  # the patches of b centred on p + d
                B = torch.stack(
                    [
                        wb[i0:i1, y0 + uy : y0 + uy + r1 - r0, x0 + ux : x0 + ux + W]
                        for uy in range(side)
                        for ux in range(side)
                    ],
                    dim=3,
                )
                B = (B * inverse_counts[j][r0:r1, :, None, None]).flatten(0, 2)  # P = At @ B sums to 1
                scores.append(_clean_nmi(At, B))
        blocks.append(torch.stack(scores, dim=-1))
    scores = torch.cat(blocks).view(items, H, W, len(todo))
    if reference:
        return scores
    rows = torch.arange(H, device=ga.device)[:, None, None]
    cols = torch.arange(W, device=ga.device)[None, :, None]
    shift = torch.tensor(todo, device=ga.device)
    inside = (
        (rows + shift[:, 0] >= 0)
        & (rows + shift[:, 0] < H)
        & (cols + shift[:, 1] >= 0)
        & (cols + shift[:, 1] < W)
    )
    scores = torch.where(inside, scores, torch.full_like(scores, -math.inf))
    if not same:
        return scores
    maps = {}
    for j, (dy, dx) in enumerate(todo):
        maps[dy, dx] = scores[..., j]
        if (dy, dx) != (0, 0):
            maps[-dy, -dx] = _shift_map(scores[..., j], dy, dx)
    return torch.stack([maps[dy, dx] for dy, dx in offsets.tolist()], dim=-1)


def _candidate_values(b: torch.Tensor, opts: LMIOptions, offsets: torch.Tensor) -> torch.Tensor:
    """(I, H, W) -> (I, H, W, J): b at p + d for every candidate (the pixel the alignment would take;
    outside b: value_range[0], grey 0, which is what the authors' zero-padded mosaic holds there)."""
    _, H, W = b.shape
    s = opts.search // 2
    padded = F.pad(b, (s, s, s, s), value=opts.value_range[0])
    return torch.stack(
        [padded[:, s + dy : s + dy + H, s + dx : s + dx + W] for dy, dx in offsets.tolist()], -1
    )


# ---------------------------------------------------------------------------------------------- public API


def _prepare(a: torch.Tensor, b: torch.Tensor, opts: LMIOptions) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    for name, x in (("a", a), ("b", b)):
        if x.dim() != 4:
            raise ValueError(f"LMI needs (N, C, H, W) images; {name} has shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"LMI needs floating-point images; {name} is {x.dtype}")
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"LMI needs images of one batch and size, got {tuple(a.shape)} and {tuple(b.shape)}")
    ca, cb = a.shape[1], b.shape[1]
    if ca != cb and 1 not in (ca, cb):
        raise ValueError(
            f"LMI compares channel c with channel c (or broadcasts one channel); got {ca} and {cb}"
        )
    channels = max(ca, cb)
    N, _, H, W = a.shape
    a = a.expand(N, channels, H, W).reshape(N * channels, H, W)
    b = b.expand(N, channels, H, W).reshape(N * channels, H, W)
    return a, b, (N, channels, H, W)


def lmi_candidates(
    a: torch.Tensor, b: torch.Tensor, options: LMIOptions | None = None, **overrides
) -> LMICandidates:
    """NMI of every candidate offset at every pixel: the stack that `local_mutual_information` max-pools.
    Arguments as for `local_mutual_information`."""
    opts = replace(options or LMIOptions(), **overrides).resolved()
    same = b is a
    a, b, shape = _prepare(a, b, opts)
    offsets = candidate_offsets(opts).to(a.device)
    ga = _grey(a, opts)
    gb = ga if same else _grey(b, opts)
    per_block = max(1, PIXELS_PER_BLOCK // (shape[2] * shape[3]))
    scores = torch.cat(
        [
            _candidate_scores(ga[i : i + per_block], gb[i : i + per_block], opts, offsets, same)
            for i in range(0, a.shape[0], per_block)
        ]
    )
    return LMICandidates(scores.view(*shape, -1), offsets)


def local_mutual_information(
    a: torch.Tensor, b: torch.Tensor, options: LMIOptions | None = None, **overrides
) -> LMIResult:
    """LMI of `a` against `b` (paper section 2.2, Eq. 1, with the normalised MI of the authors' code).

    a, b: (N, C, H, W) floating-point images of one size, intensities in `options.value_range`; channel
    counts equal (compared channel by channel) or one of them 1 (broadcast). `options` (LMIOptions) or
    keyword overrides of its fields, e.g. `local_mutual_information(a, b, mode="reference", patch=5)`.
    Returns LMIResult(similarity, aligned, offset); see the module docstring for the definition."""
    opts = replace(options or LMIOptions(), **overrides).resolved()
    candidates = lmi_candidates(a, b, opts)
    scores, offsets = candidates.scores, candidates.offsets
    if opts.tie_tol > 0:
        best = scores.max(-1, keepdim=True).values
        choice = (scores >= best - opts.tie_tol).to(torch.uint8).argmax(-1)  # first of the ties, in order
    else:
        choice = scores.argmax(-1)  # first exact maximum, as MaxPool2d keeps
    similarity = scores.gather(-1, choice[..., None]).squeeze(-1)
    _, b_items, shape = _prepare(a, b, opts)
    values = _candidate_values(b_items, opts, offsets).view(*shape, -1)
    aligned = values.gather(-1, choice[..., None]).squeeze(-1)
    return LMIResult(similarity=similarity, aligned=aligned, offset=offsets[choice])


def lmi_condition(
    x0: torch.Tensor, x: torch.Tensor, options: LMIOptions | None = None, **overrides
) -> torch.Tensor:
    """The score network's conditioning channels (paper section 2.3): [LMI(x0, x), LMI(x0, x0)] concatenated
    along channels, (N, 2C, H, W). Training: x0 the clean target image, x its noisy version; zero-shot
    sampling: x0 the source image, x the current sample, recomputed at every step."""
    opts = replace(options or LMIOptions(), **overrides).resolved()
    cross = local_mutual_information(x0, x, opts).similarity
    own = local_mutual_information(x0, x0, opts).similarity
    return torch.cat([cross, own], dim=1)
