"""``pybuild events``: the store's event journal (store/events.py) as docker prints its events."""

from __future__ import annotations

import json
import sys
from typing import Any

from pybuild.cli import Settings, pass_settings, ui
from pybuild.cli.cmdline import command, option
from pybuild.cli.filters import Filters
from pybuild.errors import UsageError

EVENT_FILTERS = ("container", "event", "image", "label", "type", "volume", "network")
# docker matches these without a colon as a prefix of the action ("health_status: healthy")
PREFIX_EVENTS = ("health_status", "exec_create", "exec_start")


def _nanos(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    from pybuild.runtime.logs import log_time

    try:
        when = ui.parse_time(log_time(value))
    except UsageError:
        raise UsageError(f"invalid value for {flag}: {value!r}",
                         "use an RFC 3339 time, a Unix timestamp or a duration such as 10m") from None
    assert when is not None
    return int(when.timestamp() * 1_000_000_000)


def wanted(doc: dict[str, Any], filters: Filters) -> bool:
    """Whether an event passes docker's event filters."""
    attrs = doc.get("Actor", {}).get("Attributes", {})
    actor = doc.get("Actor", {}).get("ID", "")
    kind, action = doc.get("Type", ""), doc.get("Action", "")
    if not filters.exact("type", kind):
        return False
    events = filters.values("event")
    if events:
        if any(e in PREFIX_EVENTS for e in events):
            if not any(action.startswith(e) for e in events):
                return False
        elif action not in events:
            return False
    if filters.has("container") and not (kind == "container" and (
            actor in filters.values("container") or attrs.get("name") in filters.values("container")
            or any(len(v) >= 12 and actor.startswith(v) for v in filters.values("container")))):
        return False
    if filters.has("image"):
        image = attrs.get("image", "") if kind == "container" else actor
        names = filters.values("image")
        if not (image in names or image.partition(":")[0] in names or attrs.get("name") in names):
            return False
    for key in ("volume", "network"):
        if filters.has(key) and not (kind == key and (actor in filters.values(key)
                                                      or attrs.get("name") in filters.values(key))):
            return False
    return filters.labels(attrs)


def pretty(doc: dict[str, Any]) -> str:
    """docker's line: local time with nanoseconds, type, action, actor and its sorted attributes."""
    import datetime as _dt

    nanos = int(doc.get("timeNano", 0))
    when = _dt.datetime.fromtimestamp(nanos // 1_000_000_000).astimezone()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos % 1_000_000_000:09d}"
    offset = when.strftime("%z")
    stamp += "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    actor = doc.get("Actor", {})
    line = f"{stamp} {doc.get('Type', '')} {doc.get('Action', '')} {actor.get('ID', '')}"
    attrs = actor.get("Attributes") or {}
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


def _go_names(doc: dict[str, Any]) -> dict[str, Any]:
    """The event with the Go field names a template uses (``{{.Status}}``, ``{{.Actor.ID}}``, ``{{.TimeNano}}``)."""
    return {"Status": doc.get("status", ""), "ID": doc.get("id", ""), "From": doc.get("from", ""),
            "Type": doc.get("Type", ""), "Action": doc.get("Action", ""), "Actor": doc.get("Actor", {}),
            "Scope": doc.get("scope", ""), "Time": doc.get("time", 0), "TimeNano": doc.get("timeNano", 0)}


@command("events")
@option("--since", help="Show events created since this time (RFC 3339, Unix time or a duration: 10m).")
@option("--until", help="Stream events until this time.")
@option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
        help="Filter: container, event, image, label, type, volume, network.")
@option("--format", "fmt", help="Go template, or json (one object per event).")
@pass_settings
def events_cmd(settings: Settings, since: str | None, until: str | None, filters: tuple[str, ...],
               fmt: str | None) -> None:
    """Get real time events written by pybuild commands and container monitors."""
    from pybuild.store.events import Journal

    wanted_filters = Filters(filters, EVENT_FILTERS)
    since_ns, until_ns = _nanos(since, "--since"), _nanos(until, "--until")
    if since_ns is not None and until_ns is not None and until_ns < since_ns:
        raise UsageError("--until must not be before --since")
    render = pretty
    if fmt is not None and fmt.strip() in ("json", "{{json .}}"):
        def render(doc: dict[str, Any]) -> str:
            return json.dumps(doc, separators=(",", ":"))
    elif fmt is not None:
        from pybuild.cli import gotemplate

        template = gotemplate.compile(fmt.replace("\\t", "\t").replace("\\n", "\n"))

        def render(doc: dict[str, Any]) -> str:
            return template.execute(_go_names(doc))
    journal = Journal(settings.store().root)
    try:
        for doc in journal.follow(since_ns, until_ns):
            if wanted(doc, wanted_filters):
                sys.stdout.write(render(doc) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:  # how a stream of events usually ends
        pass
