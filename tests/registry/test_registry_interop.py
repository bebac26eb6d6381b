"""Other tools and pybuild through a real registry: skopeo/umoci read what pybuild pushed, and pybuild
runs what buildah pushed."""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pybuild.store.root import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store and containers need root")


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def _run(*args: str | Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr}{proc.stdout}"
    return proc.stdout


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_and_umoci_read_what_pybuild_pushed(cli: Any, busybox: str, registry: Any, repo: str, workdir: Path,
                                                   compression: str) -> None:
    _need("skopeo", "umoci")
    name = f"{registry.host}/{repo}:y"
    cli("tag", busybox, name)
    cli("push", "--compression", compression, name)
    layout = workdir / "oci"
    _run("skopeo", "copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:y")
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    assert manifest["layers"][0]["mediaType"].endswith("+" + compression)
    if compression == "zstd":
        return  # Debian's umoci 0.4 cannot read zstd layers; skopeo fetched and verified them
    bundle = workdir / "bundle"
    _run("umoci", "unpack", "--image", f"{layout}:y", bundle)
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "busybox"


def test_pybuild_runs_what_buildah_pushed(cli: Any, store: Any, registry: Any, repo: str, workdir: Path,
                                          docker_config: Path) -> None:
    _need("buildah")
    docker_config.mkdir(parents=True, exist_ok=True)
    (docker_config / "config.json").write_text("{}")  # buildah insists on the file DOCKER_CONFIG names
    from pybuild.linux import mount as _mount
    from pybuild.runtime.process import ExitStatus, spawn
    from pybuild.runtime.spec import ContainerSpec, ProcessSpec

    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    rootfs = workdir / "ctx"
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (rootfs / sub).mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    (rootfs / "hello.sh").write_text("#!/bin/busybox sh\necho \"hello from buildah: $(/bin/busybox uname -s)\"\n")
    (rootfs / "hello.sh").chmod(0o755)
    b = ["buildah", "--root", str(workdir / "buildah-root"), "--runroot", str(workdir / "buildah-run"),
         "--storage-driver", "vfs"]
    try:
        ctr = _run(*b, "from", "scratch").strip()
        _run(*b, "copy", ctr, f"{rootfs}/", "/")
        _run(*b, "config", "--cmd", '["/hello.sh"]', ctr)
        _run(*b, "commit", "--format", "oci", ctr, "bimg")
        _run(*b, "push", "--tls-verify=false", "bimg", f"docker://{registry.host}/{repo}:1")
    finally:
        subprocess.run([*b, "rm", "--all"], capture_output=True, timeout=60)
        subprocess.run(["umount", "-R", str(workdir / "buildah-root")], capture_output=True, timeout=60)

    cli("pull", f"{registry.host}/{repo}:1")
    fresh = Store.open(store.root)
    image = fresh.images.resolve(f"{registry.host}/{repo}:1")
    assert image.config.config.cmd == ("/hello.sh",)
    assert fresh.check().ok

    name = "ctr-" + secrets.token_hex(6)
    rw = fresh.layers.create_rw(name, image.top_chain_id)
    merged: Path | None = None
    try:
        merged = fresh.layers.mount_rw(rw)
        os.chmod(merged, 0o755)
        r, w = os.pipe()
        try:
            spec = ContainerSpec(merged, ProcessSpec(tuple(image.config.config.cmd or ())), hostname="pybuild-test")
            proc = spawn(spec, stdout=w, stderr=w, timeout=20)
        finally:
            os.close(w)
        try:
            out = b""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                out += chunk
            status = proc.wait(timeout=10)
        finally:
            os.close(r)
            proc.close()
        assert status == ExitStatus(0), out
        assert out.decode() == "hello from buildah: Linux\n"
    finally:
        if merged is not None and _mount.is_mounted(merged):
            _mount.umount(merged)
        fresh.layers.remove_rw(name)
