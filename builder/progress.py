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
import sys
import threading
import time
from typing import TextIO


class BuildOutput:
    def __init__(self, mode: str = "plain", explain: bool = False, stream: TextIO | None = None) -> None:
        self.mode = mode
        self.explain = explain or mode == "plain-explain"
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


class OutputPump:
    """Copies a RUN's output pipe to the build output line by line; keeps the tail for errors."""

    def __init__(self, out: BuildOutput, prefix: str = "", tail_lines: int = 40) -> None:
        self.out = out
        self.prefix = prefix
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
        self.out.line(self.prefix + text)

    def close_writer(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def finish(self) -> None:
        self.close_writer()
        self._thread.join()
