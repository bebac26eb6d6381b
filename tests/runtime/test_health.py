"""Health checks run by the container's monitor: HEALTHCHECK and --health-*, docker's state machine
(starting, healthy, unhealthy; the start period; the last five results), shown by ps and inspect."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli

pytestmark = pytest.mark.slow


@pytest.fixture
def rt(cli: Cli, busybox: str) -> Iterator[Cli]:
    yield cli
    for cid in cli("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        cli("rm", "-f", "-v", cid, check=False)


def _inspect(cli: Cli, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(cli("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def _health(cli: Cli, name: str) -> dict:  # type: ignore[type-arg]
    return _inspect(cli, name)["State"]["Health"]  # type: ignore[no-any-return]


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _status(cli: Cli, name: str) -> str:
    rows = dict(line.split("\t") for line in cli("ps", "-a", "--format", "{{.Names}}\t{{.Status}}").stdout.splitlines())
    return rows[name]


def test_a_check_turns_unhealthy_and_healthy_again(rt: Cli) -> None:
    rt("run", "-d", "--name", "web", "--health-cmd", "cat /tmp/ok", "--health-interval", "200ms",
       "--health-retries", "2", "busybox", "sleep", "1000")
    assert _status(rt, "web").endswith(" (health: starting)")
    _wait_until(lambda: _health(rt, "web")["Status"] == "unhealthy")
    health = _health(rt, "web")
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    assert "No such file or directory" in health["Log"][-1]["Output"], "stderr is part of the output"
    assert _status(rt, "web").endswith(" (unhealthy)")
    assert rt("ps", "-q", "--filter", "health=unhealthy").stdout.split() == [_inspect(rt, "web")["Id"][:12]]

    rt("exec", "web", "sh", "-c", "echo ready > /tmp/ok")
    _wait_until(lambda: _health(rt, "web")["Status"] == "healthy")
    health = _health(rt, "web")
    assert health["FailingStreak"] == 0 and health["Log"][-1] == {**health["Log"][-1], "ExitCode": 0,
                                                                   "Output": "ready\n"}
    assert _status(rt, "web").endswith(" (healthy)")
    time.sleep(1.5)
    health = _health(rt, "web")
    assert len(health["Log"]) == 5, "the last five results"
    starts = [entry["Start"] for entry in health["Log"]]
    assert starts == sorted(starts)
    config = _inspect(rt, "web")["Config"]["Healthcheck"]
    assert config == {"Test": ["CMD-SHELL", "cat /tmp/ok"], "Interval": 200_000_000, "Retries": 2}
    assert rt("ps", "-q", "--filter", "health=none").stdout == ""


def test_image_healthcheck_flags_over_it_and_no_healthcheck(rt: Cli, workdir: Path) -> None:
    ctx = workdir / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\n"
                                    "HEALTHCHECK --interval=150ms --retries=1 CMD [\"sh\", \"-c\", \"exit 1\"]\n")
    rt("build", "-q", "-t", "checked:v1", str(ctx))
    rt("run", "-d", "--name", "img", "checked:v1", "sleep", "1000")
    _wait_until(lambda: _health(rt, "img")["Status"] == "unhealthy")
    assert _health(rt, "img")["Log"][0]["ExitCode"] == 1

    rt("run", "-d", "--name", "over", "--health-cmd", "true", "checked:v1", "sleep", "1000")
    _wait_until(lambda: _health(rt, "over")["Status"] == "healthy")
    check = _inspect(rt, "over")["Config"]["Healthcheck"]
    assert check["Test"] == ["CMD-SHELL", "true"] and check["Interval"] == 150_000_000, "the image's interval stays"

    rt("run", "-d", "--name", "off", "--no-healthcheck", "checked:v1", "sleep", "1000")
    time.sleep(0.5)
    doc = _inspect(rt, "off")
    assert "Health" not in doc["State"] and doc["Config"]["Healthcheck"] == {"Test": ["NONE"]}
    assert _status(rt, "off").startswith("Up ") and "health" not in _status(rt, "off")
    assert rt("ps", "-q", "--filter", "health=none").stdout.split() == [doc["Id"][:12]]


def test_timeout_and_start_period(rt: Cli) -> None:
    rt("run", "-d", "--name", "slow", "--health-cmd", "echo begun; sleep 10", "--health-timeout", "300ms",
       "--health-interval", "200ms", "--health-retries", "1", "busybox", "sleep", "1000")
    _wait_until(lambda: _health(rt, "slow")["Status"] == "unhealthy")
    entry = _health(rt, "slow")["Log"][0]
    assert entry["ExitCode"] == -1 and entry["Output"] == "Health check exceeded timeout (300ms): begun\n"

    rt("run", "-d", "--name", "warming", "--health-cmd", "exit 1", "--health-interval", "200ms",
       "--health-start-period", "2s", "--health-start-interval", "100ms", "--health-retries", "1",
       "busybox", "sleep", "1000")
    time.sleep(1.0)
    health = _health(rt, "warming")
    assert health["Status"] == "starting" and health["FailingStreak"] == 0, "failures in the start period do not count"
    assert len(health["Log"]) >= 4, "probed every start interval meanwhile"
    _wait_until(lambda: _health(rt, "warming")["Status"] == "unhealthy", timeout=10)


def test_probes_leak_no_descriptors_or_processes(rt: Cli) -> None:
    rt("run", "-d", "--name", "leak", "--health-cmd", "sleep 30 & echo ok", "--health-interval", "100ms",
       "busybox", "sleep", "1000")
    cid = _inspect(rt, "leak")["Id"]
    monitor = json.loads((rt.root / "containers" / cid / "state.json").read_text())["monitor_pid"]

    def fds() -> int:
        return len(os.listdir(f"/proc/{monitor}/fd"))

    _wait_until(lambda: len(_health(rt, "leak")["Log"]) >= 3)
    before = fds()
    time.sleep(1.5)
    assert _health(rt, "leak")["Status"] == "healthy", "a probe that leaves a process behind still ends"
    assert fds() == before, "the monitor holds as many descriptors after ten more probes"
    shims = [p for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == monitor]
    assert len(shims) <= 2, f"the container's shim, at most one probe running: {shims}"


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2:].split()[1])


def test_bad_health_flags(rt: Cli) -> None:
    for args, message in (
            (("--no-healthcheck", "--health-cmd", "true"), "--no-healthcheck conflicts with --health-* options"),
            (("--health-interval", "soon"), 'invalid argument "soon" for "--health-interval" flag: '
                                            'time: invalid duration "soon"'),
            (("--health-timeout", "-1s"), "--health-timeout cannot be negative"),
            (("--health-retries", "-2"), "--health-retries cannot be negative"),
            (("--health-interval", "10us"), "--health-interval cannot be less than 1ms")):
        bad = rt("run", *args, "busybox", "true", check=False)
        assert bad.returncode == 125 and bad.stderr.strip() == f"pybuild: error: {message}", bad.stderr
    assert rt("ps", "-a", "-q").stdout == "", "nothing was created"
