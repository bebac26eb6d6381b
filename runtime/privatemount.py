"""Work on a container's or image's filesystem in a throw-away mount namespace.

A forked child unshares its mount namespace (made private), mounts what it
needs, does the work and exits: the mounts die with it, so nothing can be
left mounted on the host, even if the work is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pybuild.errors import ContainerError
from pybuild.linux import mount as _m
from pybuild.linux import syscalls
from pybuild.linux.forking import ChildFailed, run_in_child

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


def in_private_namespace(work: Callable[[], None], scratch: Path | None = None) -> None:
    """Run ``work`` in a forked child with a private mount namespace; re-raise its failure here."""

    def isolated() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        _m.mount(None, "/", None, _m.MS_REC | _m.MS_PRIVATE)
        work()

    try:
        run_in_child(isolated)
    except ChildFailed as exc:
        raise ContainerError(exc.strerror or "helper process failed") from None


def mount_readonly_view(overlay_root: Path, lowers: list[str], target: Path) -> None:
    """Mount layer dirs (paths relative to ``overlay_root``, nearest first) read-only at ``target``."""
    if len(lowers) == 1:
        _m.mount(str(overlay_root / lowers[0]), target, None, _m.MS_BIND)
        _m.mount(None, target, None, _m.MS_BIND | _m.MS_REMOUNT | _m.MS_RDONLY)
    else:
        _m.mount_overlay(overlay_root, lowers, None, None, target, readonly=True)


def attach_container_root(pid: int, target: Path) -> None:
    """Mount the root mount of process ``pid``'s mount namespace (non-recursively) at ``target``.

    Must run in a single-threaded process that owns a private mount
    namespace (``in_private_namespace``'s child): setns(2) into a mount
    namespace is refused to threaded processes.
    """
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        theirs = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(own)
        raise ContainerError("the container stopped while its filesystem was being read") from None
    tree = -1
    try:
        syscalls.setns(theirs, syscalls.CLONE_NEWNS)  # "/" and the cwd are now the container's root
        try:
            tree = _m.open_tree("/")
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNS)
        _m.move_mount(tree, target)
    finally:
        for fd in (own, theirs, tree):
            if fd >= 0:
                os.close(fd)


def export_rootfs(out: BinaryIO, *, running_pid: int | None = None, overlay_root: Path | None = None,
                  lowers: list[str] | None = None) -> None:
    """Write a container's filesystem as a plain tar to ``out`` (``docker export``).

    For a running container the helper joins the container's mount namespace
    and takes a detached copy of its root mount with ``open_tree`` (just that
    mount: /proc, /dev and volumes stay out), then comes back and attaches it
    in its own private namespace. The tree is read live through that mount,
    never through host paths a container process could swap for symlinks
    (the CVE-2018-15664 class); a bind of ``/proc/PID/root`` is refused by
    the kernel anyway, since that mount belongs to another namespace.
    Otherwise its layers are mounted read-only.
    """
    from pybuild.store.compression import Compression
    from pybuild.store.layertar import write_layer

    out.flush()
    out_fd = out.fileno()
    target = Path(tempfile.mkdtemp(prefix="pybuild-export-"))

    def work() -> None:
        if running_pid is not None:
            attach_container_root(running_pid, target)
        else:
            assert overlay_root is not None and lowers is not None
            mount_readonly_view(overlay_root, lowers, target)
        with os.fdopen(os.dup(out_fd), "wb", buffering=1 << 20) as sink:
            write_layer(target, sink, Compression.NONE, live=running_pid is not None)

    try:
        in_private_namespace(work)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(target)


def copy_tree_from_view(overlay_root: Path, lowers: list[str], source: str, dest: Path) -> None:
    """Copy ``source`` (a path inside the layers' merged view) into ``dest``, keeping metadata."""
    from .rootfs import secure_join

    target = Path(tempfile.mkdtemp(prefix="pybuild-view-"))

    def work() -> None:
        mount_readonly_view(overlay_root, lowers, target)
        src = secure_join(str(target), source)
        if os.path.isdir(src) and not os.path.islink(src):
            subprocess.run(["cp", "-a", "--", src + "/.", str(dest) + "/"], check=True, capture_output=True)

    try:
        in_private_namespace(work)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(target)
