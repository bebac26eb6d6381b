"""``build --cache-to/--cache-from type=registry`` and ``build --push`` against a real distribution registry."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.builder.conftest import build_cgroups
from tests.conftest import Cli, network_leftovers
from tests.registry.conftest import Registry, free_port, start_registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")

DOCKERFILE = """\
FROM {base}
COPY hello.txt /hello.txt
RUN (date +%s%N; head -c 16 /dev/urandom | od -An -tx1) > /random
RUN cat /hello.txt /random > /both
ENV STAGE=final
CMD ["cat", "/both"]
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real distribution registry on 127.0.0.1 (plain HTTP), no auth."""
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the registry tests: quick retries, a private Docker config (never the real ~/.docker)."""
    monkeypatch.setenv("PYBUILD_REGISTRY_ATTEMPTS", "4")
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRY_DELAY", "0.01")
    monkeypatch.setenv("PYBUILD_REGISTRY_TIMEOUT", "20")
    monkeypatch.delenv("PYBUILD_INSECURE_REGISTRIES", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def _no_leftovers(*clis: Cli) -> None:
    for c in clis:
        # this test's stores only: other pybuild builds on the host may be running meanwhile
        leftovers = build_cgroups(c.root)
        assert not leftovers, f"build cgroups left behind: {leftovers}"
        owners = list((c.root / "tmp").glob("layer-*.owner"))
        assert not owners, f"snapshots left behind: {owners}"
        procs = subprocess.run(["pgrep", "-f", str(c.root)], capture_output=True, text=True).stdout.split()
        assert not procs, f"processes left behind: {procs}"


@pytest.fixture
def bcli(cli: Cli, busybox: str) -> Iterator[Cli]:
    """The CLI over a store with busybox; afterwards no build cgroup, snapshot or process remains."""
    yield cli
    _no_leftovers(cli)


@pytest.fixture
def fresh(workdir: Path) -> Iterator[Cli]:
    """The CLI on a second, empty store root (another machine)."""
    other = Cli(workdir / "root-b")
    try:
        yield other
        _no_leftovers(other)
    finally:
        network_leftovers(other.root, cleanup=True)  # the store's bridge outlives its directory


@pytest.fixture
def base(bcli: Cli, registry: Registry) -> str:
    """busybox pushed to the registry (so another store can pull the very same manifest)."""
    name = f"{registry.host}/base-{secrets.token_hex(3)}/busybox:latest"
    bcli("tag", "busybox:latest", name)
    bcli("push", "-q", name)
    return name


def _context(path: Path, base: str) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (path / "hello.txt").write_text("hello from the context\n")
    return path


def _steps(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("[", "CACHED ["))]


def _image_id(cli: Cli, name: str) -> str:
    return str(json.loads(cli("inspect", name).stdout)[0]["Id"])


@pytest.mark.slow
def test_cache_exported_by_one_store_makes_another_build_a_hit(bcli: Cli, fresh: Cli, base: str, registry: Registry,
                                                               workdir: Path) -> None:
    host = registry.host
    cache = f"{host}/cache-{secrets.token_hex(3)}:main"
    first = bcli("build", "-t", "app:a", "--cache-to", f"type=registry,ref={cache}", str(_context(workdir / "a", base)))
    assert "3 steps: 0 cached, 3 built" in first.stdout
    exported = re.search(r"^exporting cache to (\S+): (\d+) records, (\d+) blobs uploaded", first.stdout, re.M)
    assert exported is not None, first.stdout
    assert exported.group(1) == cache
    records = int(exported.group(2))
    assert records == 4  # COPY, RUN, RUN, and ENV+CMD: trailing metadata steps share one record
    assert int(exported.group(3)) == 3 + records  # 3 new layers, the records' configs (busybox's layer: mounted)

    # The cache manifest is an OCI manifest with the pybuild cache config, naming every blob it needs.
    resp = requests.get(f"http://{host}/v2/{cache.split('/', 1)[1].replace(':', '/manifests/')}",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = resp.json()
    assert manifest["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"
    assert manifest["annotations"] == {"dev.pybuild.cache.mode": "max"}
    assert len(manifest["layers"]) == 4 + records  # busybox, COPY, RUN, RUN layers + one config per record
    config = requests.get(f"http://{host}/v2/{cache.split('/', 1)[1].split(':')[0]}/blobs/"
                          f"{manifest['config']['digest']}", timeout=10).json()
    assert config["version"] == 1 and len(config["records"]) == records
    listed = {d["digest"] for d in manifest["layers"]}
    for record in config["records"]:
        assert record["config"]["digest"] in listed
        assert {d["digest"] for d in record["layers"]} <= listed
        assert len(record["layers"]) == len(record["diff_ids"])

    # Another machine: same base image (same manifest digest), another copy of the context.
    fresh("pull", base)
    ctx_b = workdir / "b"
    shutil.copytree(workdir / "a", ctx_b)
    second = fresh("build", "-t", "app:b", "--cache-from", f"type=registry,ref={cache}", str(ctx_b))
    assert f"importing cache from {cache}: {records} records ({records} new, " in second.stdout
    numbered = _steps(second.stdout)
    assert numbered[0].startswith("[1/4] FROM ")
    assert numbered[1:] == ["CACHED [2/4] COPY hello.txt /hello.txt",
                            "CACHED [3/4] RUN (date +%s%N; head -c 16 /dev/urandom | od -An -tx1) > /random",
                            "CACHED [4/4] RUN cat /hello.txt /random > /both"]
    assert "3 steps: 3 cached, 0 built" in second.stdout
    # Nothing ran: the random file is the one store A made, and the image is the same image.
    out_a = bcli("run", "--rm", "--network", "none", "app:a").stdout
    out_b = fresh("run", "--rm", "--network", "none", "app:b").stdout
    assert out_a.startswith("hello from the context\n") and len(out_a.splitlines()) >= 3
    assert out_b == out_a
    assert _image_id(fresh, "app:b") == _image_id(bcli, "app:a")
    assert fresh("system", "check").stdout.strip() == "store is consistent"

    # Importing again brings nothing new; exporting again from B uploads nothing.
    third = fresh("build", "-t", "app:b", "--cache-from", f"type=registry,ref={cache}",
                  "--cache-to", f"type=registry,ref={cache}", str(ctx_b))
    assert f"importing cache from {cache}: {records} records (0 new, 0 blobs downloaded)" in third.stdout
    assert f"exporting cache to {cache}: {records} records, 0 blobs uploaded" in third.stdout

    # The records are GC roots in B: a prune of unused images keeps them; builder prune drops them.
    fresh("rmi", "app:b")
    fresh("prune")
    fourth = fresh("build", "-t", "app:b", str(ctx_b))
    assert "3 steps: 3 cached, 0 built" in fourth.stdout


def test_cache_from_a_missing_ref_is_not_an_error(bcli: Cli, workdir: Path, registry: Registry) -> None:
    host = registry.host
    ctx = _context(workdir / "ctx", "busybox")
    result = bcli("build", "-t", "app:m", "--cache-from", f"type=registry,ref={host}/nothing-here:main",
                  "--cache-from", f"{host}/{secrets.token_hex(3)}/none:x", str(ctx))
    assert f"importing cache from {host}/nothing-here:main: not found, building without it" in result.stdout
    assert "3 steps: 0 cached, 3 built" in result.stdout
    # An unreachable cache registry is reported, and the build goes on too.
    port = free_port()
    again = bcli("build", "-t", "app:m", "--cache-from", f"type=registry,ref=127.0.0.1:{port}/c:main", str(ctx))
    assert f"[Warning] importing cache from 127.0.0.1:{port}/c:main failed, building without it" in again.stdout
    assert "3 steps: 3 cached, 0 built" in again.stdout


def test_cache_from_an_image_is_reported_and_skipped(bcli: Cli, workdir: Path, base: str) -> None:
    ctx = _context(workdir / "ctx", "busybox")
    result = bcli("build", "--cache-from", f"type=registry,ref={base}", str(ctx))
    assert "is not a pybuild build cache (its config media type is " in result.stdout
    assert "3 steps: 0 cached, 3 built" in result.stdout


@pytest.mark.slow
def test_build_push_pushes_the_image(bcli: Cli, fresh: Cli, workdir: Path, registry: Registry) -> None:
    host = registry.host
    name = f"{host}/app-{secrets.token_hex(3)}:v1"
    ctx = _context(workdir / "ctx", "busybox")
    result = bcli("build", "--push", "-t", name, str(ctx))
    pushed = re.search(r"^pushed (\S+)@(sha256:[0-9a-f]{64})$", result.stdout, re.M)
    assert pushed is not None, result.stdout
    assert pushed.group(1) == name
    local = json.loads(bcli("inspect", name).stdout)[0]
    assert pushed.group(2) == local["Manifest"]["digest"]
    seen = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{name}"],
                          capture_output=True, text=True, timeout=60)
    assert seen.returncode == 0, seen.stderr
    doc = json.loads(seen.stdout)
    assert doc["Digest"] == pushed.group(2)
    assert len(doc["Layers"]) == 4  # busybox, COPY, RUN, RUN
    fresh("pull", name)
    out_a = bcli("run", "--rm", "--network", "none", name).stdout
    assert fresh("run", "--rm", "--network", "none", name).stdout == out_a
    assert out_a.startswith("hello from the context\n")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--cache-to", "type=local,dest=x", "--cache-to type=local is not supported"),
    ("--cache-to", "type=registry,ref=127.0.0.1:5000/c:x,compression=zstd", "unknown option 'compression'"),
    ("--cache-to", "type=registry", "no ref"),
    ("--cache-to", "type=registry,ref=127.0.0.1:5000/c:x,mode=all", "invalid --cache-to mode 'all'"),
    ("--cache-to", "type=registry,ref=127.0.0.1:5000/c@sha256:" + "0" * 64, "not a digest"),
    ("--cache-from", "type=gha", "--cache-from type=gha is not supported"),
    ("--cache-from", "type=registry,ref=127.0.0.1:5000/c:x,mode=max", "unknown option 'mode'"),
    ("--cache-from", "type=registry,ref=Not A Ref", "invalid"),
])
def test_bad_cache_options_fail_before_the_build(bcli: Cli, workdir: Path, option: str, value: str,
                                                 message: str) -> None:
    ctx = _context(workdir / "ctx", "busybox")
    result = bcli("build", option, value, str(ctx), check=False)
    assert result.returncode == 1, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "[1/4]" not in result.stdout  # nothing was built
