"""Random draws per item of a batch, so that a training run does not depend on how its global batch is
split across processes.

Under DDP each rank computes its share of the global batch. If every rank drew its items' diffusion
times, noise and flips from one generator per rank, the same global batch would see other draws with 2
ranks than with 1, and the loss curve would only agree in distribution. Here every item has its own
generator, seeded by (run seed, step, purpose, the item's position in the step's global batch): item 5
of step 100 draws the same t and noise whether it is the sixth item of one process or the second item
of rank 1 of four. With the gradients averaged over ranks (DDP), a run on N processes then follows a
single process with the same global batch to floating-point tolerance.

`normal`, `uniform` and `integers` draw with a plain `torch.Generator` (or None: the global generator),
as torch does, or with `ItemGenerators`: then the first dimension is the batch and row i comes from item
i's generator. Methods draw their training randomness through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

MASK64 = 2**64 - 1


def mixed_seed(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix64 over each in turn): distinct tuples give
    unrelated seeds, unlike a linear combination, whose collisions a long run could reach."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state + (value & MASK64) + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        state = z ^ (z >> 31)
    return state >> 1


class ItemGenerators:
    """One generator per item of a batch, for the items at `positions` of a step's global batch."""

    def __init__(self, seed: int, step: int, purpose: int, positions: Iterable[int], device="cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(mixed_seed(seed, step, purpose, position))
                           for position in positions]

    def __len__(self) -> int:
        return len(self.generators)

    def item(self, index: int) -> torch.Generator:
        return self.generators[index]


Draws = torch.Generator | ItemGenerators | None


def item_generator(generator: Draws, index: int) -> torch.Generator | None:
    """The generator item `index` of a batch draws from: its own, or the batch's one generator."""
    return generator.item(index) if isinstance(generator, ItemGenerators) else generator


def per_item(draw, shape: tuple[int, ...], generator: ItemGenerators) -> torch.Tensor:
    if not shape or shape[0] != len(generator):
        raise ValueError(f"per-item draws need the batch ({len(generator)} items) as the first dimension, "
                         f"got shape {tuple(shape)}")
    return torch.stack([draw(tuple(shape[1:]), g) for g in generator.generators])


def normal(shape, generator: Draws, device=None, dtype=None) -> torch.Tensor:
    """Standard normal draws of `shape`."""
    def draw(size, g):
        return torch.randn(size, generator=g, device=device, dtype=dtype)

    return per_item(draw, tuple(shape), generator) if isinstance(generator, ItemGenerators) else draw(shape, generator)


def uniform(shape, generator: Draws, device=None, dtype=None) -> torch.Tensor:
    """Uniform draws on [0, 1) of `shape`."""
    def draw(size, g):
        return torch.rand(size, generator=g, device=device, dtype=dtype)

    return per_item(draw, tuple(shape), generator) if isinstance(generator, ItemGenerators) else draw(shape, generator)


def integers(low: int, high: int, shape, generator: Draws, device=None) -> torch.Tensor:
    """Integers uniform in {low, ..., high - 1} of `shape` (int64)."""
    def draw(size, g):
        return torch.randint(low, high, size, generator=g, device=device)

    return per_item(draw, tuple(shape), generator) if isinstance(generator, ItemGenerators) else draw(shape, generator)
