"""``images``: which images to list (docker's filters) and their rows with docker's field names.

An :class:`ImageRow` is what an ``images --format`` template sees: docker's
image formatter fields (``.ID``, ``.Repository``, ``.Tag``, ``.Digest``,
``.CreatedSince``, ``.CreatedAt``, ``.Size``, ``.VirtualSize``,
``.SharedSize``, ``.UniqueSize``, ``.Containers``), all strings. ``Size`` is
the uncompressed size of the image's layers, as docker reports it (the sum
of what they hold on disk), not the size of the compressed blobs.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from pybuild.cli import ui
from pybuild.cli.filters import Filters
from pybuild.cli.pslist import go_time
from pybuild.errors import PybuildError, UsageError
from pybuild.store import reference as _reference

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.store.images import Image
    from pybuild.store.root import Store

IMAGE_FILTERS = ("reference", "dangling", "label", "before", "since")
FIELDS = ("Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository", "SharedSize", "Size", "Tag",
          "UniqueSize", "VirtualSize")
HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
           "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "VirtualSize": "VIRTUAL SIZE",
           "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"}


def uncompressed_size(store: Store, image: Image) -> int:
    """What the image's layers hold unpacked (docker's image size); the blobs' sizes when a layer is missing."""
    total = 0
    try:
        for chain in image.chain_ids:
            total += store.layers.get(chain).size
    except PybuildError:
        return image.size
    return total


class ImageRow:
    """One ``images`` row (an image under one of its names); attribute names are docker's template fields."""

    def __init__(self, image: Image, repository: str, tag: str, digest: str, size: int, trunc: bool) -> None:
        self.ID = image.short_id if trunc else image.id
        self.Repository = repository
        self.Tag = tag
        self.Digest = digest
        self.CreatedSince = ui.ago(image.config.created)
        self.CreatedAt = go_time(image.config.created or "")
        self.Size = ui.human_size(size)
        self.VirtualSize = self.Size
        self.SharedSize = "N/A"
        self.UniqueSize = "N/A"
        self.Containers = "N/A"

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


def _names(store: Store) -> dict[str, list[str]]:
    by_manifest: dict[str, list[str]] = {}
    for key, target in store.images.refs().items():
        if "@" not in key.split("/")[-1]:
            by_manifest.setdefault(target, []).append(key)
    return by_manifest


def _reference_matches(patterns: list[str], repository: str, tag: str) -> bool:
    """docker's reference filter: a shell pattern on ``name`` or ``name:tag`` (familiar form)."""
    if repository == "<none>":
        return False
    full = f"{repository}:{tag}"
    return any(fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(repository, p) for p in patterns)


def _created_of(store: Store, names: list[str], key: str) -> str | None:
    if not names:
        return None
    try:
        return store.images.resolve(names[-1]).config.created or ""
    except PybuildError:
        raise UsageError(f"No such image: {names[-1]}", f"the {key} filter names an image") from None


def select(store: Store, *, repository: str | None, filters: Filters, trunc: bool) -> list[ImageRow]:
    """The rows ``images`` shows, newest first, one per name of each image (``<none>`` for untagged ones)."""
    by_manifest = _names(store)
    want = _reference.parse(repository, default_tag=False) if repository else None
    dangling = filters.boolean("dangling")
    before = _created_of(store, filters.values("before"), "before")
    since = _created_of(store, filters.values("since"), "since")
    rows: list[ImageRow] = []
    for image in sorted(store.images.walk(), key=lambda i: i.config.created or "", reverse=True):
        created = image.config.created or ""
        if (before is not None and created >= before) or (since is not None and created <= since):
            continue
        keys = sorted(by_manifest.get(image.manifest_digest, []))
        if dangling is not None and dangling != (not keys):
            continue
        if not filters.labels(image.config.config.labels):
            continue
        names = [_repo_tag(k) for k in keys] or [("<none>", "<none>")]
        size: int | None = None
        for repo, tag in names:
            if want is not None and (repo != want.familiar_name or (want.tag and tag != want.tag)):
                continue
            if filters.has("reference") and not _reference_matches(filters.values("reference"), repo, tag):
                continue
            if size is None:
                size = uncompressed_size(store, image)
            rows.append(ImageRow(image, repo, tag, image.manifest_digest, size, trunc))
    return rows


def _repo_tag(key: str) -> tuple[str, str]:
    ref = _reference.parse(key)
    return ref.familiar_name, ref.tag or "<none>"
