"""Image references: Docker's grammar ``[host[:port]/]path[:tag][@digest]``.

Names are normalised as Docker does: no domain means ``docker.io``, a
one-component name on docker.io gets ``library/``, and ``latest`` is the tag
when neither tag nor digest is given. The familiar form (``busybox:latest``)
is what users see.
"""

from __future__ import annotations

import re

from pybuild.errors import InvalidReference
from pybuild.records import record

from . import digest as _digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_HEX64_RE = re.compile(r"[a-f0-9]{64}")


@record(frozen=True)
class Reference:
    """A normalised image reference."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Full repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The short name users type: ``busybox``, ``user/app``, ``localhost:5000/app``."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path[len(OFFICIAL_PREFIX):] if self.path.startswith(OFFICIAL_PREFIX) else self.path
        return self.name

    def __str__(self) -> str:
        return self._render(self.name)

    def familiar(self) -> str:
        return self._render(self.familiar_name)

    def _render(self, name: str) -> str:
        out = name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, _digest.validate(digest))

    @property
    def key(self) -> str:
        """The string a reference is stored under: full name with tag or digest."""
        return str(self)


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise a reference, raising InvalidReference with the reason."""
    original = text
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {original!r}", "empty or surrounded by spaces")
    digest: str | None = None
    if "@" in text:
        text, _, digest_text = text.partition("@")
        if not _digest.is_valid(digest_text):
            raise InvalidReference(f"invalid reference format: {original!r}",
                                   "digest must be sha256: followed by 64 lowercase hex digits")
        digest = digest_text
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(f"invalid reference format: {original!r}", f"invalid tag {tag!r}")
    domain, path = _split_domain(text, original)
    if _HEX64_RE.fullmatch(path.rsplit("/", 1)[-1]) and domain == DEFAULT_DOMAIN and "/" not in text:
        raise InvalidReference(f"invalid reference format: {original!r}",
                               "repository name must not be a 64-character hex string")
    if not _PATH_RE.fullmatch(path):
        hint = "repository name must be lowercase" if path.lower() != path else \
            "name components are lowercase letters, digits and separators . _ __ -"
        raise InvalidReference(f"invalid reference format: {original!r}", hint)
    if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
        raise InvalidReference(f"invalid reference format: {original!r}",
                               f"repository name longer than {NAME_TOTAL_MAX} characters")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def _split_domain(name: str, original: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not _DOMAIN_RE.fullmatch(first):
            raise InvalidReference(f"invalid reference format: {original!r}", f"invalid registry host {first!r}")
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def is_image_id_prefix(text: str) -> bool:
    """Whether ``text`` can name an image by (a prefix of) its ID, as ``docker rmi 3f2a`` does."""
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    return 4 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)
