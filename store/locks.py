"""File locks (flock) that order concurrent pybuild processes on one root.

flock locks die with their process, so a ``kill -9`` never leaves a lock
held; the same property lets ``owner`` files mark work in progress: a file
whose lock can be taken belongs to a dead process and its work is garbage.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(path: Path, shared: bool = False) -> int | None:
    """Take the lock without waiting; return the fd holding it, or None if busy."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def create_locked(path: Path) -> int:
    """Create ``path`` already locked: another process never sees it unlocked.

    The file is made and locked under a private name, then renamed into place
    (a rename keeps the lock), so a cleaner that finds ``path`` unlocked knows
    its owner is gone.
    """
    staging = path.with_name(f".new-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(staging, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
    return fd


class Ownership:
    """A held exclusive lock on an owner file: proof that its work is alive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = create_locked(path)

    def release(self, remove: bool = True) -> None:
        if self._fd < 0:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1


def is_abandoned(path: Path) -> bool:
    """True when the owner file's lock is free: its process is gone."""
    fd = try_lock(path)
    if fd is None:
        return not path.exists()
    os.close(fd)
    return True
