"""Running out of memory as a named error: an allocation failure inside a training step or a translation
batch is turned into an `OutOfMemory` (a `CdtsdeError`: the CLI prints it and exits with 2) that says which
batch did not fit and which setting to lower, instead of a traceback; and a footprint estimated before the
work can be compared with the memory available."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import CdtsdeError

# how PyTorch's allocators word a failed allocation (CUDA: torch.OutOfMemoryError; the CPU allocator and
# some backends: a RuntimeError)
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "failed to allocate")


class OutOfMemory(CdtsdeError):
    """A batch did not fit in memory; the message names it and what to lower."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in OUT_OF_MEMORY_MESSAGES)


@contextmanager
def named_out_of_memory(what: str, lower: str):
    """Inside: an allocation failure becomes `OutOfMemory("out of memory <what>; lower <lower>")`, raised
    after the failed frame is gone (so that its tensors are freed). Other errors pass unchanged."""
    failure = None
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if failure is not None:
        raise OutOfMemory(f"out of memory {what} ({failure}); lower {lower}")


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`: CUDA's free memory, or the system's MemAvailable
    (/proc/meminfo) for the CPU; None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None
