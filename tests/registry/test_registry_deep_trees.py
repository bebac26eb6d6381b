"""Pull of a 5,000-deep layer, and of a gzip bomb under ``PYBUILD_MAX_LAYER_SIZE`` (issue 14, items 3 and 6)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from pybuild.store.model import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Platform
from pybuild.store.root import Store
from tests.store.test_deep_trees import (
    DEPTH,
    LEAF,
    deep_layer_tar,
    deep_shape,
    docker_save_tar,
    gzip_bomb,
    sha,
    store_is_clean,
    top_diff,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root")


def _upload(host: str, repo: str, data: bytes) -> str:
    """A monolithic blob upload straight to the registry (POST, then PUT with the digest)."""
    digest = sha(data)
    start = requests.post(f"http://{host}/v2/{repo}/blobs/uploads/", timeout=30)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    done = requests.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert done.status_code == 201, done.text
    return digest


@pytest.mark.slow
def test_push_and_pull_of_a_5000_deep_layer(cli: Any, other_cli: Any, registry: Any, repo: str,
                                            workdir: Path) -> None:
    layer = deep_layer_tar()
    archive = workdir / "deep.tar"
    name = f"{registry.host}/{repo}:deep"
    docker_save_tar(archive, layer, sha(layer), name)
    cli("load", "-i", str(archive))
    cli("push", name)
    other_cli("pull", name)
    store = Store.open(other_cli.root)
    assert deep_shape(top_diff(store, name)) == (DEPTH, LEAF)
    assert "store is consistent" in other_cli("system", "check").stdout
    other_cli("rmi", name)
    other_cli("prune")
    store_is_clean(Store.open(other_cli.root))


def test_pull_of_a_gzip_bomb_is_refused_past_the_limit(cli: Any, registry: Any, repo: str) -> None:
    bomb = io.BytesIO()
    gzip_bomb(bomb)
    blob = bomb.getvalue()
    diff_id = sha(b"never computed: the apply stops at the limit")
    config = json.dumps({"architecture": Platform.host().architecture, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    layer_digest = _upload(registry.host, repo, blob)
    config_digest = _upload(registry.host, repo, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(blob)}]})
    put = requests.put(f"http://{registry.host}/v2/{repo}/manifests/bomb", data=manifest.encode(),
                       headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert put.status_code == 201, put.text

    result = cli("pull", f"{registry.host}/{repo}:bomb", check=False, env={"PYBUILD_MAX_LAYER_SIZE": "100m"})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"pybuild: error: pull {registry.host}/{repo}:bomb: "), error
    assert (f"layer 1 ({layer_digest.split(':')[1][:12]}): layer {diff_id} is larger than "
            "PYBUILD_MAX_LAYER_SIZE (100 MiB) uncompressed") in error
    store = Store.open(cli.root)
    store_is_clean(store)
    assert store.images.refs() == {}
