"""fuse-overlayfs: the overlay a rootless store uses where the kernel refuses a native one.

Native overlayfs in a user namespace needs Linux >= 5.11 and an upper dir on
a filesystem that takes it (never overlayfs itself: a store inside a container
whose root is an overlay). There podman and buildah run the Debian package's
``fuse-overlayfs`` as their "mount program", and so does pybuild.

How a mount is made, so that nothing outlives its users, whatever kills them:

* This process opens ``/dev/fuse`` and makes the superblock itself with the
  new mount API (``fsopen("fuse")``, ``fsconfig``, ``fsmount``), which gives a
  *detached* mount: an fd, in no mount namespace yet. The caller attaches it
  (``move_mount``) in its own namespace (a build's private one) or hands it to
  a container's init, which attaches it in the container's.
* The daemon gets the ``/dev/fuse`` fd as ``/dev/fd/N`` (libfuse's "already
  mounted" form) and runs in the pause process's mount namespace, where no
  fuse mount is ever attached. Had it run in the namespace that holds the
  mount, its membership would keep that namespace, and so the mount and
  itself, alive forever once the build was killed.
* When the last namespace holding the mount goes (or it is unmounted), the
  kernel ends the fuse connection, and the daemon reads ENODEV and exits.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence

from pybuild.errors import MountError

from .libc import libc as _libc

PROGRAM = "fuse-overlayfs"

# asm-generic numbers, the same on every architecture (kernel >= 5.2)
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC = 0x1
_FSMOUNT_CLOEXEC = 0x1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_MOUNT_ATTR_RDONLY = 0x1

_program: str | None = None  # the mount program this process's store uses; None: native overlay


def use(program: str | None) -> None:
    """Mount overlays with ``program`` (a path to fuse-overlayfs) from now on; None: natively."""
    global _program
    _program = program


def program() -> str | None:
    """The mount program in use, or None for native overlay."""
    return _program


def find() -> str | None:
    """fuse-overlayfs on PATH (or its usual place), if installed."""
    return shutil.which(PROGRAM) or (f"/usr/bin/{PROGRAM}" if os.access(f"/usr/bin/{PROGRAM}", os.X_OK) else None)


def usable() -> str | None:
    """Why fuse-overlayfs cannot be used here (what to install or configure), or None when it can."""
    if find() is None:
        return "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return (f"/dev/fuse cannot be opened ({exc.strerror}): it must exist and be mode 0666 "
                "(in a container: --device /dev/fuse)")
    return None


def _escape(path: str) -> str:
    # fuse-overlayfs splits its options at "," and its layer lists at ":"; a backslash quotes either
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def options(lowers: Sequence[str], upper: str | None, work: str | None) -> str:
    """fuse-overlayfs's -o for absolute layer paths (nearest lower first, as for the kernel)."""
    opts = "lowerdir=" + ":".join(_escape(p) for p in lowers)
    if upper is not None:
        opts += f",upperdir={_escape(upper)},workdir={_escape(work or '')}"
    return opts


def _call(nr: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(nr), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _set(ctx: int, key: str, value: str | None) -> None:
    if value is None:
        _call(_SYS_FSCONFIG, ctypes.c_int(ctx), ctypes.c_uint(_FSCONFIG_SET_FLAG), ctypes.c_char_p(key.encode()),
              ctypes.c_void_p(None), ctypes.c_int(0))
    else:
        _call(_SYS_FSCONFIG, ctypes.c_int(ctx), ctypes.c_uint(_FSCONFIG_SET_STRING),
              ctypes.c_char_p(key.encode()), ctypes.c_char_p(value.encode()), ctypes.c_int(0))


def _daemon_namespace() -> str | None:
    """A mount namespace that never holds a fuse mount: the rootless pause process's."""
    from . import userns

    if not userns.rootless():
        return None
    pid = userns.pause_pid()
    if pid is None:
        raise MountError("fuse-overlayfs: the rootless pause process is gone", "run the command again")
    return f"/proc/{pid}/ns/mnt"


def detached_mount(lowers: Sequence[str], upper: str | None, work: str | None, *,
                   readonly: bool = False) -> int:
    """A detached overlay mount of absolute layer paths, served by a new fuse-overlayfs daemon: its fd.

    The caller attaches it with ``move_mount`` (or passes it on) and closes it.
    """
    prog = _program or find()
    if prog is None:
        raise MountError("fuse-overlayfs is not installed", "apt-get install fuse-overlayfs")
    try:
        dev = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise MountError(f"cannot open /dev/fuse: {exc.strerror}", "it must be mode 0666") from None
    ctx = mnt = -1
    try:
        try:
            ctx = _call(_SYS_FSOPEN, ctypes.c_char_p(b"fuse"), ctypes.c_uint(_FSOPEN_CLOEXEC))
            _set(ctx, "source", PROGRAM)
            _set(ctx, "fd", str(dev))
            _set(ctx, "rootmode", "40000")
            _set(ctx, "user_id", "0")
            _set(ctx, "group_id", "0")
            _set(ctx, "allow_other", None)  # container users other than root
            _set(ctx, "default_permissions", None)  # the kernel checks modes, as on any filesystem
            _call(_SYS_FSCONFIG, ctypes.c_int(ctx), ctypes.c_uint(_FSCONFIG_CMD_CREATE), ctypes.c_void_p(None),
                  ctypes.c_void_p(None), ctypes.c_int(0))
            mnt = _call(_SYS_FSMOUNT, ctypes.c_int(ctx), ctypes.c_uint(_FSMOUNT_CLOEXEC),
                        ctypes.c_uint(_MOUNT_ATTR_RDONLY if readonly else 0))
        except OSError as exc:
            raise MountError(f"cannot create a fuse mount: {exc.strerror}",
                             "the kernel must allow fuse mounts in user namespaces (Linux >= 4.18)") from None
        finally:
            if ctx >= 0:
                os.close(ctx)  # the context holds the superblock too: the mount alone must
        _start_daemon(prog, dev, options(lowers, upper, work))
    except BaseException:
        if mnt >= 0:
            os.close(mnt)
        raise
    finally:
        os.close(dev)
    return mnt


def _start_daemon(prog: str, dev: int, opts: str) -> None:
    """Run fuse-overlayfs on the connection ``dev``; it forks into the background once it serves it."""
    argv = [prog, "-o", opts, f"/dev/fd/{dev}"]
    ns = _daemon_namespace()
    if ns is not None:
        argv = ["nsenter", f"--mount={ns}", "--", *argv]
    try:
        done = subprocess.run(argv, pass_fds=(dev,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=60)
    except FileNotFoundError as exc:
        raise MountError(f"cannot run {exc.filename}", "apt-get install fuse-overlayfs util-linux") from None
    except subprocess.TimeoutExpired:
        raise MountError("fuse-overlayfs did not start within 60 s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.decode(errors="replace").splitlines()
                 if line and "unknown argument ignored" not in line]
        raise MountError(f"fuse-overlayfs failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def mount(lowers: Sequence[str], upper: str | None, work: str | None, target: str | os.PathLike[str], *,
          readonly: bool = False) -> None:
    """A fuse-overlayfs overlay of absolute layer paths, attached at ``target`` in this mount namespace."""
    from .mount import move_mount

    fd = detached_mount(lowers, upper, work, readonly=readonly)
    try:
        move_mount(fd, target)
    finally:
        os.close(fd)
