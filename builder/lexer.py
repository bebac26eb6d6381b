"""The Dockerfile line splitter: directives, comments, continuations, heredocs.

This is the first of three layers, as in BuildKit's ``frontend/dockerfile/parser``:
it turns the text into one :class:`RawNode` per instruction, with the keyword,
the leading ``--flags`` and the rest of the (joined) line, but does not look
inside the arguments. :mod:`pybuild.builder.lineparsers` and :mod:`pybuild.builder.parse`
parse those, and :mod:`pybuild.builder.shellwords` expands variables in them.
"""

from __future__ import annotations

import json
import re

from pybuild.errors import DockerfileError
from pybuild.records import field, record

from .shellwords import WHITESPACE, heredoc_words, process

__all__ = [
    "DEFAULT_ESCAPE",
    "Directive",
    "Heredoc",
    "LexResult",
    "NotStringArrayError",
    "RawNode",
    "json_array",
    "lex",
    "parse_heredoc",
    "split_command",
    "split_lines",
]

DEFAULT_ESCAPE = "\\"
DIRECTIVE_NAMES = frozenset({"syntax", "escape", "check"})
HEREDOC_INSTRUCTIONS = frozenset({"run", "copy", "add"})

_BOM = "\ufeff"
# Go's RE2 \s is [\t\n\f\r ]; spelled out so Python's broader \s does not leak in.
_DIRECTIVE_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_TOKEN_SPLIT = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_RE = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


@record(frozen=True, slots=True)
class Directive:
    """A parser directive (``# syntax=``, ``# escape=``, ``# check=``) at the top."""

    name: str
    value: str
    line: int


@record(frozen=True, slots=True)
class Heredoc:
    """A here-document attached to a RUN/COPY/ADD instruction.

    ``content`` is the body as it will be used: every line with its newline and,
    for ``<<-`` (``chomp``), with leading tabs removed. ``expand`` is false when
    any part of the delimiter was quoted (``<<"EOF"``, ``<<'EOF'``).
    """

    name: str
    content: str
    expand: bool
    chomp: bool
    fd: int = 0


@record(frozen=True, slots=True)
class RawNode:
    """One instruction as written, before its arguments are parsed.

    ``original`` is the logical line (continuations joined, as BuildKit keeps
    it); ``source`` is the unprocessed text of lines ``start_line``..``end_line``;
    ``rest`` is what follows the keyword and the flags, stripped; ``child`` is the
    nested instruction of an ONBUILD.
    """

    instruction: str
    original: str
    rest: str
    flags: list[str]
    start_line: int
    end_line: int
    heredocs: list[Heredoc] = field(default_factory=list)
    child: RawNode | None = None
    source: str = ""

    @property
    def keyword(self) -> str:
        """The instruction keyword with the spelling used in the file."""
        stripped = self.original.strip(WHITESPACE)
        return _TOKEN_SPLIT.split(stripped, maxsplit=1)[0] if stripped else ""

    @property
    def source_line(self) -> str:
        """The first source line of the instruction (for error messages)."""
        return self.source.split("\n", 1)[0].rstrip("\r")


@record(frozen=True, slots=True)
class LexResult:
    """What the line splitter produces for a whole file."""

    nodes: list[RawNode]
    directives: list[Directive]
    escape: str


class NotStringArrayError(ValueError):
    """A JSON array whose elements are not all strings (``[ "a", [ "b" ] ]``)."""

    def __init__(self, message: str = "when using JSON array syntax, arrays must be comprised of strings only"
                 ) -> None:
        super().__init__(message)


#: Deeper JSON than this is refused before it is decoded (the decoder recurses on depth).
MAX_JSON_DEPTH = 64
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, outside string literals (no recursion)."""
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(text):
        token = m.group(0)
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
        elif token in ("]", "}"):
            depth -= 1
            if depth <= 0:
                break  # the first value is complete: the rest is ignored, as Go's decoder does
    return deepest


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constants(name: str) -> object:
    raise ValueError(f"invalid JSON literal {name}")


_JSON = json.JSONDecoder(parse_constant=_no_constants)


def json_array(rest: str) -> list[str] | None:
    """Decode ``rest`` as the exec (JSON array) form, or return None.

    Like Go's ``json.Decoder``, only the first JSON value is read and anything
    after it is ignored. A valid array with non-string elements raises
    :class:`NotStringArrayError`: BuildKit treats that as an error rather than
    falling back to the shell form.
    """
    text = rest.lstrip(WHITESPACE)
    if not text.startswith("["):
        return None
    if _json_depth(text) > MAX_JSON_DEPTH:
        # it cannot be an array of strings either way; never hand it to the recursive decoder
        raise NotStringArrayError(f"JSON array nested too deeply (more than {MAX_JSON_DEPTH} levels): "
                                  "arrays must be comprised of strings only")
    try:
        value, _ = _JSON.raw_decode(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise NotStringArrayError()
    # Go decodes an unpaired surrogate escape to U+FFFD.
    return [_LONE_SURROGATE.sub("\ufffd", item) for item in value]


def split_command(line: str) -> tuple[str, list[str], str]:
    """Split a logical line into (lower-case keyword, flags, rest)."""
    parts = _TOKEN_SPLIT.split(line.strip(WHITESPACE), maxsplit=1)
    keyword = parts[0].lower()
    if len(parts) < 2:
        return keyword, [], ""
    rest, flags = _extract_flags(parts[1])
    return keyword, flags, rest.strip(WHITESPACE)


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Take the leading ``--flag`` words off ``line``.

    Flag words may be quoted and use ``\\`` escapes (always backslash, whatever
    the escape directive says); quotes and escapes are removed. A bare ``--``
    ends the flags and is dropped.
    """
    flags: list[str] = []
    pos = 0
    end = len(line)
    while True:
        while pos < end and line[pos] in WHITESPACE:
            pos += 1
        if pos >= end:
            return "", flags
        if not line.startswith("--", pos):
            return line[pos:], flags
        word, pos = _flag_word(line, pos)
        if word == "--":
            return line[pos:], flags
        if word:
            flags.append(word)


def _flag_word(line: str, pos: int) -> tuple[str, int]:
    """Read one flag word starting at ``pos``; returns it and the position after."""
    out: list[str] = []
    quote = ""
    end = len(line)
    while pos < end:
        ch = line[pos]
        if quote:
            if ch == quote:
                quote = ""
                pos += 1
                continue
        elif ch in WHITESPACE:
            break
        elif ch in ("'", '"'):
            quote = ch
            pos += 1
            continue
        if ch == "\\":
            pos += 1
            if pos >= end:
                break
            ch = line[pos]
        out.append(ch)
        pos += 1
    return "".join(out), pos


def _physical_lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping line endings (Go's scanner does not split on ``\\r``)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    if lines and lines[0].startswith(_BOM):
        lines[0] = lines[0][len(_BOM) :]
    return lines


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return line.lstrip(WHITESPACE).startswith("#")


def _continuation_regex(escape: str) -> re.Pattern[str]:
    esc = re.escape(escape)
    # The escape char ends a line unless it is itself escaped ("foo \\").
    return re.compile(rf"(?:([^{esc}]){esc}|^{esc})[ \t]*\Z")


class _Lexer:
    """The state of one pass over a file."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.lines = _physical_lines(text)
        self.index = 0
        self.escape = DEFAULT_ESCAPE
        self.continuation = _continuation_regex(DEFAULT_ESCAPE)
        self.directives: list[Directive] = []
        self.directives_done = False

    # -- errors -----------------------------------------------------------

    def error(self, message: str, line: int, hint: str | None = None) -> DockerfileError:
        source = _trim_newline(self.lines[line - 1]) if 0 < line <= len(self.lines) else None
        return DockerfileError(message, hint, filename=self.filename, line=line, source_line=source)

    # -- directives -------------------------------------------------------

    def directive(self, token: str, line: int) -> None:
        """Look for a parser directive in a (left-stripped) line at the top of the file."""
        if self.directives_done:
            return
        match = None
        if token.startswith("#"):
            match = _DIRECTIVE_RE.fullmatch(token[1:].lstrip(WHITESPACE))
        name = match.group(1).lower() if match else ""
        if match is None or name not in DIRECTIVE_NAMES:
            self.directives_done = True
            return
        if any(d.name == name for d in self.directives):
            raise self.error(f"only one {name} parser directive can be used", line)
        value = match.group(2)
        if name == "escape":
            if value not in ("\\", "`"):
                raise self.error(
                    f"invalid escape token '{value}' does not match ` or \\",
                    line,
                    hint="use # escape=\\ or # escape=`",
                )
            self.escape = value
            self.continuation = _continuation_regex(value)
        self.directives.append(Directive(name, value, line))

    # -- lines ------------------------------------------------------------

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Remove a trailing escape char; returns (line, whether the instruction ended)."""
        match = self.continuation.search(line)
        if match is None:
            return line, True
        return line[: match.start()] + (match.group(1) or ""), False

    def logical_line(self) -> tuple[str, int] | None:
        """The next instruction line with continuations joined, and its first line number."""
        lines = self.lines
        while self.index < len(lines):
            token = _trim_newline(lines[self.index]).lstrip(WHITESPACE)
            self.index += 1
            start = self.index
            self.directive(token, start)
            if token.startswith("#"):
                continue
            body, ended = self.trim_continuation(token)
            if ended and not body:
                continue
            parts = [body]
            while not ended and self.index < len(lines):
                raw = lines[self.index]
                self.index += 1
                token = _trim_newline(raw)
                if _is_comment(token) or not token.strip(WHITESPACE):
                    continue
                body, ended = self.trim_continuation(token)
                parts.append(body)
            line = "".join(parts)
            if line.strip(WHITESPACE):
                return line, start
        return None

    # -- nodes ------------------------------------------------------------

    def node(self, line: str, start: int) -> RawNode:
        keyword, flags, rest = split_command(line)
        sub = split_command(rest) if keyword == "onbuild" and rest else None
        heredocs: list[Heredoc] = []
        if "<<" in line:
            target_keyword, target_rest = (sub[0], sub[2]) if sub else (keyword, rest)
            if self.can_contain_heredoc(target_keyword, target_rest, start):
                heredocs = self.heredocs(line, start)
        source = "".join(self.lines[start - 1 : self.index]).rstrip("\r\n")
        child = None
        if sub is not None:
            child = RawNode(sub[0], rest, sub[2], sub[1], start, self.index, heredocs, source=source)
        return RawNode(
            instruction=keyword,
            original=line,
            rest=rest,
            flags=flags,
            start_line=start,
            end_line=self.index,
            heredocs=heredocs,
            child=child,
            source=source,
        )

    def can_contain_heredoc(self, keyword: str, rest: str, start: int) -> bool:
        if keyword not in HEREDOC_INSTRUCTIONS:
            return False
        try:
            return json_array(rest) is None
        except NotStringArrayError as exc:
            raise self.error(str(exc), start) from None

    def heredocs(self, line: str, start: int) -> list[Heredoc]:
        docs: list[Heredoc] = []
        for word in heredoc_words(line):
            try:
                found = parse_heredoc(word)
            except DockerfileError as exc:
                raise self.error(exc.message, start) from None
            if found is None:
                continue
            content = self.heredoc_body(found, start)
            if found.chomp:
                content = _LEADING_TABS.sub("", content)
            docs.append(Heredoc(found.name, content, found.expand, found.chomp, found.fd))
        return docs

    def heredoc_body(self, doc: Heredoc, start: int) -> str:
        body: list[str] = []
        lines = self.lines
        while self.index < len(lines):
            raw = lines[self.index]
            self.index += 1
            candidate = _trim_newline(raw)
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                return "".join(body)
            body.append(raw)
        raise self.error(
            "unterminated heredoc",
            start,
            hint=f"end the here-document with a line containing only {doc.name}",
        )

    def run(self) -> LexResult:
        nodes: list[RawNode] = []
        while (found := self.logical_line()) is not None:
            nodes.append(self.node(*found))
        if not nodes:
            raise DockerfileError(
                "file with no instructions",
                "a Dockerfile needs at least a FROM instruction",
                filename=self.filename,
            )
        return LexResult(nodes, self.directives, self.escape)


def parse_heredoc(word: str) -> Heredoc | None:
    """Recognise a heredoc redirection word (``<<EOF``, ``<<-'EOF'``, ``3<<EOF``).

    Returns a Heredoc with empty content, or None if ``word`` is not one. The
    delimiter may be quoted in whole or in part; then the body is not expanded.
    """
    match = _HEREDOC_RE.fullmatch(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    words = process(rest, {}, skip_unset=True).words
    if len(words) != 1:
        return None
    raw = process(rest, {}, skip_unset=True, raw_quotes=True).words
    if len(raw) != 1:
        raise DockerfileError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    quoted = _count_quotes(raw[0]) != _count_quotes(name)
    return Heredoc(name, "", not quoted, match.group(2) == "-", int(match.group(1) or 0))


def _count_quotes(text: str) -> int:
    return text.count("'") + text.count('"')


def lex(text: str, filename: str = "Dockerfile") -> LexResult:
    """Split Dockerfile text into instructions, directives and the escape char."""
    return _Lexer(text, filename).run()


def split_lines(text: str, filename: str = "Dockerfile") -> list[RawNode]:
    """Split Dockerfile text into one :class:`RawNode` per instruction."""
    return lex(text, filename).nodes
