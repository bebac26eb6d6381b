"""The build cache: which step key produced which image state.

A record maps a step's cache key (a ``sha256:`` digest the builder computes)
to the state after the step: the config blob and the layer descriptors of
the image so far. Records are GC roots: their blobs and layer chains stay
until ``pybuild builder prune`` drops the records.

Records live under ``buildcache/records/<key-hex>.json``, written atomically.
``buildcache/slots/`` keeps, per stage of a Dockerfile, what the last build
of each step there used (the step text, build args, source file digests), so
a miss can be explained by comparison. Both are small JSON files; no index to
keep consistent.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pybuild.linux.fsutil import atomic_write
from pybuild.records import field, record

from . import digest as _digest
from .model import Descriptor


@record(frozen=True)
class CacheRecord:
    key: str
    config_digest: str
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "config": self.config_digest, "layers": [d.to_json() for d in self.layers],
                "diff_ids": list(self.diff_ids), "created": self.created}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CacheRecord:
        return cls(key=str(doc["key"]), config_digest=str(doc["config"]),
                   layers=tuple(Descriptor.from_json(d) for d in doc["layers"]),
                   diff_ids=tuple(str(d) for d in doc["diff_ids"]), created=float(doc.get("created", 0)))


@record
class SlotInputs:
    """What one position of a Dockerfile was built from last time (for explaining misses)."""

    key: str
    parent: str
    text: str
    args: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # source path -> digest (COPY/ADD)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "parent": self.parent, "text": self.text, "args": self.args, "files": self.files}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SlotInputs:
        return cls(key=str(doc["key"]), parent=str(doc["parent"]), text=str(doc["text"]),
                   args={str(k): str(v) for k, v in doc.get("args", {}).items()},
                   files={str(k): str(v) for k, v in doc.get("files", {}).items()})


class BuildCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.records = root / "records"
        self.slots = root / "slots"

    def _ensure(self) -> None:
        for d in (self.records, self.slots):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _record_path(self, key: str) -> Path:
        return self.records / f"{_digest.hex_of(key)}.json"

    def get(self, key: str) -> CacheRecord | None:
        try:
            doc = json.loads(self._record_path(key).read_bytes())
            return CacheRecord.from_json(doc)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, record: CacheRecord) -> None:
        self._ensure()
        atomic_write(self._record_path(record.key), json.dumps(record.to_json()).encode(), durable=False)

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._record_path(key))

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path(key).unlink()

    def walk(self) -> Iterator[CacheRecord]:
        try:
            entries = list(os.scandir(self.records))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                record = self.get("sha256:" + entry.name[:-5])
                if record is not None:
                    yield record

    def prune(self, older_than: float | None = None) -> int:
        """Drop records (all, or those not used for ``older_than`` seconds) and all slots; returns the count."""
        count = 0
        now = time.time()
        for directory in (self.records, self.slots):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if older_than is not None and now - entry.stat().st_mtime < older_than:
                        continue
                    os.unlink(entry.path)
                    if directory == self.records:
                        count += 1
        return count

    # ---- slots (explaining misses) ------------------------------------------------

    def _slot_path(self, slot: str) -> Path:
        return self.slots / f"{_digest.hex_of(slot)}.json"

    def last_inputs(self, slot: str) -> dict[int, SlotInputs]:
        """What each step of one stage of a Dockerfile (the slot) was built from last time, by step index.

        One file per stage, read once and written once per build: a step costs
        no file of its own (a Dockerfile may hold thousands of them).
        """
        try:
            doc = json.loads(self._slot_path(slot).read_bytes())
            return {int(k): SlotInputs.from_json(v) for k, v in doc["steps"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return {}

    def remember_inputs(self, slot: str, steps: dict[int, SlotInputs]) -> None:
        doc = {"steps": {str(k): v.to_json() for k, v in sorted(steps.items())}}
        data = json.dumps(doc, sort_keys=True).encode()
        with contextlib.suppress(OSError):
            if self._slot_path(slot).read_bytes() == data:
                return  # a rebuild that changed nothing writes nothing
        self._ensure()
        atomic_write(self._slot_path(slot), data, durable=False)
