"""Faults between pybuild and the registry: broken transfers, 5xx, 429, corruption, redirects, kills."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pybuild.store.root import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root")


@pytest.fixture
def pushed(cli: Any, busybox: str, registry: Any, repo: str) -> dict[str, Any]:
    """busybox pushed to the module's registry; its name, layer digest and image ID."""
    name = f"{registry.host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    image = Store.open(cli.root).images.resolve(busybox)
    return {"repo": repo, "layer": image.manifest.layers[0].digest, "size": image.manifest.layers[0].size,
            "id": image.id, "manifest": image.manifest_digest}


def _image_id(cli: Any, name: str) -> str:
    return str(json.loads(cli("inspect", name).stdout)[0]["Id"])


def _assert_clean_and_empty(cli: Any, layer: str) -> None:
    # Any command but `system check` (which reports leftovers instead of removing them) cleans on open.
    assert cli("images", "-q").stdout.strip() == ""
    assert cli("system", "check").stdout.strip() == "store is consistent"
    store = Store.open(cli.root)
    assert not store.blobs.exists(layer)
    assert not [p for p in store.tmp.iterdir() if p.name.startswith("blob-")]


@pytest.mark.slow
def test_dropped_connection_mid_blob_is_resumed_with_range(other_cli: Any, registry: Any, pushed: dict[str, Any],
                                                            make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    proxy.add(lambda r: r.method == "GET" and pushed["layer"] in r.path, "drop")
    other_cli("pull", f"{proxy.host}/{pushed['repo']}:v1")
    gets = proxy.requests("GET", pushed["layer"])
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={pushed['size'] // 2}-"
    assert _image_id(other_cli, f"{proxy.host}/{pushed['repo']}:v1") == pushed["id"]
    assert other_cli("system", "check").stdout.strip() == "store is consistent"


@pytest.mark.slow
def test_dropped_config_and_manifest_bodies_are_fetched_again(other_cli: Any, registry: Any,
                                                               pushed: dict[str, Any], make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    proxy.add(lambda r: r.method == "GET" and "/manifests/" in r.path, "drop")
    proxy.add(lambda r: r.method == "GET" and "/blobs/" in r.path and pushed["layer"] not in r.path, "drop")
    other_cli("pull", f"{proxy.host}/{pushed['repo']}:v1")
    assert len(proxy.requests("GET", "/manifests/")) == 2
    assert len(proxy.requests("GET", "/blobs/")) == 3  # the config twice, the layer once
    assert _image_id(other_cli, f"{proxy.host}/{pushed['repo']}:v1") == pushed["id"]


@pytest.mark.slow
def test_server_errors_are_retried_for_pull_and_push(cli: Any, other_cli: Any, busybox: str, registry: Any,
                                                     repo: str, make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)
    proxy.add(lambda r: True, "status", times=3, status=500)
    proxy.add(lambda r: r.method == "PUT" and "/blobs/uploads/" in r.path, "status", times=1, status=502)
    proxy.add(lambda r: r.method == "PUT" and "/manifests/" in r.path, "status", times=1, status=503)
    cli("push", name)
    assert len(proxy.requests("PUT", "/manifests/")) == 2
    proxy.clear()
    proxy.add(lambda r: True, "status", times=3, status=500)
    proxy.add(lambda r: "/blobs/" in r.path, "status", times=2, status=504)
    other_cli("pull", name)
    assert _image_id(other_cli, name) == _image_id(cli, busybox)


@pytest.mark.slow
def test_chunked_upload_survives_a_failed_patch(cli: Any, other_cli: Any, busybox: str, registry: Any, repo: str,
                                                make_proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_PUSH_CHUNK_THRESHOLD", "1000")
    monkeypatch.setenv("PYBUILD_PUSH_CHUNK_SIZE", str(256 << 10))
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)
    patches = [0]

    def second_patch(r: Any) -> bool:
        if r.method != "PATCH":
            return False
        patches[0] += 1
        return patches[0] == 2

    proxy.add(second_patch, "status", times=1, status=500)
    cli("push", name)
    other_cli("pull", name)
    assert _image_id(other_cli, name) == _image_id(cli, busybox)


@pytest.mark.slow
def test_429_retry_after_is_honoured(other_cli: Any, registry: Any, pushed: dict[str, Any], make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    proxy.add(lambda r: "/manifests/" in r.path, "status", times=1, status=429, headers={"Retry-After": "1"})
    start = time.monotonic()
    other_cli("pull", f"{proxy.host}/{pushed['repo']}:v1")
    assert time.monotonic() - start >= 1.0
    assert len(proxy.requests("GET", "/manifests/")) == 2


def test_persistent_503_gives_a_clear_error(other_cli: Any, registry: Any, pushed: dict[str, Any],
                                            make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    proxy.add(lambda r: True, "status", times=100, status=503)
    result = other_cli("pull", f"{proxy.host}/{pushed['repo']}:v1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"pybuild: error: pull {proxy.host}/{pushed['repo']}:v1: GET manifest: "
                                     "503 Service Unavailable after 4 attempts: UNKNOWN: injected 503")
    assert len(proxy.log) == 4


def test_corrupted_blob_never_enters_the_store(other_cli: Any, registry: Any, pushed: dict[str, Any],
                                              make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    proxy.add(lambda r: r.method == "GET" and pushed["layer"] in r.path, "corrupt")
    result = other_cli("pull", f"{proxy.host}/{pushed['repo']}:v1", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith(f"pybuild: error: pull {proxy.host}/{pushed['repo']}:v1: ")
    assert f"blob digest mismatch: expected {pushed['layer']}" in err
    _assert_clean_and_empty(other_cli, pushed["layer"])


@pytest.mark.slow
def test_failed_pull_leaves_the_store_consistent_and_the_next_pull_finishes(
        other_cli: Any, registry: Any, pushed: dict[str, Any], make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{pushed['repo']}:v1"
    proxy.add(lambda r: pushed["layer"] in r.path, "status", times=100, status=500)
    result = other_cli("pull", name, check=False)
    assert result.returncode == 1
    assert f"GET blob {pushed['layer'][7:19]}: 500 Internal Server Error after 4 attempts" in result.stderr
    _assert_clean_and_empty(other_cli, pushed["layer"])
    proxy.clear()
    other_cli("pull", name)
    assert _image_id(other_cli, name) == pushed["id"]


@pytest.mark.slow
def test_killed_pull_leaves_the_store_consistent_and_the_next_pull_finishes(
        other_cli: Any, registry: Any, pushed: dict[str, Any], make_proxy: Any) -> None:
    proxy = make_proxy(registry.host)
    name = f"{proxy.host}/{pushed['repo']}:v1"
    proxy.add(lambda r: r.method == "GET" and pushed["layer"] in r.path, "stall")
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(other_cli.root), "pull", name],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proxy.stalled.wait(30), "the pull never reached the layer"
        store = Store.open(other_cli.root)
        partial = [p for p in store.tmp.iterdir() if p.name.startswith("blob-")]
        assert partial  # the killed writer's temp blob (its bytes may still be in its buffer)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.release.set()
    _assert_clean_and_empty(other_cli, pushed["layer"])  # the next open removed the killed writer's temp blob
    other_cli("pull", name)
    assert _image_id(other_cli, name) == pushed["id"]


@pytest.mark.slow
def test_redirected_blob_get_carries_no_credentials(cli: Any, other_cli: Any, busybox: str, basic_registry: Any,
                                                    repo: str, make_proxy: Any, make_storage: Any,
                                                    docker_config: Path, user_password: tuple[str, str]) -> None:
    docker_config.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(":".join(user_password).encode()).decode()
    proxy = make_proxy(basic_registry.host)
    (docker_config / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": auth}}}))
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    storage = make_storage(Store.open(cli.root).blobs.dir)
    proxy.clear()
    proxy.add(lambda r: r.method == "GET" and "/blobs/sha256:" in r.path, "redirect", times=10, to=storage.url)
    other_cli("pull", name)
    assert _image_id(other_cli, name) == _image_id(cli, busybox)
    blob_gets = proxy.requests("GET", "/blobs/sha256:")
    assert len(blob_gets) == 2
    assert all(r.headers.get("authorization", "").startswith("Basic ") for r in blob_gets)
    assert len(storage.seen) == 2
    assert not [h for h in storage.seen if "authorization" in h]
