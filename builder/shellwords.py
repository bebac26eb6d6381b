"""Shell-word processing: variable expansion, quote removal and word splitting.

This follows BuildKit's ``frontend/dockerfile/shell`` lexer: a small, non-executing
subset of POSIX shell. ``$v``, ``${v}``, ``${v:-w}``, ``${v-w}``, ``${v:+w}``,
``${v+w}``, ``${v:?msg}``, ``${v?msg}``, ``${v#pat}``, ``${v##pat}``, ``${v%pat}``,
``${v%%pat}``, ``${v/pat/repl}`` and ``${v//pat/repl}`` are expanded; single and
double quotes are removed (unless ``raw_quotes``); the escape character (``\\`` or
the backtick chosen by ``# escape=``) escapes the next character.

Word splitting happens *after* expansion, and only on whitespace that came from
unquoted literal text or from an unquoted expansion, exactly as BuildKit's
``ProcessWords`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pybuild.errors import DockerfileError
from pybuild.records import record

__all__ = [
    "WHITESPACE",
    "Expansion",
    "expand",
    "expand_words",
    "heredoc_words",
    "is_space",
    "process",
]

# Go's unicode.IsSpace: Python's str.isspace() minus the ASCII separators 0x1c-0x1f.
WHITESPACE = (
    " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACE_SET = frozenset(WHITESPACE)
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_EOF = ""
#: Nesting depth of ${...} operands accepted (BuildKit has no limit but Go's growing stacks).
MAX_NESTING = 100


def is_space(ch: str) -> bool:
    """Whether ``ch`` is whitespace as Go's ``unicode.IsSpace`` defines it."""
    return ch in _SPACE_SET


@record(frozen=True, slots=True)
class Expansion:
    """The two results of one pass: the whole expanded text and its words."""

    text: str
    words: list[str]


class _ShellError(Exception):
    """A lexing failure; turned into a DockerfileError by the public functions."""


class _Words:
    """Accumulates words the way BuildKit's ``wordsStruct`` does."""

    __slots__ = ("_parts", "_size", "_in_word", "words")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._in_word = False
        self.words: list[str] = []

    def _push(self) -> None:
        self.words.append("".join(self._parts))
        self._parts = []
        self._size = 0
        self._in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACE_SET:
            if self._in_word and self._size:
                self._push()
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        self._in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if self._size:
            self._push()
        return self.words


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal() or ch == "_"


class _Scanner:
    """One pass over ``src``; mirrors BuildKit's ``shellWord``."""

    __slots__ = (
        "src",
        "pos",
        "env",
        "escape",
        "raw_quotes",
        "raw_escapes",
        "skip_unset",
        "heredocs",
        "depth",
    )

    def __init__(
        self,
        src: str,
        env: Mapping[str, str],
        escape: str,
        *,
        raw_quotes: bool,
        raw_escapes: bool,
        skip_unset: bool,
        heredocs: bool,
    ) -> None:
        self.src = src
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.heredocs = heredocs
        self.depth = 0

    # -- character access -------------------------------------------------

    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    # -- the main loop ----------------------------------------------------

    def run(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process until ``stop`` (consumed) or, when ``stop`` is empty, the end."""
        # ${a:-${b:-...}} recurses here once per level: refuse hostile depth before Python's stack runs out
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _ShellError(f"variable substitutions nested too deeply (more than {MAX_NESTING} levels)")
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._run(stop)
        finally:
            self.raw_escapes = saved
            self.depth -= 1

    def _run(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        src = self.src
        end = len(src)
        while self.pos < end:
            ch = src[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.finish()
            if ch == "$":
                text = self.dollar()
                result.append(text)
                words.add_string(text)
            elif ch == "'":
                text = self.single_quoted()
                result.append(text)
                words.add_raw(text)
            elif ch == '"':
                text = self.double_quoted()
                result.append(text)
                words.add_raw(text)
            elif ch == "<" and self.heredocs:
                text = self.possible_heredoc()
                result.append(text)
                words.add_raw(text)
            else:
                self.pos += 1
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    if self.pos >= end:
                        break
                    ch = src[self.pos]
                    self.pos += 1
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _ShellError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.finish()

    # -- quoting ----------------------------------------------------------

    def single_quoted(self) -> str:
        """Everything up to the next ``'`` is literal; nothing can be escaped."""
        self.pos += 1
        close = self.src.find("'", self.pos)
        if close < 0:
            raise _ShellError("unexpected end of statement while looking for matching single-quote")
        body = self.src[self.pos : close]
        self.pos = close + 1
        return f"'{body}'" if self.raw_quotes else body

    def double_quoted(self) -> str:
        """Literal except ``$`` and the escape char, which escapes only ``" $`` and itself."""
        self.pos += 1
        out: list[str] = ['"'] if self.raw_quotes else []
        src = self.src
        end = len(src)
        while True:
            if self.pos >= end:
                raise _ShellError("unexpected end of statement while looking for matching double-quote")
            ch = src[self.pos]
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                if self.pos >= end:
                    continue
                nxt = src[self.pos]
                if nxt in ('"', "$", self.escape):
                    ch = nxt
                    self.pos += 1
            out.append(ch)

    def possible_heredoc(self) -> str:
        """``<<`` swallows the whitespace after it, so ``<< EOF`` stays one word."""
        self.pos += 1
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.peek() in (" ", "\t"):
            self.pos += 1
        return "<<" + self.src[start : self.pos]

    # -- parameter expansion ----------------------------------------------

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def name(self) -> str:
        """A variable name: digits (positional), one special char, or [letters digits _]."""
        src = self.src
        end = len(src)
        start = self.pos
        if start >= end:
            return ""
        first = src[start]
        if first.isdecimal():
            while self.pos < end and src[self.pos].isdecimal():
                self.pos += 1
            return src[start : self.pos]
        if first in _SPECIAL_PARAMS:
            self.pos += 1
            return first
        while self.pos < end and _is_name_char(src[self.pos]):
            self.pos += 1
        return src[start : self.pos]

    def dollar(self) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.skip_unset else ""
            return value
        self.pos += 1
        first = self.peek()
        if first == _EOF:
            raise _ShellError("syntax error: missing '}'")
        if first in ("{", "}", ":"):
            raise _ShellError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            value = self.lookup(name)
            if value is None:
                return "${" + name + "}" if self.skip_unset else ""
            return value
        if op == "/":
            return self.substitute(name)
        if op == ":":
            modifier = self.next()
            return self.modifier(name, modifier, op + modifier, null_is_unset=True)
        if op in ("+", "-", "?", "#", "%"):
            return self.modifier(name, op, op, null_is_unset=False)
        if op == _EOF:
            raise _ShellError("syntax error: missing '}'")
        raise _ShellError(f"unsupported modifier ({op}) in substitution")

    def operand(self, stop: str, raw_escapes: bool, missing: str) -> str:
        try:
            text, _ = self.run(stop, raw_escapes)
        except _ShellError:
            if self.pos >= len(self.src):
                raise _ShellError(missing) from None
            raise
        return text

    def modifier(self, name: str, op: str, spelled: str, *, null_is_unset: bool) -> str:
        word = self.operand("}", op in ("#", "%"), "syntax error: missing '}'")
        value = self.lookup(name)
        if value is None and self.skip_unset:
            return "${" + name + spelled + word + "}"
        unset = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if unset else (value or "")
        if op == "+":
            return "" if unset else word
        if op == "?":
            if value is None:
                raise _ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _ShellError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in ("#", "%"):
            greedy = word.startswith(op)
            if greedy:
                word = word[1:]
            if op == "%":
                return _trim_suffix(word, value or "", greedy)
            return _trim_prefix(word, value or "", greedy)
        raise _ShellError(f"unsupported modifier ({spelled}) in substitution")

    def substitute(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.pos += 1
        pattern = self.operand("/", True, "syntax error: missing '/' in ${}")
        replacement = self.operand("}", True, "syntax error: missing '}'")
        value = self.lookup(name)
        if value is None and self.skip_unset:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _compile_pattern(pattern, greedy=True, anchored=False)
        value = value or ""
        if replace_all:
            return regex.sub(lambda _m: replacement, value)
        match = regex.search(value)
        if match is None:
            return value
        return value[: match.start()] + replacement + value[match.end() :]


# -- shell patterns (for # % / modifiers) -------------------------------------


def _compile_pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """Translate a shell wildcard pattern (``*`` and ``?``, no brackets) to a regex."""
    out: list[str] = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    end = len(pattern)
    while i < end:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            nxt = pattern[i] if i < end else ""
            if nxt in ("}", "/") and nxt:
                continue  # escaped only to get past the ${} parser
            if nxt not in ("*", "?", "\\") or not nxt:
                raise _ShellError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append("\\" + nxt)
            i += 1
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _compile_pattern(pattern, greedy=greedy, anchored=True).match(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each ``\\x`` escape pair in order (``a\\*c`` -> ``c\\*a``)."""
    pieces: list[str] = []
    i = 0
    last = len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            pieces.append(pattern[i : i + 2])
            i += 2
        else:
            pieces.append(pattern[i])
            i += 1
    return "".join(reversed(pieces))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex finds the leftmost match only, so search the reversed value with
    # the reversed pattern to get the shortest/longest rightmost match.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


# -- public API ---------------------------------------------------------------


def process(
    text: str,
    env: Mapping[str, str],
    escape: str = "\\",
    *,
    raw_quotes: bool = False,
    raw_escapes: bool = False,
    skip_unset: bool = False,
) -> Expansion:
    """Expand ``text`` once, returning both the single word and the split words."""
    scanner = _Scanner(
        text,
        env,
        escape,
        raw_quotes=raw_quotes,
        raw_escapes=raw_escapes,
        skip_unset=skip_unset,
        heredocs=False,
    )
    try:
        result, words = scanner.run(_EOF, raw_escapes)
    except _ShellError as exc:
        shown = text if len(text) <= 200 else text[:200] + "..."
        raise DockerfileError(f'failed to process "{shown}": {exc}') from None
    return Expansion(result, words)


def expand(
    word: str,
    env: Mapping[str, str],
    escape: str = "\\",
    *,
    raw_quotes: bool = False,
    raw_escapes: bool = False,
    skip_unset: bool = False,
) -> str:
    """Expand one word (BuildKit's ``ProcessWord``): whitespace is kept, quotes removed."""
    return process(
        word,
        env,
        escape,
        raw_quotes=raw_quotes,
        raw_escapes=raw_escapes,
        skip_unset=skip_unset,
    ).text


def expand_words(
    text: str,
    env: Mapping[str, str],
    escape: str = "\\",
    *,
    raw_quotes: bool = False,
    raw_escapes: bool = False,
    skip_unset: bool = False,
) -> list[str]:
    """Expand and split into words (BuildKit's ``ProcessWords``)."""
    return process(
        text,
        env,
        escape,
        raw_quotes=raw_quotes,
        raw_escapes=raw_escapes,
        skip_unset=skip_unset,
    ).words


_NO_ENV: Mapping[str, str] = {}


def heredoc_words(line: str) -> list[str]:
    """Split an instruction line into raw words for heredoc detection.

    Quotes, escapes and unset variables are all kept verbatim, and ``<<`` keeps
    the whitespace after it, so ``<< EOF`` is one word. Lexing errors are ignored
    (the words found so far are returned), as BuildKit does.
    """
    scanner = _Scanner(
        line,
        _NO_ENV,
        "\\",
        raw_quotes=True,
        raw_escapes=True,
        skip_unset=True,
        heredocs=True,
    )
    try:
        return scanner.run(_EOF, True)[1]
    except _ShellError:
        return []
