"""OCI layer tars: write one from an overlay upper dir, apply one into a layer dir.

Writing (:func:`write_layer`) walks a directory in sorted, depth-first order
and streams a PAX tar through a compressor in one pass, computing both the
diff-id (sha256 of the tar) and the blob digest (sha256 of the compressed
bytes). Overlay whiteouts (char devices 0/0) become ``.wh.<name>`` files and
opaque directories (``trusted.overlay.opaque=y``) get a ``.wh..wh..opq``
entry, as the OCI image-spec and Docker's overlay2 driver do.

Applying (:func:`apply_layer`) treats the tar as hostile: every filesystem
change is made relative to directory file descriptors opened with
``O_NOFOLLOW``, so no entry can write through a symlink or outside the target
(see :class:`pybuild.linux.safefs.DirChain`). Whiteouts are turned back into overlay form.
The tar is parsed here rather than with :mod:`tarfile`, which keeps names as
bytes (no encoding round trips), rejects what we do not support and lets file
data go from the decompressor to ``os.write`` without extra copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pybuild.errors import DigestMismatch, LayerError, UnsafeLayerError
from pybuild.linux import safefs as _safefs
from pybuild.linux.fsutil import ENTER, LEAVE, WalkEntry, walk
from pybuild.records import record

from . import digest as _digest
from .compression import Compression, Compressor, open_compressor, open_decompressed

__all__ = [
    "AppliedLayer",
    "LayerBlob",
    "apply_layer",
    "write_layer",
    "WHITEOUT_PREFIX",
    "WHITEOUT_OPAQUE",
    "OVERLAY_OPAQUE_XATTR",
]

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
BUF_SIZE = 1 << 20
_NBUFS = 4

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.")
# Xattrs that describe the host rather than the image: never put into a layer.
_SKIP_XATTRS_ON_WRITE = ("security.selinux",)

_PAX_NAME = b"././@PaxHeader"
_MAX_OCTAL_7 = 0o7777777
_MAX_OCTAL_11 = 0o77777777777
_MAX_META_SIZE = 16 << 20  # PAX / GNU long-name data kept in memory
_MAX_LONGNAME = 1 << 20

_REGTYPE = b"0"
_AREGTYPE = b"\0"
_LNKTYPE = b"1"
_SYMTYPE = b"2"
_CHRTYPE = b"3"
_BLKTYPE = b"4"
_DIRTYPE = b"5"
_FIFOTYPE = b"6"
_CONTTYPE = b"7"
_PAX_TYPE = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"
_HEADER_ONLY = frozenset((_LNKTYPE, _SYMTYPE, _CHRTYPE, _BLKTYPE, _DIRTYPE, _FIFOTYPE))


@record(frozen=True)
class LayerBlob:
    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the bytes written to `out`
    size: int  # bytes written to `out`
    uncompressed_size: int
    media_type: str


@record(frozen=True)
class AppliedLayer:
    diff_id: str  # sha256 of the uncompressed stream, read to its end
    size: int  # uncompressed size in bytes
    entries: int = 0  # tar entries applied (metadata headers not counted)


# =========================================================================== writing


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def _ustar(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """One ustar header block; every value must already fit its field."""
    head = b"".join((
        name.ljust(100, b"\0"),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime),
        b"        ",
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(64),
        b"%07o\0%07o\0" % (devmajor, devminor),
        bytes(167),
    ))
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


def _is_pax_safe(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _header(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """The header block(s) of one entry: a PAX extended header first when needed."""
    records: dict[bytes, bytes] = {}
    if len(name) > 100 or not name.isascii():
        records[b"path"] = name
        name = name[:100]
    if len(linkname) > 100 or not linkname.isascii():
        records[b"linkpath"] = linkname
        linkname = linkname[:100]
    if uid > _MAX_OCTAL_7:
        records[b"uid"] = b"%d" % uid
        uid = 0
    if gid > _MAX_OCTAL_7:
        records[b"gid"] = b"%d" % gid
        gid = 0
    if size > _MAX_OCTAL_11:
        records[b"size"] = b"%d" % size
        size = 0
    if mtime < 0 or mtime > _MAX_OCTAL_11:
        records[b"mtime"] = b"%d" % mtime
        mtime = 0
    if devmajor > _MAX_OCTAL_7 or devminor > _MAX_OCTAL_7:
        raise LayerError(f"device number {devmajor}:{devminor} does not fit a tar header")
    if xattrs:
        for key, value in xattrs:
            records[b"SCHILY.xattr." + key] = value
    head = _ustar(name, mode, uid, gid, size, mtime, typeflag, linkname, devmajor, devminor)
    if not records:
        return head
    if not all(_is_pax_safe(v) for k, v in records.items() if k in (b"path", b"linkpath")):
        records[b"hdrcharset"] = b"BINARY"
    data = b"".join(_pax_record(k, records[k]) for k in sorted(records))
    pad = -len(data) % BLOCK
    return _ustar(_PAX_NAME, 0o644, 0, 0, len(data), 0, _PAX_TYPE) + data + bytes(pad) + head


class _TarOut:
    """Collects the tar in 1 MiB buffers, hashes it and feeds a compressor.

    With ``threaded`` the compressor runs in a background thread (ISA-L,
    zstd, hashlib and file I/O release the GIL), so reading files and
    building headers overlap with compression.
    """

    def __init__(self, compressor: Compressor, threaded: bool, hash_tar: bool = True) -> None:
        self._compressor = compressor
        self._hash = hashlib.sha256() if hash_tar else None
        self.size = 0
        self._threaded = threaded
        self._error: BaseException | None = None
        if threaded:
            self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
            for _ in range(_NBUFS):
                self._free.put(bytearray(BUF_SIZE))
            self._work: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="layer-compress", daemon=True)
            self._thread.start()
            self._buf = self._free.get()
        else:
            self._buf = bytearray(BUF_SIZE)
        self._view = memoryview(self._buf)
        self._pos = 0

    # -- worker
    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            buf, n = item
            try:
                if self._error is None:
                    self._compressor.write(memoryview(buf)[:n])
            except BaseException as exc:  # handed to the producer
                self._error = exc
            finally:
                self._free.put(buf)

    def _check(self) -> None:
        exc = self._error
        if exc is not None:
            if isinstance(exc, OSError):
                raise LayerError(f"cannot write layer: {exc.strerror or exc}") from exc
            raise exc

    def _flush(self) -> None:
        n = self._pos
        if not n:
            return
        if self._hash is not None:
            self._hash.update(self._view[:n])
        self.size += n
        if self._threaded:
            self._check()
            self._work.put((self._buf, n))
            self._buf = self._free.get()
            self._view = memoryview(self._buf)
        else:
            try:
                self._compressor.write(self._view[:n])
            except OSError as exc:
                raise LayerError(f"cannot write layer: {exc.strerror or exc}") from exc
        self._pos = 0

    def write(self, data: bytes) -> None:
        n = len(data)
        pos = self._pos
        if pos + n <= BUF_SIZE:
            self._view[pos:pos + n] = data
            self._pos = pos + n
            return
        mv = memoryview(data)
        off = 0
        while off < n:
            room = BUF_SIZE - self._pos
            k = min(room, n - off)
            self._view[self._pos:self._pos + k] = mv[off:off + k]
            self._pos += k
            off += k
            if self._pos == BUF_SIZE:
                self._flush()

    def copy_file(self, fd: int, size: int, name: bytes) -> None:
        """Append exactly ``size`` bytes read from ``fd``, then the block padding."""
        remaining = size
        while remaining:
            if self._pos == BUF_SIZE:
                self._flush()
            k = min(BUF_SIZE - self._pos, remaining)
            n = os.readv(fd, [self._view[self._pos:self._pos + k]])
            if n <= 0:
                raise LayerError(f"{_show(name)}: file shrank while it was being read")
            self._pos += n
            remaining -= n
        pad = -size % BLOCK
        if pad:
            self.write(ZERO_BLOCK[:pad])

    def finish(self) -> None:
        self._flush()
        if self._threaded:
            self._work.put(None)
            self._thread.join()
            self._check()

    def abort(self) -> None:
        if self._threaded and self._thread.is_alive():
            self._error = self._error or LayerError("aborted")
            self._work.put(None)
            self._thread.join()

    def digest(self) -> str:
        assert self._hash is not None
        return "sha256:" + self._hash.hexdigest()


def _show(name: bytes | str) -> str:
    if isinstance(name, str):
        return name
    return name.decode("utf-8", "backslashreplace")


def _xattrs_of(target: bytes | int) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The xattrs to record for an entry (sorted) and whether it is an opaque dir.

    ``target`` is the entry's open descriptor, or a path that names it
    without following it (``WalkEntry.proc_path``).
    """
    out: list[tuple[bytes, bytes]] = []
    opaque = False
    for attr, value in _safefs.read_xattrs(target):
        if attr == OVERLAY_OPAQUE_XATTR:
            opaque = value == b"y"
        elif attr not in _SKIP_XATTRS_ON_WRITE and not attr.startswith("trusted.overlay."):
            out.append((os.fsencode(attr), value))
    return out, opaque


def _walk_into(root: bytes, tw: _TarOut, epoch: int | None) -> None:
    """Archive the tree below ``root``: iteratively, through directory descriptors (fsutil.walk), so
    neither its depth nor a symlink swapped in while it is read (a live container's root) can make
    the tar hold something from outside it."""
    links: dict[tuple[int, int], bytes] = {}
    open_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    entry: WalkEntry | None = None
    try:
        for event, entry in walk(root or b"/"):
            if event == LEAVE:
                continue
            name, rel, st = entry.name, entry.rel, entry.st
            mode = st.st_mode
            fmt = stat.S_IFMT(mode)
            perm = mode & 0o7777
            mtime = st.st_mtime_ns // 1_000_000_000
            if epoch is not None and mtime > epoch:
                mtime = epoch
            uid, gid = st.st_uid, st.st_gid
            reldir = rel[: len(rel) - len(name)]

            if fmt == stat.S_IFCHR and st.st_rdev == 0:
                # overlay whiteout -> .wh.<name> (empty regular file), as moby does
                tw.write(_header(reldir + WHITEOUT_PREFIX + name, 0o600, uid, gid, 0, mtime, _REGTYPE))
                continue
            if fmt == stat.S_IFSOCK:
                continue  # sockets cannot be archived (tar skips them too)

            if event == ENTER:
                xattrs, opaque = _xattrs_of(entry.fd)
                tw.write(_header(rel + b"/", perm, uid, gid, 0, mtime, _DIRTYPE, xattrs=xattrs))
                if opaque:
                    tw.write(_header(rel + b"/" + WHITEOUT_OPAQUE, perm & 0o777, uid, gid, 0,
                                     mtime, _REGTYPE))
                continue

            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = links.get(key)
                if first is not None:
                    tw.write(_header(rel, perm, uid, gid, 0, mtime, _LNKTYPE, first))
                    continue
                links[key] = rel

            if fmt == stat.S_IFREG:
                fd = os.open(name, open_flags, dir_fd=entry.parent_fd)
                try:
                    fst = os.fstat(fd)
                    if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
                        raise LayerError(f"{_show(rel)}: file changed while it was being read")
                    xattrs, _ = _xattrs_of(fd)
                    size = st.st_size
                    tw.write(_header(rel, perm, uid, gid, size, mtime, _REGTYPE, xattrs=xattrs))
                    tw.copy_file(fd, size, rel)
                finally:
                    os.close(fd)
                continue
            xattrs, _ = _xattrs_of(entry.proc_path)
            if fmt == stat.S_IFLNK:
                target = os.readlink(name, dir_fd=entry.parent_fd)
                tw.write(_header(rel, perm, uid, gid, 0, mtime, _SYMTYPE, target, xattrs=xattrs))
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                typeflag = _CHRTYPE if fmt == stat.S_IFCHR else _BLKTYPE
                tw.write(_header(rel, perm, uid, gid, 0, mtime, typeflag, b"",
                                 os.major(st.st_rdev), os.minor(st.st_rdev), xattrs=xattrs))
            elif fmt == stat.S_IFIFO:
                tw.write(_header(rel, perm, uid, gid, 0, mtime, _FIFOTYPE, xattrs=xattrs))
            else:
                raise LayerError(f"{_show(rel)}: unsupported file type {fmt:o}")
    except OSError as exc:
        where = _show(os.path.join(root, entry.rel)) if entry is not None else _show(root)
        raise LayerError(f"cannot archive {where}: {exc.strerror or exc}") from exc


def write_layer(
    src_dir: str | Path,
    out: BinaryIO,
    compression: Compression = Compression.GZIP,
    *,
    source_date_epoch: int | None = None,
) -> LayerBlob:
    """Write ``src_dir`` (an overlay upper dir or a layer ``diff/`` dir) as a layer tar.

    The same tree always gives the same bytes. With ``source_date_epoch``,
    mtimes later than it are clamped to it. ``out`` is written to, not closed.
    """
    root = os.fsencode(os.fspath(src_dir)).rstrip(b"/") or b"/"
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise LayerError(f"cannot archive {_show(root)}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise LayerError(f"cannot archive {_show(root)}: not a directory")
    if root == b"/":
        root = b""
    epoch = None if source_date_epoch is None else int(source_date_epoch)

    sink = _digest.HashingWriter(out)
    compressor = open_compressor(sink, compression)
    plain = compression is Compression.NONE
    tw = _TarOut(compressor, threaded=not plain, hash_tar=not plain)
    try:
        _walk_into(root or b"", tw, epoch)
        tw.write(bytes(2 * BLOCK))  # end-of-archive marker
        tw.finish()
    except BaseException:
        tw.abort()
        raise
    try:
        compressor.close()
        sink.flush()
    except OSError as exc:
        raise LayerError(f"cannot write layer: {exc.strerror or exc}") from exc
    diff_id = sink.digest() if plain else tw.digest()
    return LayerBlob(
        diff_id=diff_id,
        digest=sink.digest(),
        size=sink.size,
        uncompressed_size=tw.size,
        media_type=compression.media_type,
    )


# =========================================================================== reading


class _Prefetch:
    """Reads (decompresses) the stream in a background thread, and hashes it.

    The hashing is done by the reading thread for a plain tar, and by the
    consuming thread when the reader also decompresses (which balances the
    work of the two threads better).
    """

    _EOF = object()

    def __init__(self, reader: BinaryIO, hash_in_thread: bool) -> None:
        self._reader = reader
        self._hash_in_thread = hash_in_thread
        self._hash = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="layer-read", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            read = self._reader.read
            while not self._stop.is_set():
                chunk = read(BUF_SIZE)
                if not chunk:
                    self._put(self._EOF)
                    return
                if self._hash_in_thread:
                    self._hash.update(chunk)
                self._put(chunk)
        except BaseException as exc:
            self._put(exc)

    def next(self) -> bytes | None:
        """The next chunk, or None at the end of the stream."""
        if self._done:
            return None
        item = self._queue.get()
        if item is self._EOF:
            self._done = True
            self._thread.join()
            return None
        if isinstance(item, BaseException):
            self._done = True
            if isinstance(item, LayerError):
                raise item
            raise LayerError(f"cannot read layer: {item}") from item
        if not self._hash_in_thread:
            self._hash.update(item)
        self.size += len(item)
        return item  # type: ignore[no-any-return]

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def close(self) -> None:
        if not self._done or self._thread.is_alive():
            self._stop.set()
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=5)
            self._done = True


class _TarIn:
    """Byte-level access to the tar stream on top of the prefetched chunks."""

    def __init__(self, src: _Prefetch) -> None:
        self._src = src
        self._chunk = b""
        self._view = memoryview(b"")
        self._pos = 0

    def _fill(self) -> bool:
        chunk = self._src.next()
        if chunk is None:
            return False
        self._chunk = chunk
        self._view = memoryview(chunk)
        self._pos = 0
        return True

    def read_header(self) -> bytes | None:
        """The next 512-byte block, or None on a clean end of stream."""
        pos = self._pos
        if pos + BLOCK <= len(self._chunk):
            self._pos = pos + BLOCK
            return self._chunk[pos:pos + BLOCK]
        if pos == len(self._chunk) and not self._fill():
            return None
        return self.read_exact(BLOCK)

    def read_exact(self, n: int) -> bytes:
        pos = self._pos
        if pos + n <= len(self._chunk):
            self._pos = pos + n
            return self._chunk[pos:pos + n]
        parts = []
        while n:
            avail = len(self._chunk) - self._pos
            if not avail:
                if not self._fill():
                    raise LayerError("layer tar is truncated")
                continue
            k = min(avail, n)
            parts.append(self._chunk[self._pos:self._pos + k])
            self._pos += k
            n -= k
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n:
            avail = len(self._chunk) - self._pos
            if not avail:
                if not self._fill():
                    raise LayerError("layer tar is truncated")
                continue
            k = min(avail, n)
            self._pos += k
            n -= k

    def copy_to(self, fd: int, n: int) -> None:
        write = os.write
        while n:
            avail = len(self._chunk) - self._pos
            if not avail:
                if not self._fill():
                    raise LayerError("layer tar is truncated")
                continue
            k = min(avail, n)
            view = self._view[self._pos:self._pos + k]
            done = 0
            while done < k:
                done += write(fd, view[done:])
            self._pos += k
            n -= k

    def drain(self) -> None:
        self._chunk = b""
        self._view = memoryview(b"")
        self._pos = 0
        while self._src.next() is not None:
            pass


def _parse_number(field: bytes, what: str) -> int:
    if field[-1:] in (b"\0", b" ") and field[:1].isdigit():
        try:  # fast path: "0000644\0"
            return int(field[:-1], 8)
        except ValueError:
            pass
    if field and field[0] & 0x80:
        # GNU base-256: big-endian two's complement, first byte 0x80 (+) or 0xff (-)
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        elif field[0] != 0x80:
            raise LayerError(f"invalid {what} field in tar header")
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(f"invalid {what} field in tar header") from None


def _parse_pax(data: bytes, into: dict[bytes, bytes]) -> None:
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # NUL padding some writers leave
            break
        sp = data.find(b" ", pos, min(end, pos + 20))
        if sp < 0:
            raise LayerError("invalid PAX header in layer tar")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError("invalid PAX header in layer tar") from None
        stop = pos + length
        if length <= sp - pos + 1 or stop > end or data[stop - 1] != 0x0A:
            raise LayerError("invalid PAX header in layer tar")
        record = data[sp + 1:stop - 1]
        key, eq, value = record.partition(b"=")
        if not eq or not key:
            raise LayerError("invalid PAX header in layer tar")
        into[key] = value
        pos = stop


def _pax_int(value: bytes, what: str) -> int:
    if not value.isdigit() or len(value) > 30:
        raise LayerError(f"invalid PAX {what} in layer tar")
    return int(value)


def _pax_time_ns(value: bytes) -> int:
    sec, _, frac = value.partition(b".")
    neg = sec.startswith(b"-")
    digits = sec[1:] if neg else sec
    if not digits.isdigit() or len(digits) > 20 or (frac and not frac.isdigit()):
        raise LayerError("invalid PAX mtime in layer tar")
    ns = int(digits) * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0"))
    return -ns if neg else ns


def _clean(name: bytes, shown: bytes) -> tuple[bytes, ...]:
    """Path components of a tar name, relative to the layer root.

    Leading ``/`` are dropped (absolute names are read relative to the
    target, as Docker does); ``.`` and empty components are dropped; ``..``
    is resolved lexically and must never climb above the root.
    """
    if b"\0" in name:
        raise UnsafeLayerError(f'layer entry "{_show(shown)}": name contains a NUL byte')
    parts: list[bytes] = []
    for comp in name.split(b"/"):
        if not comp or comp == b".":
            continue
        if comp == b"..":
            if not parts:
                raise UnsafeLayerError(f'layer entry "{_show(shown)}": path escapes the layer')
            parts.pop()
            continue
        parts.append(comp)
    return tuple(parts)


_DIR_FLAGS = _safefs.DIR_FLAGS
_FILE_FLAGS = _safefs.NEW_FILE_FLAGS
_create = _safefs.create_replacing
_remove = _safefs.remove_at


@contextlib.contextmanager
def _entry_path(shown: bytes) -> Iterator[None]:
    """Word a directory that is not one, met on the way to layer entry ``shown``, as a layer error."""
    try:
        yield
    except _safefs.SymlinkInPath as exc:
        raise UnsafeLayerError(
            f'layer entry "{_show(shown)}": path goes through symlink "{exc.filename}"') from None
    except NotADirectoryError as exc:
        raise LayerError(f'layer entry "{_show(shown)}": "{exc.filename}" is not a directory') from None


class _Applier:
    def __init__(self, root_fd: int) -> None:
        self.dirs = _safefs.DirChain(root_fd)
        self.root_fd = root_fd
        self.is_root = os.geteuid() == 0
        # (path, mtime, mode to set at the end or None): directory metadata that
        # must wait until nothing more is written into the directory.
        self.dir_times: list[tuple[tuple[bytes, ...], int, int | None]] = []

    def parent(self, parts: tuple[bytes, ...], shown: bytes, create: bool = True) -> int:
        """The descriptor of directory ``parts`` (made when missing with ``create``) for entry ``shown``."""
        with _entry_path(shown):
            return self.dirs.parent(parts, create)

    # -- metadata helpers
    def _chown(self, target: int | bytes, uid: int, gid: int, dir_fd: int | None) -> None:
        try:
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        except PermissionError:
            if self.is_root:
                raise

    def _xattrs(self, target: int | bytes, xattrs: list[tuple[bytes, bytes]]) -> None:
        # never let a tar forge overlay whiteouts / redirects
        _safefs.write_xattrs(target, [(k, v) for k, v in xattrs
                                      if k and b"\0" not in k and not k.startswith(_OVERLAY_XATTR_PREFIXES)])

    # -- entries
    def regular(self, pfd: int, leaf: bytes, rd: _TarIn, size: int, e: _Entry) -> None:
        fd = _create(lambda: os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd), pfd, leaf)
        try:
            if size:
                rd.copy_to(fd, size)
            self._chown(fd, e.uid, e.gid, None)
            os.fchmod(fd, e.mode)
            if e.xattrs:
                self._xattrs(fd, e.xattrs)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def directory(self, parent: tuple[bytes, ...], pfd: int, leaf: bytes, e: _Entry) -> None:
        try:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                _remove(pfd, leaf)
                os.mkdir(leaf, 0o700, dir_fd=pfd)
        fd = os.open(leaf, _DIR_FLAGS, dir_fd=pfd)
        # Without root, a read-only directory could not be filled: keep it
        # writable for us until the end.
        late_mode = None if self.is_root or e.mode & 0o700 == 0o700 else e.mode
        try:
            self._chown(fd, e.uid, e.gid, None)
            os.fchmod(fd, e.mode if late_mode is None else e.mode | 0o700)
            if e.xattrs:
                self._xattrs(fd, e.xattrs)
        except BaseException:
            os.close(fd)
            raise
        # The next entries are most likely inside this directory: keep its fd.
        self.dirs.push(leaf, fd)
        self.dir_times.append((parent + (leaf,), e.mtime_ns, late_mode))

    def symlink(self, pfd: int, leaf: bytes, e: _Entry) -> None:
        if not e.linkname or b"\0" in e.linkname:
            raise LayerError(f'layer entry "{_show(e.name)}": invalid symlink target')
        _create(lambda: os.symlink(e.linkname, leaf, dir_fd=pfd), pfd, leaf)
        self._chown(leaf, e.uid, e.gid, pfd)
        if e.xattrs:
            self._xattrs(b"/proc/self/fd/%d/%s" % (pfd, leaf), e.xattrs)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def hardlink(self, parts: tuple[bytes, ...], pfd: int, leaf: bytes, e: _Entry) -> None:
        target = _clean(e.linkname, e.name)
        if not target:
            raise UnsafeLayerError(f'layer entry "{_show(e.name)}": hardlink to the layer root')
        if target == parts:
            return
        try:
            with _entry_path(e.name):
                src_fd = _safefs.open_dir_path(self.root_fd, target[:-1])
        except FileNotFoundError:
            raise UnsafeLayerError(
                f'layer entry "{_show(e.name)}": hardlink target "{_show(e.linkname)}" '
                "does not exist in the layer"
            ) from None
        try:
            src = target[-1]

            def link() -> None:
                os.link(src, leaf, src_dir_fd=src_fd, dst_dir_fd=pfd, follow_symlinks=False)

            try:
                _create(link, pfd, leaf)
            except FileNotFoundError:
                raise UnsafeLayerError(
                    f'layer entry "{_show(e.name)}": hardlink target "{_show(e.linkname)}" '
                    "does not exist in the layer"
                ) from None
        finally:
            os.close(src_fd)

    def special(self, pfd: int, leaf: bytes, e: _Entry) -> None:
        if e.typeflag == _FIFOTYPE:
            fmt = stat.S_IFIFO
            dev = 0
        else:
            if not self.is_root:
                return  # device nodes need root: skipped, as unprivileged tar does
            fmt = stat.S_IFCHR if e.typeflag == _CHRTYPE else stat.S_IFBLK
            dev = os.makedev(e.devmajor, e.devminor)
        try:
            _create(lambda: os.mknod(leaf, fmt | 0o600, dev, dir_fd=pfd), pfd, leaf)
        except PermissionError:
            if fmt != stat.S_IFIFO:
                return  # e.g. root in a user namespace without CAP_MKNOD
            raise
        self._chown(leaf, e.uid, e.gid, pfd)
        # Just created by us as a non-symlink: chmod by name is safe here.
        os.chmod(leaf, e.mode, dir_fd=pfd)
        if e.xattrs:
            self._xattrs(b"/proc/self/fd/%d/%s" % (pfd, leaf), e.xattrs)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def whiteout(self, pfd: int, victim: bytes, e: _Entry) -> None:
        def make() -> None:
            os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)

        try:
            _create(make, pfd, victim)
        except PermissionError as exc:
            raise LayerError(
                f'layer entry "{_show(e.name)}": cannot create an overlay whiteout',
                "creating whiteouts needs root (CAP_MKNOD)",
            ) from exc
        self._chown(victim, e.uid, e.gid, pfd)
        os.utime(victim, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def opaque(self, pfd: int, e: _Entry) -> None:
        try:
            os.setxattr(pfd, OVERLAY_OPAQUE_XATTR, b"y")
        except OSError as exc:
            raise LayerError(
                f'layer entry "{_show(e.name)}": cannot mark the directory opaque: {exc.strerror}',
                "setting trusted.* xattrs needs root (CAP_SYS_ADMIN)",
            ) from exc

    def finish(self) -> None:
        """Set directory mtimes (and late modes), children before their parents."""
        for parts, mtime_ns, late_mode in reversed(self.dir_times):
            try:
                pfd = self.parent(parts[:-1], b"/".join(parts), create=False)
                if late_mode is None:
                    os.utime(parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=pfd,
                             follow_symlinks=False)
                    continue
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=pfd)
                try:
                    os.fchmod(fd, late_mode)
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
            except (OSError, LayerError):
                continue  # replaced or removed by a later entry
        self.dirs.close()


class _Entry:
    __slots__ = ("name", "typeflag", "mode", "uid", "gid", "size", "mtime_ns", "linkname",
                 "devmajor", "devminor", "xattrs")

    name: bytes
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: list[tuple[bytes, bytes]]

    def __init__(self) -> None:
        self.xattrs = []
        self.devmajor = self.devminor = 0


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip(b" ") or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block) - sum(
        b - 256 if b > 127 else b for b in block[148:156]) + 256
    return stored == signed


def _read_entries(rd: _TarIn) -> Iterator[tuple[_Entry, int]]:
    """Yield (entry, data size) per tar member; the caller consumes the data."""
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        block = rd.read_header()
        if block is None or block == ZERO_BLOCK:
            return  # end of archive (the rest is drained by the caller)
        if len(block) != BLOCK or not _checksum_ok(block):
            raise LayerError("invalid tar header in layer (bad checksum)")
        typeflag = block[156:157]
        size = _parse_number(block[124:136], "size")
        if size < 0:
            raise LayerError("invalid tar header in layer (negative size)")
        padding = -size % BLOCK

        if typeflag in (_PAX_TYPE, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
            limit = _MAX_META_SIZE if typeflag in (_PAX_TYPE, _PAX_GLOBAL) else _MAX_LONGNAME
            if size > limit:
                raise LayerError("layer tar has an oversized extended header")
            data = rd.read_exact(size)
            rd.skip(padding)
            if typeflag == _PAX_TYPE:
                _parse_pax(data, pax)
            elif typeflag == _GNU_LONGNAME:
                long_name = data.split(b"\0", 1)[0]
            elif typeflag == _GNU_LONGLINK:
                long_link = data.split(b"\0", 1)[0]
            # PAX global headers are ignored, as Docker does.
            continue

        e = _Entry()
        magic = block[257:265]
        name = block[0:100].split(b"\0", 1)[0]
        if magic[:6] == b"ustar\0":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        linkname = block[157:257].split(b"\0", 1)[0]
        if long_link is not None:
            linkname = long_link
        uid = _parse_number(block[108:116], "uid")
        gid = _parse_number(block[116:124], "gid")
        mtime_ns = _parse_number(block[136:148], "mtime") * 1_000_000_000
        if pax:
            for key, value in pax.items():
                if key == b"path":
                    if value:
                        name = value
                elif key == b"linkpath":
                    if value:
                        linkname = value
                elif key == b"size":
                    size = _pax_int(value, "size")
                    padding = -size % BLOCK
                elif key == b"uid":
                    uid = _pax_int(value, "uid")
                elif key == b"gid":
                    gid = _pax_int(value, "gid")
                elif key == b"mtime":
                    mtime_ns = _pax_time_ns(value)
                elif key.startswith(b"SCHILY.xattr."):
                    e.xattrs.append((key[13:], value))
                elif key.startswith(b"GNU.sparse."):
                    raise LayerError(
                        f'layer entry "{_show(name)}": sparse files are not supported')
            pax = {}
        long_name = long_link = None

        if typeflag == _AREGTYPE and name.endswith(b"/"):
            typeflag = _DIRTYPE
        elif typeflag in (_AREGTYPE, _CONTTYPE):
            typeflag = _REGTYPE
        if typeflag in _HEADER_ONLY:
            size = padding = 0
        if uid < 0 or gid < 0:
            raise LayerError(f'layer entry "{_show(name)}": negative uid/gid')
        e.name = name
        e.typeflag = typeflag
        e.mode = _parse_number(block[100:108], "mode") & 0o7777
        e.uid = uid
        e.gid = gid
        e.size = size
        e.mtime_ns = mtime_ns
        e.linkname = linkname
        if typeflag in (_CHRTYPE, _BLKTYPE):
            e.devmajor = _parse_number(block[329:337], "devmajor")
            e.devminor = _parse_number(block[337:345], "devminor")
            if not (0 <= e.devmajor < 1 << 32 and 0 <= e.devminor < 1 << 32):
                raise LayerError(f'layer entry "{_show(name)}": invalid device number')
        yield e, size
        # The consumer has read the data (or not): skip what is left + padding.
        rd.skip(padding)


def _apply_entry(ap: _Applier, rd: _TarIn, e: _Entry, size: int, whiteouts: bool = True) -> int:
    """Apply one entry; returns how many data bytes it consumed."""
    parts = _clean(e.name, e.name)
    if not parts:
        return 0  # the root itself ("./"): left as it is, like Docker
    parent, leaf = parts[:-1], parts[-1]

    if whiteouts and leaf.startswith(WHITEOUT_PREFIX):
        if leaf == WHITEOUT_OPAQUE:
            ap.opaque(ap.parent(parent, e.name), e)
        elif leaf.startswith(WHITEOUT_META_PREFIX):
            pass  # other AUFS metadata (.wh..wh.plnk etc.) is ignored, as Docker does
        else:
            victim = leaf[len(WHITEOUT_PREFIX):]
            if victim in (b"", b".", b".."):
                raise UnsafeLayerError(f'layer entry "{_show(e.name)}": invalid whiteout name')
            ap.whiteout(ap.parent(parent, e.name), victim, e)
        return 0

    t = e.typeflag
    pfd = ap.parent(parent, e.name)
    if t == _REGTYPE:
        ap.regular(pfd, leaf, rd, size, e)
        return size
    if t == _DIRTYPE:
        ap.directory(parent, pfd, leaf, e)
    elif t == _SYMTYPE:
        ap.symlink(pfd, leaf, e)
    elif t == _LNKTYPE:
        ap.hardlink(parts, pfd, leaf, e)
    elif t in (_CHRTYPE, _BLKTYPE, _FIFOTYPE):
        ap.special(pfd, leaf, e)
    else:
        raise LayerError(
            f'layer entry "{_show(e.name)}": unsupported tar entry type {t.decode("latin-1")!r}')
    return 0


def apply_layer(
    stream: BinaryIO,
    target_dir: str | Path,
    *,
    expected_diff_id: str | None = None,
    whiteouts: bool = True,
) -> AppliedLayer:
    """Extract a (possibly compressed) layer tar into ``target_dir``, in overlay form.

    ``.wh.<name>`` entries become whiteouts (char device 0/0) and
    ``.wh..wh..opq`` marks its directory opaque. Raises UnsafeLayerError for
    entries that would escape the target, LayerError for malformed input and
    DigestMismatch when the tar does not hash to ``expected_diff_id``. On any
    error the target is left partly written: the caller discards it.

    With ``whiteouts=False`` (a plain archive: ADD, a tar build context) no
    name is special: ``.wh.*`` entries are created as the files they are.
    ``trusted.overlay.*`` xattrs are refused either way.
    """
    if expected_diff_id is not None:
        _digest.validate(expected_diff_id)
    try:
        root_fd = os.open(os.fspath(target_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LayerError(f"cannot apply layer into {target_dir}: {exc.strerror or exc}") from exc
    reader = open_decompressed(stream)
    plain = getattr(reader, "compression", None) is Compression.NONE
    src = _Prefetch(reader, hash_in_thread=plain)
    ap = _Applier(root_fd)
    entries = 0
    try:
        rd = _TarIn(src)
        for e, size in _read_entries(rd):
            try:
                used = _apply_entry(ap, rd, e, size, whiteouts)
            except OSError as exc:
                raise LayerError(
                    f'layer entry "{_show(e.name)}": {exc.strerror or exc}') from exc
            if used < size:
                rd.skip(size - used)
            entries += 1
        rd.drain()  # hash everything, including what follows the end marker
        ap.finish()
    finally:
        ap.dirs.close()
        src.close()
        os.close(root_fd)
    diff_id = src.digest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DigestMismatch(
            f"layer diff-id mismatch: expected {expected_diff_id}, got {diff_id}")
    return AppliedLayer(diff_id=diff_id, size=src.size, entries=entries)
