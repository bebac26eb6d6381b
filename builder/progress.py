"""What a build reports while it runs, as events: steps, cache hits and misses, the output of RUN.

The library emits them to a :class:`BuildOutput`; this base ignores them, so
a build needs no terminal. ``pybuild.cli.progress`` draws them (plain lines,
or BuildKit's live view). Events may come from steps of stages running at
the same time, from several threads.
"""

from __future__ import annotations

import collections
import os
import threading


class BuildOutput:
    """The events of a build; each method is a no-op here."""

    def line(self, text: str) -> None:
        """A message that is not about one step (a pull, a warning)."""

    def step(self, label: str, text: str, cached: bool = False) -> None:
        """Step ``label`` (``2/5`` or ``stage 2/5``) starts, or was found in the cache."""

    def miss(self, label: str, reason: str) -> None:
        """Why step ``label`` missed the cache."""

    def done(self, label: str, seconds: float) -> None:
        """Step ``label`` ended after ``seconds``."""

    def output(self, label: str, text: str) -> None:
        """A line a step printed (RUN output, a COPY summary)."""

    def finish(self, ok: bool) -> None:
        """The build ended."""


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
