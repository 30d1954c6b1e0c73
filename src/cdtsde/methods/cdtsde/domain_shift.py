"""The domain-shift forward process of CDTSDE/DoSSR over any mixing field (a module
`field(t, x_src) -> Lambda_t` with a `schedule`): its schedule, the noise schedule with the truncation
point t1 and the base domain-shift schedule eta_t (docs/cdtsde.md, section 1); the process as a Gaussian
path and its sampling grid (paper Eqs. 1, 6; section 5), and its derived quantities (section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ... import draws
from ...diffusion.gaussian_path import PathPoint
from ...diffusion.schedule import CLEAN_END, NoiseSchedule, NoiseScheduleConfig
from ...settings import check_count

ETA_SCHEDULES = ("cosine", "linear")
SPACINGS = {"uniform": 1.0, "quadratic": 2.0}


@dataclass(frozen=True)
class DomainShiftScheduleConfig(NoiseScheduleConfig):
    num_steps: int = 1000
    beta_schedule: str = "scaled-linear"
    truncation: float = 0.5  # t1 = round(truncation * T); the paper uses 1/3, 1/2 or 2/3
    eta_schedule: str = "cosine"

    def __post_init__(self):
        super().__post_init__()
        if self.eta_schedule not in ETA_SCHEDULES:
            raise ValueError(f"eta_schedule must be one of {ETA_SCHEDULES}, got {self.eta_schedule!r}")
        if not 0.0 < self.truncation < 1.0:
            raise ValueError(f"truncation must lie in (0, 1), got {self.truncation}")


class DomainShiftSchedule(NoiseSchedule):
    """The noise schedule with the truncation point t1 and the table of eta_t (1 from t1 on; 0 at the
    clean end), looked up as abar_t and sigma_t are."""

    def __init__(self, config: DomainShiftScheduleConfig | None = None):
        super().__init__(config or DomainShiftScheduleConfig())
        T = self.num_steps
        self.t1 = min(int(round(self.config.truncation * T)), T - 1)
        if self.config.eta_schedule == "cosine":
            # eta_t = (1 - cos(pi s_t)) / 2, s_t = linspace(0.001, 0.999, t1)[t]  (docs/cdtsde.md, section 1)
            s = torch.linspace(0.001, 0.999, self.t1, dtype=torch.float64)
            eta_below = (1 - torch.cos(math.pi * s)) / 2
        else:
            eta_below = torch.arange(self.t1, dtype=torch.float64) / self.t1
        self.eta = torch.cat([eta_below, torch.ones(T - self.t1, dtype=torch.float64)])

    def host_tables(self) -> dict[str, torch.Tensor]:
        return {**super().host_tables(), "eta": self.eta}

    def eta_at(self, t, like: torch.Tensor) -> torch.Tensor:
        return self.lookup("eta", t, 0.0, like)


def check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {tuple(SPACINGS)}, got {spacing!r}")


def timestep_grid(t1: int, steps: int, spacing: str = "uniform") -> list[int]:
    """[tau_N = t1 > ... > tau_1 >= 0, CLEAN_END] for N = `steps` network evaluations.
    tau_k = (k - 1) + round((t1 + 1 - N) (k / N)^p), p = 1 (uniform) or 2 (quadratic: denser near the clean
    end); the (k - 1) term keeps the steps distinct for any N up to t1 + 1."""
    check_count("steps", steps)
    check_spacing(spacing)
    if steps > t1 + 1:
        raise ValueError(f"steps must be at most t1 + 1 = {t1 + 1} (one evaluation per step), got {steps}")
    power = SPACINGS[spacing]
    taus = [(k - 1) + round((t1 + 1 - steps) * (k / steps) ** power) for k in range(steps, 0, -1)]
    return taus + [CLEAN_END]


class DomainShiftPath:
    """The domain-shift process as a Gaussian path (cdtsde.diffusion.gaussian_path.GaussianPath):
    A = sqrt(abar) Lambda, B = sqrt(abar) (1 - Lambda), C = sigma, so that x_t = A x_src + B x0 + C eps is
    Eqs. 1 and 6. Its coefficients depend on the source: `like` is the anchor x_src the field reads."""

    def __init__(self, field):
        self.field = field

    def point(self, t, like: torch.Tensor, mixing: torch.Tensor | None = None) -> PathPoint:
        """The coefficients at step(s) t for the source `like`; `mixing` passes Lambda_t when the caller
        has already evaluated the field."""
        if mixing is None:
            mixing = self.field(t, like)
        schedule = self.field.schedule
        sqrt_abar = schedule.sqrt_abar(t, mixing)
        return PathPoint(a=sqrt_abar * mixing, b=sqrt_abar * (1 - mixing), c=schedule.sigma(t, mixing))

    def times(self, steps: int, spacing: str = "uniform") -> list[int]:
        """The sampling grid from t1 (`timestep_grid`): the sampler begins at t1, where Lambda = 1."""
        return timestep_grid(self.field.schedule.t1, steps, spacing)


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
    x_t = DomainShiftPath(field).point(t, x_src, mixing).draw(x_src, x0, noise)
    return ForwardSample(x_t=x_t, noise=noise, mixing=mixing)


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


def derived_quantities(schedule: DomainShiftSchedule, mixing: torch.Tensor, t) -> Derived:
    ups = schedule.sqrt_abar(t, mixing) * (1 - mixing)
    return Derived(ups=ups, kappa=mixing / (1 - mixing), lam=schedule.sigma(t, mixing) / ups)
