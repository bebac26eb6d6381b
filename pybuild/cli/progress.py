"""Drawing what the libraries report: build steps and pull/push progress, on a terminal or as plain lines.

Builds: ``plain`` prints step lines as they start, ``CACHED`` on hits, the
output of RUN commands and, with ``explain``, why a step missed (lines from
steps running at the same time are written whole, under one lock); on a
terminal, BuildKit's live view. ``quiet`` prints nothing while building; the
output of a failed RUN is kept for the error message by the builder.

Pulls and pushes: on a terminal every layer owns a line redrawn in place with
ANSI cursor movement (as ``docker pull`` does), byte counts and rate
included; in a pipe or a log only status changes are printed, one line each;
``quiet`` prints nothing. Thread-safe: downloads report from worker threads.
"""

from __future__ import annotations

import collections
import shutil
import sys
import threading
import time
from typing import TextIO

from pybuild.builder.progress import BuildOutput
from pybuild.cli.ui import human_size
from pybuild.records import field, record
from pybuild.registry.progress import NullProgress, Progress

REDRAW_INTERVAL = 0.1


# ---------------------------------------------------------------------------- builds


class PlainBuildOutput(BuildOutput):
    """A line per step as it starts, ``CACHED`` on hits, RUN output; with ``explain`` why steps missed."""

    def __init__(self, explain: bool = False, stream: TextIO | None = None) -> None:
        self.explain = explain
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def step(self, label: str, text: str, cached: bool = False) -> None:
        self.line(("CACHED " if cached else "") + f"[{label}] {text}")

    def miss(self, label: str, reason: str) -> None:
        if self.explain:
            self.line(f"  cache miss [{label}]: {reason}")

    def done(self, label: str, seconds: float) -> None:
        if seconds >= 0.05:
            self.line(f"  [{label}] done in {seconds:.1f}s")

    def output(self, label: str, text: str) -> None:
        """A line a step printed (RUN output, a COPY summary); prefixed with its stage when several are built,
        as BuildKit's plain mode prefixes every line with its step's ``#N``, so that lines of stages running at
        the same time can be told apart."""
        stage = stage_of(label)
        self.line(f"[{stage}] {text}" if stage else text)

    def finish(self, ok: bool) -> None:
        """The build ended (a live view draws its last frame)."""


def stage_of(label: str) -> str:
    """The stage part of a step label (``build`` of ``build 3/5``), empty when the build has one stage."""
    head, sep, _ = label.rpartition(" ")
    return head if sep else ""


@record
class _Step:
    label: str
    text: str
    started: float
    cached: bool = False
    ended: float | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=6))


class LiveBuildOutput(PlainBuildOutput):
    """BuildKit's terminal view: ``[+] Building 3.2s (7/9)``, a line per step with its time, and the
    last lines of what running steps print, redrawn in place."""

    def __init__(self, stream: TextIO | None = None, explain: bool = False, interval: float = 0.15) -> None:
        super().__init__(explain=explain, stream=stream)
        self.steps: list[_Step] = []
        self.notes: list[str] = []
        self.misses: list[str] = []  # --explain: printed under the last frame, where they stay
        self.drawn = 0
        self.width = shutil.get_terminal_size((100, 24)).columns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _find(self, label: str) -> _Step | None:
        return next((s for s in reversed(self.steps) if s.label == label), None)

    def line(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)

    def step(self, label: str, text: str, cached: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            for s in self.steps:  # a new step in a stage ends the previous one of that stage
                if s.ended is None and s.label.rsplit(" ", 1)[0] == label.rsplit(" ", 1)[0]:
                    s.ended = now
            self.steps.append(_Step(label, text, now, cached, now if cached else None))

    def miss(self, label: str, reason: str) -> None:
        if self.explain:
            self.output(label, f"cache miss: {reason}")
            with self.lock:
                self.misses.append(f"cache miss [{label}]: {reason}")

    def done(self, label: str, seconds: float) -> None:
        with self.lock:
            s = self._find(label)
            if s is not None and s.ended is None:
                s.ended = time.monotonic()
                s.tail.clear()

    def output(self, label: str, text: str) -> None:
        with self.lock:
            s = self._find(label)
            if s is not None:
                s.tail.append(text)
            else:
                self.notes.append(text)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._draw(final=False)

    def _fit(self, text: str) -> str:
        return text if len(text) <= self.width - 1 else text[: self.width - 2] + "…"

    def _draw(self, final: bool, ok: bool = True) -> None:
        with self.lock:
            now = time.monotonic()
            finished = sum(s.ended is not None for s in self.steps)
            state = (" FINISHED" if ok else " ERROR") if final else ""
            notes = [self._fit(n) for n in self.notes]
            self.notes.clear()
            lines = [f"[+] Building {now - self.started:.1f}s ({finished}/{len(self.steps)}){state}"]
            for s in self.steps:
                took = (s.ended or now) - s.started
                prefix = "=> CACHED " if s.cached else "=> "
                lines.append(self._fit(f"{prefix}[{s.label}] {s.text}") + ("" if s.cached else f"  {took:.1f}s"))
                if s.ended is None or (final and not ok):
                    lines.extend(self._fit(f"   > {t}") for t in s.tail)
            out = []
            if self.drawn:
                out.append(f"\x1b[{self.drawn}A\x1b[J")
            # notes (warnings, pulls) stay above the view; the view is redrawn in place
            out.append("".join(n + "\n" for n in notes))
            out.append("\n".join(lines) + "\n")
            self.stream.write("".join(out))
            self.stream.flush()
            self.drawn = len(lines)

    def finish(self, ok: bool) -> None:
        self._stop.set()
        self._thread.join()
        self._draw(final=True, ok=ok)
        with self.lock:
            # below the final frame, never redrawn: the reasons stay on the screen (in the frame they were
            # only the tails of running steps, gone when a step ended)
            if self.misses:
                self.stream.write("".join(f"{m}\n" for m in self.misses))
                self.stream.flush()
            self.misses.clear()



def build_output(quiet: bool, progress: str, explain: bool) -> BuildOutput:
    """The view of ``build --progress``: quiet, plain, or live on a terminal (``auto``)."""
    if quiet or progress == "quiet":
        return BuildOutput()
    if progress == "tty" or (progress == "auto" and sys.stdout.isatty()):
        return LiveBuildOutput(sys.stdout, explain=explain)
    return PlainBuildOutput(explain=explain or progress == "plain", stream=sys.stdout)


# ---------------------------------------------------------------------------- pulls and pushes


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
