"""I2SB, the image-to-image Schrodinger bridge (Liu, Vahdat, Huang, Theodorou, Nie, Anandkumar, ICML 2023;
docs/bridges.md section 6), on the Gaussian-path core.

The bridge is a driftless diffusion dX = sqrt(beta_t) dW from the target x0 (t = 0) to the source x1 (t = 1,
the source in the target's channel space), with a beta that is symmetric about t = 1/2. With sigma_t^2 =
int_0^t beta and bar sigma_t^2 = int_t^1 beta, its marginal given both ends is Gaussian (the paper's Eq. 11):

    x_t = (bar sigma_t^2 x0 + sigma_t^2 x1) / sigma_1^2 + sqrt(sigma_t^2 bar sigma_t^2 / sigma_1^2) eps,

since sigma_t^2 + bar sigma_t^2 = sigma_1^2: the core's A = sigma_t^2 / sigma_1^2, B = 1 - A, C = sqrt(sigma_1^2
A B). The network predicts (x_t - x0) / sigma_t (Eq. 12) under an L2 loss, x0_hat = x_t - sigma_t F. The
paper's sampler, the posterior p(x_s | x0_hat, x_t) of the diffusion from x0 (Eq. 4), is the core's Markov
posterior step (eta = 1), started from x1 itself. With `bridge.ot_ode` the model is the paper's OT-ODE
variant: trained on the noiseless interpolation (C = 0) and sampled by that posterior's mean alone, for every
eta (the noiseless path's posterior has no variance). With `source_noise` > 0 the source end is the source
plus Gaussian noise of that standard deviation, in training and in translation (the reference code's
`add_x1_noise`, 1.0); the network always sees the clean source.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ... import draws
from ...diffusion.bridge_paths import per_item
from ...diffusion.gaussian_path import PathPoint
from ...networks.conditional_unet import UNetConfig
from ..bridge_base import BridgeMethod, bridge_sampling

RAMPS = ("sqrt-linear", "linear")
# the network's time input is t times the reference's number of discrete steps, as its noise levels are
TIME_SCALE = 1000.0


@dataclass(frozen=True)
class SymmetricScheduleConfig:
    """beta_t rises from beta_min at t = 0 along a ramp that would reach beta_max at t = 1, is cut at t = 1/2
    and mirrored, so that beta_t = beta_{1 - t} and the bridge diffuses most in the middle. The reference
    code's ramp is linear in sqrt(beta) ("sqrt-linear": beta_t = (sqrt(beta_min) + t (sqrt(beta_max) -
    sqrt(beta_min)))^2), with 1e-4 per step at its 1000 steps (beta_min = 0.1 per unit time) and beta_max =
    0.3 (its `beta_max`); "linear" ramps beta itself."""

    beta_min: float = 0.1
    beta_max: float = 0.3
    ramp: str = "sqrt-linear"
    ot_ode: bool = False  # the OT-ODE model: the noiseless path (C = 0), sampled deterministically for every eta

    def __post_init__(self):
        if not (0 < self.beta_min < math.inf and 0 < self.beta_max < math.inf):
            raise ValueError(f"beta_min and beta_max must be finite and > 0, got {self.beta_min}, {self.beta_max}")
        if self.ramp not in RAMPS:
            raise ValueError(f"ramp must be one of {', '.join(RAMPS)}, got {self.ramp!r}")


class SchrodingerBridgePath:
    """I2SB's bridge as a Gaussian path over continuous t in [0, 1]: t = 0 the clean end (A = 0, B = 1,
    C = 0), t = 1 the source end (A = 1, B = C = 0: the first sampling step boots from it). Coefficients in
    float64, returned in the dtype and on the device of `like`."""

    def __init__(self, config: SymmetricScheduleConfig | None = None):
        self.config = config or SymmetricScheduleConfig()
        self.total = float(self.sigma2(torch.tensor(1.0, dtype=torch.float64)))  # sigma_1^2

    def ramp_integral(self, u: torch.Tensor) -> torch.Tensor:
        """int_0^u of the ramp (u <= 1/2, where beta_t is the ramp itself)."""
        c = self.config
        if c.ramp == "linear":
            return c.beta_min * u + (c.beta_max - c.beta_min) * u**2 / 2
        root, slope = math.sqrt(c.beta_min), math.sqrt(c.beta_max) - math.sqrt(c.beta_min)
        return root**2 * u + root * slope * u**2 + slope**2 * u**3 / 3

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        c, u = self.config, torch.minimum(t, 1 - t)
        if c.ramp == "linear":
            return c.beta_min + (c.beta_max - c.beta_min) * u
        return (math.sqrt(c.beta_min) + (math.sqrt(c.beta_max) - math.sqrt(c.beta_min)) * u) ** 2

    def sigma2(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t^2 = int_0^t beta; past the middle, the whole first half plus the mirrored rest. By the
        symmetry, bar sigma_t^2 = int_t^1 beta = sigma_{1 - t}^2 (computed so, free of cancellation)."""
        middle = self.ramp_integral(torch.tensor(0.5, dtype=torch.float64))
        return torch.where(t <= 0.5, self.ramp_integral(t), 2 * middle - self.ramp_integral(1 - t))

    def _times(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise ValueError(f"t must lie in [0, 1] (0 = clean end), got {t.tolist()}")
        return t

    def shares(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) = (sigma_t^2, bar sigma_t^2) / sigma_1^2, the weights of x1 and x0 in the mean (float64)."""
        t = self._times(t)
        return self.sigma2(t) / self.total, self.sigma2(1 - t) / self.total

    def point(self, t, like: torch.Tensor) -> PathPoint:
        """The marginal given both ends (Eq. 11); C = 0 for the OT-ODE model."""
        a, b = self.shares(t)
        c = torch.zeros_like(a) if self.config.ot_ode else torch.sqrt(self.total * a * b)
        return PathPoint(a=per_item(a, like), b=per_item(b, like), c=per_item(c, like))

    def ode_point(self, t, like: torch.Tensor) -> PathPoint:
        """The OT-ODE's sampling coefficients: the mean's (A, B) with C = A. The core's implicit step (eta = 0)
        keeps the fraction C_s / C_t = sigma_s^2 / sigma_t^2 of the residual x_t - A_t x1 - B_t x0_hat, which is
        the mean of the paper's posterior step; any C proportional to sigma_t^2 gives the same step."""
        a, b = self.shares(t)
        return PathPoint(a=per_item(a, like), b=per_item(b, like), c=per_item(a, like))

    def sigma(self, t, like: torch.Tensor) -> torch.Tensor:
        return per_item(torch.sqrt(self.sigma2(self._times(t))), like)

    def label(self, t, x1: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The network's target (x_t - x0) / sigma_t for x_t = point(t).draw(x1, x0, noise), in closed form
        (no division by a vanishing sigma_t): (sigma_t / sigma_1^2)(x1 - x0) + sqrt(bar sigma_t^2 / sigma_1^2)
        noise, without the noise term for the OT-ODE model."""
        t = self._times(t)
        label = per_item(torch.sqrt(self.sigma2(t)) / self.total, x0) * (x1 - x0)
        if self.config.ot_ode:
            return label
        return label + per_item(torch.sqrt(self.sigma2(1 - t) / self.total), x0) * noise

    def times(self, steps: int) -> list[float]:
        """`steps` evaluations at t uniform from 1 (the source end) down to 1 / steps, then the clean end (the
        reference's grid of evenly spaced steps)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()


@dataclass
class I2SBConfig:
    bridge: SymmetricScheduleConfig = dataclasses.field(default_factory=SymmetricScheduleConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    # standard deviation of the Gaussian noise added to the source end x1 (the reference's add_x1_noise: 1.0)
    source_noise: float = 0.0

    def __post_init__(self):
        if not 0 <= self.source_noise < math.inf:
            raise ValueError(f"model.source_noise must be finite and >= 0, got {self.source_noise}")


class I2SB(BridgeMethod):
    name = "i2sb"
    description = ("image-to-image Schrodinger bridge (I2SB): symmetric-beta bridge, predicts (x_t - x0) / sigma_t; "
                   "1000-step posterior sampler, or the OT-ODE")
    config_class = I2SBConfig
    # the reference's sampler: every step of its 1000, the posterior (eta = 1)
    sampling_class = bridge_sampling("I2SBSampling", steps=1000, eta=1.0)
    path_class = SchrodingerBridgePath

    def draw_times(self, size, generator, device):
        return 1 - draws.uniform((size,), generator, device=device, dtype=torch.float64)  # t in (0, 1]

    def estimate(self, x_t, sources, t):
        return x_t - self.path.sigma(t, x_t) * self.net(x_t, sources, TIME_SCALE * t)

    def source_end(self, y: torch.Tensor, generator: draws.Draws) -> torch.Tensor:
        """x1: the source in the target's space, plus `source_noise` times Gaussian noise."""
        if self.config.source_noise == 0:
            return y
        return y + self.config.source_noise * draws.normal(y.shape, generator, device=y.device, dtype=y.dtype)

    def loss(self, draw, x0, sources):
        prediction = self.net(draw.x_t, sources, TIME_SCALE * draw.t)
        return (prediction - self.path.label(draw.t, draw.x1, x0, draw.noise)).square().mean()

    def sampling_path(self, sampling):
        if self.config.bridge.ot_ode:  # the noiseless path's posterior has no noise, whatever eta
            return self.path.ode_point, 0.0
        return self.path.point, sampling.eta
