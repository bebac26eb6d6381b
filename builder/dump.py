"""BuildKit's parse-tree dump: one s-expression per instruction.

``(copy ["--from=a"] "src" "/dest")``: the lower-case keyword, the flags as a
bracketed list, then every argument as :func:`node_args` splits it, each quoted
the way Go's ``strconv.Quote`` does. ONBUILD nests: ``(onbuild (run "echo"))``.
This is the format of BuildKit's parser test results, and what ``pybuild parse``
prints.
"""

from __future__ import annotations

import unicodedata

from .lexer import DEFAULT_ESCAPE, RawNode, lex
from .lineparsers import NodeArgs, node_args

__all__ = ["dump", "dump_node", "go_quote"]

_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def _printable(ch: str) -> bool:
    """Go's ``unicode.IsPrint``: letters, marks, numbers, punctuation, symbols, ASCII space."""
    if ch < "\x7f":
        return ch >= " "
    return unicodedata.category(ch)[0] in "LMNPS"


def _escape_rune(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:  # not a valid rune: Go prints U+FFFD
        return "\\ufffd"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(text: str) -> str:
    """Quote ``text`` exactly as Go's ``strconv.Quote`` (``%q``) does."""
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif _printable(ch):
            out.append(ch)
        else:
            out.append(_escape_rune(ch))
    out.append('"')
    return "".join(out)


def _sexp(node: RawNode, args: NodeArgs) -> str:
    parts = [node.instruction]
    if node.flags:
        parts.append("[" + " ".join(go_quote(flag) for flag in node.flags) + "]")
    if node.child is not None and args.child is not None:
        parts.append("(" + _sexp(node.child, args.child) + ")")
    parts.extend(go_quote(value) for value in args.values)
    return " ".join(parts)


def dump_node(node: RawNode, escape: str = DEFAULT_ESCAPE, filename: str = "Dockerfile") -> str:
    """One instruction as BuildKit dumps it, with its parentheses."""
    return "(" + _sexp(node, node_args(node, escape, filename)) + ")"


def dump(text: str, filename: str = "Dockerfile") -> str:
    """The dump of a whole Dockerfile: one line per instruction, newline-terminated.

    Only the parser layers run (no FROM or flag checks), as in BuildKit's parser
    tests; syntax errors still raise :class:`~pybuild.errors.DockerfileError`.
    """
    lexed = lex(text, filename)
    return "".join(dump_node(node, lexed.escape, filename) + "\n" for node in lexed.nodes)
