"""File operations on trees pybuild did not make: a layer, a build context, a container's root.

Such a tree may hold symlinks pointing anywhere, and (for a container's root)
a process may swap a directory for a link while pybuild works on it. Two
ways of staying inside are offered here:

- :func:`resolve_beneath` resolves a path under a root by lstat-ing each
  component and expanding links in place (an absolute one relative to the
  root, ``..`` stopping at it), as a chroot would, for the callers that need
  a path string (a mount target, a file to read before the container runs);
- the ``*_at`` helpers work relative to directory descriptors opened
  ``O_NOFOLLOW``, so nothing between two calls can redirect them.

Errors are ``OSError``\\ s with the kernel's errno (:class:`SymlinkInPath` for a
link where a directory was expected), for the caller to word.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .fsutil import DIR_FLAGS as DIR_FLAGS
from .fsutil import remove_tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

# Linux follows 40 links per lookup; a tree that needs more is hostile or broken.
MAX_SYMLINKS = 255


NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# The errnos of a filesystem (or a caller) that keeps no extended attributes.
XATTRS_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)


class SymlinkInPath(OSError):
    """A symlink stands where a directory was expected (``filename`` is its name)."""


class TooManySymlinks(OSError):
    """Resolving a path met more than :data:`MAX_SYMLINKS` links."""


# ---------------------------------------------------------------------------- resolving a path under a root


def resolve_beneath(root: str, path: str, *, keep_missing: bool = True,
                    link_allowed: Callable[[str, os.stat_result], bool] | None = None) -> list[str] | None:
    """The components of ``path`` resolved under ``root``, never leaving it.

    Each existing component is lstat-ed; a symlink is expanded in place (an
    absolute target restarts at ``root``) and ``..`` stops at ``root``. With
    ``keep_missing`` the components that do not exist (or stand below a
    non-directory) are kept lexically, so they can be created without
    following anything; otherwise such a path resolves to None. A link for
    which ``link_allowed(its relative path, its lstat)`` is false resolves
    the whole path to None.
    """
    pending = list(reversed(path.split("/")))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        try:
            st = os.lstat(os.path.join(root, *resolved, part))
        except (FileNotFoundError, NotADirectoryError):
            if not keep_missing:
                return None
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            if link_allowed is not None and not link_allowed("/".join([*resolved, part]), st):
                return None
            links += 1
            if links > MAX_SYMLINKS:
                raise TooManySymlinks(errno.ELOOP, f"too many levels of symbolic links resolving {path}")
            target = os.readlink(os.path.join(root, *resolved, part))
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed(target.split("/")))
            continue
        if not keep_missing and not stat.S_ISDIR(st.st_mode) and any(p not in ("", ".") for p in pending):
            return None
        resolved.append(part)
    return resolved


def secure_join(root: str, unsafe: str) -> str:
    """``unsafe`` resolved under ``root`` (see :func:`resolve_beneath`), as a host path."""
    root = os.path.abspath(root)
    parts = resolve_beneath(root, unsafe)
    assert parts is not None
    return os.path.join(root, *parts)


# ---------------------------------------------------------------------------- directory descriptors


def open_dir_at(parent_fd: int, name: str | bytes, *, create: bool = False, mode: int = 0o755) -> int:
    """Open directory ``name`` under ``parent_fd`` without following a link (made first with ``create``).

    A symlink there raises :class:`SymlinkInPath`; another non-directory
    raises ``NotADirectoryError``.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent_fd)
        return open_dir_at(parent_fd, name)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        shown = os.fsdecode(name)
        if stat.S_ISLNK(st.st_mode):
            raise SymlinkInPath(errno.ELOOP, "a symlink where a directory was expected", shown) from None
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), shown) from None


def open_dir_path(root_fd: int, parts: Iterable[str | bytes], *, create: bool = False) -> int:
    """A new descriptor of directory ``root/parts...``, each component opened with :func:`open_dir_at`."""
    fd = os.dup(root_fd)
    try:
        for comp in parts:
            nfd = open_dir_at(fd, comp, create=create)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


class DirChain:
    """Open descriptors of one directory chain below a root, root first, reused between calls.

    Entries of a tar or a copy come in tree order, so consecutive ones share
    most of their parents: :meth:`parent` reopens only the components that
    differ from the previous call. The chain holds only real directories,
    each opened ``O_NOFOLLOW`` relative to the one before, so a descriptor
    from it never points outside the root; after :meth:`parent` the chain is
    exactly the requested directory, so a leaf created or removed in it is
    never a descriptor the chain holds.

    However deep the chain, it holds at most :attr:`MAX_OPEN` descriptors:
    the first :attr:`KEEP_TOP` levels and the deepest ones. A level closed
    on the way is reopened by name from the nearest open ancestor when the
    chain climbs back to it (its directories are the chain's own, never
    replaced while it holds them), a window of levels at a time.
    """

    KEEP_TOP = 16
    MAX_OPEN = 256

    def __init__(self, root_fd: int) -> None:
        self.root = root_fd
        self.names: list[bytes] = []
        self.fds: list[int] = []  # -1: closed to stay under MAX_OPEN, reopened when needed
        self._open = 0
        self._low = self.KEEP_TOP  # no open descriptor between KEEP_TOP and this level

    def parent(self, parts: tuple[bytes, ...], create: bool = True) -> int:
        names = self.names
        limit = min(len(names), len(parts))
        if names[:limit] == list(parts[:limit]):  # the usual case, compared at C speed: same, deeper or higher
            n = limit
        else:
            n = 0
            while names[n] == parts[n]:
                n += 1
        self.truncate(n)
        fd = self._last()
        for comp in parts[n:]:
            fd = open_dir_at(fd, comp, create=create)
            self.push(comp, fd)
        return fd

    def push(self, name: bytes, fd: int) -> None:
        """Adopt ``fd`` (directory ``name`` in the current chain's last directory) as the chain's end."""
        self.names.append(name)
        self.fds.append(fd)
        self._open += 1
        if self._open > self.MAX_OPEN:
            fds = self.fds
            low = self._low
            while fds[low] < 0:
                low += 1
            os.close(fds[low])
            fds[low] = -1
            self._open -= 1
            self._low = low + 1

    def _last(self) -> int:
        """The descriptor of the chain's last directory (the root for an empty chain), reopened if closed."""
        fds = self.fds
        if not fds:
            return self.root
        if fds[-1] >= 0:
            return fds[-1]
        j = len(fds) - 1
        while j > 0 and fds[j - 1] < 0:
            j -= 1
        fd = fds[j - 1] if j else self.root
        names = self.names[j:]
        del self.names[j:], self.fds[j:]
        self._low = min(self._low, max(j, self.KEEP_TOP))
        for comp in names:
            fd = open_dir_at(fd, comp)
            self.push(comp, fd)
        return fd

    def truncate(self, n: int) -> None:
        fds = self.fds
        while len(fds) > n:
            self.names.pop()
            fd = fds.pop()
            if fd >= 0:
                os.close(fd)
                self._open -= 1
        self._low = min(self._low, max(n, self.KEEP_TOP))

    def close(self) -> None:
        self.truncate(0)


def remove_at(parent_fd: int, name: str | bytes) -> None:
    """Remove ``name`` under ``parent_fd`` whatever it is (a directory with its contents), following nothing."""
    remove_tree(name, dir_fd=parent_fd)


def create_replacing(make: Callable[[], Any], parent_fd: int, name: str | bytes) -> Any:
    """``make()``; when ``name`` exists already, remove it (as tar does) and try once more."""
    try:
        return make()
    except FileExistsError:
        remove_at(parent_fd, name)
        return make()


# ---------------------------------------------------------------------------- extended attributes


def read_xattrs(target: int | str | bytes) -> list[tuple[str, bytes]]:
    """All xattrs of ``target`` sorted by name; [] where the filesystem keeps none.

    ``target`` is an open descriptor, or a path read without following a
    final symlink (``/proc/self/fd/N/name`` names an entry through its
    parent's descriptor). An attribute removed meanwhile is skipped.
    """
    by_fd = isinstance(target, int)
    try:
        names = os.listxattr(target) if by_fd else os.listxattr(target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in XATTRS_UNSUPPORTED or exc.errno == errno.ENOENT:
            return []
        raise
    out: list[tuple[str, bytes]] = []
    for name in sorted(names):
        try:
            value = os.getxattr(target, name) if by_fd else os.getxattr(target, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA or exc.errno in XATTRS_UNSUPPORTED:
                continue
            raise
        out.append((name, value))
    return out


def write_xattrs(target: int | str | bytes, items: Iterable[tuple[str | bytes, bytes]]) -> None:
    """Set each xattr on ``target`` (a descriptor, or a path whose final link is not followed).

    Attributes the filesystem or the caller's privileges (EPERM, EACCES) refuse are skipped,
    as tar and cp do.
    """
    by_fd = isinstance(target, int)
    for name, value in items:
        try:
            if by_fd:
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in XATTRS_UNSUPPORTED and exc.errno != errno.EACCES:
                raise
