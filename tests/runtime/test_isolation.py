"""Isolation on par with Docker's defaults, end to end through the CLI.

A static probe (testdata/probes/secprobe.c) makes the calls a hostile
container or Dockerfile would: keyrings, user namespaces, io_uring, perf,
mounts, device nodes of the host's disks and kernel log. Its verdicts are
checked in a default container, in a RUN step, under each security flag,
and against podman's default profile on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.runtime import cgroups
from tests.conftest import REPO, Cli

PROBE_SOURCE = REPO / "testdata" / "probes" / "secprobe.c"

# What Docker's default profile, default capabilities and device allowlist give.
DEFAULT_VERDICTS = {
    "getpid": "ok",
    "keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM",
    "unshare-user": "EPERM", "unshare-mnt": "EPERM", "clone-newuser": "EPERM",
    "clone3": "ENOSYS",  # so that glibc falls back to clone, whose flags the filter can see
    "io_uring_setup": "EPERM", "perf_event_open": "EPERM", "bpf": "EPERM", "userfaultfd": "EPERM",
    "mount": "EPERM", "swapon": "EPERM", "syslog": "EPERM", "kexec_load": "EPERM",
    "open_by_handle_at": "EPERM", "setns": "EPERM", "settimeofday": "EPERM", "acct": "EPERM",
    "pivot_root": "EPERM",
    "socket-inet": "ok", "socket-vsock": "EPERM", "personality-query": "ok", "chroot": "ok",
    # CAP_MKNOD makes any node; the device cgroup decides which may be opened.
    "mknod-null": "ok", "open-null": "ok",
    "mknod-kmsg": "ok", "open-kmsg": "EPERM",
    "mknod-loop0": "ok", "open-loop0": "EPERM",
    "mknod-kvm": "ok", "open-kvm": "EPERM",
    "mknod-mem": "ok", "open-mem": "EPERM",
}

# podman 4.3 (containers-common 0.50's seccomp.json, its 11 default capabilities
# plus MKNOD, NET_RAW and AUDIT_WRITE added so that both run with Docker's 14):
# every verdict that differs, why, and the pair (pybuild, podman).
PODMAN_DIFFERENCES = {
    "keyctl": (("EPERM", "ok"), "containers-common allows keyctl; moby's profile does not (keyrings are "
                                "not namespaced: a container could read the host's keys)"),
    "add_key": (("EPERM", "ENOSYS"), "containers-common answers ENOSYS for add_key/request_key so that "
                                     "programs fall back quietly; moby's answers EPERM"),
    "request_key": (("EPERM", "ENOSYS"), "as add_key"),
    "io_uring_setup": (("EPERM", "ENOSYS"), "containers-common answers ENOSYS for io_uring; moby's EPERM"),
    "unshare-user": (("EPERM", "ok"), "containers-common allows unshare and clone of a user namespace "
                                      "without CAP_SYS_ADMIN (rootless nesting); moby's needs CAP_SYS_ADMIN"),
    "clone-newuser": (("EPERM", "ok"), "as unshare-user"),
    "clone3": (("ENOSYS", "EINVAL"), "containers-common allows clone3 (EINVAL: the probe passes no "
                                     "arguments); moby's answers ENOSYS without CAP_SYS_ADMIN"),
    "setns": (("EPERM", "EINVAL"), "containers-common allows setns; moby's needs CAP_SYS_ADMIN"),
    "socket-vsock": (("EPERM", "ok"), "moby's profile refuses AF_VSOCK sockets (guest-host channel); "
                                      "containers-common 0.50 predates that rule"),
}


@pytest.fixture(scope="session")
def secprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe, built static (gcc and libc6-dev: scripts/test installs them)."""
    out = tmp_path_factory.mktemp("secprobe") / "secprobe"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(PROBE_SOURCE)], check=True)
    return out


def verdicts(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        name, sep, verdict = line.strip().rpartition("=")
        if sep and name and " " not in name:
            found[name.split()[-1]] = verdict
    return found


def probe(cli: Cli, secprobe: Path, *flags: str) -> dict[str, str]:
    out = cli("run", "--rm", "--network", "none", "-v", f"{secprobe}:/secprobe:ro", *flags,
              "busybox", "/secprobe", "/tmp").stdout
    return verdicts(out)


def status(cli: Cli, *flags: str) -> dict[str, str]:
    out = cli("run", "--rm", "--network", "none", *flags, "busybox", "cat", "/proc/self/status").stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def no_leftovers(cli: Cli) -> None:
    assert cli("ps", "-a", "-q").stdout.strip() == ""
    assert [p for p in cgroups.all_pybuild_cgroups() if str(cli.root.name) in str(p)] == []


# ---- defaults ------------------------------------------------------------------------

@pytest.mark.slow
def test_default_container_verdicts(cli: Cli, busybox: str, secprobe: Path) -> None:
    assert probe(cli, secprobe) == DEFAULT_VERDICTS
    st = status(cli)
    assert st["Seccomp"] == "2"
    assert st["NoNewPrivs"] == "0"  # Docker's default: setuid programs still work


@pytest.mark.slow
def test_run_step_verdicts(cli: Cli, busybox: str, secprobe: Path, workdir: Path) -> None:
    ctx = workdir / "ctx"
    ctx.mkdir()
    shutil.copy(secprobe, ctx / "secprobe")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY secprobe /secprobe\n"
                                    "RUN /secprobe /tmp && grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status\n")
    out = cli("build", "--progress", "plain", "--network", "none", "-t", "probe", str(ctx))
    text = out.stdout + out.stderr
    got = verdicts(text)
    assert {k: got.get(k) for k in DEFAULT_VERDICTS} == DEFAULT_VERDICTS
    assert "Seccomp:\t2" in text


@pytest.mark.slow
def test_podman_default_profile_comparison(cli: Cli, busybox: str, busybox_tar: Path, secprobe: Path,
                                            workdir: Path) -> None:
    podman = shutil.which("podman")
    assert podman, "podman is a test dependency (scripts/test installs it)"
    base = [podman, "--root", str(workdir / "podman-root"), "--runroot", str(workdir / "podman-run"),
            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        subprocess.run([*base, "import", str(busybox_tar), "localhost/probe-bb:1"], check=True,
                       capture_output=True)
        # This machine's root lacks CAP_SYS_RESOURCE: give podman limits it can set.
        nofile, nproc = os.sysconf("SC_OPEN_MAX"), 1000
        out = subprocess.run([*base, "run", "--rm", "--network", "none", "--ulimit", f"nofile={nofile}:{nofile}",
                              "--ulimit", f"nproc={nproc}:{nproc}", "--cap-add", "MKNOD,NET_RAW,AUDIT_WRITE",
                              "-v", f"{secprobe}:/secprobe:ro", "localhost/probe-bb:1", "/secprobe", "/tmp"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        subprocess.run([*base, "rm", "-af"], capture_output=True)
        subprocess.run([*base, "system", "reset", "-f"], capture_output=True)
    theirs = verdicts(out)
    ours = probe(cli, secprobe)
    differing = {k: (ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
    explained = {k: pair for k, (pair, _why) in PODMAN_DIFFERENCES.items()}
    assert differing == explained


# ---- flags ---------------------------------------------------------------------------

@pytest.mark.slow
def test_privileged(cli: Cli, busybox: str, secprobe: Path) -> None:
    got = probe(cli, secprobe, "--privileged")
    for name in ("keyctl", "unshare-user", "unshare-mnt", "mount", "open-kmsg", "open-mem", "setns"):
        assert got[name] in ("ok", "EINVAL"), (name, got[name])
    st = status(cli, "--privileged")
    assert st["Seccomp"] == "0"
    # Every capability the kernel has, as far as pybuild's own bounding set reaches.
    ours = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("CapBnd:"))
    assert st["CapBnd"] == ours
    out = cli("run", "--rm", "--network", "none", "--privileged", "busybox", "sh", "-c",
              "grep -E ' /sys | /proc/sys ' /proc/self/mounts; ls /dev | grep -c .").stdout
    assert " /sys sysfs rw" in out and " /proc/sys " not in out  # no read-only or masked paths
    assert int(out.split()[-1]) > 15  # the host's devices


@pytest.mark.slow
def test_seccomp_unconfined_and_custom_profiles(cli: Cli, busybox: str, secprobe: Path, workdir: Path) -> None:
    got = probe(cli, secprobe, "--security-opt", "seccomp=unconfined")
    assert got["keyctl"] == "ok"
    assert got["open-kmsg"] == "EPERM"  # the device cgroup does not depend on seccomp
    profile = workdir / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                     {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    got = probe(cli, secprobe, "--security-opt", f"seccomp={profile}")
    assert got["keyctl"] == "ENOSYS" and got["add_key"] == "ok"
    res = cli("run", "--rm", "--network", "none", "--security-opt", f"seccomp={profile}", "busybox",
              "mkdir", "/made", check=False)
    assert res.returncode != 0 and "Operation not permitted" in res.stderr
    # Docker keeps the profile itself, not its path.
    cid = cli("create", "--security-opt", f"seccomp={profile}", "busybox", "true").stdout.strip()
    host = json.loads(cli("inspect", cid).stdout)[0]["HostConfig"]
    assert host["SecurityOpt"][0].startswith("seccomp={")
    profile.unlink()
    assert cli("start", "-a", cid, check=False).returncode == 0
    cli("rm", cid)


@pytest.mark.slow
def test_capabilities_flags(cli: Cli, busybox: str, secprobe: Path) -> None:
    got = probe(cli, secprobe, "--cap-add", "SYS_ADMIN")
    assert got["unshare-mnt"] == "ok" and got["mount"] == "ok" and got["unshare-user"] == "ok"
    assert got["keyctl"] == "EPERM"  # not a capability matter in the profile
    got = probe(cli, secprobe, "--cap-drop", "mknod")
    assert got["mknod-null"] == "EPERM" and got["mknod-kmsg"] == "EPERM"
    assert status(cli, "--cap-drop", "ALL")["CapBnd"] == "0000000000000000"
    assert status(cli, "--cap-drop", "ALL", "--cap-add", "cap_chown")["CapBnd"] == "0000000000000001"
    st = status(cli, "--security-opt", "no-new-privileges")
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    assert status(cli, "--security-opt", "no-new-privileges=false")["NoNewPrivs"] == "0"


@pytest.mark.slow
def test_device_flag(cli: Cli, busybox: str, workdir: Path) -> None:
    # A node of the host's: kvm's numbers (10:232), made here so that the test needs no real device.
    node = workdir / "kvm-node"
    os.mknod(node, 0o020600, os.makedev(10, 232))
    os.chmod(node, 0o666)  # the container's node keeps the host's mode
    script = ("head -c 5 /dev/myzero | wc -c; cat /dev/k 2>&1; echo x 2>&1 > /dev/k; ls -l /dev/k")
    out = cli("run", "--rm", "--network", "none", "--device", "/dev/zero:/dev/myzero", "--device", f"{node}:/dev/k:r",
              "busybox", "sh", "-c", script).stdout
    lines = out.splitlines()
    assert lines[0] == "5"
    assert "Operation not permitted" not in lines[1]  # read: allowed by the rule (ENXIO without a kvm driver)
    assert "Operation not permitted" in lines[2]  # write: not in the rule
    assert lines[3].startswith("crw-rw-rw-") and "10, 232" in lines[3]
    without = cli("run", "--rm", "--network", "none", "busybox", "sh", "-c", "mknod /dev/k c 10 232; cat /dev/k",
                  check=False)
    assert "Operation not permitted" in without.stderr


@pytest.mark.slow
def test_process_and_filesystem_flags(cli: Cli, busybox: str, workdir: Path) -> None:
    data = workdir / "data"
    data.mkdir()
    out = cli("run", "--rm", "--network", "none", "--read-only", "-v", f"{data}:/data", "--ulimit", "nofile=100:200",
              "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=123456789", "--shm-size", "128m",
              "--group-add", "1234", "--group-add", "nogroup", "--mount", "type=tmpfs,dst=/scratch,tmpfs-size=1m",
              "busybox", "sh", "-c",
              "touch /x 2>&1; touch /data/ok && echo data-ok; touch /dev/shm/ok && echo shm-ok; ulimit -n;"
              " ulimit -Hn; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax; id -G;"
              " df -k /dev/shm /scratch | tail -2").stdout
    lines = out.splitlines()
    assert "Read-only file system" in lines[0]
    assert "data-ok" in out and "shm-ok" in out
    assert lines[3:7] == ["100", "200", "1", "123456789"]
    assert set(lines[7].split()) >= {"0", "1234", "65534"}
    assert lines[8].split()[1] == str(128 * 1024) and lines[9].split()[1] == "1024"
    assert (data / "ok").exists()
    cid = cli("create", "--cap-add", "net_admin", "--cap-drop", "CAP_MKNOD", "--read-only", "--ulimit",
              "nofile=100:200", "--sysctl", "kernel.msgmax=8192", "--shm-size", "1g", "--group-add", "5",
              "--device", "/dev/zero:/dev/z:r", "--security-opt", "no-new-privileges", "busybox", "true").stdout.strip()
    host = json.loads(cli("inspect", cid).stdout)[0]["HostConfig"]
    assert host["CapAdd"] == ["CAP_NET_ADMIN"] and host["CapDrop"] == ["CAP_MKNOD"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["Ulimits"] == [{"Name": "nofile", "Hard": 200, "Soft": 100}]
    assert host["Sysctls"] == {"kernel.msgmax": "8192"} and host["ShmSize"] == 1 << 30
    assert host["GroupAdd"] == ["5"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Devices"] == [{"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "r"}]
    cli("rm", cid)


@pytest.fixture
def tree_with_submount(workdir: Path) -> Iterator[Path]:
    """A host directory with a tmpfs mounted below it (unmounted afterwards, whatever happens)."""
    top = workdir / "tree"
    sub = top / "sub"
    sub.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        yield top
    finally:
        subprocess.run(["umount", "-l", str(sub)], check=False)


@pytest.mark.slow
def test_readonly_binds_are_recursive(cli: Cli, busybox: str, tree_with_submount: Path) -> None:
    for flag in (f"{tree_with_submount}:/t:ro", ):
        res = cli("run", "--rm", "--network", "none", "-v", flag, "busybox", "sh", "-c",
                  "touch /t/sub/x 2>&1; touch /t/y 2>&1; true")
        assert res.stdout.count("Read-only file system") == 2, res.stdout
    res = cli("run", "--rm", "--network", "none", "--mount", f"type=bind,src={tree_with_submount},dst=/t,readonly",
              "busybox", "sh", "-c", "touch /t/sub/x 2>&1; true")
    assert "Read-only file system" in res.stdout
    assert not (tree_with_submount / "sub" / "x").exists()
    res = cli("run", "--rm", "--network", "none", "--mount",
              f"type=bind,src={tree_with_submount},dst=/t,bind-propagation=rslave",
              "busybox", "sh", "-c", "touch /t/sub/x && echo rw-ok")
    assert "rw-ok" in res.stdout


@pytest.mark.slow
def test_exec_runs_under_the_containers_profile(cli: Cli, busybox: str) -> None:
    cid = cli("run", "-d", "--network", "none", "--cap-add", "SYS_ADMIN", "busybox", "sleep", "60").stdout.strip()
    try:
        out = cli("exec", cid, "grep", "-E", "^(Seccomp|CapBnd):", "/proc/self/status").stdout
        assert "Seccomp:\t2" in out
        assert "CapBnd:\t00000000a82425fb" in out  # Docker's 14 plus CAP_SYS_ADMIN
    finally:
        cli("rm", "-f", cid)


# ---- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--security-opt", "seccomp=/nonexistent/profile.json"], "seccomp profile /nonexistent/profile.json"),
    (["--security-opt", "seccomp={TMP}/bad.json"], "invalid JSON"),
    (["--security-opt", "apparmor=docker-default"], "AppArmor is not supported"),
    (["--security-opt", "bogus"], "invalid --security-opt"),
    (["--cap-add", "CAP_FLY"], 'unknown capability: "CAP_FLY"'),
    (["--sysctl", "kernel.pid_max=100"], 'sysctl "kernel.pid_max" is not in a separate kernel namespace'),
    (["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "not allowed in host network namespace"),
    (["--device", "/dev/nonexistent-device"], 'adding custom device "/dev/nonexistent-device"'),
    (["--ulimit", "nofile=10:5"], "soft limit is above the hard limit"),
    (["--ulimit", "wings=1"], "unknown limit"),
    (["--mount", "type=bind,src=/nonexistent-src,dst=/x"], "bind source path does not exist"),
    (["--mount", "type=tmpfs,dst=/x,color=blue"], "unexpected field 'color'"),
])
def test_bad_options_exit_125_and_leave_nothing(cli: Cli, busybox: str, workdir: Path, flags: list[str],
                                               message: str) -> None:
    (workdir / "bad.json").write_text('{"defaultAction": ')
    flags = [f.replace("{TMP}", str(workdir)) for f in flags]
    for cmd in ("run", "create"):
        res = cli(cmd, *flags, "busybox", "true", check=False)
        assert res.returncode == 125, res
        assert res.stderr.startswith("pybuild: error: ") and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    no_leftovers(cli)

