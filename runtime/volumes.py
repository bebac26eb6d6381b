"""Volumes: ``volumes/<name>/_data`` directories bound into containers.

Named volumes live until ``pybuild volume rm``; anonymous ones (``-v /path``
and an image's VOLUME entries) go with their container on ``rm -v`` or
``--rm``. A new volume is filled from the image's content at its mount
point, as Docker does.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from pybuild.errors import NotFoundError, UsageError
from pybuild.linux.fsutil import atomic_write, remove_tree
from pybuild.records import record
from pybuild.store.images import Image, now_iso
from pybuild.store.root import Store


class VolumeNotFound(NotFoundError):
    pass


@record(frozen=True)
class Volume:
    name: str
    anonymous: bool
    created: str
    mountpoint: Path


class VolumeStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "volumes"

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"invalid volume name {name!r}")
        return self.dir / name

    def data_dir(self, name: str) -> Path:
        return self._path(name) / "_data"

    def new_anonymous_name(self) -> str:
        return os.urandom(32).hex()

    def ensure(self, name: str, anonymous: bool = False) -> bool:
        """Create the volume if missing; True when it was created now."""
        path = self._path(name)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return False
        (path / "_data").mkdir(mode=0o755)
        atomic_write(path / "meta.json", json.dumps({"created": now_iso(), "anonymous": anonymous}).encode())
        return True

    def populate(self, name: str, store: Store, image: Image, target: str) -> None:
        """Copy what the image has at ``target`` into the (new, empty) volume."""
        from .privatemount import copy_tree_from_view

        top = image.top_chain_id
        if top is None:
            return
        layers = store.layers
        layer = layers.get(top)
        lowers = [f"l/{layers.short_id(layer.cache_id)}", *layers.lowers(layer.cache_id)]
        copy_tree_from_view(layers.overlay, lowers, target, self.data_dir(name))

    def get(self, name: str) -> Volume:
        path = self._path(name)
        try:
            meta = json.loads((path / "meta.json").read_bytes())
        except FileNotFoundError:
            raise VolumeNotFound(f"no such volume: {name}") from None
        return Volume(name, bool(meta.get("anonymous")), str(meta.get("created", "")), path / "_data")

    def walk(self) -> Iterator[Volume]:
        if not self.dir.is_dir():
            return
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            with contextlib.suppress(VolumeNotFound, ValueError, UsageError):
                yield self.get(entry.name)

    def remove(self, name: str) -> None:
        self.get(name)
        remove_tree(self._path(name))
