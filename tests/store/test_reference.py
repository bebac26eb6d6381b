from __future__ import annotations

import pytest

from pybuild.errors import InvalidReference
from pybuild.store import reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest", "familiar"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox:1.36"),
        ("user/app", "docker.io", "user/app", "latest", None, "user/app:latest"),
        ("docker.io/library/busybox:x", "docker.io", "library/busybox", "x", None, "busybox:x"),
        ("index.docker.io/user/app", "docker.io", "user/app", "latest", None, "user/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None, "localhost:5000/app:v1"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None, "127.0.0.1:5000/a/b/c:latest"),
        ("quay.io/org/img@" + D, "quay.io", "org/img", None, D, "quay.io/org/img@" + D),
        ("app:v1@" + D, "docker.io", "library/app", "v1", D, "app:v1@" + D),
        ("a__b-c/e.f", "docker.io", "a__b-c/e.f", "latest", None, "a__b-c/e.f:latest"),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None, "[::1]:5000/app:latest"),
    ],
)
def test_parse_normalises(text, domain, path, tag, digest, familiar):
    ref = reference.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.familiar() == familiar
    assert reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    ["", " busybox", "Busybox", "busybox:", "busybox:-x", "a//b", "app@sha256:abc", "-app", "app-",
     "a" * 64, "host:port/app", "app:" + "t" * 129, "x/" + "y" * 300],
)
def test_invalid_references_rejected(text):
    with pytest.raises(InvalidReference):
        reference.parse(text)


def test_no_default_tag_when_asked():
    assert reference.parse("busybox", default_tag=False).tag is None


def test_image_id_prefix():
    assert reference.is_image_id_prefix("3f2a")
    assert reference.is_image_id_prefix("sha256:" + "0" * 64)
    assert not reference.is_image_id_prefix("abc")
    assert not reference.is_image_id_prefix("busybox")
