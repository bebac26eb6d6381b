"""HTTP to one registry: scheme choice, authentication hook, redirects without credentials, retries.

One :class:`Transport` talks to one registry host (``docker.io`` is served
from ``registry-1.docker.io``). It owns a ``requests`` session whose
automatic redirect following is never used: redirects are followed here,
and the ``Authorization`` header is only ever attached to requests whose
origin (scheme, host, port) is the registry's own, so a blob GET redirected
to a storage service never carries the registry credentials.

Scheme: plain HTTP for loopback hosts (``localhost``, 127.0.0.0/8, ::1);
for hosts marked insecure (``--insecure``, ``PYBUILD_INSECURE_REGISTRIES``)
HTTPS without certificate verification is tried first and HTTP is used if
that fails, as Docker does; HTTPS with the system CA store otherwise. A
registry reached over HTTPS never gets credentials sent in clear text to
its token realm (:meth:`Transport.may_send_credentials`).

Retries: connection errors, timeouts, 5xx and 429 are retried with
exponential backoff and full jitter (429/503 ``Retry-After`` is honoured,
seconds or an HTTP date); after the last attempt a :class:`RegistryError`
names the operation, the status and the number of attempts.
"""

from __future__ import annotations

import email.utils
import errno
import ipaddress
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from pybuild.errors import RegistryError, UsageError
from pybuild.records import field, record

from .errors import RegistryAuthError, RegistryConnectionError, RegistryHTTPError, error_from_response

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = "pybuild/0.1"
REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
MAX_RETRY_AFTER = 120.0
ENV_INSECURE = "PYBUILD_INSECURE_REGISTRIES"

# A body is given as a factory so that every attempt (and a resend after a 401) gets a fresh stream.
BodyFactory = Callable[[], Any]


def _env_number(name: str, default: float, kind: type = float) -> Any:
    value = os.environ.get(name)
    if not value:
        return kind(default)
    try:
        number = kind(value)
    except ValueError:
        raise UsageError(f"invalid {name} {value!r}", "expected a number") from None
    if number < 0:
        raise UsageError(f"invalid {name} {value!r}", "expected a number >= 0")
    return number


@record(frozen=True)
class RegistryOptions:
    """Tunables of registry traffic. ``from_env`` reads ``PYBUILD_REGISTRY_*`` overrides."""

    attempts: int = 5
    base_delay: float = 0.5  # seconds; attempt n waits up to base_delay * 2**(n-1), capped
    max_delay: float = 20.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    concurrency: int = 3  # blobs moved at the same time
    chunk_size: int = 16 << 20  # PATCH size of a chunked upload
    chunk_threshold: int = 16 << 20  # blobs larger than this are uploaded in chunks
    insecure: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, insecure: Iterable[str] = ()) -> RegistryOptions:
        hosts = {h.strip() for h in os.environ.get(ENV_INSECURE, "").split(",") if h.strip()}
        hosts.update(insecure)
        return cls(
            attempts=max(1, _env_number("PYBUILD_REGISTRY_ATTEMPTS", cls.attempts, int)),
            base_delay=_env_number("PYBUILD_REGISTRY_RETRY_DELAY", cls.base_delay),
            max_delay=_env_number("PYBUILD_REGISTRY_MAX_DELAY", cls.max_delay),
            connect_timeout=_env_number("PYBUILD_REGISTRY_TIMEOUT", cls.connect_timeout),
            read_timeout=_env_number("PYBUILD_REGISTRY_TIMEOUT", cls.read_timeout),
            concurrency=max(1, _env_number("PYBUILD_REGISTRY_CONCURRENCY", cls.concurrency, int)),
            chunk_size=max(1, _env_number("PYBUILD_PUSH_CHUNK_SIZE", cls.chunk_size, int)),
            chunk_threshold=_env_number("PYBUILD_PUSH_CHUNK_THRESHOLD", cls.chunk_threshold, int),
            insecure=frozenset(_normalise_host(h) for h in hosts),
        )

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based): full jitter over an exponential cap."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)


def _normalise_host(host: str) -> str:
    host = host.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    return host.split("/", 1)[0]


def api_host(domain: str) -> str:
    """Where a reference's domain is served: docker.io lives at registry-1.docker.io."""
    return DOCKER_HUB_API if domain in (DOCKER_HUB, "index.docker.io") else domain


def host_name(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` -> the bare host name or address."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = host_name(host).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def describe_exception(exc: BaseException) -> str:
    """A short human reason for a requests/urllib3 failure: 'connection refused', 'timed out'..."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if any(cur is seen for seen in chain):
            continue
        chain.append(cur)
        todo.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
        for nxt in (cur.__cause__, cur.__context__, getattr(cur, "reason", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    text = " ".join(str(c) for c in chain)
    # Most specific first: urllib3's NewConnectionError is (for history's sake) a timeout error too.
    for cur in chain:
        if isinstance(cur, requests.exceptions.SSLError | urllib3.exceptions.SSLError):
            return f"TLS error ({_first_line(cur)})"
    if any(isinstance(c, ConnectionRefusedError) or getattr(c, "errno", None) == errno.ECONNREFUSED
           for c in chain) or "Connection refused" in text:
        return "connection refused"
    if any(isinstance(c, ConnectionResetError) for c in chain) or "Connection reset" in text:
        return "connection reset by peer"
    if any(isinstance(c, urllib3.exceptions.NameResolutionError) for c in chain) \
            or "Name or service not known" in text:
        return "cannot resolve the host name"
    if "IncompleteRead" in text or "incomplete" in text.lower():
        return "connection closed before the whole response arrived"
    if any(isinstance(c, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError) for c in chain):
        return "timed out"
    return _first_line(exc) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class Interrupted(Exception):
    """Raised inside a transfer when the operation it belongs to was cancelled."""


@record
class Origin:
    scheme: str
    host: str  # host[:port] as in URLs

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"


class Transport:
    """HTTP to one registry with auth, manual redirects and retries. Thread-safe."""

    def __init__(self, domain: str, options: RegistryOptions | None = None,
                 authenticator: Any = None) -> None:
        self.domain = domain
        self.host = api_host(domain)
        self.options = options or RegistryOptions.from_env()
        self.auth = authenticator  # auth.Authenticator (typed loosely to keep the import graph acyclic)
        self.session = requests.Session()
        self.session.trust_env = False  # no .netrc credentials; proxies are applied explicitly below
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(4, self.options.concurrency * 2),
                                                max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        if self.insecure:
            # Docker's insecure registries: TLS without verification is what the user asked for, quietly.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self._origin: Origin | None = None
        self._lock = threading.Lock()
        self.cancelled = threading.Event()

    def close(self) -> None:
        self.session.close()

    # ---- where the registry is ---------------------------------------------

    @property
    def insecure(self) -> bool:
        return self.host in self.options.insecure or self.domain in self.options.insecure

    def origin(self) -> Origin:
        """The registry's scheme and host, probing HTTPS then HTTP for an insecure registry once."""
        with self._lock:
            if self._origin is None:
                self._origin = self._choose_origin()
            return self._origin

    def _choose_origin(self) -> Origin:
        if is_loopback(self.host):
            return Origin("http", self.host)
        if not self.insecure:
            return Origin("https", self.host)
        try:
            resp = self.session.get(f"https://{self.host}/v2/", verify=False, allow_redirects=False,
                                    timeout=(self.options.connect_timeout, self.options.read_timeout),
                                    proxies=self._proxies(f"https://{self.host}/v2/"))
            resp.close()
            return Origin("https", self.host)
        except requests.RequestException:
            return Origin("http", self.host)

    def url(self, path: str) -> str:
        return self.origin().base + path

    def is_registry_url(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = self.origin()
        return parts.scheme == origin.scheme and parts.netloc.lower() == origin.host.lower()

    def may_send_credentials(self, url: str) -> bool:
        """Whether credentials (a token request's Basic header or refresh token) may go to ``url``.

        Not over plain HTTP once the registry itself is spoken to over HTTPS:
        a realm ``http://other-host/token`` would put them on the wire in clear
        text. Plain HTTP stays allowed to the hosts pybuild speaks it to as
        registries (loopback, ``PYBUILD_INSECURE_REGISTRIES``/``--insecure``)
        and whenever the registry is itself reached over HTTP.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "http" or self.origin().scheme != "https":
            return True
        host = parts.netloc.rpartition("@")[2].lower()
        insecure = {h.lower() for h in self.options.insecure}
        return is_loopback(host) or host in insecure or host_name(host) in insecure

    def _proxies(self, url: str) -> dict[str, str]:
        return dict(requests.utils.get_environ_proxies(url))

    # ---- requests -----------------------------------------------------------

    def request(self, method: str, url: str, *, op: str, scopes: tuple[str, ...] = (),
                headers: Mapping[str, str] | None = None, body: BodyFactory | None = None,
                stream: bool = False, retry: bool = True, follow_redirects: bool = True,
                ok: tuple[int, ...] = (200,), use_auth: bool = True) -> requests.Response:
        """Send a request, handling auth, redirects and retries; return a response whose status is in ``ok``.

        ``url`` is absolute or a path on the registry. A status outside ``ok``
        raises the registry's error (its error body shown); retryable failures
        are retried ``options.attempts`` times unless ``retry`` is false.
        """
        if url.startswith("/"):
            url = self.url(url)
        attempts = self.options.attempts if retry else 1
        attempt = 0
        auth_tries = 0
        scopes_now = tuple(sorted(scopes))
        while True:
            if self.cancelled.is_set():
                raise Interrupted()
            attempt += 1
            try:
                resp = self._send_following(method, url, scopes_now if use_auth else None, headers, body, stream,
                                            follow_redirects)
            except requests.exceptions.SSLError as exc:
                hint = None if self.insecure else f"use --insecure {self.host} for a registry without valid TLS"
                raise RegistryError(f"{op}: TLS error talking to {self.host}: {describe_exception(exc)}",
                                    hint) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if attempt >= attempts:
                    suffix = f" after {attempt} attempts" if attempt > 1 else ""
                    raise RegistryConnectionError(
                        f"{op}: cannot reach {self.host}: {describe_exception(exc)}{suffix}") from None
                self._sleep(self.options.delay(attempt))
                continue
            status = resp.status_code
            if status == 401 and use_auth and self.auth is not None and self.is_registry_url(resp.url or url) \
                    and auth_tries < 2:
                sent = resp.request.headers.get("Authorization") if resp.request is not None else None
                new_scopes = self.auth.handle_challenge(resp, scopes_now, self, sent)
                if new_scopes is not None:
                    auth_tries += 1
                    attempt -= 1  # an authentication round is not a failed attempt
                    scopes_now = new_scopes
                    resp.close()
                    continue
            if status in ok:
                return resp
            if (status >= 500 or status == 429) and attempt < attempts:
                wait = self.options.delay(attempt)
                if status in (429, 503):
                    after = parse_retry_after(resp.headers.get("Retry-After"))
                    if after is not None:
                        wait = min(max(wait, after), MAX_RETRY_AFTER)
                resp.close()
                self._sleep(wait)
                continue
            err = error_from_response(resp, op, attempt, login_host=self.domain)
            resp.close()
            raise err

    def _send_following(self, method: str, url: str, scopes: tuple[str, ...] | None,
                        headers: Mapping[str, str] | None,
                        body: BodyFactory | None, stream: bool, follow: bool) -> requests.Response:
        hops = 0
        while True:
            hdrs = dict(headers or {})
            if scopes is not None and self.auth is not None and self.is_registry_url(url):
                value = self.auth.authorization(scopes, self)
                if value:
                    hdrs["Authorization"] = value
            data = body() if body is not None else None
            resp = self.session.request(method, url, headers=hdrs, data=data, stream=stream,
                                        allow_redirects=False, verify=not self.insecure,
                                        timeout=(self.options.connect_timeout, self.options.read_timeout),
                                        proxies=self._proxies(url))
            if not follow or resp.status_code not in REDIRECT_CODES or "Location" not in resp.headers:
                return resp
            hops += 1
            if hops > MAX_REDIRECTS:
                resp.close()
                raise RegistryError(f"{method} {url}: too many redirects")
            target = urljoin(url, resp.headers["Location"])
            resp.close()
            if urlsplit(target).scheme not in ("http", "https"):
                raise RegistryError(f"{method} {url}: redirect to an unsupported URL {target!r}")
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method not in ("GET", "HEAD")):
                method, body = "GET", None
            if _origin_of(target) != _origin_of(url) and headers:
                # Explicit credentials (a token request's Basic header) never follow a redirect elsewhere.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target

    def _sleep(self, seconds: float) -> None:
        if self.cancelled.wait(seconds):
            raise Interrupted()


__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "Interrupted",
    "RegistryAuthError",
    "RegistryHTTPError",
    "RegistryOptions",
    "Transport",
    "api_host",
    "describe_exception",
    "is_loopback",
    "parse_retry_after",
]
