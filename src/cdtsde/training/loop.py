"""The training loop of every method, on Lightning Fabric; it knows methods only through their protocol
(cdtsde.methods.base): the optimisers they ask for, updated one phase after another every step (a GAN's
discriminator then its generator), and the loss of each phase.

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
point loses no log row, and a resumed run's rows and `seconds` continue the uninterrupted run's. The
previous state is kept as `state-previous.pt`; a resume whose `state.pt` is missing or unreadable falls
back to it with a warning. A run directory that already holds a run is refused unless the caller resumes
it or overwrites it; a resume with a changed configuration is refused with the differences listed, except
for `RESUMABLE_CHANGES` (length, logging, hardware), which are reported.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path, check_writable, remove_stale_temporaries
from ..draws import ItemGenerators
from ..errors import CdtsdeError
from ..methods import Method
from ..settings import check_count, to_plain
from .batches import StepBatchSampler, collate, random_flips, step_seed, stream_sizes
from .checkpoint import save_pretrained
from .logs import make_loggers

STATE_FILE = "state.pt"
PREVIOUS_STATE_FILE = "state-previous.pt"
# what a run directory holds (removed by `overwrite`; anything else in the folder is left alone)
RUN_FILES = (STATE_FILE, PREVIOUS_STATE_FILE, "metrics.csv", "config.yaml")
RUN_FOLDERS = ("model", "samples", "snapshots", "tensorboard")
# settings a resume may change (with a note): how long, how often to log and save, on what hardware;
# every other setting changes the run's mathematics, and the resume is refused with the differences
# (batch_size is per process: it and the process count may change together as long as the global batch,
# their product, stays the run's; `check_global_batch`)
RESUMABLE_CHANGES = ("max_steps", "log_every", "sample_every", "checkpoint_every", "snapshot_steps", "num_workers",
                     "accelerator", "devices", "num_nodes", "strategy", "batch_size")
# the purposes of the per-item random streams (cdtsde.draws)
METHOD_DRAWS, FLIP_DRAWS = 1, 2
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")


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


class EMA:
    """Exponential moving average of the weights (used for sampling) in float32 whatever the training
    precision, with the usual warm-up decay = min(decay, (1 + step) / (10 + step)); buffers are copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        if ema_params:
            current = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params)]
            torch._foreach_lerp_(ema_params, current, 1 - decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup_steps`, constant, then (with `decay_steps`) linear decay towards 0."""
    warmup = min(1.0, (step + 1) / max(1, config.warmup_steps))
    decay = min(1.0, (config.max_steps - step) / config.decay_steps) if config.decay_steps > 0 else 1.0
    return config.lr * min(warmup, decay)


def read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CdtsdeError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not {"model", "step"} <= set(state):
        raise CdtsdeError(f"{path}: not a cdtsde training state")
    return state


def load_state(path: Path, method: Method) -> dict:
    """The training state in `path`, or the previous one beside it (with a warning) when `path` is missing
    or unreadable: a kill while the state was being replaced, a truncated copy."""
    previous = path.with_name(PREVIOUS_STATE_FILE)
    if not path.is_file() and not previous.is_file():
        raise CdtsdeError(f"{path.parent}: nothing to resume ({STATE_FILE} missing)")
    try:
        state = read_state(path) if path.is_file() else None
        problem = f"{path}: missing"
    except CdtsdeError as exc:
        state, problem = None, str(exc)
    if state is None:
        if not previous.is_file():
            raise CdtsdeError(problem)
        state = read_state(previous)
        warnings.warn(f"{problem}; resuming from the previous checkpoint {previous.name} (step {state['step']})",
                      stacklevel=3)
    if state.get("method", method.name) != method.name:
        raise CdtsdeError(f"{path}: a {state['method']} run cannot be resumed as {method.name}")
    if "optimizer" in state:  # a state written before methods had several optimisers
        state["optimizers"] = {"model": state.pop("optimizer")}
    return state


def train(
    method: Method,
    train_set: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    preview_set: Dataset | None = None,
    progress: bool = True,
    run_config: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Train `method` for `config.max_steps` steps (in total, counting resumed ones); write checkpoints,
    the log and preview grids into `run_dir`. A `run_dir` that holds a run needs `resume` (continue it)
    or `overwrite` (remove its files first). Returns {"losses": [summed loss per step run now],
    "phase_losses": [{phase: loss} per step], "step": n, "seconds": s}."""
    from lightning.fabric import Fabric
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    if launched_rank_zero():  # the other ranks start after rank 0 has checked and prepared the folder
        prepare_run_dir(run_dir, resume, overwrite)
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise CdtsdeError(f"train.accelerator is {config.accelerator!r} but no CUDA device is available "
                          f"(torch {torch.__version__}); use accelerator: cpu")
    state_path = run_dir / STATE_FILE
    state = load_state(state_path, method) if resume else None
    settings = resolved_settings(method, config, run_config)
    if state:
        check_unchanged(state, settings, run_dir)
    start_step = state["step"] if state else 0
    seconds_before = float(state.get("seconds", 0.0)) if state else 0.0
    started = time.perf_counter()

    def elapsed() -> float:  # the run's training seconds, across resumes
        return seconds_before + time.perf_counter() - started

    loggers = make_loggers(run_dir, start_step)
    fabric = Fabric(accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
                    strategy=config.strategy, precision=config.precision, loggers=loggers)
    fabric.launch()
    global_batch = config.batch_size * fabric.world_size
    if state:
        check_global_batch(state, global_batch, config, fabric.world_size, run_dir)

    optimizers = method.optimizers(config)
    ema = EMA(method, config.ema_decay)
    if state:
        ema.model.load_state_dict(state["ema"])
    ema.model.to(fabric.device)
    if optimizers:
        wrapped, *set_up = fabric.setup(method, *optimizers.values())
        optimizers = dict(zip(optimizers, set_up))
    else:
        wrapped = fabric.setup_module(method)
    if state:
        # after setup, which casts the weights to the run's precision (bf16-true, 64-true): loading earlier
        # would round float64 weights to float32 and cast the saved moments to float32, so that the first
        # step mixed dtypes
        method.load_state_dict(state["model"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        if state.get("precision"):  # the loss scaler of 16-mixed (empty for every other precision)
            fabric.strategy.precision.load_state_dict(state["precision"])
    if fabric.is_global_zero and run_config is not None:
        import yaml

        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(run_config, sort_keys=False))

    def save_checkpoint(step: int, interval: dict | None = None) -> None:
        if fabric.is_global_zero:
            for logger in fabric.loggers:  # the log first: rows past the state's step are dropped on resume
                logger.save()
            save_pretrained(method, run_dir / "model", state_dict=ema.model.state_dict())
            with atomic_path(state_path) as tmp:
                torch.save({"method": method.name, "model": method.state_dict(), "ema": ema.model.state_dict(),
                            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                            "precision": fabric.strategy.precision.state_dict(),
                            "step": step, "train": to_plain(config), "settings": settings,
                            "global_batch": global_batch,
                            "seconds": elapsed(),
                            "interval": {key: [float(v) for v in values] for key, values in (interval or {}).items()}},
                           tmp)
                if state_path.is_file():
                    state_path.replace(state_path.with_name(PREVIOUS_STATE_FILE))
        fabric.barrier()

    if not optimizers:  # nothing to learn (e.g. the identity method): the checkpoint is the result
        save_checkpoint(config.max_steps)
        return {"losses": [], "phase_losses": [], "step": config.max_steps, "seconds": 0.0}

    sampler = StepBatchSampler(stream_sizes(train_set), config.batch_size, config.seed, start_step,
                               config.max_steps, fabric.global_rank, fabric.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers, collate_fn=collate,
                        persistent_workers=config.num_workers > 0)
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False, move_to_device=True)
    paired = getattr(train_set, "paired", True)

    phase_losses: list[dict[str, float]] = []
    # the values of the log row in progress (a resumed run continues the interrupted row)
    interval: dict[str, list] = {key: list(values) for key, values in (state or {}).get("interval", {}).items()}
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not (progress and fabric.is_global_zero),
               desc=f"train {method.name}", unit="step", dynamic_ncols=True)
    started = time.perf_counter()

    batches = iter(loader)
    for step in range(start_step, config.max_steps):
        # seeded before the batch is fetched, so that a dataset's own random crops (num_workers = 0),
        # dropout and any other global draw repeat exactly after a resume (per rank: these are the draws
        # a DDP run does not share with a single process)
        torch.manual_seed(step_seed(config.seed, step, 2 + fabric.global_rank))
        batch = next(batches)
        # the method's draws and the flips per item, by the item's place in the global batch: the same
        # with any number of ranks (cdtsde.draws)
        positions = range(fabric.global_rank * config.batch_size, (fabric.global_rank + 1) * config.batch_size)
        generator = ItemGenerators(config.seed, step, METHOD_DRAWS, positions, fabric.device)
        if config.flips:
            batch = random_flips(batch, ItemGenerators(config.seed, step, FLIP_DRAWS, positions), paired)
        shared: dict = {}
        losses = {}
        for phase, optimizer in optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step) * group["lr_scale"]
            out = wrapped(batch, phase=phase, generator=generator, shared=shared)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise CdtsdeError(f"training diverged at step {step}: {phase} loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if config.grad_clip > 0:
                fabric.clip_gradients(wrapped, optimizer, max_norm=config.grad_clip)
            optimizer.step()
            # under DDP the global batch's loss (every rank's mean), as one process would log it
            losses[phase] = (fabric.all_reduce(loss.detach(), reduce_op="mean") if fabric.world_size > 1
                             else loss.detach()).item()
            for key, value in out.items():
                if key != "loss":  # kept as tensors: one host sync per log row, not one per step
                    interval.setdefault(key, []).append(value.detach() if torch.is_tensor(value) else value)
        ema.update(method, step)
        phase_losses.append(losses)
        for phase, value in losses.items():
            interval.setdefault("loss" if len(losses) == 1 else f"loss_{phase}", []).append(value)
        done = step + 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()} if len(losses) > 1 else {"loss": f"{loss.item():.4f}"})
        if done % config.log_every == 0 or done == config.max_steps:
            losses_first = sorted(interval, key=lambda key: not key.startswith("loss"))
            row = {key: float(sum(interval[key]) / len(interval[key])) for key in losses_first}
            if fabric.world_size > 1:  # the method's statistics too, averaged over the ranks' items
                means = fabric.all_reduce(torch.tensor(list(row.values()), device=fabric.device), reduce_op="mean")
                row = dict(zip(row, means.tolist()))
            row.update(lr=learning_rate(config, step), seconds=round(elapsed(), 3))
            fabric.log_dict(row, step=done)
            interval = {}
        if fabric.is_global_zero and preview_set is not None and config.sample_every > 0 and (
            done % config.sample_every == 0 or done == config.max_steps
        ):
            from ..visualize import save_preview

            save_preview(ema.model, preview_set, run_dir / "samples" / f"step_{done:07d}.png")
        if done in config.snapshot_steps and fabric.is_global_zero:
            save_pretrained(method, run_dir / "snapshots" / f"step-{done:07d}", state_dict=ema.model.state_dict())
        if done % config.checkpoint_every == 0 or done == config.max_steps:
            save_checkpoint(done, interval)
    bar.close()
    for logger in fabric.loggers:
        logger.finalize("success")
    return {"losses": [sum(losses.values()) for losses in phase_losses], "phase_losses": phase_losses,
            "step": start_step + len(phase_losses), "seconds": time.perf_counter() - started,
            "rank": fabric.global_rank}


def launched_rank_zero() -> bool:
    """Whether this process is rank 0 (or the only one), known before Fabric starts: the processes a
    launcher (Fabric's, torchrun, SLURM) starts for the other ranks carry a non-zero rank variable."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one unless told to overwrite it; remove the files of the
    old run then (only the files a run writes), and the temporaries a kill left behind."""
    import shutil

    if resume and overwrite:
        raise CdtsdeError("resume and overwrite exclude each other: resume continues the run, overwrite restarts it")
    if run_dir.exists() and not run_dir.is_dir():
        raise CdtsdeError(f"{run_dir}: exists and is not a directory")
    holds_run = any((run_dir / name).exists() for name in (STATE_FILE, PREVIOUS_STATE_FILE, "model"))
    if holds_run and not resume:
        if not overwrite:
            raise CdtsdeError(f"{run_dir}: already holds a training run; resume it (--resume) or start again "
                              f"(--overwrite, which deletes it)")
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
    try:
        check_writable(run_dir)
    except OSError as exc:
        raise CdtsdeError(f"{run_dir}: cannot write the run there ({exc.strerror or exc})") from exc
    for folder in (run_dir, run_dir / "model"):
        remove_stale_temporaries(folder)


def resolved_settings(method: Method, config: TrainConfig, run_config: dict | None) -> dict:
    """What decides a run's mathematics, as resolved (defaults filled in): the method's configuration,
    the training settings and, from the run configuration, the data specification."""
    settings = {"model": to_plain(method.config), "train": to_plain(config)}
    if run_config is not None and "data" in run_config:
        settings["data"] = run_config["data"]
    return settings


def same_setting(a, b) -> bool:
    """Equal values, or two spellings of one existing file or folder (a data root through a symlink)."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False
    return False


def check_unchanged(state: dict, settings: dict, run_dir: Path) -> None:
    """A resume continues the same run: every setting as the state recorded it, but `RESUMABLE_CHANGES`."""
    def flat(value, prefix=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    recorded = state.get("settings") or {"train": state.get("train", {})}  # states before settings were kept
    before = flat({key: value for key, value in recorded.items() if key in settings})
    now = flat({key: value for key, value in settings.items() if key in recorded})
    differ = [key for key in sorted(set(before) | set(now)) if not same_setting(before.get(key), now.get(key))]
    allowed = [key for key in differ if key.startswith("train.") and key[6:] in RESUMABLE_CHANGES]

    def listed(keys):
        return "; ".join(f"{key}: {before.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}" for key in keys)

    refused = [key for key in differ if key not in allowed]
    if refused:
        raise CdtsdeError(f"{run_dir}: cannot resume with a changed configuration ({listed(refused)}); only "
                          f"train.{{{', '.join(RESUMABLE_CHANGES)}}} may change")
    noted = [key for key in allowed if key != "train.max_steps" or now.get("train.decay_steps")]
    if noted:
        ramp = (" (the learning rate's linear decay now ends at the new max_steps)"
                if "train.max_steps" in noted else "")
        warnings.warn(f"resuming {run_dir} with {listed(noted)}{ramp}", stacklevel=3)


def check_global_batch(state: dict, global_batch: int, config: TrainConfig, world_size: int, run_dir: Path) -> None:
    """The global batch (per-process batch_size x processes) decides which items each step sees; a resume
    on another number of processes must keep it, with batch_size scaled to match."""
    recorded = state.get("global_batch")
    if recorded is None:  # a state written before the global batch was kept: the batch size it recorded
        before = (state.get("settings") or {"train": state.get("train", {})})["train"]
        devices, nodes = before.get("devices", 1), before.get("num_nodes", 1)
        if not isinstance(devices, int):
            return
        recorded = before.get("batch_size", config.batch_size) * devices * nodes
    if recorded != global_batch:
        hint = (f"; with {world_size} process(es) set train.batch_size: {recorded // world_size}"
                if recorded % world_size == 0 else "")
        raise CdtsdeError(f"{run_dir}: cannot resume with a global batch of {global_batch} (train.batch_size "
                          f"{config.batch_size} x {world_size} process(es)); the run's is {recorded}{hint}")
