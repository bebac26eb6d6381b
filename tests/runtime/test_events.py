"""``pybuild events``: the journal that commands and monitors write, printed and filtered as docker's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.store.events import JOURNAL, ROTATE_AT, Journal
from tests.conftest import Cli

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) container (\S+(?:: \S+)?) ([0-9a-f]{64})"
                  r" \((.*)\)$")


def test_journal_rotates_and_skips_torn_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.emit("container", "start", "a" * 64, {"name": "first"})
    with open(tmp_path / JOURNAL, "ab") as f:
        f.write(b'{"Type": "container", "Act')  # a writer killed mid-line
        f.write(b"\n")
    journal.emit("container", "die", "a" * 64, {"name": "first", "exitCode": "0"})
    got = list(journal.follow(0, time.time_ns()))
    assert [d["Action"] for d in got] == ["start", "die"]
    padding = {"pad": "x" * 1000}
    while (tmp_path / JOURNAL).exists() and (tmp_path / JOURNAL).stat().st_size < ROTATE_AT - 2000:
        journal.emit("image", "tag", "sha256:" + "b" * 64, padding)
    for _ in range(5):
        journal.emit("image", "tag", "sha256:" + "b" * 64, padding)
    assert (tmp_path / (JOURNAL + ".1")).exists() and (tmp_path / JOURNAL).stat().st_size < ROTATE_AT
    everything = list(journal.follow(0, time.time_ns()))
    assert everything[0]["Action"] == "start", "the rotated part is read first"
    assert len(everything) == 2 + sum(1 for line in (tmp_path / (JOURNAL + ".1")).read_bytes().splitlines()
                                      if b"tag" in line) + (tmp_path / JOURNAL).read_bytes().count(b"\n")


@pytest.fixture
def rt(cli: Cli, busybox: str) -> Iterator[Cli]:
    yield cli
    for cid in cli("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        cli("rm", "-f", "-v", cid, check=False)


def _wait_status(cli: Cli, name: str, status: str) -> None:
    deadline = time.monotonic() + 20
    while json.loads(cli("inspect", name).stdout)[0]["State"]["Status"] != status:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_container_events_as_docker_prints_them(rt: Cli) -> None:
    since = str(time.time() - 1)
    rt("run", "-d", "--name", "ev", "-l", "tier=web", "--restart", "on-failure:1", "--health-cmd", "true",
       "--health-interval", "100ms", "busybox", "sh", "-c", "sleep 0.6; exit 3")
    _wait_status(rt, "ev", "exited")
    rt("run", "-d", "--name", "other", "busybox", "sleep", "100")
    rt("restart", "-t", "1", "other")
    rt("rm", "-f", "other")
    until = str(time.time() + 0.05)
    lines = rt("events", "--since", since, "--until", until).stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    ev = [(m.group(2), m.group(4)) for m in parsed if m and "name=ev" in m.group(4)]
    actions = [a for a, _ in ev]
    assert actions[:2] == ["create", "start"] and actions.count("start") == 2 and actions.count("die") == 2
    assert "health_status: healthy" in actions
    assert ev[actions.index("die")][1] == "execDuration=0, exitCode=3, image=busybox, name=ev, tier=web", \
        "attributes sorted, labels among them"
    others = [m.group(2) for m in parsed if m and "name=other" in m.group(4)]
    assert others[:2] == ["create", "start"] and "restart" in others and others[-1] == "destroy"
    assert "kill" in others and "stop" in others

    only = rt("events", "--since", since, "--until", until, "--filter", "event=die", "--filter", "label=tier=web",
              "--format", "{{.Status}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}").stdout
    assert only.splitlines() == ["die ev 3", "die ev 3"]
    health = rt("events", "--since", since, "--until", until, "-f", "event=health_status", "-f", "container=ev",
                "--format", "{{.Action}}").stdout.splitlines()
    assert health and set(health) == {"health_status: healthy"}
    docs = [json.loads(line) for line in rt("events", "--since", since, "--until", until, "--filter",
                                              "container=other", "--format", "json").stdout.splitlines()]
    assert {d["Type"] for d in docs} == {"container"} and docs[0]["status"] == "create"
    assert docs[0]["Actor"]["Attributes"]["name"] == "other" and docs[0]["from"] == "busybox"
    assert isinstance(docs[0]["timeNano"], int) and docs[0]["time"] == docs[0]["timeNano"] // 10**9
    bad = rt("events", "--filter", "colour=red", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("pybuild: error: ")


@pytest.mark.slow
def test_events_stream_what_happens_next(rt: Cli) -> None:
    env = {k: v for k, v in rt.env.items()}
    import os

    full = {**os.environ, **env}
    full.pop("PYBUILD_ROOT", None)
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(rt.root), "events", "--format",
                             "{{.Action}} {{.Actor.Attributes.name}}"], stdout=subprocess.PIPE, text=True, env=full)
    try:
        time.sleep(1.0)
        rt("run", "--rm", "--name", "live", "busybox", "true")
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while "destroy live" not in seen and time.monotonic() < deadline:
            assert proc.stdout is not None
            seen.append(proc.stdout.readline().strip())
        assert seen == ["create live", "start live", "die live", "destroy live"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
