"""Mixing fields Lambda_t (paper Eqs. 1-3, 14; docs/cdtsde.md, section 2).

Every variant is called as `field(t, x_src) -> Lambda` with Lambda of x_src's shape (B, C, H, W), and
every variant keeps the hard constraints: Lambda = 1 for t >= t1, Lambda = 0 at the clean end (t = -1)
and 0 <= Lambda < 1 below t1, in the working precision (values are capped at the largest float below 1:
in float32 the dynamic field rounds to 1 within about 8 steps of t1, in bfloat16 even eta_t does).
`x_src` is the source already in the target's channel space (the mixing anchor); `t` is one step for the
whole batch or one step per item, shape (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .domain_shift import DomainShiftSchedule

FIELD_VARIANTS = ("linear", "envelope", "channel", "dynamic", "content")
ENVELOPE_TOLERANCE = 0.02  # a mixer output g this close to -1 or +1 counts as sitting on Eq. 2's envelope


@dataclass
class FieldConfig:
    """`variant` and its own options (None: the variant's default; an option of another variant is an error)."""

    variant: str = "dynamic"
    degree: int | None = None  # channel: degree of the Bernstein polynomial (default 4)
    squash_eps: float | None = None  # dynamic, content, envelope: eps of the calibrated logistic, Eq. 3 (default 0.05)
    # dynamic, content: centre the mixer's logits over each image and channel before the sigmoid, so the
    # field cannot move its mean (it follows eta_t) and learns only where to spend the source (docs/cdtsde.md)
    budget: bool | None = None

    def __post_init__(self):
        if self.squash_eps is not None:
            check_squash_eps(self.squash_eps)


def check_squash_eps(squash_eps: float) -> None:
    if not 0.0 < squash_eps < 0.5:
        raise ValueError(f"squash_eps must lie in (0, 0.5), got {squash_eps}")


def below_one(like: torch.Tensor) -> float:
    """The largest value below 1 in `like`'s floating dtype."""
    return 1.0 - torch.finfo(like.dtype).eps / 2


def position_encoding(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 4, H, W): sin(pi x), cos(pi x), sin(pi y), cos(pi y) of coordinates normalised to [-1, 1] over
    the actual image size (the authors' code covers only a quarter of the grid)."""
    y = torch.linspace(-1, 1, height, device=like.device, dtype=like.dtype).view(height, 1).expand(height, width)
    x = torch.linspace(-1, 1, width, device=like.device, dtype=like.dtype).view(1, width).expand(height, width)
    return torch.stack(
        [torch.sin(math.pi * x), torch.cos(math.pi * x), torch.sin(math.pi * y), torch.cos(math.pi * y)]
    ).unsqueeze(0)


def calibrated_logistic(f: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq. 3: (sigmoid(k (f - 1/2)) - eps) / (1 - 2 eps) with k = 2 ln((1 - eps) / eps): monotone,
    maps f = 0 to 0 and f = 1 to 1 exactly."""
    k = 2 * math.log((1 - eps) / eps)
    return (torch.sigmoid(k * (f - 0.5)) - eps) / (1 - 2 * eps)


def bounded_field(eta: torch.Tensor, g: torch.Tensor, squash_eps: float) -> torch.Tensor:
    """The dynamic field's value for a mixer output g in [-1, 1]: f = eta (1 + g (1 - eta)) (Eq. 2), so
    f runs from eta^2 (g = -1, the lower envelope) to 2 eta - eta^2 (g = +1), then Eq. 3."""
    return calibrated_logistic(eta * (1 + g * (1 - eta)), squash_eps)


def field_envelopes(eta: torch.Tensor, squash_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest value the dynamic field can take at eta (g = -1 and g = +1)."""
    return bounded_field(eta, -torch.ones_like(eta), squash_eps), bounded_field(eta, torch.ones_like(eta), squash_eps)


class MixingField(nn.Module):
    """Common part of all variants: step checks and the constraints at and above t1 and at the clean end.
    Subclasses implement `below_truncation(eta, x_src)` for steps 0 <= t < t1, where eta is (B, 1, 1, 1)."""

    variant = ""

    def __init__(self, schedule: DomainShiftSchedule, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.schedule = schedule
        self.channels = channels

    def below_truncation(self, eta: torch.Tensor, x_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Lambda, mixer output g or None) for steps below t1."""
        raise NotImplementedError

    def forward(self, t, x_src: torch.Tensor) -> torch.Tensor:
        return self.with_modulation(t, x_src)[0]

    def with_modulation(self, t, x_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Lambda_t, the mixer output g in [-1, 1] that produced it, or None for fields without a mixer)."""
        if x_src.ndim != 4 or x_src.shape[1] != self.channels:
            raise ValueError(
                f"x_src must have shape (B, {self.channels}, H, W) for this {self.variant} field, "
                f"got {tuple(x_src.shape)}"
            )
        steps = self.schedule.check_steps(t)
        batch = x_src.shape[0]
        if steps.ndim > 1 or (steps.ndim == 1 and steps.numel() not in (1, batch)):
            raise ValueError(f"t must be one step or one step per batch item ({batch}), got shape {tuple(steps.shape)}")
        t1 = self.schedule.t1
        if steps.ndim == 0 or steps.numel() == 1:
            step = int(steps.reshape(()))
            if step >= t1:
                return torch.ones_like(x_src), None
            if step < 0:
                return torch.zeros_like(x_src), None
        eta = self.schedule.eta_at(steps.reshape(-1), x_src).expand(batch, 1, 1, 1)
        inner, modulation = self.below_truncation(eta, x_src)
        inner = inner.clamp(max=below_one(inner))
        steps = steps.reshape(-1, 1, 1, 1).to(inner.device)
        mixing = torch.where(steps >= t1, torch.ones_like(inner), torch.where(steps < 0, torch.zeros_like(inner), inner))
        return mixing, modulation


class LinearField(MixingField):
    """Lambda_t = eta_t everywhere (DoSSR; the paper's "Linear" ablation)."""

    variant = "linear"

    def below_truncation(self, eta, x_src):
        return eta.expand_as(x_src).clone(), None


class ChannelField(MixingField):
    """One monotone curve per channel, spatially uniform (the paper's "Channel Non-linear" ablation):
    a Bernstein polynomial in eta with coefficients 0 = b_0 <= b_1 <= ... <= b_n = 1 (a cumulative
    softmax), so f(0) = 0, f(1) = 1, f is non-decreasing, and f < 1 whenever eta < 1. Starts as f = eta."""

    variant = "channel"

    def __init__(self, schedule: DomainShiftSchedule, channels: int, degree: int = 4):
        super().__init__(schedule, channels)
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        self.degree = degree
        self.logits = nn.Parameter(torch.zeros(channels, degree))
        self.register_buffer("binomials", torch.tensor([math.comb(degree, k) for k in range(degree + 1)]), persistent=False)

    def coefficients(self) -> torch.Tensor:
        """(C, n + 1) non-decreasing Bernstein coefficients from 0 to 1."""
        increments = torch.softmax(self.logits, dim=1)
        inner = torch.cumsum(increments, dim=1)[:, :-1]
        return torch.cat([inner.new_zeros(self.channels, 1), inner, inner.new_ones(self.channels, 1)], dim=1)

    def below_truncation(self, eta, x_src):
        # float64 inside: in float32 the sum can step down by one ulp near eta = 1, breaking monotonicity
        k = torch.arange(self.degree + 1, device=eta.device, dtype=torch.float64)
        e = eta.view(-1, 1, 1).double()  # (B, 1, 1) against (1, C, n + 1)
        basis = self.binomials.double() * e**k * (1 - e) ** (self.degree - k)
        f = (basis * self.coefficients().double().unsqueeze(0)).sum(-1)  # (B, C)
        return f.to(x_src.dtype)[:, :, None, None].expand_as(x_src).clone(), None


def mixer_network(in_channels: int, out_channels: int) -> nn.Sequential:
    """S_theta: 5x5 conv to 8, 3x3 to 16, 3x3 to C with GroupNorm + GELU between (docs/cdtsde.md, section 2). The output
    layer starts at zero, so a new field is spatially uniform (g = 0, f = eta)."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, padding=2),
        nn.GroupNorm(4, 8),
        nn.GELU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.GELU(),
        nn.Conv2d(16, out_channels, 3, padding=1),
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class EnvelopeField(MixingField):
    """The control for the learned fields (issue: what a field adds beyond its collapse point): Eq. 2's
    lower envelope as a fixed schedule, g = -1 everywhere: f = eta^2, then the calibrated logistic (Eq. 3),
    where the dynamic and content fields settle under the x0-MSE objective (docs/cdtsde.md, section 9)."""

    variant = "envelope"

    def __init__(self, schedule: DomainShiftSchedule, channels: int, squash_eps: float = 0.05):
        super().__init__(schedule, channels)
        check_squash_eps(squash_eps)
        self.squash_eps = squash_eps

    def below_truncation(self, eta, x_src):
        return bounded_field(eta, -torch.ones_like(x_src), self.squash_eps), None


class DynamicField(MixingField):
    """The paper's full method: S_theta reads [eta_t, pi(p)] and gives h in (0, 1); g = 2h - 1,
    f = eta (1 + g (1 - eta)) (Eq. 2, so eta^2 <= f <= 2 eta - eta^2), then the calibrated logistic (Eq. 3).
    With `budget`, the logits are centred over each image and channel first: the mixer only moves source
    information around within an image, at a mean the schedule fixes."""

    variant = "dynamic"
    reads_source = False

    def __init__(self, schedule: DomainShiftSchedule, channels: int, squash_eps: float = 0.05, budget: bool = False):
        super().__init__(schedule, channels)
        check_squash_eps(squash_eps)
        self.squash_eps = squash_eps
        self.budget = budget
        self.net = mixer_network(1 + 4 + (channels if self.reads_source else 0), channels)

    def below_truncation(self, eta, x_src):
        batch, _, height, width = x_src.shape
        inputs = [eta.expand(batch, 1, height, width), position_encoding(height, width, x_src).expand(batch, -1, -1, -1)]
        if self.reads_source:
            inputs.append(x_src)
        logits = self.net(torch.cat(inputs, dim=1))
        if self.budget:
            logits = logits - logits.mean(dim=(2, 3), keepdim=True)
        g = 2 * torch.sigmoid(logits) - 1
        return bounded_field(eta, g, self.squash_eps), g


class ContentField(DynamicField):
    """Ours, beyond the paper: the dynamic field whose S_theta also reads the source image, so the field
    adapts to each image's content. Same constraints, same squash."""

    variant = "content"
    reads_source = True


def make_field(config: FieldConfig | str, schedule: DomainShiftSchedule, channels: int) -> MixingField:
    """Build a mixing field from its configuration (or a variant name, with its default options)."""
    config = FieldConfig(config) if isinstance(config, str) else config
    classes = {"linear": LinearField, "envelope": EnvelopeField, "channel": ChannelField, "dynamic": DynamicField,
               "content": ContentField}
    if config.variant not in classes:
        raise ValueError(f"field variant must be one of {FIELD_VARIANTS}, got {config.variant!r}")
    own = {"channel": ("degree",), "envelope": ("squash_eps",), "dynamic": ("squash_eps", "budget"),
           "content": ("squash_eps", "budget")}.get(config.variant, ())
    options = {name: getattr(config, name) for name in ("degree", "squash_eps", "budget")
               if getattr(config, name) is not None}
    foreign = sorted(set(options) - set(own))
    if foreign:
        raise ValueError(f"the {config.variant} field has no option(s) {', '.join(foreign)}")
    return classes[config.variant](schedule, channels, **options)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of a and b (B, N) along N, per row (ties broken by position); 0 for a
    constant row."""
    def centred_ranks(x):
        ranks = x.argsort(dim=1).argsort(dim=1).float()
        return ranks - ranks.mean(dim=1, keepdim=True)

    ra, rb = centred_ranks(a), centred_ranks(b)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    constant = (a.amax(dim=1) == a.amin(dim=1)) | (b.amax(dim=1) == b.amin(dim=1))
    return torch.where(constant, torch.zeros_like(denominator), (ra * rb).sum(dim=1) / denominator)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|grad x| by central differences (replicated border), mean over channels: (B, H, W)."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    return (dx**2 + dy**2).sqrt().mean(dim=1)


def content_correlations(mixing: torch.Tensor, x_src: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far the field follows the source's content, as numbers: the mean over images of the rank
    correlation between Lambda (mean over channels) and the source intensity, and between Lambda and the
    source's local gradient magnitude. 0 for a field flat in space; a content-aware field is far from 0."""
    lam = mixing.float().mean(dim=1).flatten(1)
    intensity = x_src.float().mean(dim=1).flatten(1)
    edges = gradient_magnitude(x_src.float()).flatten(1)
    return {"lambda_rank_corr_intensity": rank_correlation(lam, intensity).mean(),
            "lambda_rank_corr_gradient": rank_correlation(lam, edges).mean()}


def mixer_statistics(field: MixingField, mixing: torch.Tensor, modulation: torch.Tensor | None,
                     t: torch.Tensor, x_src: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What the training log records about the field, over the items with t < t1 (where it acts). For a
    mixer (dynamic, content): its output g, mean, mean spatial std, and the share of pixels within
    ENVELOPE_TOLERANCE of -1 (Eq. 2's lower envelope, as little source as allowed) and of +1: Lambda - eta_t
    would read a field parked on its envelope as learning; with `x_src`, the rank correlations of Lambda
    with the source's intensity and edges (`content_correlations`). For the channel field: mean
    Lambda - eta_t."""
    below = t < field.schedule.t1
    if not below.any() or field.variant in ("linear", "envelope"):
        return {}
    if modulation is None:
        eta = field.schedule.eta_at(t[below], mixing)
        return {"lambda_minus_eta": (mixing[below] - eta).mean().detach()}
    g = modulation[below].detach().float()
    statistics = {"g_mean": g.mean(),
                  "g_spatial_std": g.flatten(2).std(dim=2).mean() if g[0, 0].numel() > 1 else g.new_zeros(()),
                  "g_at_lower": (g <= -1 + ENVELOPE_TOLERANCE).float().mean(),
                  "g_at_upper": (g >= 1 - ENVELOPE_TOLERANCE).float().mean()}
    if x_src is not None:
        statistics.update(content_correlations(mixing[below].detach(), x_src[below].detach()))
    return statistics
