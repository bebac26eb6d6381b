"""cgroups v1 and v2 against the real kernel: limits, OOM, pids, CPU quota, freezer, kill, cleanup.

Every cgroup lives below a unique ``pybuild-test-<random>`` parent and is removed
whatever happens in the test; the teardown asserts that nothing is left and the
last test that no ``pybuild-test-*`` cgroup remains in any hierarchy.
The v2 tests run against the host's cgroup2 mount (``/sys/fs/cgroup`` on a pure
v2 host, ``/sys/fs/cgroup/unified`` on a hybrid one).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pybuild.errors import ContainerError, UsageError
from pybuild.runtime import cgroups
from pybuild.runtime.cgroups import Cgroup, CgroupV1, CgroupV2, Limits, parse_memory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")

MiB = 1 << 20
BLOCKED = "import sys; sys.stdin.buffer.read(1)\n"  # the child waits here until it is in the cgroup
COUNTER = BLOCKED + (
    "import os, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "i = 0\n"
    "while True:\n"
    "    i += 1\n"
    "    os.pwrite(fd, b'%020d' % i, 0)\n"
    "    time.sleep(0.001)\n"
)


def _force_cleanup(prefix: str) -> None:
    """Last resort: kill and thaw whatever is below ``prefix`` and rmdir it bottom-up."""
    dirs = sorted(cgroups.all_pybuild_cgroups(prefix), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            if (d / name).exists():
                (d / name).write_text(value)
        for pid in (d / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 5
    for d in dirs:
        while d.exists() and time.monotonic() < deadline:
            try:
                d.rmdir()
            except OSError:
                time.sleep(0.05)


class Env:
    """Makes cgroups under this test's parent and children to put in them; cleans both up."""

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.groups: list[Cgroup] = []
        self.children: list[subprocess.Popen[bytes]] = []

    def create(self, limits: Limits | None = None, version: str | None = None, *, child: str = "c",
               root: Path | None = None) -> Cgroup:
        group = cgroups.create(f"{self.parent}/{child}", limits or Limits(), version, root=root)
        self.groups.append(group)
        return group

    def spawn(self, code: str, *args: str, shell: bool = False) -> subprocess.Popen[bytes]:
        argv = ["sh", "-c", code] if shell else [sys.executable, "-c", code, *args]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.children.append(proc)
        return proc

    def start_in(self, group: Cgroup, code: str, *args: str, shell: bool = False) -> subprocess.Popen[bytes]:
        """Start a child blocked on stdin, move it into ``group``, then let it run."""
        proc = self.spawn(code, *args, shell=shell)
        group.add(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        return proc

    def close(self) -> None:
        errors: list[BaseException] = []
        for group in self.groups:
            try:
                group.remove()
            except Exception as e:  # keep cleaning up; reported below
                errors.append(e)
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        leaked = cgroups.all_pybuild_cgroups(self.parent)
        _force_cleanup(self.parent)
        assert not errors, f"remove() failed: {errors}"
        assert not leaked, f"cgroups left behind: {leaked}"


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env(f"pybuild-test-{secrets.token_hex(4)}")
    try:
        yield e
    finally:
        e.close()


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _counter(path: Path) -> int:
    text = path.read_bytes()
    return int(text) if text else 0


def _v2_root() -> Path:
    root = cgroups.v2_mount()
    assert root is not None, "this host has no cgroup2 mount"
    return Path(root)


# ---------------------------------------------------------------- parsing and validation


@pytest.mark.parametrize(("text", "expected"), [
    ("32m", 32 * MiB),
    ("32M", 32 * MiB),
    ("32mb", 32 * MiB),
    ("32MiB", 32 * MiB),
    ("32 m", 32 * MiB),
    ("1g", 1 << 30),
    ("1.5g", 3 << 29),
    ("8192k", 8 * MiB),
    ("6m", 6 * MiB),
    ("7000000", 7000000),
    ("7000000b", 7000000),
    ("1t", 1 << 40),
])
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("abc", 'invalid memory value "abc"'),
    ("", 'invalid memory value ""'),
    ("-1", 'invalid memory value "-1"'),
    ("32x", 'invalid memory value "32x"'),
    ("m", 'invalid memory value "m"'),
    ("1.2.3m", 'invalid memory value "1.2.3m"'),
    ("512k", "minimum memory limit allowed is 6MB"),
    ("100b", "minimum memory limit allowed is 6MB"),
    ("0", "minimum memory limit allowed is 6MB"),
])
def test_parse_memory_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_memory(text)
    assert info.value.message == message


def test_parse_memory_swap() -> None:
    assert cgroups.parse_memory_swap("-1") == -1
    assert cgroups.parse_memory_swap("64m") == 64 * MiB


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (512, 20), (1024, 39), (262144, 10000), (1, 1)])
def test_cpu_shares_to_weight(shares: int, weight: int) -> None:
    assert cgroups.cpu_shares_to_weight(shares) == weight


@pytest.mark.parametrize("limits", [
    Limits(memory=1 * MiB),
    Limits(memory_swap=64 * MiB),
    Limits(memory=64 * MiB, memory_swap=32 * MiB),
    Limits(cpus=0.0),
    Limits(cpus=0.001),
    Limits(cpus=float(os.cpu_count() or 1) + 1),
    Limits(cpus=float("nan")),
    Limits(cpu_shares=-5),
])
def test_validate_rejects(limits: Limits) -> None:
    with pytest.raises(UsageError):
        cgroups.validate(limits)


def test_validate_clamps_shares_and_keeps_the_rest() -> None:
    assert cgroups.validate(Limits(cpu_shares=1)).cpu_shares == 2
    assert cgroups.validate(Limits(cpu_shares=10**7)).cpu_shares == 262144
    assert cgroups.validate(Limits(cpu_shares=0)).cpu_shares is None
    full = Limits(memory=32 * MiB, memory_swap=-1, cpus=0.5, cpu_shares=512, pids=0)
    assert cgroups.validate(full) == full


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "a/./b", ".."])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        cgroups.CgroupV1(name, {})


def test_version_matches_mountinfo() -> None:
    top = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()
           if line.split()[4] == "/sys/fs/cgroup"]
    is_v2 = bool(top) and top[-1][top[-1].index("-") + 1] == "cgroup2"
    assert cgroups.version() == ("v2" if is_v2 else "v1")


# ---------------------------------------------------------------- the host's version


def test_create_writes_limits(env: Env) -> None:
    group = env.create(Limits(memory=parse_memory("32m"), cpus=0.5, cpu_shares=512, pids=20))
    if isinstance(group, CgroupV1):
        mem, cpu, pids = group.dir("memory"), group.dir("cpu"), group.dir("pids")
        assert mem and cpu and pids
        assert (mem / "memory.limit_in_bytes").read_text().strip() == "33554432"
        if (mem / "memory.memsw.limit_in_bytes").exists():  # no swap: memsw == memory
            assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == "33554432"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (cpu / "cpu.shares").read_text().strip() == "512"
        assert (pids / "pids.max").read_text().strip() == "20"
        cpuset = group.dir("cpuset")
        if cpuset:
            assert (cpuset / "cpuset.cpus").read_text().strip()
            assert (cpuset / "cpuset.mems").read_text().strip()
    else:
        assert isinstance(group, CgroupV2)
        assert (group.path / "memory.max").read_text().strip() == "33554432"
        assert (group.path / "cpu.max").read_text().strip() == "50000 100000"
        assert (group.path / "cpu.weight").read_text().strip() == "20"
        assert (group.path / "pids.max").read_text().strip() == "20"
    stats = group.stats()
    assert (stats.memory_limit, stats.pids_limit, stats.pids) == (33554432, 20, 0)
    assert cgroups.open_existing(group.name).paths() == group.paths()


def test_unlimited_pids_and_swap(env: Env) -> None:
    group = env.create(Limits(memory=64 * MiB, memory_swap=-1, pids=-1))
    stats = group.stats()
    assert (stats.memory_limit, stats.pids_limit) == (64 * MiB, None)


def test_memory_limit_oom_kills(env: Env) -> None:
    group = env.create(Limits(memory=parse_memory("32m")))
    assert not group.oom_killed()
    proc = env.start_in(group, BLOCKED + "b = b'x' * (100 << 20)\nprint('survived')")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert b"survived" not in out
    assert group.oom_killed()


def test_pids_limit_stops_fork_loop(env: Env) -> None:
    group = env.create(Limits(pids=20))
    script = "read x; i=0; while [ $i -lt 50 ]; do sleep 5 & i=$((i+1)); done; echo spawned; wait"
    proc = env.start_in(group, script, shell=True)
    peak = 0
    deadline = time.monotonic() + 3
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, group.stats().pids)
        time.sleep(0.01)
    peak = max(peak, group.stats().pids, len(group.procs()))
    assert 0 < peak <= 20
    assert len(group.procs()) <= 20
    group.kill_all()
    _, err = proc.communicate(timeout=10)
    assert b"fork" in err.lower() or b"Resource temporarily unavailable" in err


@pytest.mark.slow
def test_cpus_quota_limits_busy_loop(env: Env) -> None:
    group = env.create(Limits(cpus=0.5))
    env.start_in(group, BLOCKED + "while True: pass")
    time.sleep(0.2)
    t0, u0 = time.monotonic(), group.stats().cpu_usage_ns
    time.sleep(2)
    t1, u1 = time.monotonic(), group.stats().cpu_usage_ns
    share = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.3 < share <= 0.6, share


def test_stats_of_live_process(env: Env) -> None:
    group = env.create()
    proc = env.start_in(group, BLOCKED + "b = b'x' * (20 << 20)\nprint('ready', flush=True)\nsys.stdin.read()")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    stats = group.stats()
    assert stats.pids == 1
    assert stats.memory_usage > 10 * MiB
    assert stats.cpu_usage_ns > 0
    assert group.procs() == [proc.pid]


def test_freeze_thaw_kill_remove(env: Env, tmp_path: Path) -> None:
    group = env.create()
    counter = tmp_path / "counter"
    proc = env.start_in(group, COUNTER, str(counter))
    _wait_for(lambda: counter.exists() and _counter(counter) > 10)
    group.freeze()
    assert group.frozen()
    stopped = _counter(counter)
    time.sleep(0.3)
    assert _counter(counter) == stopped
    group.thaw()
    assert not group.frozen()
    _wait_for(lambda: _counter(counter) > stopped + 10)
    group.freeze()  # kill_all must thaw a frozen cgroup so SIGKILL lands
    group.kill_all()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert not group.frozen()
    group.remove()
    group.remove()  # idempotent
    assert group.paths() == []
    assert cgroups.all_pybuild_cgroups(env.parent) == []
    with pytest.raises(cgroups.CgroupNotFound):
        cgroups.open_existing(group.name)


def test_remove_kills_what_is_left(env: Env) -> None:
    group = env.create()
    proc = env.start_in(group, BLOCKED + "import time; time.sleep(60)")
    group.remove()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert cgroups.all_pybuild_cgroups(env.parent) == []


def test_remove_keeps_a_parent_in_use(env: Env) -> None:
    one = env.create(child="one")
    two = env.create(child="two")
    one.remove()
    assert two.paths() and all(p.parent.is_dir() for p in two.paths())
    two.remove()
    assert cgroups.all_pybuild_cgroups(env.parent) == []


@pytest.mark.parametrize("ver", [None, "v2"])
def test_siblings_created_and_removed_concurrently(env: Env, ver: str | None) -> None:
    """remove() rmdirs the shared parent when empty; a sibling's create() racing with it must still work."""
    errors: list[BaseException] = []
    root = _v2_root() if ver == "v2" else None

    def churn(child: str) -> None:
        try:
            for _ in range(30):
                cgroups.create(f"{env.parent}/{child}", Limits(), ver, root=root).remove()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(c,)) for c in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert cgroups.all_pybuild_cgroups(env.parent) == []


def test_create_twice_is_a_conflict(env: Env) -> None:
    env.create()
    with pytest.raises(ContainerError, match="already exists"):
        cgroups.create(f"{env.parent}/c", Limits())


def test_failure_removes_what_was_created(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    real = cgroups._write

    def refuse_pids(path: Path, value: str, hint: str | None = None) -> None:
        if path.name == "pids.max":
            raise ContainerError(f"cannot write {value!r} to {path}: Invalid argument")
        real(path, value, hint)

    monkeypatch.setattr(cgroups, "_write", refuse_pids)
    with pytest.raises(ContainerError, match="pids.max"):
        env.create(Limits(memory=32 * MiB, pids=20))
    assert cgroups.all_pybuild_cgroups(env.parent) == []


@pytest.mark.skipif(not cgroups.v1_mounts().get("cpu"), reason="v2 allows a child quota above its parent's")
def test_v1_kernel_refusal_is_reported_and_rolled_back(env: Env) -> None:
    env.create(Limits(cpus=0.5), child="outer")
    with pytest.raises(ContainerError, match="cpu.cfs_quota_us") as info:
        env.create(Limits(cpus=1.0), child="outer/inner")
    assert "Invalid argument" in str(info.value)
    inner = [p for p in cgroups.all_pybuild_cgroups(env.parent) if p.name == "inner"]
    assert inner == []


# ---------------------------------------------------------------- v2 on this host's cgroup2 mount


def test_v2_lifecycle(env: Env, tmp_path: Path) -> None:
    root = _v2_root()
    group = env.create(version="v2", root=root)
    assert isinstance(group, CgroupV2)
    assert group.paths() == [root / env.parent / "c"]
    counter = tmp_path / "counter"
    proc = env.start_in(group, COUNTER, str(counter))
    assert group.procs() == [proc.pid]
    _wait_for(lambda: counter.exists() and _counter(counter) > 10)
    stats = group.stats()
    assert stats.cpu_usage_ns > 0
    assert stats.pids == 1
    assert stats.memory_usage > 0
    assert not group.oom_killed()
    group.freeze()
    assert group.frozen()
    stopped = _counter(counter)
    time.sleep(0.3)
    assert _counter(counter) == stopped
    group.thaw()
    assert not group.frozen()
    _wait_for(lambda: _counter(counter) > stopped + 10)
    assert (group.path / "cgroup.kill").exists()
    group.kill_all()  # through cgroup.kill
    assert proc.wait(timeout=5) == -signal.SIGKILL
    _wait_for(lambda: group.procs() == [])
    group.remove()
    assert not (root / env.parent).exists()


def test_v2_signal_other_than_kill(env: Env) -> None:
    group = CgroupV2(f"{env.parent}/c", root=_v2_root())
    group._create(Limits())
    env.groups.append(group)
    proc = env.start_in(group, BLOCKED + "import time; time.sleep(60)")
    group.kill_all(signal.SIGTERM)  # freeze, signal each, thaw
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert not group.frozen()


def test_v2_open_existing_and_remove_with_child(env: Env) -> None:
    root = _v2_root()
    group = env.create(version="v2", root=root)
    (group.paths()[0] / "sub").mkdir()  # e.g. made by the container itself
    assert cgroups.open_existing(group.name, "v2", root=root).paths() == group.paths()
    group.remove()
    assert not (root / env.parent).exists()


def test_v2_limit_needs_controller(env: Env) -> None:
    root = _v2_root()
    available = (root / "cgroup.controllers").read_text().split()
    limits = Limits(memory=32 * MiB)
    if "memory" in available:  # a pure v2 host: the limit must work instead
        group = env.create(limits, "v2", root=root)
        assert isinstance(group, CgroupV2)
        assert (group.path / "memory.max").read_text().strip() == "33554432"
        return
    with pytest.raises(ContainerError) as info:
        env.create(limits, "v2", root=root)
    assert "the memory controller is not available in this cgroup v2 hierarchy" in str(info.value)
    assert not (root / env.parent).exists()


# ---------------------------------------------------------------- leaks


def test_zz_no_test_cgroups_left() -> None:
    assert cgroups.all_pybuild_cgroups("pybuild-test-") == []


def test_prime_attach_moves_nothing() -> None:
    """The no-op write to our own cgroup.procs leaves the process where it was (checked in a child,
    so that pytest's own process is untouched); its effect on latency is measured by bench/bench_start.py."""
    script = (
        "import os, time\n"
        "from pybuild.runtime import cgroups\n"
        "before = open('/proc/self/cgroup').read()\n"
        "target = cgroups._own_procs_file()\n"
        "assert target is not None and target.exists(), target\n"
        "cgroups.prime_attach()\n"
        "time.sleep(0.2)\n"
        "assert open('/proc/self/cgroup').read() == before\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
