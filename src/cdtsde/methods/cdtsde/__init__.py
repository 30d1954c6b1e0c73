"""CDTSDE: the adaptive domain-shift diffusion (noise schedule + mixing field + conditional UNet), with
the linear field as DoSSR and the channel, dynamic and content fields (docs/cdtsde.md).

The source enters the network by channel concatenation; the mixing field and the forward mean use the
source in the target's channel space (the anchor x_src of d_t = Lambda x_src + (1 - Lambda) x0, Eq. 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ...diffusion.domain_shift import q_sample
from ...diffusion.sampler import SamplerOptions, sample
from ...diffusion.schedule import NoiseSchedule, ScheduleConfig
from ...networks.unet import ConditionalUNet, UNetConfig
from ...settings import check_positive
from ..base import DataInfo, Method, TranslationOutput
from .fields import FieldConfig, make_field, mixer_statistics


@dataclass
class CDTSDEConfig:
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    mixer_lr_scale: float = 10.0  # the paper trains the mixer with a 10x learning rate

    def __post_init__(self):
        check_positive("model.mixer_lr_scale", self.mixer_lr_scale)


class CDTSDE(Method):
    name = "cdtsde"
    description = "adaptive domain-shift diffusion with a learned mixing field (linear field = DoSSR)"
    data_kind = "paired"
    config_class = CDTSDEConfig
    sampling_class = SamplerOptions
    diagnostics_help = {"clamped_pixels": "field pixel-steps where the sampler clamped rho (the learned field "
                                          "is not monotone in t there)"}

    def __init__(self, config: CDTSDEConfig, data: DataInfo):
        super().__init__(config, data)
        self.schedule = NoiseSchedule(config.schedule)
        self.field = make_field(config.field, self.schedule, data.target_channels)
        self.net = ConditionalUNet(data.target_channels, data.source_channels, config.unet)

    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """AdamW with two groups: the denoiser at `lr`, the mixing field at `mixer_lr_scale * lr` (paper)."""
        mixer_ids = {id(p) for p in self.field.parameters()}
        groups = [
            {"params": [p for p in self.parameters() if id(p) not in mixer_ids], "lr_scale": 1.0},
            {"params": [p for p in self.parameters() if id(p) in mixer_ids], "lr_scale": self.config.mixer_lr_scale},
        ]
        return {"model": torch.optim.AdamW([g for g in groups if g["params"]], lr=train.lr,
                                           weight_decay=train.weight_decay)}

    def forward(self, batch: dict, phase: str = "model", generator: torch.Generator | None = None,
                shared: dict | None = None) -> dict:
        """The training loss: x0-prediction MSE with t uniform in {0, ..., t1} (t1 included: the first
        sampling step is evaluated there). Gradients reach the mixer through x_t (docs/cdtsde.md, section 4)."""
        x0, x_src = batch["target"], batch["source"]
        self.check_source(x_src)
        t = torch.randint(0, self.schedule.t1 + 1, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        anchor = self.in_target_space(x_src)
        mixing, modulation = self.field.with_modulation(t, anchor)
        forward = q_sample(self.field, x0, anchor, t, noise=noise, mixing=mixing)
        x0_hat = self.net(forward.x_t, x_src, t)
        return {"loss": torch.mean((x0_hat - x0) ** 2),
                **mixer_statistics(self.field, mixing, modulation, t, anchor)}

    def generate(self, sources: torch.Tensor, sampling: SamplerOptions, generator: torch.Generator | None,
                 x_start: torch.Tensor | None = None, callback=None) -> TranslationOutput:
        """`x_start` (K B items: K samples per source, source-major as `repeat_interleave` gives) replaces
        the draw of x(t1); `callback` sees every sampler step (cdtsde.diffusion.sampler.SamplerStep)."""
        if x_start is not None and x_start.shape[0] != sources.shape[0]:
            if x_start.shape[0] % sources.shape[0]:
                raise ValueError(f"x_start has {x_start.shape[0]} items, not a multiple of the "
                                 f"{sources.shape[0]} sources")
            sources = sources.repeat_interleave(x_start.shape[0] // sources.shape[0], dim=0)
        result = sample(lambda x_t, _anchor, t: self.net(x_t, sources, t), self.in_target_space(sources), self.field,
                        generator=generator, x_start=x_start, callback=callback, **dataclasses.asdict(sampling))
        return TranslationOutput(result.x0, {"clamped_pixels": result.clamped_pixels})

    @torch.no_grad()
    def translate(self, sources, sampling=None, generator=None, x_start=None, callback=None, **overrides):
        self.check_source(sources)
        return self.generate(sources, self.sampling_options(sampling, **overrides), generator, x_start, callback)

    def preview_maps(self, sources: torch.Tensor) -> dict[str, torch.Tensor]:
        t1, anchor = self.schedule.t1, self.in_target_space(sources)
        return {f"Lambda, t={t}": self.field(t, anchor) for t in (t1 // 4, t1 // 2, 3 * t1 // 4)}
