"""Fixtures for the registry tests: real distribution servers, a token service, a fault-injecting proxy.

Everything listens on 127.0.0.1 only. The registry is Debian's
``docker-registry`` (CNCF distribution 2.8) run with a config written here:
without auth, with htpasswd Basic auth, or with token auth backed by
:class:`TokenServer` (JWTs signed RS256, the signing certificate in the
``x5c`` header and as the registry's ``rootcertbundle``). :class:`FaultProxy`
sits between pybuild and a registry, records every request and can answer
with errors, drop or corrupt a blob response, or redirect blob GETs to a
:class:`StorageServer` on another port.
"""

from __future__ import annotations

import base64
import datetime as _dt
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SERVICE = "test-registry"
ISSUER = "test-issuer"
USER, PASSWORD = "alice", "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# =========================================================================== the registry


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_registry(workdir: Path, auth: str = "") -> Registry:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry (distribution) is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: pybuild-test-secret\n"
        + auth
    )
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    reg = Registry(f"127.0.0.1:{port}", proc, workdir, log)
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(f"http://{reg.host}/v2/", timeout=1)
            return reg
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                reg.stop()
                raise AssertionError(f"registry did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.05)


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    import bcrypt

    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")


# =========================================================================== token service


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens (the distribution token spec) for known users; counts its hits."""

    def __init__(self, workdir: Path, users: dict[str, str], expires_in: int = 300, *, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.identity_tokens: dict[str, str] = {}  # refresh token -> user
        self.expires_in = expires_in
        self.hits: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuild test token issuer")])
        now = _dt.datetime.now(_dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = workdir / "token-cert.pem"
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer._handle(self, parse_qs(self.rfile.read(length).decode()))

        self.server = ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.realm = f"{'https' if tls is not None else 'http'}://{host}:{self.port}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.hits.clear()

    def sign(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def _handle(self, h: BaseHTTPRequestHandler, form: dict[str, list[str]] | None) -> None:
        query = parse_qs(urlsplit(h.path).query)
        user: str | None = None
        ok = True
        if form is not None:  # OAuth2 refresh-token grant (identity tokens)
            params = form
            refresh = (form.get("refresh_token") or [""])[0]
            user = self.identity_tokens.get(refresh)
            ok = user is not None
        else:
            params = query
            auth = h.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                ok = self.users.get(name) == password
                user = name if ok else None
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        with self._lock:
            self.hits.append({"user": user, "scopes": scopes, "service": (params.get("service") or [""])[0],
                              "grant": "refresh_token" if form is not None else "basic",
                              "authorization": "Authorization" in h.headers})
        if not ok:
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]})
            self._reply(h, 401, body.encode())
            return
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if user is not None and kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        token = self.sign({"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + self.expires_in,
                           "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access})
        key = "access_token" if form is not None else "token"
        self._reply(h, 200, json.dumps({key: token, "expires_in": self.expires_in}).encode())

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


# =========================================================================== the fault proxy


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body_len: int


@dataclass
class Rule:
    match: Callable[[Req], bool]
    action: str  # status | drop | stall | corrupt | redirect | close
    times: int
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    to: str = ""
    hits: int = 0


_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}


def is_blob_get(req: Req) -> bool:
    return req.method == "GET" and "/blobs/sha256:" in req.path


class FaultProxy:
    """An HTTP proxy in front of a registry that records requests and injects faults by rule."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.log: list[Req] = []
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self.stalled = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_ANY(self) -> None:
                outer._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_ANY

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, match: Callable[[Req], bool], action: str, times: int = 1, **kw: Any) -> Rule:
        rule = Rule(match, action, times, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def requests(self, method: str | None = None, contains: str = "") -> list[Req]:
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method) and contains in r.path]

    def _take(self, req: Req) -> Rule | None:
        with self._lock:
            self.log.append(req)
            for rule in self.rules:
                if rule.hits < rule.times and rule.match(req):
                    rule.hits += 1
                    return rule
        return None

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(h.rfile.read(size))
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(length) if length else b""

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.upstream.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
            if body or h.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], data: bytes,
              length: int | None = None) -> None:
        h.send_response(status)
        upstream_length = None
        for k, v in headers:
            if k.lower() in _HOP or k.lower() in ("date", "server"):
                continue
            if k.lower() == "content-length":
                upstream_length = v
                continue
            h.send_header(k, v)
        if h.command == "HEAD":
            h.send_header("Content-Length", upstream_length or "0")
        else:
            h.send_header("Content-Length", str(len(data) if length is None else length))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = self._read_body(h)
        req = Req(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, len(body))
        rule = self._take(req)
        if rule is not None and rule.action == "status":
            payload = json.dumps({"errors": [{"code": "UNKNOWN", "message": f"injected {rule.status}"}]}).encode()
            self._send(h, rule.status, [("Content-Type", "application/json"), *rule.headers.items()], payload)
            return
        if rule is not None and rule.action == "redirect":
            self._send(h, 307, [("Location", rule.to + urlsplit(h.path).path)], b"")
            return
        if rule is not None and rule.action == "close":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        status, headers, data = self._forward(h, body)
        if rule is not None and rule.action == "corrupt" and data and status == 200:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        if rule is not None and rule.action in ("drop", "stall") and data and status == 200:
            h.send_response(status)
            for k, v in headers:
                if k.lower() not in _HOP and k.lower() not in ("content-length", "date", "server"):
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            if rule.action == "stall":  # hold the transfer open until the test lets go
                self.stalled.set()
                self.release.wait(30)
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(h, status, headers, data)


class StorageServer:
    """Stands in for a blob storage service a registry redirects to: serves files, records headers."""

    def __init__(self, blobs_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self.seen: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                digest = self.path.rsplit("/", 1)[-1]
                path = outer.blobs_dir / digest.split(":", 1)[-1]
                data = path.read_bytes() if path.is_file() else b""
                self.send_response(200 if data else 404)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# =========================================================================== fixtures


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny backoff and few attempts, for every registry test (the CLI subprocesses inherit them)."""
    monkeypatch.setenv("PYBUILD_REGISTRY_ATTEMPTS", "4")
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRY_DELAY", "0.01")
    monkeypatch.setenv("PYBUILD_REGISTRY_TIMEOUT", "20")
    monkeypatch.delenv("PYBUILD_INSECURE_REGISTRIES", raising=False)


@pytest.fixture(autouse=True)
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Docker config dir for every test: never the real ~/.docker."""
    path = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry-basic")
    write_htpasswd(work / "htpasswd", {USER: PASSWORD})
    reg = start_registry(work, f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {work / 'htpasswd'}\n")
    yield reg
    reg.stop()


@dataclass
class TokenRegistry:
    registry: Registry
    tokens: TokenServer

    @property
    def host(self) -> str:
        return self.registry.host


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    work = tmp_path_factory.mktemp("registry-token")
    tokens = TokenServer(work, {USER: PASSWORD})
    try:
        reg = start_registry(work, f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n"
                                   f"    issuer: {ISSUER}\n    rootcertbundle: {tokens.cert_path}\n")
    except BaseException:
        tokens.close()
        raise
    yield TokenRegistry(reg, tokens)
    reg.stop()
    tokens.close()


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def other_cli(cli: Any, workdir: Path) -> Any:
    """The CLI on a second, empty store root (a fresh machine pulling)."""
    return type(cli)(workdir / "root2")


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses."""
    return "test/" + secrets.token_hex(4)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


@pytest.fixture
def user_password() -> tuple[str, str]:
    """The one account of the auth registries and the token service."""
    return USER, PASSWORD


@pytest.fixture
def make_storage() -> Iterator[Callable[[Path], StorageServer]]:
    servers: list[StorageServer] = []

    def make(blobs_dir: Path) -> StorageServer:
        server = StorageServer(blobs_dir)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
