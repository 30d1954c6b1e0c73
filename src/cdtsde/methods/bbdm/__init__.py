"""BBDM, the Brownian bridge diffusion model (Li et al., CVPR 2023; docs/bridges.md): x_t = (1 - m_t) x0 +
m_t y + sqrt(delta_t) eps with m_t from 0.001 to 0.999 over T = 1000 steps and delta_t = 2 s (m_t - m_t^2),
s = 1 (its Eqs. 3-4); the network predicts x_t - x0 ("grad" objective) under an L1 loss; translation by the
skip-step sampler from x_T = y, 200 steps and eta = 1 by default (the reference settings).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ... import draws
from ...diffusion.bridge_paths import BrownianBridge, BrownianBridgeConfig
from ...networks.conditional_unet import UNetConfig
from ..bridge_base import BridgeMethod, bridge_sampling, check_loss, regression_loss


@dataclass
class BBDMConfig:
    bridge: BrownianBridgeConfig = dataclasses.field(default_factory=BrownianBridgeConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    # the reference code's `loss_type`: L1 (its default) or L2. Under L1 the network learns each channel's
    # conditional median, so a mask class present with probability below 1/2 at a pixel is never predicted
    # there: rare defect classes vanish (README, EL results); L2 learns the conditional mean instead.
    loss: str = "l1"

    def __post_init__(self):
        check_loss(self.loss)


class BBDM(BridgeMethod):
    name = "bbdm"
    description = "Brownian bridge diffusion (BBDM): predicts x_t - x0 under L1; 200-step skip sampler"
    config_class = BBDMConfig
    sampling_class = bridge_sampling("BBDMSampling", steps=200, eta=1.0)  # the reference settings
    path_class = BrownianBridge

    def draw_times(self, size, generator, device):
        return draws.integers(0, self.path.num_steps, (size,), generator, device=device)

    def estimate(self, x_t, sources, t):
        return x_t - self.net(x_t, sources, t)

    def loss(self, draw, x0, sources):
        return regression_loss(self.net(draw.x_t, sources, draw.t), draw.x_t - x0, self.config.loss)
