"""Noise schedules shared by the diffusion methods (docs/cdtsde.md, section 1): betas, abar_t and
sigma_t = sqrt(1 - abar_t). A method's own schedule extends them (CDTSDE's truncation point and eta_t:
`cdtsde.methods.cdtsde.domain_shift.DomainShiftSchedule`).

Steps are integers t in {0, ..., T-1}. The sampler also visits the *clean end*, written t = -1
(`CLEAN_END`), where abar = 1 and sigma = 0.

The schedule holds no network and no parameters (as diffusers' schedulers): its float64 tables are kept
once per device and never follow a module's dtype, so a model trained in bf16 still reads abar_t in full
precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CLEAN_END = -1
BETA_SCHEDULES = ("scaled-linear", "linear", "cosine")


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """T and the betas; each method's config subclasses it with its own defaults (as JSON, the same fields)."""

    num_steps: int
    beta_schedule: str  # "scaled-linear" (CDTSDE's), "linear" (DDPM's) or "cosine"

    def __post_init__(self):
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {self.num_steps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")


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
    """Tables of abar_t and sigma_t = sqrt(1 - abar_t), indexed by step (float64, one copy per device in use)."""

    def __init__(self, config: NoiseScheduleConfig):
        self.config = config
        self.num_steps = config.num_steps
        self.betas = make_betas(config.beta_schedule, config.num_steps)
        self.abar = torch.cumprod(1 - self.betas, dim=0)
        self._tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    def host_tables(self) -> dict[str, torch.Tensor]:
        """The float64 tables `lookup` reads by name (a subclass adds its own)."""
        return {"sqrt_abar": self.abar.sqrt(), "sigma": (1 - self.abar).sqrt()}

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = {key: values.to(device) for key, values in self.host_tables().items()}
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

    def lookup(self, name: str, t, clean_value: float, like: torch.Tensor) -> torch.Tensor:
        """Table `name` at step(s) t (an int or a (B,) tensor), `clean_value` at the clean end, in `like`'s
        dtype and on its device."""
        steps = self.check_steps(t)
        table = self._table(name, steps.device)
        values = torch.where(steps >= 0, table[steps.clamp(min=0)], torch.full_like(table[:1], clean_value)[0])
        # per-item steps (B,) broadcast as (B, 1, 1, 1) against images
        if values.ndim == 1:
            values = values.view(-1, *([1] * (like.ndim - 1)))
        return values.to(device=like.device, dtype=like.dtype)

    def sqrt_abar(self, t, like: torch.Tensor) -> torch.Tensor:
        return self.lookup("sqrt_abar", t, 1.0, like)

    def sigma(self, t, like: torch.Tensor) -> torch.Tensor:
        return self.lookup("sigma", t, 0.0, like)
