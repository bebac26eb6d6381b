"""Digests: validation before a digest touches a path, and streaming hashing."""

from __future__ import annotations

import re

from pybuild.errors import DigestMismatch, InvalidDigest

TYPE_CHECKING = False
if TYPE_CHECKING:
    import hashlib
    from typing import BinaryIO

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
CHUNK = 1 << 20


def validate(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:`` + 64 lowercase hex, else raise."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidDigest(f"invalid digest {digest!r}", "expected sha256: followed by 64 lowercase hex digits")
    return digest


def is_valid(digest: str) -> bool:
    return isinstance(digest, str) and _DIGEST_RE.fullmatch(digest) is not None


def hex_of(digest: str) -> str:
    """The hex part of a validated digest (safe to use as a file name)."""
    return validate(digest)[len("sha256:"):]


def sha256(data: bytes = b"") -> hashlib._Hash:
    """A sha256 hasher (hashlib imported on first use: `pybuild run` never hashes)."""
    import hashlib

    return hashlib.sha256(data)


def of_bytes(data: bytes) -> str:
    return "sha256:" + sha256(data).hexdigest()


def of_stream(stream: BinaryIO) -> tuple[str, int]:
    """Digest and length of everything left in ``stream``."""
    h = sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def chain_id(diff_ids: list[str]) -> str:
    """ChainID per the OCI image-spec: ChainID(L1)=DiffID(L1), ChainID(Ln)=sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    if not diff_ids:
        raise ValueError("chain_id of no layers")
    current = validate(diff_ids[0])
    for diff_id in diff_ids[1:]:
        current = of_bytes(f"{current} {validate(diff_id)}".encode())
    return current


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain id of every prefix of ``diff_ids``."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(validate(diff_id) if not out else of_bytes(f"{out[-1]} {validate(diff_id)}".encode()))
    return out


def verify(expected: str, actual: str, what: str) -> None:
    if expected != actual:
        raise DigestMismatch(f"{what}: digest mismatch: expected {expected}, got {actual}")


class HashingReader:
    """Wraps a binary stream, hashing and counting what is read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = self._raw.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self._hash.update(memoryview(buf)[:n])
            self.size += n
        return int(n or 0)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class HashingWriter:
    """Wraps a binary sink, hashing and counting what is written through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
