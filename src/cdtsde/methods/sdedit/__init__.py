"""SDEdit (Meng et al., ICLR 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations") on the target-only DDPM prior (docs/zero-shot.md).

Translation: the source, mapped into the target's channel space by `Method.in_target_space` (equal channel
counts as they are, otherwise the source's channel mean repeated: SDEdit needs a guide in the space the
prior was trained on), is noised by the prior's forward process to the step s0 = round(t0 T) - 1,
x_s0 = sqrt(abar_s0) y + sigma_s0 z, and denoised by the core's posterior step down `steps` evaluations
over [0, s0] (eta = 1: ancestral, as the paper's reverse SDE) to the clean end. t0 = 0 returns the source.

* `repeats` K: the reference code's `--sample_step` loop; each repeat noises the previous repeat's output
  again to t0 and denoises it (the output of one run is the guide of the next), so K = 1 is plain SDEdit and
  K runs cost K x steps evaluations. For several independent samples of one source (their mean and a std
  map), use `translate_slices(samples=K)` / `cdtsde translate --samples K`.
* masked editing (a Python-API argument, `translate(sources, mask=m)`; the command line has no mask): m is
  1 where the image is edited and 0 where the source is kept, broadcastable to (B, C_target, H, W), values in
  [0, 1]. Outside the mask the estimate is the source itself, so every iterate there is a draw of the
  source's forward marginal at its step (for eta = 0 exactly the reference code's reset to
  sqrt(abar_t) y + sigma_t z with the start's noise z) and the output equals the source. (The reference
  code's mask has the opposite sense: it edits where its mask is not 1.)

Defaults: t0 0.4 (the reference code's `--t 400` of T = 1000; the paper's range is 0.3-0.6), 40 steps (ours,
for the CPU; the reference evaluates every step below t0 T, here `steps=1000`), eta 1, one repeat (the
reference code runs 3).

Training is the prior's (same configuration, loss and weights: this class only adds translation), so a run
trained with `--method sdedit` is a prior; a prior's checkpoint runs as SDEdit without retraining (the
weights are the same tensors by name): `load_pretrained(prior_dir, method="sdedit")`, `cdtsde translate
--method sdedit`, or `SDEdit.from_method(prior)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as option

import torch

from ... import draws
from ...diffusion.schedule import CLEAN_END
from ...errors import CdtsdeError
from ...settings import check_count, check_unit_interval
from ..base import TranslationOutput, check_finite_sources
from ..prior import Prior


@dataclass
class SDEditSampling:
    t0: float = option(default=0.4, metadata={"help": "sdedit: noise level to start from, a fraction of T (0: the source)"})
    steps: int = option(default=40, metadata={"help": "network evaluations (NFE)"})
    eta: float = option(default=1.0, metadata={"help": "0 deterministic (DDIM) .. 1 ancestral (DDPM)"})
    clip_denoised: bool = option(default=True, metadata={"help": "clip each x0 prediction to [-1, 1]"})
    repeats: int = option(default=1, metadata={"help": "sdedit: runs in sequence, each re-noising the last output"})

    def __post_init__(self):
        if not 0.0 <= float(self.t0) <= 1.0:
            raise ValueError(f"t0 must lie in [0, 1], got {self.t0}")
        check_count("steps", self.steps)
        check_unit_interval("eta", self.eta)
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {self.repeats!r}")


def check_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The mask as a float tensor broadcast to `like` (B, C, H, W), or a CdtsdeError."""
    mask = torch.as_tensor(mask, device=like.device)
    try:
        shape = torch.broadcast_shapes(mask.shape, like.shape)
    except RuntimeError:
        shape = None
    if mask.ndim != 4 or shape != like.shape:
        raise CdtsdeError(f"the mask must broadcast to the images {tuple(like.shape)} as (B or 1, C or 1, H, W), "
                          f"got {tuple(mask.shape)}")
    mask = mask.to(like.dtype)
    if bool(((mask < 0) | (mask > 1)).any()):
        raise CdtsdeError("the mask must hold values in [0, 1] (1: edit, 0: keep the source)")
    return mask.expand_as(like)


class SDEdit(Prior):
    name = "sdedit"
    description = "SDEdit on a target-only DDPM prior: noise the source to t0, denoise ancestrally"
    sampling_class = SDEditSampling
    runs_checkpoints_of = ("prior",)
    tiny_sampling = ({"steps": 1, "eta": 0.0}, {"steps": 3, "eta": 1.0, "t0": 0.2}, {"steps": 2, "eta": 0.5, "repeats": 2})

    @torch.no_grad()
    def translate(self, sources, sampling=None, generator=None, mask=None, **overrides):
        """`mask` (1: edit, 0: keep the source; module docstring) is an argument of the Python API only."""
        self.check_source(sources)
        check_finite_sources(sources)
        return self.generate(sources, self.sampling_options(sampling, **overrides), generator, mask)

    def generate(self, sources: torch.Tensor, sampling: SDEditSampling, generator: torch.Generator | None,
                 mask: torch.Tensor | None = None) -> TranslationOutput:
        source = self.in_target_space(sources)
        if mask is not None:
            mask = check_mask(mask, source)
        start = self.path.start_step(sampling.t0)
        if start == CLEAN_END:
            return TranslationOutput(source.clone())
        times = self.path.times(sampling.steps, start=start)
        x = source
        for _ in range(sampling.repeats):
            noise = draws.normal(source.shape, generator, device=source.device, dtype=source.dtype)
            x_start = self.path.point(start, x).draw(x, x, noise)  # sqrt(abar_s0) x + sigma_s0 z (A = 0)
            x = self.denoise(x_start, source, times, sampling.eta, sampling.clip_denoised, generator,
                             keep=None if mask is None else source, mask=mask)
        return TranslationOutput(x)

    def network_evaluations(self, sampling=None) -> int:
        sampling = self.sampling if sampling is None else sampling
        return sampling.repeats * (len(self.path.times(sampling.steps, start=self.path.start_step(sampling.t0))) - 1)

