"""Health checks (HEALTHCHECK, ``--health-*``), run by the container's monitor as Docker's daemon runs them.

A thread of the monitor sleeps out the interval (a timer, no polling: an
idle container costs one wakeup per interval), then runs the test inside the
container's namespaces and cgroup as ``exec`` does, with its output (4 KiB at
most) and a timeout. The result goes into ``State.Health`` with Docker's rules:
exit 0 is healthy and clears the failing streak; another exit, or a timeout
(exit -1), adds to the streak, except while the container is still
``starting`` within its start period; ``retries`` failures in a row make it
``unhealthy``. The log keeps the last five results. During the start period
a container not yet healthy is probed every ``start_interval``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from pybuild.errors import PybuildError
from pybuild.store.images import now_iso
from pybuild.store.model import Healthcheck

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .containers import ContainerConfig
    from .lifecycle import Runtime

SECOND = 1_000_000_000  # Docker keeps the durations in nanoseconds
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


def merge(image: Healthcheck | None, given: Healthcheck | None, disabled: bool) -> Healthcheck | None:
    """The container's check: the flags' fields over the image's (Docker's merge), or none at all."""
    if disabled:
        return Healthcheck(("NONE",))
    if given is None:
        return image
    if image is None:
        return given
    return Healthcheck(test=given.test or image.test, interval=given.interval or image.interval,
                       timeout=given.timeout or image.timeout, start_period=given.start_period or image.start_period,
                       start_interval=given.start_interval or image.start_interval,
                       retries=given.retries or image.retries)


def probe_args(check: Healthcheck | None) -> tuple[str, ...] | None:
    """The command a probe runs, or None when the container has no check (none, ``NONE``, unknown kind)."""
    if check is None or not check.test:
        return None
    kind, rest = check.test[0], check.test[1:]
    if kind == "CMD" and rest:
        return tuple(rest)
    if kind == "CMD-SHELL" and rest:
        return ("/bin/sh", "-c", " ".join(rest))
    return None


def _seconds(nanos: int, default: int) -> float:
    return (nanos or default) / SECOND


def _duration_text(seconds: float) -> str:
    """A duration as Go prints one (``1s``, ``1.5s``, ``500ms``), for the timeout message."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


class HealthMonitor:
    """Probes one run of a container until :meth:`stop`; results go into its state record."""

    def __init__(self, runtime: Runtime, config: ContainerConfig, check: Healthcheck) -> None:
        args = probe_args(check)
        assert args is not None
        self.runtime = runtime
        self.config = config
        self.args = args
        self.interval = _seconds(check.interval, DEFAULT_INTERVAL)
        self.timeout = _seconds(check.timeout, DEFAULT_TIMEOUT)
        self.start_period = _seconds(check.start_period, 0)
        self.start_interval = _seconds(check.start_interval, DEFAULT_START_INTERVAL)
        self.retries = check.retries if check.retries > 0 else DEFAULT_RETRIES
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    def start(self) -> None:
        """The container runs: health ``starting``, a fresh streak (the log of earlier runs is kept)."""
        self._started = time.monotonic()
        self._set(lambda h: {**h, "Status": STARTING, "FailingStreak": 0})
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def _next_wait(self, status: str) -> float:
        in_start_period = time.monotonic() - self._started < self.start_period
        return self.start_interval if in_start_period and status == STARTING else self.interval

    def _loop(self) -> None:
        status = STARTING
        while not self._stop.wait(self._next_wait(status)):
            with contextlib.suppress(PybuildError):
                if self.runtime.containers.state(self.config.id).status == "paused":
                    continue  # frozen: as docker, no probe until it is thawed
            began = time.monotonic()
            start = now_iso()
            code, output = self._probe()
            if self._stop.is_set():
                return  # the container is ending: a probe cut short says nothing about its health
            result = {"Start": start, "End": now_iso(), "ExitCode": code, "Output": output}
            in_start_period = began - self._started < self.start_period
            status = self._record(result, in_start_period)

    def _record(self, result: dict[str, Any], in_start_period: bool) -> str:
        """Docker's handleProbeResult; the new status."""
        outcome = [STARTING, STARTING]  # after, before

        def change(health: dict[str, Any]) -> dict[str, Any]:
            log = [*health.get("Log", []), result][-MAX_LOG_ENTRIES:]
            status, streak = health.get("Status", STARTING), int(health.get("FailingStreak", 0))
            outcome[1] = status
            if result["ExitCode"] == 0:
                status, streak = HEALTHY, 0
            elif not (status == STARTING and in_start_period):
                streak += 1
                if streak >= self.retries:
                    status = UNHEALTHY
            outcome[0] = status
            return {"Status": status, "FailingStreak": streak, "Log": log}

        self._set(change)
        if outcome[0] != outcome[1]:
            self.runtime.event(self.config, f"health_status: {outcome[0]}")
        return outcome[0]

    def _set(self, change: Any) -> None:
        with contextlib.suppress(PybuildError):
            self.runtime.containers.update_health(self.config.id, change)

    def _probe(self) -> tuple[int, str]:
        """Run the test once inside the container: (exit code, output); -1 for a timeout or a failed start.

        It waits for the probe to exit (not for its output to close: a process
        it left in the background may hold that), then takes what was written.
        """
        import select

        try:
            proc, read_end = self.runtime.start_probe(self.config, self.args)
        except PybuildError as exc:
            return -1, str(exc)
        output = bytearray()
        deadline = time.monotonic() + self.timeout
        timed_out = False

        def take() -> bytes | None:
            """What is there to read (b"" at the end of the output, None when nothing is there now)."""
            try:
                data = os.read(read_end, 65536)
            except BlockingIOError:
                return None
            if len(output) < MAX_OUTPUT:
                output.extend(data[:MAX_OUTPUT - len(output)])
            return data

        try:
            os.set_blocking(read_end, False)
            exit_fd = proc.exit_fd
            assert exit_fd is not None
            watched = [read_end, exit_fd]
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select(watched, [], [], left)
                if exit_fd in ready:
                    while take():
                        pass  # the rest of its output, up to a background process's still-open end
                    break
                if read_end in ready and take() == b"":
                    watched = [exit_fd]
            if timed_out:
                proc.kill()
            status = proc.wait(timeout=10)
        finally:
            os.close(read_end)
            proc.close()
        text = output.decode("utf-8", "replace")
        if timed_out:
            message = f"Health check exceeded timeout ({_duration_text(self.timeout)})"
            return -1, f"{message}: {text}" if text else message
        return status.code, text
