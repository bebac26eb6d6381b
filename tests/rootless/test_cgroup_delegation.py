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
from tests.rootless.conftest import User

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
