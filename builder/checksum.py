"""Content checksums of COPY/ADD sources, for build cache keys.

The checksum of a set of sources covers exactly what the copy would read (the
same :func:`~.context.select_sources` and :func:`~.context.walk_selection`):

* a file: its content digest, mode (permission and type bits), uid, gid and
  xattrs;
* a symlink: its target, mode, uid, gid, xattrs;
* a directory: its own metadata plus the sorted ``(name, digest)`` records of
  the children it keeps (ignored and ``--exclude``\\ d paths are left out);
* other kinds: mode, ids, xattrs and the device number.

Timestamps are never part of it: ``touch`` keeps a checksum, an edit, chmod,
chown or symlink retarget changes it. ``security.selinux`` (a host label) and
overlay-private xattrs are left out, as the copy leaves them out.

Reading file contents is the expensive part, so content digests are memoised
in a SQLite database (``<store root>/builder/checksums.db``, WAL mode, so
concurrent builds share it) keyed by path and identity: device, inode, size,
mtime and ctime in nanoseconds. A rebuild of an unchanged context stats every
file and reads none. A file modified within :data:`RACY_NS` of being hashed is
not memoised (its timestamps could fail to show a later write in the same
clock tick, the "racily clean" case git has too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pybuild.errors import BuildError
from pybuild.linux import safefs as _safefs

from .context import Entry, SourceTree, select_sources, walk_selection
from .dockerignore import Matcher

__all__ = ["RACY_NS", "ChecksumCache", "checksum_entries", "checksum_sources", "file_digest", "xattr_items"]

RACY_NS = 100_000_000
_SKIP_XATTRS = ("security.selinux",)
_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL,
    used INTEGER NOT NULL
) WITHOUT ROWID
"""


def file_digest(path: str) -> str:
    """sha256 of a regular file's content (opened without following a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildError(f"cannot checksum {path}: not a regular file")
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
        return "sha256:" + h.hexdigest()
    finally:
        os.close(fd)


def xattr_items(path: str) -> list[tuple[str, bytes]]:
    """The xattrs a copy carries (sorted), read without following a symlink."""
    return [(name, value) for name, value in _safefs.read_xattrs(path)
            if name not in _SKIP_XATTRS and not name.startswith(_SKIP_XATTR_PREFIXES)]


class ChecksumCache:
    """Content digests memoised by file identity in a SQLite database (safe across processes)."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.path = Path(db_path)
        self.hits = 0
        self.misses = 0
        self._pending: list[tuple[str, int, int, int, int, int, str, int]] = []
        self._rows: dict[str, tuple[tuple[int, ...], str]] = {}
        self._preloaded: list[str] = []
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_store(cls, store_root: str | os.PathLike[str]) -> ChecksumCache:
        """The cache of a store: ``<root>/builder/checksums.db``."""
        return cls(Path(store_root) / "builder" / "checksums.db")

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for attempt in (0, 1):
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                self._conn = conn
                return conn
            except sqlite3.DatabaseError:
                if attempt:
                    raise
                # A corrupt memo is worth nothing: start a new one.
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(str(self.path) + suffix)
        raise AssertionError("unreachable")

    @staticmethod
    def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def preload(self, directory: str) -> None:
        """Read the rows of every file below ``directory`` in one query (lookups then stay in memory)."""
        prefix = directory.rstrip("/") + "/"
        if prefix in self._preloaded:
            return
        upper = prefix[:-1] + chr(ord("/") + 1)
        try:
            rows = self._connect().execute(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM files WHERE path >= ? AND path < ?",
                (prefix, upper),
            ).fetchall()
        except sqlite3.OperationalError:
            return
        if prefix not in self._preloaded:
            self._preloaded.append(prefix)
        for row in rows:
            self._rows[row[0]] = (tuple(row[1:6]), row[6])

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        """The memoised content digest of ``path`` if its identity is still ``st``."""
        if any(path.startswith(p) for p in self._preloaded):
            hit = self._rows.get(path)
            if hit is None or hit[0] != self._key(st):
                return None
            return hit[1]
        try:
            row = self._connect().execute(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM files WHERE path = ?", (path,)
            ).fetchone()
        except sqlite3.OperationalError:
            return None  # locked for longer than the timeout: compute instead
        if row is None or tuple(row[:5]) != self._key(st):
            return None
        return str(row[5])

    def remember(self, path: str, st: os.stat_result, digest: str) -> None:
        """Queue ``digest`` for ``path`` (written by :meth:`flush`), unless the file is racily new."""
        now = time.time_ns()
        if now - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
            return
        self._pending.append((path, *self._key(st), digest, now // 1_000_000_000))

    def flush(self) -> None:
        """Write the queued digests in one transaction (best effort: a locked database skips it)."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        for row in rows:
            if row[0] in self._rows or any(row[0].startswith(p) for p in self._preloaded):
                self._rows[row[0]] = (tuple(row[1:6]), row[6])
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            pass

    def content_digest(self, path: str, st: os.stat_result) -> str:
        """The content digest of the regular file ``path`` (lstat ``st``), memoised."""
        cached = self.lookup(path, st)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        digest = file_digest(path)
        after = os.lstat(path)
        if self._key(after) == self._key(st):
            self.remember(path, st, digest)
        return digest

    def prune(self, keep: int = 1_000_000) -> int:
        """Drop the least recently used rows beyond ``keep``; returns how many went."""
        conn = self._connect()
        cur = conn.execute(
            "DELETE FROM files WHERE path IN (SELECT path FROM files ORDER BY used DESC LIMIT -1 OFFSET ?)",
            (keep,),
        )
        return cur.rowcount

    def close(self) -> None:
        self.flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ChecksumCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- records


def _fields(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(8, "big") + f for f in fields)


def _meta(st: os.stat_result, host: str) -> bytes:
    xattrs = b"".join(_fields(os.fsencode(k), v) for k, v in xattr_items(host))
    return _fields(b"%o" % st.st_mode, b"%d" % st.st_uid, b"%d" % st.st_gid, xattrs)


def _leaf_digest(entry: Entry, cache: ChecksumCache | None) -> str:
    st = entry.st
    mode = st.st_mode
    if stat.S_ISREG(mode):
        content = cache.content_digest(entry.host, st) if cache is not None else file_digest(entry.host)
        body = _fields(b"file", _meta(st, entry.host), content.encode())
    elif stat.S_ISLNK(mode):
        body = _fields(b"symlink", _meta(st, entry.host), os.fsencode(os.readlink(entry.host)))
    else:
        body = _fields(b"other", _meta(st, entry.host), b"%d" % st.st_rdev)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def checksum_entries(entries: Sequence[Entry], cache: ChecksumCache | None = None,
                     files: dict[str, str] | None = None, prefix: str = "") -> str:
    """The digest of a walked tree (``entries`` in walk order, root first).

    ``files``, when given, receives ``prefix/rel -> digest`` of every non-directory entry.
    """
    children: dict[str, list[bytes]] = {}
    digests: dict[str, str] = {}
    for entry in reversed(entries):
        if entry.is_dir:
            kids = sorted(children.pop(entry.rel, []))
            body = _fields(b"dir", _meta(entry.st, entry.host), *kids)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        else:
            digest = _leaf_digest(entry, cache)
            if files is not None:
                files[prefix if entry.rel == "." else f"{prefix}/{entry.rel}"] = digest
        digests[entry.rel] = digest
        if entry.rel != ".":
            parent = entry.rel.rsplit("/", 1)[0] if "/" in entry.rel else "."
            children.setdefault(parent, []).append(_fields(os.fsencode(entry.name), digest.encode()))
    return digests["."]


def checksum_sources(tree: SourceTree, sources: Sequence[str], excludes: Iterable[str] = (),
                     cache: ChecksumCache | None = None, *, parents: bool = False,
                     keyword: str = "COPY", files: dict[str, str] | None = None) -> str:
    """``sha256:`` digest of what ``COPY [--parents] [--exclude...] sources...`` would copy from ``tree``.

    The names matter (a source's name decides where it lands), the order of
    the sources too; timestamps do not. Missing sources raise BuildError as
    the copy would.
    """
    exclude_matcher = Matcher(list(excludes))
    excl = exclude_matcher if exclude_matcher else None
    selections = select_sources(tree, list(sources), excludes=excl, parents=parents, keyword=keyword)
    h = hashlib.sha256(b"pybuild.copy.v1\0")
    if cache is not None:
        cache.preload(tree.root)
    try:
        for sel in selections:
            entries = walk_selection(tree, sel, excl)
            digest = checksum_entries(entries, cache, files, sel.source.path)
            h.update(_fields(os.fsencode(sel.pattern), os.fsencode(sel.source.path), digest.encode()))
    finally:
        if cache is not None:
            cache.flush()
    return "sha256:" + h.hexdigest()
