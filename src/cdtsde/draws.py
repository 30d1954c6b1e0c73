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

`SliceDraws` is the form for the slices of a volume (cdtsde.translate's volume noise): each item is a slice
at its position along the volume, and its normal draws mix the draws of the slices around it (`slice_kernel`),
so that neighbouring slices of a translated volume see correlated, shared or independent noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

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


def slice_kernel(correlation: float) -> tuple[float, ...]:
    """Weights w_-L..w_L of a Gaussian kernel (std s, cut at L = ceil(5 s)) with unit sum of squares, whose
    width makes sum_j w_j w_(j+1) = `correlation` (to 1e-9, by bisection over s; the sum grows with s). Mixing
    independent N(0, I) draws z_k of the slices k as x_i = sum_j w_j z_(i+j) keeps each x_i exactly N(0, I)
    (a unit-norm combination of independent standard normals) and correlates slices d apart by
    sum_j w_j w_(j+d), about correlation^(d^2): a squared-exponential Gaussian process along the slices."""
    if not 0 < correlation < 1:
        raise ValueError(f"the correlation of adjacent slices must lie in (0, 1), got {correlation}")

    def weights(width: float) -> list[float]:
        reach = math.ceil(5 * width)
        raw = [math.exp(-offset * offset / (2 * width * width)) for offset in range(-reach, reach + 1)]
        norm = math.sqrt(sum(w * w for w in raw))
        return [w / norm for w in raw]

    def adjacent(width: float) -> float:
        w = weights(width)
        return sum(a * b for a, b in zip(w, w[1:]))

    low, high = 1e-3, 1.0
    while adjacent(high) < correlation:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if adjacent(middle) < correlation else (low, middle)
    return tuple(weights(high))


class SliceDraws(ItemGenerators):
    """Draws for items that are slices of a volume: item i is the slice at position `slices[i]`, drawing
    stream `streams[i]` (a sample, a window of the slice). The slice at position p draws z(p, stream) from
    its own generator, seeded by (seed, p, purpose, stream): the same in any batch, so a volume's draws do
    not depend on how its slices are batched. Item i's standard normal draws mix the slices around it,
    x_i = sum_j kernel[j] z(slices[i] + j - L, streams[i]) (`slice_kernel`; (1.0,): its own draws, exactly
    as `ItemGenerators(seed, p, purpose, streams)`), so positions beyond the volume's ends are drawn like any
    other. Its other draws (uniform, integers, `item(i)`: Pix2Pix's dropout masks) come from each item's own
    generator of the same seed, unmixed: equal for items at one position, independent otherwise."""

    def __init__(self, seed: int, purpose: int, slices: Sequence[int], streams: Sequence[int],
                 kernel: Sequence[float] = (1.0,), device="cpu"):
        if len(slices) != len(streams) or len(kernel) % 2 != 1:
            raise ValueError(f"one stream per slice ({len(slices)} slices, {len(streams)} streams) and a kernel "
                             f"of odd length (got {len(kernel)}) are needed")
        self.device = torch.device(device)
        self.seed, self.purpose, self.kernel = seed, purpose, tuple(kernel)
        self.items = list(zip(slices, streams))
        self.generators = [self.generator(position, stream) for position, stream in self.items]
        reach = len(self.kernel) // 2
        self.neighbours = [[(position + offset, stream) for offset in range(-reach, reach + 1)]
                           for position, stream in self.items]
        self.sources = {key: self.generator(*key) for row in self.neighbours for key in row}

    def generator(self, position: int, stream: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(mixed_seed(self.seed, position, self.purpose, stream))

    def normal(self, shape: tuple[int, ...], device=None, dtype=None) -> torch.Tensor:
        if not shape or shape[0] != len(self):
            raise ValueError(f"per-item draws need the batch ({len(self)} items) as the first dimension, "
                             f"got shape {tuple(shape)}")
        drawn = {key: torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype)
                 for key, g in self.sources.items()}  # once per slice and call: shared by the items mixing it
        if len(self.kernel) == 1:
            return torch.stack([drawn[row[0]] for row in self.neighbours])
        return torch.stack([sum(w * drawn[key] for w, key in zip(self.kernel, row)) for row in self.neighbours])


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
    if isinstance(generator, SliceDraws):
        return generator.normal(tuple(shape), device, dtype)

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
