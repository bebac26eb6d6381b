"""Pushing an image from the store to a registry.

Layer blobs go first, at the same time (bounded): each is skipped if the
repository has it (HEAD), mounted from another repository of the same
registry when the store remembers one that holds it (see ``sources``), or
uploaded (monolithic below ``chunk_threshold``, chunked above). Then the
config blob, then the manifest with its exact stored bytes and media type.

``compression`` re-encodes layers whose stored compression differs: the
layer tar is decompressed and compressed again into a new blob (diff-ids do
not change, so the config does not either), a new OCI manifest is written
and recorded in the store as an image of the same config, and that is what
is pushed.
"""

from __future__ import annotations

import hashlib

from pybuild.errors import DigestMismatch, LayerError, RegistryError, UsageError
from pybuild.records import record
from pybuild.store import reference as _reference
from pybuild.store.compression import CHUNK, Compression, from_media_type, open_compressor, open_decompressed
from pybuild.store.images import Image
from pybuild.store.model import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)
from pybuild.store.root import Store

from .client import BlobPushed, RegistryClient, short
from .progress import NullProgress, Progress
from .pull import operation
from .sources import BlobSources
from .transport import RegistryOptions

_OCI_EQUIVALENT = {DOCKER_LAYER_GZIP: OCI_LAYER_GZIP, DOCKER_LAYER: OCI_LAYER, DOCKER_CONFIG: OCI_CONFIG}


@record(frozen=True)
class PushResult:
    ref: _reference.Reference
    digest: str  # of the manifest pushed
    size: int  # of the manifest pushed
    image: Image  # the image pushed (a recompressed copy when compression asked for one)
    blobs_uploaded: int
    blobs_mounted: int
    blobs_skipped: int


def push_image(store: Store, image: str | Image, ref: str | _reference.Reference | None = None, *,
               compression: str | None = None, progress: Progress | None = None,
               options: RegistryOptions | None = None, client: RegistryClient | None = None) -> str:
    """Push an image (a name in the store or an Image) to ``ref`` (default: its name); return the manifest digest."""
    return push(store, image, ref, compression=compression, progress=progress, options=options,
                client=client).digest


def push(store: Store, image: str | Image, ref: str | _reference.Reference | None = None, *,
         compression: str | None = None, progress: Progress | None = None,
         options: RegistryOptions | None = None, client: RegistryClient | None = None) -> PushResult:
    if ref is None:
        if not isinstance(image, str):
            raise UsageError("push needs a reference to push an image object to")
        ref = image
    target = _reference.parse(ref) if isinstance(ref, str) else ref
    if target.digest is not None:
        raise UsageError(f"cannot push to a digest reference: {target.familiar()}", "push to a tag")
    comp: Compression | None = None
    if compression is not None:
        try:
            comp = Compression(compression)
        except ValueError:
            raise UsageError(f"unknown compression {compression!r}", "use gzip or zstd") from None
        if comp not in (Compression.GZIP, Compression.ZSTD):
            raise UsageError(f"cannot push {compression} layers", "use gzip or zstd")
    with operation(f"push {target.familiar()}"):
        local = store.images.resolve(image) if isinstance(image, str) else image
        own = client is None
        cl = client or RegistryClient(target.domain, options, push=True)
        try:
            return _Pusher(store, cl, target, progress or NullProgress()).run(local, comp)
        finally:
            if own:
                cl.close()


def recompress(store: Store, image: Image, compression: Compression, progress: Progress | None = None) -> Image:
    """The image with every layer stored in ``compression`` (recorded in the store; same config)."""
    progress = progress or NullProgress()
    layers: list[Descriptor] = []
    changed = False
    for desc, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
        try:
            current = from_media_type(desc.media_type)
        except LayerError as exc:
            raise RegistryError(f"layer {short(desc.digest)}: {exc.message}") from None
        if current is compression:
            layers.append(Descriptor(_OCI_EQUIVALENT.get(desc.media_type, desc.media_type), desc.digest, desc.size,
                                     desc.annotations))
            continue
        changed = True
        key = short(desc.digest)
        progress.update(key, f"Compressing ({compression.value})")
        with store.blobs.open(desc.digest) as src, store.blobs.writer() as w:
            reader = open_decompressed(src)
            tar_hash = hashlib.sha256()
            compressor = open_compressor(w, compression)
            while chunk := reader.read(CHUNK):
                tar_hash.update(chunk)
                compressor.write(chunk)
            compressor.close()  # finishes the compressed stream, leaves the writer open
            actual = "sha256:" + tar_hash.hexdigest()
            if actual != diff_id:
                raise DigestMismatch(f"layer {key} in the store does not match the image config: "
                                     f"diff-id {actual}, expected {diff_id}", "run 'pybuild system check'")
            new_digest = w.commit()
            size = w.size
        layers.append(Descriptor(compression.media_type, new_digest, size))
        progress.update(key, f"Compressed to {short(new_digest)}")
    if not changed:
        return image
    config = Descriptor(_OCI_EQUIVALENT.get(image.manifest.config.media_type, image.manifest.config.media_type),
                        image.manifest.config.digest, image.manifest.config.size)
    manifest = Manifest(config, tuple(layers), OCI_MANIFEST, dict(image.manifest.annotations))
    return store.images.record(store.blobs.put(manifest.to_bytes()))


class _Pusher:
    def __init__(self, store: Store, client: RegistryClient, target: _reference.Reference, progress: Progress) -> None:
        self.store = store
        self.client = client
        self.target = target
        self.progress = progress
        self.sources = BlobSources(store)
        self.repo_key = f"{target.domain}/{target.path}"

    def run(self, image: Image, compression: Compression | None) -> PushResult:
        target = self.target
        self.progress.message(f"The push refers to repository [{target.name}]")
        with self.store.writing():
            if compression is not None:
                image = recompress(self.store, image, compression, self.progress)
            for desc in (image.manifest.config, *image.manifest.layers):
                if not self.store.blobs.exists(desc.digest):
                    raise RegistryError(f"blob {desc.digest} of the image is missing from the store",
                                        "run 'pybuild system check'")
            manifest_bytes = self.store.blobs.read(image.manifest_digest)
            layers: dict[str, Descriptor] = {}
            for desc in image.manifest.layers:
                layers.setdefault(desc.digest, desc)
            for desc in layers.values():
                self.progress.update(short(desc.digest), "Preparing")
            outcomes = self._push_layers(list(layers.values()))
            outcomes.append(self._push_blob(image.manifest.config, quiet=True))
            digest = self.client.put_manifest(target.path, target.tag or _reference.DEFAULT_TAG, manifest_bytes,
                                              image.manifest.media_type)
            if digest != image.manifest_digest:
                raise DigestMismatch(f"the manifest pushed hashes to {digest}, not {image.manifest_digest}")
            self.sources.add(self.repo_key, [image.manifest.config.digest, *layers])
        self.progress.message(f"{target.tag}: digest: {digest} size: {len(manifest_bytes)}")
        return PushResult(target, digest, len(manifest_bytes), image,
                          sum(o.how == "pushed" for o in outcomes), sum(o.how == "mounted" for o in outcomes),
                          sum(o.how == "exists" for o in outcomes))

    def _push_layers(self, layers: list[Descriptor]) -> list[BlobPushed]:
        if not layers:
            return []
        with self.client.transfers(len(layers), "push") as pool:
            futures = [pool.submit(self._push_blob, desc) for desc in layers]
            return [f.result() for f in futures]

    def _mount_candidates(self, digest: str) -> tuple[str, ...]:
        prefix = self.target.domain + "/"
        out = []
        for repo in self.sources.repos_of(digest):
            if repo.startswith(prefix) and repo != self.repo_key:
                out.append(repo[len(prefix):])
        return tuple(out[:3])

    def _push_blob(self, desc: Descriptor, quiet: bool = False) -> BlobPushed:
        key = short(desc.digest)
        total = desc.size

        def report(done: int) -> None:
            if not quiet:
                self.progress.update(key, "Pushing", done, total)

        outcome = self.client.push_blob(self.target.path, desc.digest, desc.size, self.store.blobs.path(desc.digest),
                                        mount_from=self._mount_candidates(desc.digest), progress=report)
        if not quiet:
            if outcome.how == "exists":
                self.progress.update(key, "Layer already exists")
            elif outcome.how == "mounted":
                self.progress.update(key, f"Mounted from {outcome.source}")
            else:
                self.progress.update(key, "Pushed", total=total)
        return outcome
