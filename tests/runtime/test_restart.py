"""Restart policies without a daemon: docker's rules (runtime/restart.py), applied by the container's
monitor with docker's back-off, and the monitor's own death noticed by the next command."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pybuild.errors import UsageError
from pybuild.runtime.restart import RestartPolicy, next_delay, parse_restart, should_restart
from tests.conftest import Cli

# ------------------------------------------------------------------------------------- the rules


def test_parse_restart_as_docker() -> None:
    assert parse_restart("no") == RestartPolicy("no", 0)
    assert parse_restart("always") == RestartPolicy("always", 0)
    assert parse_restart("unless-stopped") == RestartPolicy("unless-stopped", 0)
    assert parse_restart("on-failure") == RestartPolicy("on-failure", 0)
    assert parse_restart("on-failure:5") == RestartPolicy("on-failure", 5)
    errors = {
        "sometimes": "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
                     "'on-failure', or 'unless-stopped'",
        "always:3": "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        "no:-1": "invalid restart policy: maximum retry count can only be used with 'on-failure' and cannot be "
                 "negative",
        "on-failure:-2": "invalid restart policy: maximum retry count cannot be negative",
        "on-failure:x": "invalid restart policy format: maximum retry count must be an integer: 'on-failure:x'",
    }
    for text, message in errors.items():
        with pytest.raises(UsageError) as caught:
            parse_restart(text)
        assert str(caught.value) == message


def test_should_restart_as_dockers_restart_manager() -> None:
    always, unless = RestartPolicy("always"), RestartPolicy("unless-stopped")
    assert should_restart(always, 0, 100, manually_stopped=True), "always: even a stopped one, at start-up"
    assert should_restart(unless, 0, 0, manually_stopped=False)
    assert not should_restart(unless, 1, 0, manually_stopped=True)
    assert not should_restart(RestartPolicy("no"), 1, 0, manually_stopped=False)
    three = RestartPolicy("on-failure", 3)
    assert [should_restart(three, 1, n, False) for n in range(5)] == [True, True, True, False, False]
    assert not should_restart(three, 0, 0, False), "a clean exit is no failure"
    assert should_restart(RestartPolicy("on-failure", 0), 2, 1000, False), "0: no limit"


def test_back_off_doubles_to_a_minute_and_resets_after_ten_seconds() -> None:
    delays, delay = [], 0.0
    for _ in range(12):
        delay = next_delay(delay, uptime=0.5)
        delays.append(delay)
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert next_delay(60.0, uptime=10.0) == 0.1


# ---------------------------------------------------------------------------------- in containers

slow = pytest.mark.slow


@pytest.fixture
def rt(cli: Cli, busybox: str) -> Iterator[Cli]:
    yield cli
    for cid in cli("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        cli("rm", "-f", "-v", cid, check=False)


def _inspect(cli: Cli, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(cli("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def _record(cli: Cli, name: str) -> dict:  # type: ignore[type-arg]
    """The state as stored (the monitor's pid is not in docker's inspect)."""
    cid = _inspect(cli, name)["Id"]
    return json.loads((cli.root / "containers" / cid / "state.json").read_text())  # type: ignore[no-any-return]


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _log_times(cli: Cli, name: str) -> list[float]:
    out = cli("logs", "-t", name).stdout.splitlines()
    return [dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp() for line in out]


@slow
def test_on_failure_restarts_with_back_off_then_gives_up(rt: Cli) -> None:
    rt("run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c", "echo run; exit 3")
    _wait_until(lambda: _inspect(rt, "flaky")["State"]["Status"] == "exited")
    doc = _inspect(rt, "flaky")
    assert doc["RestartCount"] == 3 and doc["State"]["ExitCode"] == 3
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    times = _log_times(rt, "flaky")
    assert len(times) == 4, "the first run and three restarts"
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # 100 ms, doubling
    time.sleep(1.0)
    assert _inspect(rt, "flaky")["RestartCount"] == 3, "no fourth restart"
    rt("run", "-d", "--name", "clean", "--restart", "on-failure", "busybox", "true")
    _wait_until(lambda: _inspect(rt, "clean")["State"]["Status"] == "exited")
    time.sleep(0.5)
    assert _inspect(rt, "clean")["RestartCount"] == 0, "exit 0 is no failure"


@slow
def test_always_survives_kill_9_of_its_process(rt: Cli) -> None:
    rt("run", "-d", "--name", "svc", "--restart", "always", "busybox", "sleep", "1000")
    first = _inspect(rt, "svc")["State"]["Pid"]
    os.kill(first, signal.SIGKILL)
    _wait_until(lambda: _inspect(rt, "svc")["State"]["Pid"] not in (0, first))
    doc = _inspect(rt, "svc")
    assert doc["State"]["Status"] == "running" and doc["RestartCount"] == 1
    assert rt("exec", "svc", "true").returncode == 0
    rt("stop", "-t", "1", "svc")
    time.sleep(0.5)
    doc = _inspect(rt, "svc")
    assert doc["State"]["Status"] == "exited" and doc["State"]["Running"] is False, "stop is not a failure"
    rt("start", "svc")
    assert _inspect(rt, "svc")["RestartCount"] == 0, "a manual start begins a new count"


@slow
def test_unless_stopped_stays_stopped_after_stop(rt: Cli) -> None:
    rt("run", "-d", "--name", "u", "--restart", "unless-stopped", "busybox", "sleep", "1000")
    rt("stop", "-t", "1", "u")
    time.sleep(1.0)
    doc = _inspect(rt, "u")
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0
    assert "u" not in rt("ps", "--format", "{{.Names}}").stdout.split()
    rt("kill", "u", check=False)
    rt("start", "u")
    os.kill(_inspect(rt, "u")["State"]["Pid"], signal.SIGKILL)
    _wait_until(lambda: _inspect(rt, "u")["RestartCount"] == 1 and _inspect(rt, "u")["State"]["Status"] == "running")


@slow
def test_restarting_shows_in_ps_and_inspect_and_stop_cancels_the_back_off(rt: Cli) -> None:
    rt("run", "-d", "--name", "crash", "--restart", "always", "busybox", "sh", "-c", "exit 1")
    # 0.1 + 0.2 + ... + 1.6 s: after five restarts the next wait is 3.2 s
    _wait_until(lambda: _inspect(rt, "crash")["RestartCount"] >= 5)
    _wait_until(lambda: _inspect(rt, "crash")["State"]["Status"] == "restarting")
    state = _inspect(rt, "crash")["State"]
    assert state["Restarting"] is True and state["Running"] is True and state["Pid"] == 0
    status = rt("ps", "--format", "{{.Names}}\t{{.Status}}").stdout
    assert "crash\tRestarting (1) " in status and status.rstrip().endswith("ago")
    bad = rt("exec", "crash", "true", check=False)
    assert bad.returncode != 0 and "is restarting, wait until the container is running" in bad.stderr
    count = _inspect(rt, "crash")["RestartCount"]
    began = time.monotonic()
    rt("stop", "crash")
    assert time.monotonic() - began < 3.0, "the back-off is cancelled, not waited out"
    time.sleep(4.0)
    doc = _inspect(rt, "crash")
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == count
    assert not os.path.exists(f"/proc/{_record(rt, 'crash')['monitor_pid']}"), "its monitor ended"


@slow
def test_a_killed_monitor_is_noticed_by_the_next_command(rt: Cli) -> None:
    rt("run", "-d", "--name", "plain", "busybox", "sleep", "1000")
    rt("run", "-d", "--name", "kept", "--restart", "always", "busybox", "sleep", "1000")
    old = {n: _inspect(rt, n)["State"]["Pid"] for n in ("plain", "kept")}
    for name in ("plain", "kept"):
        os.kill(_record(rt, name)["monitor_pid"], signal.SIGKILL)
    time.sleep(0.3)
    rows = dict(line.split("\t") for line in rt("ps", "-a", "--format", "{{.Names}}\t{{.Status}}").stdout.splitlines())
    assert rows["plain"].startswith("Exited (137) ")
    assert rows["kept"].startswith("Up "), "its policy starts it again under a new monitor"
    plain = _inspect(rt, "plain")["State"]
    assert "its monitor (pid " in plain["Error"] and plain["Running"] is False
    kept = _inspect(rt, "kept")
    assert kept["State"]["Pid"] != old["kept"] and kept["RestartCount"] == 1
    assert os.path.exists(f"/proc/{_record(rt, 'kept')['monitor_pid']}")
    for pid in old.values():
        _wait_until(lambda pid=pid: _gone_or_zombie(pid), timeout=5)  # type: ignore[misc]
    assert not list(Path("/sys/fs/cgroup/pids/pybuild").glob(f"{_inspect(rt, 'plain')['Id']}*")), \
        "the orphan's cgroup is gone"


def _gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


@slow
def test_update_restart_and_foreground_runs(rt: Cli) -> None:
    rt("run", "-d", "--name", "later", "busybox", "sleep", "1000")
    rt("update", "--restart", "on-failure:1", "later")
    assert _inspect(rt, "later")["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    first = _inspect(rt, "later")["State"]["Pid"]
    os.kill(first, signal.SIGKILL)
    _wait_until(lambda: _inspect(rt, "later")["State"]["Pid"] not in (0, first))
    assert _inspect(rt, "later")["RestartCount"] == 1

    out = rt("run", "--name", "fg", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo fg; exit 4",
             check=False)
    assert out.returncode == 4 and out.stdout == "fg\n", "as docker: the command ends with the first run"
    _wait_until(lambda: _inspect(rt, "fg")["State"]["Status"] == "exited" and _inspect(rt, "fg")["RestartCount"] == 2)

    for args, message in (
            (("run", "--rm", "--restart", "always", "busybox", "true"),
             "pybuild: error: conflicting options: cannot specify both --restart and --rm"),
            (("create", "--restart", "weekly", "busybox", "true"), "pybuild: error: invalid restart policy: "
             "unknown policy 'weekly'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'")):
        bad = rt(*args, check=False)
        assert bad.returncode == 125 and bad.stderr.strip() == message
    rt("create", "--name", "auto", "--rm", "busybox", "true")
    bad = rt("update", "--restart", "always", "auto", check=False)
    assert bad.returncode == 1
    assert "Restart policy cannot be updated because AutoRemove is enabled for the container" in bad.stderr
