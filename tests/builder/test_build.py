"""End-to-end builds with the real CLI: overlay snapshots, RUN in containers, the build cache."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.builder.conftest import build_cgroups
from tests.conftest import Cli, network_leftovers


def write_context(path: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return path


@pytest.fixture
def ctx(workdir: Path) -> Path:
    path = workdir / "ctx"
    path.mkdir()
    return path


def inspect(cli: Cli, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(cli("inspect", ref).stdout)[0]  # type: ignore[no-any-return]


def steps(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("[", "CACHED ["))]


# ---------------------------------------------------------------------------- basics

MULTI = """\
FROM busybox AS build
ARG GREETING=hello
ENV APP=/app
WORKDIR $APP
COPY hello.txt ./
RUN echo "$GREETING from $(cat hello.txt)" > out.txt

FROM busybox
LABEL org.example.role=demo
EXPOSE 8080
COPY --from=build /app/out.txt /srv/out.txt
USER 1000:1000
WORKDIR /home/app
CMD ["cat", "/srv/out.txt"]
"""


@pytest.mark.slow
def test_multi_stage_build_runs_and_has_dockers_config(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": MULTI, "hello.txt": "world\n"})
    out = bcli("build", "-t", "app:v1", str(ctx)).stdout
    assert "[build 5/5] RUN" not in out  # steps are numbered per stage: FROM WORKDIR COPY RUN
    assert any(line.startswith("[build 4/4] RUN") for line in steps(out))
    assert "naming to app:v1" in out
    assert bcli("run", "--rm", "app:v1").stdout == "hello from world\n"
    info = inspect(bcli, "app:v1")
    cfg = info["Config"]
    assert cfg["Cmd"] == ["cat", "/srv/out.txt"]
    assert cfg["User"] == "1000:1000"
    assert cfg["WorkingDir"] == "/home/app"
    assert cfg["Labels"] == {"org.example.role": "demo"}
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert not any(e.startswith(("APP=", "GREETING=")) for e in cfg["Env"])  # the build stage's env stays there
    # WORKDIR made the directory, owned by the USER in effect (as BuildKit does)
    assert bcli("run", "--rm", "-u", "0", "app:v1", "stat", "-c", "%u:%g", "/home/app").stdout == "1000:1000\n"
    history = bcli("history", "--no-trunc", "app:v1").stdout
    assert "COPY --from=build /app/out.txt /srv/out.txt" in history


def test_default_command_form_and_stdin_dockerfile(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"a.txt": "A\n"})
    df = b"FROM busybox\nCOPY a.txt /a.txt\nCMD cat /a.txt\n"
    bcli("-t", "short:v1", "-f", "-", str(ctx), input=df)  # pybuild -t NAME CONTEXT, as CI writes it
    assert bcli("run", "--rm", "short:v1").stdout == "A\n"


def test_context_tar_on_stdin(bcli: Cli) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY msg /msg\n"), ("msg", b"from a tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bcli("build", "-t", "fromtar:v1", "-", input=buf.getvalue())
    assert bcli("run", "--rm", "fromtar:v1", "cat", "/msg").stdout == "from a tar\n"


def test_scratch_stage_and_copy_from_image(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM scratch\nCOPY --from=busybox /bin/busybox /busybox\n"
                                      "COPY data/ /data/\n", "data/x": "x\n"})
    bcli("build", "-t", "tiny:v1", str(ctx))
    info = inspect(bcli, "tiny:v1")
    assert len(info["RootFS"]["Layers"]) == 2
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in info["Config"]["Env"]
    assert bcli("run", "--rm", "tiny:v1", "/busybox", "cat", "/data/x").stdout == "x\n"


# ---------------------------------------------------------------------------- the cache

CACHED_DF = """\
FROM busybox
COPY src/ /src/
RUN cat /src/a /src/b > /joined && echo did-run >&2
ARG LEVEL=1
RUN echo level=$LEVEL > /level
"""


@pytest.mark.slow
def test_cache_hits_survive_touch_and_miss_on_edit_with_reasons(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": CACHED_DF, "src/a": "a\n", "src/b": "b\n"})
    first = bcli("build", "-t", "c:v1", str(ctx))
    image1 = inspect(bcli, "c:v1")["Id"]
    assert "did-run" in first.stdout.splitlines()
    os.utime(ctx / "src" / "a", (1, 1))  # touch: mtime changes, content does not
    second = bcli("build", "-t", "c:v1", "--explain", str(ctx))
    assert [s.split("@")[0] for s in steps(second.stdout) if not s.startswith("CACHED")] == ["[1/4] FROM busybox"]
    assert "did-run" not in second.stdout.splitlines()
    assert inspect(bcli, "c:v1")["Id"] == image1  # a fully cached build gives the same image
    (ctx / "src" / "b").write_text("B\n")
    third = bcli("build", "-t", "c:v1", "--explain", str(ctx)).stdout
    assert "[2/4] COPY src/ /src/" in third and "CACHED [2/4]" not in third
    assert "cache miss [2/4]: source files changed: src/b" in third
    assert "cache miss [3/4]: source files changed: src/b" in third  # the real cause, not "the step before it"
    fourth = bcli("build", "-t", "c:v1", "--explain", "--build-arg", "LEVEL=2", str(ctx)).stdout
    assert "CACHED [3/4] RUN cat" in fourth
    assert "cache miss [4/4]: build arg changed: LEVEL (1 -> 2)" in fourth
    assert bcli("run", "--rm", "c:v1", "cat", "/level").stdout == "level=2\n"
    # The ARG is not part of the image's environment.
    assert not any(e.startswith("LEVEL=") for e in inspect(bcli, "c:v1")["Config"]["Env"])
    (ctx / "Dockerfile").write_text(CACHED_DF.replace("echo level", "echo LEVEL"))
    fifth = bcli("build", "-t", "c:v1", "--explain", str(ctx)).stdout
    assert "cache miss [4/4]: the instruction changed (was: RUN echo level=$LEVEL > /level)" in fifth
    no_cache = bcli("build", "-t", "c:v1", "--no-cache", str(ctx)).stdout
    assert "CACHED" not in no_cache and "did-run" in no_cache.splitlines()


@pytest.mark.slow
def test_builder_prune_drops_the_cache(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN echo x > /x\n"})
    bcli("build", str(ctx))  # untagged: only the build cache keeps its layer
    assert "CACHED [2/2]" in bcli("build", str(ctx)).stdout
    out = bcli("builder", "prune", "-f").stdout
    assert "Deleted build cache objects:" in out
    assert "CACHED" not in bcli("build", str(ctx)).stdout


# ---------------------------------------------------------------------------- plan

def test_target_builds_only_what_it_needs(bcli: Cli, ctx: Path) -> None:
    df = ("FROM busybox AS broken\nRUN exit 1\n\nFROM busybox AS base\nRUN echo base > /base\n\n"
          "FROM base AS app\nRUN cat /base > /app\n")
    write_context(ctx, {"Dockerfile": df})
    out = bcli("build", "--target", "app", "-t", "t:app", str(ctx)).stdout
    assert "broken" not in out
    assert bcli("run", "--rm", "t:app", "cat", "/app").stdout == "base\n"
    bad = bcli("build", "--target", "nope", str(ctx), check=False)
    assert bad.returncode == 1 and 'target stage "nope" could not be found' in bad.stderr


def test_independent_stages_run_at_the_same_time(bcli: Cli, ctx: Path) -> None:
    # Each stage waits (up to 20 s) for the other to have started: this only passes when they overlap.
    wait = ("touch /sync/{me}; i=0; while [ ! -f /sync/{other} ] && [ $i -lt 200 ]; do sleep 0.1; "
            "i=$((i+1)); done; test -f /sync/{other}")
    df = (f"FROM busybox AS one\nRUN --mount=type=cache,target=/sync,id=sync {wait.format(me='one', other='two')}\n"
          f"FROM busybox AS two\nRUN --mount=type=cache,target=/sync,id=sync {wait.format(me='two', other='one')}\n"
          "FROM busybox\nCOPY --from=one /bin/sh /one\nCOPY --from=two /bin/sh /two\n")
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "-j", "2", "-t", "par:v1", str(ctx))


# ---------------------------------------------------------------------------- instructions

@pytest.mark.slow
def test_args_env_shell_heredocs(bcli: Cli, ctx: Path) -> None:
    df = """\
ARG BASE=busybox
ARG SUFFIX=global
FROM ${BASE}
ARG SUFFIX
ARG OTHER=other-$SUFFIX
ENV GREETING="hi there" SUFFIX=from-env
RUN echo "$OTHER|$SUFFIX|$GREETING" > /vars
SHELL ["/bin/sh", "-e", "-c"]
RUN <<EOF
echo heredoc line one > /heredoc
echo "two $GREETING" >> /heredoc
EOF
COPY <<EOT /copied.txt
value=${SUFFIX}
EOT
RUN <<EOF
#!/bin/sh
echo "script ran as $0" > /script
EOF
"""
    write_context(ctx, {"Dockerfile": df})
    out = bcli("build", "-t", "vars:v1", "--build-arg", "UNUSED=1", str(ctx)).stdout
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in out
    run = bcli("run", "--rm", "vars:v1", "cat", "/vars", "/heredoc", "/copied.txt", "/script").stdout
    assert run.splitlines() == ["other-global|from-env|hi there", "heredoc line one", "two hi there",
                                "value=from-env", run.splitlines()[4]]
    assert run.splitlines()[4].startswith("script ran as /dev/pipes/")
    assert bcli("run", "--rm", "vars:v1", "ls", "/dev/pipes", check=False).returncode != 0
    assert inspect(bcli, "vars:v1")["Config"]["Shell"] == ["/bin/sh", "-e", "-c"]


@pytest.mark.slow
def test_onbuild_triggers_run_in_the_child_build(bcli: Cli, ctx: Path, workdir: Path) -> None:
    base = write_context(workdir / "base", {"Dockerfile": "FROM busybox\nONBUILD COPY marker /marker\n"
                                                          "ONBUILD RUN cat /marker > /triggered\n"})
    bcli("build", "-t", "onbase:v1", str(base))
    assert inspect(bcli, "onbase:v1")["Config"]["OnBuild"] == ["COPY marker /marker", "RUN cat /marker > /triggered"]
    write_context(ctx, {"Dockerfile": "FROM onbase:v1\n", "marker": "child\n"})
    bcli("build", "-t", "onchild:v1", str(ctx))
    assert bcli("run", "--rm", "onchild:v1", "cat", "/triggered").stdout == "child\n"
    assert not inspect(bcli, "onchild:v1")["Config"].get("OnBuild")  # triggers are not inherited further


def test_copy_chown_names_and_chmod(bcli: Cli, ctx: Path) -> None:
    df = ("FROM busybox\nRUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && "
          "echo 'app:x:2345:' >> /etc/group\nCOPY --chown=app:app --chmod=0640 f.txt /data/f.txt\n")
    write_context(ctx, {"Dockerfile": df, "f.txt": "f\n"})
    bcli("build", "-t", "own:v1", str(ctx))
    assert bcli("run", "--rm", "own:v1", "stat", "-c", "%u:%g %a", "/data/f.txt").stdout == "1234:2345 640\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"downloaded\n"
    gets = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).gets += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_add_url_and_archive(bcli: Cli, ctx: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("inside/file.txt")
            data = b"from the archive\n"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        url = f"http://127.0.0.1:{server.server_address[1]}/dl.txt"
        write_context(ctx, {"Dockerfile": f"FROM busybox\nADD {url} /got/\nADD bundle.tar.gz /unpacked/\n",
                            "bundle.tar.gz": buf.getvalue()})
        _Handler.gets = 0
        bcli("build", "-t", "add:v1", str(ctx))
        assert _Handler.gets == 1  # fetched once: the cache key and the copy share the download
        out = bcli("run", "--rm", "add:v1", "cat", "/got/dl.txt", "/unpacked/inside/file.txt").stdout
        assert out == "downloaded\nfrom the archive\n"
        assert "CACHED [2/3] ADD" in bcli("build", "-t", "add:v1", str(ctx)).stdout
        assert _Handler.gets == 2
        _Handler.body = b"changed!!!\n"
        assert "CACHED [2/3] ADD" not in bcli("build", "-t", "add:v1", str(ctx)).stdout
    finally:
        server.shutdown()
        _Handler.body = b"downloaded\n"
        assert not list((bcli.root / "tmp").glob("**/add-*")), "a downloaded file was left behind"


@pytest.mark.slow
def test_run_mounts_cache_bind_tmpfs_secret(bcli: Cli, ctx: Path, workdir: Path) -> None:
    secret = workdir / "token"
    secret.write_text("s3cr3t")
    df = """\
FROM busybox
RUN --mount=type=cache,target=/cache echo x >> /cache/count && wc -l < /cache/count > /cache-lines
RUN --mount=type=bind,source=conf,target=/conf cat /conf/app.conf > /conf-copy
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && mount | grep -q ' /scratch type tmpfs'
RUN --mount=type=secret,id=token,required cat /run/secrets/token > /dev/null && \\
    test "$(cat /run/secrets/token)" = s3cr3t && stat -c %a /run/secrets/token > /secret-mode
"""
    write_context(ctx, {"Dockerfile": df, "conf/app.conf": "setting=1\n"})
    bcli("build", "-t", "mnt:v1", "--secret", f"id=token,src={secret}", str(ctx))
    bcli("build", "-t", "mnt:v1", "--no-cache", "--secret", f"id=token,src={secret}", str(ctx))
    out = bcli("run", "--rm", "mnt:v1", "sh", "-c", "cat /cache-lines /conf-copy /secret-mode; "
               "ls -d /cache /conf /scratch /run/secrets/token 2>&1 || true").stdout
    lines = out.splitlines()
    assert lines[:3] == ["2", "setting=1", "400"]  # the cache mount kept its content across builds
    assert all("No such file" in line for line in lines[3:]) and len(lines) == 7  # no mount stubs in the image
    for layer_dir in (bcli.root / "overlay2").glob("*/diff"):
        for path in layer_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert b"s3cr3t" not in path.read_bytes(), path
    # the bind source is part of the key: editing it reruns the step
    (ctx / "conf" / "app.conf").write_text("setting=2\n")
    out = bcli("build", "-t", "mnt:v1", "--secret", f"id=token,src={secret}", str(ctx)).stdout
    assert "CACHED [3/5]" not in out
    missing = bcli("build", "--no-cache", str(ctx), check=False)
    assert missing.returncode == 1 and "secret token is required" in missing.stderr


# ---------------------------------------------------------------------------- failures

@pytest.mark.slow
def test_bad_input_is_reported_cleanly(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN true\nRUNN echo\n"})
    bad = bcli("build", str(ctx), check=False)
    assert bad.returncode == 1
    assert 'Dockerfile:3: unknown instruction "RUNN"' in bad.stderr and "Traceback" not in bad.stderr
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY missing.txt /\n")
    bad = bcli("build", str(ctx), check=False)
    assert bad.returncode == 1 and "Dockerfile:2:" in bad.stderr and "missing.txt" in bad.stderr
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo partial > /p; exit 3\n")
    before = sorted(p.name for p in (bcli.root / "overlay2").iterdir())
    bad = bcli("build", "-t", "broken:v1", str(ctx), check=False)
    assert bad.returncode == 1
    assert "Dockerfile:2: process \"/bin/sh -c echo partial > /p; exit 3\" did not complete successfully: " \
           "exit code: 3" in bad.stderr
    assert sorted(p.name for p in (bcli.root / "overlay2").iterdir()) == before  # no half-written layer
    assert bcli("images", "-q", "broken:v1", check=False).stdout.strip() == ""
    (ctx / "Dockerfile").write_text("FROM nosuchimage.invalid/x:1\n")
    bad = bcli("build", str(ctx), check=False)
    assert bad.returncode == 1 and "Dockerfile:1:" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_build_leaves_nothing(bcli: Cli, ctx: Path, sig: int) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN echo started; sleep 60\n"})
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(bcli.root), "build", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = b""
    while b"started" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert b"started" in seen
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    # the container dies with the build; its mounts lived in the build's private mount namespace
    time.sleep(0.5)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(bcli.root) not in mounts
    bcli("prune")  # reclaims what a killed build left (its snapshot, its cgroup)
    assert not build_cgroups(bcli.root)


@pytest.mark.slow
def test_source_date_epoch_gives_the_same_digest_in_two_fresh_stores(workdir: Path, busybox_tar: Path,
                                                                      ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nWORKDIR /app\nCOPY f.txt ./\nRUN cp f.txt g.txt\n"
                                      "ENV X=1\nCMD [\"cat\", \"/app/g.txt\"]\n", "f.txt": "f\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    digests = []
    for name in ("a", "b"):
        cli = Cli(workdir / f"root-{name}")
        try:
            cli("import", str(busybox_tar), "busybox:latest", env=env)
            cli("build", "-t", "repro:v1", str(ctx), env=env)
            info = inspect(cli, "repro:v1")
        finally:
            network_leftovers(cli.root, cleanup=True)  # the store's bridge outlives its directory
        digests.append((info["Id"], info.get("RepoDigests"),
                        info["RootFS"]["Layers"]))
        os.utime(ctx / "f.txt", None)  # a later mtime must not matter
    assert digests[0] == digests[1]
