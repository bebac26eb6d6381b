"""Authentication against real registries: htpasswd Basic, token service, login/logout, credential helpers."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest

from pybuild.registry import auth as _auth
from pybuild.registry.client import RegistryClient
from pybuild.registry.errors import RegistryAuthError
from pybuild.registry.transport import RegistryOptions

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root")


def _error_line(result: Any) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pybuild: error: ")]
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def _login(cli: Any, host: str, user: str, password: str, check: bool = True) -> Any:
    return cli("login", "-u", user, "--password-stdin", host, input=password.encode() + b"\n", check=check)


# ---- Basic (htpasswd) --------------------------------------------------------------------------


@pytest.mark.slow
def test_basic_auth_login_push_pull_logout(cli: Any, other_cli: Any, busybox: str, basic_registry: Any, repo: str,
                                           docker_config: Path, user_password: tuple[str, str]) -> None:
    user, password = user_password
    host = basic_registry.host
    name = f"{host}/{repo}:v1"
    cli("tag", busybox, name)

    line = _error_line(cli("push", name, check=False))
    assert line.startswith(f"pybuild: error: push {name}: HEAD blob ")
    assert "401 Unauthorized" in line and f"(check your credentials: pybuild login {host})" in line

    line = _error_line(_login(cli, host, user, "wrong", check=False))
    assert line.startswith(f"pybuild: error: login to {host} failed: GET /v2/: 401 Unauthorized: "
                           "UNAUTHORIZED: authentication required")
    assert not (docker_config / "config.json").exists()

    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"psFormat": "table", "auths": {"other.example:1": {}}}))
    result = _login(cli, host, user, password)
    assert result.stdout.strip() == "Login Succeeded"
    path = docker_config / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "table" and "other.example:1" in doc["auths"]
    assert base64.b64decode(doc["auths"][host]["auth"]).decode() == f"{user}:{password}"

    cli("push", name)
    other_cli("pull", name)
    assert json.loads(other_cli("inspect", name).stdout)[0]["Id"] == json.loads(cli("inspect", busybox).stdout)[0]["Id"]

    assert cli("logout", host).stdout.strip() == f"Removing login credentials for {host}"
    doc = json.loads(path.read_text())
    assert host not in doc["auths"] and doc["psFormat"] == "table"
    assert cli("logout", host).stdout.strip() == f"Not logged in to {host}"
    line = _error_line(type(cli)(cli.root.parent / "root3")("pull", name, check=False))
    assert "401 Unauthorized: UNAUTHORIZED: authentication required" in line


def test_login_usage_errors(cli: Any, basic_registry: Any) -> None:
    line = _error_line(cli("login", "-p", "x", "--password-stdin", "-u", "a", basic_registry.host, check=False))
    assert "mutually exclusive" in line
    line = _error_line(cli("login", "--password-stdin", basic_registry.host, input=b"x\n", check=False))
    assert "must provide --username with --password-stdin" in line


@pytest.mark.slow
def test_credential_helper(cli: Any, other_cli: Any, busybox: str, basic_registry: Any, repo: str, tmp_path: Path,
                           docker_config: Path, monkeypatch: pytest.MonkeyPatch,
                           user_password: tuple[str, str]) -> None:
    user, password = user_password
    host = basic_registry.host
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    stored = tmp_path / "helper-store.json"
    helper = bindir / "docker-credential-test"
    helper.write_text(f"""#!/bin/sh
read -r input
echo "$1 $input" >> {log}
case "$1" in
get)
  if [ "$input" = "{host}" ]; then
    printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}\\n' "$input"
  else
    echo "credentials not found in native keychain"; exit 1
  fi;;
store) echo "$input" > {stored};;
erase) rm -f {stored};;
esac
""")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {host: "test"}}))

    name = f"{host}/{repo}:v1"
    cli("tag", busybox, name)
    cli("push", name)
    other_cli("pull", name)
    assert f"get {host}" in log.read_text()

    # login stores through the helper, and the file keeps an empty entry, as docker does
    _login(cli, host, user, password)
    assert json.loads(stored.read_text()) == {"ServerURL": host, "Username": user, "Secret": password}
    assert json.loads((docker_config / "config.json").read_text())["auths"] == {host: {}}
    cli("logout", host)
    assert not stored.exists()


# ---- token service ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_token_auth_push_pull_and_token_reuse(cli: Any, other_cli: Any, busybox: str, token_registry: Any, repo: str,
                                              make_proxy: Any, user_password: tuple[str, str]) -> None:
    user, password = user_password
    tokens = token_registry.tokens
    proxy = make_proxy(token_registry.host)
    name = f"{proxy.host}/{repo}:v1"
    cli("tag", busybox, name)

    tokens.reset()
    line = _error_line(_login(cli, proxy.host, user, "wrong", check=False))
    assert "token request: 401 Unauthorized: UNAUTHORIZED: incorrect username or password" in line
    _login(cli, proxy.host, user, password)
    assert [h["scopes"] for h in tokens.hits] == [[], []]
    assert tokens.hits[-1]["user"] == user and tokens.hits[-1]["service"] == "test-registry"

    tokens.reset()
    proxy.clear()
    cli("push", name)
    assert [h["scopes"] for h in tokens.hits] == [[f"repository:{repo}:pull,push"]]
    with_token = [r for r in proxy.log if r.headers.get("authorization", "").startswith("Bearer ")]
    assert len(with_token) >= 6  # HEADs, POSTs, PUTs, manifest: all on one token
    assert len([r for r in proxy.log if "authorization" not in r.headers]) == 1  # only the first, anonymous

    tokens.reset()
    other_cli("pull", name)
    assert [h["scopes"] for h in tokens.hits] == [[f"repository:{repo}:pull"]]
    assert json.loads(other_cli("inspect", name).stdout)[0]["Id"] == json.loads(cli("inspect", busybox).stdout)[0]["Id"]

    # cross-repository mount asks for pull access to the source repository as well
    tokens.reset()
    cli("tag", busybox, f"{proxy.host}/{repo}-b:v1")
    out = cli("push", f"{proxy.host}/{repo}-b:v1").stdout
    assert f"Mounted from {repo}" in out
    assert sorted(h["scopes"] for h in tokens.hits) == [
        [f"repository:{repo}-b:pull,push"], sorted([f"repository:{repo}-b:pull,push", f"repository:{repo}:pull"])]


def test_token_auth_without_credentials_is_refused(other_cli: Any, token_registry: Any) -> None:
    line = _error_line(other_cli("pull", f"{token_registry.host}/nobody/here:v1", check=False))
    assert "GET manifest: 401 Unauthorized: UNAUTHORIZED: authentication required" in line
    assert f"pybuild login {token_registry.host}" in line


@pytest.mark.slow
def test_identity_token_is_exchanged(other_cli: Any, cli: Any, busybox: str, token_registry: Any, repo: str,
                                     docker_config: Path, user_password: tuple[str, str]) -> None:
    tokens = token_registry.tokens
    host = token_registry.host
    user, password = user_password
    _login(cli, host, user, password)
    cli("tag", busybox, f"{host}/{repo}:v1")
    cli("push", f"{host}/{repo}:v1")
    tokens.identity_tokens["refresh-me"] = user
    (docker_config / "config.json").write_text(json.dumps({"auths": {host: {"identitytoken": "refresh-me"}}}))
    tokens.reset()
    other_cli("pull", f"{host}/{repo}:v1")
    assert [(h["grant"], h["user"]) for h in tokens.hits] == [("refresh_token", user)]


def test_token_reused_until_it_expires(token_registry: Any, monkeypatch: pytest.MonkeyPatch,
                                       user_password: tuple[str, str]) -> None:
    tokens = token_registry.tokens
    creds = _auth.Credentials(*user_password)
    with RegistryClient(token_registry.host, RegistryOptions(attempts=1), credentials=creds,
                        use_stored_credentials=False) as client:
        tokens.reset()
        for _ in range(3):
            assert client.blob_exists("some/repo", "sha256:" + "1" * 64) is None
        assert len(tokens.hits) == 1
        now = _auth.time.monotonic()
        monkeypatch.setattr(_auth.time, "monotonic", lambda: now + tokens.expires_in + 1)
        client.blob_exists("some/repo", "sha256:" + "1" * 64)
        assert len(tokens.hits) == 2
    with RegistryClient(token_registry.host, RegistryOptions(attempts=1), use_stored_credentials=False) as anon, \
            pytest.raises(RegistryAuthError, match="401 Unauthorized"):
        anon.get_manifest("some/repo", "v1")


# ---- concurrency: several blobs at once right after login ---------------------------------------


def _multi_layer_image(cli: Any, busybox: str, workdir: Path, name: str, layers: int = 6) -> str:
    """An image of ``layers`` COPY layers over busybox, each with its own content: pushing it moves
    several blobs at the same time (PYBUILD_REGISTRY_CONCURRENCY, 3 by default)."""
    ctx = workdir / f"ctx-{secrets.token_hex(4)}"
    ctx.mkdir()
    lines = [f"FROM {busybox}"]
    for i in range(layers):
        (ctx / f"f{i}").write_bytes(secrets.token_bytes(2048))
        lines.append(f"COPY f{i} /layer{i}")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    cli("build", "-q", "-t", name, str(ctx))
    return name


@pytest.mark.slow
def test_basic_auth_many_pushes_of_multi_layer_images(cli: Any, busybox: str, basic_registry: Any, repo: str,
                                                      workdir: Path, user_password: tuple[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent blob HEADs all meet the Basic challenge at once: none of their 401s means the password
    was refused, since none of them carried it."""
    monkeypatch.delenv("PYBUILD_REGISTRY_CONCURRENCY", raising=False)
    user, password = user_password
    host = basic_registry.host
    image = _multi_layer_image(cli, busybox, workdir, "multi:v1")

    cli("tag", image, f"{host}/{repo}:nologin")
    line = _error_line(cli("push", f"{host}/{repo}:nologin", check=False))
    assert "401 Unauthorized" in line and f"(check your credentials: pybuild login {host})" in line
    assert "Login Succeeded" in _login(cli, host, user, password).stdout
    for i in range(20):
        name = f"{host}/{repo}-{i % 4}:v{i}"
        cli("tag", image, name)
        result = cli("push", name, check=False)
        assert result.returncode == 0, f"push {i + 1} of 20 failed:\n{result.stderr}"
        assert f"v{i}: digest: sha256:" in result.stdout
    # a wrong password is still refused, with the same clear message, and does not hang or retry forever
    (workdir / "cfg-wrong").mkdir()
    wrong = {"auths": {host: {"auth": base64.b64encode(f"{user}:wrong".encode()).decode()}}}
    (workdir / "cfg-wrong" / "config.json").write_text(json.dumps(wrong))
    result = cli("push", f"{host}/{repo}-0:v0", check=False, env={"DOCKER_CONFIG": str(workdir / "cfg-wrong")})
    line = _error_line(result)
    assert "401 Unauthorized" in line and f"(check your credentials: pybuild login {host})" in line


@pytest.mark.slow
def test_token_auth_concurrent_blobs_share_one_token(cli: Any, busybox: str, token_registry: Any, repo: str,
                                                     workdir: Path, make_proxy: Any,
                                                     user_password: tuple[str, str]) -> None:
    """Concurrent anonymous requests each meet the token challenge; a late 401 must not throw away the
    token another thread fetched meanwhile: one token per push, and every push succeeds."""
    user, password = user_password
    tokens = token_registry.tokens
    proxy = make_proxy(token_registry.host)
    image = _multi_layer_image(cli, busybox, workdir, "multi:v1")
    _login(cli, proxy.host, user, password)
    for i in range(5):
        name = f"{proxy.host}/{repo}:v{i}"  # one repository: no cross-repository mounts, whose scopes differ
        cli("tag", image, name)
        tokens.reset()
        proxy.clear()
        result = cli("push", name, env={"PYBUILD_REGISTRY_CONCURRENCY": "6"}, check=False)
        assert result.returncode == 0, result.stderr
        assert [h["scopes"] for h in tokens.hits] == [[f"repository:{repo}:pull,push"]], tokens.hits
        heads = [r for r in proxy.log if r.method == "HEAD" and "/blobs/" in r.path]
        assert len(heads) >= 7  # six layers and the base layer, several of them at once
    result = cli("push", f"{proxy.host}/{repo}:v0", check=False,
                 env={"DOCKER_CONFIG": str(workdir / "nobody")})
    assert "401 Unauthorized" in _error_line(result)
