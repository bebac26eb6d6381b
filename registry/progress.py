"""Progress of pulls and pushes: one live line per layer on a terminal, plain lines otherwise.

Events are ``update(key, status, current, total)`` (``key`` is a layer's short
digest) and ``message(text)`` for lines that are not about one layer. On a
terminal every key owns a line that is redrawn in place with ANSI cursor
movement (as ``docker pull`` does), byte counts and rate included; in a pipe
or a log only status changes are printed, one line each; ``quiet`` prints
nothing. Thread-safe: downloads report from worker threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

_UNITS = ("B", "kB", "MB", "GB", "TB")
REDRAW_INTERVAL = 0.1


def human_size(size: float) -> str:
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{_UNITS[i]}"


class Progress(Protocol):
    def message(self, text: str) -> None: ...

    def update(self, key: str, status: str, current: int | None = None, total: int | None = None) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    def message(self, text: str) -> None:
        pass

    def update(self, key: str, status: str, current: int | None = None, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """A line per status change: ``a3ed95caeb02: Download complete 2.1MB``."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def message(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def update(self, key: str, status: str, current: int | None = None, total: int | None = None) -> None:
        with self._lock:
            if self._last.get(key) == status:
                return
            self._last[key] = status
            size = total if total is not None else current
            suffix = f" {human_size(size)}" if size is not None and status.endswith(("complete", "Pushed", "done")) \
                else ""
            self.out.write(f"{key}: {status}{suffix}\n")
            self.out.flush()

    def close(self) -> None:
        pass


class TerminalProgress:
    """A live line per key, redrawn in place."""

    def __init__(self, out: TextIO | None = None, clock: object = time.monotonic) -> None:
        self.out = out or sys.stdout
        self._lines: dict[str, int] = {}  # key -> line number (0 = first line written)
        self._count = 0
        self._started: dict[str, tuple[float, int]] = {}
        self._drawn: dict[str, float] = {}
        self._status: dict[str, str] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def message(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self._count += 1
            self.out.flush()

    def _render(self, key: str, status: str, current: int | None, total: int | None) -> str:
        text = f"{key}: {status}"
        if current is not None and status in ("Downloading", "Pushing", "Extracting", "Verifying"):
            text += f"  {human_size(current)}" + (f"/{human_size(total)}" if total else "")
            start = self._started.get(key)
            if start is not None:
                elapsed = self._now() - start[0]
                if elapsed > 0.2:
                    text += f"  {human_size((current - start[1]) / elapsed)}/s"
        elif total is not None and status.endswith(("complete", "Pushed")):
            text += f"  {human_size(total)}"
        return text

    def update(self, key: str, status: str, current: int | None = None, total: int | None = None) -> None:
        with self._lock:
            now = self._now()
            changed = self._status.get(key) != status
            if current is not None and key not in self._started:
                self._started[key] = (now, current)
            if not changed and now - self._drawn.get(key, 0.0) < REDRAW_INTERVAL:
                return
            self._status[key] = status
            self._drawn[key] = now
            text = self._render(key, status, current, total)
            if key not in self._lines:
                self._lines[key] = self._count
                self._count += 1
                self.out.write(text + "\n")
            else:
                up = self._count - self._lines[key]
                self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B")
            self.out.flush()

    def close(self) -> None:
        with self._lock:
            self.out.flush()


def make_progress(quiet: bool = False, out: TextIO | None = None) -> Progress:
    """Null when quiet, live lines on a terminal, plain lines otherwise."""
    if quiet:
        return NullProgress()
    stream = out or sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return TerminalProgress(stream)
    return PlainProgress(stream)
