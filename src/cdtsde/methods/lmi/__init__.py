"""LMI-guided zero-shot diffusion (seed paper 002: Wang et al., "Diffusion based Zero-shot Medical
Image-to-Image Translation for Cross Modality Segmentation", arXiv:2404.01102, section 2.3; docs/zero-shot.md
section 5, the maps in docs/lmi.md).

The target-only DDPM prior (`cdtsde.methods.prior`) whose network takes, concatenated to x_t, the local
mutual information maps [LMI(c, x_t), LMI(c, c)] (`cdtsde.mutual_information.lmi_condition`, 2 x target channels), where c
is the prior's reference: the clean target x0 in training (Eq. 2), the source in the target's channel space
at translation (Eq. 3, `Method.in_target_space`, intensities as they are: LMI does not depend on how one
modality's grey levels map onto the other's). The maps are recomputed from the current iterate at every
network evaluation, in training and in sampling. Sampling is the prior's chain from x_{T-1} ~ N(0, I), as
the authors' (`x = e`, runners/statistical_translation.py).

The maps are inputs, computed without gradient (they have no parameters; the loss never needs d LMI / d x).
The self map LMI(c, c) does not change along one translation: `generate` computes it once and `condition`
reuses it for that reference, bit for bit what `lmi_condition` returns.

Defaults: `model.lmi` is `cdtsde.mutual_information.LMIOptions()` (clean mode, 3x3 patches and search, 27 bins, kernel std 8
grey levels: the authors' bins and kernel, docs/lmi.md); `mode: reference` gives the authors' estimator.
Sampling: 50 DDIM steps (eta 0), ours for the CPU (each step computes one LMI map); the authors run the
full 1000-step ancestral chain (run_sampling.sh: `--t 1000`), here `--steps 1000 --eta 1`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from dataclasses import field as option

import torch

from ... import draws
from ...mutual_information import LMIOptions, lmi_condition, local_mutual_information
from ..base import TranslationOutput
from ..prior import Prior, PriorConfig, PriorSampling


@dataclass
class LMIConfig(PriorConfig):
    lmi: LMIOptions = dataclasses.field(default_factory=LMIOptions)  # how the maps are computed (cdtsde.mutual_information)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.lmi, dict):  # a plain mapping from Python code
            self.lmi = LMIOptions(**self.lmi)
        if not isinstance(self.lmi, LMIOptions):
            raise ValueError(f"lmi must be LMI options (cdtsde.mutual_information.LMIOptions), got {self.lmi!r}")
        self.lmi.resolved()  # checks every value now, not at the first network call


@dataclass
class LMISampling(PriorSampling):
    steps: int = option(default=50, metadata={"help": "network evaluations (NFE)"})
    eta: float = option(default=0.0, metadata={"help": "0 deterministic (DDIM) .. 1 ancestral (DDPM)"})
    clip_denoised: bool = option(default=True, metadata={"help": "clip each x0 prediction to [-1, 1]"})


class LMIGuided(Prior):
    name = "lmi"
    description = "LMI-guided zero-shot diffusion: a target-only DDPM conditioned on LMI maps of the source, from noise"
    data_kind = "target-only"
    config_class = LMIConfig
    sampling_class = LMISampling
    runs_checkpoints_of = ()  # its network takes the maps as extra input channels: no prior's weights fit

    def __init__(self, config: LMIConfig, data):
        super().__init__(config, data)
        self._own = None  # (reference, LMI(reference, reference)) while one translation runs

    def condition_channels(self) -> int:
        return 2 * self.data.target_channels

    @torch.no_grad()
    def condition(self, x_t: torch.Tensor, reference: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[LMI(reference, x_t), LMI(reference, reference)], (B, 2 C, H, W): `lmi_condition(reference, x_t)`."""
        if self._own is None or self._own[0] is not reference:
            return lmi_condition(reference, x_t, self.config.lmi)
        cross = local_mutual_information(reference, x_t, self.config.lmi).similarity
        return torch.cat([cross, self._own[1]], dim=1)

    def generate(self, sources: torch.Tensor, sampling: LMISampling,
                 generator: torch.Generator | None) -> TranslationOutput:
        """The prior's chain from N(0, I), conditioned on the source's maps at every step."""
        reference = self.in_target_space(sources)
        x_start = draws.normal(reference.shape, generator, device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            self._own = (reference, local_mutual_information(reference, reference, self.config.lmi).similarity)
        try:
            images = self.denoise(x_start, reference, self.path.times(sampling.steps), sampling.eta,
                                  sampling.clip_denoised, generator)
        finally:
            self._own = None
        return TranslationOutput(images)
