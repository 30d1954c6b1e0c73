"""Sliding-window processing of images larger than a model's window: an image is cut into overlapping
windows in raster order, a function maps batches of windows to per-window maps, and the maps are blended
back into images of the input's size (as MONAI's `sliding_window_inference`: window, overlap, windows per
batch, Gaussian or linear-ramp weights).

Memory: the blended sums live in a band of one window's height that moves down the image (rows no later
window touches are normalised and written out as soon as the windows above them are done), so beyond the
input and the output themselves only one batch of windows and one band are held; the input can be any (C, H,
W) object whose slices are tensors (read from a file window by window) and the output any array given
(`storage`: a `RowFile` on disk), so that a whole scene is held in neither. The sums are float64, so
that a constant over overlapping windows comes back exactly, and every pixel's weights are positive, so
that every pixel is normalised by a sum that is not zero.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BLENDS = ("gaussian", "linear")
# MONAI's sigma_scale: the Gaussian's standard deviation as a share of the window's side
GAUSSIAN_SIGMA_SCALE = 0.125


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride` along `length`, the last one flush with
    the end (so every window lies inside); one window at 0 when `length <= window`."""
    if stride < 1:
        raise ValueError(f"the stride between windows must be >= 1, got {stride}")
    if length <= window:
        return [0]
    return [*range(0, length - window, stride), length - window]


@dataclass(frozen=True)
class TileGrid:
    """The windows of a `height` x `width` image: squares of side `window` (cut to the image where it is
    smaller), `overlap` pixels shared by neighbours, origins (top, left) in raster order."""

    height: int
    width: int
    window: int
    overlap: int

    def __post_init__(self):
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError(f"tiling needs window >= 1 and 0 <= overlap < window, got window {self.window}, "
                             f"overlap {self.overlap}")

    @property
    def window_shape(self) -> tuple[int, int]:
        return min(self.window, self.height), min(self.window, self.width)

    def origins(self) -> list[tuple[int, int]]:
        stride = self.window - self.overlap
        tops = window_starts(self.height, self.window, stride)
        lefts = window_starts(self.width, self.window, stride)
        return [(top, left) for top in tops for left in lefts]


def axis_weights(length: int, blend: str, overlap: int) -> torch.Tensor:
    """One axis of the blending weights (float64, all > 0): a Gaussian centred on the window (sigma =
    `GAUSSIAN_SIGMA_SCALE` x the side) or a ramp rising linearly over the `overlap` pixels at each end."""
    position = torch.arange(length, dtype=torch.float64)
    if blend == "gaussian":
        sigma = GAUSSIAN_SIGMA_SCALE * length
        return torch.exp(-0.5 * ((position - (length - 1) / 2) / sigma) ** 2)
    if blend == "linear":
        to_edge = torch.minimum(position, length - 1 - position)
        return ((to_edge + 1) / (overlap + 1)).clamp(max=1.0)
    raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")


def blend_weights(height: int, width: int, blend: str, overlap: int) -> torch.Tensor:
    """(height, width) float64 weights of one window: the outer product of the two axes' weights."""
    return axis_weights(height, blend, overlap)[:, None] * axis_weights(width, blend, overlap)[None, :]


class RowFile:
    """A (C, H, W) float32 array in a file, written by rows (`array[:, top:bottom] = values`) and read by
    rows (`array[channels, rows, columns]`, a tensor) with plain file reads and writes, the rows read
    last kept for the next read within them. Not a memory map: the pages a memory map has touched count as
    the process's resident memory until the kernel reclaims them, so a scene's memory map grows it with
    the scene. The file is removed by its folder's owner."""

    def __init__(self, path: Path, shape: tuple[int, int, int]):
        self.path, self.shape = Path(path), tuple(shape)
        self.file = open(self.path, "w+b")
        self.file.truncate(4 * math.prod(self.shape))
        self.kept = (0, 0, None)

    def offset(self, channel: int, row: int) -> int:
        _, height, width = self.shape
        return 4 * (channel * height + row) * width

    def __setitem__(self, index: tuple[slice, slice], values: torch.Tensor) -> None:
        top, bottom, _ = index[1].indices(self.shape[1])
        values = np.asarray(values, dtype=np.float32)
        for channel in range(self.shape[0]):
            os.pwrite(self.file.fileno(), np.ascontiguousarray(values[channel]).tobytes(), self.offset(channel, top))
        self.kept = (0, 0, None)

    def __getitem__(self, index: tuple[slice, slice, slice]) -> torch.Tensor:
        channels, height, width = self.shape
        top, bottom, _ = index[1].indices(height)
        if not (self.kept[0] <= top and bottom <= self.kept[1]):
            length = 4 * (bottom - top) * width
            rows = np.stack([np.frombuffer(os.pread(self.file.fileno(), length, self.offset(channel, top)),
                                           np.float32).reshape(bottom - top, width) for channel in range(channels)])
            self.kept = (top, bottom, torch.from_numpy(rows))
        kept_top = self.kept[0]
        return self.kept[2][index[0], top - kept_top:bottom - kept_top, index[2]]

    def close(self) -> None:
        self.file.close()


class BlendedCanvas:
    """One blended output (C, H, W) built from windows that arrive in raster order (`add`) into `out` (a
    float32 tensor or a `RowFile` of that shape; None: a new tensor); `finish` returns it. Holds the
    weighted sums of a band of `band` rows only."""

    def __init__(self, channels: int, height: int, width: int, band: int, out: torch.Tensor | RowFile | None = None):
        self.out = torch.empty(channels, height, width, dtype=torch.float32) if out is None else out
        self.top = 0
        self.sums = torch.zeros(channels, band, width, dtype=torch.float64)
        self.weights = torch.zeros(1, band, width, dtype=torch.float64)

    def add(self, value: torch.Tensor, weights: torch.Tensor, top: int, left: int) -> None:
        """Add a (C, h, w) window with its (h, w) weights at (top, left); no later window may start higher."""
        if top < self.top:
            raise ValueError(f"windows must arrive in raster order: row {top} after row {self.top}")
        self.flush(top)
        h, w = weights.shape
        row = top - self.top
        self.sums[:, row:row + h, left:left + w] += value.to(torch.float64) * weights
        self.weights[:, row:row + h, left:left + w] += weights

    def flush(self, until: int) -> None:
        """Normalise the rows above `until` (every window touching them has been added) into the output."""
        rows = until - self.top
        if rows <= 0:
            return
        self.out[:, self.top:until] = (self.sums[:, :rows] / self.weights[:, :rows]).to(torch.float32)
        for buffer in (self.sums, self.weights):
            buffer[:, :-rows] = buffer[:, rows:].clone()
            buffer[:, -rows:] = 0
        self.top = until

    def finish(self) -> torch.Tensor:
        self.flush(self.out.shape[1])
        return self.out


WindowFunction = Callable[[torch.Tensor, list[tuple[int, int]]], dict[str, torch.Tensor]]
# where a blended map is written: (name, channels) -> a (channels, H, W) float32 tensor or `RowFile`
Storage = Callable[[str, int], torch.Tensor | RowFile]


def tiled(function: WindowFunction, image, window: int, overlap: int, batch: int = 8,
          blend: str = "gaussian", on_batch: Callable[[int], None] | None = None,
          storage: Storage | None = None) -> dict[str, torch.Tensor | RowFile]:
    """Apply `function(windows, origins) -> {name: (N, C_name, h, w)}` to `image` (C, H, W) window batch by
    window batch (at most `batch` windows of `window` pixels overlapping by `overlap`; `origins` their
    (top, left)) and blend each named map back into a (C_name, H, W) float32 tensor on the CPU or the
    `RowFile` that `storage(name, C_name)` gives (default: a new tensor). `image` is a tensor or any object
    with a `shape` whose slices `image[:, rows, columns]` are tensors (a file read window by window).
    `on_batch(n)` is told how many windows each batch held (a progress bar)."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if batch < 1:
        raise ValueError(f"the window batch must be >= 1, got {batch}")
    height, width = image.shape[-2:]
    grid = TileGrid(height, width, window, overlap)
    h, w = grid.window_shape
    weights = blend_weights(h, w, blend, overlap)
    origins = grid.origins()
    canvases: dict[str, BlendedCanvas] = {}
    for start in range(0, len(origins), batch):
        chosen = origins[start:start + batch]
        windows = torch.stack([image[:, top:top + h, left:left + w] for top, left in chosen])
        maps = function(windows, chosen)
        for name, values in maps.items():
            values = values.detach().to("cpu")
            canvas = canvases.get(name)
            if canvas is None:
                out = storage(name, values.shape[1]) if storage is not None else None
                canvas = canvases[name] = BlendedCanvas(values.shape[1], height, width, h, out)
            for value, (top, left) in zip(values, chosen):
                canvas.add(value, weights, top, left)
        if on_batch is not None:
            on_batch(len(chosen))
    return {name: canvas.finish() for name, canvas in canvases.items()}


def window_count(height: int, width: int, window: int, overlap: int) -> int:
    """How many windows `tiled` cuts a `height` x `width` image into."""
    stride = window - overlap
    return math.prod(len(window_starts(length, window, stride)) for length in (height, width))
