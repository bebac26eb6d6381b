"""The I/O pipeline of layer tars: tar bytes to a compressor and two digests, a compressed stream to tar bytes.

Writing, :class:`TarWriter` collects the tar in 1 MiB buffers, hashes them
(the diff-id) and feeds a compressor whose output is hashed too (the blob
digest), optionally in a background thread. Reading, :class:`Prefetch`
decompresses and hashes the stream in a background thread and
:class:`TarReader` gives byte-level access to it. ISA-L, zstd, hashlib and
file I/O release the GIL, so the two sides overlap.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import Any, BinaryIO

from pybuild.errors import LayerError, LayerTooLarge

from . import tarformat
from .compression import Compressor

BUF_SIZE = 1 << 20
_NBUFS = 4


class TarWriter:
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

    def copy_file(self, fd: int, size: int, name: bytes, pad_short: bool = False) -> None:
        """Append exactly ``size`` bytes read from ``fd``, then the block padding.

        A file that ends early is an error, or with ``pad_short`` made up with zeros.
        """
        remaining = size
        while remaining:
            if self._pos == BUF_SIZE:
                self._flush()
            k = min(BUF_SIZE - self._pos, remaining)
            n = os.readv(fd, [self._view[self._pos:self._pos + k]])
            if n <= 0:
                if not pad_short:
                    raise LayerError(f"{tarformat.show_name(name)}: file shrank while it was being read")
                self._view[self._pos:self._pos + k] = bytes(k)
                n = k
            self._pos += n
            remaining -= n
        pad = -size % tarformat.BLOCK
        if pad:
            self.write(tarformat.ZERO_BLOCK[:pad])

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


class Prefetch:
    """Reads (decompresses) the stream in a background thread, and hashes it.

    The hashing is done by the reading thread for a plain tar, and by the
    consuming thread when the reader also decompresses (which balances the
    work of the two threads better).
    """

    _EOF = object()

    def __init__(self, reader: BinaryIO, hash_in_thread: bool, limit: int | None = None) -> None:
        self._reader = reader
        self._hash_in_thread = hash_in_thread
        self._hash = hashlib.sha256()
        self.size = 0
        # bytes of the (decompressed) stream it may yield: more is LayerTooLarge, before the chunk is handed out
        self.limit = limit
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
        if self.limit is not None and self.size > self.limit:
            self._done = True
            raise LayerTooLarge(f"the layer tar expands past {self.limit} bytes")
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


class TarReader:
    """Byte-level access to the tar stream on top of the prefetched chunks."""

    def __init__(self, src: Prefetch) -> None:
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
        if pos + tarformat.BLOCK <= len(self._chunk):
            self._pos = pos + tarformat.BLOCK
            return self._chunk[pos:pos + tarformat.BLOCK]
        if pos == len(self._chunk) and not self._fill():
            return None
        return self.read_exact(tarformat.BLOCK)

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


