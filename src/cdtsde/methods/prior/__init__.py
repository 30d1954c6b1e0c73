"""The target-only diffusion prior: a DDPM (Ho et al. 2020) trained on target images alone (docs/zero-shot.md).

Path: x_t = sqrt(abar_t) x0 + sigma_t eps, the Gaussian-path core with A = 0 (`cdtsde.diffusion.ddpm`), T =
1000 integer steps, DDPM's linear betas by default. Network: the project's UNet with no source channels
(or with the channels of the conditioning hook, below), time input the integer step; it predicts the
noise ("eps", DDPM's objective) or the clean image ("x0"), trained by the mean squared error against it
with t uniform in {0, ..., T-1}; either way the sampler sees x0_hat = (x_t - sigma_t eps_hat) / sqrt(abar_t)
or the network's x0. Sampling: the core's posterior step (`sample_path`) from x_{T-1} ~ N(0, I) down
`steps` evaluations: 1000 with eta = 1 (the default) is DDPM's full ancestral chain, fewer steps with eta =
0 is DDIM (e.g. 50-100 for the CPU).

`translate` of the plain prior draws unconditional samples, one per source: the sources give only the
batch size, the image size and the device, never their content (the prior knows nothing of them). As a
benchmark entry it is the floor of a method that knows the target distribution and ignores the source.
To translate a source with the prior's weights, use `sdedit` (same training; `load_pretrained(prior_dir,
method="sdedit")` runs a prior's checkpoint as SDEdit, and this class runs an SDEdit checkpoint) or the LMI-guided method, which conditions the prior on the source.

The conditioning hook, for methods built on this prior (the LMI-guided one): a subclass overrides
`condition_channels()` (how many channels) and `condition(x_t, reference, t)` (the channels, computed
from the current iterate and a reference image at every network evaluation). In training the reference
is the clean target x0; at translation it is the source in the target's channel space. Those channels
are concatenated to x_t at the network's input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from dataclasses import field as option

import torch

from ... import draws
from ...diffusion.ddpm import DDPMPath, DDPMScheduleConfig
from ...diffusion.gaussian_path import sample_path
from ...networks.conditional_unet import TINY_UNET, ConditionalUNet, UNetConfig
from ...settings import check_count, check_unit_interval
from ..base import DataInfo, Method, TranslationOutput

PREDICTIONS = ("eps", "x0")


@dataclass
class PriorConfig:
    schedule: DDPMScheduleConfig = dataclasses.field(default_factory=DDPMScheduleConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    prediction: str = "eps"  # what the network predicts: "eps" (DDPM's) or "x0"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")


@dataclass
class PriorSampling:
    steps: int = option(default=1000, metadata={"help": "network evaluations (NFE)"})
    eta: float = option(default=1.0, metadata={"help": "0 deterministic (DDIM) .. 1 ancestral (DDPM)"})
    clip_denoised: bool = option(default=True, metadata={"help": "clip each x0 prediction to [-1, 1]"})

    def __post_init__(self):
        check_count("steps", self.steps)
        check_unit_interval("eta", self.eta)


class Prior(Method):
    name = "prior"
    description = ("target-only DDPM prior (eps or x0 prediction); translation draws unconditional samples "
                   "(use sdedit to translate)")
    data_kind = "target-only"
    config_class = PriorConfig
    tiny_config = {"unet": TINY_UNET}
    tiny_sampling = ({"steps": 1, "eta": 0.0}, {"steps": 3, "eta": 0.0}, {"steps": 2, "eta": 1.0}, {"steps": 3, "eta": 0.5})
    runs_checkpoints_of = ("sdedit",)
    sampling_class = PriorSampling

    def __init__(self, config: PriorConfig, data: DataInfo):
        super().__init__(config, data)
        self.path = DDPMPath(config.schedule)
        self.net = ConditionalUNet(data.target_channels, self.condition_channels(), config.unet)

    # --- the conditioning hook (none for the plain prior) ---------------------------------------------
    def condition_channels(self) -> int:
        """Channels that `condition` adds to the network's input (0: unconditional)."""
        return 0

    def condition(self, x_t: torch.Tensor, reference: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
        """Extra input channels (B, condition_channels(), H, W) from the iterate x_t and the reference (the
        clean target in training, the source in the target's channel space at translation), or None."""
        return None

    # --- the parameterisation -------------------------------------------------------------------------
    def estimate(self, x_t: torch.Tensor, reference: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0_hat from the network's output: the output itself (x0) or (x_t - sigma_t eps_hat) / sqrt(abar_t)."""
        output = self.net(x_t, self.condition(x_t, reference, t), t)
        if self.config.prediction == "x0":
            return output
        point = self.path.point(t, x_t)
        return (x_t - point.c * output) / point.b

    def forward(self, batch: dict, phase: str = "model", generator: draws.Draws = None,
                shared: dict | None = None) -> dict:
        """DDPM's simple loss: the mean squared error of the predicted eps (or x0), t uniform in {0, ..., T-1}."""
        x0 = batch["target"]
        t = draws.integers(0, self.path.num_steps, (x0.shape[0],), generator, device=x0.device)
        noise = draws.normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        x_t = self.path.point(t, x0).draw(torch.zeros_like(x0), x0, noise)
        output = self.net(x_t, self.condition(x_t, x0, t), t)
        return {"loss": torch.mean((output - (noise if self.config.prediction == "eps" else x0)) ** 2)}

    # --- sampling -------------------------------------------------------------------------------------
    def denoise(self, x_start: torch.Tensor, reference: torch.Tensor, times: list, eta: float, clip_denoised: bool,
                generator: torch.Generator | None, keep: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, callback=None) -> torch.Tensor:
        """Run the core's sampler down `times` from `x_start`. With `keep` and `mask`, the estimate is the
        network's inside the mask (1) and `keep` outside it (0): an exact x0 there, so that outside the
        mask every iterate stays on the forward marginal of `keep` and the result equals `keep` (masked
        SDEdit)."""

        def denoiser(x, y, t):
            x0_hat = self.estimate(x, y, t)
            if clip_denoised:
                x0_hat = x0_hat.clamp(-1, 1)
            if keep is not None:
                x0_hat = mask * x0_hat + (1 - mask) * keep
            return x0_hat

        return sample_path(denoiser, reference, lambda time: self.path.point(time, x_start), times, eta, x_start,
                           generator=generator, callback=callback).x0

    def generate(self, sources: torch.Tensor, sampling: PriorSampling,
                 generator: torch.Generator | None) -> TranslationOutput:
        """Samples of the prior, one per source, from x_{T-1} ~ N(0, I): unconditional for the plain prior
        (the sources give the shape only), conditioned on the sources through the hook for a subclass."""
        reference = self.in_target_space(sources)
        x_start = draws.normal(reference.shape, generator, device=reference.device, dtype=reference.dtype)
        images = self.denoise(x_start, reference, self.path.times(sampling.steps), sampling.eta,
                              sampling.clip_denoised, generator)
        return TranslationOutput(images)

    def network_evaluations(self, sampling=None) -> int:
        sampling = self.sampling if sampling is None else sampling
        return len(self.path.times(sampling.steps)) - 1
