"""The headline figure of a task, from translations and targets in model space ([-1, 1]; masks as class
channels), scored on the one scoring path (`ScoreAccumulator`): what a training run's validation monitors
(cdtsde.training.validation) and what the suite's tables lead with.

* "psnr_fg": brain PSNR, PSNR over the target's nonzero pixels (skull-stripped MRI, NIfTI data);
* "dice/defect": Dice of the defect classes grouped as one mask (`defect`: the pv-el-cracks defects, or
  every class but the background);
* "psnr": PSNR over the whole image, for other images.

The figure is the mean over the items of its finite values (`summarise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.masks import decode_classes
from ..intensity import model_to_unit
from .scoring import ScoreAccumulator

HEADLINE_METRICS = ("psnr", "psnr_fg", "dice/defect")


@dataclass(frozen=True)
class HeadlineScore:
    """`name` (one of HEADLINE_METRICS); `defect`: the classes of "dice/defect"."""

    name: str
    defect: tuple[int, ...] = ()

    def __post_init__(self):
        if self.name not in HEADLINE_METRICS:
            raise ValueError(f"headline metric must be one of {', '.join(HEADLINE_METRICS)}, got {self.name!r}")
        if (self.name == "dice/defect") != bool(self.defect):
            raise ValueError("dice/defect, and it alone, needs the defect classes")

    def __call__(self, translations: torch.Tensor, targets: torch.Tensor) -> float:
        """The mean figure of a batch of translations against their targets, (B, C, H, W) in model space."""
        if self.name == "dice/defect":
            scores = ScoreAccumulator("mask", classes={}, foreground=self.defect)
            pairs = zip(decode_classes(translations), decode_classes(targets))
        else:
            scores = ScoreAccumulator("image", nonzero_foreground=self.name == "psnr_fg")
            pairs = ((model_to_unit(x.detach().float().cpu()).permute(1, 2, 0).numpy(),
                      model_to_unit(y.detach().float().cpu()).permute(1, 2, 0).numpy())
                     for x, y in zip(translations, targets))
        for index, (prediction, target) in enumerate(pairs):
            scores.update(str(index), prediction, target)
        return scores.compute()[1][self.name]["mean"]
