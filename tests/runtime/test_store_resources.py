"""A store's resources on the host go with it: the bridges and NAT table of a store thrown away, and
``system reset`` (podman's) tearing a store down completely."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pybuild.linux.fsutil import remove_tree
from pybuild.linux.mount import is_mounted
from tests.conftest import Cli, network_leftovers

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_monitor_and_container(cli: Cli, name: str) -> None:
    """What a CI runner's end does to a store's -d container: everything killed, nothing torn down."""
    import json

    state = json.loads(cli("inspect", name).stdout)[0]["State"]
    for pid in (state["Pid"],):
        os.kill(pid, signal.SIGKILL)
    out = subprocess.run(["pgrep", "-f", f"pybuild --root {cli.root}"], capture_output=True, text=True).stdout
    for pid in out.split():
        os.kill(int(pid), signal.SIGKILL)


def test_the_next_command_removes_a_vanished_stores_bridge_and_table(workdir: Path, busybox_tar: Path) -> None:
    gone = Cli(workdir / "gone")
    gone("import", str(busybox_tar), "busybox:latest")
    port = _free_port()
    gone("run", "-d", "--name", "svc", "-p", f"127.0.0.1:{port}:80", "busybox:latest", "httpd", "-f", "-p", "80")
    _kill_monitor_and_container(gone, "svc")
    time.sleep(0.2)
    for target in sorted(Path("/proc/self/mountinfo").read_text().split("\n")):
        fields = target.split()
        if len(fields) > 4 and fields[4].startswith(str(gone.root)):
            subprocess.run(["umount", "-l", fields[4]], check=False)
    remove_tree(gone.root)  # the CI job's rm -rf of its --root $(mktemp -d)
    left = network_leftovers(gone.root, cleanup=False)
    assert any(x.startswith("link ") for x in left) and any(x.startswith("nft table") for x in left), left

    other = Cli(workdir / "other")
    other("images")
    assert network_leftovers(gone.root, cleanup=False) == [], "any command removes them"


def test_system_reset_tears_a_store_down(cli: Cli, busybox: str, workdir: Path) -> None:
    port = _free_port()
    cli("network", "create", "appnet")
    cli("volume", "create", "data")
    cli("run", "-d", "--name", "web", "--network", "appnet", "-p", f"127.0.0.1:{port}:80", "-v", "data:/data",
        busybox, "httpd", "-f", "-p", "80")
    cli("run", "-d", "--name", "plain", busybox, "sleep", "60")
    view = cli("mount", busybox).stdout.strip()
    assert is_mounted(view)

    kept = cli("system", "reset", input=b"n\n")
    assert kept.stdout.startswith("WARNING! This will remove:\n")
    assert kept.stdout.rstrip().endswith("Are you sure you want to continue? [y/N]")
    assert "web" in cli("ps", "-a").stdout, "answered no: nothing removed"

    cli("system", "reset", "-f")
    assert not cli.root.exists(), "the store directory is gone"
    assert network_leftovers(cli.root, cleanup=False) == [], "bridges, table, namespaces gone"
    assert not is_mounted(view)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the published port is closed"
    busy = [p for p in subprocess.run(["pgrep", "-f", str(cli.root)], capture_output=True, text=True).stdout.split()
            if int(p) != os.getpid()]
    assert not busy, "no process of the store is left"
    assert "REPOSITORY" in cli("images").stdout, "the next command starts a new, empty store"
