"""The domain-shift forward process of CDTSDE/DoSSR (paper Eqs. 1, 6; docs/cdtsde.md, section 3) and its
derived quantities, over any mixing field: a module `field(t, x_src) -> Lambda_t` with a `schedule`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import draws
from ...diffusion.gaussian_path import PathPoint
from ...diffusion.schedule import NoiseSchedule


@dataclass
class ForwardSample:
    x_t: torch.Tensor
    noise: torch.Tensor
    mixing: torch.Tensor  # Lambda_t, the full per-pixel field


def q_sample(
    field,
    x0: torch.Tensor,
    x_src: torch.Tensor,
    t,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mixing: torch.Tensor | None = None,
) -> ForwardSample:
    """Draw x_t ~ q(x_t | x0, x_src) = N(sqrt(abar_t) d_t, sigma_t^2 I)   (Eq. 6). Gradients reach the
    field's parameters through x_t, which is how the mixer is trained jointly. `mixing` passes Lambda_t
    when the caller has already evaluated the field."""
    if x0.shape != x_src.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_src {tuple(x_src.shape)} must have the same shape")
    if noise is None:
        noise = draws.normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have x0's shape {tuple(x0.shape)}")
    if mixing is None:
        mixing = field(t, x_src)
    x_t = path_point(field.schedule, mixing, t).draw(x_src, x0, noise)
    return ForwardSample(x_t=x_t, noise=noise, mixing=mixing)


def path_point(schedule: NoiseSchedule, mixing: torch.Tensor, t) -> PathPoint:
    """The domain-shift process as a Gaussian path (cdtsde.diffusion.gaussian_path): A = sqrt(abar) Lambda,
    B = sqrt(abar) (1 - Lambda), C = sigma, so that x_t = A x_src + B x0 + C eps is Eqs. 1 and 6."""
    sqrt_abar = schedule.sqrt_abar(t, mixing)
    return PathPoint(a=sqrt_abar * mixing, b=sqrt_abar * (1 - mixing), c=schedule.sigma(t, mixing))


@dataclass
class Derived:
    """Elementwise quantities of docs/cdtsde.md, section 3: Ups = sqrt(abar)(1 - Lambda), kappa = Lambda / (1 - Lambda),
    lam = sigma / Ups (inf where Lambda = 1). In u = x / Ups - kappa x_src = x0 + lam noise the process is a
    variance-exploding diffusion of x0 with per-pixel noise level lam."""

    ups: torch.Tensor
    kappa: torch.Tensor
    lam: torch.Tensor

    def to_u(self, x_t: torch.Tensor, x_src: torch.Tensor) -> torch.Tensor:
        return x_t / self.ups - self.kappa * x_src


def derived_quantities(schedule: NoiseSchedule, mixing: torch.Tensor, t) -> Derived:
    ups = schedule.sqrt_abar(t, mixing) * (1 - mixing)
    return Derived(ups=ups, kappa=mixing / (1 - mixing), lam=schedule.sigma(t, mixing) / ups)
