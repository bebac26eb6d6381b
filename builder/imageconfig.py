"""How metadata instructions change an image's config, with Docker's semantics.

Used by the builder for every stage and by ``pybuild import --change``.
"""

from __future__ import annotations

import posixpath
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


def set_env(env: tuple[str, ...], key: str, value: str) -> tuple[str, ...]:
    """Replace ``key`` in place if present (Docker keeps its position), else append."""
    items = list(env)
    for i, item in enumerate(items):
        if item.partition("=")[0] == key:
            items[i] = f"{key}={value}"
            return tuple(items)
    return (*items, f"{key}={value}")


def shell_command(config: ContainerConfig, command: list[str] | str, prepend_shell: bool) -> tuple[str, ...]:
    if prepend_shell:
        assert isinstance(command, str)
        return (*(config.shell or DEFAULT_SHELL), command)
    return tuple(command)


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


def apply(config: ContainerConfig, instr: Instruction, *, extra_env: Mapping[str, str] | None = None,
          escape: str = DEFAULT_ESCAPE, cmd_set_in_stage: bool = True) -> ContainerConfig:
    """The config after ``instr``; words are expanded with the config's env (plus ``extra_env``, e.g. ARGs)."""
    env = {**(extra_env or {}), **env_map(config)}
    if hasattr(instr, "expand"):
        instr = instr.expand(env, escape)
    if isinstance(instr, Env):
        new_env = config.env
        for key, value in instr.pairs:
            new_env = set_env(new_env, key, value)
        return replace(config, env=new_env)
    if isinstance(instr, Cmd):
        return replace(config, cmd=shell_command(config, instr.command, instr.prepend_shell))
    if isinstance(instr, Entrypoint):
        entry = shell_command(config, instr.command, instr.prepend_shell)
        # An ENTRYPOINT resets a CMD inherited from the base image.
        return replace(config, entrypoint=entry, cmd=config.cmd if cmd_set_in_stage else None)
    if isinstance(instr, Workdir):
        path = posixpath.normpath(posixpath.join(config.working_dir or "/", instr.path))
        return replace(config, working_dir=path)
    if isinstance(instr, User):
        return replace(config, user=instr.user)
    if isinstance(instr, Expose):
        ports = set(config.exposed_ports) | {key for p in instr.ports for key in normalise_ports(p, instr)}
        return replace(config, exposed_ports=tuple(sorted(ports)))
    if isinstance(instr, Volume):
        return replace(config, volumes=tuple(sorted(set(config.volumes) | set(instr.paths))))
    if isinstance(instr, Label):
        return replace(config, labels={**config.labels, **dict(instr.pairs)})
    if isinstance(instr, Stopsignal):
        return replace(config, stop_signal=instr.signal)
    if isinstance(instr, Shell):
        return replace(config, shell=tuple(instr.shell))
    if isinstance(instr, Onbuild):
        return replace(config, on_build=(*config.on_build, instr.expression))
    if isinstance(instr, Healthcheck):
        hc = ConfigHealthcheck(tuple(instr.test), instr.interval, instr.timeout, instr.start_period,
                               instr.start_interval, instr.retries)
        return replace(config, healthcheck=hc)
    raise DockerfileError(f"{type(instr).__name__.upper()} does not change the image config",
                          filename=instr.meta.filename, line=instr.line)
