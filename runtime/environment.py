"""A container's environment: ``--env-file`` files and Docker's merge rule for ``-e``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pybuild.errors import UsageError


def read_env_file(path: str) -> list[str]:
    """The ``NAME=value`` (or bare ``NAME``) lines of an env file; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read env file {path}: {exc.strerror}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def merge_env(base: Iterable[str], extra: Iterable[str]) -> tuple[str, ...]:
    """Docker's rule: later wins, a bare ``NAME`` takes the host's value (or is dropped)."""
    order: list[str] = []
    values: dict[str, str] = {}
    for item in [*base, *extra]:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable: {item!r}")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        if key not in values:
            order.append(key)
        values[key] = value
    return tuple(f"{k}={values[k]}" for k in order)
