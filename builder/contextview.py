"""The build context as ``RUN --mount=type=bind`` (without ``from=``) shows it: exactly what COPY can read.

BuildKit transfers the context filtered by .dockerignore, so an excluded
path is not there for a bind mount either (``source=`` naming one is "not
found"). pybuild does not copy the context for that. Once per build it
:func:`scan`\\ s it for the top-most excluded paths and writes a small *mask*
directory: an overlay whiteout (a 0/0 character device) for each of them,
in directories that carry the context's own owner, mode, xattrs and times;
then it mounts ``lowerdir=mask:context`` read-only in the build's mount
namespace. Every read-only bind mount of the build uses that view; a ``rw``
one gets an overlay of its own over the same lowers with its upper in the
step's scratch dir, so its writes vanish with the step and nothing is
copied. With nothing excluded (no .dockerignore, or nothing it names is
there) the view is the context directory itself, bound as before.

Where overlay cannot show the context faithfully the view is a filtered
copy, made once per build: a context with mount points below its root (an
overlay lower does not cross them), or layers overlayfs refuses (a store
inside the context: "overlapping layers"). The scan is iterative (an
explicit stack: depth is no limit), and prunes directories below which no
pattern can match.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from pybuild.errors import BuildError, PybuildError
from pybuild.linux import mount as _mount
from pybuild.linux import safefs as _safefs
from pybuild.linux.fsutil import remove_tree
from pybuild.records import record

from .checksum import xattr_items
from .context import Entry, SourceTree
from .copy import copy_entries
from .dockerignore import Pattern

__all__ = ["ContextView", "Scan", "scan"]


@record(frozen=True)
class Scan:
    """What :func:`scan` found: the paths to hide, and (``full``) every path to show."""

    hidden: list[str]  # the top-most context paths a view must not show (nothing below them is listed)
    entries: list[Entry] | None  # full scan: every visible path, the root first, parents before children


class _Frame:
    """A directory being scanned."""

    __slots__ = ("entries_at", "hidden_at", "info", "items", "rel", "shown", "tentative")

    def __init__(self, rel: str, info: tuple[bool, ...], items: Iterator[os.DirEntry[str]], tentative: bool,
                 entries_at: int, hidden_at: int) -> None:
        self.rel = rel
        self.info = info
        self.items = items
        self.tentative = tentative  # excluded, but an exception may re-include something below it
        self.shown = False  # something in it is visible
        self.entries_at = entries_at  # where its own entry is in the entries (full scan)
        self.hidden_at = hidden_at  # len(hidden) when it was entered


def _listing(host: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(host) as it:
            items = sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        items = []
    return iter(items)


def _may_change_below(patterns: Sequence[Pattern], info: tuple[bool, ...], rel: str) -> bool:
    """Whether a path below the directory ``rel`` can be decided otherwise than ``rel`` itself.

    A pattern that matched ``rel`` (or a parent) matches everything below it;
    one that did not can start matching below only if it could match there.
    """
    return any(not hit and p.could_match_below(rel) for hit, p in zip(info, patterns, strict=True))


def scan(tree: SourceTree, *, full: bool = False) -> Scan:
    """The paths of ``tree`` its ignore matcher hides, as :class:`SourceTree` decides them (so as COPY sees).

    An excluded path is hidden with everything below it; an excluded
    directory an exception (``!pattern``) may re-include is entered, and is
    hidden whole only when nothing in it is visible. ``full`` also lists
    every visible path (for a copy); otherwise directories below which no
    pattern can change the decision are not entered.
    """
    matcher = tree.matcher
    hidden: list[str] = []
    entries: list[Entry] | None = [Entry(".", tree.root, os.lstat(tree.root))] if full else None
    if matcher is None and not full:
        return Scan(hidden=hidden, entries=None)
    patterns = matcher.patterns if matcher is not None else []
    root_info = matcher.root_info() if matcher is not None else ()
    frames = [_Frame(".", root_info, _listing(tree.root), False, 0, 0)]
    while frames:
        frame = frames[-1]
        entry = next(frame.items, None)
        if entry is None:
            frames.pop()
            if not frames:
                break
            if frame.tentative and not frame.shown:
                # an excluded directory that holds nothing visible after all: hidden whole
                if entries is not None:
                    del entries[frame.entries_at:]
                del hidden[frame.hidden_at:]
                hidden.append(frame.rel)
            elif frame.shown:
                frames[-1].shown = True
            continue
        rel = entry.name if frame.rel == "." else f"{frame.rel}/{entry.name}"
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except FileNotFoundError:
            continue
        excluded = False
        info = frame.info
        if matcher is not None:
            info = matcher.info(rel, frame.info)
            excluded = matcher.decide(info)
            if excluded and not (is_dir and matcher.needs_walk(rel)):
                hidden.append(rel)
                continue
        if entries is not None:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            entries.append(Entry(rel, tree.host_path(rel), st))
        if not excluded:
            frame.shown = True
        if is_dir and (full or excluded or _may_change_below(patterns, info, rel)):
            frames.append(_Frame(rel, info, _listing(tree.host_path(rel)), excluded,
                                 len(entries) - 1 if entries is not None else 0, len(hidden)))
    return Scan(hidden=hidden, entries=entries)


def _copy_meta(src: str, dst: str) -> None:
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    _safefs.write_xattrs(dst, xattr_items(src))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def write_mask(tree: SourceTree, hidden: Sequence[str], mask: Path) -> None:
    """An overlay layer that hides ``hidden`` (context paths) of ``tree`` when stacked over it.

    Every directory in it (the root included) takes the metadata of the
    context's: in a merged overlay a directory shows the topmost layer's.
    """
    mask.mkdir(mode=0o700)
    made = ["."]
    known = {"."}
    for rel in hidden:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            directory = "/".join(parts[:i])
            if directory not in known:
                os.mkdir(mask / directory, 0o700)
                known.add(directory)
                made.append(directory)
        os.mknod(mask / rel, stat.S_IFCHR | 0o600, os.makedev(0, 0))
    for rel in reversed(made):  # after every entry is made: making one changes its directory's times
        _copy_meta(tree.host_path(rel), str(mask / rel) if rel != "." else str(mask))


class ContextView:
    """The filtered context of one build, prepared on first use and shared by its RUN steps (threads too)."""

    def __init__(self, tree: SourceTree, scratch: Path) -> None:
        self.tree = tree
        self.scratch = scratch
        self._lock = threading.Lock()
        self._root: str | None = None
        self._base: Path | None = None  # our dir under scratch: "ctx" (a link to the context), "mask", "view"...
        self._lowers: list[str] | None = None  # the view's overlay lowers (relative to _base), None: copy it
        self._mounted: Path | None = None

    def root(self) -> str:
        """The read-only view's directory (on the host, in the build's mount namespace)."""
        with self._lock:
            if self._root is None:
                try:
                    self._root = self._prepare()
                except OSError as exc:
                    raise _error(exc) from None
            return self._root

    def _prepare(self) -> str:
        context = self.tree.root
        submounts = [m for m in _mount.mounts_under(context) if m != context]
        found = scan(self.tree)
        base = self._base = Path(tempfile.mkdtemp(prefix="context-view-", dir=self.scratch))
        os.symlink(context, base / "ctx")  # the overlay option string never holds the context's path
        if not found.hidden:
            self._lowers = None if submounts else ["ctx"]
            return context  # nothing to hide: the context itself (bound recursively, as ever)
        if not submounts:
            try:
                write_mask(self.tree, found.hidden, base / "mask")
                target = base / "view"
                target.mkdir(mode=0o700)
                _mount.mount_overlay(base, ["mask", "ctx"], None, None, target, readonly=True)
            except (OSError, PybuildError):
                pass  # overlayfs refuses these layers: a copy below
            else:
                self._mounted = target
                self._lowers = ["mask", "ctx"]
                return str(target)
        copy = base / "copy"
        copy.mkdir(mode=0o700)
        _copy_tree(self.tree, copy)
        self._lowers = ["copy"]
        return str(copy)

    @contextlib.contextmanager
    def writable(self, scratch: Path) -> Iterator[str]:
        """A view that takes writes, thrown away afterwards (a ``rw`` bind mount): yields its directory."""
        root = self.root()
        assert self._base is not None
        work = Path(tempfile.mkdtemp(prefix="bind-", dir=scratch))
        target = work / "merged"
        target.mkdir(mode=0o700)
        mounted = False
        try:
            if self._lowers is not None:
                (work / "upper").mkdir(mode=0o700)
                (work / "work").mkdir(mode=0o700)
                try:
                    _mount.mount_overlay(self._base, self._lowers, str(work / "upper"), str(work / "work"), target)
                    mounted = True
                except PybuildError:
                    pass
            if not mounted:
                _copy_tree(SourceTree(root), target)
            yield str(target)
        finally:
            if mounted:
                _mount.umount(target, _mount.MNT_DETACH)  # raises rather than let the removal below reach in
            remove_tree(work)

    def close(self) -> None:
        """Unmount the view and remove what was made for it."""
        with self._lock:
            if self._mounted is not None:
                _mount.umount(self._mounted, _mount.MNT_DETACH)
                self._mounted = None
            if self._base is not None:
                remove_tree(self._base)
                self._base = None
            self._root = None


def _error(exc: OSError) -> BuildError:
    where = f": {exc.filename}" if exc.filename else ""
    return BuildError(f"cannot prepare the build context for RUN --mount: {exc.strerror or exc}{where}")


def _copy_tree(tree: SourceTree, target: Path) -> None:
    """Every path ``tree`` shows, copied into the existing directory ``target`` (owners kept)."""
    entries = scan(tree, full=True).entries
    assert entries is not None
    try:
        copy_entries(entries, target)
    except OSError as exc:
        raise _error(exc) from None
    except BuildError as exc:
        raise BuildError(f"cannot prepare the build context for RUN --mount: {exc.message}") from None
