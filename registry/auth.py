"""Registry authentication: Docker's credential configuration, challenges, tokens.

Credentials come from Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``,
default ``~/.docker/config.json``): a credential helper named for the host
in ``credHelpers``, else the ``credsStore`` helper, else the ``auths``
entry (base64 ``user:password`` in ``auth``, or an ``identitytoken``).
Helpers are run as ``docker-credential-<name> get|store|erase`` with the
server URL (or a JSON document) on stdin, as the Docker CLI does.

Requests start anonymous. A ``401`` carries ``WWW-Authenticate``: for
``Basic`` the credentials are sent to the registry from then on; for
``Bearer realm=...,service=...,scope=...`` a token is fetched from the
realm for the scopes the request needs (credentials sent there as Basic,
or an identity token exchanged with an OAuth2 refresh grant) and reused
until its ``expires_in`` (default 60 s) runs out. Credentials never go to an
``http://`` realm of a registry reached over HTTPS (loopback and insecure
realm hosts aside): that is an error, not a silent downgrade.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import requests

from pybuild.errors import RegistryError, UsageError
from pybuild.records import record

from .errors import RegistryAuthError

if TYPE_CHECKING:
    from .transport import Transport

HUB_SERVER = "https://index.docker.io/v1/"
HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
TOKEN_USERNAME = "<token>"  # a helper's Username when Secret is an identity token
DEFAULT_TOKEN_LIFETIME = 60
TOKEN_MARGIN = 5  # seconds before expiry a token is no longer used
HELPER_TIMEOUT = 60
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# =========================================================================== credentials


@record(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never print secrets
        token = "***" if self.identity_token else ""
        return f"Credentials(username={self.username!r}, password=***, identity_token={token!r})"


def config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def config_path() -> Path:
    return config_dir() / "config.json"


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        return {}
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path} is not a JSON object")
    return doc


def is_hub(domain: str) -> bool:
    return normalise_server(domain) in HUB_ALIASES or normalise_server(domain) == normalise_server(HUB_SERVER)


def server_key(domain: str) -> str:
    """The key Docker files a registry's credentials under: the v1 index URL for Docker Hub, else host[:port]."""
    return HUB_SERVER if is_hub(domain) else normalise_server(domain)


def normalise_server(text: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000`` (how Docker matches ``auths`` keys)."""
    text = text.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    return text.split("/", 1)[0].lower()


def _matching_keys(mapping: dict[str, Any], domain: str) -> list[str]:
    key = server_key(domain)
    if key in mapping:
        return [key]
    want = {normalise_server(key)}
    if is_hub(domain):
        want.update(HUB_ALIASES)
    return [k for k in mapping if isinstance(k, str) and normalise_server(k) in want]


def _helper_for(config: dict[str, Any], domain: str) -> str | None:
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key in _matching_keys(helpers, domain):
            if isinstance(helpers[key], str) and helpers[key]:
                return str(helpers[key])
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def _run_helper(name: str, action: str, payload: str) -> subprocess.CompletedProcess[bytes]:
    if not _HELPER_NAME.fullmatch(name):
        raise RegistryError(f"invalid credential helper name {name!r} in {config_path()}")
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise RegistryAuthError(f"credential helper {program} not found in PATH",
                                f"install it or remove it from {config_path()}")
    try:
        return subprocess.run([path, action], input=payload.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryAuthError(f"credential helper {program} {action} failed: {exc}") from None


def _helper_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stdout or b"").decode(errors="replace").strip() or \
        (proc.stderr or b"").decode(errors="replace").strip()
    return text.splitlines()[0][:200] if text else f"exit status {proc.returncode}"


def helper_get(name: str, server: str) -> Credentials | None:
    proc = _run_helper(name, "get", server)
    if proc.returncode != 0:
        if "credentials not found" in _helper_error(proc).lower():
            return None
        raise RegistryAuthError(f"credential helper docker-credential-{name} get: {_helper_error(proc)}")
    try:
        doc = json.loads(proc.stdout)
        username, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise RegistryAuthError(f"credential helper docker-credential-{name} get: output is not JSON") from None
    if not secret:
        return None
    if username == TOKEN_USERNAME:
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


def helper_store(name: str, server: str, creds: Credentials) -> None:
    username = TOKEN_USERNAME if creds.identity_token else creds.username
    secret = creds.identity_token or creds.password
    proc = _run_helper(name, "store", json.dumps({"ServerURL": server, "Username": username, "Secret": secret}))
    if proc.returncode != 0:
        raise RegistryAuthError(f"credential helper docker-credential-{name} store: {_helper_error(proc)}")


def helper_erase(name: str, server: str) -> bool:
    proc = _run_helper(name, "erase", server)
    if proc.returncode != 0:
        if "credentials not found" in _helper_error(proc).lower():
            return False
        raise RegistryAuthError(f"credential helper docker-credential-{name} erase: {_helper_error(proc)}")
    return True


def _decode_auths_entry(entry: Any, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken")
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            raw = base64.b64decode(auth + "=" * (-len(auth) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"invalid auth entry for {where} in {config_path()}",
                                "expected base64 of user:password") from None
        username, sep, password = raw.partition(":")
        if not sep:
            raise RegistryError(f"invalid auth entry for {where} in {config_path()}",
                                "expected base64 of user:password")
    if isinstance(token, str) and token:
        return Credentials(username, password, token)
    if username or password:
        return Credentials(username, password)
    return None


def resolve_credentials(domain: str) -> Credentials | None:
    """The stored credentials for a registry, as the Docker CLI finds them; None if there are none."""
    config = load_config()
    helper = _helper_for(config, domain)
    if helper is not None:
        creds = helper_get(helper, server_key(domain))
        if creds is not None:
            return creds
    auths = config.get("auths")
    if isinstance(auths, dict):
        for key in _matching_keys(auths, domain):
            creds = _decode_auths_entry(auths[key], key)
            if creds is not None:
                return creds
    return None


def _write_config(doc: dict[str, Any]) -> Path:
    from pybuild.linux.fsutil import atomic_write

    path = config_path()
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(target, (json.dumps(doc, indent="\t") + "\n").encode(), 0o600)
    except OSError as exc:
        raise RegistryError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def store_credentials(domain: str, creds: Credentials) -> str:
    """Save credentials where Docker would: the configured helper, else ``auths``. Returns where."""
    config = load_config()
    key = server_key(domain)
    helper = _helper_for(config, domain)
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    for old in _matching_keys(auths, domain):
        del auths[old]
    if helper is not None:
        helper_store(helper, key, creds)
        auths[key] = {}
        config["auths"] = auths
        _write_config(config)
        return f"credential helper docker-credential-{helper}"
    entry: dict[str, str] = {}
    if creds.identity_token:
        entry["identitytoken"] = creds.identity_token
    else:
        entry["auth"] = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[key] = entry
    config["auths"] = auths
    return str(_write_config(config))


def erase_credentials(domain: str) -> bool:
    """Forget a registry's credentials (helper and ``auths``); True if there were any."""
    config = load_config()
    found = False
    helper = _helper_for(config, domain)
    if helper is not None:
        found = helper_erase(helper, server_key(domain)) or found
    auths = config.get("auths")
    if isinstance(auths, dict):
        keys = _matching_keys(auths, domain)
        for key in keys:
            del auths[key]
        if keys:
            found = True
            _write_config(config)
    return found


# =========================================================================== challenges

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^,\s]*))\s*")


@record(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value (several may be joined by commas)."""
    out: list[Challenge] = []
    pos, n = 0, len(header)
    current: Challenge | None = None
    while pos < n:
        while pos < n and header[pos] in " ,\t":
            pos += 1
        if pos >= n:
            break
        m = _PARAM.match(header, pos)
        if m is not None and current is not None:
            value = m.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else (m.group(3) or "")
            current.params[m.group(1).lower()] = value
            pos = m.end()
            continue
        tm = re.compile(_TOKEN).match(header, pos)
        if tm is None:
            break
        current = Challenge(tm.group(0).lower(), {})
        out.append(current)
        pos = tm.end()
        # token68 (Basic/Negotiate blobs) are not used by registries: skip them
        m68 = re.compile(r"\s+[A-Za-z0-9\-._~+/]+=*\s*(?=,|$)").match(header, pos)
        if m68 is not None and "=" not in m68.group(0).strip().rstrip("="):
            pos = m68.end()
    return out


def merge_scopes(scopes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Scopes with the actions on one resource joined: ``repository:a:pull`` + ``repository:a:pull,push``
    -> ``repository:a:pull,push`` (so a challenge asking for less than we hold adds nothing)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, sep, actions = rest.rpartition(":")
        if not sep:
            name, actions = rest, ""
        merged.setdefault((kind, name), set()).update(a for a in actions.split(",") if a)
    return tuple(sorted(f"{kind}:{name}:{','.join(sorted(actions))}" for (kind, name), actions in merged.items()))


# =========================================================================== the authenticator


@record
class _Token:
    value: str
    expires: float


class Authenticator:
    """Remembers how a registry wants to be authenticated and holds its tokens. Thread-safe."""

    def __init__(self, domain: str, credentials: Credentials | None = None, *, use_stored: bool = True) -> None:
        self.domain = domain
        self._explicit = credentials
        self._use_stored = use_stored
        self._resolved = False
        self._creds: Credentials | None = None
        self._challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], _Token] = {}
        self._lock = threading.RLock()
        self.token_fetches = 0

    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._resolved:
                self._creds = self._explicit
                if self._creds is None and self._use_stored:
                    self._creds = resolve_credentials(self.domain)
                self._resolved = True
            return self._creds

    @property
    def scheme(self) -> str | None:
        return self._challenge.scheme if self._challenge else None

    def authorization(self, scopes: tuple[str, ...], transport: Transport) -> str | None:
        """The Authorization header value for a request needing ``scopes`` (None: anonymous)."""
        with self._lock:
            challenge = self._challenge
            if challenge is None:
                return None
            if challenge.scheme == "basic":
                creds = self.credentials()
                return creds.basic() if creds is not None and not creds.identity_token else None
            key = frozenset(scopes)
            token = self._tokens.get(key)
            if token is None or time.monotonic() >= token.expires:
                token = self._fetch_token(challenge, key, transport)
                self._tokens[key] = token
            return f"Bearer {token.value}" if token.value else None

    def handle_challenge(self, resp: requests.Response, scopes: tuple[str, ...],
                         transport: Transport, sent: str | None = None) -> tuple[str, ...] | None:
        """Learn from a 401; return the scopes to retry with, or None if retrying cannot help.

        ``sent`` is the Authorization header the refused request carried. Only
        that tells whether *these* credentials were refused: requests run
        concurrently, so another thread may have learnt the challenge (or
        fetched a token) after this request left and before its 401 came back.
        """
        challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or \
            next((c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            return None
        with self._lock:
            self._challenge = chosen
            if chosen.scheme == "basic":
                creds = self.credentials()
                if creds is None or creds.identity_token:
                    return None  # nothing to answer a Basic challenge with
                if sent is not None and sent == creds.basic():
                    return None  # exactly these credentials were refused
                return scopes  # the request went out before the challenge was known: resend with them
            extra = chosen.params.get("scope", "")
            new = merge_scopes((*scopes, *(s for s in extra.split(" ") if s)))
            # The token this request carried was refused (expired, revoked, too narrow): drop it, but
            # only if it is still the one held; a token another thread fetched meanwhile stays.
            for key in {frozenset(new), frozenset(scopes)}:
                held = self._tokens.get(key)
                if held is not None and sent == f"Bearer {held.value}":
                    del self._tokens[key]
            return new

    def _fetch_token(self, challenge: Challenge, scopes: frozenset[str], transport: Transport) -> _Token:
        realm = challenge.realm
        if not realm.startswith(("http://", "https://")):
            raise RegistryAuthError(f"the registry {self.domain} asks for a token from an invalid realm {realm!r}")
        creds = self.credentials()
        if creds is not None and not transport.may_send_credentials(realm):
            realm_host = urlsplit(realm).netloc.rpartition("@")[2]
            raise RegistryAuthError(
                f"the registry {self.domain} is reached over HTTPS but asks for a token from {realm} over plain "
                "HTTP: credentials are never sent there in clear text",
                f"the token service must use https, or list {realm_host} in PYBUILD_INSECURE_REGISTRIES")
        service = challenge.params.get("service", "")
        self.token_fetches += 1
        headers = {"Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": service, "client_id": "pybuild", "access_type": "offline"}
            if scopes:
                form["scope"] = " ".join(sorted(scopes))
            resp = transport.request("POST", realm, op="token request", use_auth=False, headers=headers,
                                     body=lambda: form, ok=(200,))
        else:
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params.extend(("scope", s) for s in sorted(scopes))
            if creds is not None:
                headers["Authorization"] = creds.basic()
                params.append(("account", creds.username))
            url = realm + ("&" if "?" in realm else "?") + urlencode(params) if params else realm
            resp = transport.request("GET", url, op="token request", use_auth=False, headers=headers, ok=(200,))
        try:
            doc = resp.json()
        except (ValueError, RecursionError):
            raise RegistryAuthError(f"the token service of {self.domain} answered with something other than JSON"
                                    ) from None
        finally:
            resp.close()
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise RegistryAuthError(f"the token service of {self.domain} returned no token")
        lifetime = DEFAULT_TOKEN_LIFETIME
        with contextlib.suppress(TypeError, ValueError):
            if doc.get("expires_in"):
                lifetime = max(int(doc["expires_in"]), 1)
        margin = min(TOKEN_MARGIN, lifetime / 10)
        return _Token(value, time.monotonic() + lifetime - margin)


def parse_login_server(text: str | None) -> str:
    """The registry a ``login``/``logout`` argument names: ``docker.io`` when empty."""
    if not text:
        return "docker.io"
    server = normalise_server(text)
    if not server or any(c.isspace() for c in server):
        raise UsageError(f"invalid registry {text!r}")
    if is_hub(server):
        return "docker.io"
    return server
