"""The container lifecycle: create, run (foreground or detached), stop, kill, pause,
exec, remove. The other operations on a container have modules of their own:
``logs``, ``stats``, ``export``, ``commit``.

A running container is owned by a *monitor*: the foreground ``pybuild run``
process itself, or for ``-d`` a small detached process (the shim) that
survives the CLI, captures the output to ``container.log`` and records the
exit status. The root filesystem is mounted inside the container's own mount
namespace, so no mount is ever left on the host, however a container ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pybuild import records
from pybuild.errors import ConflictError, ContainerError, ContainerNotFound, NetworkError, PybuildError, UsageError
from pybuild.linux.fsutil import atomic_write, remove_tree
from pybuild.records import field, record
from pybuild.store.events import Journal
from pybuild.store.images import Image, now_iso
from pybuild.store.model import Healthcheck
from pybuild.store.root import Store

from . import cgroups, initlayer, security
from .containers import (
    CREATED,
    EXITED,
    PAUSED,
    RESTARTING,
    RUNNING,
    ContainerConfig,
    ContainerState,
    ContainerStore,
    VolumeMount,
    is_alive,
    process_start_time,
)
from .environment import merge_env, read_env_file
from .process import ContainerProcess, enter
from .restart import RestartPolicy, next_delay, should_restart
from .run import execute, pump_pty
from .signals import signal_number
from .spec import DEFAULT_PATH, ContainerSpec, Mount, OverlayRootfs, ProcessSpec
from .volumes import VolumeStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .health import HealthMonitor
    from .network.manager import Attachment, NetworkManager
    from .network.networks import Network
    from .network.ports import PortBinding


TINI_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/bin/tini")
_VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


@record
class RunOptions:
    """What ``pybuild run`` / ``create`` was asked for."""

    image: str
    command: list[str] = field(default_factory=list)
    entrypoint: str | None = None
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    name: str | None = None
    network: str = "bridge"
    publish: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)
    tty: bool = False
    interactive: bool = False
    volumes: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    limits: cgroups.Limits = cgroups.Limits()  # validated by create()
    init: bool = False
    stop_signal: str | None = None
    stop_timeout: int | None = None
    auto_remove: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)  # --mount
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    read_only: bool = False
    security_opt: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    ulimits: list[str] = field(default_factory=list)
    sysctls: list[str] = field(default_factory=list)  # NAME=VALUE
    shm_size: int | None = None
    group_add: list[str] = field(default_factory=list)
    restart: RestartPolicy = RestartPolicy()
    healthcheck: Healthcheck | None = None  # --health-*: fields over the image's HEALTHCHECK
    no_healthcheck: bool = False


@record(frozen=True)
class Supervised:
    """How one run of a container under its monitor ended."""

    exit_code: int
    restart: bool = False  # its restart policy starts it again
    uptime: float = 0.0  # seconds it ran
    oom_killed: bool = False
    memory_limit: int | None = None


def find_init() -> Path:
    for candidate in TINI_CANDIDATES:
        if os.path.isfile(candidate):
            return Path(candidate)
    raise ContainerError("--init needs a static init binary on the host", "apt-get install tini")


class Runtime:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.containers = ContainerStore(store.root)
        self.volumes = VolumeStore(store.root)
        self.events = Journal(store.root)
        self._networks: NetworkManager | None = None

    def event(self, config: ContainerConfig, action: str, **attributes: str) -> None:
        """Journal a container event, with docker's attributes (image, name, the labels) and ``attributes``."""
        self.events.emit("container", action, config.id,
                         {**config.labels, "image": config.image, "name": config.name, **attributes})

    @property
    def networks(self) -> NetworkManager:
        """Bridge networks (imported on first use: ``--network none`` never loads it)."""
        if self._networks is None:
            from .network.manager import open_manager

            self._networks = open_manager(self.store.root)
        return self._networks

    # ---- creating ------------------------------------------------------------

    def create(self, opts: RunOptions) -> ContainerConfig:
        # `run` attaches the container to its cgroup ~15 ms from here: start the kernel's wait for that now.
        cgroups.prime_attach()
        image = self.store.images.resolve(opts.image)
        if image.top_chain_id is None:
            raise ContainerError(f"image {opts.image} has no layers")
        cfg = image.config.config
        entrypoint: tuple[str, ...] | None = cfg.entrypoint
        cmd: tuple[str, ...] | None = cfg.cmd
        if opts.entrypoint is not None:
            entrypoint = (opts.entrypoint,) if opts.entrypoint else None
            cmd = None  # docker: overriding the entrypoint drops the image's CMD
        if opts.command:
            cmd = tuple(opts.command)
        args = (*(entrypoint or ()), *(cmd or ()))
        if not args:
            raise UsageError("no command specified", "the image has no CMD or ENTRYPOINT; give a command")
        cid = self.containers.new_id()
        hostname = opts.hostname or cid[:12]
        env = tuple(cfg.env)
        if not any(e.startswith("PATH=") for e in env):
            env = (f"PATH={DEFAULT_PATH}", *env)
        extra = [f"HOSTNAME={hostname}"] + (["TERM=xterm"] if opts.tty else [])
        for path in opts.env_files:
            extra.extend(read_env_file(path))
        extra.extend(opts.env)
        env = merge_env(env, extra)
        limits = cgroups.validate(opts.limits)
        cgroups.check_rootless_limits(limits)
        if opts.auto_remove and opts.restart.enabled:
            raise UsageError("conflicting options: cannot specify both --restart and --rm")
        stop_signal = opts.stop_signal or cfg.stop_signal or "SIGTERM"
        signal_number(stop_signal)
        if opts.init:
            find_init()
        with _start_error():
            network, ports, dns_servers, add_hosts = self._plan_network(opts)
        mounts = self._plan_mounts(opts, cfg.volumes)
        sec = security.parse_security_opts(opts.security_opt)  # a profile file is read here, once
        config = ContainerConfig(
            id=cid, name=opts.name or self.containers.unique_name(), image=opts.image, image_id=image.id,
            manifest=image.manifest_digest, created=now_iso(), args=args, env=env,
            cwd=opts.workdir or cfg.working_dir or "/", user=opts.user if opts.user is not None else cfg.user,
            hostname=hostname, network=network, tty=opts.tty, interactive=opts.interactive,
            mounts=mounts, limits=limits, init=opts.init, stop_signal=stop_signal,
            stop_timeout=opts.stop_timeout if opts.stop_timeout is not None else 10,
            auto_remove=opts.auto_remove, entrypoint=entrypoint, cmd=cmd, labels=dict(opts.labels),
            ports=ports, dns=dns_servers, add_hosts=add_hosts,
            cap_add=tuple(security.normalize_capability(c) for c in opts.cap_add),
            cap_drop=tuple(security.normalize_capability(c) for c in opts.cap_drop),
            privileged=opts.privileged, read_only=opts.read_only, security_opt=tuple(sec.as_docker_list()),
            devices=tuple(opts.devices), ulimits=tuple(opts.ulimits),
            sysctls=dict(security.parse_sysctls(opts.sysctls, network == "host")),
            shm_size=opts.shm_size, group_add=tuple(opts.group_add), restart=opts.restart,
            healthcheck=_healthcheck(cfg.healthcheck, opts))
        self.isolation(config)  # the rest of the security options checked before anything is written
        if opts.name is not None and not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", opts.name):
            raise UsageError(f"invalid container name {opts.name!r}", "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        ProcessSpec(args=args, env=env, cwd=config.cwd if config.cwd.startswith("/") else "/")  # validate early
        with self.store.writing():
            # The lease is taken under the store lock held shared: prune (exclusive)
            # never sees it without its container record.
            leased: tuple[Network, str] | None = None
            if _is_bridge_mode(network):
                with _start_error():
                    net, address = self.networks.lease(network, cid)
                leased = (net, str(address.ip))
            rw = self.store.layers.create_rw(cid, image.top_chain_id)
            try:
                self._write_init_layer(config, Path(self.store.layers.overlay / (rw.init_id or "") / "diff"), leased)
                self._prepare_volumes(config, image)
                config = self.containers.create(config, generated_name=opts.name is None)
                self.event(config, "create")
            except BaseException:
                if leased is not None:
                    with contextlib.suppress(PybuildError, OSError):
                        self.networks.release(cid)
                with contextlib.suppress(PybuildError, OSError):
                    self.store.layers.remove_rw(cid)
                for m in mounts:
                    if m.kind == "volume" and m.anonymous:
                        with contextlib.suppress(PybuildError, OSError):
                            self.volumes.remove(m.source)
                raise
        return config

    def _plan_network(self, opts: RunOptions) -> tuple[str, tuple[PortBinding, ...], tuple[str, ...], tuple[str, ...]]:
        """The network setting as recorded (``container:<id>``, a network's name), the ports, --dns, --add-host."""
        mode = opts.network or "bridge"
        if mode == "default":
            mode = "bridge"
        ports: tuple[PortBinding, ...] = ()
        if opts.publish:
            from .network.ports import parse_all

            ports = parse_all(opts.publish)
        if mode.startswith("container:"):
            target_name = mode.partition(":")[2]
            try:
                target = self.containers.resolve(target_name)
            except (ContainerNotFound, UsageError):
                raise NetworkError(f"cannot join the network of container {target_name!r}: no such container") \
                    from None
            # Join the namespace's owner when the target itself joined another, as Docker does.
            owner = target.network.partition(":")[2] if target.network.startswith("container:") else target.id
            mode = f"container:{owner}"
        elif _is_bridge_mode(mode):
            mode = self.networks.get_network(mode).name
        if ports and not _is_bridge_mode(mode):
            raise NetworkError(f"cannot publish ports with --network {mode.partition(':')[0]}",
                               "published ports need a bridge network")
        if mode.startswith("container:") and (opts.dns or opts.add_hosts):
            raise NetworkError("--dns and --add-host conflict with --network container:",
                               "the container uses the network settings of the one it joins")
        if not opts.dns and not opts.add_hosts:
            return mode, ports, (), ()
        from .network import dns as _dns

        return mode, ports, _dns.check_dns(opts.dns), _dns.check_add_hosts(opts.add_hosts)

    def _plan_mounts(self, opts: RunOptions, image_volumes: tuple[str, ...]) -> tuple[VolumeMount, ...]:
        out: list[VolumeMount] = []
        for text in opts.volumes:
            parts = text.split(":")
            if len(parts) == 1 and parts[0].startswith("/"):
                out.append(VolumeMount("volume", self.volumes.new_anonymous_name(), parts[0], anonymous=True))
                continue
            if len(parts) not in (2, 3) or not parts[1].startswith("/"):
                raise UsageError(f"invalid volume specification {text!r}", "use SRC:/container/path[:ro]")
            readonly = len(parts) == 3 and "ro" in parts[2].split(",")
            if len(parts) == 3 and not set(parts[2].split(",")) <= {"ro", "rw", "z", "Z", "nocopy"}:
                raise UsageError(f"invalid mode in volume specification {text!r}")
            source = parts[0]
            if source.startswith("/"):
                if not os.path.exists(source):
                    os.makedirs(source, exist_ok=True)  # docker -v creates a missing host dir
                out.append(VolumeMount("bind", os.path.realpath(source), parts[1], readonly))
            elif _VOLUME_NAME_RE.fullmatch(source):
                out.append(VolumeMount("volume", source, parts[1], readonly))
            else:
                raise UsageError(f"invalid volume name {source!r}",
                                 "a host path must be absolute; a volume name is [a-zA-Z0-9][a-zA-Z0-9_.-]+")
        for text in opts.mounts:
            from .mountflag import parse_mount

            m = parse_mount(text)
            if m.kind == "volume" and m.anonymous:
                m = records.replace(m, source=self.volumes.new_anonymous_name())
            out.append(m)
        for text in opts.tmpfs:
            target, _, options = text.partition(":")
            if not target.startswith("/"):
                raise UsageError(f"invalid tmpfs mount {text!r}", "use /container/path[:options]")
            out.append(VolumeMount("tmpfs", options, target))
        taken = {m.target.rstrip("/") or "/" for m in out}
        for path in image_volumes:
            if (path.rstrip("/") or "/") not in taken:
                out.append(VolumeMount("volume", self.volumes.new_anonymous_name(), path, anonymous=True))
        return tuple(out)

    def _write_init_layer(self, config: ContainerConfig, diff: Path,
                          leased: tuple[Network, str] | None = None) -> None:
        """Generated files that belong to this container, not to its image (Docker's init layer).

        On a bridge network /etc/hosts is also bind-mounted from the container's
        directory while it runs (see :meth:`_hosts_path`), so that members joining
        and leaving a user-defined network show up in it.
        """
        address, gateway = (leased[1], leased[0].gateway) if leased is not None else (None, None)
        initlayer.write(diff, hostname=config.hostname,
                        hosts=initlayer.hosts(config.hostname, config.network, config.add_hosts, address, gateway),
                        resolv_conf=initlayer.resolv_conf(config.network, config.dns))

    def _prepare_volumes(self, config: ContainerConfig, image: Image) -> None:
        for m in config.mounts:
            if m.kind == "volume":
                created = self.volumes.ensure(m.source, anonymous=m.anonymous)
                if created:
                    self.volumes.populate(m.source, self.store, image, m.target)

    # ---- specs -------------------------------------------------------------------

    def _hosts_path(self, container_id: str) -> Path:
        return self.containers.path(container_id) / "hosts"

    def spec_for(self, config: ContainerConfig, *, tty: bool | None = None, netns: str | None = None,
                 hosts: Path | None = None) -> ContainerSpec:
        """The runtime's input for ``config``; ``netns`` is a namespace to join, ``hosts`` bound on /etc/hosts."""
        rw = self.store.layers.get_rw(config.id)
        layers = self.store.layers
        lowers = tuple(layers.lowers(rw.mount_id))
        mounts: list[Mount] = []
        for m in config.mounts:
            propagation = (m.propagation,) if m.propagation else ()
            if m.kind == "bind":
                mounts.append(Mount.bind(m.source, m.target, readonly=m.readonly, options=propagation))
            elif m.kind == "volume":
                mounts.append(Mount.bind(str(self.volumes.data_dir(m.source)), m.target, readonly=m.readonly))
            else:
                opts = ("nosuid", "nodev", "noexec", *[o for o in m.source.split(",") if o])
                mounts.append(Mount("tmpfs", m.target, "tmpfs", opts))
        if hosts is not None and not any(m.target.rstrip("/") == "/etc/hosts" for m in mounts):
            mounts.insert(0, Mount.bind(hosts, "/etc/hosts"))
        iso = self.isolation(config)
        process = ProcessSpec(args=config.args, env=config.env, cwd=config.cwd, user=config.user,
                              tty=config.tty if tty is None else tty, stdin=config.interactive,
                              groups=iso.groups, rlimits=iso.rlimits)
        return ContainerSpec(
            rootfs=layers.overlay / rw.mount_id / "merged", process=process, hostname=config.hostname,
            network="host" if config.network == "host" else "none", netns=netns, mounts=tuple(mounts),
            init=find_init() if config.init else None,
            overlay=OverlayRootfs(layers.overlay, lowers, f"{rw.mount_id}/diff", f"{rw.mount_id}/work"),
            **iso.spec_fields())  # type: ignore[arg-type]

    def isolation(self, config: ContainerConfig) -> security.Isolation:
        """The security settings ``config``'s options give (checked again: a --device may have gone since)."""
        return security.isolation(
            cap_add=config.cap_add, cap_drop=config.cap_drop, privileged=config.privileged,
            read_only=config.read_only, security_opt=config.security_opt, devices=config.devices,
            ulimits=config.ulimits, sysctls=[f"{k}={v}" for k, v in config.sysctls.items()],
            shm_size=config.shm_size, group_add=config.group_add, host_network=config.network == "host")

    @property
    def seccomp_cache(self) -> Path:
        """Compiled seccomp programs, kept across runs (see runtime/seccomp.py)."""
        return self.store.root / "seccomp"

    # ---- running -------------------------------------------------------------------

    def _claim(self, config: ContainerConfig, *, by_policy: bool = False) -> None:
        """Make this process the container's monitor. A start by the user begins a new count of policy
        restarts and forgets an earlier ``stop``; a start ``by_policy`` continues a monitor's restarts."""
        with self.containers.lock(config.id):
            state = self.refresh(config)
            if by_policy:
                if state.status != RESTARTING:
                    raise ConflictError(f"container {config.name} is no longer restarting")
                self.containers.update_state(config.id, pid=0, pid_start=0, monitor_pid=os.getpid())
                return
            if state.running:
                raise ConflictError(f"container {config.name} is already running")
            self.containers.update_state(config.id, status=CREATED, pid=0, pid_start=0, monitor_pid=os.getpid(),
                                         error="", exit_code=0, oom_killed=False, restart_count=0,
                                         manually_stopped=False)

    def _supervise(self, config: ContainerConfig, stdin: int | None, stdout: int | None, stderr: int | None,
                   on_started: Callable[[ContainerProcess], None] | None = None,
                   proxy_signals: bool = True) -> Supervised:
        """Run the container to its end as its monitor, recording every transition; at the end, the
        restart policy decides between ``exited`` and ``restarting`` (the state says which)."""
        attachment: Attachment | None = None
        began = [0.0]
        checks: list[HealthMonitor] = []

        def started(proc: ContainerProcess, cg: cgroups.Cgroup) -> None:
            began[0] = time.monotonic()
            self.containers.update_state(config.id, status=RUNNING, pid=proc.pid,
                                         pid_start=process_start_time(proc.pid), started_at=now_iso(),
                                         monitor_pid=os.getpid())
            self.event(config, "start")
            if config.healthcheck is not None:
                from .health import HealthMonitor, probe_args

                if probe_args(config.healthcheck) is not None:
                    checks.append(HealthMonitor(self, config, config.healthcheck))
                    checks[0].start()
            if on_started is not None:
                on_started(proc)

        try:
            with _start_error():
                attachment, spec = self._connect(config)
            result = execute(spec, cgroup_name=config.cgroup_name, limits=config.limits,
                             stdin=stdin, stdout=stdout, stderr=stderr, on_started=started,
                             proxy_signals=proxy_signals, seccomp_cache=self.seccomp_cache)
        except PybuildError as exc:
            code = getattr(exc, "exit_code", 125)
            if began[0] == 0.0 and self.containers.state(config.id).restart_count == 0:
                # the user's own start failed: the error is theirs to see, no policy retries it
                self.containers.update_state(config.id, status=EXITED, pid=0, exit_code=code, error=str(exc),
                                             finished_at=now_iso())
                raise
            return self._ended(config, code, 0.0, error=str(exc))
        except BaseException:
            self.containers.update_state(config.id, status=EXITED, pid=0, exit_code=137, finished_at=now_iso())
            raise
        finally:
            for check in checks:
                check.stop()
            if attachment is not None:
                # A failure here leaves an ownerless endpoint: the next attach, rm or prune undoes it.
                with contextlib.suppress(Exception):
                    attachment.detach()
        return self._ended(config, result.exit_code, time.monotonic() - began[0], oom_killed=result.oom_killed,
                           memory_limit=result.memory_limit)

    def _ended(self, config: ContainerConfig, exit_code: int, uptime: float, *, oom_killed: bool = False,
               memory_limit: int | None = None, error: str = "") -> Supervised:
        """Record the end of one run: ``restarting`` when the policy (read afresh: ``update`` may have
        changed it) starts it again, else ``exited``."""
        with self.containers.lock(config.id):
            with contextlib.suppress(ContainerNotFound):
                config = self.containers.config(config.id)
            state = self.containers.state(config.id)
            again = not state.manually_stopped and should_restart(config.restart, exit_code, state.restart_count,
                                                                   state.manually_stopped)
            state = self.containers.update_state(
                config.id, status=RESTARTING if again else EXITED, pid=0, exit_code=exit_code,
                oom_killed=oom_killed, error=error, finished_at=now_iso(),
                restart_count=state.restart_count + (1 if again else 0))
        if oom_killed:
            self.event(config, "oom")
        self.event(config, "die", exitCode=str(exit_code), execDuration=str(int(uptime)))
        return Supervised(exit_code=exit_code, restart=again, uptime=uptime, oom_killed=oom_killed,
                          memory_limit=memory_limit)

    def _connect(self, config: ContainerConfig) -> tuple[Attachment | None, ContainerSpec]:
        """The container's network for this start, and its spec: a bridge endpoint, another's namespace, or none."""
        if config.network.startswith("container:"):
            target_id = config.network.partition(":")[2]
            try:
                target = self.containers.config(target_id)
            except ContainerNotFound:
                raise NetworkError(f"cannot join the network of container {target_id[:12]}: it was removed") \
                    from None
            state = self.refresh(target)
            if not state.has_process:
                raise NetworkError(f"cannot join the network of container {target.name}: it is not running")
            hosts = self._hosts_path(target.id)
            return None, self.spec_for(config, netns=f"/proc/{state.pid}/ns/net",
                                       hosts=hosts if hosts.exists() else None)
        if not _is_bridge_mode(config.network):
            return None, self.spec_for(config)
        hosts = self._hosts_path(config.id)
        atomic_write(hosts, b"", 0o644, durable=False)  # a fresh inode each start; attach fills it
        attachment = self.networks.attach(
            container_id=config.id, name=config.name, hostname=config.hostname, network=config.network,
            ports=config.ports, add_hosts=config.add_hosts, hosts_path=hosts)
        try:
            return attachment, self.spec_for(config, netns=attachment.endpoint.netns, hosts=hosts)
        except BaseException:
            attachment.detach()
            raise

    def run_foreground(self, config: ContainerConfig) -> Supervised:
        """``pybuild run`` without ``-d``: this process is the monitor; stdio is the terminal's.

        As with docker, the command returns when the container first exits;
        a restart policy that starts it again hands it to a detached monitor.
        """
        self._claim(config)
        try:
            if config.tty:
                def attach(proc: ContainerProcess) -> None:
                    assert proc.pty_master is not None
                    pump_pty(proc.pty_master, proc, config.interactive)

                outcome = self._supervise(config, None, None, None, on_started=attach)
            else:
                stdin = sys.stdin.fileno() if config.interactive else None
                outcome = self._supervise(config, stdin, None, None)
            if outcome.restart:
                from .monitor import start_monitor

                start_monitor(self, config, resume_after=next_delay(0.0, outcome.uptime))
            return outcome
        finally:
            if config.auto_remove:
                self.remove(config.id, force=True, volumes=True)

    def start_detached(self, config: ContainerConfig) -> None:
        """``-d``: fork a monitor that outlives this process; return once the container runs."""
        self._claim(config)
        from .monitor import start_monitor

        start_monitor(self, config)

    def refresh(self, config: ContainerConfig) -> ContainerState:
        """The container's state, corrected if its monitor died without recording the end.

        A monitor can die alone (``kill -9`` of it): the container's output then
        goes nowhere and no policy would restart it, so the orphan is killed
        and the record says so. The next container command starts it again
        when its restart policy asks (:meth:`recover_supervision`).
        """
        state = self.containers.state(config.id)
        if state.status == RESTARTING:
            if state.monitor_pid and _pid_alive(state.monitor_pid):
                return state
            return self.containers.update_state(
                config.id, status=EXITED, pid=0, supervision_lost=True,
                error=f"its monitor (pid {state.monitor_pid}) died while waiting to restart it")
        if state.status not in (RUNNING, PAUSED):
            return state
        alive = is_alive(state.pid, state.pid_start)
        monitor_alive = bool(state.monitor_pid) and _pid_alive(state.monitor_pid)
        if alive and (monitor_alive or not state.monitor_pid):
            return state
        if not alive and monitor_alive:
            # the monitor is recording the exit right now: its record (the real exit code) wins
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                time.sleep(0.01)
                state = self.containers.state(config.id)
                if state.status not in (RUNNING, PAUSED) or not _pid_alive(state.monitor_pid):
                    break
            if state.status not in (RUNNING, PAUSED) or _pid_alive(state.monitor_pid):
                return state  # recorded, or still busy (a slow disk): not ours to overrule
        if alive:  # an orphan: its monitor died, it still runs
            error = f"its monitor (pid {state.monitor_pid}) died; the container was stopped"
        else:
            error = f"its monitor (pid {state.monitor_pid}) died before recording how the container ended"
        with contextlib.suppress(PybuildError):
            cg = cgroups.open_existing(config.cgroup_name)
            if alive:
                cg.kill_all()
            cg.remove()
        return self.containers.update_state(config.id, status=EXITED, pid=0, exit_code=137, error=error,
                                            supervision_lost=True, finished_at=state.finished_at or now_iso())

    def recover_supervision(self) -> list[str]:
        """Start again, each under a new monitor, the containers whose monitor died and whose restart
        policy asks for it (what a daemon would do when it starts); their names."""
        started = []
        for config in list(self.containers.walk()):
            if not config.restart.enabled:
                continue
            with contextlib.suppress(ContainerNotFound):
                if not self.refresh(config).supervision_lost:
                    continue
                with self.containers.lock(config.id):  # one command takes it over, however many look
                    state = self.containers.state(config.id)
                    if not state.supervision_lost or state.status != EXITED:
                        continue
                    self.containers.update_state(config.id, supervision_lost=False)
                if not should_restart(config.restart, state.exit_code, state.restart_count, state.manually_stopped):
                    continue
                try:
                    self._claim(config)
                    self.containers.update_state(config.id, restart_count=state.restart_count + 1)
                    from .monitor import start_monitor

                    start_monitor(self, config)
                    started.append(config.name)
                except PybuildError:
                    continue  # recorded in its state by the start; the next command does not retry forever
        return started

    # ---- signals ---------------------------------------------------------------------

    def require_running(self, config: ContainerConfig, *, process: bool = True) -> ContainerState:
        """Its state if it is up; with ``process``, only with a process to act on (not between restarts)."""
        state = self.refresh(config)
        if not state.running:
            raise ConflictError(f"container {config.name} is not running")
        if process and state.status == RESTARTING:
            raise ConflictError(f"container {config.name} is restarting, wait until the container is running")
        return state

    def kill(self, config: ContainerConfig, sig: int = signal.SIGKILL) -> None:
        """Signal the container's init. SIGKILL and its stop signal also cancel its restart policy for this
        run, as docker's kill does; a restarting container only has its restart cancelled."""
        state = self.require_running(config, process=False)
        if sig in (signal.SIGKILL, signal_number(config.stop_signal)):
            self.containers.update_state(config.id, manually_stopped=True)
        self.event(config, "kill", signal=str(int(sig)))
        if state.status == RESTARTING:
            return
        if state.status == PAUSED and sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(PybuildError):
                cgroups.open_existing(config.cgroup_name).thaw()
        if is_alive(state.pid, state.pid_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, sig)

    def wait_exit(self, config: ContainerConfig, timeout: float | None) -> ContainerState:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.refresh(config)
            if not state.running:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                return state
            time.sleep(0.05)

    def stop(self, config: ContainerConfig, timeout: int | None = None) -> None:
        """docker stop: the stop signal, SIGKILL after the timeout; no restart policy starts it again."""
        state = self.refresh(config)
        if not state.running:
            if state.status == EXITED and not state.manually_stopped:
                self.containers.update_state(config.id, manually_stopped=True)  # unless-stopped remembers
            return
        self.kill(config, signal_number(config.stop_signal))
        t = config.stop_timeout if timeout is None else timeout
        if self.wait_exit(config, t).running:
            with contextlib.suppress(ConflictError):
                self.kill(config, signal.SIGKILL)
            self.wait_exit(config, 10)
        self.event(config, "stop")

    def restart(self, config: ContainerConfig, timeout: int | None = None) -> None:
        """docker restart: stop (if it runs), then start detached."""
        if self.refresh(config).running:
            self.stop(config, timeout)
        self.start_detached(self.containers.config(config.id))
        self.event(config, "restart")

    def update_limits(self, config: ContainerConfig, **changes: Any) -> ContainerConfig:
        """``docker update``: new resource limits (only those given change), recorded and, if it runs, applied
        to the container's cgroup at once."""
        limits = cgroups.validate(records.replace(config.limits, **changes))
        with self.containers.lock(config.id):
            state = self.refresh(config)
            if state.has_process:
                group = cgroups.open_existing(config.cgroup_name)
                if isinstance(group, cgroups.NoCgroup):
                    raise ContainerError(f"cannot update container {config.name}: it runs without a cgroup",
                                         "a rootless container gets one only if it starts with limits")
                partial = {k: getattr(limits, k) for k in changes}
                if "memory" in changes or "memory_swap" in changes:  # the kernel checks the two together
                    partial.update(memory=limits.memory, memory_swap=limits.memory_swap)
                if "cpu_quota" in changes or "cpu_period" in changes:  # one file pair, written together
                    partial.update(cpu_quota=limits.cpu_quota, cpu_period=limits.cpu_period)
                group.update(cgroups.Limits(**partial))
            config = records.replace(self.containers.config(config.id), limits=limits)
            self.containers.save_config(config)
        return config

    def set_restart_policy(self, config: ContainerConfig, policy: RestartPolicy) -> ContainerConfig:
        """``update --restart``: a running monitor reads it when the container next exits."""
        if config.auto_remove and policy.enabled:
            raise ConflictError("Restart policy cannot be updated because AutoRemove is enabled for the container")
        with self.containers.lock(config.id):
            config = records.replace(self.containers.config(config.id), restart=policy)
            self.containers.save_config(config)
        return config

    def pause(self, config: ContainerConfig) -> None:
        state = self.require_running(config)
        if state.status == PAUSED:
            raise ConflictError(f"container {config.name} is already paused")
        cgroups.open_existing(config.cgroup_name).freeze()
        self.containers.update_state(config.id, status=PAUSED)
        self.event(config, "pause")

    def unpause(self, config: ContainerConfig) -> None:
        state = self.require_running(config)
        if state.status != PAUSED:
            raise ConflictError(f"container {config.name} is not paused")
        cgroups.open_existing(config.cgroup_name).thaw()
        self.containers.update_state(config.id, status=RUNNING)
        self.event(config, "unpause")

    # ---- removal -----------------------------------------------------------------------

    def remove(self, container_id: str, force: bool = False, volumes: bool = False) -> None:
        config = self.containers.config(container_id)
        state = self.refresh(config)
        if state.running:
            if not force:
                raise ConflictError(f"cannot remove container {config.name}: container is running",
                                    "stop the container before removing it, or use -f")
            self.kill(config, signal.SIGKILL)
            self.wait_exit(config, 10)
        if _is_bridge_mode(config.network):
            self.networks.forget(config.id)
        with contextlib.suppress(PybuildError):
            cgroups.open_existing(config.cgroup_name).remove()
        with contextlib.suppress(PybuildError):
            self.store.layers.remove_rw(config.id)
        if volumes:
            for m in config.mounts:
                if m.kind == "volume" and m.anonymous:
                    with contextlib.suppress(PybuildError, OSError):
                        self.volumes.remove(m.source)
        self.containers.remove_record(config.id)
        self.event(config, "destroy")

    # ---- exec ---------------------------------------------------------------------------

    def exec(self, config: ContainerConfig, args: list[str], *, env: list[str], user: str | None,
             workdir: str | None, tty: bool, interactive: bool) -> int:
        state = self.require_running(config)
        if state.status == PAUSED:
            raise ConflictError(f"container {config.name} is paused", "unpause it first")
        base_env = merge_env(config.env, ["TERM=xterm"] if tty else [])
        iso = self.isolation(config)
        process = ProcessSpec(args=tuple(args), env=merge_env(base_env, env),
                              cwd=workdir or config.cwd, user=config.user if user is None else user,
                              tty=tty, stdin=interactive, groups=iso.groups, rlimits=iso.rlimits)
        cg = cgroups.open_existing(config.cgroup_name)
        exec_id, command = os.urandom(32).hex(), " ".join(args)
        self.event(config, f"exec_create: {command}", execID=exec_id)
        proc = enter(state.pid, process, capabilities=iso.capabilities, no_new_privs=iso.no_new_privs,
                     seccomp_profile=iso.seccomp, seccomp_cache=self.seccomp_cache, cgroup=cg,
                     stdin=sys.stdin.fileno() if interactive and not tty else None)
        self.event(config, f"exec_start: {command}", execID=exec_id)
        code = -1
        try:
            from .run import forward_signals

            if tty and proc.pty_master is not None:
                pump_pty(proc.pty_master, proc, interactive)
            with forward_signals(proc):
                code = proc.wait().code
            return code
        finally:
            proc.close()
            self.event(config, "exec_die", execID=exec_id, exitCode=str(code))

    def start_probe(self, config: ContainerConfig, args: tuple[str, ...]) -> tuple[ContainerProcess, int]:
        """A health check's process inside the running container (as ``exec`` runs one, with the container's
        user, directory and environment), its stdout and stderr on one pipe; (process, the pipe's read end)."""
        state = self.require_running(config)
        if state.status == PAUSED:
            raise ConflictError(f"container {config.name} is paused")
        iso = self.isolation(config)
        process = ProcessSpec(args=args, env=config.env, cwd=config.cwd, user=config.user, groups=iso.groups,
                              rlimits=iso.rlimits)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            with open(os.devnull, "rb") as null:
                proc = enter(state.pid, process, capabilities=iso.capabilities, no_new_privs=iso.no_new_privs,
                             seccomp_profile=iso.seccomp, seccomp_cache=self.seccomp_cache,
                             cgroup=cgroups.open_existing(config.cgroup_name), stdin=null.fileno(),
                             stdout=write_end, stderr=write_end)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return proc, read_end

    # ---- maintenance ---------------------------------------------------------------------

    def images_in_use(self) -> set[str]:
        return {c.manifest for c in self.containers.walk()}

    def prune_leftovers(self) -> int:
        """Half-created or half-removed container records and cgroups of dead containers."""
        count = self.prune_containers()
        live = {c.id for c in self.containers.walk()}
        for cg_path in cgroups.all_pybuild_cgroups("pybuild"):
            if cg_path.parent.name == "pybuild" and cg_path.name not in live:
                with contextlib.suppress(PybuildError):
                    cgroups.open_existing(f"pybuild/{cg_path.name}").remove()
                    count += 1
        return count

    def prune_containers(self) -> int:
        """What ``pybuild prune`` reclaims of this store's containers (never another store's cgroups).

        Half-created or half-removed records, ``--rm`` containers whose monitor
        was killed (nobody is left to remove them), network endpoints without
        an owner and leases without a container.
        """
        count = 0
        for path in self.containers.leftovers():
            remove_tree(path)
            count += 1
        for config in list(self.containers.walk()):
            state = self.refresh(config)
            claimed = state.status == EXITED or (state.status == CREATED and state.monitor_pid > 0)
            if config.auto_remove and claimed and not _pid_alive(state.monitor_pid):
                with contextlib.suppress(PybuildError):
                    self.remove(config.id, force=True, volumes=True)
                    count += 1
        if (self.store.root / "network").exists():
            from pybuild.store.locks import locked

            # Exclusive store lock: no create() is between its lease and its record.
            with locked(self.store.lock_path):
                live = {c.id for c in self.containers.walk()}
                count += self.networks.reclaim(live)
        return count

    # ---- networking queries --------------------------------------------------------------

    def network_info(self, config: ContainerConfig) -> NetworkInfo:
        """Address, gateway, MAC and published ports, for inspect and ps."""
        owner = config
        if config.network.startswith("container:"):
            with contextlib.suppress(ContainerNotFound):
                owner = self.containers.config(config.network.partition(":")[2])
        if not _is_bridge_mode(owner.network) or not (self.store.root / "network").exists():
            return NetworkInfo(config.network)
        from .network.netlink import mac_for

        endpoint = self.networks.endpoint(owner.id)
        leased = self.networks.leased(owner.id)
        if leased is None:
            return NetworkInfo(config.network)
        net, address = leased
        running = endpoint is not None and self.refresh(owner).running
        return NetworkInfo(config.network, net.name, net.id, str(address.ip), address.network.prefixlen,
                           net.gateway, mac_for(address.ip), net.bridge,
                           endpoint.ports if running and endpoint is not None and owner is config else (),
                           endpoint.netns if running and endpoint is not None else "")


@record(frozen=True)
class NetworkInfo:
    mode: str
    network: str = ""
    network_id: str = ""
    ip: str = ""
    prefixlen: int = 0
    gateway: str = ""
    mac: str = ""
    bridge: str = ""
    ports: tuple[PortBinding, ...] = ()   # as published now (host ports resolved); empty unless running
    sandbox: str = ""


def _healthcheck(image: Healthcheck | None, opts: RunOptions) -> Healthcheck | None:
    """The image's HEALTHCHECK under the flags' (health.py imported only when there is one)."""
    if image is None and opts.healthcheck is None and not opts.no_healthcheck:
        return None
    from .health import merge

    return merge(image, opts.healthcheck, opts.no_healthcheck)


def _pid_alive(pid: int) -> bool:
    return process_start_time(pid) > 0


def _is_bridge_mode(mode: str) -> bool:
    return mode not in ("none", "host") and not mode.startswith("container:")


@contextlib.contextmanager
def _start_error() -> Iterator[None]:
    """Network errors met while creating or starting a container exit 125, as ``docker run``'s do."""
    try:
        yield
    except NetworkError as exc:
        exc.exit_code = 125
        raise

