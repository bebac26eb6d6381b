"""Fixtures shared by the builder's end-to-end tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli


def build_cgroups(root: Path) -> list[Path]:
    """RUN cgroups of builds on the store at ``root`` (other stores' builds may run at the same time)."""
    from pybuild.builder.runstep import build_cgroup_prefix

    return list(Path("/sys/fs/cgroup").glob(f"*/pybuild/{build_cgroup_prefix(root)}*"))


@pytest.fixture
def bcli(cli: Cli, busybox: str) -> Iterator[Cli]:
    """The CLI over a store with busybox; afterwards no build cgroup, snapshot or process remains."""
    yield cli
    leftovers = build_cgroups(cli.root)
    assert not leftovers, f"build cgroups left behind: {leftovers}"
    owners = list((cli.root / "tmp").glob("layer-*.owner"))
    assert not owners, f"snapshots left behind: {owners}"
    procs = subprocess.run(["pgrep", "-f", str(cli.root)], capture_output=True, text=True).stdout.split()
    assert not procs, f"processes left behind: {procs}"
