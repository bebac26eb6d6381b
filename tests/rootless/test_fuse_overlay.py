"""A rootless store on fuse-overlayfs, the overlay podman and buildah fall back to where the kernel's is refused.

Chosen here with ``--storage-opt overlay.mount_program=`` (podman's option);
``test_nested.py`` meets the real refusal (a store on a container's overlay
root). The daemon of each mount runs outside every namespace that holds the
mount, so nothing of it outlives its users: ``clean_user`` checks no process
(no fuse-overlayfs) and no mount is left after each test.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.rootless.conftest import User

pytestmark = pytest.mark.slow

FUSE = "overlay.mount_program=/usr/bin/fuse-overlayfs"

DOCKERFILE = """\
FROM busybox:latest
COPY hello.txt /hello.txt
RUN chown 1234:2345 /hello.txt && rm /bin/vi && mkdir -p /o/a && touch /o/a/f
RUN rm -rf /o && mkdir -p /o/b && echo new > /o/b/g && id -u > /uid
"""


def _context(user: User, name: str) -> Path:
    ctx = user.home / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    os.utime(ctx / "hello.txt", (1_600_000_000, 1_600_000_000))
    return user.give(ctx)


def test_build_and_run_on_fuse_overlayfs_make_the_native_image(clean_user: User, cli: Cli, busybox: str) -> None:
    user = clean_user
    fuse_root, native_root = user.home / "fuse-store", user.home / "native-store"
    base = user.home / "base.tar"
    cli("save", "-o", str(base), busybox)
    user.give(base)
    user.run("--storage-opt", FUSE, "--root", str(fuse_root), "load", "-i", str(base))
    assert (fuse_root / "mount-program").read_text() == "fuse-overlayfs"
    info = user.run("--root", str(fuse_root), "info").stdout
    assert "Mount Program: /usr/bin/fuse-overlayfs" in info and "Native Overlay Diff: false" in info
    assert "Overlay: fuse-overlayfs" in info

    ctx = _context(user, "app")
    user.run("--root", str(fuse_root), "build", "-q", "-t", "app", str(ctx), SOURCE_DATE_EPOCH="1700000000")
    out = user.run("--root", str(fuse_root), "run", "--rm", "app", "sh", "-c",
                   "cat /uid; stat -c %u:%g /hello.txt; ls /bin/vi 2>&1; ls -R /o").stdout.splitlines()
    assert out[0] == "0" and out[1] == "1234:2345"
    assert "No such file" in out[2], "the whiteout of /bin/vi holds"
    assert out[3:] == ["/o:", "b", "", "/o/b:", "g"], "the recreated /o is opaque: /o/a is gone"

    user.run("--root", str(native_root), "load", "-i", str(base))
    assert not (native_root / "mount-program").exists()
    user.run("--root", str(native_root), "build", "-q", "-t", "app", str(ctx), SOURCE_DATE_EPOCH="1700000000")
    on_fuse = json.loads(user.run("--root", str(fuse_root), "inspect", "app").stdout)[0]
    on_native = json.loads(user.run("--root", str(native_root), "inspect", "app").stdout)[0]
    assert on_fuse["RootFS"]["Layers"] == on_native["RootFS"]["Layers"], "the same layers, byte for byte"
    assert on_fuse["Id"] == on_native["Id"]


def test_detached_container_on_fuse_overlayfs(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "fuse-svc"
    user.run("--storage-opt", FUSE, "--root", str(root), "import", str(user_busybox), "busybox:latest")
    user.run("--root", str(root), "run", "-d", "--name", "svc", "--network", "none", "busybox:latest",
             "sh", "-c", "echo up > /state; exec sleep 60")
    try:
        deadline = time.monotonic() + 10
        while user.run("--root", str(root), "exec", "svc", "cat", "/state", check=False).stdout != "up\n":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert not user.mounts_in_namespace(root), "the rootfs is mounted in the container's namespace only"
        user.run("--root", str(root), "stop", "-t", "1", "svc")
        user.run("--root", str(root), "commit", "svc", "kept")
    finally:
        user.run("--root", str(root), "rm", "-f", "svc", check=False)
    assert user.run("--root", str(root), "run", "--rm", "kept", "cat", "/state").stdout == "up\n"


def test_killed_build_leaves_no_fuse_daemon(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "fuse-kill"
    user.run("--storage-opt", FUSE, "--root", str(root), "import", str(user_busybox), "busybox:latest")
    ctx = user.home / "slow"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN echo $((6*7))-running && sleep 60\n")
    user.give(ctx)
    proc = user.popen("--root", str(root), "build", str(ctx))
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = b""
    while b"42-running" not in seen:  # the step's output, not its header
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        seen += proc.stdout.read1(4096)  # type: ignore[attr-defined]
    assert any("fuse-overlayfs" in p for p in user.processes()), "the step's rootfs is served by fuse-overlayfs"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not user.settle(), "the daemon ends with the last namespace that held its mount"
    user.run("--root", str(root), "images")
    assert "store is consistent" in user.run("--root", str(root), "system", "check").stdout


def test_mount_program_of_an_existing_store_or_as_root_is_refused(clean_user: User, user_busybox: Path,
                                                                  cli: Cli) -> None:
    user = clean_user
    root = user.home / "native-only"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    done = user.run("--storage-opt", FUSE, "--root", str(root), "images", check=False)
    assert done.returncode == 1
    assert done.stderr.startswith(f"pybuild: error: store {root} was made for the kernel overlay;")
    assert len(done.stderr.strip().splitlines()) == 1
    bad = user.run("--storage-opt", "overlay.size=10G", "images", check=False)
    assert bad.returncode != 0 and "unknown storage option 'overlay.size=10G'" in bad.stderr
    as_root = cli("--storage-opt", FUSE, "--root", str(user.home / "root-store"), "images", check=False)
    assert as_root.returncode == 1 and "overlay.mount_program is for rootless stores" in as_root.stderr
