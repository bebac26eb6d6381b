"""Dockerfile commands: ``parse`` (and, with the builder, ``build``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pybuild.errors import DockerfileError, PybuildError
from pybuild.store.model import ContainerConfig


def config_from_changes(changes: tuple[str, ...] | list[str]) -> ContainerConfig:
    """``--change`` instructions (as ``docker import -c``) applied to an empty config."""
    from pybuild.builder import imageconfig
    from pybuild.builder.instructions import parse_instruction
    from pybuild.builder.lexer import lex

    config = ContainerConfig()
    for i, change in enumerate(changes, 1):
        nodes = lex(change, filename="--change").nodes
        if len(nodes) != 1:
            raise DockerfileError(f"--change #{i} must be one instruction: {change!r}", filename="--change")
        instr = parse_instruction(nodes[0], filename="--change")
        if not isinstance(instr, imageconfig.CONFIG_INSTRUCTIONS):
            raise DockerfileError(f"{nodes[0].instruction.upper()} is not supported by --change",
                                  "use CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, SHELL, "
                                  "STOPSIGNAL, USER, VOLUME or WORKDIR", filename="--change")
        config = imageconfig.apply(config, instr)
    return config


def _instruction_json(instr: Any) -> dict[str, Any]:
    from dataclasses import fields

    out: dict[str, Any] = {"instruction": type(instr).keyword, "flags": list(instr.flags),
                           "start_line": instr.line, "end_line": instr.end_line}
    for f in fields(instr):
        if f.name == "meta":
            continue
        value = getattr(instr, f.name)
        if f.name == "trigger":
            value = _instruction_json(value)
        elif isinstance(value, list):
            value = [list(v) if isinstance(v, tuple) else (v.__dict__ if hasattr(v, "__dict__") else v) for v in value]
        out[f.name] = value
    return out


@click.command("parse")
@click.option("-f", "--file", "dockerfile", default="Dockerfile", show_default=True,
              help="The Dockerfile to parse ('-' for stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the instructions as JSON.")
def parse_cmd(dockerfile: str, as_json: bool) -> None:
    """Print the parsed instructions of a Dockerfile (for debugging one)."""
    from pybuild.builder.dump import dump
    from pybuild.builder.instructions import parse_dockerfile

    if dockerfile == "-":
        text, name = sys.stdin.read(), "Dockerfile"
    else:
        try:
            text = Path(dockerfile).read_text(errors="surrogateescape")
        except OSError as exc:
            raise PybuildError(f"cannot read {dockerfile}: {exc.strerror}") from None
        name = Path(dockerfile).name
    parsed = parse_dockerfile(text, filename=name)
    if as_json:
        json.dump([_instruction_json(i) for i in parsed.instructions], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    lines = dump(text, name).splitlines()
    width = len(str(max((i.end_line for i in parsed.instructions), default=1)))
    for instr, line in zip(parsed.instructions, lines, strict=False):
        span = f"{instr.line}" if instr.line == instr.end_line else f"{instr.line}-{instr.end_line}"
        click.echo(f"{span:>{width * 2 + 1}}  {line}")
