"""Conventions shared by the commands: Docker's human sizes, ages and tables, ``KEY=VALUE`` flags."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence

from pybuild.cli.cmdline import echo
from pybuild.errors import PybuildError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as _dt
    from typing import Any

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: float, precision: int = 3) -> str:
    """Decimal units with 3 significant digits, as docker prints sizes (``2.14MB``); its prune
    totals have 4 (``16.43MB``)."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{_UNITS[i]}"


def binary_size(size: float) -> str:
    """Binary units with 4 significant digits, as docker prints memory (``64MiB``, ``551.8KiB``)."""
    i = 0
    while size >= 1024 and i < len(_BINARY_UNITS) - 1:
        size /= 1024.0
        i += 1
    return f"{size:.4g}{_BINARY_UNITS[i]}"


def confirm(warning: str) -> bool:
    """Docker's confirmation prompt (on stdout, as docker's): ``WARNING! ...`` then ``[y/N]``; y or Y goes on."""
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        answer = ""
    if not answer.endswith("\n"):
        sys.stdout.write("\n")
    return answer.strip() in ("y", "Y")


def parse_time(text: str | None) -> _dt.datetime | None:
    import datetime as _dt

    if not text:
        return None
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python < 3.12 accepts at most 6 fractional digits; Go writes up to 9.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = head + "." + tail[:min(digits, 6)] + tail[digits:]
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """go-units' HumanDuration: ``About a minute``, ``2 hours``, ``3 weeks``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(text: str | None) -> str:
    import datetime as _dt

    when = parse_time(text)
    if when is None:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    delta = (_dt.datetime.now(_dt.UTC) - when).total_seconds()
    return human_duration(max(delta, 0)) + " ago"


def each(names: Iterable[str], action: Callable[[str], object],
         skip: Callable[[PybuildError], bool] | None = None) -> bool:
    """``action`` on every name, as docker treats several objects: one failing does not stop the rest,
    each failure is an error line (unless ``skip`` says to pass over it); whether all succeeded."""
    ok = True
    for name in names:
        try:
            action(name)
        except PybuildError as exc:
            if skip is not None and skip(exc):
                continue
            echo(f"pybuild: error: {exc}", err=True)
            ok = False
    return ok


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to the widest cell plus three spaces, as docker's tabwriter does."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in (headers, *rows):
        line = "".join(cell.ljust(widths[i] + 3) for i, cell in enumerate(row[:-1])) + row[-1]
        echo(line.rstrip())


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=4)
    sys.stdout.write("\n")


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def key_values(items: Iterable[str], flag: str, *, from_env: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` flag values (``--label``, ``--build-arg``) as Docker reads them.

    ``KEY`` alone is an empty value, or with ``from_env`` the value of the
    environment variable ``KEY`` (left out when it is not set), as
    ``--build-arg KEY`` and ``-e KEY`` do. An empty key is an error.
    """
    import os

    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key.strip():
            raise UsageError(f"invalid {flag} {item!r}", f"use {flag} KEY=VALUE")
        if not eq and from_env:
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out
