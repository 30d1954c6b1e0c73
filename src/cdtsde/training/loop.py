"""The training loop of every method, on Lightning Fabric; it knows methods only through their protocol
(cdtsde.methods.base): the optimisers they ask for, updated one phase after another every step (a GAN's
discriminator then its generator), and the loss of each phase.

`train` reads as its steps: the run directory checked and, for a resume, the state read and compared with
the run's settings (cdtsde.training.run_directory); the run set up (`TrainingRun`: Fabric, the method's
optimisers, the EMA of its weights) and restored; then every step one optimisation step over the method's
phases, and when due a log row, a validation (cdtsde.training.validation: its row, best weights and early
stopping), a preview, a snapshot, a checkpoint; finally the loggers closed and the run summarised.

With `train.validation`, the run's `ValidationData` are scored every `validation.every` steps and after
the last; with `train.early_stopping`, model/ holds the EMA weights of the best validation by its monitor
(written when a new best arrives), last/ those of the last checkpoint, and the run ends once the monitor
has not improved for `patience` validations at or after `min_steps` (without early stopping, model/ holds
the last weights). The validation rows live in state.pt and a resume replays them, so it decides as the
uninterrupted run; under DDP rank 0 validates and every rank receives its row, so all decide alike. A
validation row also holds `cpu_seconds`: the training process's CPU seconds (time.process_time, every thread,
across resumes, validations left out) before it, the cost of training on a shared machine, where wall time
depends on the neighbours. Without validation the run writes exactly what it wrote before validation existed.

`accelerator`, `devices`, `num_nodes`, `strategy` (e.g. "ddp"; "ddp_find_unused_parameters_true" for
methods whose phases use different networks) and `precision` (e.g. "bf16-mixed") choose the hardware with
no code change; the default is one CPU process.

Exact resume: every random draw of step k (batch composition, flips, the method's t and noise, dropout,
a dataset's own random crops when num_workers = 0) comes from generators seeded by (seed, k) and the rank
or the item's position, so a run killed after step k and resumed from its last checkpoint continues with
exactly the batches and draws the uninterrupted run would have used.

Any number of processes: the ranks split each global batch (`StepBatchSampler`), and the flips and the
method's draws are made per item, seeded by the item's position in the global batch (cdtsde.draws), so a
DDP run of N ranks x B items follows one process with batch N x B to floating-point tolerance (for the
methods whose loss is a mean over items without batch statistics: the diffusion methods; the GANs' batch
normalisation, dropout and CycleGAN's image pool stay per rank, and so does the normaliser of CDTSDE's
elbo mixer loss, a ratio over the batch). (With DataLoader workers, random transforms inside the
dataset are seeded per worker and repeat within a run but not across a resume; the loop's own flips
always repeat.) The state file (weights, optimisers, EMA, step, the log's unfinished interval and the
seconds spent), the sampling weights and the log are written atomically, the log first: a kill at any
point loses no log row, and a resumed run's rows and `seconds` continue the uninterrupted run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path
from ..draws import ItemGenerators
from ..errors import CdtsdeError
from ..memory import OutOfMemory, available_memory, named_out_of_memory
from ..methods import Method
from .batches import StepBatchSampler, collate, random_flips, step_seed, stream_sizes
from .checkpoint import save_pretrained
from .config import TrainConfig, train_record
from .ema import EMA
from .logs import make_loggers
from .run_directory import (
    check_global_batch,
    check_unchanged,
    launched_rank_zero,
    load_state,
    prepare_run_dir,
    resolved_settings,
    write_state,
)
from .validation import (
    CURVE_FILE,
    EarlyStopping,
    ValidationData,
    check_validation,
    fixed_draw_loss,
    save_curve,
    translation_score,
)

# the purposes of the per-item random streams (cdtsde.draws)
METHOD_DRAWS, FLIP_DRAWS, FOOTPRINT_DRAWS = 1, 2, 3
# what draws a training preview (e.g. cdtsde.visualize.previews_of): called on rank 0 with the EMA weights
# and the PNG to write
Preview = Callable[[Method, Path], object]


class StepShared:
    """What the phases of one step share (`Method.forward`'s `shared`: item access and `in`), opaque to
    Fabric: its precision plugins other than 32-true rebuild every dict among a module's inputs, so a dict
    written by one phase (a GAN's fake, CDTSDE's elbo draws) would not reach the next under bf16-mixed."""

    def __init__(self):
        self.values: dict = {}

    def __getitem__(self, key):
        return self.values[key]

    def __setitem__(self, key, value) -> None:
        self.values[key] = value

    def __contains__(self, key) -> bool:
        return key in self.values


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup_steps`, constant, then (with `decay_steps`) linear decay towards 0."""
    warmup = min(1.0, (step + 1) / max(1, config.warmup_steps))
    decay = min(1.0, (config.max_steps - step) / config.decay_steps) if config.decay_steps > 0 else 1.0
    return config.lr * min(warmup, decay)


def due(done: int, every: int, last: int) -> bool:
    """Whether something done every `every` steps, and after the last step, is due after `done` steps."""
    return done % every == 0 or done == last


def train(
    method: Method,
    train_set: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    preview: Preview | None = None,
    progress: bool = True,
    run_config: dict | None = None,
    overwrite: bool = False,
    validation: ValidationData | None = None,
) -> dict:
    """Train `method` for `config.max_steps` steps (in total, counting resumed ones); write checkpoints
    and the log into `run_dir`, and with `preview` a preview of the EMA weights every `sample_every` steps
    and after the last (samples/step_<N>.png). A `run_dir` that holds a run needs `resume` (continue it)
    or `overwrite` (remove its files first). `validation`: what `config.validation` scores (required with
    it). Returns {"losses": [summed loss per step run now], "phase_losses": [{phase: loss} per step],
    "step": n, "seconds": s, "stopped": why the run ended}, with early stopping also "monitor",
    "best_value" and "best_step"."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    if launched_rank_zero():  # the other ranks start after rank 0 has checked and prepared the folder
        prepare_run_dir(run_dir, resume, overwrite)
    check_accelerator(config)
    state = load_state(run_dir, method) if resume else None
    settings = resolved_settings(method, config, run_config)
    if state:
        check_unchanged(state, settings, run_dir)
    run = TrainingRun(method, config, run_dir, settings, start_step=state["step"] if state else 0,
                      validation=validation)
    if state:
        run.restore(state)
    if run_config is not None:
        run.record(run_config)
    if not run.optimizers:  # nothing to learn (e.g. the identity method): the checkpoint is the result
        run.checkpoint(config.max_steps)
        return {"losses": [], "phase_losses": [], "step": config.max_steps, "seconds": 0.0,
                "stopped": "nothing to train"}
    if config.validation is not None:
        check_validation(method, validation, config.validation, config.early_stopping, list(run.optimizers))

    batches = run.batches(train_set)
    bar = tqdm(total=config.max_steps, initial=run.start_step, disable=not (progress and run.fabric.is_global_zero),
               desc=f"train {method.name}", unit="step", dynamic_ncols=True)
    # a run that stopped early and is resumed has nothing left to do
    for step in range(run.start_step, config.max_steps if run.stopped is None else run.start_step):
        losses = run.step(step, batches)
        done = step + 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()} if len(losses) > 1
                        else {"loss": f"{next(iter(losses.values())):.4f}"})
        if due(done, config.log_every, config.max_steps):
            run.log(step)
        if config.validation is not None and due(done, config.validation.every, config.max_steps):
            run.validate(done)
        if preview is not None and config.sample_every > 0 and (due(done, config.sample_every, config.max_steps)
                                                               or run.stopped is not None):
            run.preview(preview, done)
        if done in config.snapshot_steps:
            run.snapshot(done)
        if due(done, config.checkpoint_every, config.max_steps) or run.stopped is not None:
            run.checkpoint(done)
        if run.stopped is not None:
            break
    bar.close()
    return run.finish()


def check_accelerator(config: TrainConfig) -> None:
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise CdtsdeError(f"train.accelerator is {config.accelerator!r} but no CUDA device is available "
                          f"(torch {torch.__version__}); use accelerator: cpu")


class TrainingRun:
    """One run on Fabric: the method set up for the run's hardware and precision with its optimisers (one
    per phase), the EMA of its weights, the values of the log row in progress and the training seconds
    (across resumes)."""

    def __init__(self, method: Method, config: TrainConfig, run_dir: Path, settings: dict, start_step: int,
                 validation: ValidationData | None = None):
        from lightning.fabric import Fabric

        self.method, self.config, self.run_dir, self.settings = method, config, run_dir, settings
        self.start_step, self.seconds_before, self.started = start_step, 0.0, time.perf_counter()
        self.cpu_before, self.cpu_started = 0.0, time.process_time()
        self.fabric = Fabric(accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
                             strategy=config.strategy, precision=config.precision,
                             loggers=make_loggers(run_dir, start_step))
        self.fabric.launch()
        self.global_batch = config.batch_size * self.fabric.world_size
        self.optimizers = method.optimizers(config)
        self.ema = EMA(method, config.ema_decay)
        self.ema.model.to(self.fabric.device)
        if self.optimizers:
            self.wrapped, *set_up = self.fabric.setup(method, *self.optimizers.values())
            self.optimizers = dict(zip(self.optimizers, set_up))
        else:
            self.wrapped = self.fabric.setup_module(method)
        self.interval: dict[str, list] = {}  # the values of the log row in progress
        self.phase_losses: list[dict[str, float]] = []  # {phase: loss} of every step run now
        self.validation = validation
        self.validation_rows: list[dict] = []  # every validation row of the run, for its curve
        # a method with nothing to learn is not validated: its model/ is its only checkpoint
        self.early_stopping = EarlyStopping(config.early_stopping) if config.early_stopping and self.optimizers else None
        self.stopped: str | None = None  # why the run ended early

    def elapsed(self) -> float:
        """The run's training seconds, across resumes."""
        return self.seconds_before + time.perf_counter() - self.started

    def cpu_elapsed(self) -> float:
        """The process's CPU seconds of training, across resumes, validations left out (`validate`)."""
        return self.cpu_before + time.process_time() - self.cpu_started

    def restore(self, state: dict) -> None:
        """Continue from `state`: weights, EMA, optimisers, loss scaler, the interrupted log row, seconds."""
        check_global_batch(state, self.global_batch, self.config, self.fabric.world_size, self.run_dir)
        # after setup, which casts the weights to the run's precision (bf16-true, 64-true): loading earlier
        # would round float64 weights to float32 and cast the saved moments to float32, so that the first
        # step mixed dtypes
        self.method.load_state_dict(state["model"])
        self.ema.model.load_state_dict(state["ema"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        if state.get("precision"):  # the loss scaler of 16-mixed (empty for every other precision)
            self.fabric.strategy.precision.load_state_dict(state["precision"])
        self.interval = {key: list(values) for key, values in state.get("interval", {}).items()}
        self.seconds_before = float(state.get("seconds", 0.0))
        self.cpu_before = float(state.get("cpu_seconds", 0.0))
        if "validation" in state:
            self.validation_rows = [dict(row) for row in state["validation"]["rows"]]
            if self.early_stopping is not None:
                # judged again by today's rule: a run stopped under an earlier one may go on
                self.early_stopping.replay(self.validation_rows)
                self.stopped = self.early_stopping.reason() if self.early_stopping.stop else None

    def record(self, run_config: dict) -> None:
        """The run configuration beside the run (config.yaml)."""
        if self.fabric.is_global_zero:
            import yaml

            with atomic_path(self.run_dir / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(run_config, sort_keys=False))

    def batches(self, train_set: Dataset) -> Iterator[dict]:
        """This rank's batches of the steps from the start step on; the training seconds count from here."""
        config, fabric = self.config, self.fabric
        sampler = StepBatchSampler(stream_sizes(train_set), config.batch_size, config.seed, self.start_step,
                                   config.max_steps, fabric.global_rank, fabric.world_size)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers, collate_fn=collate,
                            persistent_workers=config.num_workers > 0)
        loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False, move_to_device=True)
        self.paired = getattr(train_set, "paired", True)
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        return iter(loader)

    def step(self, step: int, batches: Iterator[dict]) -> dict[str, float]:
        """One optimisation step: the step's batch, flipped, then each phase's update in turn, then the EMA.
        Returns {phase: loss over the global batch}."""
        config, rank = self.config, self.fabric.global_rank
        # seeded before the batch is fetched, so that a dataset's own random crops (num_workers = 0),
        # dropout and any other global draw repeat exactly after a resume (per rank: these are the draws
        # a DDP run does not share with a single process)
        torch.manual_seed(step_seed(config.seed, step, 2 + rank))
        batch = next(batches)
        # the method's draws and the flips per item, by the item's place in the global batch: the same
        # with any number of ranks (cdtsde.draws)
        positions = range(rank * config.batch_size, (rank + 1) * config.batch_size)
        generator = ItemGenerators(config.seed, step, METHOD_DRAWS, positions, self.fabric.device)
        if config.flips:
            batch = random_flips(batch, ItemGenerators(config.seed, step, FLIP_DRAWS, positions), self.paired)
        if step == self.start_step:
            self.check_footprint(batch, step)
        shared = StepShared()
        losses = {}
        with named_out_of_memory(f"in training step {step} at train.batch_size {config.batch_size}"
                                 f"{' per process' if self.fabric.world_size > 1 else ''}", self.lower_batch):
            for phase, optimizer in self.optimizers.items():
                losses[phase] = self.update(phase, optimizer, step, batch, generator, shared)
        self.ema.update(self.method, step)
        self.phase_losses.append(losses)
        for phase, value in losses.items():
            self.interval.setdefault("loss" if len(losses) == 1 else f"loss_{phase}", []).append(value)
        return losses

    @property
    def lower_batch(self) -> str:
        return (f"train.batch_size (now {self.config.batch_size}), the image size or the network "
                f"(model.unet.base_channels), or train on a device with more memory")

    def check_footprint(self, batch: dict, step: int) -> None:
        """Refuse, before the first update, a batch whose activations alone would not fit: every phase's
        forward on the batch's first item, the bytes of the tensors it keeps for the backward pass counted
        (the weights left out), times `batch_size`, against the memory the device has available. It runs
        on a copy of the method, under a forked global random state and its own draws: the run is left as
        it was."""
        import copy

        available = available_memory(self.fabric.device)
        if available is None or not self.optimizers:
            return
        trial = copy.deepcopy(self.method)
        weights = {parameter.untyped_storage().data_ptr() for parameter in trial.parameters()}
        item = {key: value[:1] if torch.is_tensor(value) or isinstance(value, list) else value
                for key, value in batch.items()}
        device, precision = self.fabric.device, self.fabric.strategy.precision
        item = precision.convert_input(item)  # as the wrapped module converts its inputs (bf16-true)
        per_item = 0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            shared: dict = {}
            generator = ItemGenerators(self.config.seed, step, FOOTPRINT_DRAWS, [0], device)
            for phase in self.optimizers:
                kept: dict[int, int] = {}

                def count(tensor: torch.Tensor, kept: dict[int, int] = kept) -> torch.Tensor:
                    storage = tensor.untyped_storage()
                    if storage.data_ptr() not in weights:
                        kept[storage.data_ptr()] = storage.nbytes()
                    return tensor

                with named_out_of_memory("in a trial forward pass of one item", self.lower_batch), precision.forward_context(), \
                        torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
                    trial(item, phase=phase, generator=generator, shared=shared)
                per_item = max(per_item, sum(kept.values()))
        del trial, shared
        needed = per_item * self.config.batch_size
        if needed > available:
            raise OutOfMemory(f"train.batch_size {self.config.batch_size} needs about {needed / 2**30:.1f} GiB for "
                              f"its activations alone ({per_item / 2**20:.1f} MiB per item, measured on one), "
                              f"and {device} has {available / 2**30:.1f} GiB available; lower {self.lower_batch}")

    def update(self, phase: str, optimizer, step: int, batch: dict, generator: ItemGenerators, shared: dict) -> float:
        """One phase of a step: its loss, a gradient step of its optimiser; its statistics kept for the log.
        Returns the loss over the global batch (under DDP every rank's mean, as one process would see it)."""
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(self.config, step) * group["lr_scale"]
        out = self.wrapped(batch, phase=phase, generator=generator, shared=shared)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise CdtsdeError(f"training diverged at step {step}: {phase} loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        if self.config.grad_clip > 0:
            self.fabric.clip_gradients(self.wrapped, optimizer, max_norm=self.config.grad_clip)
        optimizer.step()
        for key, value in out.items():
            if key != "loss":  # kept as tensors: one host sync per log row, not one per step
                self.interval.setdefault(key, []).append(value.detach() if torch.is_tensor(value) else value)
        if self.fabric.world_size > 1:
            loss = self.fabric.all_reduce(loss.detach(), reduce_op="mean")
        return loss.detach().item()

    def log(self, step: int) -> None:
        """The log row after `step`: the means since the last row (losses first; under DDP over every rank's
        items), the learning rate of `step` and the training seconds."""
        losses_first = sorted(self.interval, key=lambda key: not key.startswith("loss"))
        row = {key: float(sum(self.interval[key]) / len(self.interval[key])) for key in losses_first}
        if self.fabric.world_size > 1:
            means = self.fabric.all_reduce(torch.tensor(list(row.values()), device=self.fabric.device),
                                           reduce_op="mean")
            row = dict(zip(row, means.tolist()))
        row.update(lr=learning_rate(self.config, step), seconds=round(self.elapsed(), 3))
        self.fabric.log_dict(row, step=step + 1)
        self.interval = {}

    def validate(self, done: int) -> None:
        """The validation after `done` steps (computed on rank 0, its row sent to every rank): logged, drawn,
        and with early stopping the best weights kept in model/ and the decision whether to stop."""
        began, cpu_seconds = time.process_time(), round(self.cpu_elapsed(), 3)
        row = None
        if self.fabric.is_global_zero:
            model, config, device = self.ema.model, self.config, self.fabric.device
            row = {}
            if self.validation.score is not None:
                row[f"val/{self.validation.score.name}"] = translation_score(
                    model, self.validation, config.validation, config.batch_size, device)
            losses = fixed_draw_loss(model, self.validation, list(self.optimizers), config.validation,
                                     config.batch_size, device)
            row.update({"val/loss" if len(losses) == 1 else f"val/loss_{phase}": value
                        for phase, value in losses.items()})
        if self.fabric.world_size > 1:
            row = self.fabric.broadcast(row, src=0)
        self.fabric.log_dict({"cpu_seconds": cpu_seconds, **row}, step=done)
        self.validation_rows.append({"step": done, **row})
        if self.fabric.is_global_zero:
            save_curve(self.validation_rows, self.run_dir / "samples" / CURVE_FILE)
        self.cpu_started += time.process_time() - began  # the validation's CPU is not training's
        stopping = self.early_stopping
        if stopping is None:
            return
        if stopping.update(row[stopping.config.monitor], done) and self.fabric.is_global_zero:
            save_pretrained(self.method, self.run_dir / "model", state_dict=self.ema.model.state_dict())
        if stopping.stop:
            self.stopped = stopping.reason()

    def preview(self, preview: Preview, done: int) -> None:
        if self.fabric.is_global_zero:
            preview(self.ema.model, self.run_dir / "samples" / f"step_{done:07d}.png")

    def snapshot(self, done: int) -> None:
        """The EMA weights after `done` steps, kept in snapshots/step-<N>/ (quality against compute)."""
        if self.fabric.is_global_zero:
            save_pretrained(self.method, self.run_dir / "snapshots" / f"step-{done:07d}",
                            state_dict=self.ema.model.state_dict())

    def checkpoint(self, done: int) -> None:
        """The log, the sampling (EMA) weights in model/ and the training state after `done` steps, the
        log first: rows past the state's step are dropped on resume."""
        if self.fabric.is_global_zero:
            for logger in self.fabric.loggers:
                logger.save()
            # with early stopping model/ holds the best weights (`validate`), last/ the last
            save_pretrained(self.method, self.run_dir / ("last" if self.early_stopping else "model"),
                            state_dict=self.ema.model.state_dict())
            # the rows are the whole validation state: a resume replays them (`restore`)
            validation = {} if self.config.validation is None else {"validation": {"rows": self.validation_rows}}
            write_state(self.run_dir, {
                "method": self.method.name, "model": self.method.state_dict(), "ema": self.ema.model.state_dict(),
                "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
                "precision": self.fabric.strategy.precision.state_dict(),
                "step": done, "train": train_record(self.config), "settings": self.settings,
                "global_batch": self.global_batch,
                "seconds": self.elapsed(), "cpu_seconds": self.cpu_elapsed(),
                "interval": {key: [float(v) for v in values] for key, values in self.interval.items()},
                **validation})
        self.fabric.barrier()

    def finish(self) -> dict:
        for logger in self.fabric.loggers:
            logger.finalize("success")
        summary = {"losses": [sum(losses.values()) for losses in self.phase_losses],
                   "phase_losses": self.phase_losses, "step": self.start_step + len(self.phase_losses),
                   "seconds": time.perf_counter() - self.started, "rank": self.fabric.global_rank,
                   "stopped": self.stopped or f"max_steps ({self.config.max_steps}) reached"}
        if self.early_stopping is not None:
            summary.update(monitor=self.early_stopping.config.monitor, best_value=self.early_stopping.best,
                           best_step=self.early_stopping.best_step)
        return summary
