"""Mixing fields Lambda_t (paper Eqs. 1-3, 14; DESIGN 2).

Every variant is called as `field(t, x_src) -> Lambda` with Lambda of x_src's shape (B, C, H, W), and
every variant keeps the hard constraints: Lambda = 1 for t >= t1, Lambda = 0 at the clean end (t = -1)
and 0 <= Lambda < 1 below t1. `x_src` is the source already in the target's channel space (the mixing
anchor); `t` is one step for the whole batch or one step per item, shape (B,).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .schedule import NoiseSchedule

FIELD_VARIANTS = ("linear", "channel", "dynamic", "content")


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

    def __init__(self, schedule: NoiseSchedule, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.schedule = schedule
        self.channels = channels

    def config(self) -> dict:
        return {"variant": self.variant, "channels": self.channels}

    def below_truncation(self, eta: torch.Tensor, x_src: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, t, x_src: torch.Tensor) -> torch.Tensor:
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
                return torch.ones_like(x_src)
            if step < 0:
                return torch.zeros_like(x_src)
        eta = self.schedule.eta_at(steps.reshape(-1), x_src).expand(batch, 1, 1, 1)
        inner = self.below_truncation(eta, x_src)
        steps = steps.reshape(-1, 1, 1, 1)
        return torch.where(steps >= t1, torch.ones_like(inner), torch.where(steps < 0, torch.zeros_like(inner), inner))


class LinearField(MixingField):
    """Lambda_t = eta_t everywhere (DoSSR; the paper's "Linear" ablation)."""

    variant = "linear"

    def below_truncation(self, eta, x_src):
        return eta.expand_as(x_src).clone()


class ChannelField(MixingField):
    """One monotone curve per channel, spatially uniform (the paper's "Channel Non-linear" ablation):
    a Bernstein polynomial in eta with coefficients 0 = b_0 <= b_1 <= ... <= b_n = 1 (a cumulative
    softmax), so f(0) = 0, f(1) = 1, f is non-decreasing, and f < 1 whenever eta < 1. Starts as f = eta."""

    variant = "channel"

    def __init__(self, schedule: NoiseSchedule, channels: int, degree: int = 4):
        super().__init__(schedule, channels)
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        self.degree = degree
        self.logits = nn.Parameter(torch.zeros(channels, degree))
        self.register_buffer("binomials", torch.tensor([math.comb(degree, k) for k in range(degree + 1)]), persistent=False)

    def config(self) -> dict:
        return {**super().config(), "degree": self.degree}

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
        return f.to(x_src.dtype)[:, :, None, None].expand_as(x_src).clone()


def mixer_network(in_channels: int, out_channels: int) -> nn.Sequential:
    """S_theta: 5x5 conv to 8, 3x3 to 16, 3x3 to C with GroupNorm + GELU between (DESIGN 2). The output
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


class DynamicField(MixingField):
    """The paper's full method: S_theta reads [eta_t, pi(p)] and gives h in (0, 1); g = 2h - 1,
    f = eta (1 + g (1 - eta)) (Eq. 2, so eta^2 <= f <= 2 eta - eta^2), then the calibrated logistic (Eq. 3)."""

    variant = "dynamic"
    reads_source = False

    def __init__(self, schedule: NoiseSchedule, channels: int, squash_eps: float = 0.05):
        super().__init__(schedule, channels)
        if not 0.0 < squash_eps < 0.5:
            raise ValueError(f"squash_eps must lie in (0, 0.5), got {squash_eps}")
        self.squash_eps = squash_eps
        self.net = mixer_network(1 + 4 + (channels if self.reads_source else 0), channels)

    def config(self) -> dict:
        return {**super().config(), "squash_eps": self.squash_eps}

    def below_truncation(self, eta, x_src):
        batch, _, height, width = x_src.shape
        inputs = [eta.expand(batch, 1, height, width), position_encoding(height, width, x_src).expand(batch, -1, -1, -1)]
        if self.reads_source:
            inputs.append(x_src)
        g = 2 * torch.sigmoid(self.net(torch.cat(inputs, dim=1))) - 1
        return bounded_field(eta, g, self.squash_eps)


class ContentField(DynamicField):
    """Ours, beyond the paper: the dynamic field whose S_theta also reads the source image, so the field
    adapts to each image's content. Same constraints, same squash."""

    variant = "content"
    reads_source = True


def make_field(variant: str, schedule: NoiseSchedule, channels: int, **options) -> MixingField:
    """Build a mixing field by name; `options` are the variant's own (degree, squash_eps)."""
    classes = {"linear": LinearField, "channel": ChannelField, "dynamic": DynamicField, "content": ContentField}
    if variant not in classes:
        raise ValueError(f"field variant must be one of {FIELD_VARIANTS}, got {variant!r}")
    try:
        return classes[variant](schedule, channels, **options)
    except TypeError as exc:
        raise ValueError(f"bad options for the {variant} field: {options} ({exc})") from exc
