"""Layer compression: detection by magic bytes, streaming (de)compressors.

Reading supports gzip (multi-member, via ISA-L), zstd (multi-frame), bzip2, xz
and uncompressed tars. Writing supports gzip (ISA-L, deterministic header: no
file name, mtime 0), zstd and no compression.

Everything the codecs raise on corrupt input is turned into
:class:`~pybuild.errors.LayerError`.
"""

from __future__ import annotations

import bz2
import contextlib
import enum
import io
import lzma
import struct
from typing import Any, BinaryIO, Protocol, cast

import zstandard
from isal import igzip, isal_zlib

from pybuild.errors import LayerError

CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
#: How many leading bytes :func:`detect` looks at.
MAGIC_LEN = 6

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MEDIA_TYPE_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_MEDIA_TYPE_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_MEDIA_TYPE_FOREIGN_TAR_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_MEDIA_TYPE_TAR_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

DEFAULT_GZIP_LEVEL = 1
DEFAULT_ZSTD_LEVEL = 3


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    BZIP2 = "bzip2"  # reading only
    XZ = "xz"  # reading only

    @property
    def media_type(self) -> str:
        """The OCI layer media type for this compression (writable codecs only)."""
        try:
            return _MEDIA_TYPES[self]
        except KeyError:
            raise LayerError(f"no OCI layer media type for {self.value} compression") from None

    @property
    def writable(self) -> bool:
        return self in _MEDIA_TYPES


_MEDIA_TYPES = {
    Compression.NONE: MEDIA_TYPE_TAR,
    Compression.GZIP: MEDIA_TYPE_TAR_GZIP,
    Compression.ZSTD: MEDIA_TYPE_TAR_ZSTD,
}

_FROM_MEDIA_TYPE = {
    MEDIA_TYPE_TAR: Compression.NONE,
    MEDIA_TYPE_TAR_GZIP: Compression.GZIP,
    MEDIA_TYPE_TAR_ZSTD: Compression.ZSTD,
    # Non-distributable variants (deprecated in the spec, still seen).
    "application/vnd.oci.image.layer.nondistributable.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Compression.ZSTD,
    DOCKER_MEDIA_TYPE_TAR: Compression.NONE,
    DOCKER_MEDIA_TYPE_TAR_GZIP: Compression.GZIP,
    DOCKER_MEDIA_TYPE_FOREIGN_TAR_GZIP: Compression.GZIP,
    DOCKER_MEDIA_TYPE_TAR_ZSTD: Compression.ZSTD,
}


def media_type_of(compression: Compression) -> str:
    return compression.media_type


def from_media_type(media_type: str) -> Compression:
    """The compression a layer media type announces; LayerError if it is not a layer type."""
    base = media_type.split(";", 1)[0].strip().lower()
    try:
        return _FROM_MEDIA_TYPE[base]
    except KeyError:
        raise LayerError(f"unsupported layer media type {media_type!r}") from None


def detect(head: bytes) -> Compression:
    """The compression of a stream starting with ``head`` (at least 6 bytes for xz)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    if head.startswith(BZIP2_MAGIC):
        return Compression.BZIP2
    if head.startswith(XZ_MAGIC):
        return Compression.XZ
    return Compression.NONE


# --------------------------------------------------------------------------- reading


class _RawAdapter(io.RawIOBase):
    """A raw stream over any object with ``read`` (and maybe ``readinto``).

    ``readinto`` fills the buffer fully unless EOF is reached, so a
    BufferedReader on top can always peek the few magic bytes.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream
        self._readinto = getattr(stream, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        total = 0
        want = len(view)
        while total < want:
            if self._readinto is not None:
                n = self._readinto(view[total:])
                if not n:
                    break
            else:
                data = self._stream.read(want - total)
                if not data:
                    break
                n = len(data)
                view[total:total + n] = data
            total += n
        return total


class _CodecErrors(io.RawIOBase):
    """Wraps a decompressing reader, turning codec errors into LayerError."""

    def __init__(self, inner: Any, compression: Compression) -> None:
        super().__init__()
        self._inner = inner
        self.compression = compression

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return cast(bytes, self._inner.read(size))
        except _CODEC_ERRORS as exc:
            raise LayerError(f"corrupt {self.compression.value} layer stream: {exc}") from exc

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            if hasattr(self._inner, "readinto"):
                return int(self._inner.readinto(view) or 0)
            data = self._inner.read(len(view))
        except _CODEC_ERRORS as exc:
            raise LayerError(f"corrupt {self.compression.value} layer stream: {exc}") from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(*_CODEC_ERRORS):
            self._inner.close()
        super().close()


_CODEC_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    cast("type[BaseException]", isal_zlib.error),
    zstandard.ZstdError,
    lzma.LZMAError,
)


class _ZstdFrameTracker:
    """Passes compressed zstd bytes through, following the frame structure.

    python-zstandard's stream reader reports a clean end of stream when its
    input stops in the middle of a frame; this tracker lets us tell a
    truncated stream from a complete one (see :meth:`check_complete`).
    """

    _MAGIC, _DESCRIPTOR, _BLOCK, _SKIP_SIZE = range(4)

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._state = self._MAGIC
        self._pending = b""  # bytes of a header being collected
        self._skip = 0  # payload bytes still to pass before the next header
        self._checksum = False
        self._after_skip = self._BLOCK

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)
        if data:
            self._scan(data)
        return data

    def _need(self) -> int:
        return {self._MAGIC: 4, self._DESCRIPTOR: 1, self._BLOCK: 3, self._SKIP_SIZE: 4}[self._state]

    def _scan(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                k = min(self._skip, end - pos)
                self._skip -= k
                pos += k
                if self._skip:
                    return
                self._state = self._after_skip
                continue
            need = self._need() - len(self._pending)
            self._pending += data[pos:pos + need]
            pos += min(need, end - pos)
            if len(self._pending) < self._need():
                return
            head, self._pending = self._pending, b""
            self._header(head)

    def _header(self, head: bytes) -> None:
        if self._state == self._MAGIC:
            magic = int.from_bytes(head, "little")
            if head == ZSTD_MAGIC:
                self._state = self._DESCRIPTOR
            elif magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
                self._state = self._SKIP_SIZE
            else:
                raise LayerError("corrupt zstd layer stream: bad frame magic")
        elif self._state == self._SKIP_SIZE:
            self._skip = int.from_bytes(head, "little")
            self._after_skip = self._MAGIC
            if not self._skip:
                self._state = self._MAGIC
        elif self._state == self._DESCRIPTOR:
            d = head[0]
            single_segment = (d >> 5) & 1
            self._checksum = bool((d >> 2) & 1)
            fcs = (1 if single_segment else 0, 2, 4, 8)[d >> 6]
            self._skip = (0 if single_segment else 1) + (0, 1, 2, 4)[d & 3] + fcs
            self._after_skip = self._BLOCK
            self._state = self._BLOCK
        else:  # block header
            b = int.from_bytes(head, "little")
            last, btype, size = b & 1, (b >> 1) & 3, b >> 3
            if btype == 3:
                raise LayerError("corrupt zstd layer stream: reserved block type")
            payload = 1 if btype == 1 else size
            if last:
                payload += 4 if self._checksum else 0
                self._after_skip = self._MAGIC
            else:
                self._after_skip = self._BLOCK
            self._skip = payload
            if not payload:
                self._state = self._after_skip

    def check_complete(self) -> None:
        if self._state != self._MAGIC or self._pending or self._skip:
            raise LayerError("corrupt zstd layer stream: truncated")


class _ZstdReader:
    """zstd stream reader (all frames) that fails on a truncated stream."""

    def __init__(self, raw: Any) -> None:
        self._tracker = _ZstdFrameTracker(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(Any, self._tracker), read_size=CHUNK, read_across_frames=True, closefd=False
        )
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        if self._eof:
            return b""
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        data: bytes = self._reader.read(size)
        if not data and size != 0:
            self._eof = True
            self._tracker.check_complete()
        return data

    def close(self) -> None:
        self._reader.close()  # type: ignore[no-untyped-call]


def _peekable(stream: Any) -> io.BufferedReader:
    return io.BufferedReader(_RawAdapter(stream), buffer_size=CHUNK)


def open_decompressed(stream: BinaryIO) -> BinaryIO:
    """A reader of the decompressed bytes of ``stream`` (codec chosen by magic bytes).

    ``stream`` needs only ``read``; it is not seeked and not closed. Corrupt
    compressed data raises :class:`LayerError` from the returned reader.
    """
    buffered = _peekable(stream)
    try:
        head = buffered.peek(MAGIC_LEN)[:MAGIC_LEN]
    except (OSError, ValueError) as exc:
        raise LayerError(f"cannot read layer stream: {exc}") from exc
    compression = detect(head)
    inner: Any
    if compression is Compression.GZIP:
        inner = igzip.IGzipFile(fileobj=buffered, mode="rb")  # type: ignore[no-untyped-call]
    elif compression is Compression.ZSTD:
        inner = _ZstdReader(buffered)
    elif compression is Compression.BZIP2:
        inner = bz2.BZ2File(buffered, "rb")  # noqa: SIM115 (returned to the caller)
    elif compression is Compression.XZ:
        inner = lzma.LZMAFile(buffered, "rb")  # noqa: SIM115 (returned to the caller)
    else:
        inner = buffered
    return cast(BinaryIO, _CodecErrors(inner, compression))


# --------------------------------------------------------------------------- writing


class Compressor(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def close(self) -> None: ...


class _Passthrough:
    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._sink.write(data)
        return len(data)

    def close(self) -> None:
        pass


class _GzipCompressor:
    """A single-member gzip stream: header with mtime 0, no name, OS 255.

    The data is deflated by ISA-L in pieces of 128 KiB, each ended with a
    sync flush (byte aligned, history kept). A piece that deflate cannot
    shrink by at least ~3% is written as stored blocks instead: the stream
    stays valid (a stored block puts the same bytes into the decoder's
    window as the compressed form would), is no larger, and decompresses
    about ten times faster than Huffman-coded random bytes.
    """

    PIECE = 128 << 10
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, sink: Any, level: int) -> None:
        self._sink = sink
        self._obj = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        self._closed = False
        sink.write(self.HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        compress = self._obj.compress
        flush = self._obj.flush
        sink_write = self._sink.write
        for off in range(0, total, self.PIECE):
            piece = view[off:off + self.PIECE]
            n = len(piece)
            out = compress(piece) + flush(isal_zlib.Z_SYNC_FLUSH)
            if len(out) <= n - (n >> 5):
                sink_write(out)
            else:
                sink_write(_stored_blocks(piece))
        self._crc = isal_zlib.crc32(view, self._crc)
        self._size += total
        return total

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            tail = self._obj.flush(isal_zlib.Z_FINISH)
            self._sink.write(tail + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


def _stored_blocks(piece: memoryview) -> bytes:
    """Non-final deflate stored blocks holding ``piece`` (stream must be byte aligned)."""
    parts: list[bytes | memoryview] = []
    for off in range(0, len(piece), 0xFFFF):
        block = piece[off:off + 0xFFFF]
        n = len(block)
        parts.append(struct.pack("<BHH", 0, n, n ^ 0xFFFF))
        parts.append(block)
    return b"".join(parts)


class _ZstdCompressor:
    def __init__(self, sink: Any, level: int) -> None:
        self._sink = sink
        self._obj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj(size=-1)
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        out = self._obj.compress(data)
        if out:
            self._sink.write(out)
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sink.write(self._obj.flush())


def open_compressor(sink: Any, compression: Compression, level: int | None = None) -> Compressor:
    """A writer that compresses into ``sink`` (anything with ``write``).

    ``close()`` finishes the compressed stream but does not close ``sink``.
    gzip levels are ISA-L's 0-3 (higher values are clamped to 3; default 1);
    zstd levels are zstd's (default 3).
    """
    if compression is Compression.NONE:
        return _Passthrough(sink)
    if compression is Compression.GZIP:
        lvl = DEFAULT_GZIP_LEVEL if level is None else level
        lvl = max(isal_zlib.ISAL_BEST_SPEED, min(isal_zlib.ISAL_BEST_COMPRESSION, lvl))
        return _GzipCompressor(sink, lvl)
    if compression is Compression.ZSTD:
        return _ZstdCompressor(sink, DEFAULT_ZSTD_LEVEL if level is None else level)
    raise LayerError(f"{compression.value} compression is supported for reading only")
