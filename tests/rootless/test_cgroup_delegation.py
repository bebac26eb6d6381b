"""Rootless limits in a cgroup subtree delegated to the user.

This host binds memory, cpu and pids to cgroup v1 (its cgroup2 mount holds
only hugetlb), so the delegation here is v1's: root makes a cgroup of the
user's in each hierarchy and chowns it, as LXC's pam_cgfs does, and the
user's commands run in it. pybuild then puts a container with limits in a
child of it; the kernel enforces them (an OOM kill, a refused fork).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.runtime import cgroups
from tests.rootless.conftest import VENV, User

pytestmark = pytest.mark.slow

CONTROLLERS = ("memory", "cpu", "pids")


@pytest.fixture
def delegated(clean_user: User) -> Iterator[dict[str, Path]]:
    """controller -> a cgroup of the user's (below this process's own), made and chowned by root."""
    mounts = cgroups.v1_mounts()
    if not all(c in mounts for c in CONTROLLERS):
        pytest.fail(f"this host's cgroup v1 lacks one of {CONTROLLERS}: {sorted(mounts)}")
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            own[name] = path
    leaf = f"pbrl-deleg-{secrets.token_hex(3)}"
    made = {c: mounts[c] / own[c].lstrip("/") / leaf for c in CONTROLLERS}
    clean_user.run("--root", str(clean_user.home / "deleg-store"), "images")  # its pause process, outside them
    try:
        for d in made.values():
            d.mkdir()
            subprocess.run(["chown", "-R", f"{clean_user.uid}:{clean_user.gid}", str(d)], check=True)
        yield made
    finally:
        clean_user.settle()
        for d in made.values():
            for child in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
                if child.is_dir():
                    child.rmdir()
            deadline = time.monotonic() + 5
            while True:
                try:
                    d.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def _in(delegated: dict[str, Path], user: User, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``pybuild ARGS`` as the user, started in its delegated cgroups."""
    join = "; ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in delegated.values())
    argv = ["sh", "-c", f'{join}; exec "$@"', "sh", *user.argv(*args)]
    done = subprocess.run(argv, capture_output=True, text=True, env=user.env(), cwd=user.home, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def test_limits_are_enforced_in_the_delegated_cgroups(clean_user: User, user_busybox: Path,
                                                      delegated: dict[str, Path]) -> None:
    user = clean_user
    root = user.home / "deleg-store"
    _in(delegated, user, "--root", str(root), "import", str(user_busybox), "busybox:latest")
    _in(delegated, user, "--root", str(root), "run", "-d", "--name", "lim", "--network", "none", "-m", "64m",
        "--pids-limit", "20", "--cpus", "0.5", "busybox:latest", "sleep", "60")
    try:
        cid = json.loads(_in(delegated, user, "--root", str(root), "inspect", "lim").stdout)[0]["Id"]
        mine = {c: d / "pybuild" / cid for c, d in delegated.items()}
        assert (mine["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (mine["pids"] / "pids.max").read_text().strip() == "20"
        assert (mine["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        pids = (mine["memory"] / "cgroup.procs").read_text().split()
        assert pids, "the container's processes are in the delegated child cgroup"
        stats = _in(delegated, user, "--root", str(root), "stats", "--no-stream", "lim").stdout
        assert "64MiB" in stats, stats
    finally:
        _in(delegated, user, "--root", str(root), "rm", "-f", "lim", check=False)
    user.settle()
    assert not any((d / "pybuild").exists() for d in delegated.values()), "the container's cgroups are removed"

    oom = _in(delegated, user, "--root", str(root), "run", "--rm", "--network", "none", "-m", "32m",
              "busybox:latest", "tail", "/dev/zero", check=False)
    assert oom.returncode == 137, oom.stderr
    forks = _in(delegated, user, "--root", str(root), "run", "--rm", "--network", "none", "--pids-limit", "4",
                "busybox:latest", "sh", "-c", "for i in 1 2 3 4 5 6; do sleep 2 & done; wait", check=False)
    assert "can't fork" in forks.stderr or "Resource temporarily unavailable" in forks.stderr, forks.stderr

    ctx = user.home / "oomctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN tail /dev/zero\n")
    user.give(ctx)
    built = _in(delegated, user, "--root", str(root), "build", "--memory", "32m", str(ctx), check=False)
    assert built.returncode == 1
    assert "out of memory" in built.stderr.lower() or "oom" in built.stderr.lower(), built.stderr
    user.settle()
    assert not any((d / "pybuild").exists() for d in delegated.values())
    assert os.path.isdir(delegated["memory"])


V2_PROBE = """
import os, sys
from pybuild.runtime import cgroups
group = cgroups._delegated("pybuild/v2probe", {"hugetlb"})
assert isinstance(group, cgroups.CgroupV2), group
group._create(cgroups.Limits(), None)
pid = os.fork()
if pid == 0:
    os.execvp("sleep", ["sleep", "30"])
group.add(pid)
print(group.path)
print(open("/proc/self/cgroup").read().strip().splitlines()[-1])
print(open(f"/proc/{pid}/cgroup").read().strip().splitlines()[-1])
found = cgroups.open_existing("pybuild/v2probe")
print(type(found).__name__, found.procs() == [pid])
found.remove()
print(group.exists())
"""


@pytest.fixture
def delegated_v2(clean_user: User) -> Iterator[Path]:
    """A cgroup v2 of the user's, made and chowned by root, with hugetlb (the one v2 controller here) available."""
    mount = cgroups.v2_mount()
    if mount is None:
        pytest.fail("no cgroup2 mount on this host")
    own = Path("/proc/self/cgroup").read_text().splitlines()
    path = next(line[3:] for line in own if line.startswith("0::"))
    parent = mount / path.lstrip("/")
    if "hugetlb" not in (parent / "cgroup.controllers").read_text().split():
        pytest.fail(f"{parent} offers no hugetlb: {(parent / 'cgroup.controllers').read_text()!r}")
    enabled_before = "hugetlb" in (parent / "cgroup.subtree_control").read_text().split()
    (parent / "cgroup.subtree_control").write_text("+hugetlb")
    clean_user.run("--root", str(clean_user.home / "v2-store"), "images")  # its pause process, outside it
    d = parent / f"pbrl-v2-{secrets.token_hex(3)}"
    d.mkdir()
    try:
        subprocess.run(["chown", "-R", f"{clean_user.uid}:{clean_user.gid}", str(d)], check=True)
        yield d
    finally:
        clean_user.settle()
        for child in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
            if child.is_dir():
                child.rmdir()
        d.rmdir()
        if not enabled_before:
            (parent / "cgroup.subtree_control").write_text("-hugetlb")


def test_v2_delegation_moves_pybuild_to_a_leaf_and_hands_controllers_down(clean_user: User,
                                                                          delegated_v2: Path) -> None:
    """The v2 mechanics with the real kernel, on the one controller this host's cgroup2 has (hugetlb; no
    pybuild flag sets it, so the probe calls the runtime's cgroups module in the user's namespace): the
    delegated cgroup found, pybuild moved out of it into ``init`` (a cgroup with processes cannot hand
    controllers down), a container's cgroup made below it, found again and removed. Writing memory.max
    and the like is the rootful v2 code's, which this host cannot run either."""
    user = clean_user
    done = _in({"v2": delegated_v2}, user, "--root", str(user.home / "v2-store"), "unshare",
               f"{VENV}/bin/python", "-c", V2_PROBE)
    lines = done.stdout.splitlines()
    rel = "/" + str(delegated_v2.relative_to(cgroups.v2_mount() or "/"))
    assert lines[0] == str(delegated_v2 / "pybuild" / "v2probe")
    assert lines[1] == f"0::{rel}/init", "pybuild left its delegated cgroup for the init leaf"
    assert lines[2] == f"0::{rel}/pybuild/v2probe", "the child is in the new cgroup"
    assert lines[3] == "CgroupV2 True"
    assert lines[4] == "False", "removed"
    assert (delegated_v2 / "init").is_dir() and not (delegated_v2 / "pybuild").exists()
