"""Validation during training, for every method, and early stopping on its figures.

What is validated comes from whoever builds the training data (`cdtsde.run.validation_data`), as
`ValidationData`: the val split in the form the method trains on (paired, unpaired or target-only), its
source-target pairs when the data have them, and the task's headline score (a callable, e.g.
`cdtsde.metrics.headline.HeadlineScore`). Every validation of a run sees the same first `items` of them
and makes the same draws, so its curve moves with the weights alone:

* "val/<metric>" (e.g. val/psnr_fg): the score of the EMA weights' translations (`Method.translate`, with
  `steps = nfe` for methods that have steps, one pass otherwise; a generator seeded by VALIDATION_SEED);
* "val/loss" (one phase) or "val/loss_<phase>" (each phase of a GAN): the method's training loss with the
  EMA weights on fixed draws, the `forward` of training with `ItemGenerators` seeded by VALIDATION_SEED (the
  item's t and noise do not change between validations), over batches of the run's batch size, weighted by
  their items. The method's buffers (CycleGAN's history pools, the GAN inversion's mean latent) are
  restored afterwards: validation changes nothing a run's training uses.

`EarlyStopping` keeps the best figure and its step (whose weights model/ holds) and, for patience, the best
of the validations at or after `min_steps` and the validations since that one (Lightning's EarlyStopping
semantics: an improvement is a change by more than `min_delta` in the monitored direction). It departs from
Lightning, where `min_steps` only delays a stop that patience counted from the best overall: a figure before
`min_steps` is not trusted to end the run (measured: ten of the suite's converged cells took their best
before it, on a noisy early figure, and stopped while their curves still rose). Its state is its validation
rows: a resumed run replays them (`replay`), so it decides as the uninterrupted run, also when the state
was written under an earlier rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import Dataset

from ..atomic import atomic_path
from ..draws import ItemGenerators
from ..errors import CdtsdeError
from ..methods import Method
from .batches import collate
from .config import EarlyStoppingConfig, ValidationConfig

# the seed of every validation draw (translation noise, the loss's t and noise), the same at every step
VALIDATION_SEED = 20_260_530
CURVE_FILE = "validation.png"


class Score(Protocol):
    """What rates translations against their targets ((B, C, H, W) each, model space) with one figure, and
    its column's name (e.g. "psnr_fg"): cdtsde.metrics.headline.HeadlineScore. `check_targets` refuses, with
    a CdtsdeError, validation targets on which the figure is undefined (before the first step)."""

    name: str

    def __call__(self, translations: torch.Tensor, targets: torch.Tensor) -> float: ...

    def check_targets(self, targets: Iterable[torch.Tensor]) -> None: ...


@dataclass
class ValidationData:
    """`items`: the val split in the method's training form (its loss); `pairs`: the same split's
    source-target pairs, whose translations `score` rates, or None (no pairing: the loss alone)."""

    items: Dataset
    pairs: Dataset | None = None
    score: Score | None = None

    def __post_init__(self):
        if len(self.items) == 0:
            raise CdtsdeError("train.validation needs a val split with items; the data spec's is empty")
        if (self.pairs is None) != (self.score is None):
            raise CdtsdeError("validation pairs need a score, and a score needs pairs")


def validation_columns(data: ValidationData, phases: list[str]) -> list[str]:
    """The columns a run's validation rows hold."""
    losses = ["val/loss"] if len(phases) == 1 else [f"val/loss_{phase}" for phase in phases]
    return ([f"val/{data.score.name}"] if data.score is not None else []) + losses


def first_indices(dataset: Dataset, count: int | None) -> range:
    """The indices of the validation subset: the first `count` items (every item for None)."""
    return range(len(dataset) if count is None else min(count, len(dataset)))


def first_items(dataset: Dataset, count: int | None) -> list[dict]:
    return [dataset[index] for index in first_indices(dataset, count)]


def in_batches(items: list[dict], size: int):
    """(positions, batch) over `items`, `size` at a time."""
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        yield range(start, start + len(chunk)), collate(chunk)


@torch.no_grad()
def translation_score(method: Method, data: ValidationData, config: ValidationConfig, batch_size: int,
                      device: torch.device) -> float:
    """The headline score of `method`'s translations of the first `config.items` pairs."""
    overrides = {"steps": config.nfe} if config.nfe is not None and has_steps(method) else {}
    generator = torch.Generator(device).manual_seed(VALIDATION_SEED)
    translations, targets = [], []
    for _, batch in in_batches(first_items(data.pairs, config.items), batch_size):
        translations.append(method.translate(batch["source"].to(device), generator=generator, **overrides).images)
        targets.append(batch["target"])
    return float(data.score(torch.cat(translations).float().cpu(), torch.cat(targets).float()))


def fixed_draw_loss(method: Method, data: ValidationData, phases: list[str], config: ValidationConfig,
                    batch_size: int, device: torch.device) -> dict[str, float]:
    """{phase: the method's training loss on the first `config.items` items}, with fixed draws; the
    method's buffers are left as they were. Not under no_grad: a loss may differentiate inside (R1)."""
    buffers = {name: buffer.clone() for name, buffer in method.named_buffers()}
    totals = dict.fromkeys(phases, 0.0)
    items = first_items(data.items, config.items)
    try:
        for positions, batch in in_batches(items, batch_size):
            batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
            generator = ItemGenerators(VALIDATION_SEED, 0, 0, positions, device)
            shared: dict = {}
            for phase in phases:
                loss = method(batch, phase=phase, generator=generator, shared=shared)["loss"]
                totals[phase] += float(loss.detach()) * len(positions)
    finally:
        with torch.no_grad():
            for name, buffer in method.named_buffers():
                buffer.copy_(buffers[name])
    return {phase: total / len(items) for phase, total in totals.items()}


def has_steps(method: Method) -> bool:
    return "steps" in method.sampling_class.__dataclass_fields__


def check_validation(method: Method, data: ValidationData | None, config: ValidationConfig,
                     early_stopping: EarlyStoppingConfig | None, phases: list[str]) -> None:
    """Refuse, before the first step, what validation could not do: no data, an nfe the method's
    sampler refuses, targets the score is undefined on, a monitored column the run does not produce."""
    if data is None:
        raise CdtsdeError("train.validation is set but no validation data were given (train(validation=...); "
                          "cdtsde.run.validation_data builds them from the data spec's val split)")
    if config.nfe is not None and has_steps(method):
        try:
            method.sampling_options(steps=config.nfe)
        except CdtsdeError as exc:
            raise CdtsdeError(f"train.validation.nfe: {exc}") from exc
    if data.score is not None:
        data.score.check_targets(data.pairs[index]["target"] for index in first_indices(data.pairs, config.items))
    columns = validation_columns(data, phases)
    if early_stopping is not None and early_stopping.monitor not in columns:
        raise CdtsdeError(f"train.early_stopping.monitor: {early_stopping.monitor!r} is not a validation column of "
                          f"this {method.name} run; it produces {', '.join(columns)}")


class EarlyStopping:
    """The best monitored figure and its step (the weights to keep); the best at or after `min_steps` and
    the validations since it (patience); and whether the run ends."""

    def __init__(self, config: EarlyStoppingConfig):
        self.config = config
        self.best: float | None = None
        self.best_step: int | None = None
        self.reference: float | None = None  # the best figure at or after min_steps: patience counts from it
        self.reference_step: int | None = None
        self.waited = 0  # validations at or after min_steps since the reference

    def improves(self, value: float, on: float | None) -> bool:
        if not math.isfinite(value) and not (value == math.inf and self.config.mode == "max"):
            return False
        if on is None:
            return True
        change = value - on if self.config.mode == "max" else on - value
        return change > self.config.min_delta

    def update(self, value: float, step: int) -> bool:
        """Record the figure of the validation after `step` steps; whether it is the new best."""
        best = self.improves(value, self.best)
        if best:
            self.best, self.best_step = value, step
        if step >= self.config.min_steps:
            if self.improves(value, self.reference):
                self.reference, self.reference_step, self.waited = value, step, 0
            else:
                self.waited += 1
        return best

    def replay(self, rows: Iterable[dict]) -> None:
        """Update with the monitored figure of each validation row ({"step", column: value}) in turn."""
        for row in rows:
            self.update(row[self.config.monitor], row["step"])

    @property
    def stop(self) -> bool:
        return self.config.patience is not None and self.waited >= self.config.patience

    def reason(self) -> str:
        since = ("" if self.reference_step == self.best_step else
                 f", counted from the best at or after step {self.config.min_steps}: {self.reference:.6g} after "
                 f"step {self.reference_step}")
        return (f"{self.config.monitor} did not improve by more than {self.config.min_delta:g} for "
                f"{self.waited} validations (best {self.best:.6g} after step {self.best_step}{since})")


def save_curve(rows: list[dict], path: Path) -> Path:
    """The validation figures against the step, one panel per column (rows: {"step", column: value})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(dict.fromkeys(key for row in rows for key in row if key != "step"))
    figure, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 2.6), squeeze=False)
    for axis, column in zip(axes[0], columns):
        points = [(row["step"], row[column]) for row in rows if column in row]
        axis.plot(*zip(*points), marker="o", markersize=3)
        axis.set_title(column, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return path
