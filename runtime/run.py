"""Running one container to completion: cgroup, spawn, wait, clean up.

This is the library entry point the builder uses for RUN steps and the
container lifecycle uses for ``pybuild run``: whatever happens (an error, an
exception in the caller, Ctrl-C), the process is gone and its cgroup removed
when :func:`execute` returns or raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator

from pybuild.records import record

from . import cgroups
from .process import ContainerProcess, ExitStatus, spawn
from .spec import ContainerSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO, Any

    from .process import Stdio

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@record(frozen=True)
class RunResult:
    status: ExitStatus
    oom_killed: bool
    memory_limit: int | None

    @property
    def exit_code(self) -> int:
        return self.status.code


def oom_message(limit: int | None) -> str:
    if limit is None:
        return "container killed: out of memory"
    return f"container killed: out of memory (limit {limit // (1 << 20)} MiB)"


@contextlib.contextmanager
def forward_signals(proc: ContainerProcess) -> Iterator[None]:
    """While the container runs, signals to this process go to it (docker run's sig-proxy)."""
    threading = sys.modules.get("threading")  # without it loaded, no other Python thread exists
    if threading is not None and threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: object) -> None:  # noqa: ARG001
        proc.kill(signum)

    for sig in FORWARDED_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def execute(spec: ContainerSpec, *, cgroup_name: str, limits: cgroups.Limits | None = None,
            stdin: Stdio = None, stdout: Stdio = None, stderr: Stdio = None,
            on_started: Callable[[ContainerProcess, cgroups.Cgroup], None] | None = None,
            proxy_signals: bool = True, seccomp_cache: Path | None = None) -> RunResult:
    """Run ``spec`` in a fresh cgroup and wait for it; the cgroup is removed afterwards.

    The cgroup carries the spec's device allowlist; ``seccomp_cache`` keeps
    compiled seccomp programs across processes (see :func:`process.spawn`).
    """
    limits = limits or cgroups.Limits()
    cg = cgroups.create(cgroup_name, limits, devices=spec.device_rules)
    try:
        with _rootfs_made_outside(spec) as spec:
            proc = spawn(spec, cgroup=cg, stdin=stdin, stdout=stdout, stderr=stderr, seccomp_cache=seccomp_cache)
        try:
            if on_started is not None:
                on_started(proc, cg)
            with forward_signals(proc) if proxy_signals else contextlib.nullcontext():
                status = proc.wait()
        finally:
            proc.close()
        oom = (status.signal == signal.SIGKILL or status.code == 137) and cg.oom_killed()
        return RunResult(status, oom, limits.memory)
    finally:
        cg.remove()


@contextlib.contextmanager
def _rootfs_made_outside(spec: ContainerSpec) -> Iterator[ContainerSpec]:
    """With fuse-overlayfs, the overlay is made here as a detached mount the container attaches: its daemon
    must not run in the container's namespaces (where the container could kill or trace it)."""
    from pybuild.linux import fuseoverlay

    ov = spec.overlay
    if ov is None or fuseoverlay.program() is None:
        yield spec
        return
    from pybuild.errors import MountError
    from pybuild.records import replace

    from .rootfs import RootfsError

    try:
        fd = fuseoverlay.detached_mount([str(ov.overlay_root / p) for p in ov.lowers], str(ov.overlay_root / ov.upper),
                                        str(ov.overlay_root / ov.work))
    except MountError as exc:
        raise RootfsError(f"cannot mount the rootfs {spec.rootfs}: {exc}") from None
    try:
        yield replace(spec, rootfs_mount_fd=fd)
    finally:
        os.close(fd)  # the container's namespace holds the mount now


def write_err(text: str, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(text + ("" if text.endswith("\n") else "\n"))
    stream.flush()


def pump_pty(master: int, proc: ContainerProcess, interactive: bool) -> None:
    """Copy between this terminal and the container's pty until the container's side closes."""
    import select
    import termios
    import tty

    stdin_fd = sys.stdin.fileno()
    stdout_fd = sys.stdout.fileno()
    restore = None
    if interactive and os.isatty(stdin_fd):
        restore = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
        with contextlib.suppress(OSError):
            import fcntl
            import struct

            size = fcntl.ioctl(stdin_fd, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            del struct
    try:
        fds = [master] + ([stdin_fd] if interactive else [])
        while True:
            ready, _, _ = select.select(fds, [], [], 0.2)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the container closed its side
                    break
                if not data:
                    break
                os.write(stdout_fd, data)
            if stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    fds.remove(stdin_fd)
                    continue
                os.write(master, data)
            if not ready and proc.poll() is not None:
                # Drain what is left, then stop.
                with contextlib.suppress(OSError):
                    while data := os.read(master, 65536):
                        os.write(stdout_fd, data)
                break
    finally:
        if restore is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, restore)
