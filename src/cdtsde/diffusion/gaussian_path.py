"""One Gaussian-path core for every diffusion method (docs/bridges.md).

Every diffusion translation method here moves along a Gaussian path between the source y (in the
target's channel space) and the target x0:

    x_t = A_t y + B_t x0 + C_t eps,   eps ~ N(0, I)                                  (the forward marginal)

CDTSDE/DoSSR (A = sqrt(abar) Lambda, B = sqrt(abar)(1 - Lambda), C = sigma), BBDM (A = m, B = 1 - m,
C = sqrt(delta)), DBIM's VP bridge (A = a, B = b, C = c) and the target-only DDPM prior of SDEdit (A = 0,
B = sqrt(abar), C = sigma: the source is not in the path) are coefficient sets of it; they differ in
their coefficients and in how the network's output becomes an estimate x0_hat. With lambda = C / B (the
noise-to-signal ratio of z = (x_t - A_t y) / B_t = x0 + lambda_t eps), the step from t to a cleaner s,
given x0_hat, is the generalised (DDIM-type) posterior

    eps_hat = (x_t - A_t y - B_t x0_hat) / C_t
    rho     = eta C_s sqrt(1 - (lambda_s / lambda_t)^2)
    x_s     = A_s y + B_s x0_hat + sqrt(C_s^2 - rho^2) eps_hat + rho z

eta = 1 is the Markov (ancestral) posterior q(x_s | x_t, x0 = x0_hat), eta = 0 the deterministic implicit
update; for every eta, an exact x0_hat keeps x_s on the forward marginal (the oracle property the tests
prove for every coefficient set). A path pinned at its start (C_t = 0: x_t is y itself, as DBIM's bridge at
t = T) has no eps_hat; its first step "boots" with fresh noise, x_s = A_s y + B_s x0_hat + C_s z. The clean
end (A = 0, B = 1, C = 0) needs no special case: the step gives x0_hat.

Coefficients may be scalars per item or full images (CDTSDE's spatial field), all elementwise. A path is
what `GaussianPath` describes; `sample_path` is the one sampler over any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .. import draws


@dataclass
class PathPoint:
    """The coefficients (A, B, C) of the forward marginal at one time, broadcastable against the images."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor

    def mean(self, y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.a * y + self.b * x0

    def draw(self, y: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = A y + B x0 + C noise."""
        return self.mean(y, x0) + self.c * noise


@runtime_checkable
class GaussianPath(Protocol):
    """What a diffusion method's path provides, and all the core needs of it: the coefficients (A, B, C) of
    its forward marginal x_t = A_t y + B_t x0 + C_t eps at any time, and a sampling grid. The bridge paths
    (cdtsde.diffusion.bridge_paths), DDPM's (cdtsde.diffusion.ddpm) and CDTSDE's domain-shift path
    (cdtsde.methods.cdtsde.domain_shift) implement it.

    A new diffusion method provides such a path; with it, training draws
    x_t = path.point(t, y).draw(y, x0, eps) at times of the method's choosing, and translation is
    sample_path(denoiser, y, lambda t: path.point(t, y), path.times(steps), eta, x_start). The method adds
    what a path cannot know: its network and how the network's output becomes x0_hat (the `denoiser`), its
    loss and training times, and the first iterate x_start (a draw of the marginal at times[0], or y itself
    where the path is pinned there, C = 0)."""

    def point(self, t, like: torch.Tensor) -> PathPoint:
        """The coefficients at time t (a number, or a (B,) tensor of per-item times) in `like`'s dtype and
        on its device, broadcastable against it. `like` is the source y in the target's channel space; only
        a path whose coefficients depend on the source (CDTSDE's mixing field) reads its values."""

    def times(self, steps: int) -> list:
        """The times of `steps` network evaluations, noisiest first, then the clean end (A = 0, B = 1,
        C = 0) where sampling stops; a path may take further options with defaults (a start, a spacing)."""


def lambda_ratio(now: PathPoint, then: PathPoint) -> tuple[torch.Tensor, int]:
    """lambda_s / lambda_t = (C_s B_t) / (B_s C_t) in [0, 1], and the count of elements clamped into it.
    It is 0 where the path starts at B_t = 0 (CDTSDE at t1) and at the clean end (C_s = 0)."""
    ratio = (then.c * now.b) / (then.b * now.c)
    outside = ~((ratio >= 0) & (ratio <= 1))  # NaN/inf (B_s rounded to 0) counts as outside too
    return torch.nan_to_num(ratio, nan=1.0, posinf=1.0).clamp(0, 1), int(outside.sum())


def posterior_step(x_t: torch.Tensor, y: torch.Tensor, x0_hat: torch.Tensor, now: PathPoint, then: PathPoint,
                   eta: float, noise: Callable[[], torch.Tensor], ratio: torch.Tensor | None = None) -> torch.Tensor:
    """One step from time t (`now`) to a cleaner time s (`then`), given the estimate x0_hat (module
    docstring); `ratio` is `lambda_ratio(now, then)[0]` when the caller has it. `noise()` draws z; it is
    called only when the step adds noise."""
    if not bool((now.c != 0).any()):  # pinned at y (C_t = 0): boot with fresh noise
        return then.mean(y, x0_hat) + then.c * noise()
    eps_hat = (x_t - now.mean(y, x0_hat)) / now.c
    if ratio is None:
        ratio = lambda_ratio(now, then)[0]
    rho = eta * then.c * torch.sqrt(1 - ratio**2)
    x_s = then.mean(y, x0_hat) + torch.sqrt(then.c**2 - rho**2) * eps_hat
    if eta > 0 and bool((then.c != 0).any()):
        x_s = x_s + rho * noise()
    return x_s


@dataclass
class PathSample:
    x0: torch.Tensor
    times: list
    # elements (per step) where lambda_s / lambda_t fell outside [0, 1] and was clamped: the path is not
    # monotone there (a learned field can do that); 0 for every fixed schedule
    clamped_pixels: int


class SecondOrderRefiner:
    """DPM-Solver++(2M) in log-lambda time, elementwise: x0_hat becomes
    D = x0_hat + (h / 2 h_prev)(x0_hat - x0_hat_prev) with h = log(lambda_t / lambda_s), which keeps the exact
    first-order form of the step (eta = 0) and raises its order. The first step (h infinite where the path
    starts at B = 0) and the step onto the clean end stay first order."""

    def __init__(self):
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x0_hat: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        h = -torch.log(ratio)
        refined = x0_hat
        if self.previous is not None:
            previous_x0_hat, previous_h = self.previous
            scale = torch.where(previous_h > 0, h / (2 * previous_h), torch.zeros_like(h))
            refined = x0_hat + torch.nan_to_num(scale, nan=0.0, posinf=0.0) * (x0_hat - previous_x0_hat)
        self.previous = (x0_hat, h)
        return refined


@torch.no_grad()
def sample_path(denoiser: Callable, y: torch.Tensor, coefficients: Callable[[object], PathPoint],
                times: Sequence, eta: float, x_start: torch.Tensor,
                generator: torch.Generator | None = None, clip_denoised: bool = False,
                callback: Callable | None = None, refine: Callable | None = None) -> PathSample:
    """Run the posterior step down `times` (noisiest first, the clean end last) from `x_start` (a draw of
    the start marginal), with `denoiser(x_t, y, t) -> x0_hat` evaluated once per step (t: a (B,) tensor of
    the step's time, int64 for integer times) and `coefficients(time) -> PathPoint`. `refine(x0_hat,
    ratio)` may replace the estimate before the update (`SecondOrderRefiner`); `callback(index, t, s, x,
    x0_hat)` sees every iterate after its update with the denoiser's own estimate."""
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")

    def noise() -> torch.Tensor:
        return draws.normal(x_start.shape, generator, device=x_start.device, dtype=x_start.dtype)

    x, clamped = x_start, 0
    now = coefficients(times[0])
    for index, (t, s) in enumerate(zip(times[:-1], times[1:])):
        step = torch.full((x.shape[0],), t, device=x.device,
                          dtype=torch.long if isinstance(t, int) else torch.float64)
        x0_hat = denoiser(x, y, step)
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1, 1)
        then = coefficients(s)
        pinned = not bool((now.c != 0).any())  # the booting step has no ratio
        ratio, outside = (None, 0) if pinned else lambda_ratio(now, then)
        estimate = x0_hat if refine is None or pinned else refine(x0_hat, ratio)
        x = posterior_step(x, y, estimate, now, then, eta, noise, ratio)
        clamped += outside
        if callback is not None:
            callback(index, t, s, x, x0_hat)
        now = then
    return PathSample(x0=x, times=list(times), clamped_pixels=clamped)
