"""DBIM, diffusion bridge implicit models (Zheng et al., ICLR 2025; docs/bridges.md), on DDBM's VP bridge
(Zhou et al., ICLR 2024): the x0 estimate is EDM-style preconditioned, D = c_skip x_t + c_out F(c_in x_t, y,
c_noise) with sigma_data = 0.5 and no source-target covariance, trained by the weighted x0 error
(1 / c_out^2) (D - x0)^2 at t uniform in [t_min, T]; translation by the implicit sampler (eta = 0, 10
evaluations by default) whose first evaluation at T boots from the source with fresh noise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ... import draws
from ...diffusion.bridge_paths import VPBridge, VPBridgeConfig
from ...networks.conditional_unet import UNetConfig
from ...settings import check_positive
from ..bridge_base import BridgeMethod, bridge_sampling


@dataclass
class DBIMConfig:
    sigma_data: float = 0.5  # the data scale of the preconditioning, for source and target alike
    bridge: VPBridgeConfig = dataclasses.field(default_factory=VPBridgeConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)

    def __post_init__(self):
        check_positive("model.sigma_data", self.sigma_data)


class DBIM(BridgeMethod):
    name = "dbim"
    path_class = VPBridge
    description = "diffusion bridge implicit model on DDBM's VP bridge (preconditioned x0); 10-step implicit sampler"
    config_class = DBIMConfig
    sampling_class = bridge_sampling("DBIMSampling", steps=10, eta=0.0)  # the reference settings

    def draw_times(self, size, generator, device):
        low, high = self.config.bridge.t_min, self.config.bridge.t_max
        return low + (high - low) * draws.uniform((size,), generator, device=device, dtype=torch.float64)

    def preconditioning(self, t: torch.Tensor, like: torch.Tensor):
        """(c_skip, c_in, c_out) per item and c_noise = 250 log t (DDBM's preconditioning with equal source
        and target scales sigma_data and no covariance: A = (a^2 + b^2) sigma_data^2 + c^2)."""
        point = self.path.point(t, like)
        s2 = self.config.sigma_data**2
        total = (point.a**2 + point.b**2) * s2 + point.c**2
        c_in = total.rsqrt()
        c_skip = point.b * s2 / total
        c_out = torch.sqrt(point.a**2 * s2**2 + s2 * point.c**2) * c_in
        c_noise = 250.0 * torch.log(torch.as_tensor(t, dtype=torch.float64) + math.ulp(0.0))
        return c_skip, c_in, c_out, c_noise.to(like.device).float()

    def estimate_and_scale(self, x_t, sources, t):
        """(x0_hat, c_out): the preconditioned estimate and the output scale its loss weight needs."""
        c_skip, c_in, c_out, c_noise = self.preconditioning(t, x_t)
        return c_skip * x_t + c_out * self.net(c_in * x_t, sources, c_noise), c_out

    def estimate(self, x_t, sources, t):
        return self.estimate_and_scale(x_t, sources, t)[0]

    def loss(self, draw, x0, sources):
        x0_hat, c_out = self.estimate_and_scale(draw.x_t, sources, draw.t)
        return (((x0_hat - x0) / c_out) ** 2).mean()
