"""The store's event journal (``pybuild events``): what pybuild processes did, in docker's event shape.

Docker's daemon keeps its events in memory and streams them; pybuild has no
daemon, so every process that changes something (the CLI, a container's
monitor) appends one JSON line per event to ``events.log`` in the store
root. An ``O_APPEND`` write of one line is one write(2): lines of concurrent
writers never interleave. At 1 MiB the journal moves to ``events.log.1``
(replacing the one before), so a reader sees the last 1-2 MiB of history.

Each line is docker's ``events.Message``: ``Type``, ``Action``, ``Actor``
(``ID``, ``Attributes``), ``scope``, ``time``, ``timeNano`` and, for
containers and images, the old ``status``/``id``/``from`` fields.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from .locks import locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

JOURNAL = "events.log"
ROTATE_AT = 1 << 20


def event(type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None,
          now_ns: int | None = None) -> dict[str, Any]:
    """One event as docker's API encodes it."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    attrs = dict(attributes or {})
    doc: dict[str, Any] = {}
    if type_ in ("container", "image"):
        doc.update(status=action, id=actor_id)
        if type_ == "container" and "image" in attrs:
            doc["from"] = attrs["image"]
    doc.update(Type=type_, Action=action, Actor={"ID": actor_id, "Attributes": attrs}, scope="local",
               time=now_ns // 1_000_000_000, timeNano=now_ns)
    return doc


class Journal:
    """The event journal of the store at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / JOURNAL

    def emit(self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> None:
        """Append one event. Never fails the work it reports: a journal that cannot be written is skipped."""
        line = json.dumps(event(type_, action, actor_id, attributes), separators=(",", ":")).encode() + b"\n"
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size >= ROTATE_AT:
                self._rotate()

    def _rotate(self) -> None:
        with locked(self.root / "events.lock"), contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_size >= ROTATE_AT:  # not already moved by another writer
                os.replace(self.path, self.path.with_name(JOURNAL + ".1"))

    def follow(self, since_ns: int | None, until_ns: int | None, poll: float = 0.1) -> Iterator[dict[str, Any]]:
        """The events from ``since_ns`` (None: from now on), then new ones as they come, until ``until_ns``
        (None: until the caller stops)."""
        offset, inode = 0, 0
        if since_ns is None:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path)
                offset, inode = st.st_size, st.st_ino
        else:
            older = self.path.with_name(JOURNAL + ".1")
            with contextlib.suppress(FileNotFoundError), open(older, "rb") as f:
                for line in f:
                    doc = _parse(line)
                    if doc is None or doc["timeNano"] < since_ns:
                        continue
                    if until_ns is not None and doc["timeNano"] > until_ns:
                        return
                    yield doc
        pending = b""
        while True:
            try:
                with open(self.path, "rb") as f:
                    current = os.fstat(f.fileno()).st_ino
                    if current != inode:  # the first read, or rotated since: the journal from its start
                        inode, offset, pending = current, 0, b""
                    f.seek(offset)
                    data = f.read()
                    offset += len(data)
            except FileNotFoundError:
                data = b""
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                doc = _parse(line)
                if doc is None or (since_ns is not None and doc["timeNano"] < since_ns):
                    continue
                if until_ns is not None and doc["timeNano"] > until_ns:
                    return
                yield doc
            if until_ns is not None and time.time_ns() > until_ns:
                return
            time.sleep(poll)


def _parse(line: bytes) -> dict[str, Any] | None:
    """One journal line; None for a torn or foreign one."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("timeNano"), int):
        return None
    return doc
