"""Container commands: run, create, start, ps, stop, kill, pause, unpause, rm, exec, logs,
stats, export, commit, volume."""

from __future__ import annotations

import contextlib
import sys
import time

from pybuild.cli import Settings, pass_settings, ui
from pybuild.cli.cmdline import argument, command, echo, group, option
from pybuild.errors import PybuildError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# run, create and exec stop reading options at the image (or container): what follows is the command.
# Only --help asks for help there: -h is --hostname.
RUN_HELP = ("--help",)


def _runtime(settings: Settings) -> Any:
    from pybuild.runtime.lifecycle import Runtime

    rt = Runtime(settings.store())
    rt.recover_supervision()  # what a daemon would do on start: containers whose monitor died
    return rt


def _memory(value: str | None) -> int | None:
    if value is None or value == "0":
        return None
    from pybuild.runtime.cgroups import parse_memory

    return int(parse_memory(value))


def _run_options(image: str, command: tuple[str, ...], **kw: Any) -> Any:
    from pybuild.runtime.lifecycle import RunOptions

    memory = _memory(kw["memory"])
    swap: int | None
    if kw["memory_swap"] is None:
        swap = 2 * memory if memory is not None else None  # docker: swap defaults to as much as memory
    elif kw["memory_swap"] == "-1":
        swap = -1
    else:
        from pybuild.runtime.cgroups import parse_memory_swap

        swap = parse_memory_swap(kw["memory_swap"])
    labels = ui.key_values(kw["label"], "--label")
    return RunOptions(
        image=image, command=list(command), entrypoint=kw["entrypoint"], env=list(kw["env"]),
        env_files=list(kw["env_file"]), workdir=kw["workdir"], user=kw["user"], hostname=kw["hostname"],
        name=kw["name"], network=kw["network"], publish=list(kw["publish"]), dns=list(kw["dns"]),
        add_hosts=list(kw["add_host"]), tty=kw["tty"], interactive=kw["interactive"],
        volumes=list(kw["volume"]), tmpfs=list(kw["tmpfs"]),
        limits=_limits(kw, memory, swap), init=kw["init"],
        stop_signal=kw["stop_signal"], stop_timeout=kw["stop_timeout"], auto_remove=kw.get("rm", False),
        labels=labels, mounts=list(kw["mount"]), cap_add=list(kw["cap_add"]), cap_drop=list(kw["cap_drop"]),
        privileged=kw["privileged"], read_only=kw["read_only"], security_opt=list(kw["security_opt"]),
        devices=list(kw["device"]), ulimits=list(kw["ulimit"]), sysctls=list(kw["sysctl"]),
        shm_size=_memory(kw["shm_size"]), group_add=list(kw["group_add"]), restart=_restart(kw["restart"]),
        healthcheck=_healthcheck(kw), no_healthcheck=kw["no_healthcheck"])


HEALTH_FLAGS = ("health_cmd", "health_interval", "health_timeout", "health_start_period", "health_start_interval",
                "health_retries")


def _healthcheck(kw: dict[str, Any]) -> Any:
    """``--health-*`` as docker's CLI reads them (durations in Go's syntax, kept in nanoseconds)."""
    given = [name for name in HEALTH_FLAGS if kw[name] is not None]
    if kw["no_healthcheck"]:
        if given:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return None
    if not given:
        return None
    from pybuild.builder.parse import parse_duration
    from pybuild.store.model import Healthcheck

    def nanos(name: str) -> int:
        text = kw[name]
        if text is None:
            return 0
        flag = "--" + name.replace("_", "-")
        try:
            value = parse_duration(text)
        except ValueError:
            raise UsageError(f'invalid argument "{text}" for "{flag}" flag: time: invalid duration "{text}"') \
                from None
        if value < 0:
            raise UsageError(f"{flag} cannot be negative")
        if 0 < value < 1_000_000:
            raise UsageError(f"{flag} cannot be less than 1ms")
        return value

    retries = kw["health_retries"] or 0
    if retries < 0:
        raise UsageError("--health-retries cannot be negative")
    return Healthcheck(test=("CMD-SHELL", kw["health_cmd"]) if kw["health_cmd"] else (),
                       interval=nanos("health_interval"), timeout=nanos("health_timeout"),
                       start_period=nanos("health_start_period"), start_interval=nanos("health_start_interval"),
                       retries=retries)


def _restart(text: str | None) -> Any:
    from pybuild.runtime.restart import RestartPolicy, parse_restart

    return RestartPolicy() if text is None else parse_restart(text)


def _limits(kw: dict[str, Any], memory: int | None, swap: int | None) -> Any:
    from pybuild.runtime.cgroups import Limits

    return Limits(memory=memory, memory_swap=swap, cpus=kw["cpus"], cpu_shares=kw["cpu_shares"],
                  pids=kw["pids_limit"], cpu_period=kw["cpu_period"], cpu_quota=kw["cpu_quota"],
                  cpuset_cpus=kw["cpuset_cpus"], cpuset_mems=kw["cpuset_mems"],
                  memory_reservation=_memory(kw["memory_reservation"]))


LIMIT_OPTIONS = (
    ("-m", "--memory", None, "Memory limit (e.g. 64m, 1g)."),
    ("--memory-swap", None, None, "Memory plus swap limit; -1 for unlimited swap."),
    ("--memory-reservation", None, None, "Memory soft limit (e.g. 32m)."),
    ("--cpus", None, float, "Number of CPUs (e.g. 0.5)."),
    ("-c", "--cpu-shares", int, "Relative CPU weight."),
    ("--cpu-period", None, int, "Limit the CPU CFS period (microseconds)."),
    ("--cpu-quota", None, int, "Limit the CPU CFS quota (microseconds per period)."),
    ("--cpuset-cpus", None, None, "CPUs in which to allow execution (0-3, 0,1)."),
    ("--cpuset-mems", None, None, "Memory nodes in which to allow execution (0-3, 0,1)."),
    ("--pids-limit", None, int, "Maximum number of processes (-1: unlimited)."),
)


def limit_options(f: Any) -> Any:
    """The resource flags of run, create and update."""
    for first, second, kind, text in reversed(LIMIT_OPTIONS):
        names = [first] if second is None else [first, second]
        f = option(*names, type=kind, help=text)(f)
    return f


def container_options(f: Any) -> Any:
    options = [
        option("-i", "--interactive", is_flag=True, help="Keep stdin open."),
        option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal."),
        option("--name", help="Assign a name to the container."),
        option("-e", "--env", multiple=True, help="Set an environment variable (NAME=value or NAME)."),
        option("--env-file", multiple=True, help="Read environment variables from a file."),
        option("-w", "--workdir", help="Working directory inside the container."),
        option("-u", "--user", help="user[:group] or uid[:gid]."),
        option("--entrypoint", help="Override the image's ENTRYPOINT."),
        option("-h", "--hostname", help="Container host name."),
        option("--network", "--net", "network", default="bridge", show_default=True,
               help="bridge, none, host, container:NAME or a network made with 'network create'."),
        option("-p", "--publish", multiple=True,
               help="Publish a port: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]."),
        option("--dns", multiple=True, help="A nameserver for the container's resolv.conf."),
        option("--add-host", multiple=True, help="An /etc/hosts entry: NAME:IP (IP may be host-gateway)."),
        option("-v", "--volume", multiple=True, help="Bind mount or volume: SRC:DEST[:ro], or DEST."),
        option("--tmpfs", multiple=True, help="Mount a tmpfs: DEST[:options]."),
        option("--mount", multiple=True,
               help="Mount: type=bind|volume|tmpfs,source=SRC,target=DEST[,readonly][,bind-propagation=P]"
                    "[,tmpfs-size=N][,tmpfs-mode=M]."),
        option("--cap-add", multiple=True, help="Add a Linux capability (NET_ADMIN, CAP_SYS_TIME, ALL)."),
        option("--cap-drop", multiple=True, help="Drop a Linux capability (or ALL)."),
        option("--privileged", is_flag=True,
               help="Every capability and host device, no seccomp, no masked or read-only paths."),
        option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only."),
        option("--security-opt", multiple=True,
               help="seccomp=PROFILE.json|unconfined, no-new-privileges[=true|false], systempaths=unconfined."),
        option("--device", multiple=True, help="Add a host device: HOST[:CONTAINER[:PERMS]] (PERMS of rwm)."),
        option("--ulimit", multiple=True, help="A resource limit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048)."),
        option("--sysctl", multiple=True, help="A namespaced kernel parameter: NAME=VALUE."),
        option("--shm-size", help="Size of /dev/shm (e.g. 128m; default 64m)."),
        option("--group-add", multiple=True, help="An additional group (name or gid) to run as."),
        option("--init", is_flag=True,
               help="Run an init (tini) as PID 1 that forwards signals and reaps zombies."),
        option("--stop-signal", help="Signal to stop the container (default: the image's, or SIGTERM)."),
        option("--stop-timeout", type=int, help="Seconds to wait before killing on stop (default 10)."),
        option("-l", "--label", multiple=True, help="Set a label (key=value)."),
        option("--pull", "pull_policy", default="missing", show_default=True,
               help="Pull the image before creating: missing, always or never."),
        option("--restart", help="Restart policy: no, on-failure[:max-retries], always, unless-stopped."),
        option("--health-cmd", help="Command to run to check health (run with /bin/sh -c)."),
        option("--health-interval", help="Time between running the check (ms|s|m|h), default 30s."),
        option("--health-timeout", help="Maximum time to allow one check to run (ms|s|m|h), default 30s."),
        option("--health-start-period", help="Start period for the container to initialize before counting "
                                             "retries towards unstable (ms|s|m|h)."),
        option("--health-start-interval", help="Time between running the check during the start period "
                                               "(ms|s|m|h), default 5s."),
        option("--health-retries", type=int, help="Consecutive failures needed to report unhealthy (default 3)."),
        option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK."),
    ]
    for decorate in reversed(options):
        f = decorate(f)
    return limit_options(f)


@command("run", interspersed=False, help_flags=RUN_HELP)
@argument("image")
@argument("command", nargs=-1)
@option("-d", "--detach", is_flag=True, help="Run in the background and print the container ID.")
@option("--rm", is_flag=True, help="Remove the container when it exits.")
@container_options
@pass_settings
def run_cmd(settings: Settings, /, image: str, command: tuple[str, ...], detach: bool, **kw: Any) -> None:
    """Run a command in a new container."""
    from pybuild.runtime.run import oom_message

    rt = _runtime(settings)
    with _create_error():
        _ensure_image(rt.store, image, kw.pop("pull_policy"))
        config = rt.create(_run_options(image, command, **kw))
    if detach:
        rt.start_detached(config)
        echo(config.id)
        return
    result = rt.run_foreground(config)
    if result.oom_killed:
        echo(oom_message(result.memory_limit), err=True)
    sys.exit(result.exit_code)


@command("create", interspersed=False, help_flags=RUN_HELP)
@argument("image")
@argument("command", nargs=-1)
@option("--rm", is_flag=True, help="Remove the container when it exits.")
@container_options
@pass_settings
def create_cmd(settings: Settings, /, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create a container without starting it; prints its ID."""
    rt = _runtime(settings)
    with _create_error():
        _ensure_image(rt.store, image, kw.pop("pull_policy"))
        config = rt.create(_run_options(image, command, **kw))
    echo(config.id)


def _ensure_image(store: Any, image: str, policy: str) -> None:
    """docker's --pull: ``missing`` pulls an image the store lacks (saying so on stderr, as docker does),
    ``always`` pulls every time, ``never`` only uses the store."""
    from pybuild.errors import ImageNotFound
    from pybuild.store import reference as _reference

    if policy not in ("missing", "always", "never"):
        raise UsageError(f'invalid pull option: "{policy}"', "use missing, always or never")
    if policy == "never":
        return
    try:
        store.images.resolve(image)
        if policy == "missing":
            return
    except ImageNotFound:
        pass
    try:
        ref = _reference.parse(image)
    except PybuildError:
        return  # an ID prefix or an unusual name: create says what is wrong with it
    if policy == "missing":
        echo(f"Unable to find image '{ref.familiar()}' locally", err=True)
    from pybuild.cli.progress import make_progress
    from pybuild.registry.pull import pull
    from pybuild.registry.transport import RegistryOptions

    progress = make_progress(False, out=sys.stderr)
    try:
        pull(store, ref, None, progress, options=RegistryOptions.from_env([]))
    finally:
        progress.close()


@contextlib.contextmanager
def _create_error() -> Any:
    """A container that cannot be created exits 125, as ``docker run``/``create`` do (not 1)."""
    try:
        yield
    except PybuildError as exc:
        if exc.exit_code == 1:
            exc.exit_code = 125
        raise


@command("start")
@argument("containers", nargs=-1, required=True)
@option("-a", "--attach", is_flag=True, help="Run in the foreground with the terminal attached.")
@pass_settings
def start_cmd(settings: Settings, containers: tuple[str, ...], attach: bool) -> None:
    """Start created or stopped containers."""
    rt = _runtime(settings)
    for name in containers:
        config = rt.containers.resolve(name)
        if attach:
            sys.exit(rt.run_foreground(config).exit_code)
        rt.start_detached(config)
        echo(name)


@command("ps")
@option("-a", "--all", "all_", is_flag=True, help="Show all containers (default: running only).")
@option("-q", "--quiet", is_flag=True, help="Only show container IDs.")
@option("--no-trunc", is_flag=True, help="Don't truncate output.")
@option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
        help="Filter: id, name, label, status, exited, ancestor, before, since, volume, network, publish, expose.")
@option("--format", "fmt", help="Go template (table, json, or {{.ID}} ...).")
@option("-n", "--last", type=int, default=-1, help="Show the N last created containers (all states).")
@option("-l", "--latest", is_flag=True, help="Show the latest created container (all states).")
@option("-s", "--size", is_flag=True, help="Show total file sizes.")
@pass_settings
def ps_cmd(settings: Settings, all_: bool, quiet: bool, no_trunc: bool, filters: tuple[str, ...],
           fmt: str | None, last: int, latest: bool, size: bool) -> None:
    """List containers."""
    from pybuild.cli import pslist
    from pybuild.cli.filters import Filters

    rt = _runtime(settings)
    rows = pslist.select(rt, all_=all_, filters=Filters(filters, pslist.PS_FILTERS), last=1 if latest else last,
                         size=size, trunc=not no_trunc)
    if quiet:
        for row in rows:
            echo(row.ID)
        return
    if fmt:
        from pybuild.cli import formatting

        formatting.emit(fmt, rows, pslist.HEADERS)
        return
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    if size:
        headers.append("SIZE")
    ui.table(headers, [(r.ID, r.Image, r.Command, r.RunningFor, r.Status, r.Ports, r.Names,
                        *((r.Size,) if size else ())) for r in rows])


def _each(settings: Settings, names: tuple[str, ...], action: Any) -> None:
    """Apply ``action`` to each container, reporting failures per container, as docker does."""
    rt = _runtime(settings)

    def one(name: str) -> None:
        action(rt, rt.containers.resolve(name))
        echo(name)

    if not ui.each(names, one):
        sys.exit(1)


@command("stop")
@argument("containers", nargs=-1, required=True)
@option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing it.")
@option("-s", "--signal", "sig", help="Signal to send instead of the container's stop signal.")
@pass_settings
def stop_cmd(settings: Settings, containers: tuple[str, ...], timeout: int | None, sig: str | None) -> None:
    """Stop running containers (stop signal, then SIGKILL after the timeout)."""
    from pybuild import records

    def stop(rt: Any, config: Any) -> None:
        if sig:
            from pybuild.runtime.signals import signal_number

            signal_number(sig)
            config = records.replace(config, stop_signal=sig)
        rt.stop(config, timeout)

    _each(settings, containers, stop)


@command("kill")
@argument("containers", nargs=-1, required=True)
@option("-s", "--signal", "sig", default="KILL", show_default=True, help="Signal to send.")
@pass_settings
def kill_cmd(settings: Settings, containers: tuple[str, ...], sig: str) -> None:
    """Send a signal to running containers."""
    from pybuild.runtime.signals import signal_number

    number = signal_number(sig)
    _each(settings, containers, lambda rt, c: rt.kill(c, number))


@command("pause")
@argument("containers", nargs=-1, required=True)
@pass_settings
def pause_cmd(settings: Settings, containers: tuple[str, ...]) -> None:
    """Freeze all processes of containers."""
    _each(settings, containers, lambda rt, c: rt.pause(c))


@command("unpause")
@argument("containers", nargs=-1, required=True)
@pass_settings
def unpause_cmd(settings: Settings, containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""
    _each(settings, containers, lambda rt, c: rt.unpause(c))


@command("rm")
@argument("containers", nargs=-1, required=True)
@option("-f", "--force", is_flag=True, help="Kill a running container first.")
@option("-v", "--volumes", is_flag=True, help="Also remove its anonymous volumes.")
@pass_settings
def rm_cmd(settings: Settings, containers: tuple[str, ...], force: bool, volumes: bool) -> None:
    """Remove containers (their layer, cgroup and record)."""
    _each(settings, containers, lambda rt, c: rt.remove(c.id, force=force, volumes=volumes))


@command("exec", interspersed=False, help_flags=RUN_HELP)
@argument("container")
@argument("command", nargs=-1, required=True)
@option("-i", "--interactive", is_flag=True)
@option("-t", "--tty", is_flag=True)
@option("-e", "--env", multiple=True)
@option("--env-file", "env_files", multiple=True, help="Read environment variables from a file.")
@option("-u", "--user")
@option("-w", "--workdir")
@option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@option("--privileged", is_flag=True, hidden=True, help="Not supported.")
@pass_settings
def exec_cmd(settings: Settings, container: str, command: tuple[str, ...], interactive: bool, tty: bool,
             env: tuple[str, ...], env_files: tuple[str, ...], user: str | None, workdir: str | None,
             detach: bool, privileged: bool) -> None:
    """Run a command in a running container (joins its namespaces and cgroup)."""
    from pybuild.runtime.environment import read_env_file

    if privileged:
        raise UsageError("exec --privileged is not supported")
    rt = _runtime(settings)
    config = rt.containers.resolve(container)
    environment = [line for path in env_files for line in read_env_file(path)] + list(env)
    if detach:
        rt.require_running(config)
        import subprocess

        argv = [sys.executable, "-m", "pybuild", "--root", str(rt.store.root), "exec"]
        for item in environment:
            argv += ["-e", item]
        if user:
            argv += ["-u", user]
        if workdir:
            argv += ["-w", workdir]
        subprocess.Popen([*argv, config.id, *command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        return
    sys.exit(rt.exec(config, list(command), env=environment, user=user, workdir=workdir, tty=tty,
                     interactive=interactive))


@command("logs")
@argument("container")
@option("-f", "--follow", is_flag=True, help="Follow the output until the container exits.")
@option("-n", "--tail", help='Only the last N lines ("all" for every line).')
@option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@option("--since", help="Only lines since a time (RFC 3339, Unix time) or a duration (42m).")
@option("--until", help="Only lines before a time (RFC 3339, Unix time) or a duration (42m).")
@option("--details", is_flag=True, help="Accepted for docker compatibility (no extra attributes are logged).")
@pass_settings
def logs_cmd(settings: Settings, container: str, follow: bool, tail: str | None, timestamps: bool,
             since: str | None, until: str | None, details: bool) -> None:
    """Show the output of a container."""
    from pybuild.runtime.logs import copy_logs, log_time

    lines: int | None = None
    if tail is not None and tail != "all":
        try:
            lines = int(tail)
        except ValueError:
            raise UsageError(f"invalid value for --tail: {tail!r}", "a number of lines, or all") from None
        if lines < 0:
            lines = None  # docker: a negative count is all of it
    rt = _runtime(settings)
    copy_logs(rt, rt.containers.resolve(container), sys.stdout.buffer, sys.stderr.buffer, follow=follow,
              tail=lines, timestamps=timestamps, since=log_time(since) if since else None,
              until=log_time(until) if until else None)


@command("stats")
@argument("containers", nargs=-1)
@option("--no-stream", is_flag=True, help="Print one sample and exit.")
@option("-a", "--all", "all_", is_flag=True, help="Show all containers (default: running only).")
@option("--no-trunc", is_flag=True, help="Don't truncate output.")
@option("--format", "fmt", help="Go template (table, json, or {{.Name}} {{.CPUPerc}} ...).")
@pass_settings
def stats_cmd(settings: Settings, containers: tuple[str, ...], no_stream: bool, all_: bool, no_trunc: bool,
              fmt: str | None) -> None:
    """Live resource usage: CPU %, memory, network, PIDs (from the cgroup files)."""
    from pybuild.runtime.stats import sample

    rt = _runtime(settings)
    headers = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
               "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
               "PIDs": "PIDS"}
    while True:
        configs = [rt.containers.resolve(n) for n in containers] if containers else \
            [c for c in rt.containers.walk() if all_ or rt.refresh(c).running]
        rows: list[dict[str, str]] = []
        for config in configs:
            with contextlib.suppress(PybuildError) if not containers else contextlib.nullcontext():
                s = sample(rt, config)
                mem_pct = 100.0 * s.memory_usage / s.memory_limit if s.memory_limit else 0.0
                rows.append({"Container": containers[len(rows)] if containers else (config.id if no_trunc
                                                                                   else s.short_id),
                             "ID": config.id if no_trunc else s.short_id, "Name": s.name,
                             "CPUPerc": f"{s.cpu_percent:.2f}%",
                             "MemUsage": f"{ui.binary_size(s.memory_usage)} / {ui.binary_size(s.memory_limit)}",
                             "MemPerc": f"{mem_pct:.2f}%",
                             "NetIO": f"{ui.human_size(s.net_rx)} / {ui.human_size(s.net_tx)}",
                             "BlockIO": "0B / 0B", "PIDs": str(s.pids)})
        if not no_stream and sys.stdout.isatty():  # clear the screen, on a terminal only
            echo("\x1b[2J\x1b[H", nl=False)
        if fmt:
            from pybuild.cli import formatting

            formatting.emit(fmt, rows, headers)
        else:
            ui.table(("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "PIDS"),
                     [(r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"], r["NetIO"], r["PIDs"])
                      for r in rows])
        if no_stream:
            return
        sys.stdout.flush()
        time.sleep(0.5)


@command("export")
@argument("container")
@option("-o", "--output", help="Write to a file instead of stdout.")
@pass_settings
def export_cmd(settings: Settings, container: str, output: str | None) -> None:
    """Export a container's filesystem as a tar archive."""
    from pybuild.runtime.export import export_container

    rt = _runtime(settings)
    config = rt.containers.resolve(container)
    if output is None:
        if sys.stdout.isatty():
            raise UsageError("refusing to write a tar to a terminal", "use -o FILE or redirect stdout")
        export_container(rt, config, sys.stdout.buffer)
        return
    import os

    tmp = output + ".tmp"
    try:
        with open(tmp, "wb") as f:
            export_container(rt, config, f)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@command("commit")
@argument("container")
@argument("reference", required=False)
@option("-m", "--message", default="")
@option("-a", "--author", default="")
@option("-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction to the config.")
@option("-p/--no-pause", "pause", default=True, help="Pause the container while committing.")
@pass_settings
def commit_cmd(settings: Settings, container: str, reference: str | None, message: str, author: str,
               changes: tuple[str, ...], pause: bool) -> None:
    """Create a new image from a container's changes."""
    from pybuild.store import reference as _reference

    ref = _reference.parse(reference) if reference else None
    config_changes = None
    if changes:
        from pybuild.cli.build import config_from_changes

        config_changes = config_from_changes(changes)
    from pybuild.runtime.commit import commit_container

    rt = _runtime(settings)
    image = commit_container(rt, rt.containers.resolve(container), ref, message=message, author=author,
                             changes=config_changes, pause=pause)
    echo(image.id)


def _port_bindings(config: Any) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for b in config.ports:
        out.setdefault(b.key, []).append({"HostIp": b.host_ip, "HostPort": str(b.host_port) if b.host_port else ""})
    return out


def container_inspect_doc(rt: Any, config: Any) -> dict[str, Any]:
    state = rt.refresh(config)
    limits = config.limits
    layers = rt.store.layers
    graph: dict[str, str] = {}
    with contextlib.suppress(PybuildError):
        rw = layers.get_rw(config.id)
        lowers = [str((layers.overlay / p).resolve()) for p in layers.lowers(rw.mount_id)]
        graph = {"LowerDir": ":".join(lowers), "UpperDir": str(layers.overlay / rw.mount_id / "diff"),
                 "WorkDir": str(layers.overlay / rw.mount_id / "work"),
                 "MergedDir": str(layers.overlay / rw.mount_id / "merged")}
    return {
        "Id": config.id,
        "Created": config.created,
        "Path": config.args[0],
        "Args": list(config.args[1:]),
        "State": {"Status": state.status, "Running": state.running,
                  "Paused": state.status == "paused", "Restarting": state.status == "restarting",
                  "OOMKilled": state.oom_killed, "Dead": False, "Pid": state.pid,
                  "ExitCode": state.exit_code, "Error": state.error, "StartedAt": state.started_at,
                  "FinishedAt": state.finished_at,
                  **({"Health": _health_doc(state.health)} if _has_check(config) else {})},
        "Image": config.image_id,
        "Name": "/" + config.name,
        "RestartCount": state.restart_count,
        "HostConfig": {"Memory": limits.memory or 0, "MemorySwap": limits.memory_swap or 0,
                       "NanoCpus": int((limits.cpus or 0) * 1e9), "CpuShares": limits.cpu_shares or 0,
                       "CpuPeriod": limits.cpu_period or 0, "CpuQuota": limits.cpu_quota or 0,
                       "CpusetCpus": limits.cpuset_cpus or "", "CpusetMems": limits.cpuset_mems or "",
                       "MemoryReservation": limits.memory_reservation or 0,
                       "PidsLimit": limits.pids, "NetworkMode": config.network,
                       "PortBindings": _port_bindings(config), "Dns": list(config.dns),
                       "ExtraHosts": list(config.add_hosts) or None,
                       "AutoRemove": config.auto_remove, "Init": config.init,
                       "RestartPolicy": config.restart.to_doc(),
                       "Binds": [f"{m.source}:{m.target}" + (":ro" if m.readonly else "")
                                 for m in config.mounts if m.kind == "bind"],
                       **_security_doc(config)},
        "Mounts": [{"Type": m.kind, "Source": m.source if m.kind != "volume" else
                    str(rt.volumes.data_dir(m.source)), "Name": m.source if m.kind == "volume" else "",
                    "Destination": m.target, "RW": not m.readonly} for m in config.mounts],
        "Config": {"Hostname": config.hostname, "User": config.user, "Env": list(config.env),
                   "Cmd": list(config.cmd) if config.cmd is not None else None,
                   "Entrypoint": list(config.entrypoint) if config.entrypoint is not None else None,
                   "WorkingDir": config.cwd, "Image": config.image, "Tty": config.tty,
                   "OpenStdin": config.interactive, "StopSignal": config.stop_signal,
                   "StopTimeout": config.stop_timeout, "Labels": dict(config.labels),
                   **({"Healthcheck": config.healthcheck.to_json()} if config.healthcheck else {})},
        "GraphDriver": {"Name": "overlay2", "Data": graph},
        "NetworkSettings": network_settings_doc(rt, config),
    }


def _has_check(config: Any) -> bool:
    from pybuild.runtime.health import probe_args

    return probe_args(config.healthcheck) is not None


def _health_doc(health: dict[str, Any] | None) -> dict[str, Any]:
    """Docker's State.Health; ``starting`` until the first probe of a run."""
    health = health or {}
    return {"Status": health.get("Status", "starting"), "FailingStreak": health.get("FailingStreak", 0),
            "Log": list(health.get("Log", []))}


def _security_doc(config: Any) -> dict[str, Any]:
    """The security part of HostConfig, as Docker names it."""
    from pybuild.runtime.devices import split_device
    from pybuild.runtime.security import parse_ulimit, ulimit_doc
    from pybuild.runtime.spec import DEFAULT_SHM_SIZE

    devices = [{"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": perms}
               for host, inside, perms in map(split_device, config.devices)]
    return {
        "CapAdd": list(config.cap_add) or None, "CapDrop": list(config.cap_drop) or None,
        "Privileged": config.privileged, "ReadonlyRootfs": config.read_only,
        "SecurityOpt": list(config.security_opt) or None, "Devices": devices,
        "Ulimits": [ulimit_doc(parse_ulimit(u)) for u in config.ulimits] or None,
        "Sysctls": dict(config.sysctls) or None, "ShmSize": config.shm_size or DEFAULT_SHM_SIZE,
        "GroupAdd": list(config.group_add) or None,
    }


def network_settings_doc(rt: Any, config: Any) -> dict[str, Any]:
    """Docker's NetworkSettings: the address fields at the top (the default network's way) and per network."""
    info = rt.network_info(config)
    ports: dict[str, list[dict[str, str]] | None] = {}
    for b in config.ports:
        ports.setdefault(b.key, None)
    for b in info.ports:
        entry = ports.get(b.key) or []
        entry.append({"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)})
        ports[b.key] = entry
    networks: dict[str, Any] = {}
    if info.network:
        networks[info.network] = {"NetworkID": info.network_id, "Gateway": info.gateway, "IPAddress": info.ip,
                                  "IPPrefixLen": info.prefixlen, "MacAddress": info.mac}
    elif not info.mode.startswith("container:"):
        networks[info.mode] = {"NetworkID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}
    return {"Bridge": info.bridge, "SandboxKey": info.sandbox, "Ports": ports, "Gateway": info.gateway,
            "IPAddress": info.ip, "IPPrefixLen": info.prefixlen, "MacAddress": info.mac, "Networks": networks}


@group("volume")
def volume_group() -> None:
    """Manage volumes."""


volume_group.add_lazy("prune", "pybuild.cli.prune:volume_prune_cmd")


@volume_group.command("ls")
@option("-q", "--quiet", is_flag=True)
@option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Filter: dangling, driver, label, name.")
@option("--format", "fmt", help="Go template (table, json, or {{.Name}} ...).")
@pass_settings
def volume_ls_cmd(settings: Settings, quiet: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List volumes."""
    from pybuild.cli.filters import Filters

    rt = _runtime(settings)
    wanted = Filters(filters, ("dangling", "driver", "label", "name"))
    dangling = wanted.boolean("dangling")
    used = {m.source for c in rt.containers.walk() for m in c.mounts if m.kind == "volume"} if dangling is not None \
        else set()
    rows = []
    for v in rt.volumes.walk():
        if dangling is not None and dangling == (v.name in used):
            continue
        if not (wanted.match("name", v.name) and wanted.exact("driver", "local") and wanted.labels({})):
            continue
        rows.append({"Availability": "N/A", "Driver": "local", "Group": "N/A", "Labels": "", "Links": "N/A",
                     "Mountpoint": str(v.mountpoint), "Name": v.name, "Scope": "local", "Size": "N/A",
                     "Status": "N/A"})
    if quiet:
        for row in rows:
            echo(row["Name"])
        return
    if fmt:
        from pybuild.cli import formatting

        formatting.emit(fmt, rows, {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT",
                                    "Scope": "SCOPE", "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE",
                                    "Availability": "AVAILABILITY", "Group": "GROUP", "Status": "STATUS"})
        return
    ui.table(("DRIVER", "VOLUME NAME"), [(r["Driver"], r["Name"]) for r in rows])


@volume_group.command("create")
@argument("name")
@pass_settings
def volume_create_cmd(settings: Settings, name: str) -> None:
    """Create a named volume."""
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name):
        raise UsageError(f"invalid volume name {name!r}", "use [a-zA-Z0-9][a-zA-Z0-9_.-]+")
    _runtime(settings).volumes.ensure(name)
    echo(name)


@volume_group.command("rm")
@argument("names", nargs=-1, required=True)
@option("-f", "--force", is_flag=True)
@pass_settings
def volume_rm_cmd(settings: Settings, names: tuple[str, ...], force: bool) -> None:
    """Remove volumes that no container uses."""
    from pybuild.errors import ConflictError

    rt = _runtime(settings)
    used = {m.source: c.name for c in rt.containers.walk() for m in c.mounts if m.kind == "volume"}

    def one(name: str) -> None:
        if name in used:
            raise ConflictError(f"volume {name} is in use by container {used[name]}", "remove the container first")
        rt.volumes.remove(name)
        echo(name)

    if not ui.each(names, one, skip=lambda exc: force and not isinstance(exc, ConflictError)):
        sys.exit(1)


@volume_group.command("inspect")
@argument("names", nargs=-1, required=True)
@option("-f", "--format", "fmt", help="Go template applied to each volume.")
@pass_settings
def volume_inspect_cmd(settings: Settings, names: tuple[str, ...], fmt: str | None) -> None:
    """Show volumes as JSON."""
    rt = _runtime(settings)
    docs = []
    for name in names:
        v = rt.volumes.get(name)
        docs.append({"Name": v.name, "Driver": "local", "Mountpoint": str(v.mountpoint), "CreatedAt": v.created,
                     "Scope": "local", "Labels": {"anonymous": str(v.anonymous).lower()}})
    if fmt:
        from pybuild.cli import formatting

        formatting.inspect(fmt, docs)
        return
    ui.print_json(docs)
