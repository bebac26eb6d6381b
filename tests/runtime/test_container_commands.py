"""docker's everyday container commands: restart, port, top, wait, diff, rename, logs -t/--since/--until,
exec -d/--env-file, and ps's filters, -n/-l/-s."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Cli

pytestmark = pytest.mark.slow


@pytest.fixture
def rt(cli: Cli, busybox: str) -> Iterator[Cli]:
    yield cli
    for cid in cli("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        cli("rm", "-f", "-v", cid, check=False)


def _state(cli: Cli, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(cli("inspect", name).stdout)[0]["State"]


def _wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_restart_port_top_wait(rt: Cli) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rt("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox", "httpd", "-f", "-p", "80")
    first = _state(rt, "web")["Pid"]
    assert rt("restart", "-t", "1", "web").stdout == "web\n"
    second = _state(rt, "web")
    assert second["Running"] and second["Pid"] != first, "a new process"
    assert rt("port", "web").stdout == f"80/tcp -> 127.0.0.1:{port}\n"
    assert rt("port", "web", "80").stdout == f"127.0.0.1:{port}\n"
    missing = rt("port", "web", "81/tcp", check=False)
    assert missing.returncode == 1 and "No public port '81/tcp' published for web" in missing.stderr

    top = rt("top", "web").stdout.splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"]
    assert len(top) == 2 and "httpd -f -p 80" in top[1], top
    assert str(second["Pid"]) in top[1].split()
    custom = rt("top", "web", "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"] and custom[1].split()[1] == "httpd"

    rt("run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 1; exit 3")
    assert rt("wait", "short").stdout == "3\n"
    bad = rt("wait", "nosuch", check=False)
    assert bad.returncode == 1 and "nosuch" in bad.stderr


def test_diff_and_rename(rt: Cli) -> None:
    rt("run", "--name", "changer", "busybox", "sh", "-c",
       "echo x > /new.txt; echo y >> /etc/passwd; rm /bin/vi; mkdir -p /made/deep; rm -rf /home; mkdir /home")
    lines = rt("diff", "changer").stdout.splitlines()
    assert "A /new.txt" in lines
    assert "C /etc" in lines and "C /etc/passwd" in lines
    assert "D /bin/vi" in lines and "C /bin" in lines
    assert "A /made" in lines and "A /made/deep" in lines
    assert lines == sorted(lines, key=lambda line: line[2:])

    rt("rename", "changer", "renamed")
    assert _state(rt, "renamed")["Status"] == "exited"
    assert rt("inspect", "changer", check=False).returncode == 1
    rt("run", "-d", "--name", "other", "busybox", "sleep", "30")
    taken = rt("rename", "renamed", "other", check=False)
    assert taken.returncode == 1 and 'the container name "/other" is already in use' in taken.stderr


def test_logs_timestamps_since_until(rt: Cli) -> None:
    rt("run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo one; sleep 1.2; echo two; echo err >&2")
    rt("wait", "talker")
    stamped = rt("logs", "-t", "talker").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two"]
    first, second = (line.split(" ", 1)[0] for line in stamped)
    assert first.endswith("Z") and "T" in first
    assert rt("logs", "--since", second, "talker").stdout == "two\n"
    assert rt("logs", "--until", first, "talker").stdout == "one\n"
    assert rt("logs", "--since", "1h", "talker").stdout == "one\ntwo\n"
    assert rt("logs", "--until", "1h", "talker").stdout == "", "an hour ago: before anything was written"
    tail = rt("logs", "-n", "2", "talker")
    assert (tail.stdout, tail.stderr) == ("two\n", "err\n"), "the last two lines, each on its stream"
    assert rt("logs", "-n", "all", "talker").stdout == "one\ntwo\n"
    bad = rt("logs", "--since", "yesterday", "talker", check=False)
    assert bad.returncode == 1 and "invalid value for --since/--until" in bad.stderr


def test_exec_detached_with_an_env_file(rt: Cli, workdir) -> None:  # type: ignore[no-untyped-def]
    envfile = workdir / "env"
    envfile.write_text("# comment\nGREETING=hello\n\nWHO=world\n")
    rt("run", "-d", "--name", "box", "busybox", "sleep", "30")
    done = rt("exec", "-d", "--env-file", str(envfile), "box", "sh", "-c", "echo $GREETING $WHO > /out")
    assert done.stdout == ""
    _wait_until(lambda: rt("exec", "box", "cat", "/out", check=False).stdout == "hello world\n")
    assert rt("exec", "--env-file", str(envfile), "-e", "WHO=you", "box", "sh", "-c",
              "echo $GREETING $WHO").stdout == "hello you\n"


def test_ps_filters_last_latest_size(rt: Cli) -> None:
    rt("run", "--name", "ok", "--label", "tier=db", "busybox", "true")
    rt("run", "--name", "failed", "busybox", "sh", "-c", "exit 2", check=False)
    rt("run", "-d", "--name", "up", "--label", "tier=web", "busybox", "sleep", "30")
    rt("run", "-d", "--name", "up2", "busybox", "sh", "-c", "echo hi > /f; sleep 30")

    def names(*args: str) -> list[str]:
        return [line.split()[-1] for line in rt("ps", *args).stdout.splitlines()[1:]]

    assert names() == ["up2", "up"]
    assert names("-a") == ["up2", "up", "failed", "ok"]
    assert names("-f", "status=exited") == ["failed", "ok"]
    assert names("-a", "-f", "exited=2") == ["failed"]
    assert names("-a", "-f", "exited=0") == ["ok"]
    assert names("-a", "-f", "label=tier") == ["up", "ok"]
    assert names("-a", "-f", "label=tier=web") == ["up"]
    assert names("-a", "-f", "name=up") == ["up2", "up"], "name is a regex, not anchored"
    assert names("-a", "-f", "name=^up$") == ["up"]
    assert names("-a", "-f", "name=up", "-f", "name=ok") == ["up2", "up", "ok"], "one key: alternatives"
    assert names("-a", "-f", "name=up", "-f", "label=tier") == ["up"], "two keys: both"
    assert names("-a", "-f", "ancestor=busybox") == ["up2", "up", "failed", "ok"]
    assert names("-a", "-f", "before=up") == ["failed", "ok"]
    assert names("-a", "-f", "since=failed") == ["up2", "up"]
    assert names("-n", "2") == ["up2", "up"]
    assert names("-l") == ["up2"]
    up2_id = json.loads(rt("inspect", "up2").stdout)[0]["Id"]
    assert rt("ps", "-q", "-f", f"id={up2_id[:6]}").stdout.split() == [up2_id[:12]]
    sized = rt("ps", "-s", "-f", "name=up2").stdout.splitlines()
    assert sized[0].split()[-1] == "SIZE"
    assert "(virtual " in sized[1]
    bad = rt("ps", "-f", "colour=red", check=False)
    assert bad.returncode == 1 and "invalid filter 'colour'" in bad.stderr
    bad = rt("ps", "-f", "status=sleeping", check=False)
    assert bad.returncode == 1 and "invalid filter 'status=sleeping'" in bad.stderr


def _cgroup_file(controller: str, cid: str, name: str) -> str:
    from pybuild.runtime import cgroups

    root = cgroups.v1_mounts()[controller]
    return (root / "pybuild" / cid / name).read_text().strip()


def test_resource_flags_and_update(rt: Cli) -> None:
    rt("run", "-d", "--name", "lim", "--cpu-period", "50000", "--cpu-quota", "25000", "--cpuset-cpus", "0",
       "--memory", "64m", "--memory-reservation", "32m", "busybox", "sleep", "30")
    cid = json.loads(rt("inspect", "lim").stdout)[0]["Id"]
    host = json.loads(rt("inspect", "lim").stdout)[0]["HostConfig"]
    assert (host["CpuPeriod"], host["CpuQuota"], host["CpusetCpus"], host["MemoryReservation"]) == \
        (50000, 25000, "0", 32 << 20)
    assert _cgroup_file("cpu", cid, "cpu.cfs_period_us") == "50000"
    assert _cgroup_file("cpu", cid, "cpu.cfs_quota_us") == "25000"
    assert _cgroup_file("cpuset", cid, "cpuset.cpus") == "0"
    assert _cgroup_file("memory", cid, "memory.soft_limit_in_bytes") == str(32 << 20)

    assert rt("update", "--cpu-quota", "40000", "--memory", "96m", "--pids-limit", "50", "lim").stdout == "lim\n"
    assert _cgroup_file("cpu", cid, "cpu.cfs_quota_us") == "40000"
    assert _cgroup_file("cpu", cid, "cpu.cfs_period_us") == "50000", "what was not given stays"
    assert _cgroup_file("memory", cid, "memory.limit_in_bytes") == str(96 << 20)
    assert _cgroup_file("pids", cid, "pids.max") == "50"
    host = json.loads(rt("inspect", "lim").stdout)[0]["HostConfig"]
    assert (host["CpuQuota"], host["Memory"], host["PidsLimit"]) == (40000, 96 << 20, 50), "recorded too"

    conflict = rt("run", "--rm", "--cpus", "0.5", "--cpu-period", "50000", "busybox", "true", check=False)
    assert conflict.returncode == 125 and "Conflicting options" in conflict.stderr
    low = rt("update", "--memory", "16m", "--memory-reservation", "32m", "lim", check=False)
    assert low.returncode == 1 and "Minimum memory limit can not be less than memory reservation" in low.stderr
    nothing = rt("update", "lim", check=False)
    assert nothing.returncode == 1 and "you must provide one or more flags" in nothing.stderr
    bad = rt("run", "--rm", "--cpuset-cpus", "zero", "busybox", "true", check=False)
    assert bad.returncode == 125 and "invalid value zero for cpuset-cpus" in bad.stderr
