"""The state a build step starts from and leaves: an image as built so far, with its cache key."""

from __future__ import annotations

from pybuild.records import record
from pybuild.store import digest as _digest
from pybuild.store.model import Descriptor, ImageConfig


@record(frozen=True)
class State:
    """An image as built so far."""

    config: ImageConfig
    layers: tuple[Descriptor, ...]
    key: str

    @property
    def top_chain(self) -> str | None:
        return _digest.chain_id(list(self.config.diff_ids)) if self.config.diff_ids else None
