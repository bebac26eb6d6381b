"""The detached monitor (Docker's shim): owns a ``-d`` container after the CLI exits.

The CLI forks; the child starts a new session and forks again, so the
monitor is nobody's child and survives the terminal. It runs the container
through the same code as a foreground run, copies its output into
``container.log`` as JSON lines (Docker's json-file format), records the exit
status and cleans up. The CLI waits on a pipe until the container runs (or
failed to start) and reports that.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

from pybuild.errors import ContainerError, PybuildError
from pybuild.store.images import now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .containers import ContainerConfig
    from .lifecycle import Runtime, Supervised
    from .process import ContainerProcess


def start_monitor(runtime: Runtime, config: ContainerConfig, *, resume_after: float | None = None) -> None:
    """Fork the container's monitor and return once the container runs (or failed to start).

    ``resume_after``: the container is between two runs of its restart
    policy; the monitor starts it after that many seconds and this returns at once.
    """
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked monitor
        try:
            os.close(r)
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, w)
            os.closerange(w + 1, 65536)
            _monitor_main(runtime, config, w, resume_after)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if data.startswith(b"ok"):
        return
    code, _, message = data.decode(errors="replace").partition(" ")
    err = ContainerError(message or "the container monitor died before the container started")
    if code.isdigit():
        err.exit_code = int(code)
    raise err


def _monitor_main(runtime: Runtime, config: ContainerConfig, report_fd: int, resume_after: float | None) -> None:
    """Supervise the container: each run's output into the log; the restart policy between runs."""
    from .restart import next_delay

    log_path = runtime.containers.log_path(config.id)
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the monitor
    lock = threading.Lock()
    report = [report_fd]

    def tell(message: bytes) -> None:
        """Answer the CLI that started us, once."""
        if report:
            fd = report.pop()
            with contextlib.suppress(OSError):
                os.write(fd, message)
            os.close(fd)

    delay = 0.0
    try:
        if resume_after is not None:
            runtime.containers.update_state(config.id, monitor_pid=os.getpid())  # before the old one is gone
            tell(b"ok")
            delay = resume_after
            if not _wait_to_restart(runtime, config, delay):
                return
            runtime._claim(config, by_policy=True)
        while True:
            outcome = _run_once(runtime, config, log, lock, tell)
            if not outcome.restart:
                return
            delay = next_delay(delay, outcome.uptime)
            if not _wait_to_restart(runtime, config, delay):
                return
            try:
                runtime._claim(config, by_policy=True)
            except PybuildError:
                return  # removed, or stopped meanwhile
    except PybuildError as exc:
        tell(f"{getattr(exc, 'exit_code', 125)} {exc}".encode())
    except BaseException as exc:  # noqa: BLE001
        tell(f"125 {exc}".encode())
    finally:
        tell(b"125 the container monitor ended before the container started")
        log.close()
        if config.auto_remove:
            with contextlib.suppress(PybuildError):
                runtime.remove(config.id, force=True, volumes=True)


def _run_once(runtime: Runtime, config: ContainerConfig, log: object, lock: threading.Lock,
              tell: Callable[[bytes], None]) -> Supervised:
    """One run of the container, its stdout and stderr (or pty) copied into the log until both close."""
    threads: list[threading.Thread] = []

    def pump(fd: int, stream: str) -> None:
        pending = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _write_log(log, lock, line + b"\n", stream)
        if pending:
            _write_log(log, lock, pending, stream)
        os.close(fd)

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    write_ends = [out_w, err_w]  # ours to close once the container holds its copies
    read_ends = [out_r, err_r]  # ours to close if the container never starts

    def close_write_ends() -> None:
        while write_ends:
            os.close(write_ends.pop())

    def started(proc: ContainerProcess) -> None:
        close_write_ends()
        sources = [(out_r, "stdout"), (err_r, "stderr")]
        read_ends.clear()  # the pumps close them
        if proc.pty_master is not None:
            sources.append((os.dup(proc.pty_master), "stdout"))
        for fd, stream in sources:
            t = threading.Thread(target=pump, args=(fd, stream), daemon=True)
            t.start()
            threads.append(t)
        tell(b"ok")

    try:
        return runtime._supervise(config, None, out_w, err_w, on_started=started, proxy_signals=False)
    finally:
        close_write_ends()
        for fd in read_ends:
            os.close(fd)
        for t in threads:
            t.join(timeout=5)


def _wait_to_restart(runtime: Runtime, config: ContainerConfig, delay: float) -> bool:
    """Sleep out the back-off; False (and the container recorded as exited) if it was stopped meanwhile."""
    from .containers import EXITED, RESTARTING

    deadline = time.monotonic() + delay
    while True:
        try:
            state = runtime.containers.state(config.id)
        except PybuildError:
            return False  # removed
        if state.status != RESTARTING:
            return False
        if state.manually_stopped:
            with contextlib.suppress(PybuildError):
                runtime.containers.update_state(config.id, status=EXITED, pid=0)
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))


def _write_log(log: object, lock: threading.Lock, data: bytes, stream: str) -> None:
    record = json.dumps({"log": data.decode("utf-8", "surrogateescape"), "stream": stream, "time": now_iso()},
                        ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"
    with lock:
        log.write(record)  # type: ignore[attr-defined]
