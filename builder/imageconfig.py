"""How metadata instructions change an image's config, with Docker's semantics.

Used by the builder for every stage and by ``pybuild import --change``.
"""

from __future__ import annotations

import posixpath
from collections import ChainMap
from collections.abc import Mapping

from pybuild.errors import DockerfileError
from pybuild.records import replace
from pybuild.store.model import ContainerConfig
from pybuild.store.model import Healthcheck as ConfigHealthcheck

from .instructions import (
    Cmd,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Onbuild,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
)
from .lexer import DEFAULT_ESCAPE

DEFAULT_SHELL = ("/bin/sh", "-c")
CONFIG_INSTRUCTIONS = (Cmd, Entrypoint, Env, Expose, Healthcheck, Label, Onbuild, Shell, Stopsignal, User,
                       Volume, Workdir)


def env_map(config: ContainerConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in config.env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def normalise_ports(port: str, where: Instruction) -> list[str]:
    """``80``, ``53/udp``, ``8000-8001/tcp`` as config keys; a range is expanded, as Docker does."""
    number, _, proto = port.partition("/")
    proto = (proto or "tcp").lower()
    first, _, last = number.partition("-")
    ok = first.isdigit() and (not last or last.isdigit()) and proto in ("tcp", "udp", "sctp")
    if ok:
        low, high = int(first), int(last or first)
        ok = 0 < low <= high < 65536
    if not ok:
        raise DockerfileError(f"invalid containerPort: {port}", filename=where.meta.filename, line=where.line)
    return [f"{n}/{proto}" for n in range(low, high + 1)]


class ConfigDraft:
    """A container config being changed instruction by instruction, each change O(1).

    A Dockerfile may hold thousands of metadata instructions (LABEL, ENV...);
    rebuilding the frozen config (its env tuple, its labels dict) after each
    would make a build quadratic. The draft keeps mutable copies and gives a
    :class:`ContainerConfig` back only when one is asked for (:meth:`freeze`).
    ``values`` is the environment as variable expansion sees it (the last
    definition of a name wins, as ``env_map``).
    """

    __slots__ = ("_base", "_env", "_positions", "_duplicated", "values", "_labels", "_ports", "_volumes",
                 "_on_build", "_scalars", "_changed")

    def __init__(self, config: ContainerConfig) -> None:
        self._base = config
        self._env = list(config.env)
        self._positions: dict[str, int] = {}
        self._duplicated: set[str] = set()
        for i, item in enumerate(self._env):
            name = item.partition("=")[0]
            if name in self._positions:
                self._duplicated.add(name)
            else:
                self._positions[name] = i
        self.values = env_map(config)
        self._labels = dict(config.labels)
        self._ports = set(config.exposed_ports)
        self._volumes = set(config.volumes)
        self._on_build = list(config.on_build)
        self._scalars: dict[str, object] = {}
        self._changed = False

    def get(self, name: str) -> object:
        """A scalar field (``cmd``, ``shell``, ``working_dir``...) as the draft has it now."""
        return self._scalars[name] if name in self._scalars else getattr(self._base, name)

    def set_env(self, key: str, value: str) -> None:
        """Replace ``key`` in place if present (Docker keeps its position), else append."""
        item = f"{key}={value}"
        position = self._positions.get(key)
        if position is None:
            self._positions[key] = len(self._env)
            self._env.append(item)
        else:
            self._env[position] = item
        if key in self._duplicated:
            # a base image defining a name twice: the later definition still wins, as env_map reads it
            value = next(e for e in reversed(self._env) if e.partition("=")[0] == key).partition("=")[2]
        self.values[key] = value
        self._changed = True

    def apply(self, instr: Instruction, *, cmd_set_in_stage: bool = True) -> None:
        """Apply an instruction whose words are already expanded."""
        self._changed = True
        scalars = self._scalars
        if isinstance(instr, Env):
            for key, value in instr.pairs:
                self.set_env(key, value)
        elif isinstance(instr, Cmd):
            scalars["cmd"] = self._command(instr.command, instr.prepend_shell)
        elif isinstance(instr, Entrypoint):
            # An ENTRYPOINT resets a CMD inherited from the base image.
            scalars["entrypoint"] = self._command(instr.command, instr.prepend_shell)
            if not cmd_set_in_stage:
                scalars["cmd"] = None
        elif isinstance(instr, Workdir):
            current = str(self.get("working_dir") or "/")
            scalars["working_dir"] = posixpath.normpath(posixpath.join(current, instr.path))
        elif isinstance(instr, User):
            scalars["user"] = instr.user
        elif isinstance(instr, Expose):
            self._ports.update(key for p in instr.ports for key in normalise_ports(p, instr))
        elif isinstance(instr, Volume):
            self._volumes.update(instr.paths)
        elif isinstance(instr, Label):
            self._labels.update(instr.pairs)
        elif isinstance(instr, Stopsignal):
            scalars["stop_signal"] = instr.signal
        elif isinstance(instr, Shell):
            scalars["shell"] = tuple(instr.shell)
        elif isinstance(instr, Onbuild):
            self._on_build.append(instr.expression)
        elif isinstance(instr, Healthcheck):
            scalars["healthcheck"] = ConfigHealthcheck(tuple(instr.test), instr.interval, instr.timeout,
                                                       instr.start_period, instr.start_interval, instr.retries)
        else:
            raise DockerfileError(f"{type(instr).__name__.upper()} does not change the image config",
                                  filename=instr.meta.filename, line=instr.line)

    def _command(self, command: list[str] | str, prepend_shell: bool) -> tuple[str, ...]:
        if prepend_shell:
            assert isinstance(command, str)
            shell = self.get("shell")
            return (*(shell or DEFAULT_SHELL), command)  # type: ignore[misc]
        return tuple(command)

    def freeze(self) -> ContainerConfig:
        """The config as it stands (the base itself when nothing changed)."""
        if not self._changed:
            return self._base
        return replace(self._base, env=tuple(self._env), labels=dict(self._labels),
                       exposed_ports=tuple(sorted(self._ports)), volumes=tuple(sorted(self._volumes)),
                       on_build=tuple(self._on_build), **self._scalars)


def apply(config: ContainerConfig, instr: Instruction, *, extra_env: Mapping[str, str] | None = None,
          escape: str = DEFAULT_ESCAPE, cmd_set_in_stage: bool = True) -> ContainerConfig:
    """The config after ``instr``; words are expanded with the config's env (plus ``extra_env``, e.g. ARGs)."""
    draft = ConfigDraft(config)
    if hasattr(instr, "expand"):
        instr = instr.expand(ChainMap(draft.values, dict(extra_env or {})), escape)
    draft.apply(instr, cmd_set_in_stage=cmd_set_in_stage)
    return draft.freeze()
