"""Token realms and clear text (issue 14, item 5): credentials never go over HTTP to the realm of an HTTPS registry.

A real registry (distribution) served over TLS on 127.0.0.1, with its token
service on another host (127.0.0.2, plain HTTP or TLS). pybuild speaks
plain HTTP to loopback registries, so these tests let 127.0.0.1 and
127.0.0.2 play remote hosts (``is_loopback`` says no) and trust the test
CA in this process (requests' CA bundle path); the library is called
in-process, as the CLI calls it. The third case, a loopback registry over
HTTP with an HTTP realm on another loopback address, is pybuild unchanged.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from pybuild.registry import transport as _transport
from pybuild.registry.auth import Credentials, store_credentials
from pybuild.registry.client import RegistryClient
from pybuild.registry.errors import RegistryAuthError
from pybuild.registry.pull import pull
from pybuild.registry.push import push
from pybuild.registry.transport import RegistryOptions
from tests.registry.conftest import ISSUER, PASSWORD, SERVICE, USER, Registry, TokenServer, start_registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root")

OTHER_HOST = "127.0.0.2"  # "another host" of the realm


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _make_pki(work: Path) -> Pki:
    """A test CA and a server certificate for 127.0.0.1 and 127.0.0.2 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuild test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.IPAddress(ipaddress.ip_address(OTHER_HOST))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(work / "ca.pem", work / "server.pem", work / "server-key.pem")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pki


@dataclass
class RealmRegistry:
    registry: Registry
    tokens: TokenServer
    pki: Pki

    @property
    def host(self) -> str:
        return self.registry.host


def _start(work: Path, *, tls: bool, realm_tls: bool) -> RealmRegistry:
    """A token-auth registry on 127.0.0.1 (TLS or not) whose token service listens on 127.0.0.2."""
    work.mkdir(parents=True, exist_ok=True)
    pki = _make_pki(work)
    tokens = TokenServer(work, {USER: PASSWORD}, host=OTHER_HOST, tls=pki.server_context() if realm_tls else None)
    # start_registry appends this to its config right after the http: section's last key
    tls_conf = f"  tls:\n    certificate: {pki.cert}\n    key: {pki.key}\n" if tls else ""
    try:
        reg = start_registry(work, tls_conf + f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n"
                                              f"    issuer: {ISSUER}\n    rootcertbundle: {tokens.cert_path}\n")
    except BaseException:
        tokens.close()
        raise
    return RealmRegistry(reg, tokens, pki)


@pytest.fixture
def as_remote_https(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """127.0.0.1 and 127.0.0.2 play remote hosts: no loopback shortcut (HTTPS to the registry), the test CA trusted."""
    monkeypatch.setattr(_transport, "is_loopback", lambda host: False)
    yield


def _trust(monkeypatch: pytest.MonkeyPatch, reg: RealmRegistry) -> None:
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(reg.pki.ca))


@pytest.fixture
def https_registry_http_realm(tmp_path: Path) -> Iterator[RealmRegistry]:
    reg = _start(tmp_path / "reg", tls=True, realm_tls=False)
    yield reg
    reg.registry.stop()
    reg.tokens.close()


@pytest.fixture
def https_registry_https_realm(tmp_path: Path) -> Iterator[RealmRegistry]:
    reg = _start(tmp_path / "reg", tls=True, realm_tls=True)
    yield reg
    reg.registry.stop()
    reg.tokens.close()


@pytest.fixture
def http_registry_http_realm(tmp_path: Path) -> Iterator[RealmRegistry]:
    reg = _start(tmp_path / "reg", tls=False, realm_tls=False)
    yield reg
    reg.registry.stop()
    reg.tokens.close()


def _client(host: str, creds: Credentials | None) -> RegistryClient:
    return RegistryClient(host, RegistryOptions.from_env(), credentials=creds, use_stored_credentials=False)


def _assert_refused(exc: RegistryAuthError, reg: RealmRegistry) -> None:
    text = str(exc)
    assert "\n" not in text
    assert (f"the registry {reg.host} is reached over HTTPS but asks for a token from {reg.tokens.realm} over "
            "plain HTTP: credentials are never sent there in clear text") in text
    assert f"list {OTHER_HOST}:{reg.tokens.port} in PYBUILD_INSECURE_REGISTRIES" in text


def test_an_http_realm_of_an_https_registry_never_gets_the_credentials(
        https_registry_http_realm: RealmRegistry, as_remote_https: None, monkeypatch: pytest.MonkeyPatch,
        cli: Any, busybox: str, store: Any, repo: str) -> None:
    reg = https_registry_http_realm
    _trust(monkeypatch, reg)
    creds = Credentials(USER, PASSWORD)
    # login (what `pybuild login` does: GET /v2/ with the given credentials)
    with _client(reg.host, creds) as client, pytest.raises(RegistryAuthError) as info:
        client.ping()
    assert client.transport.origin().scheme == "https"
    _assert_refused(info.value, reg)
    # push and pull with stored credentials (what `pybuild push/pull` do)
    store_credentials(reg.host, creds)
    with pytest.raises(RegistryAuthError) as info:
        push(store, busybox, f"{reg.host}/{repo}:v1")
    _assert_refused(info.value, reg)
    with pytest.raises(RegistryAuthError) as info:
        pull(store, f"{reg.host}/{repo}:v1")
    _assert_refused(info.value, reg)
    assert not any(hit["authorization"] for hit in reg.tokens.hits), reg.tokens.hits
    # nothing secret in an anonymous token request: that one still goes
    with _client(reg.host, None) as anonymous:
        anonymous.ping()
    assert reg.tokens.hits and not any(hit["authorization"] for hit in reg.tokens.hits)


def test_the_realm_host_listed_as_insecure_may_get_them(
        https_registry_http_realm: RealmRegistry, as_remote_https: None, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = https_registry_http_realm
    _trust(monkeypatch, reg)
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", f"{OTHER_HOST}:{reg.tokens.port}")
    with _client(reg.host, Credentials(USER, PASSWORD)) as client:
        client.ping()
    assert [hit["user"] for hit in reg.tokens.hits] == [USER]


def test_an_https_realm_on_another_host_works(
        https_registry_https_realm: RealmRegistry, as_remote_https: None, monkeypatch: pytest.MonkeyPatch,
        cli: Any, busybox: str, store: Any, other_cli: Any, repo: str) -> None:
    reg = https_registry_https_realm
    _trust(monkeypatch, reg)
    assert reg.tokens.realm.startswith(f"https://{OTHER_HOST}:")
    creds = Credentials(USER, PASSWORD)
    with _client(reg.host, creds) as client:
        client.ping()
        assert client.transport.origin().scheme == "https"
    store_credentials(reg.host, creds)
    name = f"{reg.host}/{repo}:v1"
    digest = push(store, busybox, name).digest
    from pybuild.store.root import Store

    pulled = pull(Store.open(other_cli.root), name)
    assert pulled.image.manifest_digest == digest
    assert reg.tokens.hits and all(hit["authorization"] and hit["user"] == USER for hit in reg.tokens.hits)


def test_an_http_realm_of_a_loopback_http_registry_works_as_before(
        http_registry_http_realm: RealmRegistry, cli: Any, user_password: tuple[str, str]) -> None:
    reg = http_registry_http_realm
    assert reg.tokens.realm.startswith(f"http://{OTHER_HOST}:")
    user, password = user_password
    result = cli("login", "-u", user, "--password-stdin", reg.host, input=password.encode() + b"\n")
    assert result.stdout.strip() == "Login Succeeded"
    assert [(hit["user"], hit["authorization"]) for hit in reg.tokens.hits] == [(USER, True)]
