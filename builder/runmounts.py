"""``RUN --mount=...`` specifications, parsed as BuildKit parses them.

Types: ``bind`` (default; from the context or a stage, read-only unless
``rw``), ``cache`` (a directory kept across builds under the store, keyed by
``id``, default the target), ``tmpfs`` and ``secret`` (a file given with
``--secret id=ID,src=FILE`` on the command line, at ``/run/secrets/ID`` by
default) and ``ssh`` (an agent given with ``--ssh``, forwarded at
``/run/buildkit/ssh_agent.N`` by default: see sshagent.py).
"""

from __future__ import annotations

import csv
import os
import posixpath

from pybuild.errors import BuildError
from pybuild.records import fields, record

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")


@record(frozen=True)
class MountSpec:
    type: str
    target: str
    source: str = ""
    source_from: str | None = None  # from=: a stage or image
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None  # tmpfs bytes
    required: bool = False
    env: str | None = None  # secret as an environment variable

    def canonical(self) -> str:
        """The mount as it enters a cache key: every field (a new field cannot be forgotten here), but
        not what it points at (the caller adds the content of a bind source, the chain of ``from=``)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                parts.append(f"{f.name}={str(value).lower()}")
            elif value not in (None, ""):
                parts.append(f"{f.name}={value}")
        return ",".join(parts)


def _int(value: str, key: str, base: int = 10) -> int:
    try:
        return int(value, base)
    except ValueError:
        raise ValueError(f"invalid value {value!r} for {key}") from None


def _size(value: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = value.strip().lower().rstrip("b")
    mult = 1
    if text and text[-1] in units:
        mult = units[text[-1]]
        text = text[:-1]
    return _int(text, "size") * mult


_KEYS = ("type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode", "uid", "gid",
         "src", "dst", "destination", "ro", "rw", "readwrite", "env")


def _parse_bool(value: str, key: str) -> bool:
    """Go's strconv.ParseBool, as BuildKit reads ro=, rw=, required=."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def parse_mount(text: str, workdir: str = "/") -> MountSpec:
    """One ``--mount`` value (variables already expanded); raises ValueError naming what is wrong.

    The rules are BuildKit's: unknown keys, keys that do not belong to the
    mount's type (``size`` off tmpfs, ``mode``/``uid``/``gid`` on bind or
    tmpfs, ``required`` off secrets, ``sharing`` off caches) and bare words
    other than ``ro``/``rw``/``required`` are errors, never ignored. A
    relative ``target`` is joined to ``workdir`` (the step's WORKDIR); a
    cache mount's default ``id`` is the target as written.
    """
    fields = next(csv.reader([text]), [])
    kind = "bind"
    target = ""
    kwargs: dict[str, object] = {}
    readonly: bool | None = None
    required: bool | None = None
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                required = True
            else:
                raise ValueError(f"invalid field {item!r} must be a key=value pair")
            continue
        if key == "type":
            kind = value.lower()
            if kind not in MOUNT_TYPES:
                raise ValueError(f"unsupported mount type {value!r} (use bind, cache, tmpfs, secret or ssh)")
        elif key == "from":
            kwargs["source_from"] = value or None
        elif key in ("source", "src"):
            kwargs["source"] = value
        elif key in ("target", "dst", "destination"):
            target = value
        elif key in ("readonly", "ro"):
            readonly = _parse_bool(value, key)
        elif key in ("readwrite", "rw"):
            readonly = not _parse_bool(value, key)
        elif key == "required":
            required = _parse_bool(value, key)
        elif key == "size":
            kwargs["size"] = _size(value)
        elif key == "id":
            kwargs["id"] = value
        elif key == "sharing":
            if value.lower() not in _SHARING:
                raise ValueError(f"unsupported sharing value {value!r} (use shared, private or locked)")
            kwargs["sharing"] = value.lower()
        elif key == "mode":
            kwargs["mode"] = _int(value, "mode", 8)
        elif key in ("uid", "gid"):
            kwargs[key] = _int(value, key)
        elif key == "env":
            kwargs["env"] = value or None
        else:
            raise ValueError(f"unexpected key {key!r} in {item!r}" + _suggestion(key))
    # what belongs to which type (BuildKit checks after reading every field: type= may come last)
    if required is not None and kind not in ("secret", "ssh"):
        raise ValueError(f"unexpected key 'required' for mount type {kind!r}")
    if "size" in kwargs and kind != "tmpfs":
        raise ValueError(f"unexpected key 'size' for mount type {kind!r}")
    if kind not in ("secret", "cache", "ssh"):
        for name in ("mode", "uid", "gid"):
            if name in kwargs:
                raise ValueError(f"{name} not allowed for {kind!r} type mounts")
    if "sharing" in kwargs and kind != "cache":
        raise ValueError(f"invalid cache sharing set for {kind} mount")
    if "env" in kwargs and kind != "secret":
        raise ValueError(f"unexpected key 'env' for mount type {kind!r}")
    if kind == "secret":
        if kwargs.get("source_from"):
            raise ValueError("secret mount should not have a from")
        if not kwargs.get("source") and not target and not kwargs.get("id"):
            raise ValueError("invalid secret mount. one of source, target required")
        if kwargs.get("source") and kwargs.get("id"):
            raise ValueError("both source and id can't be set")
        if not kwargs.get("id"):
            kwargs["id"] = kwargs.get("source") or posixpath.basename(target)
        kwargs.pop("source", None)
        if not target and not kwargs.get("env"):
            target = f"/run/secrets/{kwargs['id']}"
        readonly = True
    if kind == "ssh":
        if kwargs.get("source"):
            raise ValueError("ssh does not support source")
        if kwargs.get("source_from"):
            raise ValueError("an ssh mount has no source: from= does not apply")
        kwargs["id"] = kwargs.get("id") or "default"
        readonly = True
    if kind == "tmpfs" and kwargs.get("source_from"):
        raise ValueError("a tmpfs mount has no source: from= does not apply")
    if readonly is None:
        readonly = kind == "bind"
    kwargs["required"] = bool(required)
    if not target and not (kind == "secret" and kwargs.get("env")) and kind != "ssh":
        raise ValueError(f"a {kind} mount needs target=")
    if kind == "cache" and not kwargs.get("id"):
        kwargs["id"] = posixpath.normpath(target)
    if target:
        target = posixpath.normpath(posixpath.join("/", workdir or "/", target))
        if target == "/":
            raise ValueError(f"invalid mount target {target!r}: a mount cannot cover the root filesystem")
    return MountSpec(type=kind, target=target, readonly=readonly, **kwargs)  # type: ignore[arg-type]


def _suggestion(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, _KEYS, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def raw_from(text: str) -> str | None:
    """The ``from=`` value of a ``--mount`` as written (before any expansion), or None.

    BuildKit does not expand ``from=`` at all ("define alias stage
    instead"): a ``$`` in it (but at its end) is an error, raised here as
    ValueError.
    """
    for item in next(csv.reader([text]), []):
        name, eq, value = item.partition("=")
        if eq and name.strip().lower() == "from":
            index = value.find("$")
            if index != -1 and index != len(value) - 1:
                raise ValueError("'from' doesn't support variable expansion, define alias stage instead")
            return value
    return None


def parse_mounts(texts: list[str], workdir: str = "/") -> list[MountSpec]:
    """Every ``--mount`` of a step; an ssh mount without target gets BuildKit's ``/run/buildkit/ssh_agent.N``
    (N: its place among the step's ssh mounts)."""
    from pybuild.records import replace

    out = []
    ssh = 0
    for text in texts:
        try:
            spec = parse_mount(text, workdir)
        except ValueError as exc:
            raise BuildError(f"invalid RUN --mount={text}: {exc}") from None
        if spec.type == "ssh":
            if not spec.target:
                spec = replace(spec, target=f"/run/buildkit/ssh_agent.{ssh}")
            ssh += 1
        out.append(spec)
    return out


@record(frozen=True)
class SecretSource:
    """Where a build secret comes from: a file (``src=``) or an environment variable (``env=``)."""

    id: str
    path: str | None = None
    env: str | None = None

    def read(self) -> bytes:
        if self.path is not None:
            try:
                with open(self.path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise BuildError(f"secret {self.id}: cannot read {self.path}: {exc.strerror}") from None
        value = os.environ.get(self.env or self.id)
        if value is None:
            raise BuildError(f"secret {self.id}: environment variable {self.env or self.id} is not set")
        return value.encode()
