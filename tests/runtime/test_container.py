"""Real containers over the busybox image: namespaces, rootfs, credentials, exec errors, tty, init."""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pybuild import records
from pybuild.errors import ContainerError
from pybuild.linux import syscalls
from pybuild.runtime import rootfs, users
from pybuild.runtime.process import (
    ContainerProcess,
    ContainerStartError,
    ExecError,
    ExitStatus,
    enter,
    spawn,
)
from pybuild.runtime.spec import DEFAULT_PATH, ContainerSpec, Mount, ProcessSpec, parse_volume

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")

DOCKER_CAPS = "00000000a80425fb"
HOSTNAME = "pybuild-ctr"
TINI = Path("/usr/bin/tini-static")


def _children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(name))
    return out


def _descendants(pid: int) -> dict[int, tuple[str, str]]:
    """Host pid -> (state letter, command line) of ``pid`` and everything below it."""
    found: dict[int, tuple[str, str]] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{current}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        found[current] = (state, cmdline)
        todo.extend(_children_of(current))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_all(fd: int, deadline: float) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no EOF on the container's output; got so far: {out!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side is gone
            break
        if not chunk:
            break
        out += chunk
    return out


@dataclass
class Box:
    """A busybox rootfs in a read-write layer, and the containers started over it."""

    path: Path
    store: Any
    rw: Any
    image: Any
    started: list[ContainerProcess] = field(default_factory=list)

    def spec(self, *args: str, user: str = "", tty: bool = False, stdin: bool = False, cwd: str = "/",
             env: tuple[str, ...] | None = None, **kw: Any) -> ContainerSpec:
        process = ProcessSpec(tuple(args), env=env if env is not None else (f"PATH={DEFAULT_PATH}",),
                              cwd=cwd, user=user, tty=tty, stdin=stdin)
        kw.setdefault("hostname", HOSTNAME)
        return ContainerSpec(self.path, process, **kw)

    def start(self, *args: str, stdout: int | None = None, stderr: int | None = None,
              stdin: int | None = None, cgroup: Any = None, **kw: Any) -> ContainerProcess:
        proc = spawn(self.spec(*args, **kw), cgroup=cgroup, stdin=stdin, stdout=stdout, stderr=stderr,
                     timeout=20)
        self.started.append(proc)
        return proc

    def run(self, *args: str, **kw: Any) -> tuple[ExitStatus, str]:
        r, w = os.pipe()
        try:
            proc = self.start(*args, stdout=w, stderr=w, **kw)
        finally:
            os.close(w)
        try:
            out = _read_all(r, time.monotonic() + 15)
        finally:
            os.close(r)
        return proc.wait(timeout=10), out.decode(errors="replace")

    def output(self, *args: str, **kw: Any) -> str:
        status, out = self.run(*args, **kw)
        assert status == ExitStatus(0), (status, out)
        return out


@pytest.fixture
def box(store: Any, busybox: str) -> Iterator[Box]:
    from pybuild.linux import mount as _mount

    image = store.images.resolve(busybox)
    name = "ctr-" + secrets.token_hex(6)
    rw = store.layers.create_rw(name, image.top_chain_id)
    merged: Path | None = None
    b: Box | None = None
    children_before = set(_children_of(os.getpid()))
    try:
        merged = store.layers.mount_rw(rw)
        # The image's top directory may be 0700 (a rootfs tarred from mktemp -d): open it up so non-root users can run.
        os.chmod(merged, 0o755)
        b = Box(merged, store, rw, image)
        yield b
    finally:
        for proc in (b.started if b else []):
            proc.close()
        if merged is not None and _mount.is_mounted(merged):
            _mount.umount(merged)
        store.layers.remove_rw(name)
        left = _mount.mounts_under(store.root)
        assert not left, f"mounts left under the store root: {left}"
        for proc in (b.started if b else []):
            assert not _alive(proc.pid), f"container process {proc.pid} still alive"
            assert not _alive(proc.shim_pid), f"shim {proc.shim_pid} still alive"
        stray = set(_children_of(os.getpid())) - children_before
        assert not stray, f"processes left behind: {stray}"


def _status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


# ---- namespaces ----------------------------------------------------------------

def test_shell_is_pid_1(box: Box) -> None:
    assert box.output("sh", "-c", "echo $$") == "1\n"


def test_hostname_is_the_specs(box: Box) -> None:
    assert socket.gethostname() != HOSTNAME
    assert box.output("hostname") == HOSTNAME + "\n"
    assert socket.gethostname() != HOSTNAME  # the host's is untouched


def test_network_none_has_only_lo_and_it_is_up(box: Box) -> None:
    assert box.output("ls", "/sys/class/net").split() == ["lo"]
    link = box.output("ip", "link", "show")
    assert link.count(": <") == 1
    assert "lo: <LOOPBACK,UP" in link


def test_network_host_sees_host_interfaces(box: Box) -> None:
    out = box.output("sh", "-c", "ls /sys/class/net; hostname", network="host")
    *nets, hostname = out.split()
    assert sorted(nets) == sorted(os.listdir("/sys/class/net"))
    assert hostname == HOSTNAME


def test_ps_shows_only_the_containers_processes(box: Box) -> None:
    out = box.output("sh", "-c", "ps -o pid,args; true")
    rows = [line.split(None, 1) for line in out.splitlines()[1:]]
    assert [int(pid) for pid, _ in rows][0] == 1
    assert len(rows) == 2, out  # sh and ps
    assert all("ps -o pid,args" in args for _, args in rows)


def test_proc_mounts_show_no_host_mounts(box: Box) -> None:
    out = box.output("cat", "/proc/mounts")
    targets = [line.split()[1] for line in out.splitlines()]
    store_root = str(box.store.root)
    for target in targets:
        assert not target.startswith("/work"), out
        assert not target.startswith(store_root), out
        assert not target.startswith("/var/tmp"), out
    assert targets[0] == "/"
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"} <= set(targets)
    assert len(targets) < 40


def test_cgroup_is_joined_before_the_program_runs(box: Box) -> None:
    seen: list[tuple[int, str]] = []

    class FakeCgroup:
        def add(self, pid: int) -> None:
            seen.append((pid, os.readlink(f"/proc/{pid}/exe")))

    status, _ = box.run("true", cgroup=FakeCgroup())
    assert status == ExitStatus(0)
    [(pid, exe)] = seen
    assert pid == box.started[-1].pid
    assert exe == os.path.realpath(sys.executable)  # still the runtime, not yet the container's program


# ---- filesystem --------------------------------------------------------------

def test_writes_land_in_the_rw_layer(box: Box) -> None:
    box.output("sh", "-c", "echo hello > /newfile && mkdir -p /srv/x && echo y > /srv/x/f")
    upper = box.store.layers.layer_dir(box.rw.mount_id) / "diff"
    assert (upper / "newfile").read_text() == "hello\n"
    assert (upper / "srv" / "x" / "f").read_text() == "y\n"
    image_diff = box.store.layers.layer_dir(box.store.layers.get(box.image.top_chain_id).cache_id) / "diff"
    assert not (image_diff / "newfile").exists()
    assert not (image_diff / "srv").exists()


def test_root_cannot_reach_the_host_tree(box: Box) -> None:
    marker = box.store.root / "marker"
    marker.write_text("host")
    _, out = box.run("sh", "-c", f"cat {marker}; cat /proc/1/root/../../../../{marker}")
    assert "host" not in out
    assert sorted(box.output("ls", "/").split()) == sorted(os.listdir(box.path))


def test_masked_paths_are_empty(box: Box) -> None:
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts")
             if os.path.exists(p)]
    assert files, "no maskable file on this host"
    out = box.output("sh", "-c", " ; ".join(f"echo {p} $(wc -c < {p})" for p in files) + "; ls -A /sys/firmware")
    lines = out.splitlines()
    for p, line in zip(files, lines, strict=False):
        assert line == f"{p} 0", out
    assert len(lines) == len(files), out  # /sys/firmware lists nothing


def test_proc_sys_is_read_only(box: Box) -> None:
    status, out = box.run("sh", "-c", "echo 1 > /proc/sys/kernel/ns_last_pid")
    assert status.code != 0
    assert "Read-only file system" in out
    mounts = box.output("cat", "/proc/mounts")
    [line] = [m for m in mounts.splitlines() if m.split()[1] == "/proc/sys"]
    assert line.split()[3].startswith("ro,")


def test_devices_and_links(box: Box) -> None:
    out = box.output("sh", "-c", "ls -l /dev; echo x > /dev/null && head -c 4 /dev/zero | wc -c")
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        assert any(line.startswith("crw-rw-rw-") and line.endswith(f" {name}") for line in out.splitlines()), out
    for link in ("fd -> /proc/self/fd", "stdin -> /proc/self/fd/0", "ptmx -> pts/ptmx"):
        assert link in out
    assert out.splitlines()[-1] == "4"


def test_bind_mount_read_only(box: Box, workdir: Path) -> None:
    host = workdir / "hostdir"
    host.mkdir()
    (host / "hello").write_text("from the host\n")
    mount = parse_volume(f"{host}:/data:ro")
    status, out = box.run("sh", "-c", "cat /data/hello; touch /data/new", mounts=(mount,))
    assert out.startswith("from the host\n")
    assert "Read-only file system" in out
    assert status.code == 1
    assert not (host / "new").exists()


def test_bind_mount_writable_and_tmpfs(box: Box, workdir: Path) -> None:
    host = workdir / "rw"
    host.mkdir()
    mounts = (Mount.bind(host, "/out"), Mount.tmpfs("/scratch"))
    box.output("sh", "-c", "echo ok > /out/f; echo t > /scratch/t; grep -q ' /scratch tmpfs ' /proc/mounts",
               mounts=mounts)
    assert (host / "f").read_text() == "ok\n"


def test_symlinked_mount_target_stays_inside_the_rootfs(box: Box, workdir: Path) -> None:
    outside = workdir / "outside"
    outside.mkdir()
    (box.path / "escape").symlink_to(str(outside))  # absolute: must mean <rootfs>/<outside>
    (box.path / "up").symlink_to("../../../../../../../../" + str(outside).lstrip("/"))
    src = workdir / "src"
    src.mkdir()
    (src / "payload").write_text("p")
    mounts = (Mount.bind(src, "/escape/a"), Mount.bind(src, "/up/b"))
    out = box.output("sh", "-c", f"ls {outside}", mounts=mounts)
    assert sorted(out.split()) == ["a", "b"]
    assert list(outside.iterdir()) == []  # nothing was created or mounted on the host


def test_secure_join(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")
    (root / "rel").symlink_to("../../../etc")
    (root / "loop").symlink_to("loop")
    r = str(root)
    assert rootfs.secure_join(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert rootfs.secure_join(r, "rel/x") == f"{r}/etc/x"
    assert rootfs.secure_join(r, "/../../..") == r
    assert rootfs.secure_join(r, "/missing/../etc") == f"{r}/etc"
    with pytest.raises(rootfs.RootfsError, match="symbolic links"):
        rootfs.secure_join(r, "/loop")


# ---- credentials ----------------------------------------------------------------

def test_root_capabilities_are_dockers(box: Box) -> None:
    status = _status_fields(box.output("cat", "/proc/self/status"))
    assert status["CapEff"] == DOCKER_CAPS
    assert status["CapPrm"] == DOCKER_CAPS
    assert status["CapBnd"] == DOCKER_CAPS
    assert status["CapAmb"] == "0000000000000000"
    assert status["CapInh"] == "0000000000000000"
    assert status["NoNewPrivs"] == "0"  # Docker's default
    assert status["Seccomp"] == "2"
    default_caps = next(f.default for f in records.fields(ContainerSpec) if f.name == "capabilities")
    assert syscalls.caps_mask(default_caps) == int(DOCKER_CAPS, 16)


def test_nobody_has_no_effective_capabilities(box: Box) -> None:
    out = box.output("sh", "-c", "id; cat /proc/self/status; echo HOME=$HOME", user="nobody")
    assert out.startswith("uid=65534(nobody) gid=65534(nogroup)")
    status = _status_fields(out)
    assert status["CapEff"] == "0000000000000000"
    assert status["CapPrm"] == "0000000000000000"
    assert status["CapBnd"] == DOCKER_CAPS
    assert status["NoNewPrivs"] == "0"
    assert status["Seccomp"] == "2"
    assert "HOME=/nonexistent" in out


def test_numeric_user_and_group(box: Box) -> None:
    out = box.output("sh", "-c", "id -u; id -g; echo $HOME", user="1234:5678")
    assert out.split() == ["1234", "5678", "/"]
    assert box.output("sh", "-c", "echo $HOME").strip() == "/root"


def test_unknown_user_is_an_error(box: Box) -> None:
    with pytest.raises(ContainerError, match="unable to find user nosuch: no matching entries in passwd file"):
        box.start("true", user="nosuch")
    with pytest.raises(ContainerError, match="unable to find group nogrp: no matching entries in group file"):
        box.start("true", user="root:nogrp")


def test_only_stdio_is_open(box: Box) -> None:
    out = box.output("ls", "-l", "/proc/self/fd")
    fds = {line.split()[8]: line for line in out.splitlines() if line.startswith(("lr", "l-"))}
    assert set(fds) - {"0", "1", "2"} <= {"3"}, out  # 3 would be ls's own listing of the directory
    assert {"0", "1", "2"} <= set(fds)
    assert box.output("sh", "-c", "ls /proc/$$/fd; true").split() == ["0", "1", "2"]


def test_proc_1_exe_is_the_containers_binary(box: Box) -> None:
    assert box.output("readlink", "/proc/1/exe").strip() == "/bin/busybox"


# ---- exec errors and exit status ----------------------------------------------------

def test_missing_program_is_127(box: Box) -> None:
    with pytest.raises(ExecError) as info:
        box.start("nosuch")
    assert str(info.value) == 'exec: "nosuch": executable file not found in $PATH'
    assert info.value.exit_code == 127
    with pytest.raises(ExecError) as info:
        box.start("/no/such")
    assert info.value.exit_code == 127


def test_not_executable_is_126(box: Box) -> None:
    with pytest.raises(ExecError) as info:
        box.start("/etc/passwd")
    assert info.value.exit_code == 126
    assert "permission denied" in str(info.value)
    with pytest.raises(ExecError) as info:
        box.start("/bin")
    assert info.value.exit_code == 126


def test_bad_rootfs_is_a_start_error(box: Box, workdir: Path) -> None:
    spec = box.spec("true")
    bad = ContainerSpec(workdir / "nope", spec.process, HOSTNAME)
    with pytest.raises(ContainerStartError, match="is not a directory") as info:
        spawn(bad, timeout=10)
    assert info.value.exit_code == 125


def test_exit_code_propagates(box: Box) -> None:
    status, _ = box.run("sh", "-c", "exit 7")
    assert status == ExitStatus(7, None)


def test_killed_container_reports_128_plus_signal(box: Box) -> None:
    proc = box.start("sleep", "30")
    with pytest.raises(TimeoutError):
        proc.wait(timeout=0.2)
    proc.kill(signal.SIGKILL)
    assert proc.wait(timeout=10) == ExitStatus(137, signal.SIGKILL)
    proc.kill(signal.SIGKILL)  # harmless once gone


def test_signal_inside_a_child_of_pid1(box: Box) -> None:
    status, _ = box.run("sh", "-c", "sh -c 'kill -9 $$'; exit $?")
    assert status == ExitStatus(137)


def test_stdin_default_and_given(box: Box) -> None:
    assert box.output("cat") == ""  # /dev/null without -i
    r, w = os.pipe()
    os.write(w, b"through stdin\n")
    os.close(w)
    try:
        out = box.output("cat", stdin=r)
    finally:
        os.close(r)
    assert out == "through stdin\n"


def test_workdir_is_created_and_home_set(box: Box) -> None:
    out = box.output("sh", "-c", "pwd; echo $HOME", cwd="/work/dir")
    assert out.split() == ["/work/dir", "/root"]
    assert (box.store.layers.layer_dir(box.rw.mount_id) / "diff" / "work" / "dir").is_dir()


# ---- terminal and init ------------------------------------------------------------

def test_tty(box: Box) -> None:
    proc = box.start("sh", "-c", "tty; echo $$; echo ctty-ok > /dev/tty", tty=True)
    assert proc.pty_master is not None
    out = _read_all(proc.pty_master, time.monotonic() + 15).decode()
    assert proc.wait(timeout=10) == ExitStatus(0)
    assert out.replace("\r\n", "\n").split("\n")[:3] == ["/dev/pts/0", "1", "ctty-ok"]


def test_init_runs_as_pid_1_and_reaps_orphans(box: Box) -> None:
    assert TINI.exists(), "apt-get install tini"
    out = box.output("sh", "-c", "echo $$ $PPID; readlink /proc/1/exe", init=TINI)
    assert out.split() == ["2", "1", rootfs.INIT_PATH]
    assert ExitStatus(7) == box.run("sh", "-c", "exit 7", init=TINI)[0]

    # An orphan ("(sleep 0 &)" exits its subshell at once) is reparented to PID 1 and
    # must be reaped there. Without an init, PID 1 is "sleep", which reaps nothing.
    script = "(sleep 0 &); exec sleep 5"
    for init, zombies_expected in ((TINI, False), (None, True)):
        proc = box.start("sh", "-c", script, init=init)
        deadline = time.monotonic() + 5
        states: dict[int, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            time.sleep(0.05)
            states = _descendants(proc.pid)
            zombies = [cmd for state, cmd in states.values() if state == "Z"]
            if zombies_expected and zombies:
                break
            others = [cmd for pid, (_, cmd) in states.items() if pid != proc.pid]
            if not zombies_expected and others == ["sleep 5"]:
                break  # sh has exec'd sleep, so the orphan existed, and only tini and sleep are left
        proc.kill(signal.SIGKILL)
        proc.wait(timeout=10)
        zombies = [cmd for state, cmd in states.values() if state == "Z"]
        assert bool(zombies) == zombies_expected, (init, states)
        if not zombies_expected:
            assert len(states) == 2, states


def test_symlinked_proc_is_refused(box: Box) -> None:
    os.rmdir(box.path / "proc")
    (box.path / "proc").symlink_to("/etc")
    with pytest.raises(ContainerStartError, match="/proc in the container is .*symlink"):
        box.start("true")


def test_failing_cgroup_leaves_nothing_behind(box: Box) -> None:
    class Broken:
        def add(self, pid: int) -> None:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        box.start("sleep", "30", cgroup=Broken())
    # the fixture's teardown asserts no process is left


def test_setup_error_wins_over_a_cgroup_that_lost_its_process(box: Box, tmp_path: Path) -> None:
    """The init sets up its rootfs while the caller joins it to its cgroup: when the setup fails
    first, the caller's write to cgroup.procs finds no process, and the setup's error is reported."""

    class Slow:
        def add(self, pid: int) -> None:
            time.sleep(0.5)  # the init fails its mount meanwhile and exits
            raise ContainerError(f"cannot add process {pid} to cgroup: No such process")

    missing = tmp_path / "not-there"
    with pytest.raises(ContainerError) as info:
        box.start("true", cgroup=Slow(), mounts=(Mount.bind(str(missing), "/data"),))
    assert "cgroup" not in str(info.value)
    assert "not-there" in str(info.value) or "No such file" in str(info.value)


def test_container_dies_with_its_launcher(box: Box) -> None:
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from pybuild.runtime.process import spawn\n"
        "from pybuild.runtime.spec import ContainerSpec, ProcessSpec\n"
        "p = spawn(ContainerSpec(Path(sys.argv[1]), ProcessSpec(('sleep', '60')), 'h'), stdout=2)\n"
        "print(p.pid, p.shim_pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script, str(box.path)], stdout=subprocess.PIPE)
    try:
        assert launcher.stdout is not None
        pid, shim = (int(x) for x in launcher.stdout.readline().split())
        assert _alive(pid)
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 5
    while (_alive(pid) or _alive(shim)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and not _alive(shim)


def test_init_missing_on_host(box: Box, workdir: Path) -> None:
    with pytest.raises(ContainerStartError, match="not found"):
        box.start("true", init=workdir / "no-init")


# ---- joining a running container ------------------------------------------------

def test_enter_joins_namespaces(box: Box) -> None:
    proc = box.start("sleep", "30")
    r, w = os.pipe()
    try:
        joined = enter(proc.pid, ProcessSpec(("sh", "-c", "echo $$; hostname; ps -o pid,args; "
                                              "grep CapEff /proc/self/status; ls /proc/self/fd; id -u"),
                                             user="nobody"),
                       stdout=w, stderr=w, timeout=20)
    finally:
        os.close(w)
    try:
        out = _read_all(r, time.monotonic() + 15).decode()
    finally:
        os.close(r)
    assert joined.wait(timeout=10) == ExitStatus(0), out
    lines = out.splitlines()
    assert lines[0] != "1" and int(lines[0]) < 100
    assert lines[1] == HOSTNAME
    assert any(line.split(None, 1) == ["1", "sleep 30"] for line in lines)
    assert "CapEff:\t0000000000000000" in lines
    assert lines[-1] == "65534"
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(ContainerStartError):
        enter(proc.pid, ProcessSpec(("true",)), timeout=5)


def test_enter_exec_error(box: Box) -> None:
    proc = box.start("sleep", "30")
    with pytest.raises(ExecError) as info:
        enter(proc.pid, ProcessSpec(("nosuch",)), timeout=20)
    assert info.value.exit_code == 127
    proc.kill()
    proc.wait(timeout=10)


# ---- bookkeeping ----------------------------------------------------------------

def test_no_descriptor_leaks_in_the_caller(box: Box) -> None:
    before = set(os.listdir("/proc/self/fd"))
    box.run("true")
    with pytest.raises(ExecError):
        box.start("nosuch")
    proc = box.start("true", tty=True)
    proc.wait(timeout=10)
    proc.close()
    after = set(os.listdir("/proc/self/fd"))
    assert after == before


def test_users_resolution() -> None:
    passwd = "root:x:0:0:root:/root:/bin/sh\n# c\napp:x:1000:1001::/home/app:/bin/sh\nbad:x:zz:0::/:/bin/sh\n"
    group = "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nwheel:x:10:app\n"
    r = users.resolve
    assert r("", passwd, group) == users.ExecUser(0, 0, (), "/root", "root")
    assert r("app", passwd, group) == users.ExecUser(1000, 1001, (2000, 10), "/home/app", "app")
    assert r("1000", passwd, group).name == "app"
    assert r("app:extra", passwd, group) == users.ExecUser(1000, 2000, (), "/home/app", "app")
    assert r("app:10", passwd, group).gid == 10
    assert r("4242", passwd, group) == users.ExecUser(4242, 0, (), "/", "")
    assert r("4242:77", None, None) == users.ExecUser(4242, 77, (), "/", "")
    with pytest.raises(users.UserNotFound, match="unable to find user bad"):
        r("bad", passwd, group)  # a malformed line is skipped, never read as uid 0
    with pytest.raises(users.UserNotFound, match="unable to find user nobody"):
        r("nobody", None, None)
    with pytest.raises(ContainerError, match="range"):
        r("-1", passwd, group)
    assert users.home_env(("A=1",), "/h") == ("A=1", "HOME=/h")
    assert users.home_env(("HOME=/x",), "/h") == ("HOME=/x",)
