"""`TrainConfig`: the settings of a training run (the `train:` block of a run configuration), with its
optional `validation` and `early_stopping` blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings import check_count, to_plain

PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
MODES = ("max", "min")


@dataclass
class ValidationConfig:
    """Score the val split every `every` steps (and after the last): the translations of its first `items`
    pairs (all: None) at `nfe` network evaluations (the method's `steps`; None: its default; one pass for
    methods without steps) with the task's headline metric, and the method's training loss on fixed draws."""

    every: int = 500
    items: int | None = 16
    nfe: int | None = None

    def __post_init__(self):
        check_count("train.validation.every", self.every)
        for name in ("items", "nfe"):
            if getattr(self, name) is not None:
                check_count(f"train.validation.{name}", getattr(self, name))


@dataclass
class EarlyStoppingConfig:
    """As Lightning's EarlyStopping: the run ends once the validation column `monitor` has not improved
    (risen for mode max, fallen for min; default: min for the losses, max for the headline metrics, which
    all grow with quality) by more than `min_delta` for `patience` validations in a row (None: never, the
    run only keeps its best weights). Patience counts only the validations at or after `min_steps` steps,
    from the best of them: a noisy figure before it cannot end a run before it has learned anything (stricter
    than Lightning's Trainer min_steps, which only delays a stop counted from the best overall). model/
    holds the EMA weights of the best validation overall."""

    monitor: str = "val/loss"
    mode: str | None = None
    patience: int | None = 3
    min_delta: float = 0.0
    min_steps: int = 0

    def __post_init__(self):
        if not isinstance(self.monitor, str) or not self.monitor.startswith("val/"):
            raise ValueError(f"train.early_stopping.monitor must name a validation column (val/...), "
                             f"got {self.monitor!r}")
        if self.mode is None:
            self.mode = "min" if self.monitor.startswith("val/loss") else "max"
        if self.mode not in MODES:
            raise ValueError(f"train.early_stopping.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.patience is not None:
            check_count("train.early_stopping.patience", self.patience)
        if not (isinstance(self.min_delta, (int, float)) and math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"train.early_stopping.min_delta must be a number >= 0, got {self.min_delta!r}")
        if not isinstance(self.min_steps, int) or isinstance(self.min_steps, bool) or self.min_steps < 0:
            raise ValueError(f"train.early_stopping.min_steps must be a whole number >= 0, got {self.min_steps!r}")


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    decay_steps: int = 0  # the learning rate falls linearly to 0 over the last decay_steps (pix2pix, CycleGAN)
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    flips: bool = True  # random horizontal/vertical flips (identical on source and target of a pair)
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 250
    # steps after which the EMA weights are also kept in snapshots/step-<N>/ (quality against training compute)
    snapshot_steps: tuple[int, ...] = ()
    num_workers: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    validation: ValidationConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "log_every", "checkpoint_every", "num_nodes"):
            check_count(f"train.{name}", getattr(self, name))
        for name in ("warmup_steps", "decay_steps", "sample_every", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"train.{name} must be an integer >= 0, got {value!r}")
        if any(not isinstance(step, int) or isinstance(step, bool) or step < 1 for step in self.snapshot_steps):
            raise ValueError(f"train.snapshot_steps must list steps >= 1, got {list(self.snapshot_steps)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.accelerator == "cpu" and self.precision.startswith("16-"):
            raise ValueError(f"precision {self.precision} (float16) is not supported on the CPU; use bf16-mixed "
                             f"or bf16-true there, 16-mixed on a GPU")
        if self.early_stopping is not None and self.validation is None:
            raise ValueError("train.early_stopping monitors validation figures: set train.validation too")


def train_record(config: TrainConfig) -> dict:
    """The settings as a run records them (state.pt, settings compared on resume): without the validation
    blocks a run does not use, so that a run without validation records what runs recorded before them."""
    return {key: value for key, value in to_plain(config).items()
            if not (key in ("validation", "early_stopping") and value is None)}
