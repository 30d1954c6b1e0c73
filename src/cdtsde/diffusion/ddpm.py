"""The DDPM forward process (Ho et al. 2020) as a coefficient set of the Gaussian-path core
(cdtsde.diffusion.gaussian_path; docs/zero-shot.md): x_t = sqrt(abar_t) x0 + sigma_t eps, that is
A = 0, B = sqrt(abar_t), C = sigma_t = sqrt(1 - abar_t). There is no source in the path (A = 0), so the
core's posterior step is DDPM's ancestral step at eta = 1 (the posterior q(x_s | x_t, x0 = x0_hat), whose
variance is DDPM's "fixed small" beta_tilde for s = t - 1) and DDIM's at eta = 0.

Integer steps t in {0, ..., T-1} and the clean end t = -1 (`CLEAN_END`: abar = 1), the tables of
`cdtsde.diffusion.schedule.NoiseSchedule` (float64, per device). The default betas are DDPM's linear
1e-4..2e-2 (also SDEdit's reference configuration), under which x_{T-1} keeps sqrt(abar) = 0.0064 of x0, so
that sampling may start from N(0, I).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..settings import check_count
from .gaussian_path import PathPoint
from .schedule import CLEAN_END, NoiseSchedule, NoiseScheduleConfig


@dataclass(frozen=True)
class DDPMScheduleConfig(NoiseScheduleConfig):
    num_steps: int = 1000
    beta_schedule: str = "linear"  # "linear" (DDPM's), "scaled-linear" (CDTSDE's) or "cosine"


class DDPMPath:
    """x_t = sqrt(abar_t) x0 + sigma_t eps as a Gaussian path (A = 0): `point(t, like)` and `times(steps, start)`."""

    def __init__(self, config: DDPMScheduleConfig | None = None):
        self.config = config or DDPMScheduleConfig()
        self.schedule = NoiseSchedule(self.config)
        self.num_steps = self.config.num_steps

    def point(self, t, like: torch.Tensor) -> PathPoint:
        """The coefficients at step(s) t (an int or a (B,) tensor; -1 = the clean end) in `like`'s dtype."""
        b = self.schedule.sqrt_abar(t, like)
        return PathPoint(a=torch.zeros_like(b), b=b, c=self.schedule.sigma(t, like))

    def start_step(self, t0: float) -> int:
        """The step SDEdit starts from for the fraction t0 of T: round(t0 T) - 1, so that t0 = 1 is the last
        step T - 1, t0 = 0.4 is step 399 (the reference code's `--t 400`) and t0 = 0 the clean end."""
        if not 0.0 <= float(t0) <= 1.0:
            raise ValueError(f"t0 must lie in [0, 1], got {t0}")
        return min(int(round(float(t0) * self.num_steps)), self.num_steps) - 1

    def times(self, steps: int, start: int | None = None) -> list[int]:
        """`steps` evaluations at round(linspace(start, 0, steps)) (start: T - 1 by default), then the clean
        end; `steps` is capped at start + 1, one evaluation per integer step (steps = T from T - 1 is
        DDPM's full chain T - 1, ..., 0). From the clean end (start = -1) there is nothing to do: [-1]."""
        start = self.num_steps - 1 if start is None else int(start)
        if not CLEAN_END <= start < self.num_steps:
            raise ValueError(f"start must lie in [-1, {self.num_steps - 1}], got {start}")
        check_count("steps", steps)
        if start == CLEAN_END:
            return [CLEAN_END]
        steps = min(steps, start + 1)
        if steps == 1:
            return [start, CLEAN_END]
        grid = torch.linspace(start, 0, steps, dtype=torch.float64).round().long().tolist()
        return list(dict.fromkeys(grid)) + [CLEAN_END]  # distinct already; kept so for any rounding
