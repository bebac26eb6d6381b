"""Starting a container's process (runc's ``create``+``start``) and joining one (``exec``).

Process structure::

    caller ──fork──> shim (A) ──unshare(NEWPID), fork──> init (B, PID 1 in the new PID namespace)

* The **shim** stays in the host's namespaces. It only unshares the PID
  namespace (which applies to its children), forks the init, hands the
  caller a pidfd of it, then waits for it and reports its raw wait status
  over a pipe before exiting. The caller therefore gets the init's real exit
  status (code or signal) without becoming anybody's subreaper: setting
  PR_SET_CHILD_SUBREAPER on the caller would make it adopt every orphan of
  every child it ever starts, a process-wide side effect for a library call.
* The **init** joins the prepared network namespace if the spec names one
  (``netns``: a bridge endpoint's, or another container's), unshares the
  other namespaces, sets up the root filesystem (``rootfs``), the hostname
  and ``lo`` while the caller puts it in its cgroup (on cgroup v1 the first
  write to ``cgroup.procs`` waits for an RCU grace period, ~10 ms: as long as
  the whole setup), then blocks until the caller says ``go``, unshares the
  cgroup namespace (after it joined its cgroup, so the container sees that
  cgroup as its root), resolves the user from the container's own files,
  drops to the container's credentials and capabilities, closes every
  descriptor but 0-2 and execs the user's program directly: /proc/1/exe is
  the container's binary, never Python. Nothing of the user's runs before
  it is in its cgroup.

Sync: one ``SOCK_SEQPACKET`` socketpair carries JSON messages: shim->caller
``pid`` (with the pidfd attached), caller->init ``go``, init->caller ``pty``
(the terminal's master fd attached, runc's console socket) or ``error``.
The init's end is close-on-exec, so a successful execve shows up as EOF on
the caller's end; every read has a deadline and both children die with
their parent (PR_SET_PDEATHSIG, checked against races by the sync itself).

Both children are non-dumpable from the moment they exist and can import
nothing but built-in modules, so code inside the container can neither open
the runtime's /proc/<pid>/exe nor feed it a Python module to run as root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import importlib.machinery
import json
import os
import select
import signal
import stat
import sys
import time
import warnings
from collections.abc import Callable

from pybuild.errors import ContainerError, PybuildError
from pybuild.linux import syscalls, unixsock
from pybuild.records import record

from . import rootfs, seccomp, users
from .spec import DEFAULT_CAPS, DEFAULT_PATH, DEFAULT_SECCOMP, ContainerSpec, ProcessSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO, Any, NoReturn, Protocol, TypeAlias

    Stdio: TypeAlias = "int | IO[Any] | None"

    class Cgroup(Protocol):
        def add(self, pid: int) -> None: ...

SETUP_TIMEOUT = 60.0  # from fork to execve, mounts included
_MSG_MAX = 65536


class ContainerStartError(ContainerError):
    """The container could not be started (``docker run`` exits 125 for these)."""

    exit_code = 125

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(message, hint)
        if exit_code is not None:
            self.exit_code = exit_code


class ExecError(ContainerStartError):
    """The program could not be executed: 127 when not found, 126 when not executable."""


@record(frozen=True)
class ExitStatus:
    code: int
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return cls(128 + sig, sig)
        if os.WIFEXITED(status):
            return cls(os.WEXITSTATUS(status))
        return cls(255)


class ContainerProcess:
    """The container's first process, seen from the caller."""

    def __init__(self, pid: int, shim_pid: int, pidfd: int, status_fd: int) -> None:
        self.pid = pid  # host pid of the container's PID 1 (or of the joined process)
        self.shim_pid = shim_pid
        self.pty_master: int | None = None
        self._pidfd: int | None = pidfd
        self._status_fd: int | None = status_fd
        self._status: ExitStatus | None = None

    def __repr__(self) -> str:
        return f"<ContainerProcess pid={self.pid} status={self._status}>"

    @property
    def returncode(self) -> ExitStatus | None:
        return self._status

    @property
    def exit_fd(self) -> int | None:
        """A descriptor that turns readable when the process ends (for select), None once reaped."""
        return self._status_fd

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process; a no-op once it has exited."""
        if self._pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    def poll(self) -> ExitStatus | None:
        try:
            return self.wait(timeout=0)
        except TimeoutError:
            return None

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait for the process to end; TimeoutError if it does not within ``timeout`` seconds."""
        if self._status is not None:
            return self._status
        assert self._status_fd is not None
        if not _readable(self._status_fd, timeout):
            raise TimeoutError(f"container process {self.pid} still running after {timeout}s")
        data = b""
        while len(data) < 4:
            chunk = os.read(self._status_fd, 4 - len(data))
            if not chunk:
                break
            data += chunk
        try:
            _, shim_status = os.waitpid(self.shim_pid, 0)
        except ChildProcessError:  # the caller ignores SIGCHLD: the kernel reaped the shim
            shim_status = 0x7F << 8 if len(data) < 4 else 0
        if len(data) == 4:
            self._status = ExitStatus.from_wait_status(int.from_bytes(data, "little"))
        else:
            # The shim itself was killed (its own parent died, or someone shot it):
            # the init died with it through PR_SET_PDEATHSIG.
            self._status = ExitStatus.from_wait_status(shim_status)
        self._close_fds(keep_pty=True)
        return self._status

    def _close_fds(self, keep_pty: bool) -> None:
        for name in ("_pidfd", "_status_fd") + (() if keep_pty else ("pty_master",)):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    def close(self) -> None:
        """Kill the process if still running, reap it and close every descriptor (the pty too)."""
        if self._status is None and self._status_fd is not None:
            self.kill(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                self.wait(timeout=10)
        self._close_fds(keep_pty=False)

    def __enter__(self) -> ContainerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the public entry points -------------------------------------------------------

def spawn(spec: ContainerSpec, *, cgroup: Cgroup | None = None, stdin: Stdio = None,
          stdout: Stdio = None, stderr: Stdio = None, timeout: float = SETUP_TIMEOUT,
          die_with_parent: bool = True, seccomp_cache: Path | None = None) -> ContainerProcess:
    """Start ``spec`` in new namespaces; returns once the user's program is executing.

    ``stdin``/``stdout``/``stderr`` are descriptors or files (None: inherit the
    caller's, except stdin which is /dev/null unless ``spec.process.stdin``).
    With ``spec.process.tty`` they are ignored: the process gets a terminal
    of its own and ``pty_master`` is its other end. ``cgroup.add(pid)`` is
    called before the container runs anything. Raises :class:`ExecError`
    (``exit_code`` 126/127) when the program cannot be run,
    :class:`users.UserNotFound` for an unknown user or group and
    :class:`ContainerStartError` (125) for anything else that fails during setup.

    With ``die_with_parent`` the container is SIGKILLed when the calling
    process dies (PR_SET_PDEATHSIG on the shim). The kernel ties that to the
    calling *thread*: call spawn from a thread that outlives the container
    (the main thread, or pass ``die_with_parent=False`` and manage it).

    The seccomp profile is compiled here, in the caller, once per profile and
    capability set (``seccomp_cache``: a directory that keeps compiled
    programs across processes); the container's init only loads the program.
    """
    if spec.init is not None and not os.path.isfile(spec.init):
        raise ContainerStartError(f"init binary {spec.init} not found on the host")
    program = _seccomp_program(spec.seccomp, spec.capabilities, seccomp_cache)

    def prepare() -> None:
        syscalls.unshare(syscalls.CLONE_NEWPID)

    def init_main(sync: unixsock.Socket) -> NoReturn:
        _container_init(spec, sync, timeout, program)

    keep = () if spec.rootfs_mount_fd is None else (spec.rootfs_mount_fd,)
    return _launch(prepare, init_main, spec.process, cgroup, (stdin, stdout, stderr), timeout,
                   die_with_parent, keep)


def enter(pid: int, process: ProcessSpec, *, capabilities: tuple[str, ...] = DEFAULT_CAPS,
          no_new_privs: bool = False, seccomp_profile: seccomp.Profile | None = DEFAULT_SECCOMP,
          seccomp_cache: Path | None = None, cgroup: Cgroup | None = None, stdin: Stdio = None,
          stdout: Stdio = None, stderr: Stdio = None, timeout: float = SETUP_TIMEOUT,
          die_with_parent: bool = True) -> ContainerProcess:
    """Run ``process`` inside the running container whose init is host pid ``pid`` (``exec``).

    The shim joins the container's namespaces with setns (the PID namespace
    applies to the process it forks next); the joined process gets the
    container's credentials, capabilities and seccomp filter like its init did.
    """
    for cap in capabilities:
        try:
            syscalls.cap_number(cap)
        except KeyError:
            raise ContainerStartError(f"unknown capability {cap!r}") from None
    ns_paths = [(f"/proc/{pid}/ns/{name}", flag) for name, flag in syscalls.NAMESPACES
                if syscalls.namespace_supported(name)]
    if not os.path.exists(f"/proc/{pid}/ns/mnt"):
        raise ContainerStartError(f"container process {pid} is not running")
    mask = syscalls.caps_mask(capabilities)
    program = _seccomp_program(seccomp_profile, capabilities, seccomp_cache)

    def prepare() -> None:
        opened = []
        try:
            for path, flag in ns_paths:
                theirs = os.stat(path)
                ours = os.stat(f"/proc/self/ns/{os.path.basename(path)}")
                if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                    opened.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
            for fd, flag in opened:
                syscalls.setns(fd, flag)
        finally:
            for fd, _ in opened:
                os.close(fd)

    def init_main(sync: unixsock.Socket) -> NoReturn:
        syscalls.set_pdeathsig(signal.SIGKILL)
        _wait_for_go(sync, timeout)
        _finalize_and_exec(sync, process, mask, no_new_privs, program, use_init=False, console=False)

    return _launch(prepare, init_main, process, cgroup, (stdin, stdout, stderr), timeout, die_with_parent)


# ---- the caller's side -----------------------------------------------------------

def _fileno(value: Stdio) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return value.fileno()


def _launch(prepare: Callable[[], None], init_main: Callable[[unixsock.Socket], NoReturn],
            process: ProcessSpec, cgroup: Cgroup | None, stdio: tuple[Stdio, Stdio, Stdio],
            timeout: float, die_with_parent: bool, keep_fds: tuple[int, ...] = ()) -> ContainerProcess:
    """``keep_fds``: descriptors of the caller the init needs besides its stdio (a rootfs mount)."""
    fds = tuple(_fileno(s) for s in stdio)
    syscalls.cap_last_cap()  # read on the host, before any child is in the container
    deadline = time.monotonic() + timeout
    ours, theirs = unixsock.seqpacket_pair()
    status_r, status_w = os.pipe()
    parent = os.getpid()
    shim = os.fork()
    if shim == 0:  # pragma: no cover - runs in the child
        _child(lambda: _shim_main(parent, ours, theirs, status_w, fds, process, prepare, init_main,
                                  timeout, die_with_parent, keep_fds), theirs)
    theirs.close()
    os.close(status_w)
    proc: ContainerProcess | None = None
    try:
        msg, received = _recv(ours, deadline)
        if msg is None:
            raise ContainerStartError("the container's shim exited without reporting")
        if msg.get("type") == "error":
            raise _error_from(msg)
        if msg.get("type") != "pid" or len(received) != 1:
            raise ContainerStartError(f"unexpected message from the container's shim: {msg}")
        proc = ContainerProcess(int(msg["pid"]), shim, received[0], status_r)
        try:
            if cgroup is not None:
                cgroup.add(proc.pid)
            ours.send(json.dumps({"type": "go"}).encode())
        except (PybuildError, OSError):
            # The init may have failed its setup meanwhile: its report says why.
            _raise_reported(ours, received[0])
            raise
        while True:
            msg, received = _recv(ours, deadline)
            if msg is None:
                break  # the init's end closed on execve: the program runs
            if msg.get("type") == "pty" and len(received) == 1 and proc.pty_master is None:
                proc.pty_master = received[0]
                continue
            for fd in received:
                os.close(fd)
            if msg.get("type") == "error":
                raise _error_from(msg)
            raise ContainerStartError(f"unexpected message from the container: {msg}")
    except BaseException:
        if proc is not None:
            proc.kill(signal.SIGKILL)
            with contextlib.suppress(BaseException):
                proc.wait(timeout=10)
            proc.close()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(shim, signal.SIGKILL)
            os.waitpid(shim, 0)
            os.close(status_r)
        raise
    finally:
        ours.close()
    return proc


def _raise_reported(sock: unixsock.Socket, pidfd: int) -> None:
    """Raise the error the container reported, if it ended with a report on ``sock``."""
    if not _readable(sock.fileno(), 0) and not _readable(pidfd, 0):
        return  # still setting up: nothing to report
    if not _readable(sock.fileno(), 0.1):
        return
    try:
        msg, received = _recv(sock, time.monotonic() + 0.1)
    except (OSError, ContainerStartError):
        return
    for fd in received:
        os.close(fd)
    if msg is not None and msg.get("type") == "error":
        raise _error_from(msg)


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` becomes readable (or hung up) within ``timeout`` seconds (None: wait forever)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
        if poller.poll(remaining):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def _recv(sock: unixsock.Socket, deadline: float) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (None at EOF) and the descriptors that came with it."""
    if not _readable(sock.fileno(), max(0.0, deadline - time.monotonic())):
        raise ContainerStartError("timed out waiting for the container to start")
    data, fds = unixsock.recv_fds(sock, _MSG_MAX, 4, unixsock.MSG_CMSG_CLOEXEC)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        msg = json.loads(data)
    except ValueError:
        msg = {"type": "error", "message": f"garbled message from the container: {data[:100]!r}"}
    if not isinstance(msg, dict):
        msg = {"type": "error", "message": f"garbled message from the container: {data[:100]!r}"}
    return msg, fds


def _error_from(msg: dict[str, Any]) -> ContainerError:
    message = str(msg.get("message") or "container failed to start")
    kind = msg.get("kind")
    code = msg.get("exit_code")
    exit_code = code if isinstance(code, int) else None
    if kind == "exec":
        return ExecError(message, exit_code=exit_code)
    if kind == "user":
        return users.UserNotFound(message)
    return ContainerStartError(message, exit_code=exit_code)


# ---- the children ---------------------------------------------------------------

def _child(body: Callable[[], object], sync: unixsock.Socket) -> NoReturn:
    """Run ``body`` in a forked child: any failure is reported on ``sync``; never returns."""
    code = 1
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - everything must be reported, nothing may escape
        _report(sync, exc)
        code = exc.exit_code if isinstance(exc, ContainerStartError) else 1
    finally:
        os._exit(code)


def _report(sync: unixsock.Socket, exc: BaseException) -> None:
    if isinstance(exc, ExecError):
        kind = "exec"
    elif isinstance(exc, users.UserNotFound):
        kind = "user"
    else:
        kind = "start"
    if isinstance(exc, ContainerError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc.strerror)
    else:
        message = f"{type(exc).__name__}: {exc}"
    payload: dict[str, Any] = {"type": "error", "kind": kind, "message": message}
    if isinstance(exc, ContainerStartError):
        payload["exit_code"] = exc.exit_code
    with contextlib.suppress(OSError):
        sync.send(json.dumps(payload).encode()[:_MSG_MAX])


def _lockdown() -> None:
    """Child setup common to shim and init: no imports from disk, no GC, no warnings output.

    Once in the container's mount namespace, a lazy ``import`` would read a
    module from the container's filesystem and run it as root.
    """
    gc.disable()
    warnings.simplefilter("ignore")
    sys.meta_path[:] = [f for f in sys.meta_path
                        if f in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)]
    sys.path[:] = []
    sys.path_hooks.clear()
    sys.path_importer_cache.clear()
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)


def _shim_main(parent: int, ours: unixsock.Socket, sync: unixsock.Socket, status_w: int,
               fds: tuple[int | None, ...], process: ProcessSpec, prepare: Callable[[], None],
               init_main: Callable[[unixsock.Socket], NoReturn], timeout: float,
               die_with_parent: bool, keep_fds: tuple[int, ...] = ()) -> None:
    ours.close()
    _lockdown()
    # Keyboard and session signals are for the container (same process group),
    # not for its waiter; SIGCHLD must not be ignored or the init's status is lost.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if die_with_parent:
        syscalls.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # the caller died before we could tie our fate to it
    syscalls.set_dumpable(False)
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    stdio = list(fds)
    if stdio[0] is None and not process.stdin:
        stdio[0] = devnull
    _install_stdio(stdio)
    _close_all_but({0, 1, 2, sync.fileno(), status_w, devnull, *keep_fds})
    prepare()
    init = os.fork()
    if init == 0:
        os.close(status_w)
        os.close(devnull)
        _child(lambda: init_main(sync), sync)
    pidfd = os.pidfd_open(init)
    unixsock.send_fds(sync, json.dumps({"type": "pid", "pid": init}).encode(), [pidfd])
    os.close(pidfd)
    sync.close()
    # Hold no copy of the container's stdio: readers must see EOF when it is done.
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    _, status = os.waitpid(init, 0)
    os.write(status_w, status.to_bytes(4, "little"))
    os._exit(0)


def _install_stdio(stdio: list[int | None]) -> None:
    temps: list[int | None] = []
    for fd in stdio:
        temps.append(None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
    for target, temp in enumerate(temps):
        if temp is not None:
            os.dup2(temp, target, inheritable=True)
            os.close(temp)


def _close_all_but(keep: set[int]) -> None:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(3, 4096)]
    for name in names:
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _wait_for_go(sync: unixsock.Socket, timeout: float) -> None:
    if not _readable(sync.fileno(), timeout):
        raise ContainerStartError("timed out waiting for the runtime's go-ahead")
    data = sync.recv(_MSG_MAX)
    if not data:
        os._exit(1)  # the caller is gone
    if json.loads(data).get("type") != "go":
        raise ContainerStartError("unexpected message from the runtime")


def _seccomp_program(profile: seccomp.Profile | None, capabilities: tuple[str, ...],
                     cache: Path | None) -> bytes | None:
    if profile is None:
        return None
    if not profile.document:
        profile = seccomp.default_profile()
    return seccomp.compile_program(profile, capabilities, cache_dir=cache)


def _container_init(spec: ContainerSpec, sync: unixsock.Socket, timeout: float,
                    program: bytes | None) -> NoReturn:
    syscalls.set_pdeathsig(signal.SIGKILL)
    cgroup_namespace = syscalls.namespace_supported("cgroup")  # asked of the host's /proc
    flags = syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
    if spec.netns is not None:
        _join_netns(spec.netns)
    elif spec.network == "none":
        flags |= syscalls.CLONE_NEWNET
    _unshare(flags)
    rootfs.setup(spec)
    unixsock.sethostname(spec.hostname)
    if spec.network == "none" and spec.netns is None:
        syscalls.link_up("lo")
    _wait_for_go(sync, timeout)  # in the container's cgroup from here on
    if cgroup_namespace:
        _unshare(syscalls.CLONE_NEWCGROUP)
    _finalize_and_exec(sync, spec.process, spec.capability_mask, spec.no_new_privs, program,
                       use_init=spec.init is not None, console=True)


def _unshare(flags: int) -> None:
    try:
        syscalls.unshare(flags)
    except OSError as exc:
        raise ContainerStartError(f"cannot create the container's namespaces: {exc.strerror}") from None


def _join_netns(path: str) -> None:
    """Enter a prepared network namespace (still in the host's mount namespace, so the path resolves there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerStartError(f"cannot open the network namespace {path}: {exc.strerror}") from None
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    except OSError as exc:
        raise ContainerStartError(f"cannot join the network namespace {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _open_console(bind_console: bool) -> int:
    """A terminal from the container's devpts: the slave becomes stdio and controlling tty, the master is returned."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
    st = os.fstat(master)
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (5, 2):
        raise ContainerStartError("/dev/ptmx in the container is not the pty multiplexer")
    os.set_blocking(master, True)
    syscalls.unlockpt(master)
    slave_path = f"/dev/pts/{syscalls.ptsname_number(master)}"
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
    st = os.fstat(slave)
    if not stat.S_ISCHR(st.st_mode) or not 136 <= os.major(st.st_rdev) <= 143:
        raise ContainerStartError(f"{slave_path} in the container is not a pty")
    os.set_blocking(slave, True)
    if bind_console:
        rootfs.bind_console(slave_path)
    os.setsid()
    syscalls.set_controlling_tty(slave)
    for fd in (0, 1, 2):
        os.dup2(slave, fd, inheritable=True)
    os.close(slave)
    return master


def _install_seccomp(program: bytes) -> None:
    try:
        seccomp.install(program)
    except OSError as exc:
        raise ContainerStartError(f"cannot load the seccomp filter: {exc.strerror or exc}") from None


def _finalize_and_exec(sync: unixsock.Socket, process: ProcessSpec, cap_mask: int, no_new_privs: bool,
                       seccomp_program: bytes | None, *, use_init: bool, console: bool) -> NoReturn:
    os.umask(0o022)
    if process.tty:
        master = _open_console(bind_console=console)
        unixsock.send_fds(sync, json.dumps({"type": "pty"}).encode(), [master])
        os.close(master)
    user = users.lookup(process.user, groups=process.groups)
    env = users.home_env(process.env, user.home)
    # chdir as root first (creating a missing working dir, as Docker does for
    # WORKDIR); a directory only the user can enter is tried again afterwards.
    chdir_later = False
    try:
        os.chdir(process.cwd)
    except FileNotFoundError:
        try:
            # After pivot_root "/" is the container's root, so symlinks resolve inside it: a
            # dangling link on the way (WORKDIR /app, /app -> /data/app) is followed and its
            # target created, as Docker does.
            os.makedirs(os.path.realpath(process.cwd), mode=0o755, exist_ok=True)
            os.chdir(process.cwd)
        except OSError as exc:
            raise ContainerStartError(f"cannot create working directory {process.cwd}: {exc.strerror}") from None
    except PermissionError:
        chdir_later = True
    except OSError as exc:
        raise ContainerStartError(f"chdir to {process.cwd}: {exc.strerror}") from None

    _close_all_but({0, 1, 2, sync.fileno()})
    for limit in process.rlimits:
        try:
            syscalls.setrlimit(limit.resource, limit.soft, limit.hard)
        except OSError as exc:
            raise ContainerStartError(f"cannot set ulimit {limit.resource} to {limit.soft}:{limit.hard}: "
                                      f"{exc.strerror}") from None
    if seccomp_program is not None and not no_new_privs:
        # Without no_new_privs, loading a filter takes CAP_SYS_ADMIN: load it
        # before the capabilities go (what runc does); what follows must be allowed by it.
        _install_seccomp(seccomp_program)

    syscalls.drop_bounding(b for b in range(cap_mask.bit_length()) if cap_mask >> b & 1)
    syscalls.set_keepcaps(True)
    try:
        if user.additional_gids or not _setgroups_denied():
            os.setgroups(list(user.additional_gids))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise ContainerStartError(f"cannot switch to user {process.user or 'root'} "
                                  f"({user.uid}:{user.gid}): {exc.strerror}") from None
    syscalls.set_keepcaps(False)
    _, permitted, _ = syscalls.capget()
    # Root keeps the container's set; any other user starts with none (execve
    # would clear them anyway). The inheritable set stays empty, as in Docker
    # since CVE-2022-24769.
    keep = cap_mask & permitted if user.uid == 0 else 0
    syscalls.capset(keep, keep, 0)
    syscalls.clear_ambient()
    if chdir_later:
        try:
            os.chdir(process.cwd)
        except OSError as exc:
            raise ContainerStartError(f"chdir to {process.cwd}: {exc.strerror}") from None
    if no_new_privs:
        syscalls.set_no_new_privs()

    env_map = dict(e.split("=", 1) for e in env)
    program = _look_path(process.args[0], env_map.get("PATH"))
    if use_init:
        path, argv = rootfs.INIT_PATH, [rootfs.INIT_PATH, "--", *process.args]
    else:
        path, argv = program, list(process.args)
    _restore_signals()
    if seccomp_program is not None and no_new_privs:
        _install_seccomp(seccomp_program)  # as late as possible: only execve runs under it here
    try:
        os.execve(path, argv, env_map)
    except OSError as exc:
        code = 127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        reason = (exc.strerror or str(exc)).lower()
        raise ExecError(f'exec: "{argv[0]}": {reason}', exit_code=code) from None
    raise AssertionError("unreachable")


def _setgroups_denied() -> bool:
    """A rootless namespace mapping only its user's own gid has setgroups(2) off (and no groups to set)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def _look_path(name: str, path: str | None) -> str:
    """``name`` resolved like Go's exec.LookPath (runc's), in the current root."""
    if "/" in name:
        problem = _not_executable(name)
        if problem is not None:
            code = 127 if "no such file" in problem or "not a directory" in problem else 126
            raise ExecError(f'exec: "{name}": {problem}', exit_code=code)
        return name
    for directory in (DEFAULT_PATH if path is None else path).split(":"):
        candidate = os.path.join(directory or ".", name)
        if _not_executable(candidate) is None:
            return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH', exit_code=127)


def _not_executable(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"stat {path}: {(exc.strerror or str(exc)).lower()}"
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        return "permission denied"
    return None


def _restore_signals() -> None:
    """Default dispositions and an empty mask: ignored signals would survive execve."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
