"""The shared data model: media types, descriptors, image configs, manifests and indexes.

These are parsed views of the JSON documents. The bytes a digest was computed
over are kept alongside wherever they matter (a pulled config is stored as
received, never re-serialised), so parsing here is free to drop fields it
does not know.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from pybuild.errors import PybuildError
from pybuild.records import field, record, replace

from . import digest as _digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


class ManifestError(PybuildError):
    """A manifest, index or config document is malformed."""


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces): same document, same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@contextlib.contextmanager
def _malformed(what: str) -> Iterator[None]:
    """Turn the type errors of a document with wrong shapes into a ManifestError."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ManifestError(f"malformed {what}: {type(exc).__name__}: {exc}") from None


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"malformed {what}: {exc}") from None
    except RecursionError:  # the decoder recurses on depth: hostile input must not reach "internal error"
        raise ManifestError(f"malformed {what}: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"malformed {what}: not a JSON object")
    return doc


@record(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine
        arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
                "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
        return cls("linux", arch, "v8" if arch == "arm64" else ("v7" if arch == "arm" else None))

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(f"invalid platform {text!r}", "expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def matches(self, other: Platform) -> bool:
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or other.variant is None or self.variant == other.variant

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Platform:
        return cls(str(doc.get("os", "")), str(doc.get("architecture", "")), doc.get("variant"))


@record(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, doc: Any) -> Descriptor:
        if not isinstance(doc, dict):
            raise ManifestError("malformed descriptor: not an object")
        try:
            size = int(doc["size"])
            media_type = str(doc.get("mediaType", ""))
            dgst = _digest.validate(doc["digest"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed descriptor: {exc}") from None
        if size < 0:
            raise ManifestError("malformed descriptor: negative size")
        plat = doc.get("platform")
        annotations = doc.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise ManifestError("malformed descriptor: annotations must map strings to strings")
        return cls(media_type, dgst, size, dict(annotations),
                   Platform.from_json(plat) if isinstance(plat, dict) else None)


@record(frozen=True)
class HistoryEntry:
    created: str | None = None
    created_by: str | None = None
    comment: str | None = None
    empty_layer: bool = False
    author: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.created_by is not None:
            out["created_by"] = self.created_by
        if self.author:
            out["author"] = self.author
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> HistoryEntry:
        return cls(doc.get("created"), doc.get("created_by"), doc.get("comment"),
                   bool(doc.get("empty_layer", False)), doc.get("author"))


@record(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: int = 0  # nanoseconds, as Docker stores them
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period), ("StartInterval", self.start_interval),
                           ("Retries", self.retries)):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Healthcheck:
        return cls(tuple(doc.get("Test") or ()), int(doc.get("Interval", 0)), int(doc.get("Timeout", 0)),
                   int(doc.get("StartPeriod", 0)), int(doc.get("StartInterval", 0)),
                   int(doc.get("Retries", 0)))


@record(frozen=True)
class ContainerConfig:
    """The execution parameters of an image (the ``config`` object of an OCI config)."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    shell: tuple[str, ...] | None = None
    on_build: tuple[str, ...] = ()
    args_escaped: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_json()
        if self.shell is not None:
            out["Shell"] = list(self.shell)
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.args_escaped:
            out["ArgsEscaped"] = True
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> ContainerConfig:
        doc = doc or {}

        def strs(value: Any) -> tuple[str, ...] | None:
            if value is None:
                return None
            if isinstance(value, str):
                return (value,)
            return tuple(str(v) for v in value)

        hc = doc.get("Healthcheck")
        return cls(
            user=str(doc.get("User") or ""),
            exposed_ports=tuple(sorted((doc.get("ExposedPorts") or {}).keys())),
            env=strs(doc.get("Env")) or (),
            entrypoint=strs(doc.get("Entrypoint")),
            cmd=strs(doc.get("Cmd")),
            volumes=tuple(sorted((doc.get("Volumes") or {}).keys())),
            working_dir=str(doc.get("WorkingDir") or ""),
            labels=dict(doc.get("Labels") or {}),
            stop_signal=str(doc.get("StopSignal") or ""),
            healthcheck=Healthcheck.from_json(hc) if isinstance(hc, dict) else None,
            shell=strs(doc.get("Shell")),
            on_build=strs(doc.get("OnBuild")) or (),
            args_escaped=bool(doc.get("ArgsEscaped", False)),
        )


@record(frozen=True)
class ImageConfig:
    """An OCI image configuration (application/vnd.oci.image.config.v1+json)."""

    diff_ids: tuple[str, ...] = ()
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: tuple[HistoryEntry, ...] = ()
    created: str | None = None
    author: str | None = None
    platform: Platform = field(default_factory=Platform.host)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": self.config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
            "history": [h.to_json() for h in self.history],
        }
        if self.platform.variant:
            out["variant"] = self.platform.variant
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        with _malformed("image config"):
            return cls._parse(_load(data, "image config"))

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> ImageConfig:
        rootfs = doc.get("rootfs") or {}
        try:
            diff_ids = tuple(_digest.validate(d) for d in rootfs.get("diff_ids") or ())
        except PybuildError as exc:
            raise ManifestError(f"malformed image config: {exc}") from None
        return cls(
            diff_ids=diff_ids,
            config=ContainerConfig.from_json(doc.get("config") if isinstance(doc.get("config"), dict) else None),
            history=tuple(HistoryEntry.from_json(h) for h in doc.get("history") or () if isinstance(h, dict)),
            created=doc.get("created"),
            author=doc.get("author"),
            platform=Platform(str(doc.get("os") or "linux"), str(doc.get("architecture") or ""),
                              doc.get("variant")),
        )

    def with_layer(self, diff_id: str, history: HistoryEntry) -> ImageConfig:
        return replace(self, diff_ids=(*self.diff_ids, diff_id), history=(*self.history, history))


@record(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [d.to_json() for d in self.layers],
        }
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return canonical_json(doc)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Manifest:
        with _malformed("manifest"):
            return cls._parse(_load(data, "manifest"), media_type)

    @classmethod
    def _parse(cls, doc: dict[str, Any], media_type: str | None) -> Manifest:
        if doc.get("schemaVersion") != 2:
            raise ManifestError("unsupported manifest schema version", "only schema 2 is supported")
        try:
            config = Descriptor.from_json(doc["config"])
            layers = tuple(Descriptor.from_json(d) for d in doc.get("layers") or ())
        except KeyError:
            raise ManifestError("malformed manifest: no config") from None
        mt = str(doc.get("mediaType") or media_type or OCI_MANIFEST)
        if mt not in MANIFEST_TYPES:
            raise ManifestError(f"not an image manifest: {mt}")
        return cls(config, layers, mt, dict(doc.get("annotations") or {}))


@record(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]
    media_type: str = OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [d.to_json() for d in self.manifests],
        }
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return canonical_json(doc)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Index:
        with _malformed("index"):
            return cls._parse(_load(data, "index"), media_type)

    @classmethod
    def _parse(cls, doc: dict[str, Any], media_type: str | None) -> Index:
        if doc.get("schemaVersion") != 2:
            raise ManifestError("unsupported index schema version")
        manifests = tuple(Descriptor.from_json(d) for d in doc.get("manifests") or ())
        return cls(manifests, str(doc.get("mediaType") or media_type or OCI_INDEX),
                   dict(doc.get("annotations") or {}))

    def select(self, platform: Platform) -> Descriptor | None:
        for desc in self.manifests:
            if desc.platform is not None and desc.platform.matches(platform):
                return desc
        return None


def sniff_media_type(data: bytes) -> str:
    """Guess a JSON document's media type (OCI layouts may omit ``mediaType``)."""
    doc = _load(data, "document")
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    if "rootfs" in doc:
        return OCI_CONFIG
    raise ManifestError("unrecognised JSON document")
