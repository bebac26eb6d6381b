"""An instruction's ``--flags``, checked against what the instruction accepts (BuildKit's ``bflag``).

Flags are ``--name`` (booleans), ``--name=value`` (strings) or repeatable
``--name=value`` (lists). An unknown or duplicated flag, a missing value or a
boolean that is neither true nor false is a :class:`FlagError` for the caller
to locate.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

__all__ = ["NO_FLAGS", "FlagError", "FlagKind", "Flags", "parse_flags"]


class FlagError(Exception):
    """A flag the instruction does not accept, or a bad value."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class FlagKind(enum.Enum):
    BOOL = "bool"
    STRING = "string"
    STRINGS = "strings"


class Flags:
    """The parsed values of one instruction's ``--flags``."""

    __slots__ = ("_values", "_lists")

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lists: dict[str, list[str]] = {}

    def set(self, name: str, value: str) -> None:
        self._values[name] = value

    def add(self, name: str, value: str) -> None:
        self._lists.setdefault(name, []).append(value)

    def string(self, name: str) -> str | None:
        return self._values.get(name)

    def boolean(self, name: str) -> bool:
        return self._values.get(name) == "true"

    def strings(self, name: str) -> list[str]:
        return list(self._lists.get(name, []))


NO_FLAGS: Mapping[str, FlagKind] = {}


def parse_flags(raw_flags: Iterable[str], spec: Mapping[str, FlagKind], instruction: str) -> Flags:
    """The values of ``raw_flags`` (``--name[=value]`` each) for ``instruction``, which accepts ``spec``."""
    parsed = Flags()
    seen: set[str] = set()
    for raw in raw_flags:
        name, has_value, value = raw.removeprefix("--").partition("=")
        kind = spec.get(name)
        if kind is None:
            raise FlagError(f'unknown flag "--{name}" for {instruction}', _accepted(spec, instruction))
        if name in seen and kind is not FlagKind.STRINGS:
            raise FlagError(f'duplicate flag "--{name}"', "give each flag at most once")
        seen.add(name)
        if kind is FlagKind.BOOL:
            parsed.set(name, _boolean(name, has_value, value))
        elif not has_value:
            raise FlagError(f'missing a value on flag "--{name}"', f"use --{name}=<value>")
        elif kind is FlagKind.STRING:
            parsed.set(name, value)
        else:
            parsed.add(name, value)
    return parsed


def _boolean(name: str, has_value: str, value: str) -> str:
    if has_value and not value:
        raise FlagError(f'missing a value on flag "--{name}"', "use true or false")
    lower = value.lower()
    if lower in ("", "true"):
        return "true"
    if lower == "false":
        return "false"
    raise FlagError(f'expecting boolean value for flag "--{name}", not "{value}"', "use true or false")


def _accepted(spec: Mapping[str, FlagKind], instruction: str) -> str:
    if not spec:
        return f"{instruction} takes no flags"
    return f"{instruction} accepts " + ", ".join(f"--{name}" for name in sorted(spec))
