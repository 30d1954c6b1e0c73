"""Batches as a pure function of the training step (exact resume), for every kind of training data: paired
datasets, and the unpaired and target-only views of them (`cdtsde.data.views`), known here only by their
`stream_sizes`.

`StepBatchSampler` reads each of a dataset's index streams (`stream_sizes`: one for paired and
target-only data, two for unpaired: index pairs (i, j)) as an epoch-wise permutation seeded by
(seed, stream, epoch).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from ..draws import Draws, uniform
from ..errors import CdtsdeError


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A distinct 63-bit seed per (run seed, step, stream), where stream separates ranks and purposes."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729 + 0x5DEECE66D) % (2**63 - 1)


def stream_sizes(dataset: Dataset) -> tuple[int, ...]:
    return tuple(getattr(dataset, "stream_sizes", (len(dataset),)))


class StepBatchSampler(Sampler):
    """Batches of dataset indices as a pure function of the step: each index stream is an epoch-wise
    permutation seeded by (seed, stream, epoch), read as a continuous stream of global batches, each split
    across ranks. With one stream the indices are ints, with several they are tuples."""

    def __init__(self, sizes: int | tuple[int, ...], batch_size: int, seed: int, start_step: int, max_steps: int,
                 rank: int = 0, world_size: int = 1):
        self.sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
        if min(self.sizes) < 1:
            raise CdtsdeError("the training dataset is empty")
        self.batch_size, self.seed = batch_size, seed
        self.start_step, self.max_steps, self.rank, self.world_size = start_step, max_steps, rank, world_size

    def _permutation(self, stream: int, epoch: int) -> torch.Tensor:
        # stream 0 keeps the seeds of the single-stream sampler, so paired runs are unchanged
        seed = step_seed(self.seed, epoch, 1) if stream == 0 else step_seed(self.seed + stream * 7_777, epoch, 1)
        return torch.randperm(self.sizes[stream], generator=torch.Generator().manual_seed(seed))

    def _stream(self, stream: int, step: int) -> list[int]:
        size, global_batch = self.sizes[stream], self.batch_size * self.world_size
        first = step * global_batch + self.rank * self.batch_size
        cache: dict[int, torch.Tensor] = {}
        indices = []
        for position in range(first, first + self.batch_size):
            epoch = position // size
            if epoch not in cache:
                cache[epoch] = self._permutation(stream, epoch)
            indices.append(int(cache[epoch][position % size]))
        return indices

    def batch(self, step: int) -> list:
        streams = [self._stream(stream, step) for stream in range(len(self.sizes))]
        return streams[0] if len(streams) == 1 else list(zip(*streams))

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)


def collate(items: list[dict]) -> dict:
    """Tensors stacked per key, other values (names) as lists."""
    return {key: torch.stack([item[key] for item in items]) if torch.is_tensor(items[0][key])
            else [item[key] for item in items] for key in items[0]}


def random_flips(batch: dict, generator: Draws, paired: bool) -> dict:
    """Flip each item horizontally and/or vertically: identically on every image of a paired item,
    independently per image for unpaired data (`generator`: one for the batch, or one per item)."""
    keys = [key for key, value in batch.items() if torch.is_tensor(value) and value.ndim == 4]
    groups = [keys] if paired else [[key] for key in keys]
    batch = dict(batch)
    for group in groups:
        size = batch[group[0]].shape[0]
        flips = uniform((size, 2), generator) < 0.5
        for dim, column in ((3, 0), (2, 1)):
            chosen = flips[:, column].to(batch[group[0]].device)
            if chosen.any():
                for key in group:
                    batch[key] = torch.where(chosen.view(-1, 1, 1, 1), batch[key].flip(dim), batch[key])
    return batch
