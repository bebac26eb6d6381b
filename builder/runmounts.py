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
from pybuild.records import record

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
        """The mount as it enters a cache key (everything but a cache's contents)."""
        parts = [f"type={self.type}", f"target={self.target}"]
        for name in ("source", "source_from", "id", "sharing", "mode", "uid", "gid", "size", "env"):
            value = getattr(self, name)
            if value not in (None, ""):
                parts.append(f"{name}={value}")
        parts.append("ro" if self.readonly else "rw")
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


def parse_mount(text: str) -> MountSpec:
    """One ``--mount`` value; raises ValueError with a message naming what is wrong."""
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
    if target and not target.startswith("/"):
        target = posixpath.join("/", target)
    target = posixpath.normpath(target) if target else ""
    if kind == "cache" and not kwargs.get("id"):
        kwargs["id"] = target
    return MountSpec(type=kind, target=target, readonly=readonly, **kwargs)  # type: ignore[arg-type]


def parse_mounts(texts: list[str]) -> list[MountSpec]:
    out = []
    for text in texts:
        try:
            out.append(parse_mount(text))
        except ValueError as exc:
            raise BuildError(f"invalid RUN --mount={text}: {exc}") from None
    return out
