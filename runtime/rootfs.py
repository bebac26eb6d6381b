"""The container's filesystem, set up from inside its own mount namespace.

:func:`setup` runs in the container's first process after it unshared its
mount namespace, as runc's ``prepareRootfs``/``finalizeRootfs`` do:

1. make ``/`` recursively slave (nothing mounted here propagates to the host)
   and bind the rootfs onto itself (pivot_root needs a mount point);
2. mount /proc, a tmpfs /dev with its device nodes and links, /dev/pts (a new
   devpts instance), /dev/shm, /dev/mqueue, a read-only /sys, then the user's
   mounts;
3. ``pivot_root(rootfs, rootfs)`` and detach the old root (not chroot: the
   host's tree is gone from the namespace, not merely out of sight);
4. write the namespaced sysctls, mask paths (/dev/null over files, an empty
   read-only tmpfs over directories), make paths read-only and, with
   ``readonly_rootfs``, the root itself.

Read-only binds are read-only all the way down: after the bind, the
attribute is set on the whole mount tree with ``mount_setattr(AT_RECURSIVE)``
(Linux 5.12); a remount would only change the top mount and leave the
mounts below it writable. Without mount_setattr the container does not start.

Every mount target in the rootfs is resolved component by component under the
root, with absolute symlinks taken relative to it (what runc's securejoin
does), opened ``O_PATH|O_NOFOLLOW`` and checked through /proc/self/fd to lie
inside the root; the mount is then made on that fd, so a symlink planted in
an image cannot redirect a mount onto the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterable, Iterator

from pybuild.errors import ContainerError, MountError
from pybuild.linux import mount as _m
from pybuild.linux import safefs as _safefs
from pybuild.linux import syscalls, userns
from pybuild.linux.mount import (
    MS_DIRSYNC,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODIRATIME,
    MS_RELATIME,
    MS_SHARED,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)
from pybuild.records import record

from .devices import Device
from .spec import DEFAULT_SHM_SIZE, ContainerSpec, Mount

DEVICES: tuple[tuple[str, int, int], ...] = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)

DEV_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
)

INIT_PATH = "/dev/init"  # where spec.init is bound: on the /dev tmpfs, so the rw layer stays clean


class RootfsError(ContainerError):
    """The container's filesystem could not be set up."""


def default_mounts(shm_size: int = DEFAULT_SHM_SIZE, writable_sysfs: bool = False) -> tuple[Mount, ...]:
    """The mounts of Docker's default spec, in the order runc makes them (--shm-size, --privileged's /sys)."""
    return (
        Mount("proc", "/proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("tmpfs", "/dev", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("devpts", "/dev/pts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
               # the tty group; a rootless namespace that maps only the user itself has none
               *(("gid=5",) if userns.gid_mapped(5) else ()))),
        Mount("sysfs", "/sys", "sysfs", ("nosuid", "noexec", "nodev", "rw" if writable_sysfs else "ro")),
        Mount("mqueue", "/dev/mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        Mount("shm", "/dev/shm", "tmpfs", ("nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}")),
    )


# ---- mount options ----------------------------------------------------------

_FLAG_WORDS: dict[str, tuple[bool, int]] = {
    "ro": (True, _m.MS_RDONLY), "rw": (False, _m.MS_RDONLY),
    "nosuid": (True, _m.MS_NOSUID), "suid": (False, _m.MS_NOSUID),
    "nodev": (True, _m.MS_NODEV), "dev": (False, _m.MS_NODEV),
    "noexec": (True, _m.MS_NOEXEC), "exec": (False, _m.MS_NOEXEC),
    "sync": (True, MS_SYNCHRONOUS), "async": (False, MS_SYNCHRONOUS),
    "dirsync": (True, MS_DIRSYNC),
    "mand": (True, MS_MANDLOCK), "nomand": (False, MS_MANDLOCK),
    "noatime": (True, MS_NOATIME), "atime": (False, MS_NOATIME),
    "nodiratime": (True, MS_NODIRATIME), "diratime": (False, MS_NODIRATIME),
    "relatime": (True, MS_RELATIME), "norelatime": (False, MS_RELATIME),
    "strictatime": (True, _m.MS_STRICTATIME), "nostrictatime": (False, _m.MS_STRICTATIME),
    "bind": (True, _m.MS_BIND), "rbind": (True, _m.MS_BIND | _m.MS_REC),
}

_PROPAGATION_WORDS: dict[str, int] = {
    "private": _m.MS_PRIVATE, "rprivate": _m.MS_PRIVATE | _m.MS_REC,
    "slave": _m.MS_SLAVE, "rslave": _m.MS_SLAVE | _m.MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | _m.MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | _m.MS_REC,
}

_IGNORED_WORDS = frozenset({"z", "Z", "nocopy", "defaults"})


@record(frozen=True)
class MountOptions:
    flags: int
    propagation: tuple[int, ...]
    data: str | None


def parse_options(options: Iterable[str]) -> MountOptions:
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for word in options:
        if word in _FLAG_WORDS:
            on, bit = _FLAG_WORDS[word]
            flags = flags | bit if on else flags & ~bit
        elif word in _PROPAGATION_WORDS:
            propagation.append(_PROPAGATION_WORDS[word])
        elif word in _IGNORED_WORDS or not word:
            continue
        else:
            data.append(word)
    return MountOptions(flags, tuple(propagation), ",".join(data) or None)


# statvfs f_flag bits -> the mount flags a bind remount must repeat (the
# kernel refuses to clear "locked" ones and would otherwise drop the others).
_ST_TO_MS = ((os.ST_NOSUID, _m.MS_NOSUID), (os.ST_NODEV, _m.MS_NODEV), (os.ST_NOEXEC, _m.MS_NOEXEC),
             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))


def _current_flags(path: str) -> int:
    try:
        f_flag = os.statvfs(path).f_flag
    except OSError:
        return 0
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


# ---- safe path resolution ----------------------------------------------------

def _within(root: str, path: str) -> bool:
    root = root.rstrip("/")
    return root == "" or path == root or path.startswith(root + "/")


def secure_join(root: str, unsafe: str) -> str:
    """``unsafe`` resolved under ``root``, never leaving it (:func:`pybuild.linux.safefs.secure_join`)."""
    try:
        return _safefs.secure_join(root, unsafe)
    except _safefs.TooManySymlinks:
        raise RootfsError(f"too many levels of symbolic links resolving {unsafe} in the container") from None


@contextlib.contextmanager
def _opened(root: str, path: str) -> Iterator[str]:
    """``path`` (already resolved under ``root``) as a /proc/self/fd link, verified to be inside ``root``."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RootfsError(f"cannot open mount target {_show(root, path)}: {exc.strerror}") from None
    try:
        link = f"/proc/self/fd/{fd}"
        real = os.readlink(link)
        if not _within(root, real):
            raise RootfsError(f"mount target {_show(root, path)} resolves outside the container ({real})")
        yield link
    finally:
        os.close(fd)


def _show(root: str, path: str) -> str:
    """A host path under ``root`` as the container sees it, for messages."""
    root = root.rstrip("/")
    return path[len(root):] or "/" if root and _within(root, path) else path


def _mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """store.mount.mount, raising OSError with the errno (callers branch on it)."""
    try:
        _m.mount(source, target, fstype, flags, data)
    except MountError as exc:
        err = ctypes.get_errno() or errno.EIO
        raise OSError(err, exc.message) from None


def _prepare_target(root: str, target: str, directory: bool, exact: bool = False) -> str:
    path = secure_join(root, target)
    if exact and path != os.path.normpath(os.path.join(root, target.lstrip("/"))):
        # /proc, /sys, /dev... must be what they say: runc refuses a symlink there
        # rather than mounting a procfs wherever the image points it.
        raise RootfsError(f"mount target {target} in the container is (or goes through) a symlink")
    try:
        os.lstat(path)
        return path
    except FileNotFoundError:
        pass
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if directory:
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    except FileExistsError:
        pass
    except OSError as exc:
        raise RootfsError(f"cannot create mount point {target} in the container: {exc.strerror}") from None
    return path


def _remount_readonly(root: str, path: str, extra: int = 0, recursive: bool = False) -> None:
    with _opened(root, path) as t:
        _mount(None, t, None, _m.MS_BIND | _m.MS_REMOUNT | _m.MS_RDONLY | extra | _current_flags(t))
    if recursive:
        _readonly_tree(root, path)


def _readonly_tree(root: str, path: str) -> None:
    """Make the mount at ``path`` and every mount below it read-only (mount_setattr, Linux >= 5.12)."""
    with _opened(root, path) as t:
        try:
            _m.mount_setattr(t, _m.MOUNT_ATTR_RDONLY, recursive=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EINVAL):
                raise RootfsError(f"cannot make {_show(root, path)} read-only with the mounts below it: "
                                  "this kernel has no mount_setattr (Linux 5.12 or later is needed)") from None
            raise


def mount_into(root: str, mount: Mount, exact: bool = False) -> None:
    """Make one mount at ``mount.target`` under ``root`` (``exact``: refuse a target reached through symlinks)."""
    opts = parse_options(mount.options)
    try:
        if mount.is_bind:
            _bind_into(root, mount, opts)
        elif mount.type == "sysfs":
            _sysfs_into(root, mount, opts)
        else:
            path = _prepare_target(root, mount.target, directory=True, exact=exact or mount.type == "proc")
            with _opened(root, path) as t:
                _mount(mount.source, t, mount.type, opts.flags, opts.data)
            _propagate(root, path, opts)
    except OSError as exc:
        raise RootfsError(f"cannot mount {mount.type} {mount.source} on {mount.target} in the container: "
                          f"{os.strerror(exc.errno) if exc.errno else exc}") from None


def _bind_into(root: str, mount: Mount, opts: MountOptions) -> None:
    try:
        st = os.stat(mount.source)
    except OSError as exc:
        raise RootfsError(f"bind source {mount.source}: {exc.strerror}") from None
    path = _prepare_target(root, mount.target, directory=stat.S_ISDIR(st.st_mode))
    bind = _m.MS_BIND | (opts.flags & _m.MS_REC)
    if mount.type == "bind" and not opts.flags & _m.MS_BIND:
        bind |= _m.MS_REC  # a bare "bind" type is recursive, like -v
    with _opened(root, path) as t:
        _mount(mount.source, t, None, bind)
    rest = opts.flags & ~(_m.MS_BIND | _m.MS_REC)
    if rest:
        # Flags on a bind take a remount; it must be made through the new mount, not the old fd.
        with _opened(root, path) as t:
            _mount(None, t, None, _m.MS_BIND | _m.MS_REMOUNT | rest | _current_flags(t))
    if rest & _m.MS_RDONLY and bind & _m.MS_REC:
        _readonly_tree(root, path)
    _propagate(root, path, opts)


def _sysfs_into(root: str, mount: Mount, opts: MountOptions) -> None:
    path = _prepare_target(root, mount.target, directory=True, exact=True)
    try:
        with _opened(root, path) as t:
            _mount(mount.source, t, "sysfs", opts.flags, opts.data)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EBUSY):
            raise
        # Sharing the host's network namespace without owning it: sysfs cannot be
        # mounted, so the host's /sys is bound read-only instead, as runc does.
        with _opened(root, path) as t:
            _mount("/sys", t, None, _m.MS_BIND | _m.MS_REC)
        _remount_readonly(root, path, opts.flags & ~_m.MS_RDONLY, recursive=True)
    _propagate(root, path, opts)


def _propagate(root: str, path: str, opts: MountOptions) -> None:
    for flags in opts.propagation:
        with _opened(root, path) as t:
            _mount(None, t, None, flags)


# ---- /dev --------------------------------------------------------------------

def create_devices(root: str, extra: Iterable[Device] = ()) -> None:
    """The device nodes of a default container, mode 0666 and owned by root, then ``extra`` (--device)."""
    dev = secure_join(root, "/dev")
    old_umask = os.umask(0)
    try:
        for device in extra:
            _make_node(root, device)
        for name, major, minor in DEVICES:
            path = os.path.join(dev, name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            try:
                os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            except PermissionError:
                # No CAP_MKNOD (or a nodev mount): bind the host's node instead.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
                with _opened(root, path) as t:
                    _mount(f"/dev/{name}", t, None, _m.MS_BIND)
                continue
            os.chown(path, 0, 0, follow_symlinks=False)
    except OSError as exc:
        raise RootfsError(f"cannot create device nodes in the container's /dev: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)


def _make_node(root: str, device: Device) -> None:
    """mknod ``device`` at its path in the container (replacing what is there), as runc's createDevices."""
    path = _prepare_target(root, os.path.dirname(device.path) or "/", directory=True)
    node = os.path.join(path, os.path.basename(device.path))
    if not _within(root, node):
        raise RootfsError(f"device path {device.path} resolves outside the container")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(node).st_mode):
            raise RootfsError(f"cannot create device {device.path} in the container: it is a directory")
        os.unlink(node)
    kind = stat.S_IFCHR if device.type == "c" else stat.S_IFBLK
    try:
        os.mknod(node, kind | (device.mode & 0o7777), os.makedev(device.major, device.minor))
        os.chown(node, device.uid, device.gid, follow_symlinks=False)
    except OSError as exc:
        raise RootfsError(f"cannot create device {device.path} in the container: {exc.strerror}") from None


def setup_dev_symlinks(root: str) -> None:
    dev = secure_join(root, "/dev")
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    for target, name in links:
        try:
            os.symlink(target, os.path.join(dev, name))
        except FileExistsError:
            continue
        except OSError as exc:
            raise RootfsError(f"cannot create /dev/{name} in the container: {exc.strerror}") from None


def bind_console(slave_path: str) -> None:
    """Bind the container's terminal onto /dev/console (after pivot_root), as runc does."""
    path = _prepare_target("/", "/dev/console", directory=False)
    try:
        with _opened("/", path) as t:
            _mount(slave_path, t, None, _m.MS_BIND)
    except OSError as exc:
        raise RootfsError(f"cannot bind the terminal onto /dev/console: {exc.strerror}") from None


# ---- pivot_root, masking -----------------------------------------------------------

def pivot_into(root: str) -> None:
    """pivot_root(root, root) and detach the old root, leaving cwd at the new /."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        syscalls.pivot_root(".", ".")
        # The old root is now stacked on the new one; "." may be either, so go to
        # it explicitly, keep its unmount from propagating, and detach it.
        os.fchdir(old)
        _mount(None, ".", None, _m.MS_SLAVE | _m.MS_REC)
        _m.umount(".", _m.MNT_DETACH)
    except OSError as exc:
        raise RootfsError(f"pivot_root into {root}: {exc.strerror or exc}") from None
    except MountError as exc:
        raise RootfsError(f"detaching the host's root: {exc}") from None
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def mask_path(path: str) -> None:
    """Hide ``path`` (in the current root): /dev/null over a file, an empty read-only tmpfs over a directory."""
    resolved = secure_join("/", path)
    try:
        st = os.lstat(resolved)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        with _opened("/", resolved) as t:
            if stat.S_ISDIR(st.st_mode):
                _mount("tmpfs", t, "tmpfs", _m.MS_RDONLY | _m.MS_NOSUID | _m.MS_NODEV | _m.MS_NOEXEC)
            else:
                _mount("/dev/null", t, None, _m.MS_BIND)
    except OSError as exc:
        raise RootfsError(f"cannot mask {path}: {exc.strerror or exc}") from None


def readonly_path(path: str) -> None:
    """Make ``path`` (in the current root) a read-only bind of itself."""
    resolved = secure_join("/", path)
    try:
        os.lstat(resolved)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        with _opened("/", resolved) as t:
            _mount(t, t, None, _m.MS_BIND | _m.MS_REC)
        _remount_readonly("/", resolved, recursive=True)
    except OSError as exc:
        raise RootfsError(f"cannot make {path} read-only: {exc.strerror or exc}") from None


# ---- the whole sequence -----------------------------------------------------------

def _depth(mount: Mount) -> int:
    return len([p for p in mount.target.split("/") if p and p != "."])


def setup(spec: ContainerSpec) -> None:
    """Build the container's filesystem and pivot into it (in its new mount namespace)."""
    root = os.path.realpath(spec.rootfs)
    if not os.path.isdir(root):
        raise RootfsError(f"rootfs {spec.rootfs} is not a directory")
    try:
        _mount(None, "/", None, _m.MS_SLAVE | _m.MS_REC)
        if spec.rootfs_mount_fd is not None:
            _m.move_mount(spec.rootfs_mount_fd, root)
        elif spec.overlay is not None:
            ov = spec.overlay
            _m.mount_overlay(ov.overlay_root, list(ov.lowers), ov.upper, ov.work, root)
        _mount(root, root, None, _m.MS_BIND | _m.MS_REC)
    except OSError as exc:
        raise RootfsError(f"cannot prepare the rootfs {root}: {exc.strerror or exc}") from None
    except MountError as exc:
        raise RootfsError(f"cannot mount the rootfs {root}: {exc}") from None
    for mount in default_mounts(spec.shm_size, spec.writable_sysfs):
        mount_into(root, mount, exact=True)
    create_devices(root, spec.devices)
    setup_dev_symlinks(root)
    if spec.init is not None:
        mount_into(root, Mount(str(spec.init), INIT_PATH, "bind", ("bind", "ro")))
    # Parents before children, as Docker sorts them; equal depth keeps the given order.
    for mount in sorted(spec.mounts, key=_depth):
        mount_into(root, mount)
    pivot_into(root)
    for key, value in spec.sysctls:
        write_sysctl(key, value)
    for path in spec.masked_paths:
        mask_path(path)
    for path in spec.readonly_paths:
        readonly_path(path)
    if spec.readonly_rootfs:
        readonly_root()


def write_sysctl(key: str, value: str) -> None:
    """Set a (namespaced: checked by the caller) kernel parameter through the container's /proc/sys."""
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RootfsError(f"cannot set sysctl {key}: {exc.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise RootfsError(f"cannot set sysctl {key}={value}: {exc.strerror}") from None
    finally:
        os.close(fd)


def readonly_root() -> None:
    """--read-only: the root mount itself (not /proc, /dev, /sys or the volumes on it) becomes read-only."""
    try:
        _mount(None, "/", None, _m.MS_BIND | _m.MS_REMOUNT | _m.MS_RDONLY | _current_flags("/"))
    except OSError as exc:
        raise RootfsError(f"cannot make the root filesystem read-only: {exc.strerror or exc}") from None
