"""Noise schedule, truncation point t1 and base domain-shift schedule eta_t (docs/cdtsde.md, section 1).

Steps are integers t in {0, ..., T-1}. The sampler also visits the *clean end*, written t = -1
(`CLEAN_END`), where abar = 1, sigma = 0 and the mixing field is 0.

The schedule holds no network and no parameters (as diffusers' schedulers): its float64 tables are kept
once per device and never follow a module's dtype, so a model trained in bf16 still reads abar_t and
eta_t in full precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CLEAN_END = -1
BETA_SCHEDULES = ("scaled-linear", "linear", "cosine")
ETA_SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class ScheduleConfig:
    num_steps: int = 1000
    beta_schedule: str = "scaled-linear"
    truncation: float = 0.5  # t1 = round(truncation * T); the paper uses 1/3, 1/2 or 2/3
    eta_schedule: str = "cosine"

    def __post_init__(self):
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {self.num_steps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.eta_schedule not in ETA_SCHEDULES:
            raise ValueError(f"eta_schedule must be one of {ETA_SCHEDULES}, got {self.eta_schedule!r}")
        if not 0.0 < self.truncation < 1.0:
            raise ValueError(f"truncation must lie in (0, 1), got {self.truncation}")


def make_betas(name: str, num_steps: int) -> torch.Tensor:
    """Betas in float64. scaled-linear: (linspace(sqrt(0.00085), sqrt(0.012)))^2 (the paper's);
    linear: 1e-4..2e-2 (DDPM); cosine: Nichol & Dhariwal (2021) with s = 0.008, betas capped at 0.999."""
    if name == "scaled-linear":
        return torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), num_steps, dtype=torch.float64) ** 2
    if name == "linear":
        return torch.linspace(1e-4, 2e-2, num_steps, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        grid = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {name!r}")


class NoiseSchedule:
    """Tables of abar_t, sigma_t = sqrt(1 - abar_t) and eta_t, indexed by step (float64, one copy per device
    in use)."""

    def __init__(self, config: ScheduleConfig | None = None):
        self.config = config or ScheduleConfig()
        T = self.config.num_steps
        self.num_steps = T
        self.t1 = min(int(round(self.config.truncation * T)), T - 1)
        betas = make_betas(self.config.beta_schedule, T)
        abar = torch.cumprod(1 - betas, dim=0)
        if self.config.eta_schedule == "cosine":
            # eta_t = (1 - cos(pi s_t)) / 2, s_t = linspace(0.001, 0.999, t1)[t]  (docs/cdtsde.md, section 1)
            s = torch.linspace(0.001, 0.999, self.t1, dtype=torch.float64)
            eta_below = (1 - torch.cos(math.pi * s)) / 2
        else:
            eta_below = torch.arange(self.t1, dtype=torch.float64) / self.t1
        eta = torch.cat([eta_below, torch.ones(T - self.t1, dtype=torch.float64)])
        self.betas, self.abar, self.eta = betas, abar, eta
        self._tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = {"sqrt_abar": self.abar.sqrt().to(device), "sigma": (1 - self.abar).sqrt().to(device),
                                    "eta": self.eta.to(device)}
        return self._tables[device][name]

    def check_steps(self, t: torch.Tensor | int, name: str = "t") -> torch.Tensor:
        """`t` as an int64 tensor (on t's device); raises if a step lies outside {-1 (clean end), 0, ..., T-1}."""
        steps = torch.as_tensor(t)
        if steps.is_floating_point():
            if not torch.equal(steps, steps.round()):
                raise ValueError(f"{name} must hold integer steps, got {steps.tolist()}")
        steps = steps.long()
        if steps.numel() and (steps.min() < CLEAN_END or steps.max() >= self.num_steps):
            raise ValueError(
                f"{name} must lie in [-1, {self.num_steps - 1}] (-1 = clean end), got "
                f"min {int(steps.min())}, max {int(steps.max())}"
            )
        return steps

    def _lookup(self, name: str, t, clean_value: float, like: torch.Tensor) -> torch.Tensor:
        steps = self.check_steps(t)
        table = self._table(name, steps.device)
        values = torch.where(steps >= 0, table[steps.clamp(min=0)], torch.full_like(table[:1], clean_value)[0])
        # per-item steps (B,) broadcast as (B, 1, 1, 1) against images
        if values.ndim == 1:
            values = values.view(-1, *([1] * (like.ndim - 1)))
        return values.to(device=like.device, dtype=like.dtype)

    def sqrt_abar(self, t, like: torch.Tensor) -> torch.Tensor:
        return self._lookup("sqrt_abar", t, 1.0, like)

    def sigma(self, t, like: torch.Tensor) -> torch.Tensor:
        return self._lookup("sigma", t, 0.0, like)

    def eta_at(self, t, like: torch.Tensor) -> torch.Tensor:
        return self._lookup("eta", t, 0.0, like)
