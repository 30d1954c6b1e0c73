"""The training loop of every method, on Lightning Fabric; it knows methods only through their protocol
(cdtsde.methods.base): the optimisers they ask for, updated one phase after another every step (a GAN's
discriminator then its generator), and the loss of each phase.

`accelerator`, `devices`, `num_nodes`, `strategy` (e.g. "ddp"; "ddp_find_unused_parameters_true" for
methods whose phases use different networks) and `precision` (e.g. "bf16-mixed") choose the hardware with
no code change; the default is one CPU process.

Exact resume: every random draw of step k (batch composition, flips, the method's t and noise, dropout,
a dataset's own random crops when num_workers = 0) comes from generators seeded by (seed, k, rank), so a
run killed after step k and resumed from its last checkpoint continues with exactly the batches and
draws the uninterrupted run would have used. (With DataLoader workers, random transforms inside the
dataset are seeded per worker and repeat within a run but not across a resume; the loop's own flips
always repeat.) The state file (weights, optimisers, EMA, step), the sampling weights and the log are
written atomically.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path
from ..errors import CdtsdeError
from ..methods import Method
from ..settings import to_plain
from .batches import StepBatchSampler, collate, random_flips, step_seed, stream_sizes
from .checkpoint import save_pretrained
from .logs import make_loggers

STATE_FILE = "state.pt"
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
    num_workers: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"

    def __post_init__(self):
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


def load_state(path: Path, method: Method) -> dict:
    if not path.is_file():
        raise CdtsdeError(f"{path.parent}: nothing to resume ({STATE_FILE} missing)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CdtsdeError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from exc
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
) -> dict:
    """Train `method` for `config.max_steps` steps (in total, counting resumed ones); write checkpoints,
    the log and preview grids into `run_dir`. Returns {"losses": [summed loss per step run now],
    "phase_losses": [{phase: loss} per step], "step": n, "seconds": s}."""
    from lightning.fabric import Fabric
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    state = load_state(state_path, method) if resume else None
    start_step = state["step"] if state else 0
    loggers = make_loggers(run_dir, start_step)
    fabric = Fabric(accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
                    strategy=config.strategy, precision=config.precision, loggers=loggers)
    fabric.launch()

    optimizers = method.optimizers(config)
    ema = EMA(method, config.ema_decay)
    if state:
        method.load_state_dict(state["model"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        ema.model.load_state_dict(state["ema"])
    ema.model.to(fabric.device)
    if optimizers:
        wrapped, *set_up = fabric.setup(method, *optimizers.values())
        optimizers = dict(zip(optimizers, set_up))
    else:
        wrapped = fabric.setup_module(method)
    if fabric.is_global_zero and run_config is not None:
        import yaml

        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(run_config, sort_keys=False))

    def save_checkpoint(step: int) -> None:
        if fabric.is_global_zero:
            save_pretrained(method, run_dir / "model", state_dict=ema.model.state_dict())
            with atomic_path(state_path) as tmp:
                torch.save({"method": method.name, "model": method.state_dict(), "ema": ema.model.state_dict(),
                            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                            "step": step, "train": to_plain(config)}, tmp)
            for logger in fabric.loggers:
                logger.save()
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
    interval: dict[str, list[float]] = {}
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not (progress and fabric.is_global_zero),
               desc=f"train {method.name}", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    batches = iter(loader)
    for step in range(start_step, config.max_steps):
        rank_stream = 2 + fabric.global_rank
        # seeded before the batch is fetched, so that a dataset's own random crops (num_workers = 0),
        # dropout and any other global draw repeat exactly after a resume
        torch.manual_seed(step_seed(config.seed, step, rank_stream))
        batch = next(batches)
        generator = torch.Generator(device=fabric.device).manual_seed(step_seed(config.seed, step, rank_stream + 1000))
        if config.flips:
            batch = random_flips(batch, torch.Generator().manual_seed(step_seed(config.seed, step, rank_stream + 2000)),
                                 paired)
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
            losses[phase] = loss.item()
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
            row.update(lr=learning_rate(config, step), seconds=round(time.perf_counter() - started, 3))
            fabric.log_dict(row, step=done)
            interval = {}
        if fabric.is_global_zero and preview_set is not None and config.sample_every > 0 and (
            done % config.sample_every == 0 or done == config.max_steps
        ):
            from ..visualize import save_preview

            save_preview(ema.model, preview_set, run_dir / "samples" / f"step_{done:07d}.png")
        if done % config.checkpoint_every == 0 or done == config.max_steps:
            save_checkpoint(done)
    bar.close()
    for logger in fabric.loggers:
        logger.finalize("success")
    return {"losses": [sum(losses.values()) for losses in phase_losses], "phase_losses": phase_losses,
            "step": start_step + len(phase_losses), "seconds": time.perf_counter() - started}

