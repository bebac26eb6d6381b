"""Per-instruction argument parsing: raw nodes to typed instructions.

Two steps, as in BuildKit:

* :func:`node_args` splits an instruction's text into its argument list the way
  BuildKit's parser does (``parser/line_parsers.go``): JSON or shell form, ENV
  and LABEL name/value/separator triples, ONBUILD nesting. That list is what the
  parser dump shows; values keep their quotes.
* :func:`parse_instruction` turns a node and its arguments into one of the typed
  frozen dataclasses below (``instructions/parse.go``), checking flags and
  argument counts.

Variables are not expanded here: that needs the build-time environment. The
instructions whose words BuildKit expands have an ``expand(env, escape)``
method; it expands every word against the *same* ``env`` (the values before the
instruction), so ``ENV a=1 b=$a`` gives ``b`` the old ``$a``.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import ClassVar, Self, TypeAlias

from pybuild.errors import DockerfileError
from pybuild.records import field, record, replace

from . import shellwords
from .lexer import (
    DEFAULT_ESCAPE,
    Directive,
    Heredoc,
    NotStringArrayError,
    RawNode,
    json_array,
    lex,
    parse_heredoc,
)
from .shellwords import WHITESPACE, is_space

__all__ = [
    "INSTRUCTION_NAMES",
    "Add",
    "Arg",
    "BaseInstruction",
    "Cmd",
    "Command",
    "Copy",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Instruction",
    "Label",
    "Maintainer",
    "Meta",
    "NodeArgs",
    "Onbuild",
    "Run",
    "Shell",
    "Stage",
    "Stopsignal",
    "User",
    "Volume",
    "Workdir",
    "node_args",
    "parse_dockerfile",
    "parse_duration",
    "parse_instruction",
    "parse_words",
]

INSTRUCTION_NAMES: tuple[str, ...] = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)

_WHITESPACE_SPLIT = re.compile(r"[\t\v\f\r ]+")
_SPACE_RUNS = re.compile("[" + re.escape(WHITESPACE) + "]+")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


class _Invalid(Exception):
    """An argument error, located by the caller."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _error(node: RawNode, filename: str, message: str, hint: str | None = None) -> DockerfileError:
    return DockerfileError(
        message,
        hint,
        filename=filename,
        line=node.start_line,
        source_line=node.source_line or None,
    )


# =============================================================================
# Step 1: argument lists (BuildKit's line parsers)
# =============================================================================


@record(frozen=True, slots=True)
class NodeArgs:
    """An instruction's arguments as BuildKit's parser splits them.

    ``json`` is true for the exec (JSON array) form; ``child`` holds the
    arguments of ONBUILD's nested instruction.
    """

    values: list[str]
    json: bool = False
    child: NodeArgs | None = None


def parse_words(rest: str, escape: str = DEFAULT_ESCAPE) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes (for ARG, ENV, LABEL)."""
    if "'" not in rest and '"' not in rest and escape not in rest:
        return _SPACE_RUNS.split(rest.strip(WHITESPACE)) if rest.strip(WHITESPACE) else []
    words: list[str] = []
    word: list[str] = []
    quote = ""
    in_word = False
    blank_ok = False
    i = 0
    end = len(rest)
    while i < end:
        ch = rest[i]
        if not in_word and not quote:
            if is_space(ch):
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == end:
                    i += 1
                    continue
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
            i += 1
            continue
        if is_space(ch):
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            in_word = False
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
        elif ch == escape:
            if i + 1 == end:
                i += 1
                continue
            word.append(ch)
            i += 1
            ch = rest[i]
        word.append(ch)
        i += 1
    if (in_word or quote) and (blank_ok or word):
        words.append("".join(word))
    return words


def _split_whitespace(rest: str) -> list[str]:
    return _WHITESPACE_SPLIT.split(rest) if rest else []


def _json_or_none(rest: str) -> list[str] | None:
    try:
        return json_array(rest)
    except NotStringArrayError as exc:
        raise _Invalid(str(exc), 'use a JSON array of strings, e.g. ["echo", "hi"]') from None


def _args_maybe_json(rest: str, escape: str) -> NodeArgs:
    """CMD, ENTRYPOINT, RUN, SHELL: a JSON array, else the whole text as one word."""
    if not rest:
        return NodeArgs([])
    values = _json_or_none(rest)
    if values is not None:
        return NodeArgs(values, json=True)
    return NodeArgs([rest])


def _args_maybe_json_list(rest: str, escape: str) -> NodeArgs:
    """ADD, COPY, VOLUME: a JSON array, else whitespace-separated words."""
    values = _json_or_none(rest)
    if values is not None:
        return NodeArgs(values, json=True)
    return NodeArgs(_split_whitespace(rest))


def _args_whitespace(rest: str, escape: str) -> NodeArgs:
    return NodeArgs(_split_whitespace(rest))


def _args_string(rest: str, escape: str) -> NodeArgs:
    return NodeArgs([rest] if rest else [])


def _args_names(rest: str, escape: str) -> NodeArgs:
    return NodeArgs(parse_words(rest, escape))


def _args_name_values(rest: str, keyword: str, escape: str) -> NodeArgs:
    """ENV and LABEL: ``(name, value, separator)`` triples; ``k v`` is the legacy form."""
    words = parse_words(rest, escape)
    if not words:
        return NodeArgs([])
    if "=" not in words[0]:
        parts = _WHITESPACE_SPLIT.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _Invalid(
                f"{keyword} must have two arguments",
                f"use {keyword} name=value (or the legacy {keyword} name value)",
            )
        return NodeArgs([parts[0], parts[1], ""])
    values: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise _Invalid(
                f'Syntax error - can\'t find = in "{word}". Must be of the form: name=value',
                "quote values that contain spaces",
            )
        values += [name, value, "="]
    return NodeArgs(values)


def _args_env(rest: str, escape: str) -> NodeArgs:
    return _args_name_values(rest, "ENV", escape)


def _args_label(rest: str, escape: str) -> NodeArgs:
    return _args_name_values(rest, "LABEL", escape)


def _args_healthcheck(rest: str, escape: str) -> NodeArgs:
    """HEALTHCHECK: the type word (CMD, NONE), then the command as for CMD."""
    sep = 0
    while sep < len(rest) and not is_space(rest[sep]):
        sep += 1
    if sep == 0:
        return NodeArgs([])
    command = _args_maybe_json(rest[sep:].lstrip(WHITESPACE), escape)
    return NodeArgs([rest[:sep], *command.values], json=command.json)


_LineParser: TypeAlias = Callable[[str, str], NodeArgs]

_LINE_PARSERS: Mapping[str, _LineParser] = {
    "add": _args_maybe_json_list,
    "arg": _args_names,
    "cmd": _args_maybe_json,
    "copy": _args_maybe_json_list,
    "entrypoint": _args_maybe_json,
    "env": _args_env,
    "expose": _args_whitespace,
    "from": _args_whitespace,
    "healthcheck": _args_healthcheck,
    "label": _args_label,
    "maintainer": _args_string,
    "run": _args_maybe_json,
    "shell": _args_maybe_json,
    "stopsignal": _args_string,
    "user": _args_string,
    "volume": _args_maybe_json_list,
    "workdir": _args_string,
}


def node_args(node: RawNode, escape: str = DEFAULT_ESCAPE, filename: str = "Dockerfile") -> NodeArgs:
    """Split ``node``'s arguments as BuildKit's parser does (unknown keywords: none)."""
    if node.instruction == "onbuild":
        if node.child is None:
            return NodeArgs([])
        return NodeArgs([], child=node_args(node.child, escape, filename))
    parser = _LINE_PARSERS.get(node.instruction)
    if parser is None:
        return NodeArgs([])
    try:
        return parser(node.rest, escape)
    except _Invalid as exc:
        raise _error(node, filename, exc.message, exc.hint) from None


# =============================================================================
# Step 2: typed instructions
# =============================================================================


@record(frozen=True, slots=True)
class Meta:
    """Where an instruction comes from: location, raw flags and text."""

    filename: str
    line: int
    end_line: int
    flags: list[str]
    original: str
    source_line: str = ""


@record(frozen=True, slots=True, kw_only=True)
class BaseInstruction:
    """Fields and accessors common to every instruction."""

    keyword: ClassVar[str] = ""
    meta: Meta

    @property
    def line(self) -> int:
        return self.meta.line

    @property
    def end_line(self) -> int:
        return self.meta.end_line

    @property
    def flags(self) -> list[str]:
        return self.meta.flags

    @property
    def original(self) -> str:
        return self.meta.original

    def _expander(self, env: Mapping[str, str], escape: str) -> Callable[[str], str]:
        meta = self.meta

        def expand(word: str) -> str:
            try:
                return shellwords.expand(word, env, escape)
            except DockerfileError as exc:
                raise DockerfileError(
                    exc.message,
                    exc.hint,
                    filename=meta.filename,
                    line=meta.line,
                    source_line=meta.source_line or None,
                ) from None

        return expand


Command: TypeAlias = "list[str] | str"


@record(frozen=True, slots=True, kw_only=True)
class From(BaseInstruction):
    """``FROM [--platform=p] image [AS name]``; ``stage_name`` is lower-cased."""

    keyword: ClassVar[str] = "FROM"
    image: str
    stage_name: str | None = None
    platform: str | None = None

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        """Expand the image and platform (with the global ARGs, for FROM)."""
        word = self._expander(env, escape)
        platform = word(self.platform) if self.platform is not None else None
        return replace(self, image=word(self.image), platform=platform)


@record(frozen=True, slots=True, kw_only=True)
class Run(BaseInstruction):
    """``RUN``: exec form gives a list, shell form a string (``prepend_shell``)."""

    keyword: ClassVar[str] = "RUN"
    command: Command
    prepend_shell: bool
    mounts: list[str] = field(default_factory=list)
    network: str | None = None
    security: str | None = None
    heredocs: list[Heredoc] = field(default_factory=list)


@record(frozen=True, slots=True, kw_only=True)
class Cmd(BaseInstruction):
    keyword: ClassVar[str] = "CMD"
    command: Command
    prepend_shell: bool


@record(frozen=True, slots=True, kw_only=True)
class Entrypoint(BaseInstruction):
    keyword: ClassVar[str] = "ENTRYPOINT"
    command: Command
    prepend_shell: bool


def _expand_pairs(pairs: list[tuple[str, str]], word: Callable[[str], str]) -> list[tuple[str, str]]:
    return [(word(key), word(value)) for key, value in pairs]


@record(frozen=True, slots=True, kw_only=True)
class Env(BaseInstruction):
    """``ENV k=v ...`` or legacy ``ENV k v``; values are raw until :meth:`expand`."""

    keyword: ClassVar[str] = "ENV"
    pairs: list[tuple[str, str]]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, pairs=_expand_pairs(self.pairs, self._expander(env, escape)))


@record(frozen=True, slots=True, kw_only=True)
class Label(BaseInstruction):
    keyword: ClassVar[str] = "LABEL"
    pairs: list[tuple[str, str]]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, pairs=_expand_pairs(self.pairs, self._expander(env, escape)))


@record(frozen=True, slots=True, kw_only=True)
class Arg(BaseInstruction):
    """``ARG name[=default] ...``; a default of None means none was given."""

    keyword: ClassVar[str] = "ARG"
    pairs: list[tuple[str, str | None]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.pairs]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        pairs = [(word(name), word(default) if default is not None else None) for name, default in self.pairs]
        return replace(self, pairs=pairs)


@record(frozen=True, slots=True, kw_only=True)
class Expose(BaseInstruction):
    keyword: ClassVar[str] = "EXPOSE"
    ports: list[str]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(self, ports=[word(port) for port in self.ports])


@record(frozen=True, slots=True, kw_only=True)
class User(BaseInstruction):
    keyword: ClassVar[str] = "USER"
    user: str

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, user=self._expander(env, escape)(self.user))


@record(frozen=True, slots=True, kw_only=True)
class Workdir(BaseInstruction):
    keyword: ClassVar[str] = "WORKDIR"
    path: str

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, path=self._expander(env, escape)(self.path))


@record(frozen=True, slots=True, kw_only=True)
class Volume(BaseInstruction):
    keyword: ClassVar[str] = "VOLUME"
    paths: list[str]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(self, paths=[word(path) for path in self.paths])


@record(frozen=True, slots=True, kw_only=True)
class Stopsignal(BaseInstruction):
    keyword: ClassVar[str] = "STOPSIGNAL"
    signal: str

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, signal=self._expander(env, escape)(self.signal))


@record(frozen=True, slots=True, kw_only=True)
class Healthcheck(BaseInstruction):
    """``HEALTHCHECK NONE`` or ``HEALTHCHECK [flags] CMD ...``.

    ``test`` is the image-config form: ``["NONE"]``, ``["CMD", arg...]`` (exec
    form) or ``["CMD-SHELL", command]``. Durations are in nanoseconds, 0 meaning
    "not set" (the runtime default), as in the image config.
    """

    keyword: ClassVar[str] = "HEALTHCHECK"
    test: list[str]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@record(frozen=True, slots=True, kw_only=True)
class Shell(BaseInstruction):
    keyword: ClassVar[str] = "SHELL"
    shell: list[str]


@record(frozen=True, slots=True, kw_only=True)
class Onbuild(BaseInstruction):
    """``ONBUILD <instruction>``: ``expression`` is what goes in the image config."""

    keyword: ClassVar[str] = "ONBUILD"
    trigger: Instruction
    expression: str


@record(frozen=True, slots=True, kw_only=True)
class Maintainer(BaseInstruction):
    keyword: ClassVar[str] = "MAINTAINER"
    maintainer: str


@record(frozen=True, slots=True, kw_only=True)
class Add(BaseInstruction):
    """``ADD``; ``heredocs`` are the inline sources (``ADD <<EOF /dest``)."""

    keyword: ClassVar[str] = "ADD"
    sources: list[str]
    dest: str
    heredocs: list[Heredoc] = field(default_factory=list)
    chown: str | None = None
    chmod: str | None = None
    checksum: str | None = None
    keep_git_dir: bool = False
    link: bool = False
    excludes: list[str] = field(default_factory=list)

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(
            self,
            sources=[word(src) for src in self.sources],
            dest=word(self.dest),
            chown=word(self.chown) if self.chown is not None else None,
            chmod=word(self.chmod) if self.chmod is not None else None,
            checksum=word(self.checksum) if self.checksum is not None else None,
            excludes=[word(pattern) for pattern in self.excludes],
        )


@record(frozen=True, slots=True, kw_only=True)
class Copy(BaseInstruction):
    """``COPY``; ``from_stage`` is ``--from`` (a stage name, index or image)."""

    keyword: ClassVar[str] = "COPY"
    sources: list[str]
    dest: str
    heredocs: list[Heredoc] = field(default_factory=list)
    from_stage: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: list[str] = field(default_factory=list)

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(
            self,
            sources=[word(src) for src in self.sources],
            dest=word(self.dest),
            from_stage=word(self.from_stage) if self.from_stage is not None else None,
            chown=word(self.chown) if self.chown is not None else None,
            chmod=word(self.chmod) if self.chmod is not None else None,
            excludes=[word(pattern) for pattern in self.excludes],
        )


Instruction: TypeAlias = (
    From
    | Run
    | Cmd
    | Entrypoint
    | Env
    | Arg
    | Label
    | Expose
    | User
    | Workdir
    | Volume
    | Stopsignal
    | Healthcheck
    | Shell
    | Onbuild
    | Maintainer
    | Add
    | Copy
)


# -- flags --------------------------------------------------------------------


class _Kind(enum.Enum):
    BOOL = "bool"
    STRING = "string"
    STRINGS = "strings"


class _Flags:
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


_NO_FLAGS: Mapping[str, _Kind] = {}


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
        return _error(self.node, self.filename, message, hint)

    def flags(self, spec: Mapping[str, _Kind]) -> _Flags:
        parsed = _Flags()
        seen: set[str] = set()
        for raw in self.node.flags:
            name, has_value, value = raw.removeprefix("--").partition("=")
            kind = spec.get(name)
            if kind is None:
                raise self.error(f'unknown flag "--{name}" for {self.name}', self._flag_hint(spec))
            if name in seen and kind is not _Kind.STRINGS:
                raise self.error(f'duplicate flag "--{name}"', "give each flag at most once")
            seen.add(name)
            if kind is _Kind.BOOL:
                parsed.set(name, self._bool_flag(name, has_value, value))
            elif not has_value:
                raise self.error(f'missing a value on flag "--{name}"', f"use --{name}=<value>")
            elif kind is _Kind.STRING:
                parsed.set(name, value)
            else:
                parsed.add(name, value)
        return parsed

    def _bool_flag(self, name: str, has_value: str, value: str) -> str:
        if has_value and not value:
            raise self.error(f'missing a value on flag "--{name}"', "use true or false")
        lower = value.lower()
        if lower in ("", "true"):
            return "true"
        if lower == "false":
            return "false"
        raise self.error(f'expecting boolean value for flag "--{name}", not "{value}"', "use true or false")

    def _flag_hint(self, spec: Mapping[str, _Kind]) -> str:
        if not spec:
            return f"{self.name} takes no flags"
        return f"{self.name} accepts " + ", ".join(f"--{name}" for name in sorted(spec))

    def no_flags(self) -> None:
        self.flags(_NO_FLAGS)

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
    flags = ctx.flags({"platform": _Kind.STRING})
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
    flags = ctx.flags({"mount": _Kind.STRINGS, "network": _Kind.STRING, "security": _Kind.STRING})
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


_HEALTH_FLAGS: Mapping[str, _Kind] = {
    "interval": _Kind.STRING,
    "timeout": _Kind.STRING,
    "start-period": _Kind.STRING,
    "start-interval": _Kind.STRING,
    "retries": _Kind.STRING,
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
            "chown": _Kind.STRING,
            "chmod": _Kind.STRING,
            "checksum": _Kind.STRING,
            "keep-git-dir": _Kind.BOOL,
            "link": _Kind.BOOL,
            "exclude": _Kind.STRINGS,
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
            "from": _Kind.STRING,
            "chown": _Kind.STRING,
            "chmod": _Kind.STRING,
            "link": _Kind.BOOL,
            "parents": _Kind.BOOL,
            "exclude": _Kind.STRINGS,
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
    return _error(node, filename, f'unknown instruction "{written}"', hint)


def parse_instruction(node: RawNode, escape: str = DEFAULT_ESCAPE, filename: str = "Dockerfile") -> Instruction:
    """Parse one raw node into its typed instruction."""
    if node.instruction not in _TYPED_PARSERS:
        raise _unknown_instruction(node, filename)
    return _typed(_Ctx(node, node_args(node, escape, filename), escape, filename))


# =============================================================================
# The whole file
# =============================================================================


@record(frozen=True, slots=True)
class Stage:
    """One build stage: its FROM and the instructions after it."""

    name: str | None
    index: int
    base: From
    instructions: list[Instruction] = field(default_factory=list)


@record(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile.

    ``global_args`` are the ARGs before the first FROM (usable in FROM lines);
    ``instructions`` lists every instruction in file order, FROMs included.
    """

    filename: str
    escape: str
    directives: list[Directive]
    global_args: list[Arg]
    stages: list[Stage]
    instructions: list[Instruction]

    def directive(self, name: str) -> str | None:
        """The value of a parser directive (``syntax``, ``escape``, ``check``), if given."""
        wanted = name.lower()
        return next((d.value for d in self.directives if d.name == wanted), None)

    def stage(self, ref: str) -> Stage | None:
        """The stage named ``ref`` (case-insensitive) or with index ``ref``."""
        wanted = ref.lower()
        for stage in self.stages:
            if stage.name == wanted:
                return stage
        if ref.isdecimal() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


def _stages(instructions: list[Instruction], nodes: list[RawNode], filename: str) -> tuple[list[Arg], list[Stage]]:
    global_args: list[Arg] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for inst, node in zip(instructions, nodes, strict=True):
        if isinstance(inst, From):
            if inst.stage_name is not None:
                if inst.stage_name in names:
                    raise _error(
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
            raise _error(
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
