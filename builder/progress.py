"""What a build prints: one line per step, RUN output, why steps missed the cache.

``plain`` (the default) prints step lines as they start, ``CACHED`` on hits,
the output of RUN commands and, with ``explain``, why a step missed.
``quiet`` prints nothing while building; the output of a failed RUN is kept
(the last lines) for the error message. Lines from steps running at the same
time are written whole, under one lock.
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import threading
import time
from typing import TextIO

from pybuild.records import field, record


class BuildOutput:
    def __init__(self, mode: str = "plain", explain: bool = False, stream: TextIO | None = None) -> None:
        self.mode = mode
        self.explain = explain
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()
        self.started = time.monotonic()

    @property
    def quiet(self) -> bool:
        return self.mode == "quiet"

    def line(self, text: str) -> None:
        if self.quiet:
            return
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def step(self, label: str, text: str, cached: bool = False) -> None:
        self.line(("CACHED " if cached else "") + f"[{label}] {text}")

    def miss(self, label: str, reason: str) -> None:
        if self.explain:
            self.line(f"  cache miss [{label}]: {reason}")

    def done(self, label: str, seconds: float) -> None:
        if not self.quiet and seconds >= 0.05:
            self.line(f"  [{label}] done in {seconds:.1f}s")

    def output(self, label: str, text: str) -> None:
        """A line a step printed (RUN output, a COPY summary)."""
        self.line(text)

    def finish(self, ok: bool) -> None:
        """The build ended (a live view draws its last frame)."""


@record
class _Step:
    label: str
    text: str
    started: float
    cached: bool = False
    ended: float | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=6))


class LiveOutput(BuildOutput):
    """BuildKit's terminal view: ``[+] Building 3.2s (7/9)``, a line per step with its time, and the
    last lines of what running steps print, redrawn in place."""

    def __init__(self, stream: TextIO | None = None, explain: bool = False, interval: float = 0.15) -> None:
        super().__init__("tty", explain=explain, stream=stream)
        self.steps: list[_Step] = []
        self.notes: list[str] = []
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


class OutputPump:
    """Copies a RUN's output pipe to the build output line by line; keeps the tail for errors."""

    def __init__(self, out: BuildOutput, label: str = "", tail_lines: int = 40) -> None:
        self.out = out
        self.label = label
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._emit(raw)
        if pending:
            self._emit(pending)
        os.close(self.read_fd)

    def _emit(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self.tail.append(text)
        self.out.output(self.label, text)

    def close_writer(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def finish(self) -> None:
        self.close_writer()
        self._thread.join()
