from __future__ import annotations

import io

import pytest

from pybuild.errors import DigestMismatch, InvalidDigest
from pybuild.store import digest


def test_validate_accepts_only_sha256_lower_hex():
    good = "sha256:" + "0123456789abcdef" * 4
    assert digest.validate(good) == good
    for bad in ["sha256:" + "A" * 64, "sha512:" + "a" * 64, "sha256:" + "a" * 63, "sha256:../../etc",
                "a" * 64, "sha256:" + "a" * 64 + "\n"]:
        with pytest.raises(InvalidDigest):
            digest.validate(bad)


def test_chain_ids_follow_the_image_spec():
    a = digest.of_bytes(b"a")
    b = digest.of_bytes(b"b")
    c = digest.of_bytes(b"c")
    ab = digest.of_bytes(f"{a} {b}".encode())
    abc = digest.of_bytes(f"{ab} {c}".encode())
    assert digest.chain_ids([a, b, c]) == [a, ab, abc]
    assert digest.chain_id([a, b, c]) == abc


def test_stream_and_verify():
    data = b"x" * 3_000_000
    assert digest.of_stream(io.BytesIO(data)) == (digest.of_bytes(data), len(data))
    with pytest.raises(DigestMismatch):
        digest.verify(digest.of_bytes(b"a"), digest.of_bytes(b"b"), "thing")
