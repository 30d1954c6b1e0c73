"""The headline figure of a task, from translations and targets in model space ([-1, 1]; masks as class
channels), scored on the one scoring path (`ScoreAccumulator`): what a training run's validation monitors
(cdtsde.training.validation) and what the suite's tables lead with.

* "psnr_fg": brain PSNR, PSNR over the target's nonzero pixels (skull-stripped MRI, NIfTI data);
* "dice/defect-present": Dice of the defect classes grouped as one mask (`defect`: the pv-el-cracks defects,
  or every class but the background), over the items whose target has a defect. Over every item an empty
  prediction of an empty target scores 1 (cdtsde.metrics.masks), so on data where most items have no defect
  a model that predicts none would lead: early stopping on that figure would keep it;
* "psnr": PSNR over the whole image, for other images.

The figure is the mean over the items of its finite values (`summarise`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.masks import decode_classes
from ..errors import CdtsdeError
from ..intensity import model_to_unit
from .scoring import ScoreAccumulator

HEADLINE_METRICS = ("psnr", "psnr_fg", "dice/defect-present")


@dataclass(frozen=True)
class HeadlineScore:
    """`name` (one of HEADLINE_METRICS); `defect`: the classes of "dice/defect-present"."""

    name: str
    defect: tuple[int, ...] = ()

    def __post_init__(self):
        if self.name not in HEADLINE_METRICS:
            raise ValueError(f"headline metric must be one of {', '.join(HEADLINE_METRICS)}, got {self.name!r}")
        if (self.name == "dice/defect-present") != bool(self.defect):
            raise ValueError("dice/defect-present, and it alone, needs the defect classes")

    def __call__(self, translations: torch.Tensor, targets: torch.Tensor) -> float:
        """The mean figure of a batch of translations against their targets, (B, C, H, W) in model space
        (NaN where no target has a defect, for "dice/defect-present": `check_targets` refuses those)."""
        if self.name == "dice/defect-present":
            scores = ScoreAccumulator("mask", classes={}, foreground=self.defect)
            pairs = [(prediction, target) for prediction, target in zip(decode_classes(translations),
                                                                        decode_classes(targets))
                     if self.has_defect(target)]
            if not pairs:
                return math.nan
            name = "dice/defect"  # the accumulator's column, here over the items with a defect
        else:
            scores = ScoreAccumulator("image", nonzero_foreground=self.name == "psnr_fg")
            pairs = ((model_to_unit(x.detach().float().cpu()).permute(1, 2, 0).numpy(),
                      model_to_unit(y.detach().float().cpu()).permute(1, 2, 0).numpy())
                     for x, y in zip(translations, targets))
            name = self.name
        for index, (prediction, target) in enumerate(pairs):
            scores.update(str(index), prediction, target)
        return scores.compute()[1][name]["mean"]

    def has_defect(self, classes: np.ndarray) -> bool:
        """Whether a class-index mask holds any of the defect classes."""
        return bool(np.isin(classes, self.defect).any())

    def check_targets(self, targets: Iterable[torch.Tensor]) -> None:
        """Refuse validation targets (one (C, H, W) tensor an item) on which the figure is undefined:
        "dice/defect-present" with no defect. Reads them one by one, up to the first defect."""
        if self.name != "dice/defect-present":
            return
        count = 0
        for target in targets:
            if self.has_defect(decode_classes(target)):
                return
            count += 1
        raise CdtsdeError(f"the validation targets ({count} items) have no defect (classes "
                          f"{', '.join(map(str, self.defect))}): the defect Dice over the items with a defect is "
                          "undefined; give the data spec a val split with defects (or more train.validation.items)")
