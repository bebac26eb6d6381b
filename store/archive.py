"""Image archives: ``pybuild save`` and ``pybuild load``.

:func:`save` writes one tar that is both an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/<hex>``) and a docker-save archive (Docker's
``manifest.json`` pointing into the same blobs), as Docker 25+ does, so
``skopeo``/``umoci`` (``oci-archive:``) and every ``docker load`` read it.
The tar is deterministic: entries sorted, mtime 0, owner 0:0, modes
0644/0755; blobs are streamed from the blob store and checked while copied.

:func:`load` reads OCI layout tars (what ``docker save`` 25+, ``skopeo copy
... oci-archive:`` and ``buildah push ... oci-archive:`` write) and legacy
docker-save tars (``manifest.json`` + ``<hex>.json`` + ``<id>/layer.tar``).
The archive is hostile input: member names are lookup keys only (never
filesystem paths), every blob is verified against its digest while it is
streamed into the blob store, every layer is verified against the config's
diff-ids when applied, and an image is recorded and tagged only once all of
its parts are in the store, after the whole archive has been read; on any
error nothing new is referenced (what was written is garbage for the GC).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from pybuild.errors import (
    ArchiveError,
    DigestMismatch,
    InvalidReference,
    LayerError,
    PybuildError,
    StoreError,
)
from pybuild.records import field, record

from . import digest as _digest
from . import reference as _reference
from .compression import MAGIC_LEN, Compression, detect, from_media_type, open_decompressed
from .images import Image
from .model import (
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    ManifestError,
    Platform,
    sniff_media_type,
)

if TYPE_CHECKING:
    from .root import Store

__all__ = ["ANNOTATION_IMAGE_NAME", "LoadedImage", "load", "save"]

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
DOCKER_MANIFEST_FILE = "manifest.json"
REPOSITORIES_FILE = "repositories"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
LAYOUT_VERSION = "1.0.0"

CHUNK = 1 << 20
MAX_JSON = 32 << 20  # index, manifests, configs are read into memory: bound them
MAX_INDEX_DEPTH = 8
MAX_LINK_HOPS = 16

_HEX64 = re.compile(r"[0-9a-f]{64}")

Progress = Callable[[str], None]


# =========================================================================== saving


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + _digest.hex_of(digest)


def _tarinfo(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def save(store: Store, images: list[tuple[Image, list[_reference.Reference]]], out: BinaryIO) -> None:
    """Write ``images`` (each with the names to give it) to ``out`` as one archive.

    ``out`` only needs ``write`` (a pipe will do); it is not closed. The same
    images and names always give the same bytes.
    """
    chosen: dict[str, tuple[Image, list[_reference.Reference]]] = {}
    for image, refs in images:
        _, names = chosen.setdefault(image.manifest_digest, (image, []))
        for ref in refs:
            if ref not in names:
                names.append(ref)

    index_entries: list[Descriptor] = []
    docker_entries: list[dict[str, Any]] = []
    blobs: set[str] = set()
    for image, refs in chosen.values():
        manifest_size = store.blobs.size(image.manifest_digest)
        named = sorted(refs, key=str)
        if named:
            for ref in named:
                annotations = {ANNOTATION_IMAGE_NAME: str(ref)}
                if ref.tag:
                    annotations[ANNOTATION_REF_NAME] = ref.tag
                index_entries.append(Descriptor(image.manifest.media_type, image.manifest_digest,
                                                manifest_size, annotations))
        else:
            index_entries.append(Descriptor(image.manifest.media_type, image.manifest_digest, manifest_size))
        docker_entries.append({
            "Config": _blob_name(image.config_digest),
            "RepoTags": [r.familiar() for r in named if r.tag and r.digest is None],
            "Layers": [_blob_name(d.digest) for d in image.manifest.layers],
        })
        blobs.add(image.manifest_digest)
        blobs.add(image.config_digest)
        blobs.update(d.digest for d in image.manifest.layers)
    for dgst in blobs:  # fail before writing anything if a blob is gone
        store.blobs.size(dgst)

    index_bytes = Index(tuple(index_entries)).to_bytes()
    docker_bytes = json.dumps(docker_entries, separators=(",", ":")).encode()
    layout_bytes = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}, separators=(",", ":")).encode()

    with store.writing(), tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_tarinfo("blobs", directory=True))
        tar.addfile(_tarinfo("blobs/sha256", directory=True))
        for dgst in sorted(blobs):
            with store.blobs.open(dgst) as f:
                size = os.fstat(f.fileno()).st_size
                reader = _digest.HashingReader(f)
                tar.addfile(_tarinfo(_blob_name(dgst), size), reader)
                if reader.digest() != dgst:
                    raise DigestMismatch(f"blob {dgst} in the store is corrupt (it hashes to {reader.digest()})",
                                         "run 'pybuild system check'")
        for name, data in ((INDEX_FILE, index_bytes), (DOCKER_MANIFEST_FILE, docker_bytes),
                           (OCI_LAYOUT_FILE, layout_bytes)):
            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


# =========================================================================== reading the archive


def _member_key(name: str) -> str | None:
    """The lookup key of a member name: ``./a//b/`` -> ``a/b``; None if it climbs out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in name:
        return None
    return "/".join(parts)


def _safe_key(path: Any, what: str) -> str:
    """A path named inside manifest.json: relative, no ``..``; returned as a lookup key."""
    if not isinstance(path, str) or not path:
        raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: {what} is not a path")
    if path.startswith("/") or ".." in path.split("/") or "\0" in path:
        raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: unsafe path {path!r} for {what}",
                           "paths must be relative and stay inside the archive")
    key = _member_key(path)
    if key is None:
        raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: invalid path {path!r} for {what}")
    return key


def _link_target(key: str, member: tarfile.TarInfo) -> str | None:
    """Where a link member points, as a key; None if it leaves the archive."""
    if member.islnk():  # hard links name the target from the archive root
        return _member_key(member.linkname)
    if member.linkname.startswith("/"):
        return None
    parts: list[str] = key.split("/")[:-1]
    for comp in member.linkname.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(comp)
    return "/".join(parts) or None


def _promised_digest(key: str) -> str | None:
    """The digest a member's name promises (``blobs/sha256/<hex>``, ``<hex>.json``), if any."""
    base = posixpath.basename(key)
    if key == "blobs/sha256/" + base and _HEX64.fullmatch(base):
        return "sha256:" + base
    if key == base and base.endswith(".json") and _HEX64.fullmatch(base[:-5]):
        return "sha256:" + base[:-5]
    return None


class _Archive:
    """Random access to the members of a (seekable) tar, by key."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in tar:
                key = _member_key(member.name)
                if key is not None:
                    self.members[key] = member  # a later member of the same name wins, as on extraction
        except tarfile.TarError as exc:
            raise ArchiveError(f"the archive is corrupt or truncated ({exc})") from None
        # tarfile stops quietly at a truncated or invalid header after the first: look at where it stopped.
        try:
            assert tar.fileobj is not None
            tar.fileobj.seek(tar.offset)
            block = tar.fileobj.read(tarfile.BLOCKSIZE)
        except OSError as exc:
            raise ArchiveError(f"cannot read the archive: {exc.strerror or exc}") from None
        if 0 < len(block) < tarfile.BLOCKSIZE:
            raise ArchiveError("the archive is truncated (it ends inside a tar header)")
        if block and block.count(0) != len(block):
            raise ArchiveError(f"the archive is corrupt (invalid tar header at byte {tar.offset})")

    def has(self, key: str) -> bool:
        return key in self.members

    def resolve(self, key: str, what: str) -> tarfile.TarInfo:
        member = self.members.get(key)
        hops = 0
        while member is not None and (member.issym() or member.islnk()):
            hops += 1
            target = _link_target(key, member)
            if target is None or hops > MAX_LINK_HOPS:
                raise ArchiveError(f"the archive's {key} ({what}) is a link that leads nowhere")
            key, member = target, self.members.get(target)
        if member is None:
            raise ArchiveError(f"the archive is missing {key} ({what})")
        if not member.isreg():
            raise ArchiveError(f"the archive's {key} ({what}) is not a regular file")
        return member

    @contextlib.contextmanager
    def open(self, key: str, what: str) -> Iterator[BinaryIO]:
        member = self.resolve(key, what)
        try:
            f = self.tar.extractfile(member)
            if f is None:
                raise ArchiveError(f"the archive's {key} ({what}) is not a regular file")
            with f:
                yield f  # type: ignore[misc]
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"cannot read {key} ({what}) from the archive: {exc}",
                               "the archive is truncated or corrupt") from None

    def read(self, key: str, what: str, limit: int = MAX_JSON) -> bytes:
        member = self.resolve(key, what)
        if member.size > limit:
            raise ArchiveError(f"the archive's {key} ({what}) is too large ({member.size} bytes)")
        with self.open(key, what) as f:
            data = f.read()
        if len(data) != member.size:
            raise ArchiveError(f"the archive's {key} ({what}) is truncated")
        return data

    def read_json(self, key: str, what: str) -> Any:
        data = self.read(key, what)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ArchiveError(f"the archive's {key} ({what}) is not valid JSON: {exc}") from None


# =========================================================================== planning


@record
class _LayerPlan:
    key: str  # the archive member holding the layer
    digest: str | None  # blob digest the archive announces; None: whatever the member hashes to
    size: int | None
    media_type: str | None  # None: chosen by the compression found
    diff_id: str
    chain_id: str
    parent: str | None


@record
class _ImagePlan:
    what: str  # how error messages name the image
    config_bytes: bytes
    config_digest: str
    layers: list[_LayerPlan]
    manifest_bytes: bytes | None  # as archived (OCI); None: a new OCI manifest is written (docker-save)
    manifest_digest: str | None
    refs: list[_reference.Reference] = field(default_factory=list)

    def add_ref(self, ref: _reference.Reference) -> None:
        if ref not in self.refs:
            self.refs.append(ref)


def _wrap_manifest_error(what: str, exc: ManifestError) -> ArchiveError:
    return ArchiveError(f"{what}: {exc.message}", exc.hint)


_T = TypeVar("_T")


def _parse(what: str, parse: Callable[[bytes, str | None], _T], data: bytes, media_type: str | None = None) -> _T:
    """Run a model parser on hostile JSON: whatever it trips over becomes an ArchiveError."""
    try:
        return parse(data, media_type)
    except ManifestError as exc:
        raise _wrap_manifest_error(what, exc) from None
    except PybuildError as exc:
        raise ArchiveError(f"{what}: {exc.message}", exc.hint) from None
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:
        raise ArchiveError(f"{what} is malformed ({type(exc).__name__}: {exc})") from None


def _parse_config(data: bytes, what: str) -> ImageConfig:
    return _parse(what, lambda d, _: ImageConfig.from_bytes(d), data)


def _layer_plans(keys: list[tuple[str, Descriptor | None]], config: ImageConfig) -> list[_LayerPlan]:
    chains = _digest.chain_ids(list(config.diff_ids))
    plans = []
    for i, ((key, desc), diff_id) in enumerate(zip(keys, config.diff_ids, strict=True)):
        plans.append(_LayerPlan(
            key=key,
            digest=desc.digest if desc else _promised_digest(key),
            size=desc.size if desc else None,
            media_type=desc.media_type if desc else None,
            diff_id=diff_id,
            chain_id=chains[i],
            parent=chains[i - 1] if i else None,
        ))
    return plans


class _Planner:
    """Reads and checks everything but layer contents, before anything is written."""

    def __init__(self, archive: _Archive, platform: Platform) -> None:
        self.archive = archive
        self.platform = platform

    def plan(self) -> list[_ImagePlan]:
        if self.archive.has(INDEX_FILE):
            return self._plan_oci()
        if self.archive.has(DOCKER_MANIFEST_FILE):
            return self._plan_docker()
        if self.archive.has(REPOSITORIES_FILE):
            raise ArchiveError("unsupported archive: only a legacy 'repositories' file, no manifest.json",
                               "re-save the image with a newer docker")
        raise ArchiveError("not an image archive: it has neither index.json nor manifest.json")

    # ---- OCI image layout -----------------------------------------------------

    def _blob(self, desc: Descriptor, what: str) -> bytes:
        key = _blob_name(desc.digest)
        member = self.archive.resolve(key, what)
        if member.size != desc.size:
            raise ArchiveError(f"{what}: the archive's {key} has {member.size} bytes, its descriptor says {desc.size}")
        data = self.archive.read(key, what)
        _digest.verify(desc.digest, _digest.of_bytes(data), f"{what} ({key})")
        return data

    def _plan_oci(self) -> list[_ImagePlan]:
        if self.archive.has(OCI_LAYOUT_FILE):
            layout = self.archive.read_json(OCI_LAYOUT_FILE, "OCI layout marker")
            version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
            if not isinstance(version, str) or not version.startswith("1."):
                raise ArchiveError(f"unsupported OCI layout version {version!r}", "expected 1.0.0")
        index = _parse(INDEX_FILE, Index.from_bytes, self.archive.read(INDEX_FILE, "image index"))
        entries = list(index.manifests)
        if not entries:
            raise ArchiveError(f"{INDEX_FILE} lists no images")
        # Entries of one name that all carry a platform are the variants of one multi-platform
        # image listed directly in index.json: keep the host's only.
        groups: dict[tuple[str, str], list[Descriptor]] = {}
        for desc in entries:
            key = (repr(desc.annotations.get(ANNOTATION_IMAGE_NAME)), repr(desc.annotations.get(ANNOTATION_REF_NAME)))
            groups.setdefault(key, []).append(desc)
        entries = []
        for variants in groups.values():
            if len(variants) > 1 and all(d.platform is not None for d in variants):
                chosen = Index(tuple(variants)).select(self.platform)
                if chosen is None:
                    raise ArchiveError(f"{INDEX_FILE} has no image for {self.platform}",
                                       "it has " + ", ".join(sorted({str(d.platform) for d in variants})))
                entries.append(chosen)
            else:
                entries.extend(variants)
        docker_tags = self._docker_repo_tags()
        plans: dict[str, _ImagePlan] = {}
        for n, desc in enumerate(entries, 1):
            refs = _refs_from_annotations(desc.annotations, f"{INDEX_FILE} entry {n}")
            what = refs[0].familiar() if refs else f"image {desc.digest}"
            manifest_desc, manifest_bytes = self._resolve_manifest(desc, what, 0)
            plan = plans.get(manifest_desc.digest)
            if plan is None:
                plan = self._plan_oci_image(manifest_desc, manifest_bytes, what)
                plans[manifest_desc.digest] = plan
            for ref in refs:
                if ref.digest is not None:
                    if ref.tag is not None:
                        ref = _reference.Reference(ref.domain, ref.path, ref.tag, None)
                    elif ref.digest != manifest_desc.digest:
                        continue  # names an index we do not keep: the platform image has its own digest
                plan.add_ref(ref)
        for plan in plans.values():
            if not plan.refs:  # e.g. skopeo's ref.name is a bare tag: fall back to docker's RepoTags
                for ref in docker_tags.get(plan.config_digest, []):
                    plan.add_ref(ref)
        return list(plans.values())

    def _resolve_manifest(self, desc: Descriptor, what: str, depth: int) -> tuple[Descriptor, bytes]:
        data = self._blob(desc, f"manifest of {what}")
        media_type = desc.media_type
        if not media_type:
            media_type = _parse(f"blob {desc.digest}", lambda d, _: sniff_media_type(d), data)
        if media_type in INDEX_TYPES:
            if depth >= MAX_INDEX_DEPTH:
                raise ArchiveError(f"{what}: image indexes nested too deeply")
            index = _parse(f"index {desc.digest}", Index.from_bytes, data, media_type)
            chosen = index.select(self.platform)
            if chosen is None and len(index.manifests) == 1 and index.manifests[0].platform is None:
                chosen = index.manifests[0]
            if chosen is None:
                have = sorted({str(d.platform) for d in index.manifests if d.platform is not None})
                raise ArchiveError(f"{what}: index {desc.digest} has no image for {self.platform}",
                                   ("it has " + ", ".join(have)) if have else "it lists no platforms")
            return self._resolve_manifest(chosen, what, depth + 1)
        if media_type not in MANIFEST_TYPES:
            raise ArchiveError(f"{what}: unsupported media type {media_type!r}", "not a container image")
        return Descriptor(media_type, desc.digest, desc.size), data

    def _plan_oci_image(self, desc: Descriptor, data: bytes, what: str) -> _ImagePlan:
        manifest = _parse(f"manifest of {what}", Manifest.from_bytes, data, desc.media_type)
        if manifest.config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise ArchiveError(f"{what} is not a container image (config type {manifest.config.media_type!r})")
        config_bytes = self._blob(manifest.config, f"config of {what}")
        config = _parse_config(config_bytes, f"config of {what}")
        if len(config.diff_ids) != len(manifest.layers):
            raise ArchiveError(f"{what}: the manifest has {len(manifest.layers)} layers "
                               f"but the config {len(config.diff_ids)} diff-ids")
        keys: list[tuple[str, Descriptor | None]] = []
        for i, layer in enumerate(manifest.layers, 1):
            layer_what = f"layer {i} of {what}"
            try:
                from_media_type(layer.media_type)
            except LayerError:
                raise ArchiveError(f"{layer_what}: unsupported layer media type {layer.media_type!r}") from None
            key = _blob_name(layer.digest)
            member = self.archive.resolve(key, layer_what)
            if member.size != layer.size:
                raise ArchiveError(f"{layer_what}: the archive's {key} has {member.size} bytes, "
                                   f"the manifest says {layer.size}")
            keys.append((key, layer))
        return _ImagePlan(what, config_bytes, manifest.config.digest, _layer_plans(keys, config),
                          data, desc.digest)

    def _docker_repo_tags(self) -> dict[str, list[_reference.Reference]]:
        """config digest -> RepoTags of a manifest.json beside index.json (best effort)."""
        if not self.archive.has(DOCKER_MANIFEST_FILE):
            return {}
        try:
            doc = self.archive.read_json(DOCKER_MANIFEST_FILE, "docker manifest")
        except ArchiveError:
            return {}
        out: dict[str, list[_reference.Reference]] = {}
        for entry in doc if isinstance(doc, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                continue
            key = _member_key(entry["Config"])
            promised = _promised_digest(key) if key else None
            if promised is None:
                continue
            with contextlib.suppress(ArchiveError):
                out.setdefault(promised, []).extend(_repo_tags(entry.get("RepoTags"), "image"))
        return out

    # ---- docker save (legacy) ---------------------------------------------------

    def _plan_docker(self) -> list[_ImagePlan]:
        doc = self.archive.read_json(DOCKER_MANIFEST_FILE, "docker manifest")
        if not isinstance(doc, list) or not doc:
            raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: expected a non-empty list of images")
        plans: list[_ImagePlan] = []
        for n, entry in enumerate(doc, 1):
            if not isinstance(entry, dict):
                raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: entry {n} is not an object")
            refs = _repo_tags(entry.get("RepoTags"), f"image {n}")
            what = refs[0].familiar() if refs else f"image {n} of {DOCKER_MANIFEST_FILE}"
            config_key = _safe_key(entry.get("Config"), f"the config of {what}")
            config_bytes = self.archive.read(config_key, f"config of {what}")
            config_digest = _digest.of_bytes(config_bytes)
            promised = _promised_digest(config_key)
            if promised is not None:
                _digest.verify(promised, config_digest, f"config of {what} ({config_key})")
            config = _parse_config(config_bytes, f"config of {what} ({config_key})")
            layer_paths = entry.get("Layers")
            if not isinstance(layer_paths, list):
                raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: {what} has no Layers list")
            if len(layer_paths) != len(config.diff_ids):
                raise ArchiveError(f"{what}: {DOCKER_MANIFEST_FILE} lists {len(layer_paths)} layers "
                                   f"but the config has {len(config.diff_ids)} diff-ids")
            keys: list[tuple[str, Descriptor | None]] = []
            for i, path in enumerate(layer_paths, 1):
                key = _safe_key(path, f"layer {i} of {what}")
                self.archive.resolve(key, f"layer {i} of {what}")
                keys.append((key, None))
            plan = _ImagePlan(what, config_bytes, config_digest, _layer_plans(keys, config), None, None)
            for ref in refs:
                plan.add_ref(ref)
            plans.append(plan)
        return plans


def _repo_tags(value: Any, what: str) -> list[_reference.Reference]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: RepoTags of {what} is not a list")
    refs = []
    for text in value:
        try:
            ref = _reference.parse(text) if isinstance(text, str) else None
        except InvalidReference as exc:
            raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: invalid RepoTag {text!r} of {what}", exc.hint) from None
        if ref is None or ref.tag is None or ref.digest is not None:
            raise ArchiveError(f"{DOCKER_MANIFEST_FILE}: invalid RepoTag {text!r} of {what}", "expected name:tag")
        refs.append(ref)
    return refs


def _refs_from_annotations(annotations: dict[str, str], what: str) -> list[_reference.Reference]:
    """A full name from ``io.containerd.image.name``, else from a ref.name that is more than a tag."""
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if name is not None and not isinstance(name, str):
        raise ArchiveError(f"{what}: invalid image name {name!r}")
    if name:
        try:
            return [_reference.parse(name)]
        except InvalidReference as exc:
            raise ArchiveError(f"{what}: invalid image name {name!r}", exc.hint) from None
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    if isinstance(ref_name, str) and ref_name and any(c in ref_name for c in ":/@"):
        with contextlib.suppress(InvalidReference):
            return [_reference.parse(ref_name)]
    return []  # a bare tag ("latest") names no repository: the image stays untagged


# =========================================================================== loading


@record(frozen=True)
class LoadedImage:
    image: Image
    refs: list[_reference.Reference]


def _with_context(exc: PybuildError, context: str) -> PybuildError:
    try:
        new = type(exc)(f"{context}: {exc.message}", exc.hint)
    except TypeError:
        return exc
    return new


_LAYER_MEDIA = {Compression.NONE: OCI_LAYER, Compression.GZIP: OCI_LAYER_GZIP, Compression.ZSTD: OCI_LAYER_ZSTD}


class _Loader:
    def __init__(self, store: Store, archive: _Archive, progress: Progress | None) -> None:
        self.store = store
        self.archive = archive
        self.progress = progress

    def run(self, plans: list[_ImagePlan]) -> list[LoadedImage]:
        done = [(self._load_image(plan), plan) for plan in plans]
        # Everything is in: only now do the images become visible (GC roots) and get their names.
        loaded = []
        for manifest_digest, plan in done:
            image = self.store.images.record(manifest_digest)
            for ref in plan.refs:
                self.store.images.tag(ref, manifest_digest)
            loaded.append(LoadedImage(image, list(plan.refs)))
        return loaded

    def _load_image(self, plan: _ImagePlan) -> str:
        blobs = self.store.blobs
        blobs.put(plan.config_bytes, plan.config_digest)
        descs = [self._load_layer(layer, f"layer {i} of {plan.what}") for i, layer in enumerate(plan.layers, 1)]
        if plan.manifest_bytes is not None:
            return blobs.put(plan.manifest_bytes, plan.manifest_digest)
        manifest = Manifest(Descriptor(OCI_CONFIG, plan.config_digest, len(plan.config_bytes)),
                            tuple(descs), OCI_MANIFEST)
        return blobs.put(manifest.to_bytes())

    def _load_layer(self, lp: _LayerPlan, what: str) -> Descriptor:
        blobs = self.store.blobs
        new_blob = False
        if lp.digest is not None and lp.media_type is not None and blobs.exists(lp.digest):
            desc = Descriptor(lp.media_type, lp.digest, blobs.size(lp.digest))
        else:
            desc = self._store_blob(lp, what)
            new_blob = True
        if not self.store.layers.exists(lp.chain_id):
            if self.progress is not None:
                self.progress(f"Loading layer {_digest.hex_of(desc.digest)[:12]}")
            with blobs.open(desc.digest) as f:
                try:
                    self.store.layers.register(f, lp.parent, expected_diff_id=lp.diff_id)
                except DigestMismatch as exc:
                    raise DigestMismatch(f"{what} ({lp.key}) does not match the image config: {exc.message}",
                                         "the archive was modified or is corrupt") from None
                except PybuildError as exc:
                    raise _with_context(exc, f"{what} ({lp.key})") from None
        elif new_blob:
            # The layer is here already, but this blob is new: make sure it holds that layer.
            with blobs.open(desc.digest) as f:
                try:
                    actual, _ = _digest.of_stream(open_decompressed(f))
                except LayerError as exc:
                    raise _with_context(exc, f"{what} ({lp.key})") from None
            if actual != lp.diff_id:
                raise DigestMismatch(f"{what} ({lp.key}) does not match the image config: "
                                     f"diff-id {actual}, expected {lp.diff_id}",
                                     "the archive was modified or is corrupt")
        return desc

    def _store_blob(self, lp: _LayerPlan, what: str) -> Descriptor:
        """Stream a layer member into the blob store, verified against what the archive announces."""
        blobs = self.store.blobs
        with self.archive.open(lp.key, what) as src:
            if lp.media_type is not None:  # OCI: stored as archived
                media_type = lp.media_type
                reader: BinaryIO = src
            else:  # docker-save: plain, gzip or zstd kept as is, bzip2/xz stored decompressed
                head = src.peek(MAGIC_LEN)[:MAGIC_LEN]  # type: ignore[attr-defined]
                compression = detect(head)
                media_type = _LAYER_MEDIA.get(compression, OCI_LAYER)
                reader = src if compression in _LAYER_MEDIA else open_decompressed(src)
            expected = lp.digest if reader is src else None
            try:
                with blobs.writer(expected) as w:
                    while chunk := reader.read(CHUNK):
                        w.write(chunk)
                    if lp.size is not None and w.size != lp.size:
                        raise ArchiveError(f"{what}: the archive's {lp.key} has {w.size} bytes, expected {lp.size}")
                    digest = w.commit()
                    size = w.size
            except DigestMismatch as exc:
                raise DigestMismatch(f"{what} ({lp.key}): {exc.message}",
                                     "the archive was modified or is corrupt") from None
            except LayerError as exc:
                raise ArchiveError(f"{what} ({lp.key}): {exc.message}") from None
        if media_type == OCI_LAYER and digest != lp.diff_id:
            # An uncompressed layer is its own diff-id: no need to apply it to know it is wrong.
            raise DigestMismatch(f"{what} ({lp.key}) does not match the image config: "
                                 f"diff-id {digest}, expected {lp.diff_id}",
                                 "the archive was modified or is corrupt")
        return Descriptor(media_type, digest, size)


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        if not stream.seekable():
            return False
        stream.tell()
    except (AttributeError, OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _random_access(store: Store, stream: BinaryIO) -> Iterator[BinaryIO]:
    """``stream`` itself if it is a seekable plain tar, else a decompressed spool under ``store.tmp``.

    The spool is an anonymous temp file: it vanishes when closed, on error
    and even if the process is killed.
    """
    if _is_seekable(stream):
        try:
            pos = stream.tell()
            head = stream.read(MAGIC_LEN)
            stream.seek(pos)
        except OSError as exc:
            raise ArchiveError(f"cannot read the archive: {exc.strerror or exc}") from None
        if detect(head) is Compression.NONE:
            yield stream
            return
    try:
        spool = tempfile.TemporaryFile(dir=store.tmp, prefix="load-")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StoreError(f"cannot create a temp file in {store.tmp}: {exc.strerror or exc}") from None
    with spool:
        try:
            shutil.copyfileobj(open_decompressed(stream), spool, CHUNK)
            spool.flush()
            spool.seek(0)
        except LayerError as exc:
            raise ArchiveError(f"cannot read the archive: {exc.message}") from None
        except OSError as exc:
            raise StoreError(f"cannot spool the archive to {store.tmp}: {exc.strerror or exc}") from None
        yield spool


def load(store: Store, stream: BinaryIO, *, platform: Platform | None = None,
         progress: Progress | None = None) -> list[LoadedImage]:
    """Load the images of an archive (OCI layout or docker-save tar, maybe compressed) into ``store``.

    A stream that cannot seek (a pipe) is spooled to a temp file first. For a
    multi-platform image, the manifest for ``platform`` (default: the host's)
    is loaded. ``progress`` is called with a line per layer applied.
    """
    with store.writing(), _random_access(store, stream) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - closed below
        except tarfile.TarError as exc:
            if str(exc) == "empty file":
                raise ArchiveError("the archive is empty") from None
            raise ArchiveError(f"not a tar archive ({exc})", "expected a docker save or OCI archive") from None
        with tar:
            archive = _Archive(tar)
            plans = _Planner(archive, platform or Platform.host()).plan()
            return _Loader(store, archive, progress).run(plans)
