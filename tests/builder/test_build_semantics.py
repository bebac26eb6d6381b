"""Build semantics users met in real Dockerfiles (issue 11): each case failed before its fix.

RUN --mount targets relative to WORKDIR, cache mounts seeded from=, WORKDIR
through a dangling symlink, RUN --network=default, stage-scoped ARGs in
--from, --label KEY, required secrets and the cache, miss reasons.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builder.test_build import inspect, write_context
from tests.conftest import Cli


@pytest.fixture
def ctx(workdir: Path) -> Path:
    path = workdir / "ctx"
    path.mkdir()
    return path


def _sh(cli: Cli, image: str, script: str) -> str:
    return cli("run", "--rm", "--network", "none", image, "sh", "-c", script).stdout


# ---------------------------------------------------------------------------- RUN --mount targets


@pytest.mark.slow
def test_relative_mount_targets_are_joined_to_workdir(bcli: Cli, ctx: Path, workdir: Path) -> None:
    """Docker's guides: WORKDIR /src, then --mount=type=bind,source=go.mod,target=go.mod and target=."""
    secret = workdir / "tok"
    secret.write_text("t0k3n")
    df = """\
FROM busybox
WORKDIR /src
RUN --mount=type=bind,source=go.mod,target=go.mod cat /src/go.mod > /gomod && ! test -e /go.mod
RUN --mount=type=bind,target=. cat main.txt > /main && ! test -e /main.txt && pwd > /pwd
RUN --mount=type=cache,target=cache echo cached > cache/f && test -f /src/cache/f && ! test -e /cache
RUN --mount=type=tmpfs,target=tmp mount | grep -q ' /src/tmp type tmpfs' && echo ok > /tmpfs
RUN --mount=type=secret,id=tok,target=tok test "$(cat /src/tok)" = t0k3n && echo ok > /secret
WORKDIR /src/sub
RUN --mount=type=bind,source=go.mod,target=../up/go.mod cat /src/up/go.mod > /up
"""
    write_context(ctx, {"Dockerfile": df, "go.mod": "module example.com/app\n", "main.txt": "main\n"})
    bcli("build", "-t", "rel:v1", "--network", "none", "--secret", f"id=tok,src={secret}", str(ctx))
    out = _sh(bcli, "rel:v1", "cat /gomod /main /pwd /tmpfs /secret /up; ls -A /src")
    assert out.splitlines() == ["module example.com/app", "main", "/src", "ok", "ok", "module example.com/app",
                                "sub"]  # no mount stub (go.mod, cache, tmp, tok, up) is left in the image


def test_a_mount_over_the_root_is_refused(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=bind,target=. true\n"})
    result = bcli("build", str(ctx), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Dockerfile:2: invalid RUN --mount=type=bind,target=.: invalid mount target '/'" in result.stderr


def test_cache_mount_from_a_stage_is_seeded_with_its_source(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox AS seed
RUN mkdir -p /seed/deep && echo seeded > /seed/deep/f && chown -R 1000:1001 /seed && chmod 0750 /seed

FROM busybox
RUN --mount=type=cache,id=c1,target=/c,from=seed,source=/seed \\
    cat /c/deep/f > /got && stat -c '%u:%g %a' /c /c/deep/f >> /got && echo more > /c/new
RUN --mount=type=cache,id=c1,target=/again,from=seed,source=/seed cat /again/new > /got2
RUN --mount=type=cache,id=plain,target=/p,source=sub touch /p/a
RUN --mount=type=cache,id=plain,target=/whole ls /whole/sub > /got3
"""
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "-t", "seeded:v1", "--network", "none", str(ctx))
    out = _sh(bcli, "seeded:v1", "cat /got /got2 /got3")
    # the cache started as a copy of /seed (owners and modes kept), and kept what the first step wrote
    assert out.splitlines() == ["seeded", "1000:1001 750", "1000:1001 644", "more", "a"]


def test_cache_mount_from_with_a_missing_source_is_an_error(bcli: Cli, ctx: Path) -> None:
    df = "FROM busybox AS seed\nFROM busybox\nRUN --mount=type=cache,target=/c,from=seed,source=/nope true\n"
    write_context(ctx, {"Dockerfile": df})
    result = bcli("build", str(ctx), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Dockerfile:3: RUN --mount=type=cache,from=seed: source /nope not found in seed" in result.stderr


# ---------------------------------------------------------------------------- WORKDIR, network


@pytest.mark.slow
def test_workdir_through_a_dangling_symlink_creates_its_target(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox
RUN ln -s /data/app /app && ln -s /etc /etclink
WORKDIR /app
RUN pwd > /pwd && touch here
WORKDIR /etclink
RUN pwd > /pwd2
"""
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "-t", "wd:v1", "--network", "none", str(ctx))
    # the shell reports the physical directory, as it does under Docker
    assert _sh(bcli, "wd:v1", "cat /pwd /pwd2; ls /data/app; readlink /app").splitlines() == [
        "/data/app", "/etc", "here", "/data/app"]
    # base, RUN ln, WORKDIR /app (made /data/app), RUN, RUN: WORKDIR /etclink found a directory, no layer
    assert len(inspect(bcli, "wd:v1")["RootFS"]["Layers"]) == 5
    # `run -w` through a dangling link creates the target too
    bcli("build", "-t", "wd:v2", "-", input=b"FROM busybox\nRUN ln -s /nowhere/x /lnk\n")
    assert _sh(bcli, "wd:v2", "true") == ""
    out = bcli("run", "--rm", "--network", "none", "-w", "/lnk", "wd:v2", "sh", "-c", "pwd; ls -d /nowhere/x")
    assert out.stdout.splitlines() == ["/nowhere/x", "/nowhere/x"]


def test_run_network_default_is_the_builds_network(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox
RUN --network=default ls /sys/class/net > /nets-default
RUN ls /sys/class/net > /nets-plain
"""
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "-t", "net:v1", "--network", "none", str(ctx))
    assert _sh(bcli, "net:v1", "cat /nets-default /nets-plain").split() == ["lo", "lo"]


# ---------------------------------------------------------------------------- ARGs in --from, --label


@pytest.mark.slow
def test_copy_from_uses_global_args_and_mount_from_is_not_expanded(bcli: Cli, ctx: Path) -> None:
    df = """\
ARG SRC=a
FROM busybox AS a
RUN echo from-a > /f
FROM busybox AS b
RUN echo from-b > /f
FROM busybox
ARG SRC=b
COPY --from=$SRC /f /copied
"""
    write_context(ctx, {"Dockerfile": df})
    out = bcli("build", "-t", "args:v1", "--network", "none", str(ctx)).stdout
    assert "[b " not in out  # stage b is not needed: --from names a, the global value
    assert _sh(bcli, "args:v1", "cat /copied") == "from-a\n"
    bcli("build", "-t", "args:v2", "--network", "none", "--build-arg", "SRC=b", str(ctx))
    assert _sh(bcli, "args:v2", "cat /copied") == "from-b\n"
    # RUN --mount from= is not expanded at all (BuildKit: "define alias stage instead")
    write_context(ctx, {"Dockerfile": df + "RUN --mount=from=$SRC,source=/f,target=/m cat /m\n"})
    result = bcli("build", str(ctx), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Dockerfile:9: invalid RUN --mount: 'from' doesn't support variable expansion, define alias stage " \
           "instead" in result.stderr


@pytest.mark.slow
def test_label_and_build_arg_without_a_value(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nARG FROM_ENV=default\nRUN echo $FROM_ENV > /arg\n"})
    bcli("build", "-t", "lab:v1", "--network", "none", "--label", "empty", "--label", "k=v",
         "--build-arg", "FROM_ENV", str(ctx), env={"FROM_ENV": "from-the-env"})
    assert inspect(bcli, "lab:v1")["Config"]["Labels"] == {"empty": "", "k": "v"}
    assert _sh(bcli, "lab:v1", "cat /arg") == "from-the-env\n"
    result = bcli("build", "--label", "=v", str(ctx), check=False)
    assert result.returncode == 1 and "pybuild: error: invalid --label '=v'" in result.stderr
    bcli("create", "--name", "labelled", "--label", "bare", "lab:v1", "true")
    doc = inspect(bcli, "labelled")
    assert doc["Config"]["Labels"]["bare"] == ""
    bcli("rm", "labelled")


# ---------------------------------------------------------------------------- secrets and the cache


@pytest.mark.slow
def test_required_secret_is_checked_even_when_the_step_is_cached(bcli: Cli, ctx: Path, workdir: Path) -> None:
    secret = workdir / "tok"
    secret.write_text("t0k3n")
    df = "FROM busybox\nRUN --mount=type=secret,id=tok,required=true test -s /run/secrets/tok\n"
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "--network", "none", "--secret", f"id=tok,src={secret}", str(ctx))
    result = bcli("build", "--network", "none", str(ctx), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Dockerfile:2: secret tok is required but was not given" in result.stderr
    # an optional secret's step is a different step: built from a build that had the secret, not reused
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=tok test ! -e /run/secrets/tok\n"})
    out = bcli("build", "--network", "none", str(ctx)).stdout
    assert "CACHED [2/2]" not in out


# ---------------------------------------------------------------------------- hostile depth


@pytest.mark.slow
def test_deeply_nested_input_is_a_line_error_not_an_internal_error(bcli: Cli, ctx: Path) -> None:
    deep_sub = "${A:-" * 3000 + "y" + "}" * 3000
    deep_json = "[" * 5000 + "]" * 5000
    for line, text in ((3, f"FROM busybox\nARG A\nENV B={deep_sub}\n"), (2, f"FROM busybox\nRUN {deep_json}\n"),
                       (2, f"FROM busybox\nLABEL x={deep_sub}\n")):
        write_context(ctx, {"Dockerfile": text})
        for command in (("build",), ("parse", "-f", str(ctx / "Dockerfile"))):
            result = bcli(*command, str(ctx), check=False) if command == ("build",) else bcli(*command, check=False)
            if command[0] == "parse" and result.returncode == 0:
                continue  # parse does not expand variables
            assert result.returncode == 1, result
            assert "internal error" not in result.stderr and "Traceback" not in result.stderr
            assert result.stderr.startswith(f"pybuild: error: Dockerfile:{line}: "), result.stderr[:300]
            assert "nested too deeply" in result.stderr
            assert len(result.stderr) < 1000


# ---------------------------------------------------------------------------- why a step missed


@pytest.mark.slow
def test_miss_reasons_name_the_real_cause(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox
ARG APP_VERSION=1.0
LABEL version=$APP_VERSION
ENV STAGE=one
RUN echo built > /b
"""
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "--network", "none", "--build-arg", "APP_VERSION=1.1", str(ctx))
    out = bcli("build", "--network", "none", "--explain", "--build-arg", "APP_VERSION=1.2",
               "--build-arg", "UNUSED=x", "--build-arg", "ALSO_UNUSED=y", str(ctx)).stdout
    assert "cache miss [2/2]: build arg changed: APP_VERSION (1.1 -> 1.2)" in out
    assert "the step before it changed" not in out
    assert "[Warning] One or more build-args [ALSO_UNUSED UNUSED] were not consumed" in out
    write_context(ctx, {"Dockerfile": df.replace("STAGE=one", "STAGE=two")})
    out = bcli("build", "--network", "none", "--explain", "--build-arg", "APP_VERSION=1.2", str(ctx)).stdout
    assert "cache miss [2/2]: the instruction changed (was: ENV STAGE=one)" in out
    # another base image
    bcli("tag", "busybox", "other:v1")
    bcli("build", "-t", "other:v1", "-", input=b"FROM busybox\nLABEL other=1\n")
    write_context(ctx, {"Dockerfile": df.replace("FROM busybox", "FROM other:v1").replace("STAGE=one", "STAGE=two")})
    out = bcli("build", "--network", "none", "--explain", "--build-arg", "APP_VERSION=1.2", str(ctx)).stdout
    assert "cache miss [2/2]: the base image changed (was: busybox@sha256:" in out


@pytest.mark.slow
def test_thousands_of_metadata_instructions_cost_one_record(bcli: Cli, ctx: Path) -> None:
    """Each LABEL/ENV costs O(1): no cache record, config blob or file per instruction (the build was
    quadratic: 4,000 LABELs took 116 s). bench/bench_dockerfile_size.py measures the time."""
    lines = ["FROM busybox"] + [f"LABEL l{i}=v{i}" for i in range(2000)] + [f"ENV E{i}=${{E{i - 1}:-x}}{i}"
                                                                            for i in range(1, 500)]
    write_context(ctx, {"Dockerfile": "\n".join([*lines, "RUN echo $E499 > /e", *lines[1:50]]) + "\n"})
    records_dir = bcli.root / "buildcache" / "records"
    before = len(list(records_dir.glob("*.json"))) if records_dir.exists() else 0
    bcli("build", "-t", "many:v1", "--network", "none", str(ctx))
    assert len(list(records_dir.glob("*.json"))) - before == 2  # the RUN, and the stage's trailing LABELs
    image = inspect(bcli, "many:v1")
    assert image["Config"]["Labels"]["l1999"] == "v1999" and len(image["Config"]["Labels"]) == 2000
    assert f"E499=x{''.join(str(i) for i in range(1, 500))}" in image["Config"]["Env"]
    assert _sh(bcli, "many:v1", "cat /e") == "x" + "".join(str(i) for i in range(1, 500)) + "\n"
    again = bcli("build", "-t", "many:v1", "--network", "none", str(ctx)).stdout
    assert "CACHED [2/2]" in again and inspect(bcli, "many:v1")["Id"] == image["Id"]
