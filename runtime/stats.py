"""``pybuild stats``: a running container's CPU, memory, PIDs (its cgroup) and network I/O (its netns)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from pybuild.records import record

from . import cgroups

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .containers import ContainerConfig
    from .lifecycle import Runtime


@record(frozen=True)
class ContainerStats:
    short_id: str
    name: str
    cpu_percent: float
    memory_usage: int
    memory_limit: int
    pids: int
    net_rx: int
    net_tx: int


def sample(runtime: Runtime, config: ContainerConfig, interval: float = 0.5) -> ContainerStats:
    """One sample: CPU use is averaged over ``interval`` seconds; memory is limited by the host without a limit."""
    state = runtime.require_running(config)
    cg = cgroups.open_existing(config.cgroup_name)
    first = cg.stats()
    t0 = time.monotonic()
    time.sleep(interval)
    second = cg.stats()
    elapsed = time.monotonic() - t0
    cpu = max(second.cpu_usage_ns - first.cpu_usage_ns, 0) / (elapsed * 1e9) * 100
    rx, tx = _net_bytes(state.pid)
    return ContainerStats(config.short_id, config.name, cpu, second.memory_usage,
                          second.memory_limit or _host_memory(), second.pids, rx, tx)


def _net_bytes(pid: int) -> tuple[int, int]:
    """Bytes received and sent on every interface but lo of the network namespace ``pid`` is in."""
    rx = tx = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                continue
            fields = rest.split()
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
