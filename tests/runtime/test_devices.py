"""Device rules and nodes: --device parsing, evaluation, and the allowlist on the real kernel.

For both cgroup v1 (the ``devices`` controller) and cgroup v2 (an eBPF
program attached to a cgroup in the host's cgroup2 mount: ``/sys/fs/cgroup``
on a pure v2 host, ``/sys/fs/cgroup/unified`` on a hybrid one), a child
process joins a cgroup made with the rules, then mknods device nodes in a
scratch directory and opens them. Every cgroup lives below a unique
``pybuild-test-<random>`` parent and is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import ContainerError, UsageError
from pybuild.linux import bpf
from pybuild.runtime import cgroups, devices
from pybuild.runtime.cgroups import Cgroup, CgroupV1, CgroupV2, Limits
from pybuild.runtime.devices import (
    ALLOW_ALL,
    DEFAULT_RULES,
    Device,
    DeviceError,
    DeviceRule,
    host_devices,
    parse_device,
    permits,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _block_major_present(major: int) -> bool:
    """Whether /proc/devices lists ``major`` among the block devices (a driver to open such a node)."""
    block = Path("/proc/devices").read_text().split("Block devices:", 1)
    return len(block) == 2 and any(line.split()[:1] == [str(major)] for line in block[1].splitlines())


# ---------------------------------------------------------------- rules


def test_rule_normalises_access_and_prints_v1_text() -> None:
    assert DeviceRule(True, "c", 1, 3, "mwr").access == "rwm"
    assert DeviceRule(True, "c", 1, 3, "wr").access == "rw"
    assert DeviceRule(True, "c", 1, 3, "mr").access == "rm"
    assert DeviceRule(True, "c", 1, 3).v1_text() == "c 1:3 rwm"
    assert DeviceRule(True, "a").v1_text() == "a *:* rwm"
    assert DeviceRule(True, "c", 136).v1_text() == "c 136:* rwm"
    assert DeviceRule(False, "b", None, 4, "m").v1_text() == "b *:4 m"
    assert DeviceRule(True, "c", 1, 3, "wr") == DeviceRule(True, "c", 1, 3, "rw")


@pytest.mark.parametrize("kwargs", [
    {"type": "p"}, {"type": "u"}, {"access": ""}, {"access": "rwx"}, {"major": -1}, {"minor": 1 << 32},
    {"major": True},
])
def test_rule_rejects_bad_values(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    fields.update(kwargs)
    with pytest.raises(DeviceError):
        DeviceRule(**fields)  # type: ignore[arg-type]


def test_default_rules_are_dockers_then_runcs() -> None:
    listed = [("allow" if r.allow else "deny", r.v1_text()) for r in DEFAULT_RULES]
    assert listed == [
        # moby's DefaultLinuxSpec
        ("deny", "a *:* rwm"),
        ("allow", "c 1:5 rwm"), ("allow", "c 1:3 rwm"), ("allow", "c 1:9 rwm"), ("allow", "c 1:8 rwm"),
        ("allow", "c 5:0 rwm"), ("allow", "c 5:1 rwm"),
        ("deny", "c 10:229 rwm"),
        # runc's AllowedDevices
        ("allow", "c *:* m"), ("allow", "b *:* m"),
        ("allow", "c 1:3 rwm"), ("allow", "c 1:8 rwm"), ("allow", "c 1:7 rwm"), ("allow", "c 5:0 rwm"),
        ("allow", "c 1:5 rwm"), ("allow", "c 1:9 rwm"), ("allow", "c 136:* rwm"), ("allow", "c 5:2 rwm"),
        ("allow", "c 10:200 rwm"),
    ]
    assert (DeviceRule(True, "a"),) == ALLOW_ALL
    assert DeviceError("x").exit_code == 125
    assert issubclass(DeviceError, ContainerError)


@pytest.mark.parametrize(("kind", "major", "minor", "access", "allowed"), [
    ("c", 1, 3, "rw", True),      # null
    ("c", 1, 3, "rwm", True),
    ("c", 1, 7, "rw", True),      # full
    ("c", 5, 1, "rw", True),      # console (Docker's list)
    ("c", 136, 4, "rw", True),    # a pty
    ("c", 5, 2, "rw", True),      # ptmx
    ("c", 10, 200, "rw", True),   # tun
    ("c", 1, 11, "r", False),     # kmsg
    ("c", 1, 11, "m", True),      # mknod of any char device
    ("b", 7, 0, "m", True),       # ... and block device
    ("b", 7, 0, "r", False),
    ("b", 7, 0, "rm", False),     # mknod alone is allowed, read is not: no single rule has both
    ("c", 10, 229, "rw", False),  # fuse, denied by Docker
    ("c", 10, 229, "m", True),    # ... whose mknod runc's later rule allows
    ("c", 10, 232, "rw", False),  # kvm
])
def test_permits_default_rules(kind: str, major: int, minor: int, access: str, allowed: bool) -> None:
    assert permits(DEFAULT_RULES, kind, major, minor, access) is allowed


def test_permits_last_match_wins() -> None:
    allow, deny = DeviceRule(True, "c", 1, 3), DeviceRule(False, "c", 1, 3)
    assert permits([allow, deny], "c", 1, 3, "r") is False
    assert permits([deny, allow], "c", 1, 3, "r") is True
    assert permits([], "c", 1, 3, "r") is False                               # nothing matches: deny
    assert permits([DeviceRule(True, "b", 1, 3)], "c", 1, 3, "r") is False    # the type must match
    assert permits([DeviceRule(True, "a")], "b", 8, 0, "rwm") is True          # "a" matches both
    assert permits([DeviceRule(True, "a", 8)], "c", 9, 0, "r") is False
    assert permits(ALLOW_ALL + (DeviceRule(False, "c", 1, 11),), "c", 1, 11, "r") is False
    assert permits(iter([allow]), "c", 1, 3, "wr") is True                      # any iterable, any order


def test_permits_access_subsets_and_partial_denies() -> None:
    read_only = [DeviceRule(True, "c", 1, 11, "r")]
    assert permits(read_only, "c", 1, 11, "r") is True
    assert permits(read_only, "c", 1, 11, "rw") is False  # an allow needs all of the request
    no_write = [DeviceRule(True, "c", 1, 3), DeviceRule(False, "c", 1, 3, "w")]
    assert permits(no_write, "c", 1, 3, "r") is True
    assert permits(no_write, "c", 1, 3, "m") is True
    assert permits(no_write, "c", 1, 3, "w") is False
    assert permits(no_write, "c", 1, 3, "rw") is False    # a deny refuses any of its access (O_RDWR)


def test_permits_rejects_bad_requests() -> None:
    with pytest.raises(DeviceError):
        permits(DEFAULT_RULES, "a", 1, 3, "r")
    with pytest.raises(DeviceError):
        permits(DEFAULT_RULES, "c", 1, 3, "")
    with pytest.raises(DeviceError):
        permits(DEFAULT_RULES, "c", 1, 3, "x")


# ---------------------------------------------------------------- --device


def test_parse_device_host_path_only() -> None:
    [(node, rule)] = parse_device("/dev/null")
    st = os.stat("/dev/null")
    assert node == Device("/dev/null", "c", 1, 3, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    assert rule == DeviceRule(True, "c", 1, 3, "rwm")


@pytest.mark.parametrize(("text", "path", "access"), [
    ("/dev/null:/dev/mynull", "/dev/mynull", "rwm"),
    ("/dev/null:rw", "/dev/null", "rw"),           # a second field that is a mode is the permissions
    ("/dev/null:m", "/dev/null", "m"),
    ("/dev/null:/x:r", "/x", "r"),
    ("/dev/null:/x:wr", "/x", "rw"),               # normalised to r, w, m order
    ("/dev/null:/a/../b//c/", "/b/c", "rwm"),      # cleaned as Go's path.Clean
    ("/dev/null://x", "/x", "rwm"),
])
def test_parse_device_fields(text: str, path: str, access: str) -> None:
    [(node, rule)] = parse_device(text)
    assert (node.path, node.type, node.major, node.minor) == (path, "c", 1, 3)
    assert rule == DeviceRule(True, "c", 1, 3, access)


@pytest.mark.parametrize(("text", "message"), [
    ("/dev/nope", 'error gathering device information while adding custom device "/dev/nope": '
                  "no such file or directory"),
    ("/dev/nope:/dev/x:r", 'error gathering device information while adding custom device "/dev/nope": '
                           "no such file or directory"),
    ("/etc/hostname", 'error gathering device information while adding custom device "/etc/hostname": '
                      "not a device node"),
    ("/dev/null/x", 'error gathering device information while adding custom device "/dev/null/x": '
                    "not a directory"),
    ("/dev/null:/a:/b:/c", 'invalid argument "/dev/null:/a:/b:/c" for "--device" flag: bad format for path: '
                           "/dev/null:/a:/b:/c"),
    (":/x", 'invalid argument ":/x" for "--device" flag: bad format for path: :/x'),
    ("", 'invalid argument "" for "--device" flag: bad format for path: '),
    ("/dev/null:/x:rwx", 'invalid argument "/dev/null:/x:rwx" for "--device" flag: bad mode specified: rwx'),
    ("/dev/null:/x:rr", 'invalid argument "/dev/null:/x:rr" for "--device" flag: bad mode specified: rr'),
    ("/dev/null:/x:", 'invalid argument "/dev/null:/x:" for "--device" flag: bad mode specified: '),
    ("/dev/null:rwx", 'invalid argument "/dev/null:rwx" for "--device" flag: rwx is not an absolute path'),
    ("/dev/null:dev/x", 'invalid argument "/dev/null:dev/x" for "--device" flag: dev/x is not an absolute path'),
    ("dev/null", 'invalid argument "dev/null" for "--device" flag: dev/null is not an absolute path'),
])
def test_parse_device_errors(text: str, message: str) -> None:
    if text == "/etc/hostname" and not os.path.isfile(text):
        pytest.skip("no /etc/hostname")
    with pytest.raises(DeviceError) as info:
        parse_device(text)
    assert info.value.message == message
    assert info.value.exit_code == 125


def test_parse_device_follows_a_host_symlink(tmp_path: Path) -> None:
    link = tmp_path / "null-link"
    link.symlink_to("/dev/null")
    [(node, rule)] = parse_device(f"{link}:/dev/n")
    assert (node.path, node.type, node.major, node.minor) == ("/dev/n", "c", 1, 3)
    [(node, _)] = parse_device(str(link))
    assert node.path == str(link)  # the container path is the one given, not the target
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nothing")
    with pytest.raises(DeviceError, match=f'custom device "{dangling}": not a device node'):
        parse_device(str(dangling))


@root_only
def test_parse_device_directory(workdir: Path) -> None:
    """Every char/block node below a directory, mapped under CONTAINER; symlinks inside are not followed."""
    top = workdir / "snd"
    (top / "by-path" / "deeper").mkdir(parents=True)
    os.mknod(top / "controlC0", stat.S_IFCHR | 0o660, os.makedev(116, 2))
    os.mknod(top / "by-path" / "pcm", stat.S_IFCHR | 0o640, os.makedev(116, 3))
    os.mknod(top / "by-path" / "deeper" / "disk", stat.S_IFBLK | 0o600, os.makedev(8, 1))
    for node, mode in (("controlC0", 0o660), ("by-path/pcm", 0o640), ("by-path/deeper/disk", 0o600)):
        os.chmod(top / node, mode)  # whatever the umask made of mknod's mode
    os.chown(top / "controlC0", 0, 29)
    os.mkfifo(top / "fifo")
    (top / "file").write_text("x")
    (top / "to-null").symlink_to("/dev/null")        # a symlink to a node: not followed
    (top / "to-dev").symlink_to("/dev")              # a symlink to a directory: not walked
    link = workdir / "snd-link"
    link.symlink_to(top)                             # the host path itself may be a link
    found = parse_device(f"{link}:/dev/snd:rw")
    assert [n for n, _ in found] == [
        Device("/dev/snd/by-path/deeper/disk", "b", 8, 1, 0o600),
        Device("/dev/snd/by-path/pcm", "c", 116, 3, 0o640),
        Device("/dev/snd/controlC0", "c", 116, 2, 0o660, 0, 29),
    ]
    assert [r for _, r in found] == [DeviceRule(True, "b", 8, 1, "rw"), DeviceRule(True, "c", 116, 3, "rw"),
                                     DeviceRule(True, "c", 116, 2, "rw")]
    assert [n.path for n, _ in parse_device(str(top))][0] == f"{top}/by-path/deeper/disk"
    empty = workdir / "empty"
    empty.mkdir()
    with pytest.raises(DeviceError, match=f'custom device "{empty}": not a device node'):
        parse_device(str(empty))


def test_host_devices() -> None:
    found = host_devices()
    by_path = {d.path: d for d in found}
    assert len(by_path) == len(found)
    null = by_path["/dev/null"]
    st = os.stat("/dev/null")
    assert (null.type, null.major, null.minor, null.mode, null.uid, null.gid) == (
        "c", 1, 3, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    for device in found:
        assert not device.path.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/", "/dev/fd/")), device
        assert os.path.basename(device.path) != "console", device
        st = os.lstat(device.path)  # a node itself, never a symlink to one
        assert (stat.S_ISCHR(st.st_mode) and device.type == "c") or (stat.S_ISBLK(st.st_mode) and device.type == "b")
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (device.major, device.minor)
    nodes = set()
    for d, subdirs, files in os.walk("/dev"):  # os.walk follows no symlinked directory by default
        subdirs[:] = [s for s in subdirs if s not in devices.HOST_SKIPPED_DIRS]
        for name in files:
            mode = os.lstat(os.path.join(d, name)).st_mode
            if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and name != "console":
                nodes.add(os.path.join(d, name))
    assert set(by_path) == nodes


@root_only
def test_host_walk_skips_what_containerd_skips(workdir: Path) -> None:
    dev = workdir / "dev"
    for sub in ("pts", "shm", "fd", "mqueue", ".udev", "dri", "dri/by-path/pts"):
        (dev / sub).mkdir(parents=True)
    for path, major, minor in (("null", 1, 3), ("console", 5, 1), ("pts/0", 136, 0), ("shm/x", 1, 5),
                               ("dri/card0", 226, 0), ("dri/console", 5, 1), ("dri/by-path/pts/1", 136, 1),
                               (".udev/y", 1, 7)):
        os.mknod(dev / path, stat.S_IFCHR | 0o600, os.makedev(major, minor))
    os.mkfifo(dev / "initctl")
    (dev / "stdin").symlink_to("/proc/self/fd/0")
    walked = devices._walk(str(dev), "/dev", devices.HOST_SKIPPED_DIRS, devices.HOST_SKIPPED_FILES, strict=True)
    assert [d.path for d in walked] == ["/dev/dri/card0", "/dev/null"]


# ---------------------------------------------------------------- the kernel

PROBE = r"""
import errno, json, os, stat, sys
sys.stdin.buffer.read(1)  # wait until the parent has put this process in the cgroup
where, nodes = sys.argv[1], json.loads(sys.argv[2])
out = {}

def attempt(fn):
    try:
        return fn() or "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

def rw(path):
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        if os.path.basename(path) == "null":
            assert os.write(fd, b"x") == 1 and os.read(fd, 1) == b""
    finally:
        os.close(fd)

for name, kind, major, minor in nodes:
    path = os.path.join(where, name)
    mode = (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | 0o600
    out[name] = {
        "mknod": attempt(lambda: os.mknod(path, mode, os.makedev(major, minor))),
        "rw": attempt(lambda: rw(path)),
        "ro": attempt(lambda: os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))),
    }
print(json.dumps(out))
"""

NODES = [("null", "c", 1, 3), ("kmsg", "c", 1, 11), ("loop0", "b", 7, 0), ("kvm", "c", 10, 232)]


class Groups:
    """Cgroups made under this test's parent, and the probe children; all removed in close()."""

    def __init__(self, parent: str, scratch: Path) -> None:
        self.parent = parent
        self.scratch = scratch
        self.groups: list[Cgroup] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def create(self, version: str | None, rules: tuple[DeviceRule, ...] | None, child: str = "c",
               limits: Limits | None = None) -> Cgroup:
        group = cgroups.create(f"{self.parent}/{child}", limits or Limits(), version, devices=rules)
        self.groups.append(group)
        return group

    def probe(self, group: Cgroup, nodes: list[tuple[str, str, int, int]] = NODES) -> dict[str, dict[str, str]]:
        """What a process in ``group`` gets when it mknods and opens ``nodes`` (errno names or "ok")."""
        self.count += 1
        where = self.scratch / f"probe{self.count}"
        where.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", PROBE, str(where), json.dumps(nodes)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.children.append(proc)
        group.add(proc.pid)
        out, err = proc.communicate(b"\n", timeout=30)
        assert proc.returncode == 0, err.decode()
        result: dict[str, dict[str, str]] = json.loads(out)
        return result

    def close(self) -> None:
        errors: list[BaseException] = []
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        for group in self.groups:
            try:
                group.remove()
            except Exception as e:  # keep cleaning up; reported below
                errors.append(e)
        leaked = cgroups.all_pybuild_cgroups(self.parent)
        _force_cleanup(self.parent)
        assert not errors, f"remove() failed: {errors}"
        assert not leaked, f"cgroups left behind: {leaked}"


def _force_cleanup(prefix: str) -> None:
    """Last resort: kill whatever is below ``prefix`` and rmdir it bottom-up."""
    dirs = sorted(cgroups.all_pybuild_cgroups(prefix), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        with contextlib.suppress(OSError):
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


@pytest.fixture
def groups(workdir: Path) -> Iterator[Groups]:
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    g = Groups(f"pybuild-test-{secrets.token_hex(4)}", workdir)
    try:
        yield g
    finally:
        g.close()


def _v2_root() -> Path:
    root = cgroups.v2_mount()
    assert root is not None
    return Path(root)


@pytest.fixture(params=["v1", "v2"])
def version(request: pytest.FixtureRequest) -> str:
    """Both kinds of device cgroup: v1's devices controller, v2's eBPF program (the host's cgroup2 mount)."""
    ver: str = request.param
    if ver == "v1" and "devices" not in cgroups.v1_mounts():
        pytest.skip("no cgroup v1 devices controller on this host")
    if ver == "v2" and cgroups.v2_mount() is None:
        pytest.skip("no cgroup2 mount on this host")
    return ver


def test_default_rules_are_enforced(groups: Groups, version: str) -> None:
    group = groups.create(version, DEFAULT_RULES)
    got = groups.probe(group)
    assert got["null"] == {"mknod": "ok", "rw": "ok", "ro": "ok"}
    for name in ("kmsg", "loop0", "kvm"):  # c *:* m and b *:* m: the node can be made, not opened
        assert got[name] == {"mknod": "ok", "rw": "EPERM", "ro": "EPERM"}, name


def test_an_extra_rule_opens_its_device(groups: Groups, version: str) -> None:
    rules = DEFAULT_RULES + (DeviceRule(True, "b", 7, 0, "rw"), DeviceRule(True, "c", 1, 11, "r"))
    group = groups.create(version, rules)
    got = groups.probe(group)
    assert got["kmsg"] == {"mknod": "ok", "rw": "EPERM", "ro": "ok"}  # read only: O_RDWR asks for rw
    assert got["kvm"]["ro"] == "EPERM"
    assert got["loop0"]["mknod"] == "ok"
    if _block_major_present(7):  # opening a loop node needs the loop driver
        assert got["loop0"]["rw"] == "ok"


def test_a_device_from_parse_device_opens(groups: Groups, version: str) -> None:
    rules = DEFAULT_RULES + tuple(rule for _, rule in parse_device("/dev/kmsg:/dev/kmsg:r"))
    got = groups.probe(groups.create(version, rules))
    assert got["kmsg"]["ro"] == "ok"
    assert got["kmsg"]["rw"] == "EPERM"


def test_allow_all(groups: Groups, version: str) -> None:
    got = groups.probe(groups.create(version, ALLOW_ALL))
    assert got["kmsg"] == {"mknod": "ok", "rw": "ok", "ro": "ok"}
    assert got["kvm"]["mknod"] == "ok"
    if os.path.exists("/dev/kvm"):
        assert got["kvm"]["ro"] == "ok"


def test_a_partial_deny_refuses_a_read_write_open(groups: Groups, version: str) -> None:
    if version == "v1":
        rules = DEFAULT_RULES + (DeviceRule(True, "c", 1, 11), DeviceRule(False, "c", 1, 11, "w"))
    else:
        rules = ALLOW_ALL + (DeviceRule(False, "c", 1, 11, "w"),)
    got = groups.probe(groups.create(version, rules))
    assert got["kmsg"] == {"mknod": "ok", "rw": "EPERM", "ro": "ok"}
    assert permits(rules, "c", 1, 11, "rw") is False and permits(rules, "c", 1, 11, "r") is True


def test_without_rules_nothing_is_filtered(groups: Groups, version: str) -> None:
    group = groups.create(version, None)
    got = groups.probe(group)
    assert got["kmsg"]["rw"] == "ok"
    if isinstance(group, CgroupV1):
        devices_dir = group.dir("devices")
        assert devices_dir is not None and not devices_dir.exists()  # not even a devices directory
    else:
        assert isinstance(group, CgroupV2)
        fd = os.open(group.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert bpf.query_device_programs(fd) == []
        finally:
            os.close(fd)


# ---------------------------------------------------------------- v1 specifics


@pytest.fixture
def v1(groups: Groups) -> Groups:
    if "devices" not in cgroups.v1_mounts():
        pytest.skip("no cgroup v1 devices controller on this host")
    return groups


def _devices_list(group: Cgroup) -> list[str]:
    assert isinstance(group, CgroupV1)
    d = group.dir("devices")
    assert d is not None
    return (d / "devices.list").read_text().splitlines()


def test_v1_devices_list(v1: Groups) -> None:
    group = v1.create("v1", DEFAULT_RULES)
    listed = _devices_list(group)
    assert "a *:* rwm" not in listed
    expected = {r.v1_text() for r in DEFAULT_RULES if r.allow}
    assert set(listed) == expected
    assert isinstance(group, CgroupV1)
    assert group.dir("devices") in group.paths()  # joined with the other hierarchies
    other = v1.create("v1", ALLOW_ALL, child="all")
    assert _devices_list(other) == ["a *:* rwm"]


def test_v1_needs_the_devices_controller(v1: Groups) -> None:
    mounts = {k: v for k, v in cgroups.v1_mounts().items() if k != "devices"}
    group = CgroupV1(f"{v1.parent}/c", mounts)
    with pytest.raises(ContainerError) as info:
        group._create(Limits(), DEFAULT_RULES)
    assert "the devices controller is not mounted" in str(info.value)
    assert cgroups.all_pybuild_cgroups(v1.parent) == []
    group._create(Limits())  # without rules it is not needed
    v1.groups.append(group)


@pytest.mark.parametrize(("rules", "message"), [
    ((DeviceRule(True, "a", None, None, "m"),), "cannot apply the device rule 'a *:* m'"),
    ((DeviceRule(False, "a"), DeviceRule(True, "c", 1, 3), DeviceRule(False, "c", 1, None)),
     "cannot apply the device rule 'c 1:* rwm' after 'c 1:3 rwm'"),
    ((DeviceRule(True, "a"), DeviceRule(False, "c", 1, None), DeviceRule(True, "c", 1, 3)),
     "cannot apply the device rule 'c 1:3 rwm' after 'c 1:* rwm'"),
])
def test_v1_refuses_what_its_controller_would_read_otherwise(v1: Groups, rules: tuple[DeviceRule, ...],
                                                               message: str) -> None:
    with pytest.raises(ContainerError, match=re.escape(message)):
        v1.create("v1", rules)
    assert cgroups.all_pybuild_cgroups(v1.parent) == []


def test_v1_kernel_refusal_is_reported_and_rolled_back(v1: Groups) -> None:
    v1.create("v1", DEFAULT_RULES, child="outer")
    with pytest.raises(ContainerError) as info:  # a child cannot allow what its parent denies
        v1.create("v1", DEFAULT_RULES + (DeviceRule(True, "c", 1, 11),), child="outer/inner")
    assert "devices.allow" in str(info.value) and "Operation not permitted" in str(info.value)
    assert [p for p in cgroups.all_pybuild_cgroups(v1.parent) if p.name == "inner"] == []


# ---------------------------------------------------------------- v2 specifics


@pytest.fixture
def v2(groups: Groups) -> Groups:
    if cgroups.v2_mount() is None:
        pytest.skip("no cgroup2 mount on this host")
    return groups


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_v2_one_program_attached_and_removed_with_the_cgroup(v2: Groups) -> None:
    before = _open_fds()
    group = v2.create("v2", DEFAULT_RULES)
    assert isinstance(group, CgroupV2)
    assert _open_fds() == before  # the program's fd is closed: the attachment holds it
    fd = os.open(group.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(bpf.query_device_programs(fd)) == 1
    finally:
        os.close(fd)
    group.remove()
    assert not group.path.exists()
    assert not (_v2_root() / v2.parent).exists()


def test_v2_failures_leave_nothing(v2: Groups) -> None:
    before = _open_fds()
    with pytest.raises(ContainerError, match="cannot build the device filter"):
        v2.create("v2", (DeviceRule(True, "c", 1 << 31, 0),))  # beyond what the program compares
    available = (_v2_root() / "cgroup.controllers").read_text().split()
    if "memory" not in available:  # fails after the program is loaded: it must be closed
        with pytest.raises(ContainerError, match="memory controller is not available"):
            v2.create("v2", DEFAULT_RULES, limits=Limits(memory=32 << 20))
    assert _open_fds() == before
    assert cgroups.all_pybuild_cgroups(v2.parent) == []


# ---------------------------------------------------------------- PYBUILD_CGROUP_VERSION


@root_only
def test_version_from_the_environment(groups: Groups, monkeypatch: pytest.MonkeyPatch) -> None:
    detected = cgroups.version()
    if cgroups.v2_mount() is not None:
        monkeypatch.setenv("PYBUILD_CGROUP_VERSION", "v2")
        assert cgroups.version() == "v2"
        group = groups.create(None, DEFAULT_RULES, child="env2")
        assert isinstance(group, CgroupV2) and group.root == _v2_root()
        assert groups.probe(group)["kmsg"]["rw"] == "EPERM"
        assert cgroups.open_existing(group.name).paths() == group.paths()
    if cgroups.v1_mounts():
        monkeypatch.setenv("PYBUILD_CGROUP_VERSION", "v1")
        assert cgroups.version() == "v1"
        group = groups.create(None, None, child="env1")
        assert isinstance(group, CgroupV1)
        if cgroups.v2_mount() is not None:  # made under one choice, found under the other
            monkeypatch.setenv("PYBUILD_CGROUP_VERSION", "v2")
            assert isinstance(cgroups.open_existing(group.name), CgroupV1)
    monkeypatch.setenv("PYBUILD_CGROUP_VERSION", "")
    assert cgroups.version() == detected
    for bad in ("v3", "V2", "2", "cgroup2"):
        monkeypatch.setenv("PYBUILD_CGROUP_VERSION", bad)
        with pytest.raises(UsageError, match="invalid PYBUILD_CGROUP_VERSION"):
            cgroups.version()
        with pytest.raises(UsageError):
            cgroups.create(f"{groups.parent}/bad", Limits())


def test_zz_no_test_cgroups_left() -> None:
    assert cgroups.all_pybuild_cgroups("pybuild-test-") == []
