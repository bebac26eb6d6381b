"""Errors of registry operations, and reading the registry's own error body.

A distribution error body is ``{"errors": [{"code", "message", "detail"}]}``;
it is shown to the user as ``CODE: message`` after the operation and the
HTTP status: ``GET manifest: 404 Not Found: MANIFEST_UNKNOWN: manifest unknown``.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import requests

from pybuild.errors import PybuildError, RegistryError

MAX_ERROR_BODY = 64 << 10


class RegistryHTTPError(RegistryError):
    """The registry answered with an error status."""

    def __init__(self, message: str, hint: str | None = None, *, status: int = 0,
                 codes: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.status = status
        self.codes = codes


class RegistryConnectionError(RegistryError):
    """The registry could not be reached or the connection broke."""


class RegistryAuthError(RegistryHTTPError):
    """Authentication or authorisation failed (401, 403, or the token service refused)."""


class ManifestUnknown(RegistryHTTPError):
    """The repository or the tag/digest does not exist."""


class BlobUnknown(RegistryHTTPError):
    """A blob the registry was asked for does not exist."""


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may help: connection trouble, 5xx, 429."""
    if isinstance(exc, RegistryConnectionError):
        return True
    return isinstance(exc, RegistryHTTPError) and (exc.status >= 500 or exc.status == 429)


def with_attempts(exc: RegistryError, attempts: int) -> RegistryError:
    """The same error, its message saying how many attempts were made."""
    import copy

    if attempts <= 1 or "attempts" in exc.message:
        return exc
    new = copy.copy(exc)
    new.message = f"{exc.message} after {attempts} attempts"
    new.args = (new.message,)
    return new


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def parse_error_body(data: bytes) -> list[tuple[str, str, Any]]:
    """(code, message, detail) of each error in a distribution error body; [] if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return []
    out = []
    for item in errors:
        if isinstance(item, dict):
            out.append((str(item.get("code") or "UNKNOWN"), str(item.get("message") or ""), item.get("detail")))
    return out


def _read_capped(resp: requests.Response) -> bytes:
    try:
        if resp.raw is not None and not resp._content_consumed:
            return bytes(resp.raw.read(MAX_ERROR_BODY, decode_content=True) or b"")
        return resp.content[:MAX_ERROR_BODY] if resp.content else b""
    except Exception:  # noqa: BLE001 - an error body we cannot read is just not shown
        return b""


def _detail_text(detail: Any) -> str:
    if detail is None or detail == "" or detail == {}:
        return ""
    text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"), sort_keys=True)
    return f" ({text[:200]})" if text else ""


def error_from_response(resp: requests.Response, op: str, attempts: int = 1,
                        login_host: str | None = None) -> RegistryHTTPError:
    """The exception for an unexpected response: operation, status, the registry's errors, attempts."""
    status = resp.status_code
    body = b"" if resp.request is not None and resp.request.method == "HEAD" else _read_capped(resp)
    errors = parse_error_body(body)
    codes = tuple(code for code, _, _ in errors)
    message = f"{op}: {status_text(status)}"
    if attempts > 1:
        message += f" after {attempts} attempts"
    if errors:
        message += ": " + "; ".join(f"{code}: {msg}{_detail_text(detail)}" if msg else code
                                    for code, msg, detail in errors)
    elif body and status != 404:
        snippet = body[:200].decode("utf-8", "replace").strip().splitlines()
        if snippet and snippet[0]:
            message += f": {snippet[0]}"
    hint = None
    cls: type[RegistryHTTPError] = RegistryHTTPError
    if status in (401, 403) or {"UNAUTHORIZED", "DENIED"} & set(codes):
        cls = RegistryAuthError
        host = login_host or (resp.url.split("/")[2] if resp.url and "://" in resp.url else "")
        hint = f"check your credentials: pybuild login {host}".rstrip() if status == 401 else None
    elif {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"} & set(codes):
        cls = ManifestUnknown
    elif "BLOB_UNKNOWN" in codes:
        cls = BlobUnknown
    elif status == 404 and "manifest" in op:
        cls = ManifestUnknown
    elif status == 404 and "blob" in op:
        cls = BlobUnknown
    return cls(message, hint, status=status, codes=codes)


def prefixed(exc: PybuildError, context: str) -> PybuildError:
    """The same error (type, hint, status) with ``context: `` before its message."""
    import copy

    if exc.message.startswith(context + ":"):
        return exc
    new = copy.copy(exc)
    new.message = f"{context}: {exc.message}"
    new.args = (new.message,)
    return new
