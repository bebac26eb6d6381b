"""The Dockerfile corpus (``testdata/Dockerfiles/<case>/``), built end to end with the real CLI.

Every instruction and flag, with its expected result: files, modes and owners
in the image (``pybuild run``), config fields (``pybuild inspect``), history
(``pybuild history --no-trunc``) and the layer count. The expected values are
Docker's (BuildKit's); where pybuild differs, the test fails on purpose.

Each case is copied to a temp dir first and its modes normalised the way git
checks files out (0644, 0755 for executables and directories), so the modes
asserted here do not depend on the checkout's umask.

Then one failing build per class of bad input: exit status 1, a `pybuild: error:`
message naming the Dockerfile line where there is one, no traceback, and the
store unchanged. And the deep chain: 120 RUN steps work (121 layers), 130 are
refused cleanly at the 127-layer limit.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Cli

CORPUS = REPO / "testdata" / "Dockerfiles"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ABSENT = object()  # a Config field that must not be set
# Steps that only change the config: an empty layer in the history ("0B").
METADATA = ("ENV", "LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER", "STOPSIGNAL", "HEALTHCHECK",
            "SHELL", "ONBUILD", "MAINTAINER", "ARG")
LAYER_STEPS = ("RUN", "COPY", "ADD")
# Nothing these builds do needs the network: a pull must fail at once, not reach a registry.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:1", "HTTPS_PROXY": "http://127.0.0.1:1",
              "NO_PROXY": "127.0.0.1,localhost", "PYBUILD_REGISTRY_ATTEMPTS": "1"}


# ---------------------------------------------------------------------------- helpers

def stage_case(name: str, dest: Path) -> Path:
    """A copy of the case's directory with git's modes (0644, or 0755 for executables and dirs)."""
    target = dest / name
    shutil.copytree(CORPUS / name, target, symlinks=True)
    for path in [target, *target.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100:
            os.chmod(path, 0o755)
        else:
            os.chmod(path, 0o644)
    return target


def inspect(cli: Cli, ref: str) -> dict[str, Any]:
    return json.loads(cli("inspect", ref).stdout)[0]  # type: ignore[no-any-return]


def run(cli: Cli, image: str, *args: str, flags: tuple[str, ...] = ()) -> str:
    return cli("run", "--rm", "--network", "none", *flags, image, *args).stdout


def stat_lines(entries: dict[str, str]) -> str:
    """Expected ``find ... | sort | xargs stat -c '%a %u:%g %n'`` output for {path: "mode uid:gid"}."""
    return "".join(f"{entries[p]} {p}\n" for p in sorted(entries))


def store_state(cli: Cli) -> tuple[str, list[str]]:
    """What a failed build must not change: the image list and the layer dirs."""
    images = cli("images", "-q", "--no-trunc").stdout  # pybuild has no intermediate images: no -a
    overlay = cli.root / "overlay2"
    dirs = sorted(p.name for p in overlay.iterdir()) if overlay.is_dir() else []
    return images, dirs


def history_problems(info: dict[str, Any], shown: str) -> list[str]:
    """Only RUN/COPY/ADD (and a WORKDIR that made its dir) have layers; metadata steps show 0B."""
    history = info["History"]
    problems = []
    with_layers = sum(not h.get("empty_layer") for h in history)
    if with_layers != len(info["RootFS"]["Layers"]):
        problems.append(f"{with_layers} history entries with a layer, {len(info['RootFS']['Layers'])} layers")
    lines = shown.splitlines()
    for entry in history:
        created_by = entry.get("created_by", "")
        keyword = created_by.split(" ", 1)[0]
        if keyword in LAYER_STEPS and entry.get("empty_layer"):
            problems.append(f"{created_by!r} is marked empty_layer")
        elif keyword in METADATA:
            if entry.get("empty_layer") is not True:
                problems.append(f"{created_by!r} is not marked empty_layer")
            matching = [line for line in lines if created_by in line]
            if not matching or not all(re.search(r"\s0B\s", line) for line in matching):
                problems.append(f"{created_by!r} is not shown with 0B: {matching}")
    return problems


# ---------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Case:
    name: str
    build: tuple[str, ...] = ()  # extra build options
    dockerfile: str | None = None  # -f, relative to the case dir
    context: str = "."  # relative to the case dir
    prebuild: tuple[tuple[str, str], ...] = ()  # (Dockerfile in the case dir, tag) built first
    env: dict[str, str] = field(default_factory=dict)
    # (run options, command, expected stdout); an empty command runs the image's default
    runs: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = ()
    config: dict[str, Any] = field(default_factory=dict)  # Config field -> value (ABSENT: not set)
    top: dict[str, Any] = field(default_factory=dict)  # top-level inspect fields (Author, Architecture...)
    layers: int | None = None
    history: tuple[str, ...] = ()  # substrings of `history --no-trunc` lines
    output_lacks: tuple[str, ...] = ()
    extra: Callable[[Cli, str, Path], None] | None = None
    skip: str | None = None


def _sh(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


STAT = 'xargs stat -c "%a %u:%g %n"'


def _host_interfaces() -> set[str]:
    with open("/proc/net/dev") as f:
        return {line.split(":", 1)[0].strip() for line in f if ":" in line}


def _check_run_forms(cli: Cli, image: str, case_dir: Path) -> None:
    seen = set(run(cli, image, "cat", "/net-host.txt").split())
    host = _host_interfaces()
    assert "lo" in seen
    if host - {"lo"}:  # RUN --network=host sees the host's interfaces, not just a loopback
        assert seen & (host - {"lo"}), (seen, host)


def _check_run_mounts(cli: Cli, image: str, case_dir: Path) -> None:
    assert not (case_dir / "conf" / "new").exists()  # an rw bind mount never writes to the context
    for diff in (cli.root / "overlay2").glob("*/diff"):
        for path in diff.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert b"corpus-s3cr3t" not in path.read_bytes(), path
    # the cache mount keeps its content across builds, even with --no-cache
    cli("build", "-t", image, "--no-cache", "--secret", "id=token,env=CORPUS_TOKEN", str(case_dir),
        env={"CORPUS_TOKEN": "corpus-s3cr3t"})
    assert run(cli, image, "cat", "/cache-runs.txt") == "run\nrun\n"


def _check_onbuild(cli: Cli, image: str, case_dir: Path) -> None:
    base = inspect(cli, "corpus-onbuild-base:latest")["Config"]
    assert base["OnBuild"] == ["COPY trigger.txt /trigger.txt", "RUN cat /trigger.txt > /triggered.txt"]


COPY_RULES = {
    "contents": "755 0:0", "contents/a.txt": "644 0:0", "contents/b.txt": "644 0:0", "contents/c.log": "644 0:0",
    "contents/sub": "755 0:0", "contents/sub/d.txt": "644 0:0", "contents/sub/deep": "755 0:0",
    "contents/sub/deep/e.txt": "644 0:0",
    "into-dir": "755 0:0", "into-dir/a.txt": "644 0:0", "into-dir/b.txt": "644 0:0",
    "renamed.txt": "644 0:0",
    "multi": "755 0:0", "multi/a.txt": "644 0:0", "multi/b.txt": "644 0:0",
    "wild": "755 0:0", "wild/a.txt": "644 0:0", "wild/b.txt": "644 0:0",
    "wild-log": "755 0:0", "wild-log/c.log": "644 0:0",
    "work": "755 0:0", "work/b.txt": "644 0:0", "work/rel": "755 0:0", "work/rel/a.txt": "644 0:0",
    # created parents belong to the --chown user; names come from the image's passwd/group
    "owned": "755 1234:3000", "owned/by-name.txt": "644 1234:3000", "owned/by-id.txt": "644 1500:1600",
    "owned/user-only.txt": "644 1234:2345",  # a name alone: the user's primary group
    "owned/uid-only.txt": "644 1500:1500",  # an id alone: gid = uid
    "owned/mode-600.txt": "600 0:0",
    "owned/sub": "755 65534:65534", "owned/sub/d.txt": "755 65534:65534", "owned/sub/deep": "755 65534:65534",
    "owned/sub/deep/e.txt": "755 65534:65534",
    "excluded": "755 0:0", "excluded/a.txt": "644 0:0", "excluded/b.txt": "644 0:0", "excluded/sub": "755 0:0",
    "excluded/sub/d.txt": "644 0:0",
    "parents": "755 0:0", "parents/app": "755 0:0", "parents/app/src": "755 0:0",
    "parents/app/src/main.py": "644 0:0",
    "pivot": "755 0:0", "pivot/tests": "755 0:0", "pivot/tests/test_app.py": "644 0:0",
    "linked": "755 0:0", "linked/b.txt": "644 0:0",
    "usr/local/bin/script.sh": "755 0:0",
}
_COPY_ROOTS = sorted({p.split("/")[0] for p in COPY_RULES if not p.startswith("usr/")})

ADD_ARCHIVES = {"raw": "755 0:0", "raw/notatar.txt.gz": "644 0:0",
                "added": "755 65534:65534", "added/file.txt": "640 65534:65534", "added/exec.txt": "755 0:0"}
for _d in ("gz", "bz2", "xz", "zst", "plain"):
    ADD_ARCHIVES.update({_d: "755 0:0", f"{_d}/payload": "750 1000:1000", f"{_d}/payload/hello.txt": "640 1000:1000",
                         f"{_d}/payload/bin": "755 0:0", f"{_d}/payload/bin/run.sh": "755 0:0"})

CUSTOM_SHELL = ["/bin/sh", "-c", "echo \"via custom shell: $0\" >> /shell-log.txt && eval \"$0\""]

CASES = [
    Case(
        "hello",
        runs=(((), (), "hello from pybuild (built)\n"),
              ((), _sh('stat -c "%a %u:%g %n" /app /app/hello.sh /app/built.txt'),
               "755 0:0 /app\n755 0:0 /app/hello.sh\n644 0:0 /app/built.txt\n")),
        config={"WorkingDir": "/app", "Cmd": ["/app/hello.sh"], "Env": [DEFAULT_PATH]},
        layers=4,  # busybox, WORKDIR /app (made the dir), COPY, RUN
        history=("WORKDIR /app", "COPY hello.sh /app/hello.sh",
                 "RUN /bin/sh -c chmod +x /app/hello.sh && echo built > /app/built.txt"),
    ),
    Case(
        "scratch",
        runs=(((), (), "hello from scratch\n"),
              ((), ("stat", "-c", "%a %u:%g %n", "/bin/busybox", "/hello.txt"),
               "755 0:0 /bin/busybox\n644 0:0 /hello.txt\n")),
        config={"Entrypoint": ["/bin/busybox"], "Cmd": ["cat", "/hello.txt"], "Env": [DEFAULT_PATH]},
        layers=2,
        history=("COPY --from=busybox:latest /bin/busybox /bin/busybox", "COPY hello.txt /"),
    ),
    Case(
        "multistage",
        build=("--build-arg", "VERSION=2.0", "--build-arg", "STAGE_OVERRIDE=from-cli"),
        runs=(((), _sh('cat /from-name.txt /from-index.txt /undeclared.txt /declared.txt; '
                       'stat -c "%a %u:%g %n" /from-image'),
               "version=2.0 default=kept override=from-cli\n"
               "version=2.0 default=kept override=from-cli\ntested\n"
               "version=[]\nversion=2.0\n755 0:0 /from-image\n"),),
        config={"Env": [DEFAULT_PATH]},  # ARGs are not part of the image's environment
        layers=6,
        history=("RUN |1 VERSION=2.0 /bin/sh -c echo \"version=${VERSION}\" > /declared.txt",
                 "COPY --from=build /out/build.txt /from-name.txt", "COPY --from=1 /out/test.txt /from-index.txt",
                 "COPY --from=busybox:latest /bin/busybox /from-image"),
        output_lacks=("the unused stage ran",),
    ),
    Case(
        "from-platform",
        runs=(((), ("cat", "/platform.txt"), "linux/amd64 amd64\n"),),
        top={"Architecture": "amd64", "Os": "linux"},
        layers=2,
        skip=None if platform.machine() == "x86_64" else "--platform=linux/amd64 needs an amd64 host",
    ),
    Case(
        "run-forms",
        build=("--allow", "network.host"),  # its RUN --network=host needs the build's consent
        runs=(((), _sh("cat /shell-form.txt /exec-form.txt /exec-env.txt /not-json.txt /custom-shell.txt "
                       "/shell-log.txt /net-none.txt; ls /exec-no-shell"),
               "shell form in /bin/sh\nexec form in /bin/sh\n$WHO env-value\nnot json\nran\n"
               "via custom shell: echo ran > /custom-shell.txt\nlo\n/exec-no-shell\n"),),
        config={"Shell": CUSTOM_SHELL, "Cmd": [*CUSTOM_SHELL, "[\"echo\", 'single-quoted']"],
                "Env": [DEFAULT_PATH, "WHO=env-value"], "Entrypoint": ABSENT},
        layers=9,
        history=('RUN /bin/sh -c echo "shell form in $0" > /shell-form.txt', "RUN touch /exec-no-shell",
                 'RUN /bin/sh -c [ -d /bin ] && echo "not json" > /not-json.txt', "ENV WHO=env-value"),
        extra=_check_run_forms,
    ),
    Case(
        "run-mounts",
        build=("--secret", "id=token,env=CORPUS_TOKEN"),
        env={"CORPUS_TOKEN": "corpus-s3cr3t"},
        runs=(((), _sh("cat /cache-runs.txt /bind-copy.txt /bind-ro.txt /bind-rw.txt /tmpfs.txt /secret-size.txt "
                       "/secret-mode.txt /secret-env.txt; "
                       'for p in /mnt/conf /scratch /run/secrets/token /var/cache/corpus; do '
                       '[ -e $p ] && echo "left behind: $p"; done; true'),
               "run\nsetting=1\nread-only\nwritable\ntmpfs\n13\n400\nenv-ok\n"),),
        layers=7,
        extra=_check_run_mounts,
    ),
    Case(
        "config",
        runs=(((), (), "entrypoint ran as 65534 in /srv/app\n"),
              (("--entrypoint", "sh"), ("-c", 'stat -c "%a %u:%g %n" /srv /srv/app; '
                                              'echo "$LEGACY|$DERIVED|$GREETING"'),
               "755 0:0 /srv\n755 65534:65534 /srv/app\nlegacy value with spaces|/srv/app/bin|hello world\n")),
        config={
            "Env": [DEFAULT_PATH, "APP_HOME=/srv/app", "GREETING=hello world", "LEGACY=legacy value with spaces",
                    "DERIVED=/srv/app/bin"],
            "Entrypoint": ["/bin/sh", "-e", "-c", 'echo "entrypoint ran as $(id -u) in $(pwd)"'],
            "Cmd": ABSENT,  # an ENTRYPOINT resets the CMD inherited from the base stage
            "WorkingDir": "/srv/app",
            "User": "nobody",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}},  # ranges expand
            "Volumes": {"/data": {}, "/logs": {}, "/cache": {}},
            "Labels": {"org.opencontainers.image.title": "corpus config", "version": "1", "multi.word": "a b c"},
            "StopSignal": "SIGQUIT",
            "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
                            "Interval": 30_000_000_000, "Timeout": 5_000_000_000, "StartPeriod": 90_000_000_000,
                            "StartInterval": 2_000_000_000, "Retries": 4},
            "Shell": ["/bin/sh", "-e", "-c"],
            "OnBuild": ["RUN echo triggered > /onbuild.txt"],
        },
        top={"Author": "Corpus Maintainer <corpus@example.com>"},
        layers=3,  # busybox and the two WORKDIRs that made their directories
        history=("WORKDIR /srv", "WORKDIR /srv/app", "USER nobody", "STOPSIGNAL SIGQUIT",
                 "MAINTAINER Corpus Maintainer <corpus@example.com>",
                 # Docker records ENV as the key=value pairs it set (expanded, legacy form normalised)
                 "ENV DERIVED=/srv/app/bin", "ENV LEGACY=legacy value with spaces"),
    ),
    Case(
        "onbuild",
        prebuild=(("base.Dockerfile", "corpus-onbuild-base:latest"),),
        runs=(((), ("cat", "/triggered.txt", "/child.txt"),
               "from the child's context\nchild saw: from the child's context\n"),),
        config={"OnBuild": ABSENT},  # triggers run once, in the child, and are not inherited further
        layers=4,  # busybox, the triggers' COPY and RUN, the child's RUN
        extra=_check_onbuild,
    ),
    Case(
        "copy-rules",
        runs=(((), _sh(f"cd / && find {' '.join(_COPY_ROOTS)} usr/local/bin/script.sh | sort | {STAT}"),
               stat_lines(COPY_RULES)),
              ((), ("cat", "/renamed.txt", "/usr/local/bin/script.sh"), "a\n#!/bin/sh\necho script\n")),
        config={"WorkingDir": "/work"},
        layers=23,  # busybox, RUN, WORKDIR /work, 20 COPY
        history=("COPY --chown=app:staff files/a.txt /owned/by-name.txt", "COPY --link files/b.txt /linked/b.txt",
                 "COPY --parents app/./tests/*.py /pivot/"),
    ),
    Case(
        "add-archives",
        runs=(((), _sh(f"cd / && find gz bz2 xz zst plain raw added | sort | {STAT}; "
                       "cat /gz/payload/hello.txt; gunzip -c /raw/notatar.txt.gz"),
               stat_lines(ADD_ARCHIVES) + "hello from the archive\ngzip of a plain file\n"),),
        layers=9,
        history=("ADD payload.tar.gz /gz/", "ADD --chown=nobody:nogroup --chmod=640 file.txt /added/file.txt"),
    ),
    Case(
        "heredocs",
        runs=(((), _sh("cat /heredoc-run.txt /heredoc-cat.txt /heredoc-raw.txt /heredoc-dash.txt "
                       "/heredoc-copy.txt /heredoc-copy-raw.txt /heredoc-dir/ONE /heredoc-dir/TWO; "
                       'stat -c "%a %u:%g %n" /heredoc-copy.txt /heredoc-dir/ONE /heredoc-dir/TWO; '
                       'case "$(cat /heredoc-script.txt)" in "script: /"*) echo ran from a file;; '
                       '*) cat /heredoc-script.txt;; esac'),
               "first line\nname=corpus\nexpanded corpus\nraw $NAME\ntabs stripped\ncopied corpus\n"
               "not expanded ${NAME}\none\ntwo\n"
               "644 0:0 /heredoc-copy.txt\n644 0:0 /heredoc-dir/ONE\n644 0:0 /heredoc-dir/TWO\nran from a file\n"),),
        layers=8,
    ),
    Case(
        "dockerignore",
        runs=(((), _sh("cd /ctx && find . -mindepth 1 | sort"),
               "./keep.txt\n./nested\n./nested/deep\n./nested/deep/z.txt\n./output\n./output/keep.txt\n"),),
        layers=2,
    ),
    Case(
        "dockerignore-per-dockerfile",
        runs=(((), _sh("cd /ctx && find . -mindepth 1 | sort"),
               "./.dockerignore\n./Dockerfile\n./Dockerfile.dockerignore\n./a.txt\n"),),
        layers=2,
    ),
    Case(
        "dockerfile-elsewhere",
        dockerfile="dockerfiles/app.Dockerfile",
        context="context",
        runs=(((), _sh("cd /ctx && find . -mindepth 1 | sort; cat /kept.txt"), "./.dockerignore\n./kept.txt\nkept\n"),),
        layers=3,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=c.skip)] if c.skip
                                                else []) for c in CASES])
@pytest.mark.slow
def test_corpus_case(bcli: Cli, workdir: Path, case: Case) -> None:
    case_dir = stage_case(case.name, workdir / "cases")
    env = {**NO_NETWORK, **case.env}
    for dockerfile, tag in case.prebuild:
        bcli("build", "-f", str(case_dir / dockerfile), "-t", tag, str(case_dir), env=env)
    image = f"corpus-{case.name}:test"
    args = ["build", "-t", image, *case.build]
    if case.dockerfile is not None:
        args += ["-f", str(case_dir / case.dockerfile)]
    out = bcli(*args, str(case_dir / case.context), env=env).stdout
    # every difference is collected, so that one run lists all of a case's deviations
    problems: list[str] = []
    problems += [f"the build output has {text!r}" for text in case.output_lacks if text in out]
    info = inspect(bcli, image)
    cfg = info["Config"]
    for key, expected in case.config.items():
        if expected is ABSENT and cfg.get(key) is not None:
            problems.append(f"Config.{key} should not be set, is {cfg.get(key)!r}")
        elif expected is not ABSENT and cfg.get(key) != expected:
            problems.append(f"Config.{key} is {cfg.get(key)!r}, expected {expected!r}")
    problems += [f"{key} is {info.get(key)!r}, expected {value!r}"
                 for key, value in case.top.items() if info.get(key) != value]
    if case.layers is not None and len(info["RootFS"]["Layers"]) != case.layers:
        problems.append(f"{len(info['RootFS']['Layers'])} layers, expected {case.layers}")
    history = bcli("history", "--no-trunc", image).stdout
    problems += history_problems(info, history)
    problems += [f"history lacks {text!r}" for text in case.history if text not in history]
    for flags, command, expected in case.runs:
        got = run(bcli, image, *command, flags=flags)
        if got != expected:
            problems.append(f"run {command}: got {got!r}, expected {expected!r}")
    assert not problems, "\n".join([*problems, "history:", history])
    if case.extra is not None:
        case.extra(bcli, image, case_dir)


# ---------------------------------------------------------------------------- bad input

@dataclass(frozen=True)
class Bad:
    name: str  # the case dir (a missing one for the missing-context case)
    expect: tuple[str, ...]  # substrings of stderr
    line: int | None = None  # Dockerfile:N:
    build: tuple[str, ...] = ()
    lower: bool = False  # compare case-insensitively


BAD = [
    Bad("bad-unterminated-heredoc", ("unterminated heredoc",), line=3),
    Bad("bad-unknown-instruction", ('unknown instruction "RUNN"', "did you mean RUN?"), line=3),
    Bad("bad-unknown-flag", ("unknown flag", "frm"), line=2),
    Bad("bad-copy-missing", ("missing.txt", "not found"), line=2),
    Bad("bad-copy-ignored", ("secret.txt", "excluded by .dockerignore"), line=2),
    Bad("bad-copy-from-unknown-stage", ("biuld",), line=5),
    Bad("bad-circular-stage", ("circular dependency detected on stage: a",), line=3),
    Bad("bad-missing-dockerfile", ("dockerfile", "no such file"), lower=True),
    Bad("bad-missing-context", ("unable to prepare context", "bad-missing-context")),
    Bad("bad-base-unpullable", ("127.0.0.1:1/corpus/nothing:1",), line=2),
    Bad("bad-run-fails", ('process "/bin/sh -c echo first output line; echo last output line >&2; exit 7" '
                          "did not complete successfully: exit code: 7", "first output line", "last output line"),
        line=2),
    Bad("bad-run-oom", ("out of memory",), line=3, build=("--memory", "32m")),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.name)
def test_bad_input_fails_cleanly(bcli: Cli, workdir: Path, bad: Bad) -> None:
    exists = (CORPUS / bad.name).is_dir()  # bad-missing-context has no directory: it names one never made
    context = stage_case(bad.name, workdir / "cases") if exists else workdir / "cases" / bad.name
    before = store_state(bcli)
    result = bcli("build", "-t", "corpus-bad:test", *bad.build, str(context), check=False, env=NO_NETWORK)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("pybuild: error: "), result.stderr
    stderr = result.stderr.lower() if bad.lower else result.stderr
    if bad.line is not None:
        assert f"Dockerfile:{bad.line}:" in stderr, stderr
    for text in bad.expect:
        assert text in stderr, f"{text!r} not in: {result.stderr}"
    assert store_state(bcli) == before  # no image, no layer left from the failed build


def test_invalid_json_is_the_shell_form_not_an_error(bcli: Cli, workdir: Path) -> None:
    """BuildKit: a RUN/CMD whose argument is not a valid JSON array is the shell form (run-forms has both)."""
    case_dir = stage_case("run-forms", workdir / "cases")
    parsed = bcli("parse", "--json", "-f", str(case_dir / "Dockerfile")).stdout
    cmd = [i for i in json.loads(parsed) if i["instruction"] == "CMD"][0]
    assert cmd["prepend_shell"] is True and cmd["command"] == "[\"echo\", 'single-quoted']"


# ---------------------------------------------------------------------------- deep layer chains

@pytest.mark.slow
def test_120_run_steps_make_121_layers_and_130_are_refused(bcli: Cli, workdir: Path) -> None:
    case_dir = stage_case("run-120", workdir / "cases")
    assert sum(line.startswith("RUN ") for line in (case_dir / "Dockerfile").read_text().splitlines()) == 120
    bcli("build", "-q", "-t", "corpus-chain:120", str(case_dir), timeout=900)
    info = inspect(bcli, "corpus-chain:120")
    assert len(info["RootFS"]["Layers"]) == 121
    assert run(bcli, "corpus-chain:120", "sh", "-c", "wc -l < /chain; tail -n 1 /chain") == "120\n120\n"
    # 130 steps: the first 120 come from the cache; the 127th RUN would make a 128-layer chain
    deep = workdir / "run-130"
    deep.mkdir()
    (deep / "Dockerfile").write_text("FROM busybox\n" + "".join(f"RUN echo {i} >> /chain\n" for i in range(1, 131)))
    images = bcli("images", "-q", "--no-trunc").stdout
    result = bcli("build", "-t", "corpus-chain:130", str(deep), check=False, timeout=900)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "127 layers" in result.stderr
    assert "Dockerfile:128:" in result.stderr  # the step that would pass the limit
    assert bcli("images", "-q", "--no-trunc").stdout == images
