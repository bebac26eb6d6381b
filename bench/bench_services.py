#!/usr/bin/env python3
"""Supervision soak: N long-running services with 1 s health checks and ``--restart always``.

usage: bench/bench_services.py [--services 20] [--seconds 600] [--interval 1s] [--workdir /var/tmp]

Starts the services (busybox ``sleep``, a ``--health-cmd`` that runs a
shell), lets them run for the given time, and reports the CPU time their
monitors used (their own and that of the probe shims they reaped, from
/proc/PID/stat), as a share of one CPU, with the number of probes run. It
counts what the monitors hold at the start and at the end (descriptors,
threads, child processes), the store's mounts and cgroups, and says whether
anything grew. Then removes everything. Figures, not assertions: the
machine's noise is the reader's to judge.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def pybuild(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(root), *args], check=True,
                          capture_output=True, text=True, cwd=REPO)
    return done.stdout


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def holdings(pid: int) -> tuple[int, int, int]:
    """(descriptors, threads, children) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    children = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                children += 1
    return fds, threads, children


def store_mounts(root: Path) -> int:
    return sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line)


def pybuild_cgroups() -> int:
    return sum(1 for _ in Path("/sys/fs/cgroup/pids/pybuild").glob("*")) if Path(
        "/sys/fs/cgroup/pids/pybuild").is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-services-", dir=args.workdir))
    root = work / "root"
    try:
        subprocess.run([str(REPO / "scripts" / "make-busybox-rootfs"), str(work / "bb.tar")], check=True,
                       capture_output=True)
        pybuild(root, "import", str(work / "bb.tar"), "busybox:latest")
        cgroups_before = pybuild_cgroups()
        names = [f"svc{i}" for i in range(args.services)]
        for name in names:
            pybuild(root, "run", "-d", "--name", name, "--network", "none", "--restart", "always",
                    "--health-cmd", "test -d /proc/1", "--health-interval", args.interval, "busybox", "sleep", "1d")
        time.sleep(3)  # past the first probes: threads and pipes in place
        monitors = {}
        for name in names:
            cid = pybuild(root, "inspect", "-f", "{{.Id}}", name).strip()
            monitors[name] = json.loads((root / "containers" / cid / "state.json").read_text())["monitor_pid"]
        held_before = {n: holdings(pid) for n, pid in monitors.items()}
        mounts_before = store_mounts(root)
        cpu_before = sum(cpu_seconds(pid) for pid in monitors.values())
        wall_before = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - wall_before
        cpu = sum(cpu_seconds(pid) for pid in monitors.values()) - cpu_before
        held_after = {n: holdings(pid) for n, pid in monitors.items()}
        grown = {n: (held_before[n], held_after[n]) for n in names
                 if held_after[n][0] > held_before[n][0] or held_after[n][2] > held_before[n][2] + 1}
        statuses = pybuild(root, "ps", "--format", "{{.Status}}").splitlines()
        print(f"{args.services} services, health checks every {args.interval}, {wall:.0f} s")
        print(f"supervision CPU: {cpu:.2f} s = {100 * cpu / wall:.2f}% of one CPU "
              f"({100 * cpu / wall / args.services:.3f}% per service)")
        print(f"healthy at the end: {sum(1 for s in statuses if s.endswith('(healthy)'))}/{args.services}")
        print(f"monitor descriptors/threads/children, first service: {held_before[names[0]]} -> "
              f"{held_after[names[0]]}; services whose monitor grew: {len(grown)} {grown or ''}")
        print(f"store mounts: {mounts_before} -> {store_mounts(root)}; "
              f"pybuild cgroups (pids): {pybuild_cgroups() - cgroups_before} for {args.services} services")
    finally:
        subprocess.run([sys.executable, "-m", "pybuild", "--root", str(root), "system", "reset", "-f"],
                       capture_output=True, cwd=REPO)
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
