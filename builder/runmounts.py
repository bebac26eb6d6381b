"""``RUN --mount=...`` specifications, parsed as BuildKit parses them.

Types: ``bind`` (default; from the context or a stage, read-only unless
``rw``), ``cache`` (a directory kept across builds under the store, keyed by
``id``, default the target), ``tmpfs`` and ``secret`` (a file given with
``--secret id=ID,src=FILE`` on the command line, at ``/run/secrets/ID`` by
default). ``ssh`` is refused with a clear message.
"""

from __future__ import annotations

import csv
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


def _bool(value: str | None, key: str) -> bool:
    if value is None or value.lower() in ("", "true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise ValueError(f"invalid value {value!r} for {key}")


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


def parse_mount(text: str, workdir: str = "/") -> MountSpec:
    """One ``--mount`` value; raises ValueError with a message naming what is wrong.

    A relative ``target`` is joined to ``workdir`` (the step's WORKDIR), as
    BuildKit does; a cache mount's default ``id`` is the target as written.
    """
    fields = next(csv.reader([text]), [])
    values: dict[str, str | None] = {}
    for item in fields:
        name, eq, text_value = item.partition("=")
        name = name.strip().lower()
        if name:
            values[name] = text_value if eq else None
    kind = (values.pop("type", None) or "bind").lower()
    if kind not in MOUNT_TYPES:
        raise ValueError(f"unsupported mount type {kind!r} (use bind, cache, tmpfs or secret)")
    if kind == "ssh":
        raise ValueError("RUN --mount=type=ssh is not supported by pybuild")
    target: str = values.pop("target", None) or values.pop("dst", None) or values.pop("destination", None) or ""
    kwargs: dict[str, object] = {}
    readonly = kind == "bind"
    for key, value in values.items():
        if key in ("source", "src"):
            kwargs["source"] = value or ""
        elif key == "from":
            kwargs["source_from"] = value or None
        elif key in ("ro", "readonly"):
            readonly = _bool(value, key)
        elif key in ("rw", "readwrite"):
            readonly = not _bool(value, key)
        elif key == "id":
            kwargs["id"] = value or ""
        elif key == "sharing":
            if value not in _SHARING:
                raise ValueError(f"invalid sharing {value!r} (use shared, private or locked)")
            kwargs["sharing"] = value
        elif key == "mode":
            kwargs["mode"] = _int(value or "", "mode", 8)
        elif key in ("uid", "gid"):
            kwargs[key] = _int(value or "", key)
        elif key == "size" and kind == "tmpfs":
            kwargs["size"] = _size(value or "")
        elif key == "required":
            kwargs["required"] = _bool(value, key)
        elif key == "env" and kind == "secret":
            kwargs["env"] = value or None
        elif key in ("bind-propagation", "bind-nonrecursive", "z", "Z", "relabel"):
            continue
        else:
            raise ValueError(f"unknown key {key!r} for a {kind} mount")
    if kind == "secret":
        if not kwargs.get("id") and not kwargs.get("source"):
            if target:
                kwargs["id"] = posixpath.basename(target)
            else:
                raise ValueError("a secret mount needs id= or target=")
        if not kwargs.get("id"):
            kwargs["id"] = posixpath.basename(str(kwargs["source"]))
        if not target and not kwargs.get("env"):
            target = f"/run/secrets/{kwargs['id']}"
        readonly = True
    if not target and not (kind == "secret" and kwargs.get("env")):
        raise ValueError(f"a {kind} mount needs target=")
    if kind == "cache" and not kwargs.get("id"):
        kwargs["id"] = posixpath.normpath(target)
    if target:
        target = posixpath.normpath(posixpath.join("/", workdir or "/", target))
        if target == "/":
            raise ValueError(f"invalid mount target {target!r}: a mount cannot cover the root filesystem")
    return MountSpec(type=kind, target=target, readonly=readonly, **kwargs)  # type: ignore[arg-type]


def raw_from(text: str) -> str | None:
    """The ``from=`` value of a ``--mount`` as written (before any expansion), or None.

    ``from=`` is expanded with the global ARGs only, as BuildKit does, while
    the rest of the mount sees the stage's variables.
    """
    for item in next(csv.reader([text]), []):
        name, eq, value = item.partition("=")
        if eq and name.strip().lower() == "from":
            return value
    return None


def parse_mounts(texts: list[str], workdir: str = "/") -> list[MountSpec]:
    out = []
    for text in texts:
        try:
            out.append(parse_mount(text, workdir))
        except ValueError as exc:
            raise BuildError(f"invalid RUN --mount={text}: {exc}") from None
    return out
