"""The exact first-order sampler of the domain-shift diffusion (paper Eqs. 9-13, Prop. 1; docs/cdtsde.md,
section 5): the posterior step of the Gaussian-path core (cdtsde.diffusion.gaussian_path) on the
coefficients A = sqrt(abar) Lambda, B = sqrt(abar) (1 - Lambda), C = sigma.

One function over any denoiser callable `denoiser(x_t, x_src, t) -> x0_hat`, so that an oracle denoiser
can prove it right. With gamma = 1 it is the paper's SDE solver term by term; in u-coordinates
(u = x / Ups - kappa x_src) one step reads u_t = rho^2 u_s + (1 - rho^2) x0_hat + lam_t sqrt(1 - rho^2) z,
rho = lam_t / lam_s. It is written in the eps form so that the first step from t1, where Ups = 0, needs no
special case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as option

import torch

from ... import draws
from ...diffusion.gaussian_path import PathPoint, SecondOrderRefiner, sample_path
from ...settings import check_count, check_unit_interval
from .domain_shift import SPACINGS, DomainShiftPath, check_spacing

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("first-order", "dpm++2m")


def check_sampler_arguments(steps: int, gamma: float, spacing: str, solver: str) -> None:
    """Raise ValueError naming the first bad argument (the grid checks steps against t1 itself)."""
    check_count("steps", steps)
    check_unit_interval("gamma", gamma)
    check_spacing(spacing)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "dpm++2m" and gamma != 0:
        raise ValueError(f"the dpm++2m solver is deterministic: gamma must be 0, got {gamma}")


@dataclass
class SamplerOptions:
    """The domain-shift sampler's options and the library's defaults for them (declared here only): the
    sampling options of the CDTSDE method, whose steps, gamma, spacing and solver are also `sample`'s
    defaults (`sample` itself clips x0_hat only when asked; the method clips by default)."""

    steps: int = option(default=5, metadata={"help": "network evaluations (NFE)"})
    gamma: float = option(default=1.0, metadata={"help": "0 deterministic .. 1 stochastic (the paper's solver)"})
    spacing: str = option(default="uniform", metadata={"help": "timestep grid", "choices": tuple(SPACINGS)})
    solver: str = option(default="first-order", metadata={
        "help": "dpm++2m: second-order, deterministic (needs gamma 0)", "choices": SOLVERS})
    clip_denoised: bool = option(default=True, metadata={"help": "clip each x0 prediction to [-1, 1]"})
    collapse_field: bool = option(default=False, metadata={
        "help": "average the field to one value per step, as the authors' code does (ablation only)"})

    def __post_init__(self):
        check_sampler_arguments(self.steps, self.gamma, self.spacing, self.solver)


@dataclass
class SamplerStep:
    """What a per-step callback sees: step index (0-based), from step s to step t, the current iterate
    (after the update), the denoiser's prediction at s and the field Lambda_s."""

    index: int
    s: int
    t: int
    x: torch.Tensor
    x0_hat: torch.Tensor
    mixing: torch.Tensor


@dataclass
class SampleResult:
    x0: torch.Tensor
    timesteps: list[int]
    # elements of the field (per step) where rho = lam_t / lam_s fell outside [0, 1] and was clamped: a
    # non-monotone learned field shows up here instead of being hidden
    clamped_pixels: int


def _broadcast_source(x_src: torch.Tensor, shape: torch.Size) -> None:
    if x_src.ndim != 4:
        raise ValueError(f"x_src must have shape (B, C, H, W), got {tuple(x_src.shape)}")
    if x_src.shape[1:] != shape[1:] or x_src.shape[0] not in (1, shape[0]):
        raise ValueError(f"x_start {tuple(shape)} does not match x_src {tuple(x_src.shape)} (batch may be 1 in x_src)")


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    x_src: torch.Tensor,
    field,
    steps: int = SamplerOptions.steps,
    gamma: float = SamplerOptions.gamma,
    generator: torch.Generator | None = None,
    spacing: str = SamplerOptions.spacing,
    x_start: torch.Tensor | None = None,
    clip_denoised: bool = False,
    collapse_field: bool = False,
    callback: Callable[[SamplerStep], None] | None = None,
    solver: str = SamplerOptions.solver,
) -> SampleResult:
    """Translate `x_src` (B, C, H, W; the source in the target's channel space) in `steps` network
    evaluations. gamma in [0, 1]: 0 deterministic, 1 the paper's stochastic solver. `x_start` replaces the
    draw of x(t1) ~ N(sqrt(abar_t1) x_src, sigma_t1^2); it may have a larger batch than an x_src of batch 1
    (several samples of one source). `collapse_field` averages Lambda to one value per item and step, as the
    authors' code does: only for the ablation that reproduces it.

    solver "dpm++2m" (beyond the paper, deterministic: gamma must be 0) is DPM-Solver++(2M) applied pixel by
    pixel in log-lam time: x0_hat is replaced by D = x0_hat + (h / 2 h_prev)(x0_hat - x0_hat_prev),
    h = log(lam_s / lam_t), which keeps the exact first-order form of the step and raises its order."""
    check_sampler_arguments(steps, gamma, spacing, solver)
    schedule = field.schedule
    path = DomainShiftPath(field)
    grid = path.times(steps, spacing)
    shape = x_start.shape if x_start is not None else x_src.shape
    _broadcast_source(x_src, shape)
    source = x_src.expand(shape)
    mixings: dict[int, torch.Tensor] = {}

    def coefficients(step: int) -> PathPoint:
        mixing = field(step, x_src)
        if collapse_field:
            mixing = mixing.mean(dim=(1, 2, 3), keepdim=True).expand_as(mixing)
        mixings[step] = mixing
        return path.point(step, x_src, mixing)

    if x_start is None:  # x(t1) ~ N(sqrt(abar_t1) x_src, sigma_t1^2): Lambda = 1 at t1
        x_start = schedule.sqrt_abar(grid[0], x_src) * x_src + schedule.sigma(grid[0], x_src) * draws.normal(
            shape, generator, device=x_src.device, dtype=x_src.dtype)

    def report(index: int, s: int, t: int, x: torch.Tensor, x0_hat: torch.Tensor) -> None:
        callback(SamplerStep(index=index, s=s, t=t, x=x, x0_hat=x0_hat, mixing=mixings[s]))

    result = sample_path(lambda x, _y, t: denoiser(x, source, t), x_src, coefficients, grid, gamma, x_start,
                         generator=generator, clip_denoised=clip_denoised, callback=report if callback else None,
                         refine=SecondOrderRefiner() if solver == "dpm++2m" else None)
    return SampleResult(x0=result.x0, timesteps=grid, clamped_pixels=result.clamped_pixels)
