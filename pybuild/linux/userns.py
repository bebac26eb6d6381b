"""Rootless: the user namespace an ordinary user's pybuild runs in.

An ordinary user cannot mount, make namespaces for containers or own files
under other ids. In a user namespace of its own, where the user is root and
its subordinate ids (``/etc/subuid``, ``/etc/subgid``) are the other users,
it can do all of that for the namespace's own objects, as podman and buildah
do. The namespace must outlive one command (a ``run -d`` container is
``exec``-ed into later; a ``mount`` stays mounted), so the first command makes
a *pause* process that holds a user namespace and a mount namespace, and every
command joins those two with setns(2). The ids are mapped by the
distribution's setuid ``newuidmap``/``newgidmap`` (package ``uidmap``);
pybuild has no privileged helper of its own. Without subordinate ids the user
maps only itself (root inside, nobody else): images with files of other
owners cannot be unpacked then, and the first command warns so.

The pause process's pid is kept in ``$XDG_RUNTIME_DIR/pybuild/pause.pid``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from pybuild.errors import RootlessError
from pybuild.linux import syscalls
from pybuild.records import record

PAUSE_NAME = "pybuild-pause"
_FULL_MAP = "0 0 4294967295"
_MS_REC = 0x4000
_MS_SLAVE = 1 << 19


@record(frozen=True)
class IdRange:
    """One line of a uid_map/gid_map: ``size`` ids from ``inside`` map to ``outside`` onwards."""

    inside: int
    outside: int
    size: int


@record(frozen=True)
class IdMapping:
    """The ids a rootless namespace maps: the user itself as 0, then its subordinate ranges."""

    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]
    missing_tools: bool = False  # subordinate ids exist, but newuidmap/newgidmap do not

    @property
    def single(self) -> bool:
        """Whether only the user itself is mapped (no subordinate ids)."""
        return len(self.uids) == 1 or len(self.gids) == 1

    def uid_count(self) -> int:
        return sum(r.size for r in self.uids)


_rootless: bool | None = None


def rootless() -> bool:
    """Whether this process runs in a user namespace other than the initial one.

    That is where the kernel's rules for unprivileged users hold: overlay takes
    ``userxattr``, device nodes cannot be made, cgroups need delegation.
    """
    global _rootless
    if _rootless is None:
        try:
            text = Path("/proc/self/uid_map").read_text()
        except OSError:
            text = _FULL_MAP
        _rootless = " ".join(text.split()) != _FULL_MAP
    return _rootless


def host_uid() -> int:
    """The uid this process has outside its user namespace (``os.getuid()`` where there is none)."""
    for r in read_map(Path("/proc/self/uid_map")):
        if r.inside <= os.getuid() < r.inside + r.size:
            return r.outside + os.getuid() - r.inside
    return os.getuid()


def gid_mapped(gid: int) -> bool:
    """Whether ``gid`` exists in this process's user namespace (always, outside one)."""
    if not rootless():
        return True
    return any(r.inside <= gid < r.inside + r.size for r in read_map(Path("/proc/self/gid_map")))


def read_map(path: Path) -> list[IdRange]:
    ranges = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                ranges.append(IdRange(int(parts[0]), int(parts[1]), int(parts[2])))
    return ranges


def subordinate_ranges(path: Path, user: str, uid: int) -> list[tuple[int, int]]:
    """The ``(start, count)`` ranges ``path`` (``/etc/subuid`` syntax) grants ``user`` (by name or uid)."""
    ranges = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RootlessError(f"cannot read {path}: {exc.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        with contextlib.suppress(ValueError):
            start, count = int(parts[1]), int(parts[2])
            if start >= 0 and count > 0:
                ranges.append((start, count))
    return ranges


def plan_mapping(uid: int, gid: int, user: str, etc: Path = Path("/etc")) -> IdMapping:
    """The mapping a namespace for ``uid``/``gid`` gets: itself as 0, its subordinate ranges from 1 on."""
    def ranges(own: int, file: str) -> tuple[IdRange, ...]:
        out = [IdRange(0, own, 1)]
        inside = 1
        for start, count in subordinate_ranges(etc / file, user, uid):
            out.append(IdRange(inside, start, count))
            inside += count
        return tuple(out)

    return IdMapping(ranges(uid, "subuid"), ranges(gid, "subgid"))


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/pybuild``, made if need be; the variable must name a directory of this user's."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    uid = host_uid()
    if not base:
        raise RootlessError(
            "XDG_RUNTIME_DIR is not set: rootless pybuild keeps its namespace's state there",
            f"log in through a session that sets it, or: export XDG_RUNTIME_DIR=/run/user/{uid} "
            "(a directory of yours, mode 0700)")
    try:
        st = os.stat(base)
    except OSError as exc:
        raise RootlessError(f"XDG_RUNTIME_DIR {base}: {exc.strerror}",
                            "make it a directory of yours, mode 0700") from None
    if st.st_uid != os.getuid():
        raise RootlessError(f"XDG_RUNTIME_DIR {base} is not yours (owner uid {st.st_uid})",
                            "point it at a directory of yours, mode 0700")
    path = Path(base) / "pybuild"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def default_store_root() -> str:
    """Where an ordinary user's store lives: ``$XDG_DATA_HOME/pybuild`` (``~/.local/share/pybuild``)."""
    data = os.environ.get("XDG_DATA_HOME")
    if not data:
        home = os.environ.get("HOME") or pwd.getpwuid(host_uid()).pw_dir
        data = os.path.join(home, ".local", "share")
    return os.path.join(data, "pybuild")


def enter(warn: Callable[[str], None] | None = None) -> None:
    """Join this user's rootless namespaces, making them first if there are none.

    Call it while the process has a single thread (setns(2) into a user
    namespace refuses threaded callers). As root it does nothing. ``warn`` is
    called with a one-line text when the namespace maps no subordinate ids.
    """
    if os.geteuid() == 0:
        return
    import threading

    if threading.active_count() > 1:
        raise RootlessError("cannot enter the rootless namespace from a threaded process")
    state = runtime_dir()
    with open(state / "pause.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = _live_pause(state / "pause.pid")
        if pid is None:
            pid, mapping = _make_pause()
            (state / "pause.pid").write_text(f"{pid}\n")
            if mapping.single and warn is not None:
                warn(_single_mapping_warning(mapping.missing_tools))
        _join(pid)
    global _rootless
    _rootless = True


def pause_pid() -> int | None:
    """The pid of this user's pause process, if one runs."""
    try:
        return _live_pause(runtime_dir() / "pause.pid")
    except RootlessError:
        return None


def _single_mapping_warning(missing_tools: bool) -> str:
    user = _user_name(host_uid())
    consequence = ("only your own id is mapped, so images with files of other owners cannot be unpacked "
                   "and chown in RUN fails")
    if missing_tools:
        return f"newuidmap/newgidmap not found: {consequence}; install them (apt-get install uidmap)"
    return (f"no subordinate ids for {user} in /etc/subuid and /etc/subgid: {consequence}; add a range "
            f"(usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user})")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _live_pause(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    if not cmdline.startswith(PAUSE_NAME.encode() + b"\0") or owner != os.getuid():
        return None
    return pid


def _make_pause() -> tuple[int, IdMapping]:
    """Fork the pause process, map its ids, and return its pid once it holds both namespaces."""
    uid, gid = os.getuid(), os.getgid()
    mapping = plan_mapping(uid, gid, _user_name(uid))
    newuidmap, newgidmap = shutil.which("newuidmap"), shutil.which("newgidmap")
    if not mapping.single and (newuidmap is None or newgidmap is None):
        mapping = IdMapping(mapping.uids[:1], mapping.gids[:1], missing_tools=True)
    sleep = shutil.which("sleep") or "/bin/sleep"
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the pause process
        status = 1
        try:
            os.close(to_parent_r)
            os.close(to_child_w)
            os.setsid()
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(to_parent_w, b"u")
            if os.read(to_child_r, 1) != b"m":
                os._exit(1)
            syscalls.unshare(syscalls.CLONE_NEWNS)
            from pybuild.linux import mount

            mount.mount("none", "/", None, _MS_REC | _MS_SLAVE)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.write(to_parent_w, b"r")
            os.closerange(3, 1 << 16)
            os.execv(sleep, [PAUSE_NAME, "infinity"])
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            with contextlib.suppress(OSError):
                text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                os.write(to_parent_w, b"e" + text.encode(errors="replace")[:1000])
        os._exit(status)
    os.close(to_parent_w)
    os.close(to_child_r)
    try:
        first = os.read(to_parent_r, 1024)
        if first != b"u":
            raise RootlessError(_unshare_refused(first[1:].decode(errors="replace")))
        _write_maps(pid, mapping, newuidmap, newgidmap)
        os.write(to_child_w, b"m")
        ready = os.read(to_parent_r, 1024)
        if ready != b"r":
            raise RootlessError(f"the rootless namespace could not be set up: {ready[1:].decode(errors='replace')}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(to_parent_r)
        os.close(to_child_w)
    _reap_later(pid)
    return pid, mapping


def _reap_later(pid: int) -> None:
    """The pause process is our child only until we exit; never leave it a zombie meanwhile."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _unshare_refused(reason: str) -> str:
    text = "the kernel refuses an unprivileged user namespace"
    if reason:
        text += f" ({reason})"
    with contextlib.suppress(OSError):
        if Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() == "0":
            text += ": set kernel.unprivileged_userns_clone=1"
    with contextlib.suppress(OSError):
        if Path("/proc/sys/user/max_user_namespaces").read_text().strip() == "0":
            text += ": set user.max_user_namespaces above 0"
    with contextlib.suppress(OSError):
        status = Path("/proc/self/status").read_text()
        if "\nSeccomp:\t2" in status:
            text += (": a seccomp filter forbids it (in a container: --security-opt seccomp=unconfined, "
                     "or a profile that allows unshare and clone of user namespaces)")
    return text


def _write_maps(pid: int, mapping: IdMapping, newuidmap: str | None, newgidmap: str | None) -> None:
    if mapping.single:
        # An unprivileged process may map its own ids only, and gid_map only after setgroups is denied.
        Path(f"/proc/{pid}/uid_map").write_text(_map_text(mapping.uids[:1]))
        Path(f"/proc/{pid}/setgroups").write_text("deny")
        Path(f"/proc/{pid}/gid_map").write_text(_map_text(mapping.gids[:1]))
        return
    assert newuidmap is not None and newgidmap is not None
    for tool, ranges in ((newuidmap, mapping.uids), (newgidmap, mapping.gids)):
        args = [tool, str(pid)] + [str(n) for r in ranges for n in (r.inside, r.outside, r.size)]
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise RootlessError(f"{os.path.basename(tool)} failed: {detail[0]}",
                                "check your ranges in /etc/subuid and /etc/subgid and that "
                                f"{tool} is setuid root (package uidmap)")


def _map_text(ranges: tuple[IdRange, ...]) -> str:
    return "".join(f"{r.inside} {r.outside} {r.size}\n" for r in ranges)


def _join(pid: int) -> None:
    fds = []
    try:
        for ns in ("user", "mnt"):
            fds.append(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise RootlessError(f"cannot open the rootless namespace of process {pid}: {exc.strerror}") from None
    # setns(2) into a mount namespace moves the cwd to its root: come back to the same directory.
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syscalls.setns(fds[0], syscalls.CLONE_NEWUSER)
        syscalls.setns(fds[1], syscalls.CLONE_NEWNS)
        os.fchdir(cwd)
    except OSError as exc:
        raise RootlessError(f"cannot join the rootless namespace of process {pid}: {exc.strerror}") from None
    finally:
        for fd in (*fds, cwd):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.setgroups([])  # the host's supplementary groups are unmapped (nobody) in here


def stop_pause() -> bool:
    """End this user's pause process (``system reset``); whether there was one."""
    pid = pause_pid()
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
