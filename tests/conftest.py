"""Fixtures shared by all tests: a private store root per test, the CLI, a busybox image.

Every test gets its own store root under a temp dir (never /var/lib/pybuild)
and, whatever happens in the test, everything mounted below it is unmounted
and the tree removed afterwards. The teardown asserts that nothing leaked.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.linux.fsutil import remove_tree

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
# Temp dirs on the same disk as the store would be: /tmp may be tmpfs elsewhere.
TMP_BASE = Path(os.environ.get("PYBUILD_TEST_TMP", "/var/tmp"))


def _mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix.rstrip("/") + "/"):
                out.append(target)
    return sorted(out, key=len, reverse=True)


def _force_unmount(prefix: str) -> list[str]:
    leaked = _mounts_under(prefix)
    for target in leaked:
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    return leaked


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch dir on a real disk filesystem (overlay needs one), cleaned up even on failure."""
    TMP_BASE.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="pybuild-test-", dir=TMP_BASE))
    try:
        yield path
    finally:
        leaked = _force_unmount(str(path))
        # remove_tree, not shutil.rmtree: iterative, so a test's deep tree cannot silently stay behind.
        remove_tree(path)
        assert not leaked, f"mounts left behind: {leaked}"


@pytest.fixture
def store_root(workdir: Path) -> Path:
    return workdir / "root"


@pytest.fixture
def store(store_root: Path):  # type: ignore[no-untyped-def]
    from pybuild.store.root import Store

    return Store.open(store_root)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def network_env() -> dict[str, str]:
    """A bridge and a /24 of its own for a test store's default network (not the real pybuild0, 172.29.0.0/16)."""
    return {"PYBUILD_BRIDGE": f"pbt{secrets.token_hex(3)}",
            "PYBUILD_SUBNET": f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"}


def network_leftovers(root: Path, cleanup: bool = True) -> list[str]:
    """What the store at ``root`` left configured on the host (links, nft table, netns mounts); removed if asked.

    Found with ip/nft/umount directly, not through pybuild, so that a bug in
    pybuild's teardown cannot hide its own leak.
    """
    from pybuild.runtime.network.nft import table_name

    leaked: list[str] = []
    veths: set[str] = set()
    namespaces: set[str] = set()
    for record in (root / "network" / "endpoints").glob("*.json"):
        with open(record) as f:
            doc = json.load(f)
        veths.add(doc["veth"])
        namespaces.add(doc["netns"])
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    for link in json.loads(out or "[]"):
        if link.get("ifalias") == f"pybuild:{root}" or link["ifname"] in veths:
            leaked.append(f"link {link['ifname']}")
            if cleanup:
                subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)
    table = table_name(root)
    if subprocess.run(["nft", "list", "table", "ip", table], capture_output=True).returncode == 0:
        leaked.append(f"nft table ip {table}")
        if cleanup:
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
    for ns in sorted(namespaces):
        if os.path.exists(ns):
            leaked.append(f"netns {ns}")
            if cleanup:
                subprocess.run(["umount", "-l", ns], capture_output=True)
                with contextlib.suppress(OSError):
                    os.unlink(ns)
    return leaked


class Cli:
    """Runs the real ``pybuild`` command against a test's store root (with a default network of its own)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = network_env()

    def __call__(self, *args: str, input: bytes | None = None, check: bool = True,
                 env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        full_env = dict(os.environ)
        full_env.pop("PYBUILD_ROOT", None)
        full_env.update(self.env)
        full_env.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(self.root), *args],
                              input=input, capture_output=True, env=full_env, timeout=timeout)
        result = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result


@pytest.fixture
def cli(store_root: Path) -> Iterator[Cli]:
    """The CLI; afterwards whatever network configuration the store left on the host is removed."""
    yield Cli(store_root)
    network_leftovers(store_root, cleanup=True)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs tar made by scripts/make-busybox-rootfs from Debian's busybox-static."""
    script = SCRIPTS / "make-busybox-rootfs"
    out = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    subprocess.run(["sh", str(script), str(out)], check=True)
    return out


@pytest.fixture
def busybox(cli: Cli, busybox_tar: Path) -> str:
    """The busybox rootfs imported as ``busybox:latest`` in the test's store."""
    cli("import", str(busybox_tar), "busybox:latest")
    return "busybox:latest"
