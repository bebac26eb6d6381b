"""What a build killed with SIGKILL leaves: its secrets, its scratch dir, its RUN cgroups (issue 14, item 4).

A killed build's scratch dir (``tmp/build-*``, with the plaintext of its RUN
secrets under ``run-*/secret-*``) is removed by the next command that opens
the store; its RUN cgroups, in every hierarchy, by ``prune``; ``system
check`` reports both and ``--repair`` removes them. The RUN's container dies
with the build (PR_SET_PDEATHSIG on the shim and the init). A build that is
still running keeps all of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Cli

SECRET = "pl41nt3xt-s3cr3t"


def _wait(what: str, predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Build:
    """``pybuild build --secret id=s,src=...`` in a session of its own, output to a file."""

    def __init__(self, cli: Cli, ctx: Path, secret: Path, log: Path) -> None:
        self.log = log
        env = dict(os.environ)
        env.pop("PYBUILD_ROOT", None)
        env.update(cli.env)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pybuild", "--root", str(cli.root), "build", "--progress", "plain",
                 "--no-cache", "--network", "none", "--secret", f"id=s,src={secret}", str(ctx)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> None:
        _wait("the RUN step to start", lambda: "started" in self.output() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.output()


def _context(path: Path, run: str) -> Path:
    path.mkdir()
    (path / "Dockerfile").write_text(
        "FROM busybox\n"
        f"RUN --mount=type=secret,id=s --mount=type=bind,target=/ctx test \"$(cat /run/secrets/s)\" = {SECRET} "
        f"&& echo st''arted && {run}\n")  # the step's own line does not say "started"
    return path


def build_cgroups(root: Path) -> list[Path]:
    """The directories, in every hierarchy (v1 controllers, cgroup2), of the RUN cgroups of builds on ``root``."""
    from pybuild.builder.runstep import build_cgroup_prefix
    from pybuild.runtime import cgroups

    prefix = build_cgroup_prefix(root)
    return [d for d in cgroups.all_pybuild_cgroups("pybuild")
            if d.parent.name == "pybuild" and d.name.startswith(prefix)]


def _secret_files(root: Path) -> set[Path]:
    return set((root / "tmp").glob("build-*/run-*/secret-*"))


def _scratch_dirs(root: Path) -> set[Path]:
    return {p for p in (root / "tmp").glob("build-*") if p.is_dir()}


def _procs(cgroup_dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs:
        for sub in [d, *d.rglob("*")]:
            procs = sub / "cgroup.procs"
            if procs.is_file():
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _names(dirs: set[Path]) -> set[str]:
    """cgroup names (``pybuild/build-...``) of cgroup directories."""
    return {f"{d.parent.name}/{d.name}" for d in dirs}


def _hierarchies_expected() -> int:
    """How many hierarchies a RUN cgroup is made in on this host (every v1 controller pybuild uses, or cgroup2)."""
    from pybuild.runtime import cgroups

    if cgroups.version() == "v2":
        return 1
    return len({cgroups.v1_mounts()[c] for c in cgroups.V1_CONTROLLERS if c in cgroups.v1_mounts()})


def _kill_and_check_container_dies(build: Build, cgroup_dirs: set[Path], group: bool) -> None:
    """SIGKILL the build (its whole process group, or only the build process).

    The RUN's container must be dead right after, before any pybuild command
    runs: it dies with its parent (PR_SET_PDEATHSIG), not through a cleanup.
    """
    pids = _procs(sorted(cgroup_dirs))
    assert pids, "the RUN step's processes are in its cgroup"
    if group:
        os.killpg(build.proc.pid, signal.SIGKILL)
    else:
        os.kill(build.proc.pid, signal.SIGKILL)
    assert build.proc.wait(timeout=30) == -signal.SIGKILL
    _wait("the killed build's container processes to die", lambda: not any(_alive(p) for p in pids), 10)
    assert not _procs(sorted(cgroup_dirs)), "the killed build's cgroups are empty"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["images", "check-first", "repair"])
def test_a_killed_builds_secret_and_cgroups_are_removed(bcli: Cli, workdir: Path, mode: str) -> None:
    secret = workdir / "secret"
    secret.write_text(SECRET)
    ctx = _context(workdir / "ctx", "sleep 1000")
    build = Build(bcli, ctx, secret, workdir / "build.log")
    try:
        build.wait_started()
        _wait("the secret file", lambda: bool(_secret_files(bcli.root)))
        cgroup_dirs, secrets = set(build_cgroups(bcli.root)), _secret_files(bcli.root)
        _kill_and_check_container_dies(build, cgroup_dirs, group=True)
    finally:
        if build.proc.poll() is None:
            os.killpg(build.proc.pid, signal.SIGKILL)
            build.proc.wait()
    assert [p.read_text() for p in secrets] == [SECRET]  # what the issue found left in plaintext
    assert len(cgroup_dirs) == _hierarchies_expected(), cgroup_dirs  # in every hierarchy (devices included)
    (cgroup_name,) = _names(cgroup_dirs)
    scratch = _scratch_dirs(bcli.root)
    assert len(scratch) == 1

    if mode in ("check-first", "repair"):
        check = bcli("system", "check", check=False)
        assert check.returncode == 1, check.stdout
        name = next(iter(scratch)).name
        assert f"problem: leftover of a killed build: tmp/{name} (1 secret file in plaintext)" in check.stdout
        assert f"problem: cgroup of a killed build: {cgroup_name}" in check.stdout
        assert "system check --repair" in check.stderr
        assert _secret_files(bcli.root) == secrets  # a check alone changes nothing
        assert set(build_cgroups(bcli.root)) == cgroup_dirs
    if mode == "repair":
        repaired = bcli("system", "check", "--repair")
        assert f"repaired: leftover of a killed build: tmp/{name}" in repaired.stdout
        assert f"repaired: cgroup of a killed build: {cgroup_name}" in repaired.stdout
        assert repaired.stdout.rstrip().endswith("store repaired")
        assert not _secret_files(bcli.root) and not _scratch_dirs(bcli.root)
        assert not build_cgroups(bcli.root) and not any(d.exists() for d in cgroup_dirs)
    else:
        bcli("images")  # any command that opens the store
        assert not _secret_files(bcli.root) and not _scratch_dirs(bcli.root)
        assert not list((bcli.root / "tmp").glob("build-*"))  # the owner file too
        assert set(build_cgroups(bcli.root)) == cgroup_dirs  # those are prune's
        check = bcli("system", "check", check=False)
        assert check.returncode == 1 and "leftover of a killed build" not in check.stdout
        assert f"problem: cgroup of a killed build: {cgroup_name}" in check.stdout
        out = bcli("prune").stdout
        assert "Deleted: " in out
        assert not any(d.exists() for d in cgroup_dirs) and not build_cgroups(bcli.root)
    assert bcli("system", "check").stdout.strip() == "store is consistent"


@pytest.mark.slow
def test_a_running_build_keeps_its_secret_and_cgroups(bcli: Cli, workdir: Path) -> None:
    """Another build of the same store, running while the killed one's leftovers go, is left alone."""
    secret = workdir / "secret"
    secret.write_text(SECRET)
    live_ctx = _context(workdir / "live", "while [ ! -e /ctx/stop ]; do sleep 0.1; done; echo done")
    killed_ctx = _context(workdir / "killed", "sleep 1000")
    live = Build(bcli, live_ctx, secret, workdir / "live.log")
    killed: Build | None = None
    prune: subprocess.Popen[bytes] | None = None
    try:
        live.wait_started()
        _wait("the live build's secret", lambda: bool(_secret_files(bcli.root)))
        live_secrets, live_scratch = _secret_files(bcli.root), _scratch_dirs(bcli.root)
        live_cgroups = set(build_cgroups(bcli.root))
        assert live_cgroups and _procs(sorted(live_cgroups))

        killed = Build(bcli, killed_ctx, secret, workdir / "killed.log")
        killed.wait_started()
        _wait("the killed build's secret", lambda: len(_secret_files(bcli.root)) == 2)
        killed_secrets = _secret_files(bcli.root) - live_secrets
        _wait("the killed build's cgroup", lambda: len(set(build_cgroups(bcli.root)) - live_cgroups)
              == _hierarchies_expected())
        # only the build process: its container must die through PR_SET_PDEATHSIG alone
        killed_cgroups = set(build_cgroups(bcli.root)) - live_cgroups
        _kill_and_check_container_dies(killed, killed_cgroups, group=False)
        assert _procs(sorted(live_cgroups)), "the live build's RUN still runs"

        check = bcli("system", "check", check=False)
        assert check.returncode == 1
        (killed_name,) = _names(killed_cgroups)
        (live_name,) = _names(live_cgroups)
        assert f"cgroup of a killed build: {killed_name}" in check.stdout
        assert live_name not in check.stdout
        assert check.stdout.count("leftover of a killed build") == 1
        assert next(iter(live_scratch)).name not in check.stdout

        bcli("images")
        assert _secret_files(bcli.root) == live_secrets and not any(p.exists() for p in killed_secrets)
        assert _scratch_dirs(bcli.root) == live_scratch
        assert [p.read_text() for p in live_secrets] == [SECRET]

        # prune removes the killed build's cgroups first, then waits (GC) for the live build to finish
        env = dict(os.environ)
        env.pop("PYBUILD_ROOT", None)
        env.update(bcli.env)
        prune = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(bcli.root), "prune"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _wait("prune to remove the killed build's cgroups", lambda: not any(d.exists() for d in killed_cgroups))
        assert set(build_cgroups(bcli.root)) == live_cgroups and _procs(sorted(live_cgroups))
        assert _secret_files(bcli.root) == live_secrets and live.proc.poll() is None

        (live_ctx / "stop").write_text("")
        assert live.proc.wait(timeout=60) == 0, live.output()
        out, err = prune.communicate(timeout=60)
        assert prune.returncode == 0, err
        assert "done" in live.output()
    finally:
        for b in (live, killed):
            if b is not None and b.proc.poll() is None:
                os.killpg(b.proc.pid, signal.SIGKILL)
                b.proc.wait()
        if prune is not None and prune.poll() is None:
            prune.kill()
            prune.wait()
    assert not _secret_files(bcli.root) and not _scratch_dirs(bcli.root)
    assert not build_cgroups(bcli.root)
    assert bcli("system", "check").stdout.strip() == "store is consistent"
