"""``pybuild build`` as CI scripts written for docker/buildx call it: real builds with the real CLI.

Containerfile, a Dockerfile on stdin, BUILDKIT_PROGRESS, buildx's flags
(--load, --provenance, --sbom, --platform, --metadata-file, --add-host,
--shm-size, --ulimit), named contexts (--build-context), ssh forwarding
(--ssh with RUN --mount=type=ssh) and the plain/tty output of parallel
stages and --explain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builder.test_build import inspect, steps, write_context
from tests.conftest import Cli


@pytest.fixture
def ctx(workdir: Path) -> Path:
    path = workdir / "ctx"
    path.mkdir()
    return path


def error_line(result_stderr: str) -> str:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, f"not one line: {result_stderr!r}"
    assert lines[0].startswith("pybuild: error: "), lines[0]
    assert "Traceback" not in result_stderr
    return lines[0]


# ---------------------------------------------------------------------------- the Dockerfile's name and stdin

def test_containerfile_is_the_default_when_there_is_no_dockerfile(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Containerfile": "FROM busybox\nRUN echo from-containerfile > /which\n"})
    bcli("build", "-t", "cf:v1", str(ctx))
    assert bcli("run", "--rm", "cf:v1", "cat", "/which").stdout == "from-containerfile\n"
    # a Dockerfile beside it wins, as docker's default name
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo from-dockerfile > /which\n")
    bcli("build", "-t", "cf:v2", str(ctx))
    assert bcli("run", "--rm", "cf:v2", "cat", "/which").stdout == "from-dockerfile\n"
    # -f still names any file
    (ctx / "other.df").write_text("FROM busybox\nRUN echo from-f > /which\n")
    bcli("build", "-t", "cf:v3", "-f", str(ctx / "other.df"), str(ctx))
    assert bcli("run", "--rm", "cf:v3", "cat", "/which").stdout == "from-f\n"


def test_a_containerfile_error_names_the_containerfile_and_neither_file_is_a_clear_error(
        bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Containerfile": "FROM busybox\nRUNN x\n"})
    bad = bcli("build", str(ctx), check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("pybuild: error: Containerfile:2: unknown instruction")
    (ctx / "Containerfile").unlink()
    missing = bcli("build", str(ctx), check=False)
    assert missing.returncode == 1 and "Dockerfile" in error_line(missing.stderr)


def test_dockerfile_on_stdin_builds_without_a_context(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"a.txt": "A\n"})
    df = b"FROM busybox\nRUN echo no-context > /x\n"
    bcli("build", "-t", "stdin:v1", "-", input=df)
    assert bcli("run", "--rm", "stdin:v1", "cat", "/x").stdout == "no-context\n"
    # no context at all: a COPY of a context file fails, in one line that says why
    bad = bcli("build", "-", input=b"FROM busybox\nCOPY a.txt /a.txt\n", check=False)
    assert bad.returncode == 1
    assert "there is none: the Dockerfile was read from stdin" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not list((bcli.root / "tmp").glob("context-*"))  # the empty context's temp dir is gone


def test_binary_stdin_that_is_no_tar_is_a_one_line_error(bcli: Cli) -> None:
    bad = bcli("build", "-", input=b"\xff\xfe\x00garbage" * 100, check=False)
    assert bad.returncode == 1
    assert "neither a tar archive nor a Dockerfile" in error_line(bad.stderr)


# ---------------------------------------------------------------------------- BUILDKIT_PROGRESS

def test_buildkit_progress_environment(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN echo hi\n"})
    quiet = bcli("build", str(ctx), env={"BUILDKIT_PROGRESS": "quiet"}).stdout
    assert quiet.strip().startswith("sha256:") and len(quiet.strip().splitlines()) == 1
    plain = bcli("build", "--no-cache", str(ctx), env={"BUILDKIT_PROGRESS": "plain"}).stdout
    assert "[2/2] RUN echo hi" in plain and "[+] Building" not in plain
    tty = bcli("build", "--no-cache", str(ctx), env={"BUILDKIT_PROGRESS": "tty"}).stdout
    assert "[+] Building" in tty
    # the flag wins over the environment
    flag = bcli("build", "--progress=quiet", str(ctx), env={"BUILDKIT_PROGRESS": "plain"}).stdout
    assert flag.strip().startswith("sha256:")
    assert "[+] Building" not in bcli("build", str(ctx), env={"BUILDKIT_PROGRESS": "auto"}).stdout
    bad = bcli("build", str(ctx), env={"BUILDKIT_PROGRESS": "fancy"}, check=False)
    assert bad.returncode == 1
    assert "BUILDKIT_PROGRESS" in error_line(bad.stderr) and "fancy" in bad.stderr


# ---------------------------------------------------------------------------- buildx's flags

def test_load_provenance_sbom_and_platform_are_accepted(bcli: Cli, ctx: Path) -> None:
    from pybuild.builder.plan import host_platform_args

    host = host_platform_args()["TARGETPLATFORM"]
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN echo x > /x\n"})
    ok = bcli("build", "--load", "--provenance=false", "--sbom=false", "--platform", f"{host},{host}",
              "-t", "bx:v1", str(ctx))
    assert "warning" not in ok.stderr
    assert bcli("run", "--rm", "bx:v1", "cat", "/x").stdout == "x\n"
    asked = bcli("build", "--provenance=mode=max", "--sbom=true", "-t", "bx:v1", str(ctx))
    warnings = [line for line in asked.stderr.splitlines() if line.startswith("pybuild: warning:")]
    assert len(warnings) == 2 and "provenance" in warnings[0] and "SBOM" in warnings[1]
    assert "CACHED [2/2]" in asked.stdout  # the flags change nothing in the build
    other = "linux/s390x" if host != "linux/s390x" else "linux/amd64"
    bad = bcli("build", "--platform", f"{host},{other}", str(ctx), check=False)
    assert bad.returncode == 1 and f"platform {other} is not supported" in error_line(bad.stderr)
    bad = bcli("build", "--provenance=mode=huge", str(ctx), check=False)
    assert bad.returncode == 1 and "mode" in error_line(bad.stderr)


def test_metadata_file_is_buildxs_json(bcli: Cli, ctx: Path, workdir: Path) -> None:
    from pybuild.store.root import Store

    write_context(ctx, {"Dockerfile": "FROM busybox\nLABEL a=b\n"})
    meta = workdir / "meta.json"
    bcli("build", "-t", "meta:v1", "-t", "localhost:5000/team/meta:v2", "--metadata-file", str(meta), str(ctx))
    doc = json.loads(meta.read_text())
    assert sorted(doc) == ["containerimage.config.digest", "containerimage.descriptor", "containerimage.digest",
                           "image.name"]
    info = inspect(bcli, "meta:v1")
    assert doc["containerimage.config.digest"] == info["Id"]
    assert doc["containerimage.digest"] == info["Manifest"]["digest"]
    assert doc["image.name"] == "meta:v1,localhost:5000/team/meta:v2"
    desc = doc["containerimage.descriptor"]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert desc["digest"] == doc["containerimage.digest"]
    raw = Store.open(bcli.root).blobs.read(desc["digest"])  # the bytes a push sends, as they are
    assert desc["size"] == len(raw) and "sha256:" + hashlib.sha256(raw).hexdigest() == desc["digest"]
    # without -t there is no image.name; a directory that does not exist is an error before the build
    bcli("build", "--metadata-file", str(meta), str(ctx))
    assert "image.name" not in json.loads(meta.read_text())
    bad = bcli("build", "--metadata-file", str(workdir / "nope" / "m.json"), str(ctx), check=False)
    assert bad.returncode == 1 and "does not exist" in error_line(bad.stderr)


def test_add_host_shm_size_and_ulimit_reach_run_steps(bcli: Cli, ctx: Path) -> None:
    df = ("FROM busybox\n"
          "RUN grep -E 'db|gw' /etc/hosts; df -k /dev/shm | tail -n 1; echo nofile=$(ulimit -n):$(ulimit -Hn)\n")
    write_context(ctx, {"Dockerfile": df})
    out = bcli("build", "--progress=plain", "--add-host", "db:10.9.8.7", "--add-host", "gw=host-gateway",
               "--shm-size", "96m", "--ulimit", "nofile=1024:2048", str(ctx)).stdout
    gateway = json.loads(bcli("network", "inspect", "bridge").stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    lines = out.splitlines()
    assert "10.9.8.7\tdb" in lines
    assert f"{gateway}\tgw" in lines
    assert any(line.split()[1:2] == ["98304"] for line in lines if line.startswith("shm"))
    assert "nofile=1024:2048" in lines


def test_run_settings_and_the_cache_key(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN cat /etc/hosts > /hosts\n"})
    base = ("build", "--explain", "--progress=plain", str(ctx))
    bcli(*base)
    # BuildKit keys extra hosts by name (the IP is blanked), ulimits and the shm size by value
    first = bcli(*base[:-1], "--add-host", "db:10.0.0.1", str(ctx)).stdout
    assert "CACHED [2/2]" not in first
    assert "CACHED [2/2]" in bcli(*base[:-1], "--add-host", "db:10.0.0.2", str(ctx)).stdout
    assert "CACHED [2/2]" not in bcli(*base[:-1], "--add-host", "cache:10.0.0.2", str(ctx)).stdout
    assert "CACHED [2/2]" not in bcli(*base[:-1], "--ulimit", "nofile=512", str(ctx)).stdout
    assert "CACHED [2/2]" in bcli(*base[:-1], "--ulimit", "nofile=512:512", str(ctx)).stdout
    assert "CACHED [2/2]" not in bcli(*base[:-1], "--shm-size", "32m", str(ctx)).stdout
    assert "CACHED [2/2]" in bcli(*base).stdout  # none of them given: the first build's record


@pytest.mark.parametrize("flags,words", [
    (("--add-host", "nocolon"), "--add-host"),
    (("--add-host", "db:not-an-ip"), "--add-host"),
    (("--ulimit", "nofile=x"), "--ulimit"),
    (("--ulimit", "bogus=1"), "unknown limit"),
    (("--shm-size", "lots"), "--shm-size"),
    (("--sbom", "generator"), "--sbom"),
])
def test_bad_buildx_flag_values_are_one_line_errors(bcli: Cli, ctx: Path, flags: tuple[str, ...],
                                                    words: str) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\n"})
    bad = bcli("build", *flags, str(ctx), check=False)
    assert bad.returncode == 1 and words in error_line(bad.stderr)


# ---------------------------------------------------------------------------- output of parallel stages, --explain

PARALLEL = ("FROM busybox AS one\nRUN for i in 1 2 3; do echo one-$i; done\n"
            "FROM busybox AS two\nRUN for i in 1 2 3; do echo two-$i; done\n"
            "FROM busybox\nCOPY --from=one /bin/sh /one\nCOPY --from=two /bin/sh /two\n")


def test_plain_output_of_parallel_stages_is_prefixed_with_the_stage(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": PARALLEL})
    lines = bcli("build", "-j", "2", "--progress=plain", str(ctx)).stdout.splitlines()
    for stage in ("one", "two"):
        assert [line for line in lines if f"{stage}-" in line and "RUN" not in line] == \
            [f"[{stage}] {stage}-{i}" for i in (1, 2, 3)]
    assert any(line.startswith("[one 2/2] RUN") for line in steps("\n".join(lines)))
    # one stage: the lines are the command's own
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN echo alone\n"})
    assert "alone" in bcli("build", "--progress=plain", str(ctx)).stdout.splitlines()


def test_explain_on_the_live_view_stays_on_the_final_screen(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nARG V=1\nRUN echo v=$V > /v\n"})
    bcli("build", str(ctx))
    out = bcli("build", "--progress=tty", "--explain", "--build-arg", "V=2", str(ctx)).stdout
    final = out.rsplit("FINISHED", 1)
    assert len(final) == 2, out
    after = final[1]
    assert "cache miss [2/2]: build arg changed: V (1 -> 2)" in after
    assert "\x1b[" not in after.split("cache miss", 1)[1]  # below the last frame: never redrawn or erased


# ---------------------------------------------------------------------------- named contexts (--build-context)

def test_directory_context_for_copy_from_and_run_mount(bcli: Cli, ctx: Path, workdir: Path) -> None:
    extra = write_context(workdir / "extra", {"a.txt": "A1\n", "secret.txt": "no\n", ".dockerignore": "secret.txt\n",
                                              "sub/b.txt": "B\n"})
    df = ("FROM busybox\n"
          "COPY --from=src a.txt /a.txt\n"
          "RUN --mount=from=src,target=/m ls -A /m > /listing\n"
          "RUN --mount=type=cache,from=src,source=sub,target=/c cat /c/b.txt > /b\n")
    write_context(ctx, {"Dockerfile": df, "a.txt": "main context\n", ".dockerignore": "nothing\n"})
    build = ("build", "--explain", "--progress=plain", "--build-context", f"src={extra}", "-t", "named:v1", str(ctx))
    bcli(*build)
    assert bcli("run", "--rm", "named:v1", "cat", "/a.txt", "/b").stdout == "A1\nB\n"
    # the context's own .dockerignore hides secret.txt, from the bind mount too
    assert bcli("run", "--rm", "named:v1", "cat", "/listing").stdout.split() == [".dockerignore", "a.txt", "sub"]
    assert "CACHED [2/4] COPY --from=src" in bcli(*build).stdout  # hashed by content: a rebuild is cached
    (extra / "a.txt").write_text("A2\n")
    out = bcli(*build).stdout
    assert "cache miss [2/4]: source files changed: a.txt" in out
    assert bcli("run", "--rm", "named:v1", "cat", "/a.txt").stdout == "A2\n"


def test_from_a_directory_context_and_a_stage_replaced_by_an_image(bcli: Cli, ctx: Path, workdir: Path) -> None:
    files = write_context(workdir / "files", {"etc/app.conf": "conf\n"})
    bcli("tag", "busybox", "registry.example/tools/box:1.2")
    df = ("FROM scratch AS base\nRUN exit 1\n"                  # replaced by busybox: its RUN never runs
          "FROM conf AS configuration\n"                         # a directory context as a base
          "FROM base\n"
          "COPY --from=configuration /etc/app.conf /etc/app.conf\n"
          "COPY --from=registry.example/tools/box:1.2 /bin/busybox /tools/busybox\n"
          "RUN cat /etc/app.conf > /seen\n")
    write_context(ctx, {"Dockerfile": df})
    out = bcli("build", "--progress=plain", "--build-context", "base=docker-image://busybox:latest",
               "--build-context", f"conf={files}", "--build-context",
               "registry.example/tools/box:1.2=docker-image://busybox", "-t", "ctxs:v1", str(ctx)).stdout
    assert "RUN exit 1" not in out
    assert bcli("run", "--rm", "ctxs:v1", "cat", "/seen").stdout == "conf\n"
    assert bcli("run", "--rm", "ctxs:v1", "/tools/busybox", "true").returncode == 0
    # without the context that replaces it, the scratch stage's RUN runs (and fails: scratch has no shell)
    bad = bcli("build", "--build-context", f"conf={files}", "--build-context",
               "registry.example/tools/box:1.2=docker-image://busybox", str(ctx), check=False)
    assert bad.returncode == 1 and "RUN exit 1" in bad.stdout + bad.stderr


@pytest.mark.parametrize("value,words", [
    ("src=/nonexistent/dir", "is not a directory"),
    ("src=git://example.invalid/repo.git", "not supported"),
    ("src=oci-layout:///tmp/x", "not supported"),
    ("noequals", "--build-context"),
    ("UPPER=/tmp", "invalid --build-context name"),
    ("x=docker-image://Bad:Ref", "--build-context"),
])
def test_bad_build_contexts_are_one_line_errors(bcli: Cli, ctx: Path, value: str, words: str) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\n"})
    bad = bcli("build", "--build-context", value, str(ctx), check=False)
    assert bad.returncode == 1 and words in error_line(bad.stderr)


# ---------------------------------------------------------------------------- ssh forwarding (--ssh)

class Agent:
    """A real ssh-agent on a socket of the test's, holding one new ed25519 key; killed by its pid afterwards."""

    def __init__(self, where: Path) -> None:
        where.mkdir()
        self.socket = where / "agent.sock"
        started = subprocess.run(["ssh-agent", "-a", str(self.socket), "-s"], capture_output=True, text=True,
                                 check=True)
        found = re.search(r"SSH_AGENT_PID=(\d+)", started.stdout)
        assert found, started.stdout
        self.pid = int(found.group(1))
        key = where / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci-key", "-f", str(key)], check=True)
        subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(self.socket)}, check=True,
                       capture_output=True)
        listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True)
        self.fingerprint = listed.stdout.split()[1]  # SHA256:...

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)


@pytest.fixture
def agent(workdir: Path) -> Iterator[Agent]:
    running = Agent(workdir / "agent")
    yield running
    running.stop()


def ssh_add_tools(into: Path) -> str:
    """The host's ssh-add with its loader and libraries under ``into``: the command that runs it from /tools.

    busybox has no ssh client; the real one, bound into the step from a named context, speaks the agent
    protocol through the forwarded socket (``ssh-add -l``: list the agent's keys).
    """
    ssh_add = shutil.which("ssh-add")
    assert ssh_add, "ssh-add (openssh-client) is needed"
    ldd = subprocess.run(["ldd", ssh_add], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=> (/\S+)", ldd)
    loader = next(line.split()[0] for line in ldd.splitlines() if line.strip().startswith("/"))
    for path in (os.path.realpath(ssh_add), loader, *libs):
        target = into / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (into / ssh_add.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ssh_add, into / ssh_add.lstrip("/"))
    lib_path = ":".join(sorted({f"/tools{os.path.dirname(p)}" for p in libs}))
    return f"/tools{loader} --library-path {lib_path} /tools{ssh_add}"


def proxy_sockets(root: Path) -> list[Path]:
    return [p for p in (root / "tmp").rglob("ssh-*.sock")] if (root / "tmp").exists() else []


def test_ssh_agent_is_forwarded_into_run_steps(bcli: Cli, ctx: Path, workdir: Path, agent: Agent) -> None:
    ssh_add = ssh_add_tools(workdir / "tools")
    df = ("FROM busybox\n"
          f"RUN --mount=type=ssh --mount=from=tools,target=/tools {ssh_add} -l; echo sock=$SSH_AUTH_SOCK; "
          "stat -c 'mode=%a owner=%u:%g' $SSH_AUTH_SOCK\n"
          "RUN --mount=type=ssh,id=deploy,target=/agent,mode=0660,uid=1000,gid=1000 "
          "stat -c 'deploy=%a %u:%g %F' /agent\n"
          "RUN --mount=type=ssh,id=absent test ! -e $SSH_AUTH_SOCK && echo absent-not-mounted\n")
    write_context(ctx, {"Dockerfile": df})
    env = {"SSH_AUTH_SOCK": str(agent.socket)}
    out = bcli("build", "--progress=plain", "--ssh", "default", "--ssh", f"deploy={agent.socket}",
               "--build-context", f"tools={workdir / 'tools'}", "-t", "ssh:v1", str(ctx), env=env).stdout
    lines = out.splitlines()
    assert any(agent.fingerprint in line and "ci-key" in line for line in lines), out
    assert "sock=/run/buildkit/ssh_agent.0" in lines
    assert "mode=600 owner=0:0" in lines
    assert "deploy=660 1000:1000 socket" in lines
    assert "absent-not-mounted" in lines  # optional, and not given: no socket
    assert not proxy_sockets(bcli.root)
    # the socket is not part of the image, and no layer keeps a stub of it
    gone = bcli("run", "--rm", "ssh:v1", "sh", "-c", "ls -A /run/buildkit 2>&1; ls /agent 2>&1", check=False)
    assert gone.stdout.count("No such file") == 2, gone.stdout


def test_ssh_required_missing_and_bad_ssh_values(bcli: Cli, ctx: Path, workdir: Path, agent: Agent) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=ssh,id=gh,required=true true\n"})
    bad = bcli("build", str(ctx), check=False)
    assert bad.returncode == 1 and "ssh agent gh is required but was not given" in bad.stderr
    assert "Traceback" not in bad.stderr
    (workdir / "keyfile").write_text("not a socket\n")
    for flags, words in ((("--ssh", "default"), "SSH_AUTH_SOCK is not set"),
                         (("--ssh", f"gh={workdir / 'keyfile'}"), "is not a socket"),
                         (("--ssh", f"gh={workdir / 'nope.sock'}"), "cannot use"),
                         (("--ssh", "gh="), "invalid --ssh")):
        bad = bcli("build", *flags, str(ctx), check=False, env={"SSH_AUTH_SOCK": ""})
        assert bad.returncode == 1 and words in error_line(bad.stderr), bad.stderr


def test_ctrl_c_during_an_ssh_step_leaves_no_socket(bcli: Cli, ctx: Path, agent: Agent) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=ssh test -S $SSH_AUTH_SOCK && "
                                      "echo st''arted && sleep 60\n"})
    env = dict(os.environ)
    env.pop("PYBUILD_ROOT", None)
    env.update(bcli.env)
    env["SSH_AUTH_SOCK"] = str(agent.socket)
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(bcli.root), "build", "--progress=plain",
                             "--network=none", "--ssh", "default", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 60
    for raw in proc.stdout:
        seen.append(raw.decode(errors="replace"))
        if "started" in seen[-1] or time.monotonic() > deadline:
            break
    assert any("started" in line for line in seen), "".join(seen)
    assert proxy_sockets(bcli.root)  # the relay is there while the step runs
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not proxy_sockets(bcli.root)
    # the agent itself is untouched
    listed = subprocess.run(["ssh-add", "-l"], env={**os.environ, "SSH_AUTH_SOCK": str(agent.socket)},
                            capture_output=True, text=True)
    assert agent.fingerprint in listed.stdout
