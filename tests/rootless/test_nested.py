"""Rootless pybuild inside an unprivileged pybuild container (no --privileged, Docker's 14 capabilities).

What it needs, as README's Rootless section says: a seccomp profile that lets
an ordinary user make a user namespace (``--security-opt seccomp=unconfined``
here; Docker's profile refuses unshare(CLONE_NEWUSER) without CAP_SYS_ADMIN),
an unmasked /proc (``--security-opt systempaths=unconfined``: the kernel lets a
user namespace mount a new proc only where no part of /proc is covered),
newuidmap/newgidmap with file capabilities rather than setuid root (the image
of ``testdata/rootless/Dockerfile.nested``, as podman's own image does), a
store on a volume (the kernel's overlay upper dirs cannot live on the
container's overlay root) or else fuse-overlayfs and ``--device /dev/fuse``,
and ``--device /dev/net/tun`` for slirp4netns.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pybuild.linux.fsutil import remove_tree
from tests.builder.test_debian_e2e import CACHE, debian_tar  # noqa: F401 - the fixture
from tests.conftest import REPO, Cli, network_leftovers
from tests.rootless.conftest import VENV

pytestmark = pytest.mark.slow

DOCKERFILE = REPO / "testdata" / "rootless" / "Dockerfile.nested"

INSIDE = """\
set -e
useradd -m builder
U=$(id -u builder)
mkdir -p /run/user/$U && chown builder /run/user/$U && chmod 700 /run/user/$U
mkdir -p /store && chown builder /store
cp -r /work/inner /work/busybox.tar /home/builder/ && chown -R builder /home/builder
setpriv --reuid=$U --regid=$U --init-groups -- env HOME=/home/builder XDG_RUNTIME_DIR=/run/user/$U \\
    PYTHONPATH=/opt/code PATH=/opt/venv/bin:/usr/bin:/bin sh -c '
set -e
cd $HOME
python -m pybuild --root /store/s import busybox.tar busybox:latest >/dev/null
python -m pybuild --root /store/s build -q -t inner:v1 inner >/dev/null
python -m pybuild --root /store/s run --rm inner:v1 sh -c "cat /uid; stat -c %u:%g /uid; ip -o -4 addr show tap0"
python -m pybuild --root /store/s info | grep -E " Rootless:|  Overlay:"
'
"""


@pytest.fixture(scope="module")
def nested_image(tmp_path_factory: pytest.TempPathFactory, debian_tar: Path) -> Path:  # noqa: F811
    """The outer container's image (Debian with python3, uidmap, slirp4netns), built once and cached."""
    key = hashlib.sha256(DOCKERFILE.read_bytes() + debian_tar.name.encode()).hexdigest()[:16]
    archive = CACHE / f"nested-builder-{key}.tar"
    if not archive.exists():
        work = tmp_path_factory.mktemp("nested-image")
        cli = Cli(work / "store")
        try:
            cli("import", str(debian_tar), "debian:bookworm")
            (work / "ctx").mkdir()
            shutil.copy(DOCKERFILE, work / "ctx" / "Dockerfile")
            cli("build", "-q", "-t", "nested-builder:v1", str(work / "ctx"), timeout=900)
            cli("save", "-o", str(archive.with_suffix(".tmp")), "nested-builder:v1")
            archive.with_suffix(".tmp").rename(archive)
        finally:
            # the apt-get step's bridge and nft table, and the store, go with this throw-away store
            network_leftovers(cli.root, cleanup=True)
            remove_tree(work)
    return archive


def test_rootless_build_inside_an_unprivileged_container(cli: Cli, nested_image: Path, rootless_code: Path,
                                                         busybox_tar: Path, workdir: Path) -> None:
    cli("load", "-i", str(nested_image))
    work = workdir / "work"
    (work / "inner").mkdir(parents=True)
    (work / "inner" / "Dockerfile").write_text(
        "FROM busybox:latest\nRUN id -u > /uid && chown 1234:2345 /uid\n")
    shutil.copy(busybox_tar, work / "busybox.tar")
    (work / "inside.sh").write_text(INSIDE)
    cli("volume", "create", "nested-store")
    mounts = ["-v", f"{VENV}:/opt/venv:ro", "-v", f"{rootless_code}:/opt/code:ro", "-v", f"{work}:/work:ro",
              "-v", "nested-store:/store"]
    done = cli("run", "--rm", "--device", "/dev/net/tun", "--security-opt", "seccomp=unconfined",
               "--security-opt", "systempaths=unconfined", *mounts,
               "nested-builder:v1", "sh", "/work/inside.sh", timeout=300)
    out = done.stdout.splitlines()
    assert len(out) == 5, done.stdout + done.stderr
    assert out[0] == "0", "RUN is root of the inner user namespace"
    assert out[1] == "1234:2345", "the inner namespace maps the container user's subordinate ids"
    assert "10.0.2.100/24" in out[2], "slirp4netns serves the inner container"
    assert out[3] == " Rootless: true"
    assert out[4] == "  Overlay: native overlayfs (userxattr)"

    # no volume: the store is on the container's own overlay root, where the kernel refuses an upper dir
    on_root = cli("run", "--rm", "--device", "/dev/net/tun", "--device", "/dev/fuse",
                  "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
                  *mounts[:-2], "nested-builder:v1", "sh", "/work/inside.sh", timeout=300)
    out = on_root.stdout.splitlines()
    assert len(out) == 5, on_root.stdout + on_root.stderr
    assert out[:2] == ["0", "1234:2345"]
    assert out[4] == "  Overlay: fuse-overlayfs", "fuse-overlayfs stands in for the refused native overlay"

    refused = cli("run", "--rm", *mounts, "nested-builder:v1", "sh", "/work/inside.sh", check=False)
    assert refused.returncode != 0
    assert "a seccomp filter forbids it (in a container: --security-opt seccomp=unconfined" in refused.stderr
