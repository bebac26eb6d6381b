"""Pieces of the registry client on their own: challenges, scopes, Retry-After, Docker config, options, progress."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from pybuild.cli.progress import PlainProgress, TerminalProgress, make_progress
from pybuild.cli.ui import human_size
from pybuild.errors import RegistryError, UsageError
from pybuild.registry import auth as _auth
from pybuild.registry import transport as _transport
from pybuild.registry.client import RegistryClient
from pybuild.registry.errors import ManifestUnknown, RegistryAuthError, error_from_response, parse_error_body
from pybuild.registry.progress import NullProgress
from pybuild.registry.transport import RegistryOptions, api_host, is_loopback, parse_retry_after

# ---- challenges and scopes --------------------------------------------------------------------------


def test_parse_bearer_challenge() -> None:
    [c] = _auth.parse_challenges('Bearer realm="https://auth.example/token",service="registry.example",'
                                 'scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope"')
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.example/token"
    assert c.params["service"] == "registry.example"
    assert c.params["scope"] == "repository:a/b:pull,push repository:c:pull"
    assert c.params["error"] == "insufficient_scope"


def test_parse_several_challenges_and_escapes() -> None:
    cs = _auth.parse_challenges('Basic realm="a \\"quoted\\" realm", Bearer realm=https://x/t, service=s')
    assert [(c.scheme, c.params) for c in cs] == [
        ("basic", {"realm": 'a "quoted" realm'}),
        ("bearer", {"realm": "https://x/t", "service": "s"}),
    ]
    assert _auth.parse_challenges("") == []


def test_merge_scopes() -> None:
    assert _auth.merge_scopes(("repository:a:pull", "repository:a:pull,push", "repository:b:pull")) == (
        "repository:a:pull,push", "repository:b:pull")


# ---- Retry-After, hosts, options -------------------------------------------------------------------------


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    now = time.time()
    when = email.utils.formatdate(now + 5, usegmt=True)
    assert 3.5 <= (parse_retry_after(when, now=now) or 0) <= 5.5
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_hosts() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("quay.example:5000") == "quay.example:5000"
    for host in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"):
        assert is_loopback(host), host
    for host in ("example.com", "10.0.0.1:5000", "[fe80::1]:5000"):
        assert not is_loopback(host), host
    assert _transport.Transport("docker.io").host == "registry-1.docker.io"


def test_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYBUILD_REGISTRY_ATTEMPTS", "7")
    monkeypatch.setenv("PYBUILD_PUSH_CHUNK_SIZE", "1024")
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", "https://a.example:5000/, b.example")
    opts = RegistryOptions.from_env(["c.example"])
    assert opts.attempts == 7 and opts.chunk_size == 1024
    assert opts.insecure == {"a.example:5000", "b.example", "c.example"}
    for attempt in (1, 2, 3, 10):
        assert 0 < opts.delay(attempt) <= opts.max_delay
    monkeypatch.setenv("PYBUILD_REGISTRY_ATTEMPTS", "many")
    with pytest.raises(UsageError, match="PYBUILD_REGISTRY_ATTEMPTS"):
        RegistryOptions.from_env()


# ---- error bodies ------------------------------------------------------------------------------------------


def _response(status: int, body: bytes, url: str = "http://r.example/v2/a/manifests/v1") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    resp.url = url
    resp.request = requests.Request("GET", url).prepare()
    return resp


def test_error_bodies() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v1"}}]}'
    assert parse_error_body(body) == [("MANIFEST_UNKNOWN", "manifest unknown", {"Tag": "v1"})]
    err = error_from_response(_response(404, body), "GET manifest")
    assert isinstance(err, ManifestUnknown)
    assert str(err) == 'GET manifest: 404 Not Found: MANIFEST_UNKNOWN: manifest unknown ({"Tag":"v1"})'
    err = error_from_response(_response(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}'), "HEAD blob",
                              login_host="r.example")
    assert isinstance(err, RegistryAuthError)
    assert str(err) == "HEAD blob: 401 Unauthorized: UNAUTHORIZED: no (check your credentials: pybuild login r.example)"
    err = error_from_response(_response(503, b"<html>busy</html>"), "GET manifest", attempts=5)
    assert str(err) == "GET manifest: 503 Service Unavailable after 5 attempts: <html>busy</html>"
    assert parse_error_body(b"not json") == []


# ---- Docker's config ---------------------------------------------------------------------------------------


def _write_config(docker_config: Path, doc: dict[str, Any]) -> None:
    docker_config.mkdir(parents=True, exist_ok=True)
    (docker_config / "config.json").write_text(json.dumps(doc))


def test_credentials_from_auths(docker_config: Path) -> None:
    assert _auth.resolve_credentials("r.example:5000") is None
    basic = base64.b64encode(b"bob:pa:ss").decode()
    _write_config(docker_config, {"auths": {
        "https://r.example:5000/v1/": {"auth": basic},
        "https://index.docker.io/v1/": {"identitytoken": "idt"},
        "plain.example": {"username": "u", "password": "p"},
    }})
    creds = _auth.resolve_credentials("r.example:5000")
    assert creds is not None and (creds.username, creds.password) == ("bob", "pa:ss")
    hub = _auth.resolve_credentials("docker.io")
    assert hub is not None and hub.identity_token == "idt"
    plain = _auth.resolve_credentials("plain.example")
    assert plain is not None and plain.basic() == "Basic " + base64.b64encode(b"u:p").decode()
    assert "p" not in repr(plain).replace("password", "")
    assert _auth.server_key("docker.io") == "https://index.docker.io/v1/"
    assert _auth.parse_login_server("https://index.docker.io/v1/") == "docker.io"
    assert _auth.parse_login_server("https://R.example:5000/") == "r.example:5000"


def test_bad_config_is_a_clear_error(docker_config: Path) -> None:
    docker_config.mkdir(parents=True)
    (docker_config / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="config.json is not valid JSON"):
        _auth.resolve_credentials("r.example")
    _write_config(docker_config, {"auths": {"r.example": {"auth": "!!!"}}})
    with pytest.raises(RegistryError, match="invalid auth entry for r.example"):
        _auth.resolve_credentials("r.example")


def test_missing_credential_helper(docker_config: Path) -> None:
    _write_config(docker_config, {"credsStore": "surely-not-installed"})
    with pytest.raises(RegistryAuthError, match="docker-credential-surely-not-installed not found"):
        _auth.resolve_credentials("r.example")
    _write_config(docker_config, {"credsStore": "../evil"})
    with pytest.raises(RegistryError, match="invalid credential helper name"):
        _auth.resolve_credentials("r.example")


def test_store_and_erase_keep_other_keys(docker_config: Path) -> None:
    _write_config(docker_config, {"auths": {"keep.example": {"auth": "eDp5"}}, "detachKeys": "ctrl-x"})
    _auth.store_credentials("r.example", _auth.Credentials("u", "p"))
    doc = json.loads((docker_config / "config.json").read_text())
    assert doc["detachKeys"] == "ctrl-x" and set(doc["auths"]) == {"keep.example", "r.example"}
    assert _auth.erase_credentials("r.example")
    assert not _auth.erase_credentials("r.example")
    assert set(json.loads((docker_config / "config.json").read_text())["auths"]) == {"keep.example"}


# ---- insecure registries ------------------------------------------------------------------------------------


def test_insecure_registry_falls_back_to_http(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transport, "is_loopback", lambda host: False)  # treat 127.0.0.1 as a remote host
    with RegistryClient(registry.host, RegistryOptions(attempts=1)) as secure, \
            pytest.raises(RegistryError, match="TLS error") as info:
        secure.ping()
    assert f"--insecure {registry.host}" in str(info.value)
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", registry.host)
    with RegistryClient(registry.host) as insecure:
        insecure.ping()
        assert insecure.transport.origin().scheme == "http"


# ---- progress ------------------------------------------------------------------------------------------------


def test_plain_progress() -> None:
    out = io.StringIO()
    p = PlainProgress(out)
    p.message("v1: Pulling from app")
    p.update("abc", "Pulling fs layer")
    p.update("abc", "Downloading", 10, 2_000_000)
    p.update("abc", "Downloading", 20, 2_000_000)
    p.update("abc", "Download complete", total=2_000_000)
    assert out.getvalue().splitlines() == ["v1: Pulling from app", "abc: Pulling fs layer", "abc: Downloading",
                                           "abc: Download complete 2MB"]


def test_terminal_progress_redraws_lines_in_place() -> None:
    out = io.StringIO()
    now = [100.0]
    p = TerminalProgress(out, clock=lambda: now[0])
    p.update("aaa", "Pulling fs layer")
    p.update("bbb", "Pulling fs layer")
    now[0] += 1
    p.update("aaa", "Downloading", 0, 4_000_000)
    now[0] += 1
    p.update("aaa", "Downloading", 2_000_000, 4_000_000)
    p.update("aaa", "Downloading", 2_100_000, 4_000_000)  # within the redraw interval: skipped
    text = out.getvalue()
    assert text.startswith("aaa: Pulling fs layer\nbbb: Pulling fs layer\n")
    assert "\x1b[2A\r\x1b[2Kaaa: Downloading  0B/4MB\r\x1b[2B" in text
    assert "aaa: Downloading  2MB/4MB  2MB/s" in text
    assert "2.1MB" not in text


def test_make_progress() -> None:
    assert isinstance(make_progress(quiet=True), NullProgress)
    assert isinstance(make_progress(out=io.StringIO()), PlainProgress)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(out=Tty()), TerminalProgress)
    assert human_size(1_160_000) == "1.16MB"
