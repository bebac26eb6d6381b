from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import subprocess

import pytest
import zstandard

from pybuild.errors import LayerError
from pybuild.store.compression import (
    Compression,
    detect,
    from_media_type,
    media_type_of,
    open_compressor,
    open_decompressed,
)


def _payload(size: int = 3 << 20) -> bytes:
    rng = random.Random(7)
    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i
                    for i in range(size // 100))
    return rng.randbytes(size // 2) + text[: size - size // 2]


class NonSeekable:
    """Only read(), in small odd-sized pieces, like a pipe or an HTTP body."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._buf.read()
        return self._buf.read(min(n, 4093))


def _compress(data: bytes, compression: Compression, level: int | None = None) -> bytes:
    sink = io.BytesIO()
    c = open_compressor(sink, compression, level)
    view = memoryview(data)
    for off in range(0, len(data), 700_001):
        c.write(view[off:off + 700_001])
    c.close()
    assert not sink.closed
    return sink.getvalue()


def _read_all(stream) -> bytes:  # type: ignore[no-untyped-def]
    out = bytearray()
    while chunk := stream.read(1 << 16):
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_round_trip_writable_codecs(compression: Compression) -> None:
    data = _payload()
    blob = _compress(data, compression)
    assert detect(blob[:6]) is compression
    assert _read_all(open_decompressed(io.BytesIO(blob))) == data
    assert _read_all(open_decompressed(NonSeekable(blob))) == data  # type: ignore[arg-type]


@pytest.mark.parametrize("level", [0, 1, 2, 3, 9])
def test_gzip_levels(level: int) -> None:
    data = _payload(1 << 20)
    assert gzip.decompress(_compress(data, Compression.GZIP, level)) == data


def test_read_only_codecs_round_trip() -> None:
    data = _payload(1 << 20)
    for blob, compression in ((bz2.compress(data), Compression.BZIP2),
                              (lzma.compress(data), Compression.XZ)):
        assert detect(blob) is compression
        assert _read_all(open_decompressed(NonSeekable(blob))) == data  # type: ignore[arg-type]
        with pytest.raises(LayerError):
            open_compressor(io.BytesIO(), compression)


def test_detect_magic() -> None:
    assert detect(b"\x1f\x8b\x08\x00") is Compression.GZIP
    assert detect(b"\x28\xb5\x2f\xfd\x00") is Compression.ZSTD
    assert detect(b"BZh91AY") is Compression.BZIP2
    assert detect(b"\xfd7zXZ\x00\x00") is Compression.XZ
    assert detect(b"\xfd7zXZ") is Compression.NONE  # too short to be sure
    assert detect(b"usr/\x00\x00") is Compression.NONE
    assert detect(b"") is Compression.NONE


def test_gzip_readable_by_gnu_gzip_and_deterministic() -> None:
    data = _payload()
    blob = _compress(data, Compression.GZIP)
    assert blob == _compress(data, Compression.GZIP)
    # header: deflate, no flags (no FNAME), mtime 0
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] == 0
    assert blob[4:8] == b"\0\0\0\0"
    proc = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True)
    assert proc.stdout == data
    subprocess.run(["gzip", "-t"], input=blob, check=True)


def test_gzip_incompressible_data_is_not_expanded() -> None:
    data = os.urandom(4 << 20)
    blob = _compress(data, Compression.GZIP)
    assert len(blob) < len(data) * 1.001 + 64
    assert gzip.decompress(blob) == data


def test_gzip_empty_stream() -> None:
    blob = _compress(b"", Compression.GZIP)
    assert gzip.decompress(blob) == b""
    assert _read_all(open_decompressed(io.BytesIO(blob))) == b""


def test_zstd_readable_by_zstandard() -> None:
    data = _payload()
    blob = _compress(data, Compression.ZSTD)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob))
    assert _read_all(reader) == data


def test_multi_member_gzip_and_zero_padding() -> None:
    a, b = _payload(300_000), b"second member"
    blob = gzip.compress(a) + _compress(b, Compression.GZIP) + b"\0" * 512
    assert _read_all(open_decompressed(NonSeekable(blob))) == a + b  # type: ignore[arg-type]


def test_multi_frame_zstd() -> None:
    cctx = zstandard.ZstdCompressor()
    blob = cctx.compress(b"frame one ") + cctx.compress(b"frame two")
    assert _read_all(open_decompressed(io.BytesIO(blob))) == b"frame one frame two"


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_corrupt_streams_raise_layer_error(compression: Compression) -> None:
    blob = _compress(_payload(1 << 20), compression)
    with pytest.raises(LayerError):
        _read_all(open_decompressed(io.BytesIO(blob[: len(blob) // 2])))
    damaged = bytearray(blob)
    for i in range(40, 400):
        damaged[i] ^= 0x5A
    with pytest.raises(LayerError):
        _read_all(open_decompressed(io.BytesIO(bytes(damaged))))


def test_gzip_trailing_garbage_raises() -> None:
    blob = gzip.compress(b"data") + b"garbage!"
    with pytest.raises(LayerError):
        _read_all(open_decompressed(io.BytesIO(blob)))


def test_compressor_does_not_close_sink() -> None:
    for compression in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        sink = io.BytesIO()
        c = open_compressor(sink, compression)
        c.write(b"abc")
        c.close()
        c.close()  # idempotent
        assert not sink.closed


def test_media_types() -> None:
    assert media_type_of(Compression.GZIP) == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert media_type_of(Compression.ZSTD) == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert media_type_of(Compression.NONE) == "application/vnd.oci.image.layer.v1.tar"
    assert Compression.GZIP.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    for compression in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        assert from_media_type(compression.media_type) is compression
    assert (from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
            is Compression.GZIP)
    assert from_media_type("application/vnd.docker.image.rootfs.diff.tar") is Compression.NONE
    with pytest.raises(LayerError):
        from_media_type("application/vnd.oci.image.config.v1+json")
    with pytest.raises(LayerError):
        media_type_of(Compression.XZ)
