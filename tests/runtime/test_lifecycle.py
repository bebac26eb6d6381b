"""The container lifecycle through the real CLI: run (foreground and -d), ps, logs, exec,
stats, stop, kill, pause, rm, export, commit, volumes; limits and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.runtime import cgroups


def _container_cgroups(ids: list[str]) -> list[Path]:
    out = []
    for root in cgroups.v1_mounts().values():
        out += [root / "pybuild" / i for i in ids if (root / "pybuild" / i).exists()]
    return out


@pytest.fixture
def rt(cli, busybox) -> Iterator:  # type: ignore[no-untyped-def]
    """The CLI over a store with busybox; afterwards no container, cgroup, mount or process remains."""
    yield cli
    ids = cli("ps", "-a", "-q", "--no-trunc", check=False).stdout.split()
    for cid in ids:
        cli("rm", "-f", "-v", cid, check=False)
    leaked = _container_cgroups(ids)
    assert not leaked, f"cgroups left behind: {leaked}"
    assert cli("ps", "-a", "-q").stdout.strip() == ""
    procs = subprocess.run(["pgrep", "-f", str(cli.root)], capture_output=True, text=True).stdout.split()
    assert not procs, f"processes left behind: {procs}"


def test_foreground_run_is_isolated(rt) -> None:
    out = rt("run", "--rm", "busybox", "sh", "-c",
             "echo pid=$$; hostname; ls /sys/class/net | tr '\\n' ,; echo; ps -o pid,comm | wc -l;"
             " awk '{print $2}' /proc/mounts | grep -c /var/tmp || true")
    lines = out.stdout.split()
    assert lines[0] == "pid=1"
    assert lines[1] != os.uname().nodename
    assert lines[2] == "eth0,lo,"  # the default bridge network: its own namespace, not the host's
    assert lines[3] == "4"  # header, sh, ps, wc: nothing of the host
    assert lines[4] == "0"  # the host's mounts are not visible
    assert rt("ps", "-a", "-q").stdout == ""  # --rm removed it


@pytest.mark.slow
def test_exit_status_and_exec_errors(rt) -> None:
    assert rt("run", "--rm", "busybox", "sh", "-c", "exit 7", check=False).returncode == 7
    out = rt("run", "--rm", "busybox", "nosuch", check=False)
    assert out.returncode == 127
    assert 'exec: "nosuch": executable file not found in $PATH' in out.stderr
    out = rt("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert out.returncode == 126
    out = rt("run", "--rm", "-u", "ghost", "busybox", "true", check=False)
    assert out.returncode != 0 and "ghost" in out.stderr and "Traceback" not in out.stderr
    out = rt("run", "--rm", "-m", "lots", "busybox", "true", check=False)
    assert out.returncode == 125 and 'invalid memory value "lots"' in out.stderr  # docker run: 125
    out = rt("run", "--rm", "--pull", "never", "nosuchimage", "true", check=False)
    assert out.returncode == 125 and "no such image: nosuchimage:latest" in out.stderr
    assert rt("ps", "-a", "-q").stdout == ""


def test_memory_limit_oom_is_reported(rt) -> None:
    out = rt("run", "--rm", "-m", "32m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1",
             check=False)
    assert out.returncode == 137
    assert "container killed: out of memory (limit 32 MiB)" in out.stderr


@pytest.mark.slow
def test_pids_limit_stops_a_fork_loop(rt) -> None:
    cid = rt("run", "-d", "--pids-limit", "20", "busybox", "sh", "-c",
             "sh -c 'for i in $(seq 50); do sleep 30 & done'; echo looped; exec sleep 30").stdout.strip()
    cg = cgroups.open_existing(f"pybuild/{cid}")
    for _ in range(100):
        if "looped" in rt("logs", cid).stdout:
            break
        time.sleep(0.1)
    assert 15 <= cg.stats().pids <= 20  # the loop got to the limit and no further
    assert "can't fork" in rt("logs", cid).stderr
    rt("rm", "-f", cid)


@pytest.mark.slow
def test_cpu_quota_holds_a_busy_loop(rt) -> None:
    cid = rt("run", "-d", "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done").stdout.strip()
    cg = cgroups.open_existing(f"pybuild/{cid}")
    time.sleep(0.5)
    first = cg.stats().cpu_usage_ns
    t0 = time.monotonic()
    time.sleep(2)
    used = (cg.stats().cpu_usage_ns - first) / 1e9 / (time.monotonic() - t0)
    assert 0.2 < used <= 0.6, used
    rt("rm", "-f", cid)


@pytest.mark.slow
def test_detached_lifecycle_from_new_invocations(rt) -> None:
    t0 = time.monotonic()
    cid = rt("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
             "trap 'echo bye; exit 3' TERM; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done").stdout.strip()
    assert time.monotonic() - t0 < 10 and len(cid) == 64
    ps = rt("ps").stdout.splitlines()
    assert ps[1].split()[0] == cid[:12] and ps[1].split()[-1] == "ticker" and "Up" in ps[1]
    time.sleep(0.5)
    assert "tick 0" in rt("logs", "ticker").stdout
    out = rt("exec", "ticker", "sh", "-c", "echo in $(hostname); ps -o pid | wc -l")
    assert out.stdout.split()[:2] == ["in", cid[:12]]
    stats = rt("stats", "--no-stream", "ticker").stdout.splitlines()
    assert stats[0].split()[:3] == ["CONTAINER", "ID", "NAME"] and stats[1].split()[1] == "ticker"
    rt("pause", "ticker")
    assert "(Paused)" in rt("ps").stdout
    rt("unpause", "ticker")
    out = rt("rm", "ticker", check=False)
    assert out.returncode == 1 and "container is running" in out.stderr
    rt("stop", "ticker")
    doc = json.loads(rt("inspect", "ticker").stdout)[0]
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 3
    assert "bye" in rt("logs", "ticker").stdout
    rt("rm", "ticker")
    assert rt("ps", "-a", "-q").stdout == ""


@pytest.mark.slow
def test_stop_kills_after_timeout_when_sigterm_is_ignored(rt) -> None:
    rt("run", "-d", "--name", "stubborn", "busybox", "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done")
    t0 = time.monotonic()
    rt("stop", "-t", "1", "stubborn")
    elapsed = time.monotonic() - t0
    assert 1 <= elapsed < 8
    doc = json.loads(rt("inspect", "stubborn").stdout)[0]
    assert doc["State"]["ExitCode"] == 137


@pytest.mark.slow
def test_init_reaps_orphaned_zombies(rt) -> None:
    def zombies(*flags: str) -> int:
        # The orphan is re-parented to PID 1, which here is `sleep`: it never reaps.
        cid = rt("run", "-d", *flags, "busybox", "sh", "-c", "sh -c 'sleep 0.1 &'; exec sleep 30").stdout.strip()
        time.sleep(1.0)
        out = rt("exec", cid, "ps", "-o", "stat,comm").stdout
        rt("rm", "-f", cid)
        return sum(1 for line in out.splitlines() if line.startswith("Z"))

    assert zombies() == 1
    assert zombies("--init") == 0


@pytest.mark.slow
def test_kill_with_signal_and_exit_code(rt) -> None:
    rt("run", "-d", "--name", "k", "busybox", "sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.1; done")
    time.sleep(0.3)
    rt("kill", "-s", "USR1", "k")
    for _ in range(100):
        doc = json.loads(rt("inspect", "k").stdout)[0]
        if doc["State"]["Status"] == "exited":
            break
        time.sleep(0.05)
    assert doc["State"]["ExitCode"] == 42


@pytest.mark.slow
def test_env_workdir_user_entrypoint(rt, workdir: Path) -> None:
    envfile = workdir / "env"
    envfile.write_text("# comment\nFROM_FILE=yes\n")
    out = rt("run", "--rm", "-e", "A=1", "--env-file", str(envfile), "-w", "/tmp/x", "-u", "nobody",
             "busybox", "sh", "-c", "echo $A $FROM_FILE $(pwd) $(id -u) $HOSTNAME").stdout.split()
    assert out[:4] == ["1", "yes", "/tmp/x", "65534"] and len(out[4]) == 12
    out = rt("run", "--rm", "--entrypoint", "echo", "busybox", "via", "entrypoint")
    assert out.stdout.strip() == "via entrypoint"


@pytest.mark.slow
def test_volumes_binds_and_tmpfs(rt, workdir: Path, busybox_tar: Path) -> None:
    host = workdir / "host"
    host.mkdir()
    (host / "f").write_text("from host\n")
    out = rt("run", "--rm", "-v", f"{host}:/h:ro", "-v", "named:/n", "--tmpfs", "/scratch", "busybox", "sh", "-c",
             "cat /h/f; touch /h/x 2>/dev/null || echo ro; echo kept > /n/file; grep -c ' /scratch tmpfs' /proc/mounts")
    assert out.stdout.split() == ["from", "host", "ro", "1"]
    out = rt("run", "--rm", "-v", "named:/n", "busybox", "cat", "/n/file")
    assert out.stdout.strip() == "kept"
    assert "named" in rt("volume", "ls").stdout
    # an image VOLUME gets an anonymous volume filled from the image, removed with rm -v
    rt("import", "-c", "VOLUME /etc", str(busybox_tar), "withvol")
    cid = rt("run", "-d", "withvol", "sh", "-c", "sleep 30").stdout.strip()
    vols = json.loads(rt("inspect", cid).stdout)[0]["Mounts"]
    assert len(vols) == 1 and vols[0]["Destination"] == "/etc"
    assert Path(vols[0]["Source"], "passwd").read_text().startswith("root:")
    rt("rm", "-f", "-v", cid)
    assert not Path(vols[0]["Source"]).exists()
    rt("volume", "rm", "named")
    assert "named" not in rt("volume", "ls").stdout


@pytest.mark.slow
def test_copy_up_export_and_commit(rt, workdir: Path) -> None:
    rt("run", "--name", "w", "busybox", "sh", "-c", "echo data > /newfile; rm /bin/vi")
    image = json.loads(rt("inspect", "busybox").stdout)[0]
    upper = Path(image["GraphDriver"]["Data"]["UpperDir"])
    assert not (upper / "newfile").exists() and (upper / "bin" / "vi").exists()  # image layer unchanged
    rt("export", "-o", str(workdir / "w.tar"), "w")
    with tarfile.open(workdir / "w.tar") as tar:
        names = set(tar.getnames())
    assert "newfile" in names and "bin/busybox" in names and "bin/vi" not in names
    assert not any(n.startswith("proc/") for n in names)
    rt("commit", "-m", "snap", "w", "snap:1")
    out = rt("run", "--rm", "snap:1", "sh", "-c", "cat /newfile; ls /bin/vi 2>&1 || true")
    assert out.stdout.splitlines()[0] == "data" and "No such file" in out.stdout
    assert "snap" in rt("history", "snap:1").stdout


@pytest.mark.slow
def test_export_of_a_running_container_is_live_and_never_follows_its_symlinks(rt, workdir: Path) -> None:
    """The live root is read through the container's own root mount (open_tree in its namespace),
    so a link the container swaps in while the tar is written is a link in the tar, never the host."""
    canary = workdir / f"host-canary-{os.getpid()}"
    canary.write_text("host secret")
    rt("run", "-d", "--name", "live", "--network", "none", "--tmpfs", "/scratch", "busybox", "sh", "-c",
       "echo live > /live; echo tmp > /scratch/t; mkdir -p /s; "
       f"while :; do mkdir /s/d 2>/dev/null; rmdir /s/d 2>/dev/null; ln -s {workdir} /s/d; rm -f /s/d; done")
    deadline = time.monotonic() + 10
    while "live" not in rt("exec", "live", "ls", "/").stdout.split() and time.monotonic() < deadline:
        time.sleep(0.1)
    for i in range(5):
        target = workdir / f"live-{i}.tar"
        rt("export", "-o", str(target), "live")
        with tarfile.open(target) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert tar.extractfile(members["live"]).read() == b"live\n"  # type: ignore[union-attr]
        assert "bin/busybox" in members
        assert not any(canary.name in name for name in members), "the export followed a swapped symlink"
        assert "scratch/t" not in members  # a mount inside the container is not its filesystem
        assert not any(n.startswith(("proc/", "sys/")) for n in members)
        link = members.get("s/d")
        assert link is None or link.isdir() or (link.issym() and link.linkname == str(workdir))
    rt("rm", "-f", "live")
    assert str(rt.root) not in Path("/proc/mounts").read_text()


@pytest.mark.slow
def test_foreground_run_survives_ctrl_c(rt) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(rt.root), "run", "--name", "fg",
                             "busybox", "sh", "-c", "trap 'echo got INT; exit 5' INT; while :; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **rt.env})
    time.sleep(1.0)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 5, err
    assert "got INT" in out


@pytest.mark.slow
def test_killing_the_cli_leaves_nothing_running(rt) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(rt.root), "run", "--name", "orphan",
                             "busybox", "sleep", "60"], env={**os.environ, **rt.env})
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    time.sleep(0.5)
    doc = json.loads(rt("inspect", "orphan").stdout)[0]
    assert doc["State"]["Status"] == "exited"
    assert str(rt.root) not in Path("/proc/mounts").read_text()
