"""Images and the names that point at them.

An image is a manifest in the blob store plus a record under
``imagedb/sha256/<manifest-hex>`` (the record is what makes it a GC root).
Its ID, as Docker shows it, is the digest of its config. ``refs.json`` maps
full reference strings (``docker.io/library/busybox:latest``) to manifest
digests; it is rewritten whole, atomically, under its own lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pybuild.errors import ConflictError, ImageNotFound, InvalidReference, PybuildError, StoreError
from pybuild.linux.fsutil import atomic_write
from pybuild.records import record

from . import digest as _digest
from . import reference as _reference
from .blobs import BlobStore
from .locks import locked
from .model import OCI_CONFIG, OCI_MANIFEST, Descriptor, ImageConfig, Index, Manifest, Platform


@record(frozen=True)
class Image:
    manifest_digest: str
    manifest: Manifest
    config_digest: str
    config: ImageConfig
    recorded: str  # when the image entered this store (ISO 8601)

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def short_id(self) -> str:
        return _digest.hex_of(self.config_digest)[:12]

    @property
    def top_chain_id(self) -> str | None:
        return _digest.chain_id(list(self.config.diff_ids)) if self.config.diff_ids else None

    @property
    def chain_ids(self) -> list[str]:
        return _digest.chain_ids(list(self.config.diff_ids))

    @property
    def size(self) -> int:
        return sum(d.size for d in self.manifest.layers)


def now_iso() -> str:
    """Now in UTC, RFC 3339 with microseconds, as Docker writes ``created``."""
    now = time.time_ns() // 1000
    seconds, micros = divmod(now, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


class ImageStore:
    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self.root = root
        self.db = root / "imagedb" / "sha256"
        self.refs_path = root / "refs.json"
        self.refs_lock = root / "refs.lock"
        self.blobs = blobs

    # ---- images -------------------------------------------------------------

    def create(self, config: ImageConfig, layers: list[Descriptor],
               manifest_media_type: str = OCI_MANIFEST, config_media_type: str = OCI_CONFIG) -> Image:
        """Write config and manifest blobs and record the image."""
        if len(layers) != len(config.diff_ids):
            raise StoreError(f"image has {len(layers)} layers but {len(config.diff_ids)} diff ids")
        config_bytes = config.to_bytes()
        config_digest = self.blobs.put(config_bytes)
        manifest = Manifest(Descriptor(config_media_type, config_digest, len(config_bytes)),
                            tuple(layers), manifest_media_type)
        return self.record(self.blobs.put(manifest.to_bytes()))

    def record(self, manifest_digest: str, index_digest: str | None = None) -> Image:
        """Make a manifest already in the blob store an image of this store.

        ``index_digest`` names the index it was chosen from (kept alive with it).
        """
        path = self.db / _digest.hex_of(manifest_digest)
        if index_digest is not None:
            _digest.validate(index_digest)
            record = json.loads(path.read_bytes()) if path.exists() else {}
            if record.get("index") != index_digest:
                Manifest.from_bytes(self.blobs.read(manifest_digest))
                record.update(manifest=manifest_digest, index=index_digest)
                record.setdefault("recorded", now_iso())
                atomic_write(path, json.dumps(record).encode())
        if not path.exists():
            # Parse first: an image that cannot be read must never become a GC root.
            manifest = Manifest.from_bytes(self.blobs.read(manifest_digest))
            ImageConfig.from_bytes(self.blobs.read(manifest.config.digest))
            atomic_write(path, json.dumps({"manifest": manifest_digest, "recorded": now_iso()}).encode())
        return self.get(manifest_digest)

    def get(self, manifest_digest: str) -> Image:
        path = self.db / _digest.hex_of(manifest_digest)
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(f"image {manifest_digest} not found") from None
        manifest = Manifest.from_bytes(self.blobs.read(manifest_digest, verify=False))
        config = ImageConfig.from_bytes(self.blobs.read(manifest.config.digest, verify=False))
        return Image(manifest_digest, manifest, manifest.config.digest, config, str(record.get("recorded", "")))

    def index_of(self, manifest_digest: str) -> str | None:
        """The index an image was pulled through, if any."""
        try:
            value = json.loads((self.db / _digest.hex_of(manifest_digest)).read_bytes()).get("index")
        except (FileNotFoundError, ValueError):
            return None
        return value if isinstance(value, str) and _digest.is_valid(value) else None

    def exists(self, manifest_digest: str) -> bool:
        return (self.db / _digest.hex_of(manifest_digest)).exists()

    def walk(self) -> Iterator[Image]:
        if not self.db.is_dir():
            return
        for entry in sorted(os.scandir(self.db), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            try:
                image = self.get("sha256:" + entry.name)
            except (PybuildError, ValueError):
                continue  # reported by 'system check'
            yield image

    def forget(self, manifest_digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.db / _digest.hex_of(manifest_digest))

    # ---- references ---------------------------------------------------------

    def refs(self) -> dict[str, str]:
        try:
            data = json.loads(self.refs_path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise StoreError(f"{self.refs_path} is corrupt", "run 'pybuild system check --repair'") from None
        refs = data.get("refs", {}) if isinstance(data, dict) else {}
        return {k: v for k, v in refs.items() if isinstance(v, str) and _digest.is_valid(v)}

    def _write_refs(self, refs: dict[str, str]) -> None:
        atomic_write(self.refs_path, json.dumps({"refs": dict(sorted(refs.items()))}, indent=1).encode())

    def tag(self, ref: _reference.Reference, manifest_digest: str) -> None:
        if not self.exists(manifest_digest):
            raise ImageNotFound(f"image {manifest_digest} not found")
        if ref.digest is not None and ref.tag is None and ref.digest != manifest_digest:
            raise InvalidReference(f"cannot tag {manifest_digest} as {ref.familiar()}",
                                   "a digest reference must name the image's own manifest digest")
        with locked(self.refs_lock):
            refs = self.refs()
            refs[ref.key] = manifest_digest
            self._write_refs(refs)

    def untag(self, ref: _reference.Reference) -> str:
        with locked(self.refs_lock):
            refs = self.refs()
            target = refs.pop(ref.key, None)
            if target is None:
                raise ImageNotFound(f"no such image: {ref.familiar()}")
            self._write_refs(refs)
        return target

    def drop_refs_to(self, manifest_digest: str) -> list[str]:
        with locked(self.refs_lock):
            refs = self.refs()
            gone = [k for k, v in refs.items() if v == manifest_digest]
            for k in gone:
                del refs[k]
            self._write_refs(refs)
        return gone

    def names_of(self, manifest_digest: str) -> list[_reference.Reference]:
        out = []
        for key, target in self.refs().items():
            if target == manifest_digest:
                with contextlib.suppress(InvalidReference):
                    out.append(_reference.parse(key))
        return sorted(out, key=str)

    # ---- resolving what a user typed ---------------------------------------

    def resolve(self, text: str) -> Image:
        """An image by name[:tag], name@digest, ID or ID prefix, as docker does."""
        refs = self.refs()
        ref: _reference.Reference | None = None
        with contextlib.suppress(InvalidReference):
            ref = _reference.parse(text)
        if ref is not None:
            if ref.key in refs:
                return self.get(refs[ref.key])
            if ref.digest is not None and self.exists(ref.digest):
                return self.get(ref.digest)
        if _reference.is_image_id_prefix(text):
            prefix = text.removeprefix("sha256:")
            matches = {img.manifest_digest: img for img in self.walk()
                       if _digest.hex_of(img.id).startswith(prefix)
                       or _digest.hex_of(img.manifest_digest).startswith(prefix)}
            if len(matches) == 1:
                return next(iter(matches.values()))
            if len(matches) > 1:
                raise ConflictError(f"image ID prefix {text!r} is ambiguous", "type more of it")
        shown = ref.familiar() if ref is not None else text
        raise ImageNotFound(f"no such image: {shown}")

    def resolve_index_or_manifest(self, digest: str, platform: Platform) -> str:
        """Follow an index blob to the manifest for ``platform``."""
        data = self.blobs.read(digest)
        doc = json.loads(data)
        if "manifests" in doc:
            chosen = Index.from_bytes(data).select(platform)
            if chosen is None:
                raise ImageNotFound(f"index {digest} has no image for {platform}")
            return chosen.digest
        return digest
