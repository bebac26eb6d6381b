"""Mounting: thin ctypes wrappers over mount(2)/umount2(2) and the overlay option builder.

Layout (which directories make up a layer chain) lives in ``layers``; this
module only knows how to hand a chain to the kernel. The option string of an
overlay mount must fit in one page; when absolute paths would not fit, the
mount is done from a child process whose working directory is ``overlay2/``
so the short ``l/<id>`` names can be passed relatively, as moby does.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from pybuild.errors import MountError

from .forking import ChildFailed, run_in_child
from .libc import libc as _libc

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MS_SYNCHRONOUS = 0x10
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_UNBINDABLE = 1 << 17
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MNT_DETACH = 0x2
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None,
          flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        err = ctypes.get_errno()
        raise MountError(f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}",
                         _mount_hint(err, data))


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL and not is_mounted(target):
            return
        raise MountError(f"unmount {target}: {os.strerror(err)}")


def _mount_hint(err: int, data: str | None) -> str | None:
    if err == errno.EPERM:
        return "mounting needs root (CAP_SYS_ADMIN)"
    if err == errno.EINVAL and data and len(data) >= PAGE_SIZE:
        return "overlay option string longer than a page"
    if err == errno.ENOENT:
        return "a layer directory is missing: run 'pybuild system check --repair'"
    return None


def mountinfo_targets() -> list[str]:
    """Mount points of this mount namespace, decoded from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            field = line.split(b" ", 5)[4]
            out.append(os.fsdecode(field).encode().decode("unicode_escape")
                       if b"\\" in field else os.fsdecode(field))
    return out


def is_mounted(target: str | os.PathLike[str]) -> bool:
    target = os.path.realpath(target)
    return target in mountinfo_targets()


def mounts_under(prefix: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``prefix``, deepest first (the order to unmount them)."""
    prefix = os.path.realpath(prefix).rstrip("/")
    found = [t for t in mountinfo_targets() if t == prefix or t.startswith(prefix + "/")]
    return sorted(set(found), key=len, reverse=True)


def overlay_options(lowers: Sequence[str], upper: str | None, work: str | None) -> str:
    opts = "lowerdir=" + ":".join(lowers)
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    # No redirects or metacopy: a renamed directory must be copied up whole so
    # the upper dir alone is a complete changeset that can be tarred as a layer.
    from pybuild.linux import userns

    if userns.rootless():
        # In a user namespace overlay keeps its marks in user.overlay.* (Linux 5.11); userxattr
        # implies redirect_dir=nofollow (none made, none followed) and refuses an explicit "off".
        return opts + ",metacopy=off,index=off,userxattr"
    return opts + ",redirect_dir=off,metacopy=off,index=off"


def mount_overlay(overlay_root: Path, lowers: Sequence[str], upper: str | None,
                  work: str | None, target: Path | str, readonly: bool = False) -> None:
    """Mount an overlay whose lower/upper/work paths are given relative to ``overlay_root``.

    ``lowers`` are nearest first, e.g. ``["l/ABC", "l/DEF"]``. Where the
    store uses fuse-overlayfs (:mod:`fuseoverlay`), it serves the mount.
    """
    from . import fuseoverlay

    if fuseoverlay.program() is not None:
        fuseoverlay.mount([str(overlay_root / p) for p in lowers],
                          None if upper is None else str(overlay_root / upper),
                          None if work is None else str(overlay_root / work), target, readonly=readonly)
        return
    flags = MS_RDONLY if readonly else 0
    absolute = overlay_options([str(overlay_root / p) for p in lowers],
                               None if upper is None else str(overlay_root / upper),
                               None if work is None else str(overlay_root / work))
    if len(absolute) < PAGE_SIZE:
        mount("overlay", target, "overlay", flags, absolute)
        return
    relative = overlay_options(lowers, upper, work)
    if len(relative) >= PAGE_SIZE:
        raise MountError(f"overlay option string for {len(lowers)} layers is {len(relative)} bytes",
                         "longer than a page even with short links")
    _mount_from(overlay_root, "overlay", target, "overlay", flags, relative)


def _mount_from(cwd: Path, source: str, target: Path | str, fstype: str, flags: int, data: str) -> None:
    """mount(2) in a child whose cwd is ``cwd`` (the parent's cwd is shared state)."""
    target = Path(target).absolute()

    def work() -> None:
        os.chdir(cwd)
        if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
            err = ctypes.get_errno() or errno.EIO
            raise OSError(err, os.strerror(err))

    try:
        run_in_child(work)
    except ChildFailed as exc:
        err = exc.errno or errno.EIO
        raise MountError(f"mount overlay on {target}: {exc.strerror}", _mount_hint(err, data)) from None


# ---- the new mount API (kernel >= 5.2): detached mounts ---------------------------------------------

# open_tree and move_mount have the same numbers on every architecture (asm-generic, since 5.2).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, dir_fd: int = -100) -> int:
    """A file descriptor of a detached copy of the mount at ``path`` (just that mount unless AT_RECURSIVE).

    The copy keeps its content live (it is the same filesystem) and belongs
    to no namespace until :func:`move_mount` attaches it; closing the fd
    without attaching it unmounts it.
    """
    fd = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                       ctypes.c_uint(flags))
    if fd < 0:
        err = ctypes.get_errno()
        hint = "the kernel is older than 5.2" if err == errno.ENOSYS else None
        raise MountError(f"open_tree {path}: {os.strerror(err)}", hint)
    return int(fd)


def move_mount(tree_fd: int, target: str | os.PathLike[str]) -> None:
    """Attach a detached mount (from :func:`open_tree`) at ``target`` in this mount namespace."""
    result = _libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(tree_fd), ctypes.c_char_p(b""),
                           ctypes.c_int(-100), ctypes.c_char_p(os.fsencode(target)),
                           ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    if result != 0:
        err = ctypes.get_errno()
        raise MountError(f"move_mount to {target}: {os.strerror(err)}")


# ---- mount_setattr (kernel >= 5.12): attributes of a whole mount tree at once ----------------------

_SYS_MOUNT_SETATTR = 442  # asm-generic, the same on every architecture
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str | os.PathLike[str], attr_set: int, attr_clr: int = 0, *,
                  recursive: bool = True) -> None:
    """Set (and clear) mount attributes on the mount at ``path`` and, with ``recursive``, every mount below it.

    Unlike a ``MS_REMOUNT|MS_BIND|MS_REC`` remount, which changes only the top
    mount, this reaches every submount in one call. Raises OSError with the
    errno (ENOSYS on kernels before 5.12).
    """
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(-100),
                           ctypes.c_char_p(os.fsencode(path)), ctypes.c_uint(flags),
                           ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(path))
