"""One command at a time per folder: `cdtsde train` holds its run folder, `cdtsde translate` its output
folder, so that two jobs never mix their files in one place.

The lock is an advisory `fcntl.flock` on a hidden file in the folder (LOCK_FILE) naming the holder (pid and
command). The kernel releases a flock when its process ends, however it ends (kill -9 included), so a lock
is never left stale; the file itself is removed on a normal exit. Where `fcntl` is missing (Windows) the
file is created exclusively instead, and one whose pid no longer runs is taken over as stale.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import CdtsdeError

LOCK_FILE = ".cdtsde.lock"


class FolderLockedError(CdtsdeError):
    """Another cdtsde command holds the folder."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "a process that has not written its pid yet"


def _locked_error(folder: Path, path: Path) -> FolderLockedError:
    return FolderLockedError(f"{folder}: in use by another cdtsde command (pid {_holder(path)}); wait until it "
                             f"ends or choose another folder")


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _acquire_flock(folder: Path, path: Path, holder: str) -> Callable[[], None]:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked_error(folder, path) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        # the holder removed the file between our open and our lock: lock the file that is there now
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, holder.encode())

    def release() -> None:
        # removed while still held, so that no process locks a file that is about to vanish
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)

    return release


def _acquire_exclusive_file(folder: Path, path: Path, holder: str) -> Callable[[], None]:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            pid = _holder(path).split(" ", 1)[0]
            if pid.isdigit() and not _pid_runs(int(pid)):
                path.unlink(missing_ok=True)  # stale: its process ended without removing it
                continue
            raise _locked_error(folder, path) from None
    else:
        raise _locked_error(folder, path)
    os.write(fd, holder.encode())
    os.close(fd)
    return lambda: path.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold `folder` (created if needed, and removed again if it stays empty) for the duration of the block; raises FolderLockedError naming the
    folder and the holder's pid if another command holds it. `command` names this one to the next."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CdtsdeError(f"{folder}: exists and is not a directory")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CdtsdeError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from exc
    try:
        import fcntl  # noqa: F401
    except ImportError:
        acquire = _acquire_exclusive_file
    else:
        acquire = _acquire_flock
    path = folder / LOCK_FILE
    try:
        release = acquire(folder, path, f"{os.getpid()} ({command})\n")
    except OSError as exc:  # a read-only folder: the command's own checks name what it cannot write
        print(f"warning: {folder}: cannot lock the folder ({exc.strerror or exc}); not protected against a "
              f"second command", file=sys.stderr)
        release = None
    try:
        yield folder
    finally:
        if release is not None:
            release()
        if created:  # a command that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
