"""Atomic file writes: a reader never sees a half-written file, and a kill leaves the previous version."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# what follows ".tmp" in a temporary's name: nothing, or the suffix a writer needs to see (nibabel picks
# gzip from the file name)
TEMPORARY_SUFFIXES = ("", ".nii", ".nii.gz")


def process_umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, replace: bool = True, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (hidden, `.<name>.<random>.tmp<suffix>`, `suffix` one of
    TEMPORARY_SUFFIXES); on success it becomes `path` in one step, so a reader never sees a half-written file
    and a kill leaves the previous version intact. The file gets the permissions of a file created by the
    process (0666 less the umask: 0644 under umask 022), not tempfile's 0600. With `replace` False a `path`
    that exists by then (created meanwhile by someone else) is left alone and FileExistsError raised. The
    temporary is removed on every exit path (a failed write included)."""
    if suffix not in TEMPORARY_SUFFIXES:
        raise ValueError(f"suffix must be one of {TEMPORARY_SUFFIXES}, got {suffix!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~process_umask())
        if replace:
            os.replace(tmp_path, path)
        else:
            create_exclusively(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def create_exclusively(source: Path, path: Path) -> None:
    """Give the file `source` the name `path` unless `path` exists: one step (a hard link, which fails on an
    existing name) where the file system has hard links, else a check just before the rename."""
    try:
        os.link(source, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network file systems)
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists already", str(path)) from None
        os.replace(source, path)


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and write (then delete) a file in it: raises OSError where the work could
    not save its results (read-only, full, a file in the way), before the work starts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def remove_stale_temporaries(folder: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Delete the temporaries `atomic_path` leaves in `folder` when a process is killed mid-write
    (`.<name>.<random>.tmp<suffix>`), all of them or those of the files `names`; returns what was removed.
    Only for files one process writes at a time."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = tuple(f".{name}." for name in names) if names is not None else (".",)
    temporary_ends = tuple(f".tmp{suffix}" for suffix in TEMPORARY_SUFFIXES)
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(prefixes) and p.name.endswith(temporary_ends)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
