"""Content-addressed blobs under ``blobs/sha256/<hex>``.

A blob is written to a temp file under ``tmp/`` (locked by its writer, so a
crashed writer's leftovers are recognisable), hashed while written, fsynced
and renamed into place: a blob path either does not exist or holds exactly
the bytes its name promises.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pybuild.errors import BlobNotFound, DigestMismatch
from pybuild.linux.fsutil import fsync_dir

from . import digest as _digest
from .locks import create_locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


class BlobWriter:
    """A blob being written. ``commit()`` verifies and publishes it; ``abort()`` drops it."""

    def __init__(self, store: BlobStore, expected: str | None) -> None:
        self._store = store
        self.expected = None if expected is None else _digest.validate(expected)
        self.tmp_path = store.tmp_dir / f"blob-{os.urandom(8).hex()}"
        self._fd = create_locked(self.tmp_path)
        self._file = os.fdopen(os.dup(self._fd), "wb", buffering=1 << 20)
        self._hash = _digest.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> str:
        actual = "sha256:" + self._hash.hexdigest()
        try:
            if self.expected is not None and actual != self.expected:
                raise DigestMismatch(f"blob digest mismatch: expected {self.expected}, got {actual}")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final = self._store.path(actual)
            os.replace(self.tmp_path, final)
            fsync_dir(final.parent)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        self.digest = actual
        return actual

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._fd >= 0:
            self.abort()


class BlobStore:
    def __init__(self, blobs_dir: Path, tmp_dir: Path) -> None:
        self.dir = blobs_dir
        self.tmp_dir = tmp_dir

    def path(self, digest: str) -> Path:
        return self.dir / _digest.hex_of(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found", "run 'pybuild system check'") from None

    def read(self, digest: str, verify: bool = True) -> bytes:
        with self.open(digest) as f:
            data = f.read()
        if verify:
            _digest.verify(digest, _digest.of_bytes(data), f"blob {digest}")
        return data

    def writer(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def put(self, data: bytes, expected: str | None = None) -> str:
        dgst = _digest.of_bytes(data)
        if expected is not None:
            _digest.verify(_digest.validate(expected), dgst, "blob")
        if self.exists(dgst):
            return dgst
        with self.writer(dgst) as w:
            w.write(data)
            w.commit()
        return dgst

    def put_stream(self, stream: BinaryIO, expected: str | None = None) -> tuple[str, int]:
        with self.writer(expected) as w:
            while chunk := stream.read(_digest.CHUNK):
                w.write(chunk)
            dgst = w.commit()
            return dgst, w.size

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def walk(self) -> Iterator[str]:
        for entry in os.scandir(self.dir):
            if _digest.is_valid("sha256:" + entry.name):
                yield "sha256:" + entry.name
