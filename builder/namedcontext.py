"""``build --build-context NAME=VALUE``: buildx's named contexts.

A named context stands in for what a name would otherwise mean in the
Dockerfile, in ``FROM NAME``, ``COPY --from=NAME`` and ``RUN
--mount=from=NAME``:

* ``NAME=DIR``: a local directory, seen as BuildKit sees a transferred
  context: filtered by its own ``.dockerignore`` (the main context's does
  not apply), hashed by content for COPY (touching a file keeps the cache,
  an edit does not), bound read-only (or ``rw`` over a throw-away overlay)
  by ``RUN --mount``; ``FROM NAME`` starts from a layer holding the
  directory's files (root-owned, as COPY from a context makes them) and an
  empty image config, as ``FROM scratch`` plus the files;
* ``NAME=docker-image://REF``: that image, from the store or pulled, wherever
  the Dockerfile names ``NAME`` (it is a base image, a ``--from`` source...).

Names are compared as buildx and BuildKit compare them
(``util/buildflags/context.go``, ``frontend/dockerui/config.go``): both
sides normalised as image references, in the familiar form without
``:latest`` (``docker.io/library/alpine:latest`` is ``alpine``). A stage whose
name is a named context is replaced by it, its instructions not run
(BuildKit's rule); ``FROM scratch`` stays scratch. Other kinds of value
(git and http URLs, ``oci-layout://``, ``target:``) are refused clearly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pybuild.errors import PybuildError, UsageError
from pybuild.records import record

IMAGE_PREFIX = "docker-image://"
_REFUSED = ("oci-layout://", "target:", "git@", "git://", "http://", "https://", "input:", "local:")


@record(frozen=True)
class NamedContextSpec:
    name: str  # normalised
    kind: str  # "dir" or "image"
    value: str  # the directory (absolute) or the image reference

    def describe(self) -> str:
        return f"{IMAGE_PREFIX}{self.value}" if self.kind == "image" else self.value


def normalize(name: str) -> str | None:
    """``name`` as a context key (familiar reference, no ``:latest``), or None when it is no reference."""
    from pybuild.store import reference as _reference

    try:
        ref = _reference.parse(name, default_tag=False)
    except PybuildError:
        return None
    text = ref.familiar()
    return text[: -len(":latest")] if text.endswith(":latest") else text


def parse_build_contexts(values: Iterable[str]) -> dict[str, NamedContextSpec]:
    """``--build-context`` values, checked before anything is built (a later one of a name wins)."""
    out: dict[str, NamedContextSpec] = {}
    for text in values:
        if not text:
            continue
        name, eq, value = text.partition("=")
        if not eq or not name or not value:
            raise UsageError(f"invalid --build-context {text!r}", "use NAME=DIR or NAME=docker-image://REF")
        key = normalize(name)
        if key is None:
            raise UsageError(f"invalid --build-context name {name!r}", "a name is an image name or a stage name")
        if value.startswith(IMAGE_PREFIX):
            ref = value[len(IMAGE_PREFIX):]
            try:
                from pybuild.store import reference as _reference

                _reference.parse(ref)
            except PybuildError as exc:
                raise UsageError(f"invalid --build-context {text!r}: {exc}") from None
            out[key] = NamedContextSpec(key, "image", ref)
            continue
        if value.startswith(_REFUSED) or "://" in value:
            raise UsageError(f"--build-context {name}={value}: this kind of context is not supported",
                             "pybuild takes a local directory or docker-image://REF")
        if not os.path.isdir(value):
            raise UsageError(f"--build-context {name}: {value} is not a directory",
                             "give an existing directory or docker-image://REF")
        out[key] = NamedContextSpec(key, "dir", os.path.realpath(value))
    return out


def lookup(contexts: Mapping[str, NamedContextSpec], name: str) -> NamedContextSpec | None:
    """The named context ``name`` (as a Dockerfile writes it) stands for, or None."""
    if not contexts:
        return None
    key = normalize(name)
    return contexts.get(key) if key is not None else None
