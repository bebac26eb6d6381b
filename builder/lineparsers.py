"""Step 1 of parsing an instruction: its text split into an argument list, as BuildKit's line parsers do.

:func:`node_args` splits an instruction's text the way BuildKit's parser does
(``parser/line_parsers.go``): JSON or shell form, ENV and LABEL
name/value/separator triples, ONBUILD nesting. That list is what the parser
dump shows; values keep their quotes. :mod:`.parse` turns it into typed
instructions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeAlias

from pybuild.errors import DockerfileError
from pybuild.records import record

from .lexer import DEFAULT_ESCAPE, NotStringArrayError, RawNode, json_array
from .shellwords import WHITESPACE, is_space

__all__ = ["ArgumentError", "NodeArgs", "located_error", "node_args", "parse_words"]

_WHITESPACE_SPLIT = re.compile(r"[\t\v\f\r ]+")
_SPACE_RUNS = re.compile("[" + re.escape(WHITESPACE) + "]+")



class ArgumentError(Exception):
    """An argument error, located by the caller."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def located_error(node: RawNode, filename: str, message: str, hint: str | None = None) -> DockerfileError:
    """``message`` as an error at ``node``'s line of ``filename``."""
    return DockerfileError(
        message,
        hint,
        filename=filename,
        line=node.start_line,
        source_line=node.source_line or None,
    )


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
        raise ArgumentError(str(exc), 'use a JSON array of strings, e.g. ["echo", "hi"]') from None


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
            raise ArgumentError(
                f"{keyword} must have two arguments",
                f"use {keyword} name=value (or the legacy {keyword} name value)",
            )
        return NodeArgs([parts[0], parts[1], ""])
    values: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise ArgumentError(
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
    except ArgumentError as exc:
        raise located_error(node, filename, exc.message, exc.hint) from None
