"""Atomic file writes: a reader never sees a half-written file, and a kill leaves the previous version."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path` in one step, so a reader
    never sees a half-written file and a kill leaves the previous version intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and write (then delete) a file in it: raises OSError where the work could
    not save its results (read-only, full, a file in the way), before the work starts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def remove_stale_temporaries(folder: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Delete the temporaries `atomic_path` leaves in `folder` when a process is killed mid-write
    (`.<name>.<random>.tmp`), all of them or those of the files `names`; returns what was removed. Only
    for files one process writes at a time."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = tuple(f".{name}." for name in names) if names is not None else (".",)
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(prefixes) and p.name.endswith(".tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
