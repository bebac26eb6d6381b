"""Which repositories a blob is known to be in: the record behind cross-repository mounts.

``<root>/registry/blob-sources.json`` maps a blob digest to the repositories
(``host/path``) it was pulled from or pushed to, newest last. A push asks
the registry to mount a blob from one of them on the same registry instead
of uploading it. The file is a hint, never the truth (a registry may have
deleted the blob since; then the mount fails and the blob is uploaded): it
is rewritten whole and atomically under its own lock, capped, and entries
for blobs gone from the store are dropped when it is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.linux.fsutil import atomic_write
from pybuild.store import digest as _digest
from pybuild.store.locks import locked

if TYPE_CHECKING:
    from pybuild.store.root import Store

MAX_REPOS_PER_BLOB = 8
FILE_NAME = "blob-sources.json"


class BlobSources:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dir = store.root / "registry"
        self.path = self.dir / FILE_NAME
        self.lock = self.dir / "blob-sources.lock"

    def _read(self) -> dict[str, list[str]]:
        try:
            doc = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return {}
        blobs = doc.get("blobs") if isinstance(doc, dict) else None
        if not isinstance(blobs, dict):
            return {}
        return {k: [r for r in v if isinstance(r, str)] for k, v in blobs.items()
                if _digest.is_valid(k) and isinstance(v, list)}

    def repos_of(self, digest: str) -> list[str]:
        """Repositories (``host/path``) the blob was seen in, newest first."""
        return list(reversed(self._read().get(digest, [])))

    def add(self, repo: str, digests: Iterable[str]) -> None:
        wanted = [d for d in digests if _digest.is_valid(d)]
        if not wanted:
            return
        self.dir.mkdir(mode=0o700, exist_ok=True)
        with locked(Path(self.lock)):
            data = self._read()
            changed = False
            for dgst in wanted:
                repos = data.setdefault(dgst, [])
                if repos and repos[-1] == repo:
                    continue
                if repo in repos:
                    repos.remove(repo)
                repos.append(repo)
                del repos[:-MAX_REPOS_PER_BLOB]
                changed = True
            if not changed:
                return
            data = {d: r for d, r in data.items() if d in wanted or self.store.blobs.exists(d)}
            atomic_write(self.path, json.dumps({"blobs": data}, indent=1, sort_keys=True).encode(), 0o600,
                         durable=False)
