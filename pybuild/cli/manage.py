"""Container commands docker users type every day: restart, port, top, wait, diff, rename, update."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from pybuild.cli import Settings, pass_settings, ui
from pybuild.cli.cmdline import argument, command, echo, option
from pybuild.cli.containers import limit_options
from pybuild.errors import ContainerError, PybuildError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.runtime.lifecycle import Runtime


def _runtime(settings: Settings) -> Runtime:
    from pybuild.cli.containers import _runtime as runtime

    rt: Runtime = runtime(settings)
    return rt


@command("restart")
@argument("containers", nargs=-1, required=True)
@option("-t", "--time", "timeout", type=int, help="Seconds to wait for the stop before killing it.")
@option("-s", "--signal", "sig", help="Signal to stop the container with.")
@pass_settings
def restart_cmd(settings: Settings, containers: tuple[str, ...], timeout: int | None, sig: str | None) -> None:
    """Restart one or more containers (stop, then start detached)."""
    from pybuild import records

    rt = _runtime(settings)

    def restart(name: str) -> None:
        config = rt.containers.resolve(name)
        if sig:
            from pybuild.runtime.signals import signal_number

            signal_number(sig)
            config = records.replace(config, stop_signal=sig)
        rt.restart(config, timeout)
        echo(name)

    if not ui.each(containers, restart):
        sys.exit(1)


@command("port")
@argument("container")
@argument("private_port", required=False)
@pass_settings
def port_cmd(settings: Settings, container: str, private_port: str | None) -> None:
    """List the port mappings of a container, or the one of PRIVATE_PORT[/PROTO]."""
    rt = _runtime(settings)
    config = rt.containers.resolve(container)
    bindings = rt.network_info(config).ports if rt.refresh(config).running else []
    if private_port is None:
        for b in sorted(bindings, key=lambda b: (b.container_port, b.proto)):
            echo(f"{b.container_port}/{b.proto} -> {b.host_ip or '0.0.0.0'}:{b.host_port}")
        return
    port, _, proto = private_port.partition("/")
    proto = proto or "tcp"
    if not port.isdigit() or proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"Invalid port: {private_port}", "PORT or PORT/PROTO (tcp, udp)")
    found = [b for b in bindings if b.container_port == int(port) and b.proto == proto]
    if not found:
        raise ContainerError(f"No public port '{port}/{proto}' published for {config.name}")
    for b in found:
        echo(f"{b.host_ip or '0.0.0.0'}:{b.host_port}")


def _pids_in_container(init_pid: int) -> set[int]:
    """Host pids of every process in the PID namespace of the container whose init is ``init_pid``."""
    try:
        target = os.stat(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return set()
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}/ns/pid")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.add(int(name))
    return pids


@command("top", interspersed=False)
@argument("container")
@argument("ps_args", nargs=-1)
@pass_settings
def top_cmd(settings: Settings, container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container (host ps, default -ef, filtered to its processes)."""
    rt = _runtime(settings)
    config = rt.containers.resolve(container)
    state = rt.refresh(config)
    if not state.has_process:
        raise ContainerError(f"container {config.name} is not running")
    pids = _pids_in_container(state.pid)
    args = list(ps_args) or ["-ef"]
    done = subprocess.run(["ps", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ContainerError(f"ps {' '.join(args)} failed: {done.stderr.strip() or done.returncode}")
    lines = done.stdout.splitlines()
    if not lines:
        return
    header = lines[0].split()
    if "PID" not in header:
        raise ContainerError(f"ps {' '.join(args)} shows no PID column", "keep PID in its output (docker's rule)")
    column = header.index("PID")
    echo(lines[0])
    for line in lines[1:]:
        fields = line.split(None, len(header) - 1)
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
            echo(line)


@command("wait")
@argument("containers", nargs=-1, required=True)
@pass_settings
def wait_cmd(settings: Settings, containers: tuple[str, ...]) -> None:
    """Block until containers stop, then print their exit codes."""
    rt = _runtime(settings)
    failed = False
    for name in containers:
        try:
            config = rt.containers.resolve(name)
            echo(str(rt.wait_exit(config, None).exit_code))
        except PybuildError as exc:
            echo(f"Error response from daemon: {exc.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@command("diff")
@argument("container")
@pass_settings
def diff_cmd(settings: Settings, container: str) -> None:
    """Changes to files or directories of a container's filesystem (A added, C changed, D deleted)."""
    from pybuild.runtime.changes import changes

    rt = _runtime(settings)
    config = rt.containers.resolve(container)
    layers = rt.store.layers
    rw = layers.get_rw(config.id)
    for kind, path in changes(layers.overlay / rw.mount_id / "diff", layers.overlay, layers.lowers(rw.mount_id)):
        echo(f"{kind} {path}")


@command("rename")
@argument("container")
@argument("new_name")
@pass_settings
def rename_cmd(settings: Settings, container: str, new_name: str) -> None:
    """Rename a container."""
    rt = _runtime(settings)
    config = rt.containers.resolve(container)
    rt.containers.rename(config.id, new_name)
    rt.event(rt.containers.config(config.id), "rename", oldName="/" + config.name)


@command("update")
@argument("containers", nargs=-1, required=True)
@option("--restart", help="Restart policy: no, on-failure[:max-retries], always, unless-stopped.")
@limit_options
@pass_settings
def update_cmd(settings: Settings, containers: tuple[str, ...], restart: str | None, **kw: Any) -> None:
    """Update the resource limits (applied at once to running containers) or the restart policy."""
    from pybuild.cli.containers import _memory

    changes: dict[str, Any] = {}
    for key in ("cpus", "cpu_shares", "cpu_period", "cpu_quota", "cpuset_cpus", "cpuset_mems"):
        if kw[key] is not None:
            changes[key] = kw[key]
    if kw["pids_limit"] is not None:
        changes["pids"] = kw["pids_limit"]
    if kw["memory"] is not None:
        changes["memory"] = _memory(kw["memory"])
    if kw["memory_reservation"] is not None:
        changes["memory_reservation"] = _memory(kw["memory_reservation"])
    if kw["memory_swap"] is not None:
        from pybuild.runtime.cgroups import parse_memory_swap

        changes["memory_swap"] = parse_memory_swap(kw["memory_swap"])
    policy = None
    if restart is not None:
        from pybuild.runtime.restart import parse_restart

        policy = parse_restart(restart)
    if not changes and policy is None:
        raise UsageError("you must provide one or more flags when using this command")
    rt = _runtime(settings)

    def update(name: str) -> None:
        config = rt.containers.resolve(name)
        if changes:
            config = rt.update_limits(config, **changes)
        if policy is not None:
            rt.set_restart_policy(config, policy)
        echo(name)

    if not ui.each(containers, update):
        sys.exit(1)
