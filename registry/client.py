"""The distribution API of one registry: manifests and blobs, verified, resumable.

:class:`RegistryClient` is the generic layer that pull, push and (later) the
build cache exporter share. Everything fetched is verified against its
digest before anyone sees it: manifests in memory (size-capped), blobs
streamed into the store's :class:`~pybuild.store.blobs.BlobWriter`, whose
``commit`` refuses content that does not hash to the expected digest. A blob
download that breaks is resumed with ``Range: bytes=N-`` into the same
writer. Uploads are monolithic (POST, PUT ?digest=) below a threshold and
chunked (PATCH with Content-Range, then PUT) above it; a broken chunked
upload is resumed from the offset the registry reports, or restarted.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin

import requests
import urllib3

from pybuild.errors import DigestMismatch, RegistryError
from pybuild.records import record
from pybuild.store import digest as _digest
from pybuild.store.blobs import BlobStore
from pybuild.store.model import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestError,
    sniff_media_type,
)

from .auth import Authenticator, Credentials
from .errors import (
    RegistryConnectionError,
    RegistryHTTPError,
    is_transient,
    with_attempts,
)
from .transport import Interrupted, RegistryOptions, Transport, describe_exception

MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
MAX_MANIFEST_SIZE = 4 << 20  # what distribution accepts
MAX_SMALL_BLOB = 64 << 20  # configs and other blobs read into memory
READ_CHUNK = 256 << 10

Progress = Callable[[int], None]  # bytes done so far
BlobSource = Path | Callable[[], BinaryIO]

_RANGE_RE = re.compile(r"^(?:bytes[= ])?(\d+)-(\d+)(?:/(\d+|\*))?$")


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


@record(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: str


@record(frozen=True)
class BlobPushed:
    """How a blob got into the repository: ``exists``, ``mounted`` (from ``source``) or ``pushed``."""

    how: str
    source: str | None = None


class _FileSlice:
    """``length`` bytes of a file from ``offset``, as a request body with a known length."""

    def __init__(self, source: BlobSource, offset: int, length: int, progress: Callable[[int], None] | None) -> None:
        self._file: BinaryIO = open(source, "rb") if isinstance(source, Path) else source()  # noqa: SIM115
        self._file.seek(offset)
        self._left = length
        self._length = length
        self._progress = progress
        self._sent = 0

    def __len__(self) -> int:
        return self._length

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            self.close()
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._file.read(want)
        if not data:
            self.close()
            raise RegistryError("the blob being uploaded got shorter while it was read")
        self._left -= len(data)
        self._sent += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return data

    def __iter__(self) -> Any:
        while chunk := self.read(READ_CHUNK):
            yield chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


class RegistryClient:
    """Manifests and blobs of one registry (``domain`` as in references: ``docker.io``, ``host:5000``).

    ``push=True`` asks for push access in tokens (``repository:NAME:pull,push``)
    from the first request on, so one token serves a whole push.
    """

    def __init__(self, domain: str, options: RegistryOptions | None = None, *,
                 credentials: Credentials | None = None, use_stored_credentials: bool = True,
                 push: bool = False) -> None:
        self.options = options or RegistryOptions.from_env()
        self.auth = Authenticator(domain, credentials, use_stored=use_stored_credentials)
        self.transport = Transport(domain, self.options, self.auth)
        self.domain = domain
        self.push = push

    @property
    def host(self) -> str:
        return self.transport.host

    def close(self) -> None:
        self.transport.close()

    def cancel(self) -> None:
        """Make transfers in flight stop soon (they raise Interrupted)."""
        self.transport.cancelled.set()

    @contextlib.contextmanager
    def transfers(self, count: int, name: str) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
        """Worker threads for ``count`` blob transfers (at most ``options.concurrency``).

        If the block fails (Ctrl-C included), the transfers in flight are
        cancelled; they have all ended when it is left.
        """
        workers = max(1, min(self.options.concurrency, count or 1))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        try:
            yield pool
        except BaseException:
            self.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.transport.cancelled.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def scope(self, repo: str, push: bool | None = None) -> str:
        return f"repository:{repo}:" + ("pull,push" if (self.push if push is None else push) else "pull")

    def _req(self, method: str, url: str, repo: str | None, op: str, **kw: Any) -> requests.Response:
        scopes = kw.pop("scopes", None)
        if scopes is None:
            scopes = (self.scope(repo),) if repo else ()
        return self.transport.request(method, url, op=op, scopes=scopes, **kw)

    # ---- the API root --------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/ (authenticating if asked to): proves the registry is there and the credentials work."""
        resp = self._req("GET", "/v2/", None, "GET /v2/")
        resp.close()

    # ---- manifests ------------------------------------------------------------

    def get_manifest(self, repo: str, reference: str, accept: tuple[str, ...] = MANIFEST_ACCEPT) -> FetchedManifest:
        """A manifest or index by tag or digest, its digest verified (requested digest / Docker-Content-Digest)."""
        op = "GET manifest" + (f" {short(reference)}" if reference.startswith("sha256:") else "")
        resp, data = self._get_small(f"/v2/{repo}/manifests/{quote(reference, safe=':')}", repo, op,
                                     MAX_MANIFEST_SIZE, {"Accept": ", ".join(accept)})
        actual = _digest.of_bytes(data)
        if reference.startswith("sha256:"):
            if actual != reference:
                raise DigestMismatch(f"{op}: the registry sent a manifest that hashes to {actual}, not {reference}")
        else:
            announced = resp.headers.get("Docker-Content-Digest")
            if announced and announced.startswith("sha256:") and announced != actual:
                raise DigestMismatch(f"{op}: the manifest hashes to {actual} "
                                     f"but the registry announced {announced}")
        media_type = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if media_type not in MANIFEST_ACCEPT:
            try:
                sniffed = sniff_media_type(data)
            except ManifestError as exc:
                raise RegistryError(f"{op}: the registry sent something that is not a manifest ({exc.message})"
                                    ) from None
            if sniffed in MANIFEST_ACCEPT:
                media_type = sniffed
        if media_type not in accept:
            raise RegistryError(f"{op}: unsupported manifest type {media_type or 'unknown'!r}",
                                "only OCI and Docker schema 2 images are supported")
        return FetchedManifest(data, media_type, actual)

    def head_manifest(self, repo: str, reference: str, accept: tuple[str, ...] = MANIFEST_ACCEPT) -> str | None:
        """The digest a tag points at (Docker-Content-Digest), or None if the registry has no such manifest."""
        resp = self._req("HEAD", f"/v2/{repo}/manifests/{quote(reference, safe=':')}", repo, "HEAD manifest",
                         headers={"Accept": ", ".join(accept)}, ok=(200, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        value = resp.headers.get("Docker-Content-Digest")
        return value if value and _digest.is_valid(value) else None

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Upload a manifest under a tag (or its digest) with its exact bytes and media type; returns its digest."""
        dgst = _digest.of_bytes(data)
        resp = self._req("PUT", f"/v2/{repo}/manifests/{quote(reference, safe=':')}", repo, "PUT manifest",
                         headers={"Content-Type": media_type}, body=lambda: data, ok=(200, 201, 202, 204),
                         scopes=(self.scope(repo, True),))
        resp.close()
        announced = resp.headers.get("Docker-Content-Digest")
        if announced and announced != dgst:
            raise DigestMismatch(f"PUT manifest: the registry stored {announced}, expected {dgst}")
        return str(dgst)

    # ---- blobs: reading -------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> int | None:
        """The size of a blob in the repository, or None if it is not there."""
        resp = self._req("HEAD", f"/v2/{repo}/blobs/{digest}", repo, f"HEAD blob {short(digest)}", ok=(200, 404))
        resp.close()
        if resp.status_code != 200:
            return None
        try:
            return int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            return -1

    def get_blob(self, repo: str, digest: str, max_size: int = MAX_SMALL_BLOB) -> bytes:
        """A small blob (a config) in memory, verified."""
        op = f"GET blob {short(digest)}"
        _, data = self._get_small(f"/v2/{repo}/blobs/{digest}", repo, op, max_size, {})
        _digest.verify(digest, _digest.of_bytes(data), f"blob {digest}")
        return data

    def fetch_blob(self, repo: str, digest: str, blobs: BlobStore, size: int | None = None,
                   progress: Progress | None = None) -> str:
        """Stream a blob into the blob store, verified; a broken transfer is resumed with a Range request."""
        op = f"GET blob {short(digest)}"
        url = f"/v2/{repo}/blobs/{digest}"
        writer = blobs.writer(digest)
        failures = 0
        try:
            while True:
                headers = {"Accept-Encoding": "identity"}
                if writer.size:
                    headers["Range"] = f"bytes={writer.size}-"
                resp = self._req("GET", url, repo, op, headers=headers, stream=True, ok=(200, 206, 416))
                try:
                    if resp.status_code == 416 or (writer.size and not self._continues(resp, writer.size)):
                        # The registry will not resume where we are: start the blob again.
                        writer.abort()
                        writer = blobs.writer(digest)
                        if resp.status_code == 416:
                            raise _Broken("the registry refused the range request")
                    if progress is not None:
                        progress(writer.size)
                    for chunk in resp.raw.stream(READ_CHUNK, decode_content=False):
                        if self.transport.cancelled.is_set():
                            raise Interrupted()
                        writer.write(chunk)
                        if size is not None and writer.size > size:
                            raise DigestMismatch(f"{op}: the registry sent more than the {size} bytes announced")
                        if progress is not None:
                            progress(writer.size)
                    if size is not None and writer.size < size:
                        raise _Broken(f"the connection ended after {writer.size} of {size} bytes")
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError, _Broken) as exc:
                    failures += 1
                    if failures >= self.options.attempts:
                        reason = exc.args[0] if isinstance(exc, _Broken) else describe_exception(exc)
                        raise RegistryConnectionError(f"{op}: {reason} after {failures} attempts") from None
                    self.transport._sleep(self.options.delay(failures))
                    continue
                finally:
                    resp.close()
                return str(writer.commit())
        except BaseException:
            writer.abort()
            raise

    @staticmethod
    def _continues(resp: requests.Response, offset: int) -> bool:
        if resp.status_code != 206:
            return False
        m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        return m is not None and int(m.group(1)) == offset

    def _get_small(self, url: str, repo: str, op: str, limit: int,
                   headers: dict[str, str]) -> tuple[requests.Response, bytes]:
        """GET a document into memory (size-capped), retrying when its body breaks off."""
        failures = 0
        while True:
            resp = self._req("GET", url, repo, op, headers=headers, stream=True)
            try:
                return resp, self._read_capped(resp, limit, op)
            except RegistryConnectionError as exc:
                failures += 1
                if failures >= self.options.attempts:
                    raise with_attempts(exc, failures) from None
                self.transport._sleep(self.options.delay(failures))
            finally:
                resp.close()

    def _read_capped(self, resp: requests.Response, limit: int, op: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in resp.raw.stream(READ_CHUNK, decode_content=True):
                total += len(chunk)
                if total > limit:
                    raise RegistryError(f"{op}: the registry sent more than {limit} bytes")
                parts.append(chunk)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RegistryConnectionError(f"{op}: {describe_exception(exc)}") from None
        return b"".join(parts)

    # ---- blobs: writing -------------------------------------------------------

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> tuple[bool, str | None]:
        """Ask the registry to link a blob from another repository: (mounted, upload location if not)."""
        resp = self._req("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={quote(from_repo, safe='/')}",
                         repo, f"mount blob {short(digest)}", ok=(201, 202),
                         scopes=(self.scope(repo, True), f"repository:{from_repo}:pull"))
        resp.close()
        if resp.status_code == 201:
            return True, None
        location = resp.headers.get("Location")
        return False, urljoin(resp.url, location) if location else None

    def push_blob(self, repo: str, digest: str, size: int, source: BlobSource, *,
                  mount_from: tuple[str, ...] = (), progress: Progress | None = None) -> BlobPushed:
        """Make a blob present in ``repo``: skip it if there, mount it from a sibling repository, or upload it."""
        _digest.validate(digest)
        if self.blob_exists(repo, digest) is not None:
            return BlobPushed("exists")
        location: str | None = None
        for from_repo in mount_from:
            if from_repo == repo:
                continue
            mounted, location = self.mount_blob(repo, digest, from_repo)
            if mounted:
                return BlobPushed("mounted", from_repo)
            break  # the registry opened an upload session instead: use it
        self._upload(repo, digest, size, source, location, progress)
        return BlobPushed("pushed")

    def _start_upload(self, repo: str) -> tuple[str, int]:
        resp = self._req("POST", f"/v2/{repo}/blobs/uploads/", repo, "POST blob upload", ok=(202,),
                         headers={"Content-Length": "0"}, scopes=(self.scope(repo, True),))
        resp.close()
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError("POST blob upload: the registry gave no upload location")
        try:
            min_chunk = int(resp.headers.get("OCI-Chunk-Min-Length", "0"))
        except ValueError:
            min_chunk = 0
        return urljoin(resp.url, location), max(0, min_chunk)

    def _upload_status(self, repo: str, location: str) -> tuple[str, int] | None:
        """Where an interrupted upload stands: (location, next offset), or None to start over."""
        try:
            resp = self._req("GET", location, repo, "GET blob upload status", ok=(204,), retry=False,
                             scopes=(self.scope(repo, True),))
        except RegistryError:
            return None
        resp.close()
        offset = _range_end(resp.headers.get("Range", ""))
        new_location = resp.headers.get("Location")
        return (urljoin(resp.url, new_location) if new_location else location), offset

    def _upload(self, repo: str, digest: str, size: int, source: BlobSource, location: str | None,
                progress: Progress | None) -> None:
        op = f"upload blob {short(digest)}"
        failures = 0
        offset = 0
        min_chunk = 0
        done = [0]

        def report(offset_now: int) -> Callable[[int], None]:
            done[0] = offset_now

            def add(n: int) -> None:
                done[0] += n
                if progress is not None:
                    progress(min(done[0], size))
            return add

        scopes = (self.scope(repo, True),)
        while True:
            try:
                if location is None:
                    location, min_chunk = self._start_upload(repo)
                    offset = 0
                sep = "&" if "?" in location else "?"
                if size <= self.options.chunk_threshold and offset == 0:
                    add = report(0)
                    resp = self._req("PUT", f"{location}{sep}digest={digest}", repo, f"PUT blob {short(digest)}",
                                     headers={"Content-Type": "application/octet-stream"},
                                     body=functools.partial(_FileSlice, source, 0, size, add), retry=False,
                                     ok=(201, 204),
                                     scopes=scopes)
                else:
                    chunk = max(self.options.chunk_size, min_chunk, 1)
                    while offset < size:
                        n = min(chunk, size - offset)
                        start = offset
                        add = report(start)
                        resp = self._req("PATCH", location, repo, f"PATCH blob {short(digest)}",
                                         headers={"Content-Type": "application/octet-stream",
                                                  "Content-Range": f"{start}-{start + n - 1}"},
                                         body=functools.partial(_FileSlice, source, start, n, add),
                                         retry=False, ok=(202, 204), scopes=scopes)
                        resp.close()
                        new_location = resp.headers.get("Location")
                        if new_location:
                            location = urljoin(resp.url, new_location)
                        reported = _range_end(resp.headers.get("Range", ""))
                        offset = reported if reported else start + n
                    sep = "&" if "?" in location else "?"
                    resp = self._req("PUT", f"{location}{sep}digest={digest}", repo, f"PUT blob {short(digest)}",
                                     headers={"Content-Type": "application/octet-stream", "Content-Length": "0"},
                                     retry=False, ok=(201, 204), scopes=scopes)
                resp.close()
                announced = resp.headers.get("Docker-Content-Digest")
                if announced and announced != digest:
                    raise DigestMismatch(f"{op}: the registry stored {announced}, expected {digest}")
                return
            except RegistryError as exc:
                restartable = isinstance(exc, RegistryHTTPError) and (
                    exc.status == 416 or {"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "DIGEST_INVALID"}
                    & set(exc.codes))
                if not (is_transient(exc) or restartable):
                    raise
                failures += 1
                if failures >= self.options.attempts:
                    raise with_attempts(exc, failures) from None
                self.transport._sleep(self.options.delay(failures))
                status = None if (location is None or restartable) else self._upload_status(repo, location)
                if status is None:
                    location, offset = None, 0
                else:
                    location, offset = status
                    if offset > size:
                        location, offset = None, 0


def _range_end(value: str) -> int:
    """The next offset of an upload from its ``Range: 0-N`` header; ``0-0`` is read as nothing received
    (distribution writes it for an empty upload), so at worst one byte is sent again and the digest check
    at the end restarts the upload."""
    m = _RANGE_RE.match(value.strip())
    if m is None:
        return 0
    end = int(m.group(2))
    return 0 if end == 0 else end + 1


class _Broken(Exception):
    """A blob download ended early."""
