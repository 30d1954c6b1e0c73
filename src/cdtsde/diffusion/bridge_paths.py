"""Diffusion bridges between the source y and the target x0 as Gaussian paths (docs/bridges.md):
coefficient sets of `cdtsde.diffusion.gaussian_path`.

* `BrownianBridge` (BBDM, Li et al. CVPR 2023, Eqs. 3-4): x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) eps with
  m_t = linspace(m_min, m_max, T)[t] and delta_t = 2 s (m_t - m_t^2); integer steps t in {0, ..., T-1} and
  the clean end t = -1 (m = 0, delta = 0). With m_max = 1 the bridge is pinned at the source at t = T - 1
  (A = 1, B = C = 0: the sampler's first step boots, as on DBIM's bridge); ABridge's m_t = t / T is
  m_min = 1 / T, m_max = 1 (cdtsde.methods.abridge).
* `VPBridge` (DDBM's VP bridge, Zhou et al. ICLR 2024; sampled by DBIM, Zheng et al. ICLR 2025): a VP
  diffusion alpha_t = exp(-beta_min t / 2 - beta_d t^2 / 4), rho_t = sigma_t / alpha_t =
  sqrt(exp(beta_min t + beta_d t^2 / 2) - 1), pinned at x_T = y: A = (alpha_t / alpha_T) rho_t^2 / rho_T^2,
  B = alpha_t (1 - rho_t^2 / rho_T^2), C = alpha_t rho_t sqrt(1 - rho_t^2 / rho_T^2); continuous t in [0, T],
  t = 0 the clean end, t = T the source itself (C = 0: the first sampling step boots).

Each computes its coefficients in float64 and returns them in the dtype and on the device of `like`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gaussian_path import PathPoint
from .schedule import CLEAN_END


def per_item(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) or scalar float64 values as (B, 1, 1, 1) (or a scalar) in `like`'s dtype and device."""
    if values.ndim == 1:
        values = values.view(-1, *([1] * (like.ndim - 1)))
    return values.to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class BrownianBridgeConfig:
    num_steps: int = 1000
    m_min: float = 0.001
    m_max: float = 0.999
    variance_scale: float = 1.0  # s in delta_t = 2 s (m_t - m_t^2); BBDM uses 1, ABridge's setting 1/2

    def __post_init__(self):
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {self.num_steps}")
        if not 0.0 < self.m_min < self.m_max <= 1.0:  # m_max = 1: pinned at the source at t = T - 1
            raise ValueError(f"need 0 < m_min < m_max <= 1, got {self.m_min}, {self.m_max}")
        if self.variance_scale <= 0:
            raise ValueError(f"variance_scale must be > 0, got {self.variance_scale}")


class BrownianBridge:
    def __init__(self, config: BrownianBridgeConfig | None = None):
        self.config = config or BrownianBridgeConfig()
        T = self.config.num_steps
        self.num_steps = T
        self.m = torch.linspace(self.config.m_min, self.config.m_max, T, dtype=torch.float64)
        self.delta = 2 * self.config.variance_scale * (self.m - self.m**2)

    def point(self, t, like: torch.Tensor) -> PathPoint:
        # looked up on the CPU, where the tables live (t may sit on the model's device); per_item moves the
        # values to `like`'s device
        steps = torch.as_tensor(t, dtype=torch.long).cpu()
        if steps.numel() and (steps.min() < CLEAN_END or steps.max() >= self.num_steps):
            raise ValueError(f"t must lie in [-1, {self.num_steps - 1}] (-1 = clean end), got {steps.tolist()}")
        clean = steps < 0
        index = steps.clamp(min=0)
        m = torch.where(clean, torch.zeros((), dtype=torch.float64), self.m[index])
        delta = torch.where(clean, torch.zeros((), dtype=torch.float64), self.delta[index])
        m, std = per_item(m, like), per_item(delta.sqrt(), like)
        return PathPoint(a=m, b=1 - m, c=std)

    def times(self, steps: int) -> list[int]:
        """BBDM's skip-step grid: `steps` evaluations at round(linspace(T - 1, 0, steps)), then the clean end
        (the evaluation at t = 0 gives x0 directly)."""
        if steps < 1 or steps > self.num_steps:
            raise ValueError(f"steps must lie in [1, {self.num_steps}], got {steps}")
        if steps == 1:
            return [self.num_steps - 1, CLEAN_END]
        grid = torch.linspace(self.num_steps - 1, 0, steps, dtype=torch.float64).round().long().tolist()
        return grid + [CLEAN_END]


@dataclass(frozen=True)
class VPBridgeConfig:
    beta_d: float = 2.0
    beta_min: float = 0.1
    t_max: float = 1.0  # T: the bridge is pinned at the source there
    t_min: float = 1e-4  # the smallest time drawn in training and visited before the clean end

    def __post_init__(self):
        if not 0.0 < self.t_min < self.t_max:
            raise ValueError(f"need 0 < t_min < t_max, got {self.t_min}, {self.t_max}")
        if self.beta_min <= 0 or self.beta_d < 0:
            raise ValueError("beta_min must be > 0 and beta_d >= 0")


class VPBridge:
    def __init__(self, config: VPBridgeConfig | None = None):
        self.config = config or VPBridgeConfig()
        self.rho_T2 = self._rho2(torch.tensor(self.config.t_max, dtype=torch.float64))
        self.alpha_T = self._alpha(torch.tensor(self.config.t_max, dtype=torch.float64))

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        return torch.exp(-0.5 * c.beta_min * t - 0.25 * c.beta_d * t**2)

    def _rho2(self, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        return torch.expm1(c.beta_min * t + 0.5 * c.beta_d * t**2)

    def point(self, t, like: torch.Tensor) -> PathPoint:
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.numel() and (t.min() < 0 or t.max() > self.config.t_max):
            raise ValueError(f"t must lie in [0, {self.config.t_max}], got {t.tolist()}")
        alpha, rho2 = self._alpha(t), self._rho2(t)
        share = rho2 / self.rho_T2  # rho_t^2 / rho_T^2: 0 at the clean end, 1 at the source
        a = (alpha / self.alpha_T) * share
        b = alpha * (1 - share)
        c = alpha * torch.sqrt(rho2 * (1 - share).clamp(min=0))
        return PathPoint(a=per_item(a, like), b=per_item(b, like), c=per_item(c, like))

    def times(self, steps: int) -> list[float]:
        """`steps` evaluations: the booting one at T (x_T = y), then steps - 1 uniform in t from T - 1e-3 down
        to t_min (DBIM's grid), then the clean end t = 0."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        c = self.config
        inner = torch.linspace(c.t_max - 1e-3, c.t_min, steps - 1, dtype=torch.float64).tolist() if steps > 1 else []
        return [c.t_max, *inner, 0.0]
