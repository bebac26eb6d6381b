"""Small filesystem helpers: atomic writes, fsync, and walking (and removing) trees iteratively by descriptor."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO


_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_beside(path: str) -> tuple[int, str]:
    """A new private file in ``path``'s directory (what tempfile.mkstemp does, without its import cost)."""
    directory = os.path.dirname(path) or "."
    for _ in range(100):
        tmp = os.path.join(directory, f".tmp-{os.urandom(6).hex()}")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    path = os.fspath(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int = 0o600) -> Iterator[IO[bytes]]:
    """Yield a temp file beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = os.fspath(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---- walking trees the caller did not make -----------------------------------------------------------

ENTER, FILE, LEAVE = 0, 1, 2  # the events of :func:`walk`
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeChanged(OSError):
    """A directory was moved or replaced while it was being walked."""


class WalkEntry:
    """One entry met by :func:`walk`. ``parent_fd`` and ``fd`` are the walk's; valid during the event only.

    ``fd`` is the directory's own descriptor for ENTER (-1 otherwise); ``st``
    is its lstat (for a directory, the fstat of ``fd``); ``rel`` is its path
    below the root, ``/``-separated, without a leading ``/``, made when asked
    for (during the event: the walk keeps one list of the components above
    it, so a deep tree costs memory in proportion to its depth, not its square).
    """

    __slots__ = ("parent_fd", "name", "st", "fd", "skip", "_above", "_depth")

    def __init__(self, parent_fd: int, name: bytes, above: list[bytes], depth: int, st: os.stat_result,
                 fd: int = -1) -> None:
        self.parent_fd = parent_fd
        self.name = name
        self._above = above  # the walk's components of the current directory; the first `depth` are this entry's
        self._depth = depth
        self.st = st
        self.fd = fd
        self.skip = False  # set during ENTER: do not descend into this directory

    @property
    def rel(self) -> bytes:
        if not self._depth:
            return self.name
        return b"/".join(self._above[:self._depth]) + b"/" + self.name

    @property
    def proc_path(self) -> bytes:
        """A path naming this entry through its parent's descriptor, never following it (for *xattr)."""
        return b"/proc/self/fd/%d/%s" % (self.parent_fd, self.name)


def _names(fd: int, sort: bool, dirs_only: bool = False) -> list[bytes]:
    if dirs_only:  # typed by the directory entries (d_type): the other entries cost no stat
        with os.scandir(fd) as it:
            names = [os.fsencode(e.name) for e in it if e.is_dir(follow_symlinks=False)]
    else:
        names = [os.fsencode(n) for n in os.listdir(fd)]
    if sort:
        names.sort()
    return names


def walk(root: str | bytes | os.PathLike[str], *, sort: bool = True, make_searchable: bool = False,
         dir_fd: int | None = None, dirs_only: bool = False) -> Iterator[tuple[int, WalkEntry]]:
    """Every entry below ``root``, depth first (pre-order, names sorted as bytes when ``sort``).

    Yields ``(ENTER, e)`` for a directory before its entries and ``(LEAVE, e)``
    after them, ``(FILE, e)`` for anything else. Iterative, through
    descriptors: each directory is opened ``O_NOFOLLOW`` relative to its
    parent and the walk holds one descriptor whatever the depth (it climbs
    back with ``..`` and checks it arrived where it came from, raising
    :class:`TreeChanged` otherwise). A symlink is never followed: one swapped
    in for a directory is met as what it is. Entries that vanish are skipped.
    ``root`` itself is opened normally (the caller chose it), relative to
    ``dir_fd`` when given (then without following a final link). With
    ``make_searchable`` a directory the walk may not enter is given u+rwx
    first (for removing a tree, never for reading one). With ``dirs_only``
    only directories are met (no FILE events, and no stat of the rest).
    """
    if dir_fd is None:
        cur = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        cur = os.open(root, DIR_FLAGS, dir_fd=dir_fd)
    above: list[bytes] = []  # the components of the directory being listed, below the root
    try:
        top = os.fstat(cur)
        frames: list[tuple[tuple[int, int], Iterator[bytes], WalkEntry | None]] = [
            ((top.st_dev, top.st_ino), iter(_names(cur, sort, dirs_only)), None)]
        while frames:
            ident, names, dir_entry = frames[-1]
            name = next(names, None)
            if name is None:
                frames.pop()
                if dir_entry is None:
                    break
                above.pop()
                parent_ident = frames[-1][0]
                up = os.open(b"..", DIR_FLAGS, dir_fd=cur)
                ust = os.fstat(up)
                os.close(cur)
                cur = up
                if (ust.st_dev, ust.st_ino) != parent_ident:
                    raise TreeChanged(f"{os.fsdecode(dir_entry.rel)} was moved while it was being walked")
                dir_entry.parent_fd = cur
                dir_entry.fd = -1
                yield LEAVE, dir_entry
                continue
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                continue
            entry = WalkEntry(cur, name, above, len(above), st)
            if not stat.S_ISDIR(st.st_mode):
                yield FILE, entry
                continue
            try:
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=cur)
                except PermissionError:
                    if not make_searchable:
                        raise
                    # a directory without read/search permission (only matters without CAP_DAC_OVERRIDE)
                    os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=cur, follow_symlinks=False)
                    child = os.open(name, DIR_FLAGS, dir_fd=cur)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                # replaced by a file or a symlink since it was looked at: met as what it is now
                try:
                    entry.st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield FILE, entry
                continue
            try:
                entry.st = os.fstat(child)
                entry.fd = child
                yield ENTER, entry
                if entry.skip:
                    continue
                listing = _names(child, sort, dirs_only)
            except BaseException:
                os.close(child)
                raise
            if entry.skip:
                os.close(child)
                continue
            os.close(cur)
            cur = child
            above.append(name)
            frames.append(((entry.st.st_dev, entry.st.st_ino), iter(listing), entry))
    finally:
        os.close(cur)


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the regular files below ``path``, walked through descriptors (0 if it is not there)."""
    total = 0
    try:
        for event, entry in walk(path, sort=False):
            if event == FILE and stat.S_ISREG(entry.st.st_mode):
                total += entry.st.st_size
    except OSError:
        pass
    return total


def remove_tree(path: str | bytes | os.PathLike[str], *, dir_fd: int | None = None) -> None:
    """Remove a file or directory tree, tolerating its absence (``path`` relative to ``dir_fd`` when given).

    Iterative and descriptor-based (:func:`walk`), so neither depth nor a
    symlink swapped in for a directory while it runs can make it fail or
    reach outside the tree: a link is unlinked, never followed.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path, dir_fd=dir_fd)
        return
    try:
        for event, entry in walk(path, sort=False, make_searchable=True, dir_fd=dir_fd):
            if event == FILE:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=entry.parent_fd)
            elif event == LEAVE:
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(entry.name, dir_fd=entry.parent_fd)
    except FileNotFoundError:
        return
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path, dir_fd=dir_fd)


def read_text(path: str | os.PathLike[str], limit: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode()
