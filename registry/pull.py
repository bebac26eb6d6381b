"""Pulling an image from a registry into the store.

Order of work, and why the store stays consistent whatever happens:

1. The manifest (by tag or digest) is fetched and verified; an index is
   resolved to the manifest for the wanted platform (verified too).
2. The config blob is fetched and verified (or read from the store).
3. Layer blobs the store lacks are downloaded at the same time (bounded),
   each streamed response -> hash -> temp file in ``tmp/``; only a blob that
   hashes to its digest is renamed into ``blobs/`` (a broken transfer is
   resumed with a Range request first). Layers whose chain id and blob the
   store has already are skipped.
4. In the main thread, each layer is applied as soon as its blob and its
   parent are in, verified against the config's diff-id; a layer is
   committed only whole (``LayerStore.register``).
5. Only when every part is in are the config, manifest (and index) blobs
   stored, the image recorded and the name tagged.

All of it runs under ``store.writing()``, so a concurrent GC waits. A pull
killed at any point leaves verified blobs and whole layers (garbage until
the next pull uses them) and temp files the next open removes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from pybuild.errors import DigestMismatch, LayerError, PybuildError, RegistryError
from pybuild.records import record
from pybuild.store import digest as _digest
from pybuild.store import reference as _reference
from pybuild.store.compression import from_media_type, open_decompressed
from pybuild.store.images import Image
from pybuild.store.model import (
    DOCKER_CONFIG,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    ManifestError,
    Platform,
)
from pybuild.store.root import Store

from .client import FetchedManifest, RegistryClient, short
from .errors import prefixed
from .progress import NullProgress, Progress
from .sources import BlobSources
from .transport import RegistryOptions


@record(frozen=True)
class PullResult:
    image: Image
    ref: _reference.Reference  # what was asked for, normalised
    digest: str  # what the reference resolved to at the registry: the index's digest or the manifest's
    manifest_digest: str
    index_digest: str | None
    blobs_downloaded: int
    up_to_date: bool


@contextlib.contextmanager
def operation(what: str) -> Iterator[None]:
    """Prefix any pybuild error raised inside with the operation (``pull host/app:v1``)."""
    try:
        yield
    except PybuildError as exc:
        raise prefixed(exc, what) from None


def _as_reference(ref: str | _reference.Reference) -> _reference.Reference:
    return _reference.parse(ref) if isinstance(ref, str) else ref


def pull_image(store: Store, ref: str | _reference.Reference, platform: Platform | None = None,
               progress: Progress | None = None, *, options: RegistryOptions | None = None,
               client: RegistryClient | None = None) -> Image:
    """Pull ``ref`` into ``store`` and return the image (what the builder calls for FROM)."""
    return pull(store, ref, platform, progress, options=options, client=client).image


def pull(store: Store, ref: str | _reference.Reference, platform: Platform | None = None,
         progress: Progress | None = None, *, options: RegistryOptions | None = None,
         client: RegistryClient | None = None) -> PullResult:
    """Pull ``ref`` into ``store``; the result says what happened (for the CLI's status lines)."""
    parsed = _as_reference(ref)
    with operation(f"pull {parsed.familiar()}"):
        own = client is None
        cl = client or RegistryClient(parsed.domain, options)
        try:
            return _Puller(store, cl, parsed, platform, progress or NullProgress()).run()
        finally:
            if own:
                cl.close()


def fetch_layers(store: Store, client: RegistryClient, repo: str, layers: Sequence[Descriptor],
                 diff_ids: Sequence[str], progress: Progress | None = None) -> int:
    """Download (verified) and register the layer chain ``layers`` (diff-ids ``diff_ids``) from ``repo``, as a
    pull does an image's; returns the blobs downloaded. The caller holds ``store.writing()``."""
    puller = _Puller(store, client, _reference.Reference(client.domain, repo), None, progress or NullProgress())
    puller._layers(layers, diff_ids)
    return puller.downloaded


class _Puller:
    def __init__(self, store: Store, client: RegistryClient, ref: _reference.Reference,
                 platform: Platform | None, progress: Progress) -> None:
        self.store = store
        self.client = client
        self.ref = ref
        self.platform = platform
        self.progress = progress
        self.repo = ref.path
        self.downloaded = 0
        self._count_lock = threading.Lock()

    def run(self) -> PullResult:
        ref = self.ref
        self.progress.message(f"{ref.digest or ref.tag}: Pulling from {ref.path}")
        top = self.client.get_manifest(self.repo, ref.digest or ref.tag or _reference.DEFAULT_TAG)
        index: FetchedManifest | None = None
        fetched = top
        if top.media_type in INDEX_TYPES:
            index = top
            fetched = self._resolve_index(top)
        try:
            manifest = Manifest.from_bytes(fetched.data, fetched.media_type)
        except ManifestError as exc:
            raise RegistryError(f"manifest {short(fetched.digest)}: {exc.message}", exc.hint) from None
        if manifest.config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise RegistryError(f"{ref.familiar()} is not a container image "
                                f"(config media type {manifest.config.media_type!r})")
        for desc in manifest.layers:
            try:
                from_media_type(desc.media_type)
            except LayerError:
                raise RegistryError(f"layer {short(desc.digest)}: unsupported media type {desc.media_type!r}"
                                    ) from None

        with self.store.writing():
            config_bytes = self._config(manifest.config)
            try:
                config = ImageConfig.from_bytes(config_bytes)
            except ManifestError as exc:
                raise RegistryError(f"config {short(manifest.config.digest)}: {exc.message}") from None
            if len(config.diff_ids) != len(manifest.layers):
                raise RegistryError(f"the manifest has {len(manifest.layers)} layers "
                                    f"but the config {len(config.diff_ids)} diff-ids")
            if self.platform is not None and index is None and not config.platform.matches(self.platform):
                raise RegistryError(f"image {ref.familiar()} is for {config.platform}, not {self.platform}",
                                    "pull without --platform or pick another image")
            self._layers(manifest.layers, config.diff_ids)
            blobs = self.store.blobs
            blobs.put(config_bytes, manifest.config.digest)
            blobs.put(fetched.data, fetched.digest)
            if index is not None:
                blobs.put(index.data, index.digest)
            was_recorded = self.store.images.exists(fetched.digest)
            name_ref = ref if ref.digest is None else _reference.Reference(ref.domain, ref.path, None,
                                                                           fetched.digest)
            before = self.store.images.refs().get(name_ref.key)
            image = self.store.images.record(fetched.digest, index.digest if index is not None else None)
            self.store.images.tag(name_ref, fetched.digest)
            BlobSources(self.store).add(f"{ref.domain}/{ref.path}",
                                        [manifest.config.digest, *(d.digest for d in manifest.layers)])
        resolved = top.digest
        up_to_date = self.downloaded == 0 and was_recorded and before == fetched.digest
        self.progress.message(f"Digest: {resolved}")
        shown = ref.familiar()
        self.progress.message(f"Status: {'Image is up to date' if up_to_date else 'Downloaded newer image'} "
                              f"for {shown}")
        return PullResult(image, ref, resolved, fetched.digest, index.digest if index else None,
                          self.downloaded, up_to_date)

    # ---- manifests and config ---------------------------------------------------

    def _resolve_index(self, top: FetchedManifest) -> FetchedManifest:
        try:
            index = Index.from_bytes(top.data, top.media_type)
        except ManifestError as exc:
            raise RegistryError(f"index {short(top.digest)}: {exc.message}") from None
        want = self.platform or Platform.host()
        chosen = self._select(index, want)
        if chosen is None:
            have = sorted({str(d.platform) for d in index.manifests
                           if d.platform is not None and d.platform.os != "unknown"})
            raise RegistryError(f"no matching manifest for {want} in the manifest list entries",
                                ("it has " + ", ".join(have)) if have else "it lists no platforms")
        fetched = self.client.get_manifest(self.repo, chosen.digest, accept=MANIFEST_TYPES)
        return fetched

    @staticmethod
    def _select(index: Index, want: Platform) -> Descriptor | None:
        candidates = [d for d in index.manifests if d.platform is not None and d.platform.matches(want)
                      and d.media_type in (*MANIFEST_TYPES, "")]
        exact = [d for d in candidates if d.platform is not None and d.platform.variant == want.variant]
        return next(iter(exact or candidates), None)

    def _config(self, desc: Descriptor) -> bytes:
        blobs = self.store.blobs
        if blobs.exists(desc.digest):
            with contextlib.suppress(DigestMismatch):
                return bytes(blobs.read(desc.digest))
        return self.client.get_blob(self.repo, desc.digest)

    # ---- layers -------------------------------------------------------------------

    def _layers(self, layers: Sequence[Descriptor], diff_ids: Sequence[str]) -> None:
        store = self.store
        chains = _digest.chain_ids(list(diff_ids))
        todo: dict[str, Descriptor] = {}
        have_layer: list[bool] = []
        for desc, chain in zip(layers, chains, strict=True):
            layer_there = store.layers.exists(chain)
            have_layer.append(layer_there)
            if layer_there and store.blobs.exists(desc.digest):
                self.progress.update(short(desc.digest), "Already exists")
                continue
            if not store.blobs.exists(desc.digest):
                todo.setdefault(desc.digest, desc)
            self.progress.update(short(desc.digest), "Pulling fs layer")
        if not todo and all(have_layer):
            return
        with self.client.transfers(len(todo), "pull") as pool:
            futures = {dgst: pool.submit(self._download, desc) for dgst, desc in todo.items()}
            for i, (desc, chain) in enumerate(zip(layers, chains, strict=True)):
                key = short(desc.digest)
                future = futures.get(desc.digest)
                if future is not None:
                    future.result()
                if have_layer[i]:
                    if future is not None:
                        self._check_diff_id(desc, diff_ids[i])
                    self.progress.update(key, "Pull complete")
                    continue
                if store.layers.exists(chain):  # committed meanwhile (another pull, or a repeated layer)
                    self.progress.update(key, "Pull complete")
                    continue
                self.progress.update(key, "Extracting")
                parent = chains[i - 1] if i else None
                with store.blobs.open(desc.digest) as f:
                    try:
                        store.layers.register(f, parent, expected_diff_id=diff_ids[i])
                    except PybuildError as exc:
                        raise prefixed(exc, f"layer {i + 1} ({key})") from None
                self.progress.update(key, "Pull complete")

    def _download(self, desc: Descriptor) -> None:
        key = short(desc.digest)
        total = desc.size

        def report(done: int) -> None:
            self.progress.update(key, "Downloading", done, total)

        self.client.fetch_blob(self.repo, desc.digest, self.store.blobs, desc.size, report)
        with self._count_lock:
            self.downloaded += 1
        self.progress.update(key, "Download complete", total=total)

    def _check_diff_id(self, desc: Descriptor, diff_id: str) -> None:
        """A new blob for a layer the store has: make sure it holds that layer."""
        with self.store.blobs.open(desc.digest) as f:
            try:
                actual, _ = _digest.of_stream(open_decompressed(f))
            except LayerError as exc:
                raise prefixed(exc, f"layer {short(desc.digest)}") from None
        if actual != diff_id:
            raise DigestMismatch(f"layer {short(desc.digest)} does not match the image config: "
                                 f"diff-id {actual}, expected {diff_id}")
