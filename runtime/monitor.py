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

from pybuild.errors import ContainerError, PybuildError
from pybuild.store.images import now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .containers import ContainerConfig
    from .lifecycle import Runtime
    from .process import ContainerProcess


def start_monitor(runtime: Runtime, config: ContainerConfig) -> None:
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
            _monitor_main(runtime, config, w)
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


def _monitor_main(runtime: Runtime, config: ContainerConfig, report_fd: int) -> None:
    log_path = runtime.containers.log_path(config.id)
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the monitor
    lock = threading.Lock()
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
    reported = False

    def close_write_ends() -> None:
        while write_ends:
            os.close(write_ends.pop())

    def started(proc: ContainerProcess) -> None:
        nonlocal reported
        close_write_ends()
        sources = [(out_r, "stdout"), (err_r, "stderr")]
        if proc.pty_master is not None:
            sources.append((os.dup(proc.pty_master), "stdout"))
        for fd, stream in sources:
            t = threading.Thread(target=pump, args=(fd, stream), daemon=True)
            t.start()
            threads.append(t)
        os.write(report_fd, b"ok")
        os.close(report_fd)
        reported = True

    try:
        runtime._supervise(config, None, out_w, err_w, on_started=started, proxy_signals=False)
    except PybuildError as exc:
        if not reported:
            os.write(report_fd, f"{getattr(exc, 'exit_code', 125)} {exc}".encode())
    except BaseException as exc:  # noqa: BLE001
        if not reported:
            os.write(report_fd, f"125 {exc}".encode())
    finally:
        close_write_ends()
        for t in threads:
            t.join(timeout=5)
        log.close()
        if config.auto_remove:
            with contextlib.suppress(PybuildError):
                runtime.remove(config.id, force=True, volumes=True)


def _write_log(log: object, lock: threading.Lock, data: bytes, stream: str) -> None:
    record = json.dumps({"log": data.decode("utf-8", "surrogateescape"), "stream": stream, "time": now_iso()},
                        ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"
    with lock:
        log.write(record)  # type: ignore[attr-defined]
