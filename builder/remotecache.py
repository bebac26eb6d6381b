"""The build cache in a registry: ``build --cache-to`` / ``--cache-from type=registry,ref=REF``.

A cache at ``REF`` is one OCI image manifest (``application/vnd.oci.image.manifest.v1+json``):

* its ``config`` is a JSON blob of media type ``application/vnd.pybuild.cache.config.v1+json``
  listing build cache records (see :class:`~pybuild.store.buildcache.CacheRecord`)::

      {"version": 1,
       "records": [{"key": "sha256:<step cache key>",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": ..., "size": ...},
                    "layers": [<layer descriptors of the state, base image first>],
                    "diff_ids": ["sha256:...", ...]}]}

* its ``layers`` list every distinct blob the records name (layer blobs, then the records' image
  configs), so the registry keeps them: a manifest PUT is refused unless they were all uploaded.

Export (``--cache-to``) takes the records of the steps the build used or wrote (``mode=max``, the
default: all of them, other stages' too, so a multi-stage build is fully cached elsewhere;
``mode=min``, BuildKit's default: only those whose layers lead to the final image), uploads the
blobs the repository lacks, then the cache config and the manifest.

Import (``--cache-from``) fetches the manifest and the cache config (digests verified) and, for every
record the store lacks, downloads the layer blobs and registers the layer chain as a pull does, fetches
the record's image config, and only then writes the record: a half-imported record never exists. The
build then finds the steps by key. A cache that does not exist is not an error (the build just has no
hits); nor is one that cannot be read: it is reported and the build goes on without it.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pybuild.errors import PybuildError, RegistryError, UsageError
from pybuild.records import record
from pybuild.store import digest as _digest
from pybuild.store import reference as _reference
from pybuild.store.buildcache import CacheRecord
from pybuild.store.compression import from_media_type
from pybuild.store.model import OCI_CONFIG, OCI_MANIFEST, Descriptor, ImageConfig, Manifest, canonical_json
from pybuild.store.root import Store

from .progress import BuildOutput

if TYPE_CHECKING:
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.transport import RegistryOptions

    from .executor import BuildResult

CACHE_CONFIG = "application/vnd.pybuild.cache.config.v1+json"
CACHE_VERSION = 1
ANNOTATION_MODE = "dev.pybuild.cache.mode"
MODES = ("min", "max")
_EXAMPLE = "type=registry,ref=REGISTRY/NAME:TAG"


@record(frozen=True)
class CacheSpec:
    """A parsed ``--cache-to``/``--cache-from`` value."""

    ref: _reference.Reference
    mode: str = "max"
    ignore_error: bool = False


@record(frozen=True)
class _Entry:
    """One record as the cache config lists it."""

    key: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "config": self.config.to_json(), "layers": [d.to_json() for d in self.layers],
                "diff_ids": list(self.diff_ids)}

    @classmethod
    def from_json(cls, doc: Any) -> _Entry:
        if not isinstance(doc, dict):
            raise ValueError("a record is not an object")
        layers = tuple(Descriptor.from_json(d) for d in doc["layers"])
        diff_ids = tuple(_digest.validate(str(d)) for d in doc["diff_ids"])
        if len(layers) != len(diff_ids):
            raise ValueError(f"record {doc['key']} has {len(layers)} layers but {len(diff_ids)} diff-ids")
        for desc in layers:
            from_media_type(desc.media_type)  # a layer type pybuild can apply
        return cls(_digest.validate(str(doc["key"])), Descriptor.from_json(doc["config"]), layers, diff_ids)


# ---- the option ----------------------------------------------------------------------------------


def parse_spec(spec: str, option: str) -> CacheSpec:
    """``type=registry,ref=REF[,mode=min|max][,ignore-error=true]`` (``REF`` alone is short for it).

    ``mode`` and ``ignore-error`` belong to ``--cache-to`` only.
    """
    hint = f"use {option} {_EXAMPLE}"
    fields: dict[str, str] = {}
    if "=" not in spec and spec.strip():
        fields = {"type": "registry", "ref": spec.strip()}
    else:
        for part in spec.split(","):
            if not part.strip():
                continue
            key, eq, value = part.partition("=")
            key = key.strip().lower()
            if not eq or not key:
                raise UsageError(f"invalid {option} {spec!r}: {part.strip()!r} is not KEY=VALUE", hint)
            if key in fields:
                raise UsageError(f"invalid {option} {spec!r}: {key} is given twice", hint)
            fields[key] = value.strip()
    kind = fields.pop("type", None)
    if kind is None:
        raise UsageError(f"invalid {option} {spec!r}: no type", hint)
    if kind != "registry":
        raise UsageError(f"{option} type={kind} is not supported", f"only type=registry is: {hint}")
    allowed = {"ref", "mode", "ignore-error"} if option == "--cache-to" else {"ref"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise UsageError(f"invalid {option} {spec!r}: unknown option {unknown[0]!r}",
                         f"{option} type=registry takes " + ", ".join(sorted(allowed)))
    ref_text = fields.get("ref")
    if not ref_text:
        raise UsageError(f"invalid {option} {spec!r}: no ref", hint)
    ref = _reference.parse(ref_text)
    if option == "--cache-to" and ref.digest is not None:
        raise UsageError(f"invalid {option} {spec!r}: a cache is exported to a tag, not a digest", hint)
    mode = fields.get("mode", "max").lower()
    if mode not in MODES:
        raise UsageError(f"invalid {option} mode {mode!r}", "use mode=min or mode=max")
    flag = fields.get("ignore-error", "false").lower()
    if flag not in ("true", "false"):
        raise UsageError(f"invalid {option} ignore-error {flag!r}", "use ignore-error=true or false")
    return CacheSpec(ref, mode, flag == "true")


def _options() -> RegistryOptions:
    """As the other registry commands: ``PYBUILD_REGISTRY_*``, ``PYBUILD_INSECURE_REGISTRIES`` (loopback is HTTP)."""
    from pybuild.registry.transport import RegistryOptions

    return RegistryOptions.from_env()


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _tag(ref: _reference.Reference) -> str:
    return str(ref.digest or ref.tag or _reference.DEFAULT_TAG)


# ---- export --------------------------------------------------------------------------------------


@record(frozen=True)
class ExportResult:
    digest: str  # of the cache manifest
    records: int
    blobs: int  # distinct blobs the cache names
    uploaded: int  # of those, uploaded now (the rest the repository had, or got by a mount)


def export_cache(store: Store, spec: str, result: BuildResult, output: BuildOutput) -> ExportResult | None:
    """Push the cache records ``result`` used or wrote to the spec's ref (after the build)."""
    from pybuild.registry.errors import prefixed

    cs = parse_spec(spec, "--cache-to")
    shown = cs.ref.familiar()
    try:
        done = export_records(store, cs.ref, select_records(store, result, cs.mode), cs.mode)
    except PybuildError as exc:
        if not cs.ignore_error:
            raise prefixed(exc, f"exporting cache to {shown}") from None
        output.line(f"[Warning] exporting cache to {shown} failed: {exc}")
        return None
    output.line(f"exporting cache to {shown}: {_n(done.records, 'record')}, {_n(done.uploaded, 'blob')} uploaded "
                f"({done.blobs - done.uploaded} already there)")
    return done


def select_records(store: Store, result: BuildResult, mode: str = "min") -> list[CacheRecord]:
    """The records of ``result.stats.keys`` (each once, in build order) whose blobs the store has.

    ``min``: only those whose layers are the first layers of the final image.
    """
    final = [d.digest for d in result.image.manifest.layers]
    seen: set[str] = set()
    out: list[CacheRecord] = []
    for key in result.stats.keys:
        if key in seen:
            continue
        seen.add(key)
        record = store.build_cache.get(key)
        if record is None:
            continue
        if mode == "min" and [d.digest for d in record.layers] != final[:len(record.layers)]:
            continue
        if not all(store.blobs.exists(d) for d in (record.config_digest, *(d.digest for d in record.layers))):
            continue
        out.append(record)
    return out


def export_records(store: Store, ref: _reference.Reference, records: Sequence[CacheRecord],
                   mode: str = "min") -> ExportResult:
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.sources import BlobSources

    with store.writing():
        blobs: dict[str, Descriptor] = {}
        entries: list[_Entry] = []
        for record in records:
            for desc in record.layers:
                blobs.setdefault(desc.digest, desc)
        for record in records:
            config = Descriptor(OCI_CONFIG, record.config_digest, store.blobs.size(record.config_digest))
            blobs.setdefault(config.digest, config)
            entries.append(_Entry(record.key, config, record.layers, record.diff_ids))
        cache_config = canonical_json({"version": CACHE_VERSION, "records": [e.to_json() for e in entries]})
        config_desc = Descriptor(CACHE_CONFIG, _digest.of_bytes(cache_config), len(cache_config))
        manifest = Manifest(config_desc, tuple(_plain(d) for d in blobs.values()), OCI_MANIFEST,
                            {ANNOTATION_MODE: mode})
        manifest_bytes = manifest.to_bytes()
        repo = ref.path
        sources = BlobSources(store)
        prefix = ref.domain + "/"
        repo_key = prefix + repo

        with RegistryClient(ref.domain, _options(), push=True) as client:
            def push(desc: Descriptor) -> str:
                mounts = tuple(r[len(prefix):] for r in sources.repos_of(desc.digest)
                               if r.startswith(prefix) and r != repo_key)[:3]
                return str(client.push_blob(repo, desc.digest, desc.size, store.blobs.path(desc.digest),
                                            mount_from=mounts).how)

            hows = _each(client, push, list(blobs.values()))
            client.push_blob(repo, config_desc.digest, config_desc.size, lambda: io.BytesIO(cache_config))
            digest = client.put_manifest(repo, _tag(ref), manifest_bytes, OCI_MANIFEST)
        sources.add(repo_key, list(blobs))
    return ExportResult(digest, len(entries), len(blobs), sum(h == "pushed" for h in hows))


def _plain(desc: Descriptor) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size)


def _each(client: RegistryClient, work: Callable[[Descriptor], str], items: list[Descriptor]) -> list[str]:
    """``work(item)`` for every item, a few at a time (as a push moves layers); the first error stops all."""
    if not items:
        return []
    workers = max(1, min(client.options.concurrency, len(items)))
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache")
    try:
        futures = [executor.submit(work, item) for item in items]
        return [f.result() for f in futures]
    except BaseException:
        client.cancel()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        client.transport.cancelled.clear()


# ---- import --------------------------------------------------------------------------------------


@record(frozen=True)
class ImportResult:
    digest: str  # of the cache manifest
    records: int  # in the cache
    imported: int  # written to the store now (the others it had)
    downloaded: int  # blobs


def import_cache(store: Store, spec: str, output: BuildOutput) -> ImportResult | None:
    """Bring the records of the spec's cache into the store's build cache (before the build).

    A cache that is not there, or cannot be read, is reported and skipped: the build goes on.
    """
    from pybuild.registry.errors import ManifestUnknown

    cs = parse_spec(spec, "--cache-from")
    shown = cs.ref.familiar()
    try:
        done = import_records(store, cs.ref)
    except ManifestUnknown:
        output.line(f"importing cache from {shown}: not found, building without it")
        return None
    except UsageError:
        raise
    except PybuildError as exc:
        output.line(f"[Warning] importing cache from {shown} failed, building without it: {exc}")
        return None
    output.line(f"importing cache from {shown}: {_n(done.records, 'record')} ({done.imported} new, "
                f"{_n(done.downloaded, 'blob')} downloaded)")
    return done


def import_records(store: Store, ref: _reference.Reference) -> ImportResult:
    from pybuild.registry.client import RegistryClient, short
    from pybuild.registry.pull import fetch_layers
    from pybuild.registry.sources import BlobSources

    repo = ref.path
    with RegistryClient(ref.domain, _options()) as client:
        fetched = client.get_manifest(repo, _tag(ref))
        what = f"{ref.familiar()} is not a pybuild build cache"
        if fetched.media_type != OCI_MANIFEST:
            raise RegistryError(what, f"its media type is {fetched.media_type}")
        manifest = Manifest.from_bytes(fetched.data, fetched.media_type)
        if manifest.config.media_type != CACHE_CONFIG:
            raise RegistryError(what, f"its config media type is {manifest.config.media_type or 'missing'}")
        data = client.get_blob(repo, manifest.config.digest)
        entries = _parse_config(data, short(manifest.config.digest))
        listed = {d.digest for d in manifest.layers}
        downloaded = 0
        imported = 0
        with store.writing():
            todo = [e for e in entries if not _usable(store, store.build_cache.get(e.key))]
            todo.sort(key=lambda e: -len(e.layers))  # a long chain first: shorter ones are often its prefixes
            for entry in todo:
                unlisted = [d.digest for d in (entry.config, *entry.layers) if d.digest not in listed]
                if unlisted:
                    raise RegistryError(f"cache record {short(entry.key)} names blob {unlisted[0]} "
                                        "that the cache manifest does not list")
                downloaded += fetch_layers(store, client, repo, entry.layers, entry.diff_ids)
                if not store.blobs.exists(entry.config.digest):
                    client.fetch_blob(repo, entry.config.digest, store.blobs, entry.config.size)
                    downloaded += 1
                config = ImageConfig.from_bytes(store.blobs.read(entry.config.digest))
                if config.diff_ids != entry.diff_ids:
                    raise RegistryError(f"cache record {short(entry.key)}: its image config does not match "
                                        "its layers")
                store.build_cache.put(CacheRecord(entry.key, entry.config.digest, entry.layers, entry.diff_ids,
                                                  time.time()))
                imported += 1
            BlobSources(store).add(f"{ref.domain}/{repo}", [d.digest for d in manifest.layers
                                                            if store.blobs.exists(d.digest)])
    return ImportResult(fetched.digest, len(entries), imported, downloaded)


def _parse_config(data: bytes, name: str) -> list[_Entry]:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("version") != CACHE_VERSION:
            raise RegistryError(f"cache config {name}: unsupported version {doc.get('version')!r}",
                                "it was written by another pybuild version")
        return [_Entry.from_json(r) for r in doc["records"]]
    except RegistryError:
        raise
    except (PybuildError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"cache config {name} is malformed: {exc}") from None
    except RecursionError:
        raise RegistryError(f"cache config {name} is malformed: JSON nested too deeply") from None


def _usable(store: Store, record: CacheRecord | None) -> bool:
    """What the builder asks of a record before it uses it: blobs and layer chain present."""
    if record is None:
        return False
    if not all(store.blobs.exists(d) for d in (record.config_digest, *(d.digest for d in record.layers))):
        return False
    return not record.diff_ids or store.layers.exists(_digest.chain_id(list(record.diff_ids)))
