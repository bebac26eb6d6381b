"""Step 2 of parsing: nodes and their argument lists to typed instructions (BuildKit's ``instructions/parse.go``).

:func:`parse_instruction` turns one node into an instruction of
:mod:`.instructions`, checking its flags (:mod:`.flags`) and argument counts;
:func:`parse_dockerfile` lexes a whole file and groups the instructions into
stages.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from fractions import Fraction

from pybuild.errors import DockerfileError
from pybuild.records import record

from .flags import NO_FLAGS, FlagError, FlagKind, Flags, parse_flags
from .instructions import (
    INSTRUCTION_NAMES,
    Add,
    Arg,
    Cmd,
    Command,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Meta,
    Onbuild,
    Run,
    Shell,
    Stage,
    Stopsignal,
    User,
    Volume,
    Workdir,
)
from .lexer import DEFAULT_ESCAPE, Heredoc, RawNode, lex, parse_heredoc
from .lineparsers import NodeArgs, located_error, node_args
from .shellwords import WHITESPACE

__all__ = ["parse_dockerfile", "parse_duration", "parse_instruction"]

_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


# -- the parse context --------------------------------------------------------


@record(frozen=True, slots=True)
class _Ctx:
    """What an instruction parser needs: the node, its arguments and settings."""

    node: RawNode
    args: NodeArgs
    escape: str
    filename: str

    @property
    def name(self) -> str:
        return self.node.instruction.upper()

    @property
    def values(self) -> list[str]:
        return self.args.values

    def meta(self) -> Meta:
        node = self.node
        return Meta(
            self.filename,
            node.start_line,
            node.end_line,
            list(node.flags),
            node.original,
            node.source_line,
        )

    def error(self, message: str, hint: str | None = None) -> DockerfileError:
        return located_error(self.node, self.filename, message, hint)

    def flags(self, spec: Mapping[str, FlagKind]) -> Flags:
        try:
            return parse_flags(self.node.flags, spec, self.name)
        except FlagError as exc:
            raise self.error(exc.message, exc.hint) from None

    def no_flags(self) -> None:
        self.flags(NO_FLAGS)

    def exactly_one(self) -> str:
        if len(self.values) != 1:
            raise self.error(f"{self.name} requires exactly one argument")
        return self.values[0]

    def at_least_one(self) -> list[str]:
        if not self.values:
            raise self.error(f"{self.name} requires at least one argument")
        return self.values

    def command(self) -> Command:
        """The exec form as a list, the shell form as one string."""
        if self.args.json:
            return list(self.values)
        return " ".join(self.values)


# -- per-instruction parsers --------------------------------------------------


def _parse_from(ctx: _Ctx) -> From:
    flags = ctx.flags({"platform": FlagKind.STRING})
    args = ctx.values
    stage_name: str | None = None
    if len(args) == 3 and args[1].lower() == "as":
        stage_name = args[2].lower()
        if not _STAGE_NAME.fullmatch(stage_name):
            raise ctx.error(
                f'invalid name for build stage: "{args[2]}", name can\'t start with a number or contain symbols',
                "use lower-case letters, digits, '-', '_' and '.'",
            )
    elif len(args) != 1:
        raise ctx.error("FROM requires either one or three arguments", "FROM image [AS name]")
    return From(meta=ctx.meta(), image=args[0], stage_name=stage_name, platform=flags.string("platform"))


_NETWORK_MODES = ("default", "none", "host")
_SECURITY_MODES = ("sandbox", "insecure")


def _parse_run(ctx: _Ctx) -> Run:
    flags = ctx.flags({"mount": FlagKind.STRINGS, "network": FlagKind.STRING, "security": FlagKind.STRING})
    network = flags.string("network")
    if network is not None and network not in _NETWORK_MODES:
        raise ctx.error(f'unsupported network mode "{network}"', "use default, none or host")
    security = flags.string("security")
    if security is not None and security not in _SECURITY_MODES:
        raise ctx.error(f'unsupported security mode "{security}"', "use sandbox or insecure")
    command = ctx.command()
    if not command:
        raise ctx.error("RUN requires at least one argument")
    return Run(
        meta=ctx.meta(),
        command=command,
        prepend_shell=not ctx.args.json,
        mounts=flags.strings("mount"),
        network=network,
        security=security,
        heredocs=list(ctx.node.heredocs),
    )


def _parse_cmd(ctx: _Ctx) -> Cmd:
    ctx.no_flags()
    return Cmd(meta=ctx.meta(), command=ctx.command(), prepend_shell=not ctx.args.json)


def _parse_entrypoint(ctx: _Ctx) -> Entrypoint:
    ctx.no_flags()
    return Entrypoint(meta=ctx.meta(), command=ctx.command(), prepend_shell=not ctx.args.json)


def _key_values(ctx: _Ctx) -> list[tuple[str, str]]:
    values = ctx.at_least_one()
    if len(values) % 3:
        raise ctx.error(f"Bad input to {ctx.name}, too many arguments")
    pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 3)]
    if any(not key for key, _ in pairs):
        raise ctx.error(f"{ctx.name} names can not be blank", f"use {ctx.name} name=value")
    return pairs


def _parse_env(ctx: _Ctx) -> Env:
    ctx.no_flags()
    return Env(meta=ctx.meta(), pairs=_key_values(ctx))


def _parse_label(ctx: _Ctx) -> Label:
    ctx.no_flags()
    return Label(meta=ctx.meta(), pairs=_key_values(ctx))


def _parse_arg(ctx: _Ctx) -> Arg:
    ctx.no_flags()
    pairs: list[tuple[str, str | None]] = []
    for word in ctx.at_least_one():
        name, has_value, default = word.partition("=")
        if not name:
            raise ctx.error("ARG names can not be blank", "use ARG name[=default]")
        pairs.append((name, default if has_value else None))
    return Arg(meta=ctx.meta(), pairs=pairs)


def _parse_expose(ctx: _Ctx) -> Expose:
    ctx.no_flags()
    return Expose(meta=ctx.meta(), ports=list(ctx.at_least_one()))


def _parse_user(ctx: _Ctx) -> User:
    ctx.no_flags()
    return User(meta=ctx.meta(), user=ctx.exactly_one())


def _parse_workdir(ctx: _Ctx) -> Workdir:
    ctx.no_flags()
    return Workdir(meta=ctx.meta(), path=ctx.exactly_one())


def _parse_volume(ctx: _Ctx) -> Volume:
    ctx.no_flags()
    paths = [path.strip(WHITESPACE) for path in ctx.at_least_one()]
    if not all(paths):
        raise ctx.error("VOLUME specified can not be an empty string")
    return Volume(meta=ctx.meta(), paths=paths)


def _parse_stopsignal(ctx: _Ctx) -> Stopsignal:
    ctx.no_flags()
    return Stopsignal(meta=ctx.meta(), signal=ctx.exactly_one())


def _parse_maintainer(ctx: _Ctx) -> Maintainer:
    ctx.no_flags()
    return Maintainer(meta=ctx.meta(), maintainer=ctx.exactly_one())


def _parse_shell(ctx: _Ctx) -> Shell:
    ctx.no_flags()
    if not ctx.values:
        raise ctx.error("SHELL requires at least one argument")
    if not ctx.args.json:
        raise ctx.error(
            "SHELL requires the arguments to be in JSON form",
            'use SHELL ["executable", "parameters"]',
        )
    return Shell(meta=ctx.meta(), shell=list(ctx.values))


_HEALTH_FLAGS: Mapping[str, FlagKind] = {
    "interval": FlagKind.STRING,
    "timeout": FlagKind.STRING,
    "start-period": FlagKind.STRING,
    "start-interval": FlagKind.STRING,
    "retries": FlagKind.STRING,
}


def _parse_healthcheck(ctx: _Ctx) -> Healthcheck:
    args = ctx.at_least_one()
    flags = ctx.flags(_HEALTH_FLAGS)
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) != 1:
            raise ctx.error("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(meta=ctx.meta(), test=["NONE"])
    if kind != "CMD":
        raise ctx.error(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)', "use CMD or NONE")
    command = args[1:]
    if not command:
        raise ctx.error("Missing command after HEALTHCHECK CMD")
    test = ["CMD", *command] if ctx.args.json else ["CMD-SHELL", " ".join(command)]
    return Healthcheck(
        meta=ctx.meta(),
        test=test,
        interval=_interval(ctx, "interval", flags.string("interval")),
        timeout=_interval(ctx, "timeout", flags.string("timeout")),
        start_period=_interval(ctx, "start-period", flags.string("start-period")),
        start_interval=_interval(ctx, "start-interval", flags.string("start-interval")),
        retries=_retries(ctx, flags.string("retries")),
    )


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MIN_INTERVAL_NS = 1_000_000


def parse_duration(text: str) -> int:
    """Parse a Go duration (``1m30s``, ``500ms``, ``1.5h``) into nanoseconds."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in ("-", "+") else text
    if body == "0":
        return 0
    if not body:
        raise ValueError(f'invalid duration "{text}"')
    total = Fraction(0)
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(f'invalid duration "{text}"')
        total += Fraction(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    return sign * int(total)


def _interval(ctx: _Ctx, name: str, value: str | None) -> int:
    if not value:
        return 0
    try:
        nanos = parse_duration(value)
    except ValueError as exc:
        raise ctx.error(f"--{name}: {exc}", "use a duration such as 30s, 1m or 500ms") from None
    if nanos != 0 and nanos < _MIN_INTERVAL_NS:
        raise ctx.error(f'Interval "{name}" cannot be less than 1ms')
    return nanos


def _retries(ctx: _Ctx, value: str | None) -> int:
    if not value:
        return 0
    if not re.fullmatch(r"[+-]?[0-9]+", value) or not -(2**31) <= int(value) < 2**31:
        raise ctx.error(f'invalid value "{value}" for --retries', "use a whole number")
    retries = int(value)
    if retries < 0:
        raise ctx.error(f"--retries cannot be negative ({retries})")
    return retries


def _heredoc_word(word: str) -> Heredoc | None:
    try:
        return parse_heredoc(word)
    except DockerfileError:
        return None


def _sources_and_dest(ctx: _Ctx) -> tuple[list[str], str, list[Heredoc]]:
    if len(ctx.values) < 2:
        raise ctx.error(
            f"{ctx.name} requires at least two arguments, but only one was provided. "
            "Destination could not be determined",
            f"{ctx.name} <src>... <dest>",
        )
    *sources, dest = ctx.values
    if _heredoc_word(dest) is not None:
        raise ctx.error(f"{ctx.name} cannot accept a heredoc as a destination")
    by_name = {doc.name: doc for doc in ctx.node.heredocs}
    paths: list[str] = []
    inline: list[Heredoc] = []
    for src in sources:
        doc = _heredoc_word(src) if by_name else None
        if doc is not None and doc.name in by_name:
            inline.append(by_name[doc.name])
        else:
            paths.append(src)
    return paths, dest, inline


def _parse_add(ctx: _Ctx) -> Add:
    flags = ctx.flags(
        {
            "chown": FlagKind.STRING,
            "chmod": FlagKind.STRING,
            "checksum": FlagKind.STRING,
            "keep-git-dir": FlagKind.BOOL,
            "link": FlagKind.BOOL,
            "exclude": FlagKind.STRINGS,
        }
    )
    sources, dest, inline = _sources_and_dest(ctx)
    return Add(
        meta=ctx.meta(),
        sources=sources,
        dest=dest,
        heredocs=inline,
        chown=flags.string("chown"),
        chmod=flags.string("chmod"),
        checksum=flags.string("checksum"),
        keep_git_dir=flags.boolean("keep-git-dir"),
        link=flags.boolean("link"),
        excludes=flags.strings("exclude"),
    )


def _parse_copy(ctx: _Ctx) -> Copy:
    flags = ctx.flags(
        {
            "from": FlagKind.STRING,
            "chown": FlagKind.STRING,
            "chmod": FlagKind.STRING,
            "link": FlagKind.BOOL,
            "parents": FlagKind.BOOL,
            "exclude": FlagKind.STRINGS,
        }
    )
    sources, dest, inline = _sources_and_dest(ctx)
    return Copy(
        meta=ctx.meta(),
        sources=sources,
        dest=dest,
        heredocs=inline,
        from_stage=flags.string("from"),
        chown=flags.string("chown"),
        chmod=flags.string("chmod"),
        link=flags.boolean("link"),
        parents=flags.boolean("parents"),
        excludes=flags.strings("exclude"),
    )


_FORBIDDEN_TRIGGERS = frozenset({"ONBUILD", "FROM", "MAINTAINER"})


def _parse_onbuild(ctx: _Ctx) -> Onbuild:
    ctx.no_flags()
    child = ctx.node.child
    if child is None or ctx.args.child is None:
        raise ctx.error("ONBUILD requires at least one argument")
    trigger_name = child.keyword.upper()
    if trigger_name == "ONBUILD":
        raise ctx.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger_name in _FORBIDDEN_TRIGGERS:
        raise ctx.error(f"{trigger_name} isn't allowed as an ONBUILD trigger")
    trigger = _typed(_Ctx(child, ctx.args.child, ctx.escape, ctx.filename))
    expression = _ONBUILD_PREFIX.sub("", ctx.node.original, count=1)
    for doc in ctx.node.heredocs:
        expression += "\n" + doc.content + doc.name
    return Onbuild(meta=ctx.meta(), trigger=trigger, expression=expression)


_TYPED_PARSERS: Mapping[str, Callable[[_Ctx], Instruction]] = {
    "add": _parse_add,
    "arg": _parse_arg,
    "cmd": _parse_cmd,
    "copy": _parse_copy,
    "entrypoint": _parse_entrypoint,
    "env": _parse_env,
    "expose": _parse_expose,
    "from": _parse_from,
    "healthcheck": _parse_healthcheck,
    "label": _parse_label,
    "maintainer": _parse_maintainer,
    "onbuild": _parse_onbuild,
    "run": _parse_run,
    "shell": _parse_shell,
    "stopsignal": _parse_stopsignal,
    "user": _parse_user,
    "volume": _parse_volume,
    "workdir": _parse_workdir,
}


def _typed(ctx: _Ctx) -> Instruction:
    parser = _TYPED_PARSERS.get(ctx.node.instruction)
    if parser is None:
        raise _unknown_instruction(ctx.node, ctx.filename)
    return parser(ctx)


def _unknown_instruction(node: RawNode, filename: str) -> DockerfileError:
    written = node.keyword
    close = difflib.get_close_matches(written.upper(), INSTRUCTION_NAMES, n=1)
    hint = f"did you mean {close[0]}?" if close else None
    return located_error(node, filename, f'unknown instruction "{written}"', hint)


def parse_instruction(node: RawNode, escape: str = DEFAULT_ESCAPE, filename: str = "Dockerfile") -> Instruction:
    """Parse one raw node into its typed instruction."""
    if node.instruction not in _TYPED_PARSERS:
        raise _unknown_instruction(node, filename)
    return _typed(_Ctx(node, node_args(node, escape, filename), escape, filename))


def _stages(instructions: list[Instruction], nodes: list[RawNode], filename: str) -> tuple[list[Arg], list[Stage]]:
    global_args: list[Arg] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for inst, node in zip(instructions, nodes, strict=True):
        if isinstance(inst, From):
            if inst.stage_name is not None:
                if inst.stage_name in names:
                    raise located_error(
                        node,
                        filename,
                        f'duplicate stage name "{inst.stage_name}"',
                        "give every stage a unique name",
                    )
                names.add(inst.stage_name)
            stages.append(Stage(inst.stage_name, len(stages), inst))
        elif stages:
            stages[-1].instructions.append(inst)
        elif isinstance(inst, Arg):
            global_args.append(inst)
        else:
            raise located_error(
                node,
                filename,
                f"{node.keyword.upper()} instruction before the first FROM",
                "only ARG may come before the first FROM",
            )
    if not stages:
        raise DockerfileError(
            "no FROM instruction",
            "a Dockerfile needs at least one FROM",
            filename=filename,
        )
    return global_args, stages


def parse_dockerfile(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile text into stages of typed instructions."""
    lexed = lex(text, filename)
    instructions = [parse_instruction(node, lexed.escape, filename) for node in lexed.nodes]
    global_args, stages = _stages(instructions, lexed.nodes, filename)
    return Dockerfile(
        filename=filename,
        escape=lexed.escape,
        directives=lexed.directives,
        global_args=global_args,
        stages=stages,
        instructions=instructions,
    )
