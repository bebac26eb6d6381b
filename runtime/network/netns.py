"""Named network namespaces: an nsfs bind mount at ``/run/pybuild/netns/<container-id>`` (``ip netns add``).

The namespace is made before the container exists, so the host can configure
it completely (veth, address, route) and the container's init only joins it
(setns). The bind mount keeps it alive between those steps and names it for
teardown after a crash; ``/run`` is a tmpfs, so a reboot clears them all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pybuild.errors import MountError, NetworkError
from pybuild.linux import mount as _m
from pybuild.linux import syscalls

NETNS_DIR = Path("/run/pybuild/netns")

T = TypeVar("T")


def path_for(container_id: str) -> Path:
    from pybuild.linux import userns

    if userns.rootless():  # /run is root's; the user's namespace keeps its own under XDG_RUNTIME_DIR
        return userns.runtime_dir() / "netns" / container_id
    return NETNS_DIR / container_id


def create(path: Path) -> None:
    """A new network namespace with ``lo`` up, bind-mounted at ``path`` (which must not exist)."""
    path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    except FileExistsError:
        raise NetworkError(f"network namespace {path} already exists") from None

    def body() -> None:
        # unshare(CLONE_NEWNET) moves only this thread; it ends with the thread,
        # the bind mount is what keeps the namespace.
        syscalls.unshare(syscalls.CLONE_NEWNET)
        _m.mount("/proc/thread-self/ns/net", path, None, _m.MS_BIND)
        syscalls.link_up("lo")

    try:
        in_thread(body)
    except Exception as exc:
        remove(path)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NetworkError(f"cannot create a network namespace: {reason}") from None
    except BaseException:
        remove(path)
        raise


def in_thread(body: Callable[[], T]) -> T:
    """``body()`` in a thread of its own, its result or exception handed back.

    For namespace changes that apply to the calling thread only (unshare,
    setns): they end with that thread and never touch the caller's.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(body())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="pybuild-ns")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return result[0]


def remove(path: Path) -> None:
    """Unmount and delete a namespace made by :func:`create`; a missing one is fine."""
    with contextlib.suppress(MountError):
        _m.umount(path, _m.MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise

