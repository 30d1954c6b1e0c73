"""ABridge, the denoising Brownian bridge with dual approximators ("Dual-approx Bridge", Xiao et al., CVPR
2025; docs/bridges.md section 5).

Path: the Brownian bridge x_t = (1 - m_t) x0 + m_t y + sqrt(m_t (1 - m_t)) eps with m_t = t / T, t = 1..T
(T = 1000): BBDM's bridge with variance scale s = 1/2 (the paper's g = 1, G(t) = t (1 - t)) that reaches the
source itself at t = T. Our integer time is the index i = t - 1 of `BrownianBridge` with m_min = 1 / T and
m_max = 1, so that i = T - 1 is pinned at y.

Two approximators, two networks built from the same UNet configuration (the conditional UNet of every
diffusion method here, the source concatenated):

* the forward approximator `net` predicts x_t - x0 (BBDM's "grad" objective): x0_hat = x_t - F(x_t, y, t);
* the reverse approximator `noise_net` predicts the noise eps of x_t: eps_hat = E(x_t, y, t);

each under its own L1 loss (the reference's `loss_type`, L2 on option) on the same draw of (t, eps), each
with its own optimiser (phases "forward" then "reverse" of one training step).

Sampling: the deterministic dual step from t to s < t uses both,

    x_s = k x_t + (1 - k) x0_hat + (sigma_s - k sigma_t) eps_hat,   k = m_s / m_t,

which is the core's implicit step (eta = 0) for the combined estimate x0_hat + lambda_s (eps_hat - eps_1),
eps_1 = (x_t - A_t y - B_t x0_hat) / C_t the noise x0_hat implies (`ABridge.combine`): its noise is
C_s (r eps_1 + (1 - r) eps_hat) with r = lambda_s / lambda_t. The first step, from the pinned source, boots
with fresh noise and needs no eps_hat; the last (onto the clean end, r = 0) returns x0_hat and needs none
either. The reference's update differs only in the coefficient of eps_hat, (sigma_s - k sigma_t) / k.
eta > 0 (ours) keeps the posterior mean's C_s r eps_1, adds fresh noise rho z as the core does and takes
the rest, sqrt(C_s^2 - rho^2) - C_s r, from eps_hat: eta = 1 is the Markov posterior of the forward
approximator alone (the reference's single-approximator sampler), with no reverse evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ... import draws
from ...diffusion.bridge_paths import BrownianBridge, BrownianBridgeConfig
from ...diffusion.gaussian_path import sample_path
from ...networks.conditional_unet import ConditionalUNet, UNetConfig
from ..base import TranslationOutput
from ..bridge_base import BridgeMethod, bridge_sampling, check_loss, regression_loss

PHASES = ("forward", "reverse")


@dataclass(frozen=True)
class ABridgePathConfig(BrownianBridgeConfig):
    """`BrownianBridgeConfig` with ABridge's defaults: m_t = t / T at t = 1..T (m_min = 1 / num_steps,
    m_max = 1: pinned at the source at the last index) and variance scale s = 1/2 (delta_t = m_t - m_t^2)."""

    m_min: float | None = None  # None: 1 / num_steps, i.e. m_t = t / T
    m_max: float = 1.0
    variance_scale: float = 0.5

    def __post_init__(self):
        if self.m_min is None:
            object.__setattr__(self, "m_min", 1.0 / max(self.num_steps, 1))
        super().__post_init__()


@dataclass
class ABridgeConfig:
    bridge: ABridgePathConfig = dataclasses.field(default_factory=ABridgePathConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)  # both approximators are built from it
    # the reference code's `loss_type` for both approximators: L1 (its configuration) or L2
    loss: str = "l1"

    def __post_init__(self):
        check_loss(self.loss)


def noise_share(ratio: torch.Tensor, eta: float) -> torch.Tensor:
    """The weight c of the reverse approximator in the combined estimate x0_hat + c (C_t eps_hat - (x_t -
    A_t y - B_t x0_hat)) / B_t of a step with lambda_s / lambda_t = r (`ratio`): c = r (q - r) / (1 - q r)
    with q = sqrt(1 - eta^2 (1 - r^2)), the share of C_s left on eps after the core's fresh noise. eta = 0:
    c = r (the dual step); eta = 1: c = 0 (the forward approximator alone); r = 0 (the clean end): c = 0."""
    q = torch.sqrt(1 - eta**2 * (1 - ratio**2))
    # (q - r) / (1 - q r) with q - r = (q^2 - r^2) / (q + r), exactly 0 at eta = 1
    numerator, denominator = (1 - eta**2) * (1 - ratio**2), (q + ratio) * (1 - q * ratio)
    limit = torch.full_like(ratio, (1 - eta**2) / (1 + eta**2))  # r -> 1 (a step of no length); 0 at eta = 1
    weight = torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(ratio.dtype).tiny), limit)
    return ratio * weight


class DualEstimate:
    """The denoiser and the `refine` hook that `sample_path` calls once each per step: the denoiser gives
    the forward approximator's x0_hat (and remembers x_t and t), `refine(x0_hat, ratio)` turns it into the
    combined estimate of the dual step, evaluating the reverse approximator only where it is used."""

    def __init__(self, method: ABridge, sources: torch.Tensor, y: torch.Tensor, eta: float = 0.0):
        self.method, self.sources, self.y, self.eta = method, sources, y, float(eta)
        self.x_t: torch.Tensor | None = None
        self.t: torch.Tensor | None = None

    def __call__(self, x_t: torch.Tensor, _y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.x_t, self.t = x_t, t
        return self.method.estimate(x_t, self.sources, t)

    def refine(self, x0_hat: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        share = noise_share(ratio, self.eta)
        if not bool((share != 0).any()):  # onto the clean end, or eta = 1: x0_hat alone
            return x0_hat
        eps_hat = self.method.noise_net(self.x_t, self.sources, self.t)
        return self.method.combine(self.x_t, self.y, self.t, x0_hat, eps_hat, share)


class ABridge(BridgeMethod):
    name = "abridge"
    description = ("denoising Brownian bridge with dual approximators (x_t - x0 and the noise; m_t = t/T, s = 1/2); "
                   "deterministic 1000-step dual sampler")
    config_class = ABridgeConfig
    # the reference code's sampler: every one of the T = 1000 steps, deterministic
    sampling_class = bridge_sampling("ABridgeSampling", steps=1000, eta=0.0)
    path_class = BrownianBridge

    def __init__(self, config: ABridgeConfig, data):
        super().__init__(config, data)  # the forward approximator: self.net
        self.noise_net = ConditionalUNet(data.target_channels, data.source_channels, config.unet)

    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """One AdamW per approximator (the reference's two optimisers), forward first; each is clipped on
        its own."""
        def adamw(module: torch.nn.Module) -> torch.optim.Optimizer:
            return torch.optim.AdamW([{"params": list(module.parameters()), "lr_scale": 1.0}], lr=train.lr,
                                     weight_decay=train.weight_decay)

        return {"forward": adamw(self.net), "reverse": adamw(self.noise_net)}

    # --- parameterisation ------------------------------------------------------------------------------
    def draw_times(self, size, generator, device):
        return draws.integers(0, self.path.num_steps, (size,), generator, device=device)

    def estimate(self, x_t, sources, t):
        """The forward approximator's x0_hat = x_t - F(x_t, y, t)."""
        return x_t - self.net(x_t, sources, t)

    def combine(self, x_t: torch.Tensor, y: torch.Tensor, t: torch.Tensor, x0_hat: torch.Tensor,
                eps_hat: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """The estimate whose core step is the dual step: x0_hat + c (C_t eps_hat - (x_t - A_t y - B_t
        x0_hat)) / B_t with c = `share` (`noise_share`; at eta = 0 c = r = lambda_s / lambda_t and this is
        x0_hat + lambda_s (eps_hat - eps_1)); t must not be the pinned start (B_t = 0 there)."""
        now = self.path.point(t, x_t)
        return x0_hat + share * (now.c * eps_hat - (x_t - now.mean(y, x0_hat))) / now.b

    def loss(self, draw, x0, sources):
        """The forward approximator's loss: F(x_t, y, t) against x_t - x0."""
        return regression_loss(self.net(draw.x_t, sources, draw.t), draw.x_t - x0, self.config.loss)

    def noise_loss(self, draw, sources):
        """The reverse approximator's loss: E(x_t, y, t) against the noise that made x_t."""
        return regression_loss(self.noise_net(draw.x_t, sources, draw.t), draw.noise, self.config.loss)

    # --- training and translation ----------------------------------------------------------------------
    def forward(self, batch: dict, phase: str = "forward", generator: draws.Draws = None,
                shared: dict | None = None) -> dict:
        """The loss of one approximator. The first phase of a step draws (t, eps) and leaves x_t in
        `shared`, so that both approximators learn from the same draw (as in the reference)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        shared = {} if shared is None else shared
        x0, sources = batch["target"], batch["source"]
        if "abridge_draw" not in shared:
            shared["abridge_draw"] = self.draw_path(x0, sources, generator)
        draw = shared["abridge_draw"]
        if phase == "forward":
            return {"loss": self.loss(draw, x0, sources)}
        return {"loss": self.noise_loss(draw, sources)}

    def network_evaluations(self, sampling=None) -> int:
        """Both approximators at every step but the first (the boot) and the last (onto the clean end);
        the forward approximator alone at eta = 1."""
        sampling = self.sampling if sampling is None else sampling
        return sampling.steps if sampling.eta == 1 or sampling.steps < 2 else 2 * sampling.steps - 2

    def generate(self, sources, sampling, generator):
        y = self.in_target_space(sources)
        dual = DualEstimate(self, sources, y, sampling.eta)
        result = sample_path(dual, y, lambda time: self.path.point(time, y), self.path.times(sampling.steps),
                             sampling.eta, y.clone(), generator=generator,
                             clip_denoised=sampling.clip_denoised, refine=dual.refine)
        return TranslationOutput(result.x0)
