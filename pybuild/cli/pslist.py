"""``ps``: which containers to list (docker's filters, ``-n``/``-l``) and their rows with docker's field names.

A :class:`ContainerRow` is what a ``ps --format`` template sees: the fields
of docker's ps formatter (``.ID``, ``.Image``, ``.Command``, ``.CreatedAt``,
``.RunningFor``, ``.Ports``, ``.State``, ``.Status``, ``.Size``, ``.Names``,
``.Labels``, ``.Mounts``, ``.Networks``, ``.LocalVolumes``, and the method
``.Label "KEY"``), all strings, as docker's are.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from pybuild.cli import ui
from pybuild.cli.filters import Filters
from pybuild.errors import PybuildError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.runtime.containers import ContainerConfig, ContainerState
    from pybuild.runtime.lifecycle import Runtime

PS_FILTERS = ("id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume", "network",
              "publish", "expose", "health")
HEALTH_STATES = ("starting", "healthy", "unhealthy", "none")
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
FIELDS = ("Command", "CreatedAt", "ID", "Image", "Labels", "LocalVolumes", "Mounts", "Names", "Networks",
          "Ports", "RunningFor", "Size", "State", "Status")
HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
           "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
           "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
           "LocalVolumes": "LOCAL VOLUMES"}


def status_text(state: ContainerState) -> str:
    """docker's STATUS: ``Created``, ``Up 5 minutes``, ``Up 2 hours (Paused)``, ``Exited (1) 3 seconds ago``,
    ``Restarting (1) 2 seconds ago``."""
    if state.status == "created":
        return "Created"
    if state.status == "restarting":
        return f"Restarting ({state.exit_code}) {ui.ago(state.finished_at)}"
    if state.status in ("running", "paused"):
        text = "Up " + ui.human_duration(seconds_since(state.started_at))
        if state.status == "paused":
            return text + " (Paused)"
        if state.health:
            status = state.health.get("Status", "starting")
            return text + (" (health: starting)" if status == "starting" else f" ({status})")
        return text
    return f"Exited ({state.exit_code}) {ui.ago(state.finished_at)}"


def seconds_since(when: str) -> float:
    parsed = ui.parse_time(when)
    if parsed is None:
        return 0.0
    return max((_dt.datetime.now(_dt.UTC) - parsed).total_seconds(), 0.0)


def go_time(when: str) -> str:
    """A timestamp as Go's time.String() prints it in local time: ``2024-05-01 10:20:30 +0000 UTC``."""
    parsed = ui.parse_time(when)
    if parsed is None:
        return ""
    local = parsed.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z ") + (local.tzname() or "")


class ContainerRow:
    """One ``ps`` row; attribute names are docker's template fields."""

    def __init__(self, config: ContainerConfig, state: ContainerState, *, ports: str, networks: str,
                 trunc: bool, size: str = "") -> None:
        self._config = config
        self._state = state
        command = " ".join(config.args)
        self.ID = config.short_id if trunc else config.id
        self.Image = config.image
        self.Command = f'"{ui.truncate(command, 20) if trunc else command}"'
        self.CreatedAt = go_time(config.created)
        self.RunningFor = ui.ago(config.created)
        self.Ports = ports
        self.State = state.status
        self.Status = status_text(state)
        self.Size = size or "0B"
        self.Names = config.name
        self.Labels = ",".join(f"{k}={v}" for k, v in sorted(config.labels.items()))
        self.Mounts = ",".join(m.source if m.kind == "volume" else m.source for m in config.mounts
                               if m.kind in ("volume", "bind"))
        self.Networks = networks
        self.LocalVolumes = str(sum(1 for m in config.mounts if m.kind == "volume"))

    def Label(self, key: str) -> str:  # noqa: N802 - docker's template method name
        return self._config.labels.get(key, "")

    def to_json(self) -> dict[str, Any]:
        """``{{json .}}``: every field, as docker marshals its ps formatter."""
        return {name: getattr(self, name) for name in FIELDS}


def _network_names(config: ContainerConfig) -> str:
    mode = config.network
    if mode.startswith("container:"):
        return ""
    return "bridge" if mode in ("bridge", "default") else mode


def _size_of(rt: Runtime, config: ContainerConfig) -> str:
    """``-s``: the container's writable layer, and with the image's, docker's ``2B (virtual 1.2MB)``."""
    from pybuild.cli.imagelist import uncompressed_size
    from pybuild.linux.fsutil import tree_size

    try:
        rw = rt.store.layers.get_rw(config.id)
        total = tree_size(rt.store.layers.overlay / rw.mount_id / "diff")
        image = rt.store.images.get(config.manifest)
        return f"{ui.human_size(total)} (virtual {ui.human_size(total + uncompressed_size(rt.store, image))})"
    except (PybuildError, OSError):
        return "0B"


def _descends_from(rt: Runtime, config: ContainerConfig, ancestors: list[list[str]]) -> bool:
    """Whether the container's image is one of ``ancestors`` (layer lists) or built on one (their layers first)."""
    try:
        layers = [d.digest for d in rt.store.images.get(config.manifest).manifest.layers]
    except PybuildError:
        return False
    return any(layers[:len(a)] == a for a in ancestors)


def _health(config: ContainerConfig, state: ContainerState) -> str:
    """docker's ps ``health`` filter value: ``none`` without a check."""
    from pybuild.runtime.health import probe_args

    if probe_args(config.healthcheck) is None:
        return "none"
    return str((state.health or {}).get("Status", "starting"))


def select(rt: Runtime, *, all_: bool, filters: Filters, last: int, size: bool, trunc: bool) -> list[ContainerRow]:
    """The rows ``ps`` shows, newest first, as docker chooses them."""
    for value in filters.values("status"):
        if value not in STATES:
            raise UsageError(f"invalid filter 'status={value}'", f"valid states: {', '.join(STATES)}")
    for value in filters.values("health"):
        if value not in HEALTH_STATES:
            raise UsageError(f"invalid filter 'health={value}'", f"valid values: {', '.join(HEALTH_STATES)}")
    exited: list[int] = []
    for value in filters.values("exited"):
        try:
            exited.append(int(value))
        except ValueError:
            raise UsageError(f"invalid filter 'exited={value}'", "an exit code is an integer") from None
    if filters.has("status") or last > 0:
        all_ = True
    ancestors = []
    for name in filters.values("ancestor"):
        try:
            ancestors.append([d.digest for d in rt.store.images.resolve(name).manifest.layers])
        except PybuildError:
            continue
    configs = sorted(rt.containers.walk(), key=lambda c: c.created, reverse=True)
    before = _bound(rt, filters.values("before"), "before")
    since = _bound(rt, filters.values("since"), "since")
    rows = []
    for config in configs:
        if before is not None and config.created >= before:
            continue
        if since is not None and config.created <= since:
            continue
        try:
            state = rt.refresh(config)
        except PybuildError:
            continue
        if not all_ and not state.running:
            continue
        if not (filters.match("name", config.name) and filters.match("id", config.id)
                and filters.labels(config.labels) and filters.match("status", state.status)):
            continue
        if exited and not (state.status == "exited" and state.exit_code in exited):
            continue
        if filters.has("health") and not filters.exact("health", _health(config, state)):
            continue
        if filters.has("ancestor") and not _descends_from(rt, config, ancestors):
            continue
        if filters.has("volume") and not any(
                m.source in filters.values("volume") or m.target in filters.values("volume")
                for m in config.mounts):
            continue
        if filters.has("network") and _network_names(config) not in filters.values("network"):
            continue
        bindings = rt.network_info(config).ports if state.running and config.ports else []
        if filters.has("publish") and not {f"{b.host_port}/{b.proto}" for b in bindings} & _ports(
                filters.values("publish")):
            continue
        if filters.has("expose") and not {f"{b.container_port}/{b.proto}" for b in config.ports} & _ports(
                filters.values("expose")):
            continue
        rows.append(ContainerRow(config, state, ports=", ".join(str(b) for b in bindings),
                                 networks=_network_names(config), trunc=trunc,
                                 size=_size_of(rt, config) if size else ""))
        if last > 0 and len(rows) == last:
            break
    return rows


def _ports(values: list[str]) -> set[str]:
    return {v if "/" in v else f"{v}/tcp" for v in values}


def _bound(rt: Runtime, names: list[str], key: str) -> str | None:
    """``before=``/``since=``: the creation time of the container named."""
    if not names:
        return None
    try:
        return rt.containers.resolve(names[-1]).created
    except PybuildError:
        raise UsageError(f"No such container: {names[-1]}", f"the {key} filter names a container") from None

