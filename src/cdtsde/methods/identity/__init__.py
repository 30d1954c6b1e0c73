"""The floor every method must beat: the source itself, in the target's channel space (grey to colour by
repetition, colour to grey by the channel mean). For mask targets, which a source image cannot be, every
pixel is predicted as class 0 (background). Nothing to train.

It is also the smallest complete method, the worked example of `docs/methods.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Method, TranslationOutput


@dataclass
class IdentityConfig:
    """No options."""


class Identity(Method):
    name = "identity"
    description = "the source unchanged (masks: all background): the floor for benchmarks"
    data_kind = "paired"
    config_class = IdentityConfig

    def generate(self, sources: torch.Tensor, sampling, generator: torch.Generator | None) -> TranslationOutput:
        if self.data.target_kind == "mask":
            background = torch.full((sources.shape[0], self.data.target_channels, *sources.shape[2:]), -1.0,
                                    device=sources.device, dtype=sources.dtype)
            background[:, 0] = 1.0
            return TranslationOutput(background)
        return TranslationOutput(self.in_target_space(sources).clone())
