"""Docker's ``--mount`` syntax: ``type=bind|volume|tmpfs,source=...,target=...,readonly,...``.

Fields as in the Docker CLI reference: ``type`` (default volume), ``source``
(``src``), ``target`` (``destination``, ``dst``), ``readonly`` (``ro``,
optionally ``=true|false|1|0``), ``bind-propagation``, ``volume-nocopy``,
``tmpfs-size``, ``tmpfs-mode``; ``consistency`` is accepted and ignored (it
means something on macOS only). Unlike ``-v``, a bind's source must exist.
"""

from __future__ import annotations

import os
import re

from pybuild.errors import UsageError

from .containers import VolumeMount

PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_SIZE = re.compile(r"([0-9]+)([kmgKMG]?)[bB]?")


class MountFlagError(UsageError):
    exit_code = 125


def _error(text: str, why: str) -> MountFlagError:
    return MountFlagError(f'invalid argument "{text}" for "--mount" flag: {why}')


def _bool(text: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise _error(text, f"invalid value {value!r} for readonly: use true or false")


def _size(text: str, value: str) -> int:
    match = _SIZE.fullmatch(value)
    if not match:
        raise _error(text, f"invalid tmpfs-size {value!r}")
    return int(match.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]


def parse_mount(text: str) -> VolumeMount:
    fields: dict[str, str | None] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not key:
            raise _error(text, "empty field")
        if key in fields:
            raise _error(text, f"field {key!r} given twice")
        fields[key] = value if sep else None
    kind = fields.pop("type", None) or "volume"
    source = fields.pop("source", None) or fields.pop("src", None)
    target = fields.pop("target", None) or fields.pop("destination", None) or fields.pop("dst", None)
    for alias in ("src", "destination", "dst"):
        fields.pop(alias, None)
    readonly = False
    for key in ("readonly", "ro"):
        if key in fields:
            flag = fields.pop(key)
            readonly = True if flag is None else _bool(text, flag)
    fields.pop("consistency", None)
    if kind not in ("bind", "volume", "tmpfs"):
        raise _error(text, f"mount type {kind!r} is not supported (use bind, volume or tmpfs)")
    if not target:
        raise _error(text, "target is required")
    if not target.startswith("/"):
        raise _error(text, f"target {target!r} must be an absolute path")
    propagation = ""
    options: list[str] = []
    if kind == "bind":
        wanted = fields.pop("bind-propagation", None)
        if wanted is not None:
            if wanted not in PROPAGATIONS:
                raise _error(text, f"invalid bind-propagation {wanted!r}: use one of {', '.join(PROPAGATIONS)}")
            propagation = wanted
        if not source:
            raise _error(text, "source is required for a bind mount")
        if not source.startswith("/"):
            raise _error(text, f"bind source {source!r} must be an absolute path")
        if not os.path.exists(source):
            raise MountFlagError(f'invalid mount config for type "bind": bind source path does not exist: {source}')
        source = os.path.realpath(source)
    elif kind == "volume":
        fields.pop("volume-nocopy", None)
        if source and not _VOLUME_NAME.fullmatch(source):
            raise _error(text, f"invalid volume name {source!r}")
    else:
        if source:
            raise _error(text, "a tmpfs mount takes no source")
        size = fields.pop("tmpfs-size", None)
        if size is not None:
            options.append(f"size={_size(text, size)}")
        mode = fields.pop("tmpfs-mode", None)
        if mode is not None:
            if not re.fullmatch(r"[0-7]{1,4}", mode):
                raise _error(text, f"invalid tmpfs-mode {mode!r}: use octal permission bits")
            options.append(f"mode={mode}")
        source = ",".join(options)
    if fields:
        raise _error(text, f"unexpected field {sorted(fields)[0]!r} for a {kind} mount")
    if kind == "volume" and not source:
        return VolumeMount("volume", "", target, readonly, anonymous=True)
    return VolumeMount(kind, source or "", target, readonly, propagation=propagation)
