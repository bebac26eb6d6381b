"""Push and pull against a real distribution registry (no auth), through a recording proxy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from pybuild.registry.client import RegistryClient
from pybuild.store import reference as _reference
from pybuild.store.model import OCI_INDEX, OCI_LAYER_ZSTD, Descriptor, Index, Manifest, Platform
from pybuild.store.root import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root")


def _inspect(cli: Any, name: str) -> dict[str, Any]:
    doc = json.loads(cli("inspect", name).stdout)[0]
    assert isinstance(doc, dict)
    return doc


def _uploads(proxy: Any) -> list[Any]:
    return [r for r in proxy.log if r.method in ("PUT", "PATCH") and "/blobs/uploads/" in r.path]


@pytest.mark.slow
def test_push_then_pull_gives_the_same_image(cli: Any, other_cli: Any, busybox: str, registry: Any, repo: str,
                                             make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)
    out = cli("push", name).stdout.splitlines()
    assert out[0] == f"The push refers to repository [{proxy.host}/{repo}]"
    pushed = _inspect(cli, busybox)
    digest_line = out[-1]
    assert digest_line.startswith(f"v1: digest: {pushed['Manifest']['digest']} size: ")
    # monolithic: one PUT with the whole blob for each of layer and config, no PATCH
    uploads = _uploads(proxy)
    assert [r.method for r in uploads] == ["PUT", "PUT"]
    assert all("digest=sha256:" in r.path and r.body_len > 0 for r in uploads)

    proxy.clear()
    result = other_cli("pull", name)
    lines = result.stdout.splitlines()
    assert lines[0] == f"v1: Pulling from {repo}"
    assert f"Digest: {pushed['Manifest']['digest']}" in lines
    assert f"Status: Downloaded newer image for {name}" in lines
    assert lines[-1] == name
    pulled = _inspect(other_cli, name)
    assert pulled["Id"] == pushed["Id"]
    assert pulled["Manifest"]["digest"] == pushed["Manifest"]["digest"]
    assert len([r for r in proxy.log if r.method == "GET" and "/blobs/" in r.path]) == 2  # config, layer
    assert other_cli("system", "check").stdout.strip() == "store is consistent"

    # Again: nothing is downloaded, only the manifest looked at.
    proxy.clear()
    again = other_cli("pull", name).stdout.splitlines()
    assert f"Status: Image is up to date for {name}" in again
    assert any(line.endswith(": Already exists") for line in again)
    assert [r.method for r in proxy.log] == ["GET"] and "/manifests/v1" in proxy.log[0].path

    # By digest, into a third store: tagged name@digest.
    third = type(cli)(cli.root.parent / "root3")
    by_digest = f"{proxy.host}/{repo}@{pushed['Manifest']['digest']}"
    lines = third("pull", by_digest).stdout.splitlines()
    assert lines[0] == f"{pushed['Manifest']['digest']}: Pulling from {repo}"
    assert lines[-1] == by_digest
    assert _inspect(third, by_digest)["Id"] == pushed["Id"]


def test_second_push_skips_what_the_registry_has(cli: Any, busybox: str, registry: Any, repo: str,
                                                 make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    proxy.clear()
    out = cli("push", name).stdout
    assert ": Layer already exists" in out
    assert not _uploads(proxy)
    assert not proxy.requests("POST")
    assert len(proxy.requests("HEAD", "/blobs/")) == 2
    assert len(proxy.requests("PUT", "/manifests/v1")) == 1


@pytest.mark.slow
def test_cross_repository_mount(cli: Any, other_cli: Any, busybox: str, registry: Any, repo: str,
                                make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    first, second = f"{proxy.host}/{repo}-a:v1", f"{proxy.host}/{repo}-b:v1"
    cli("tag", busybox, first)
    cli("push", first)
    cli("tag", busybox, second)
    proxy.clear()
    out = cli("push", second).stdout
    assert f"Mounted from {repo}-a" in out
    mounts = proxy.requests("POST", "mount=")
    assert len(mounts) == 2 and all(f"from={repo}-a" in r.path for r in mounts)
    assert not _uploads(proxy)

    # A pulled image remembers where its blobs came from: pushing it elsewhere mounts them too.
    other_cli("pull", first)
    third = f"{proxy.host}/{repo}-c:v1"
    other_cli("tag", first, third)
    proxy.clear()
    out = other_cli("push", third).stdout
    assert "Mounted from" in out
    assert not _uploads(proxy)
    blob_sources = json.loads((other_cli.root / "registry" / "blob-sources.json").read_text())
    assert any(f"{proxy.host}/{repo}-c" in repos for repos in blob_sources["blobs"].values())


@pytest.mark.slow
def test_chunked_upload(cli: Any, other_cli: Any, busybox: str, registry: Any, repo: str, make_proxy: Any,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_PUSH_CHUNK_THRESHOLD", "1000")
    monkeypatch.setenv("PYBUILD_PUSH_CHUNK_SIZE", str(256 << 10))
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    patches = proxy.requests("PATCH")
    layer_size = _inspect(cli, busybox)["Size"]
    assert len(patches) >= layer_size // (256 << 10)
    ranges = [r.headers["content-range"] for r in patches]
    assert ranges[0] == f"0-{(256 << 10) - 1}"
    assert all(r.body_len <= 256 << 10 for r in patches)
    # the layer is closed by an empty PUT; the config (smaller than the threshold) goes in one PUT
    config_size = Store.open(cli.root).images.resolve(busybox).manifest.config.size
    final_puts = [r for r in _uploads(proxy) if r.method == "PUT"]
    assert sorted(r.body_len for r in final_puts) == [0, config_size]
    other_cli("pull", name)
    assert _inspect(other_cli, name)["Id"] == _inspect(cli, busybox)["Id"]


@pytest.mark.slow
def test_zstd_recompression(cli: Any, other_cli: Any, busybox: str, registry: Any, repo: str) -> None:
    name = f"{registry.host}/{repo}:zstd"
    cli("tag", busybox, name)
    out = cli("push", "--compression", "zstd", name).stdout
    digest = out.splitlines()[-1].split()[2]
    original = _inspect(cli, busybox)
    assert digest != original["Manifest"]["digest"]
    # the recompressed image is recorded locally, with the same config
    store = Store.open(cli.root)
    recorded = store.images.get(digest)
    assert recorded.id == original["Id"]
    assert [d.media_type for d in recorded.manifest.layers] == [OCI_LAYER_ZSTD]

    other_cli("pull", name)
    pulled = _inspect(other_cli, name)
    assert pulled["Id"] == original["Id"]
    assert pulled["Manifest"]["digest"] == digest
    mounted = Path(other_cli("mount", name).stdout.strip())
    try:
        assert (mounted / "bin" / "busybox").is_file()
    finally:
        other_cli("umount", name)


@pytest.mark.slow
def test_pull_picks_the_platform_from_an_index(cli: Any, other_cli: Any, busybox: str, registry: Any,
                                               repo: str) -> None:
    name = f"{registry.host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    store = Store.open(cli.root)
    image = store.images.resolve(name)
    size = store.blobs.size(image.manifest_digest)
    index = Index((Descriptor(image.manifest.media_type, image.manifest_digest, size,
                              platform=Platform("linux", "amd64")),
                   Descriptor(image.manifest.media_type, image.manifest_digest, size,
                              platform=Platform("linux", "riscv64"))), OCI_INDEX)
    with RegistryClient(registry.host, push=True) as client:
        index_digest = client.put_manifest(repo, "multi", index.to_bytes(), OCI_INDEX)
    if Platform.host().architecture != "amd64":
        pytest.skip("the index names amd64")
    lines = other_cli("pull", f"{registry.host}/{repo}:multi").stdout.splitlines()
    assert f"Digest: {index_digest}" in lines
    assert _inspect(other_cli, f"{registry.host}/{repo}:multi")["Manifest"]["digest"] == image.manifest_digest
    # the index blob is kept too, also through garbage collection
    assert Store.open(other_cli.root).blobs.exists(index_digest)
    other_cli("prune")
    assert Store.open(other_cli.root).blobs.exists(index_digest)

    bad = other_cli("pull", "--platform", "linux/s390x", f"{registry.host}/{repo}:multi", check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("pybuild: error: pull ")
    assert "no matching manifest for linux/s390x" in bad.stderr
    assert "linux/amd64, linux/riscv64" in bad.stderr


def test_manifest_verified_against_the_registry_digest(registry: Any, repo: str, cli: Any, busybox: str) -> None:
    name = f"{registry.host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    with RegistryClient(registry.host) as client:
        fetched = client.get_manifest(repo, "v1")
        assert Manifest.from_bytes(fetched.data).layers
        assert client.head_manifest(repo, "v1") == fetched.digest
        assert client.blob_exists(repo, "sha256:" + "0" * 64) is None


# ---- bad input: one line, exit 1, no traceback ----------------------------------------------


def _one_line_error(result: Any) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pybuild: error: ")
    assert "Traceback" not in result.stderr
    return str(lines[0])


def test_invalid_reference(cli: Any) -> None:
    line = _one_line_error(cli("pull", "Not/Valid:ref!", check=False))
    assert "invalid reference format" in line


def test_unknown_tag_and_repository(cli: Any, busybox: str, registry: Any, repo: str) -> None:
    cli("tag", busybox, f"{registry.host}/{repo}:v1")
    cli("push", f"{registry.host}/{repo}:v1")
    line = _one_line_error(cli("pull", f"{registry.host}/{repo}:nope", check=False))
    assert line.startswith(f"pybuild: error: pull {registry.host}/{repo}:nope: GET manifest: 404 Not Found: "
                           "MANIFEST_UNKNOWN: manifest unknown")
    line = _one_line_error(cli("pull", f"{registry.host}/nobody/{repo}", check=False))
    assert "404 Not Found: MANIFEST_UNKNOWN: manifest unknown" in line  # distribution 2.8 says so for a repo too
    line = _one_line_error(cli("push", f"{registry.host}/{repo}:notlocal", check=False))
    assert "no such image" in line


def test_unreachable_registry(cli: Any, closed_port: int) -> None:
    port = closed_port
    result = cli("pull", f"127.0.0.1:{port}/app:v1", check=False)
    line = _one_line_error(result)
    assert line == (f"pybuild: error: pull 127.0.0.1:{port}/app:v1: GET manifest: cannot reach 127.0.0.1:{port}: "
                    "connection refused after 4 attempts")


def test_library_api_pull_and_push(store: Any, registry: Any, repo: str, cli: Any, busybox: str) -> None:
    from pybuild.registry import pull_image, push_image

    ref = f"{registry.host}/{repo}:lib"
    digest = push_image(store, busybox, ref)
    assert digest == store.images.resolve(busybox).manifest_digest
    assert requests.get(f"http://{registry.host}/v2/{repo}/tags/list", timeout=5).json()["tags"] == ["lib"]
    fresh = Store.open(store.root.parent / "root-lib")
    image = pull_image(fresh, _reference.parse(ref))
    assert image.manifest_digest == digest
    assert fresh.images.resolve(ref).id == image.id
