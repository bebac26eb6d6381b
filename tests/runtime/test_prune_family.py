"""docker's prune family (container, image, volume, network, system), the image/container command groups,
run --pull, and the typo suggestions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.registry.conftest import Registry, start_registry

pytestmark = pytest.mark.slow


def _ids(cli: Cli) -> list[str]:
    return cli("ps", "-a", "-q").stdout.split()


def test_container_image_volume_network_prune(cli: Cli, busybox: str, workdir: Path) -> None:
    cli("run", "--name", "done1", "-v", "/anon", busybox, "sh", "-c", "head -c 5000 /dev/zero > /big")
    cli("run", "-d", "--name", "alive", busybox, "sleep", "30")
    try:
        kept = cli("container", "prune", input=b"n\n")
        assert kept.stdout == "WARNING! This will remove all stopped containers.\n" \
                              "Are you sure you want to continue? [y/N] "
        assert "done1" in cli("ps", "-a").stdout
        done = cli("container", "prune", "-f").stdout.splitlines()
        assert done[0] == "Deleted Containers:" and len(done[1]) == 64
        assert done[2] == "" and done[3].startswith("Total reclaimed space: 5")
        assert [line.split()[-1] for line in cli("ps", "-a").stdout.splitlines()[1:]] == ["alive"]

        cli("volume", "create", "named")
        anon = [line.split()[-1] for line in cli("volume", "ls").stdout.splitlines()[1:] if line.split()[-1] != "named"]
        vol = cli("volume", "prune", "-f").stdout.splitlines()
        assert vol[:2] == ["Deleted Volumes:", anon[0]], "anonymous and unused only"
        assert "named" in cli("volume", "ls").stdout
        assert cli("volume", "prune", "-a", "-f").stdout.splitlines()[:2] == ["Deleted Volumes:", "named"]

        cli("network", "create", "unused")
        cli("network", "create", "used")
        cli("create", "--name", "holder", "--network", "used", busybox, "true")
        net = cli("network", "prune", "-f").stdout.splitlines()
        assert net == ["Deleted Networks:", "unused", ""]
        assert "used" in cli("network", "ls").stdout

        cli("tag", busybox, "spare:v1")
        cli("build", "-q", "-t", "child:v1", str(_context(workdir, "FROM busybox:latest\nRUN echo y > /y\n")))
        cli("build", "-q", "-t", "child:v1", str(_context(workdir, "FROM busybox:latest\nRUN echo z > /z\n")))
        dangling = cli("images", "-q", "-f", "dangling=true").stdout.split()
        assert len(dangling) == 1, "the first child:v1 lost its tag to the second"
        images = cli("image", "prune", "-f").stdout.splitlines()
        assert images[0] == "Deleted Images:" and images[1].startswith("deleted: sha256:")
        assert cli("images", "-q", "-f", "dangling=true").stdout == ""
        everything = cli("image", "prune", "-a", "-f").stdout
        assert "untagged: child:v1" in everything
        kept_names = cli("images").stdout
        assert "busybox" in kept_names and "spare" in kept_names, "in use by a container: kept, every name"
    finally:
        cli("rm", "-f", "alive", "holder", check=False)


def _context(workdir: Path, dockerfile: str) -> Path:
    import secrets

    ctx = workdir / f"ctx-{secrets.token_hex(3)}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_system_prune(cli: Cli, busybox: str, workdir: Path) -> None:
    cli("run", "--name", "stopped", busybox, "true")
    cli("network", "create", "idle")
    warn = cli("system", "prune", "--volumes", input=b"\n").stdout
    assert warn == ("WARNING! This will remove:\n  - all stopped containers\n"
                    "  - all networks not used by at least one container\n"
                    "  - all anonymous volumes not used by at least one container\n"
                    "  - all dangling images\n\nAre you sure you want to continue? [y/N] ")
    out = cli("system", "prune", "-f").stdout
    assert "Deleted Containers:" in out and "Deleted Networks:\nidle\n" in out
    assert out.rstrip().splitlines()[-1].startswith("Total reclaimed space: ")
    assert cli("ps", "-a", "-q").stdout == ""
    cli("build", "-q", "-t", "c:v1", str(_context(workdir, "FROM busybox:latest\nRUN --mount=type=cache,target=/c "
                                                  "head -c 200000 /dev/zero > /c/blob && echo x > /x\n")))
    df = cli("system", "df").stdout
    assert "Build Cache" in df
    out = cli("system", "prune", "-a", "-f").stdout
    assert "untagged: c:v1" in out and "untagged: busybox:latest" in out
    assert "Deleted build cache objects:" in out
    total = out.rstrip().splitlines()[-1]
    assert total.startswith("Total reclaimed space: ") and not total.endswith(" 0B"), total


def test_builder_prune_asks_and_reports_what_it_freed(cli: Cli, busybox: str, workdir: Path) -> None:
    ctx = _context(workdir, "FROM busybox:latest\nRUN --mount=type=cache,target=/c "
                            "head -c 3000000 /dev/zero > /c/blob && head -c 2000000 /dev/zero > /layer\n")
    cli("build", "-q", str(ctx))  # untagged: a dangling image, which keeps its 2 MB layer
    kept = cli("builder", "prune", input=b"n\n").stdout
    assert kept == "WARNING! This will remove all build cache.\nAre you sure you want to continue? [y/N] "
    assert "CACHED" in cli("build", "--progress", "plain", str(ctx)).stdout
    recent = cli("builder", "prune", "-f", "--filter", "until=1h").stdout.splitlines()
    assert recent == ["Deleted build cache objects: 0", "Total reclaimed space: 0B"], "used within the hour: kept"
    bad = cli("builder", "prune", "-f", "--filter", "dangling=true", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("pybuild: error: ")
    out = cli("builder", "prune", "-f").stdout.splitlines()
    assert out[0] == "Deleted build cache objects: 1"
    size = out[1].removeprefix("Total reclaimed space: ")
    assert size.endswith("MB") and 3.0 <= float(size[:-2]) < 3.1, out  # the cache mount; the image keeps its layer
    assert "CACHED" not in cli("build", "--progress", "plain", str(ctx)).stdout


def test_groups_typos_and_run_pull(cli: Cli, busybox: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert cli("image", "ls").stdout == cli("images").stdout
    assert cli("image", "list", "-q").stdout == cli("images", "-q").stdout
    cli("container", "run", "--name", "g", busybox, "true")
    assert cli("container", "ls", "-a", "-q").stdout == cli("ps", "-a", "-q").stdout
    cli("container", "rm", "g")
    bad = cli("container", "lst", check=False)
    assert bad.returncode == 1 and "did you mean 'list' or 'ls'?" in bad.stderr
    far = cli("frobnicate", check=False)
    assert far.returncode == 1 and "did you mean" not in far.stderr
    near = cli("imagess", check=False)
    assert "did you mean 'images'?" in near.stderr

    registry: Registry = start_registry(tmp_path_factory.mktemp("pull-registry"))
    try:
        ref = f"{registry.host}/parity/bb:v1"
        cli("tag", busybox, ref)
        cli("push", "-q", ref)
        cli("rmi", ref)
        never = cli("run", "--rm", "--pull", "never", ref, "true", check=False)
        assert never.returncode == 125
        ran = cli("run", "--rm", "--network", "none", ref, "echo", "pulled")
        assert ran.stdout == "pulled\n"
        assert ran.stderr.startswith(f"Unable to find image '{ref}' locally\n")
        again = cli("run", "--rm", "--network", "none", ref, "true")
        assert "Unable to find" not in again.stderr, "present now: no pull"
        cli("create", "--pull", "always", "--name", "pa", ref, "true")
        cli("rm", "pa")
        bad = cli("run", "--pull", "sometimes", ref, "true", check=False)
        assert bad.returncode == 125 and 'invalid pull option: "sometimes"' in bad.stderr
        missing = cli("run", "--rm", f"{registry.host}/parity/none:v1", "true", check=False)
        assert missing.returncode == 125 and len(missing.stderr.strip().splitlines()) >= 1
    finally:
        registry.stop()
    assert ref in json.loads(cli("inspect", ref).stdout)[0]["RepoTags"]
