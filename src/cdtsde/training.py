"""Training loop: joint training of the denoiser and the mixing field (DESIGN 3).

Built on Lightning Fabric: `accelerator`, `devices`, `num_nodes`, `strategy` (e.g. "ddp") and `precision`
(e.g. "bf16-mixed") choose the hardware with no code change; the default is one CPU process.

Exact resume: every random draw of step k (batch composition, flips, t, noise, dropout, a dataset's own
random crops when num_workers = 0) comes from generators seeded by (seed, k, rank), so a run killed after
step k and resumed from its last checkpoint continues with exactly the batches and draws the
uninterrupted run would have used. (With DataLoader workers, random transforms inside the dataset are
seeded per worker and repeat within a run but not across a resume; the loop's own flips always repeat.) The state file
(weights, optimizer, EMA, step) and the sampling weights are written atomically.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import CdtsdeError
from .io import atomic_path
from .model import TranslationModel, save_pretrained
from .plain import from_plain

STATE_FILE = "state.pt"
LOG_FILE = "metrics.csv"


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    mixer_lr_scale: float = 10.0  # the paper trains the mixer with a 10x learning rate
    weight_decay: float = 0.0
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    flips: bool = True  # paired random horizontal/vertical flips, identical on source and target
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 250
    sample_steps: int = 5
    num_workers: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return from_plain(cls, data, "train")


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A distinct 63-bit seed per (run seed, step, stream), where stream separates ranks and purposes."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729 + 0x5DEECE66D) % (2**63 - 1)


class StepBatchSampler(Sampler):
    """Batches of dataset indices as a pure function of the step: an epoch-wise permutation of the data
    seeded by (seed, epoch), read as a continuous stream of global batches, each split across ranks."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, max_steps: int, rank: int = 0,
                 world_size: int = 1):
        if size < 1:
            raise CdtsdeError("the training dataset is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.max_steps, self.rank, self.world_size = start_step, max_steps, rank, world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(step_seed(self.seed, epoch, 1)))

    def batch(self, step: int) -> list[int]:
        global_batch = self.batch_size * self.world_size
        positions = range(step * global_batch + self.rank * self.batch_size,
                          step * global_batch + (self.rank + 1) * self.batch_size)
        cache: dict[int, torch.Tensor] = {}
        indices = []
        for position in positions:
            epoch = position // self.size
            if epoch not in cache:
                cache[epoch] = self._permutation(epoch)
            indices.append(int(cache[epoch][position % self.size]))
        return indices

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)


def collate(items: list[dict]) -> dict:
    return {
        "source": torch.stack([item["source"] for item in items]),
        "target": torch.stack([item["target"] for item in items]),
        "name": [item["name"] for item in items],
    }


def paired_flips(source: torch.Tensor, target: torch.Tensor, generator: torch.Generator):
    """Flip each item horizontally and/or vertically, identically on both sides."""
    flips = torch.rand(source.shape[0], 2, generator=generator) < 0.5
    for dim, column in ((3, 0), (2, 1)):
        chosen = flips[:, column].to(source.device)
        if chosen.any():
            source = torch.where(chosen.view(-1, 1, 1, 1), source.flip(dim), source)
            target = torch.where(chosen.view(-1, 1, 1, 1), target.flip(dim), target)
    return source, target


class EMA:
    """Exponential moving average of the weights (used for sampling), with the usual warm-up
    decay = min(decay, (1 + step) / (10 + step))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - decay)


def field_statistics(mixing: torch.Tensor, t: torch.Tensor, model: TranslationModel) -> dict[str, float]:
    """Mean of (Lambda - eta_t) and mean spatial spread of Lambda over the items with t < t1."""
    below = t < model.schedule.t1
    if not below.any():
        return {}
    eta = model.schedule.eta_at(t[below], mixing)
    values = mixing[below].detach()
    return {
        "lambda_minus_eta": float((values - eta).mean()),
        "lambda_spread": float(values.flatten(1).std(dim=1).mean()) if values[0].numel() > 1 else 0.0,
    }


def make_optimizer(model: TranslationModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: the denoiser at `lr`, the mixing field at `mixer_lr_scale * lr` (paper)."""
    mixer_ids = {id(p) for p in model.mixer_parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in mixer_ids], "lr_scale": 1.0},
        {"params": [p for p in model.parameters() if id(p) in mixer_ids], "lr_scale": config.mixer_lr_scale},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay)


def _learning_rate(config: TrainConfig, step: int) -> float:
    return config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))


def train(
    model: TranslationModel,
    train_set: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    preview_set: Dataset | None = None,
    progress: bool = True,
    run_config: dict | None = None,
) -> dict:
    """Train `model` for `config.max_steps` steps (in total, counting resumed ones); write checkpoints,
    the loss log and sample grids into `run_dir`. Returns {"losses": [loss per step run now], "step": n}."""
    from lightning.fabric import Fabric
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fabric = Fabric(accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
                    strategy=config.strategy, precision=config.precision)
    fabric.launch()

    optimizer = make_optimizer(model, config)
    ema = EMA(model, config.ema_decay)
    start_step = 0
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.is_file():
            raise CdtsdeError(f"{run_dir}: nothing to resume ({STATE_FILE} missing)")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.model.load_state_dict(state["ema"])
        start_step = state["step"]
    ema.model.to(fabric.device)
    wrapped, optimizer = fabric.setup(model, optimizer)

    sampler = StepBatchSampler(len(train_set), config.batch_size, config.seed, start_step, config.max_steps,
                               fabric.global_rank, fabric.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers, collate_fn=collate,
                        persistent_workers=config.num_workers > 0)
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False, move_to_device=True)

    log_path = run_dir / LOG_FILE
    log_rows = _read_log(log_path, upto=start_step) if resume else []
    if fabric.is_global_zero and run_config is not None:
        import yaml

        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(run_config, sort_keys=False))

    def save_checkpoint(step: int) -> None:
        if fabric.is_global_zero:
            save_pretrained(model, run_dir / "model", state_dict=ema.model.state_dict())
            with atomic_path(state_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "ema": ema.model.state_dict(), "step": step, "train": dataclasses.asdict(config)}, tmp)
            _write_log(log_path, log_rows)
        fabric.barrier()

    losses: list[float] = []
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not (progress and fabric.is_global_zero),
               desc="train", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    batches = iter(loader)
    for step in range(start_step, config.max_steps):
        rank_stream = 2 + fabric.global_rank
        # seeded before the batch is fetched, so that a dataset's own random crops (num_workers = 0),
        # dropout and any other global draw repeat exactly after a resume
        torch.manual_seed(step_seed(config.seed, step, rank_stream))
        batch = next(batches)
        generator = torch.Generator(device=fabric.device).manual_seed(step_seed(config.seed, step, rank_stream + 1000))
        source, target = batch["source"], batch["target"]
        if config.flips:
            source, target = paired_flips(source, target, torch.Generator().manual_seed(step_seed(config.seed, step, rank_stream + 2000)))
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step) * group["lr_scale"]
        out = wrapped(target, source, generator)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise CdtsdeError(f"training diverged at step {step}: loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        if config.grad_clip > 0:
            fabric.clip_gradients(wrapped, optimizer, max_norm=config.grad_clip)
        optimizer.step()
        ema.update(model, step)
        losses.append(loss.item())
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if done % config.log_every == 0 or done == config.max_steps:
            recent = losses[-config.log_every:]
            row = {"step": done, "loss": sum(recent) / len(recent), "lr": _learning_rate(config, step),
                   "seconds": round(time.perf_counter() - started, 3)}
            row.update(field_statistics(out["mixing"], out["t"], model))
            log_rows.append(row)
        if fabric.is_global_zero and preview_set is not None and config.sample_every > 0 and (
            done % config.sample_every == 0 or done == config.max_steps
        ):
            from .visualize import save_preview

            save_preview(ema.model, preview_set, run_dir / "samples" / f"step_{done:07d}.png", steps=config.sample_steps)
        if done % config.checkpoint_every == 0 or done == config.max_steps:
            save_checkpoint(done)
    bar.close()
    return {"losses": losses, "step": start_step + len(losses), "seconds": time.perf_counter() - started}


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)
                if float(row["step"]) <= upto]


def _write_log(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()})
