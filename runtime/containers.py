"""Container records on disk: ``containers/<id>/{config.json,state.json,container.log}``.

A container's config never changes after creation; its state is rewritten
atomically on every transition under the container's lock. A state that says
``running`` is checked against the process it names (pid and start time), so
a monitor that died with its container is noticed by the next reader.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from pybuild import records
from pybuild.errors import ConflictError, ContainerNotFound, UsageError
from pybuild.linux.fsutil import atomic_write, remove_tree
from pybuild.records import field, record
from pybuild.store.images import now_iso
from pybuild.store.locks import locked
from pybuild.store.model import Healthcheck

from .cgroups import Limits
from .restart import RestartPolicy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .network.ports import PortBinding


CREATED, RUNNING, PAUSED, RESTARTING, EXITED = "created", "running", "paused", "restarting", "exited"

_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
               "nifty", "proud", "quirky", "silly", "sleepy", "tender", "vivid", "witty", "zealous", "bold")
_NAMES = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "dijkstra", "liskov",
          "hamilton", "backus", "kay", "lamport", "perlman", "cerf", "wirth", "hoare", "milner", "allen", "shaw")


@record(frozen=True)
class VolumeMount:
    """A volume or bind in the container: ``kind`` is bind, volume (named or anonymous) or tmpfs."""

    kind: str
    source: str
    target: str
    readonly: bool = False
    anonymous: bool = False
    propagation: str = ""  # --mount bind-propagation (binds default to rprivate)


@record(frozen=True)
class ContainerConfig:
    """What a container was created with (never changes)."""

    id: str
    name: str
    image: str                  # as the user typed it
    image_id: str               # config digest
    manifest: str
    created: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    hostname: str
    network: str
    tty: bool = False
    interactive: bool = False
    mounts: tuple[VolumeMount, ...] = ()
    limits: Limits = Limits()
    init: bool = False
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10
    auto_remove: bool = False
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # network: "bridge", a user-defined network's name, "none", "host" or "container:<id>"
    ports: tuple[PortBinding, ...] = ()
    dns: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()     # NAME:IP
    # Security and process options, as given (checked when created, applied when started).
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    read_only: bool = False
    security_opt: tuple[str, ...] = ()  # Docker's HostConfig.SecurityOpt (a seccomp profile inlined)
    devices: tuple[str, ...] = ()       # --device HOST[:CONTAINER[:PERMS]]
    ulimits: tuple[str, ...] = ()       # NAME=SOFT:HARD
    sysctls: dict[str, str] = field(default_factory=dict)
    shm_size: int | None = None
    group_add: tuple[str, ...] = ()
    restart: RestartPolicy = RestartPolicy()  # --restart; ``update --restart`` changes it
    healthcheck: Healthcheck | None = None  # the image's HEALTHCHECK under the --health-* flags

    def to_json(self) -> dict[str, Any]:
        return records.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ContainerConfig:
        doc = dict(doc)
        for key in ("args", "env", "dns", "add_hosts", "cap_add", "cap_drop", "security_opt", "devices",
                    "ulimits", "group_add"):
            doc[key] = tuple(doc.get(key) or ())
        if doc.get("ports"):
            from .network.ports import PortBinding

            doc["ports"] = tuple(PortBinding(**p) for p in doc["ports"])
        else:
            doc["ports"] = ()
        for key in ("entrypoint", "cmd"):
            doc[key] = tuple(doc[key]) if doc.get(key) is not None else None
        doc["mounts"] = tuple(VolumeMount(**m) for m in doc.get("mounts") or ())
        doc["limits"] = _limits_from_json(doc)
        doc["restart"] = RestartPolicy(**doc["restart"]) if isinstance(doc.get("restart"), dict) else RestartPolicy()
        check = doc.get("healthcheck")
        doc["healthcheck"] = Healthcheck(**{**check, "test": tuple(check.get("test") or ())}) \
            if isinstance(check, dict) else None
        known = {f.name for f in records.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def cgroup_name(self) -> str:
        return f"pybuild/{self.id}"


def _limits_from_json(doc: dict[str, Any]) -> Limits:
    """``"limits": {...}``; a config written before that has them as fields of its own (``pids_limit``: pids)."""
    values = doc.get("limits")
    if not isinstance(values, dict):
        values = {"pids" if key == "pids_limit" else key: value for key, value in doc.items()}
    known = {f.name for f in records.fields(Limits)}
    return Limits(**{k: v for k, v in values.items() if k in known})


@record(frozen=True)
class ContainerState:
    status: str = CREATED
    pid: int = 0
    pid_start: int = 0          # the process's start time (clock ticks), against pid reuse
    monitor_pid: int = 0
    started_at: str = ""
    finished_at: str = ""
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    restart_count: int = 0        # starts by the restart policy since the last manual start
    manually_stopped: bool = False  # ``stop``/``kill``: no policy restarts it (Docker's HasBeenManuallyStopped)
    supervision_lost: bool = False  # ended because its monitor died: the next command may restart it
    health: dict[str, Any] | None = None  # Docker's State.Health: Status, FailingStreak, Log

    def to_json(self) -> dict[str, Any]:
        return records.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ContainerState:
        known = {f.name for f in records.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def running(self) -> bool:
        """Docker's State.Running: up, paused, or between two runs of its restart policy."""
        return self.status in (RUNNING, PAUSED, RESTARTING)

    @property
    def has_process(self) -> bool:
        return self.status in (RUNNING, PAUSED)


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat, or 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    rest = data[data.rfind(b")") + 2:].split()
    if rest[0] == b"Z":
        return 0  # a zombie has finished, whatever its parent does next
    return int(rest[19])


def is_alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and process_start_time(pid) == start


def _choice(items: tuple[str, ...] | list[str]) -> str:
    """A random element (for names; the tiny modulo bias does not matter there)."""
    return items[int.from_bytes(os.urandom(4), "big") % len(items)]


class ContainerStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "containers"

    def path(self, container_id: str) -> Path:
        if len(container_id) != 64 or not all(c in "0123456789abcdef" for c in container_id):
            raise ContainerNotFound(f"no such container: {container_id}")
        return self.dir / container_id

    def lock(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        return locked(self.path(container_id) / "lock")

    def new_id(self) -> str:
        return os.urandom(32).hex()

    def create(self, config: ContainerConfig, *, generated_name: bool = False) -> ContainerConfig:
        """Record a new container; a generated name taken meanwhile by a concurrent create is drawn again."""
        with locked(self.dir / ".names.lock"):
            if any(c.name == config.name for c in self.walk()):
                if not generated_name:
                    raise ConflictError(f'the container name "/{config.name}" is already in use',
                                        "remove that container or choose another --name")
                config = records.replace(config, name=self.unique_name())
            staging = self.dir / f".tmp-{config.id}"
            staging.mkdir(mode=0o700)
            try:
                atomic_write(staging / "config.json", json.dumps(config.to_json(), indent=1).encode())
                atomic_write(staging / "state.json", json.dumps(ContainerState().to_json()).encode())
                os.rename(staging, self.path(config.id))
            except BaseException:
                remove_tree(staging)
                raise
        return config

    def rename(self, container_id: str, new_name: str) -> ContainerConfig:
        """Give a container another name (``docker rename``); names stay unique across the store."""
        import re

        if not re.fullmatch(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+", new_name):
            raise UsageError(f'Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
        new_name = new_name.lstrip("/")
        with locked(self.dir / ".names.lock"), self.lock(container_id):
            config = self.config(container_id)
            if config.name == new_name:
                raise ConflictError("Renaming a container with the same name as its current name")
            if any(c.name == new_name for c in self.walk()):
                raise ConflictError(f'the container name "/{new_name}" is already in use',
                                    "remove that container or choose another name")
            config = records.replace(config, name=new_name)
            self.save_config(config)
        return config

    def save_config(self, config: ContainerConfig) -> None:
        """Replace a container's recorded configuration (``update``); the caller holds its lock."""
        atomic_write(self.path(config.id) / "config.json", json.dumps(config.to_json(), indent=1).encode())

    def unique_name(self) -> str:
        taken = {c.name for c in self.walk()}
        for _ in range(100):
            name = f"{_choice(_ADJECTIVES)}_{_choice(_NAMES)}"
            if name not in taken:
                return name
        return f"{_choice(_ADJECTIVES)}_{_choice(_NAMES)}_{os.urandom(2).hex()}"

    def config(self, container_id: str) -> ContainerConfig:
        try:
            return ContainerConfig.from_json(json.loads((self.path(container_id) / "config.json").read_bytes()))
        except FileNotFoundError:
            raise ContainerNotFound(f"no such container: {container_id[:12]}") from None

    def state(self, container_id: str) -> ContainerState:
        try:
            return ContainerState.from_json(json.loads((self.path(container_id) / "state.json").read_bytes()))
        except FileNotFoundError:
            raise ContainerNotFound(f"no such container: {container_id[:12]}") from None

    def save_state(self, container_id: str, state: ContainerState) -> None:
        atomic_write(self.path(container_id) / "state.json", json.dumps(state.to_json()).encode(), durable=False)

    def update_state(self, container_id: str, **changes: Any) -> ContainerState:
        """Change some fields of the state: a read and a write that no other process's update interleaves
        (the monitor and a ``stop`` write the same record)."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locked(self.path(container_id) / "state.lock"))
            except FileNotFoundError:
                raise ContainerNotFound(f"no such container: {container_id[:12]}") from None
            state = records.replace(self.state(container_id), **changes)
            self.save_state(container_id, state)
        return state

    def update_health(self, container_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Replace ``State.Health`` with ``change(current)``, under the state's lock."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locked(self.path(container_id) / "state.lock"))
            except FileNotFoundError:
                raise ContainerNotFound(f"no such container: {container_id[:12]}") from None
            state = self.state(container_id)
            self.save_state(container_id, records.replace(state, health=change(dict(state.health or {}))))

    def walk(self) -> Iterator[ContainerConfig]:
        if not self.dir.is_dir():
            return
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(ContainerNotFound, ValueError, TypeError):
                yield self.config(entry.name)

    def resolve(self, text: str) -> ContainerConfig:
        """A container by full id, unique id prefix or name (``/name`` accepted)."""
        if not text:
            raise UsageError("empty container name")
        name = text[1:] if text.startswith("/") else text
        configs = list(self.walk())
        for c in configs:
            if c.id == text or c.name == name:
                return c
        matches = [c for c in configs if c.id.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConflictError(f"multiple containers match {text!r}", "type more of the ID")
        raise ContainerNotFound(f"no such container: {text}")

    def log_path(self, container_id: str) -> Path:
        return self.path(container_id) / "container.log"

    def remove_record(self, container_id: str) -> None:
        path = self.path(container_id)
        doomed = self.dir / f".rm-{container_id}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, doomed)
        remove_tree(doomed)

    def leftovers(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return [Path(e.path) for e in os.scandir(self.dir) if e.name.startswith((".tmp-", ".rm-"))]


def now() -> str:
    return str(now_iso())
