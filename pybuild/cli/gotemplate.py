"""Go's ``text/template`` as docker's CLI uses it for ``--format``.

``compile(text)`` parses a template once; ``Template.execute(data)`` renders
it. ``render(fmt, rows, headers)`` adds docker's listing conventions on top
(``table``, ``json``, ``\\t``), so ``ps``, ``images`` and the like print what
docker prints. Every error, of parsing or of execution, is a one-line
:class:`~pybuild.errors.UsageError` worded like Go's
(``template: :1: unexpected "}" in operand``).

The data are what pybuild has: JSON-like dicts and lists, and plain objects
whose attributes are docker's field names (``.ID``, ``.State.Status``). A
dict behaves as Go's ``map[string]interface{}``, an object as a Go struct.

Language (Go 1.24's text/template):

- text and ``{{pipeline}}`` actions; ``{{- `` and `` -}}`` trim the white
  space next to them; ``{{/* comments */}}``.
- ``.``, ``$``, fields ``.A.B.C`` (dict keys or attributes; an attribute
  that is a method is called, with arguments: ``{{.Label "k"}}``),
  ``(pipeline).Field``, variables ``$x := ...`` and ``$x = ...``.
- pipelines ``a | b c`` (the previous value is the last argument),
  parenthesised pipelines, string (``"..."``, raw), character, number,
  ``true``/``false``/``nil`` constants.
- ``if``/``else if``/``else``, ``with``/``else with``/``else``,
  ``range`` (lists, dicts in sorted key order, integers) with ``$i, $v :=``,
  ``else``, ``break`` and ``continue``; ``define``, ``template`` and
  ``block``.

Functions, Go's predefined ones:

- ``and``, ``or`` (short-circuit, return an argument), ``not``
- ``eq`` (``eq a b c`` is a == b || a == c), ``ne``, ``lt``, ``le``, ``gt``, ``ge``
- ``len`` (of a string: its UTF-8 bytes), ``index`` (nested: ``index .M "k" 0``), ``slice``
- ``print``, ``printf``, ``println`` (Go's fmt: see below)
- ``html``, ``js``, ``urlquery``

and docker's (docker/cli ``templates.basicFunctions``):

- ``json`` (Go's encoding/json, compact, map keys sorted; docker turns off
  its HTML escaping, so ``<``, ``>``, ``&`` stay as they are)
- ``join LIST SEP``, ``split STR SEP``, ``title``, ``lower``, ``upper``
- ``pad STR LEFT RIGHT`` (spaces around a non-empty string), ``truncate STR N``

Values print as Go's ``%v``: ``true``, ``[a b c]``, ``map[k:v k2:v2]``, floats
as Go prints them (``1.5``, ``1e+06``), ``<nil>`` inside ``print``. A missing
dict key, or a null one, prints ``<no value>`` as Go's does for
``map[string]interface{}``; a field an object lacks is an error.

``printf`` has Go's verbs ``%v %s %q %d %b %o %O %x %X %c %U %t %e %E %f %F
%g %G %T %%``, the flags ``-+# 0``, width and precision (also ``*``), and
Go's error strings (``%!d(string=x)``, ``%!s(MISSING)``, ``%!(EXTRA ...)``).

Left out, as nothing docker prints needs them: the ``call`` function (data
hold no Go functions); explicit argument indexes (``%[1]d``), Go-syntax
``%#v`` (printed as ``%v``), ``%x``/``%b`` of floats and complex numbers; the
``missingkey`` option. ``len``, ``slice``, ``index`` and ``truncate`` count a
string's UTF-8 bytes as Go does; a cut through a character shows as U+FFFD.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Mapping

from pybuild.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, NoReturn

    from lark import Lark, Token, Tree
    from lark.exceptions import UnexpectedInput

    _Child = Tree[Token] | Token


# ----------------------------------------------------------------------------
# Public API


class Template:
    """A parsed template; it holds no state of an execution, so one serves any number of them."""

    __slots__ = ("_source", "_root", "_defines")

    def __init__(self, source: str, root: list[_Node], defines: dict[str, list[_Node]]) -> None:
        self._source = source
        self._root = root
        self._defines = defines

    def execute(self, data: Any) -> str:
        """The template's text for ``data`` (``.`` and ``$``); raises UsageError as Go's Execute fails."""
        run = _Exec(self, _FUNCS)
        run.run(data)
        return "".join(run.out)

    def _execute_partial(self, data: Any, funcs: Mapping[str, _Func]) -> str:
        """What an execution wrote until it failed, if it did: docker prints table headers so."""
        run = _Exec(self, funcs)
        with contextlib.suppress(UsageError):
            run.run(data)
        return "".join(run.out)


def compile(text: str) -> Template:  # noqa: A001 - the API's name, as Go's template.Parse
    """Parse ``text`` as Go's text/template does; a syntax error is a one-line UsageError."""
    from lark.exceptions import UnexpectedInput

    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    return _Builder(text).template(tree)


def render(fmt: str, rows: list[Any], headers: dict[str, str] | None = None, *,
           default_table: str | None = None) -> str:
    """Rows rendered as docker's ``--format`` does, each followed by a newline.

    ``table ...`` adds a header line (each ``{{.Field}}`` shows as
    ``headers[Field]``, or ``FIELD`` when headers lack it) and aligns the
    tab-separated columns as docker's tabwriter (minimum width 10, padding 3).
    A bare ``table`` shows ``default_table`` (the command's own table format),
    or else every column of ``headers``. ``json`` alone is one JSON object per
    row. The two characters ``\\t`` and ``\\n`` stand for a tab and a newline.
    """
    table = fmt.startswith("table")
    template = _compile_for_docker(_docker_format(fmt, table, headers, default_table))
    out = [_execute_for_docker(template, row) + "\n" for row in rows]
    if not table:
        return "".join(out)
    header = template._execute_partial(_Headers(headers or {}), _HEADER_FUNCS)
    return _tabwrite(header + "\n" + "".join(out))


# ----------------------------------------------------------------------------
# docker's --format conventions (docker/cli cli/command/formatter)


def _docker_format(fmt: str, table: bool, headers: Mapping[str, str] | None, default_table: str | None) -> str:
    """The template text docker's formatter executes for ``fmt`` (its ``preFormat``)."""
    if table:
        body = fmt[len("table"):]
    elif fmt == "json":
        body = "{{json .}}"
    else:
        body = fmt
    body = _unescape_format(body.strip(" "))
    if table and not body.strip():
        body = _default_columns(headers, default_table)
    return body


def _unescape_format(text: str) -> str:
    r"""Shells pass ``\t`` as two characters; docker reads them (and ``\n``) as a tab and a newline."""
    return text.replace("\\t", "\t").replace("\\n", "\n")


def _default_columns(headers: Mapping[str, str] | None, default_table: str | None) -> str:
    """A bare ``table``: the command's default table, else a column for each header."""
    if default_table is not None:
        body = default_table[len("table"):] if default_table.startswith("table") else default_table
        return _unescape_format(body.strip(" "))
    if not headers:
        raise UsageError('the format "table" needs columns', "give them as in 'table {{.ID}}\\t{{.Name}}'")
    return "\t".join("{{." + name + "}}" for name in headers)


def _compile_for_docker(text: str) -> Template:
    try:
        return compile(text)
    except UsageError as exc:
        raise UsageError(f"template parsing error: {exc.message}") from None


def _execute_for_docker(template: Template, row: Any) -> str:
    """docker words execution errors as parse errors too (``template parsing error: ...``)."""
    try:
        return template.execute(row)
    except UsageError as exc:
        raise UsageError(f"template parsing error: {exc.message}") from None


class _Headers:
    """What a table's header line renders: any field (or method call) names its column's header.

    docker renders the header with the row template over a map of headers,
    so ``{{.ID}}`` prints ``CONTAINER ID``; being an object whose every
    attribute is a method, this serves ``{{.Label "k"}}`` as well.
    """

    __slots__ = ("_names",)

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = names

    def __getattr__(self, field: str) -> Callable[..., str]:
        if field.startswith("_"):
            raise AttributeError(field)
        header = self._names.get(field, field.upper())
        return lambda *_args: header


def _tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-terminated cells as docker's tabwriter (Go's text/tabwriter, padchar ' ', no flags).

    A column is a run of consecutive lines that have a tab-terminated cell at
    that index; its width is the widest cell plus ``padding``, at least
    ``minwidth``. A line's last cell (after its last tab) is in no column.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    _tab_block(lines, 0, len(lines), [], out, minwidth, padding)
    return "\n".join(out)


def _tab_block(lines: list[list[str]], line0: int, line1: int, widths: list[int], out: list[str],
               minwidth: int, padding: int) -> None:
    """Go's ``Writer.format``: the lines ``[line0, line1)`` whose columns left of ``len(widths)`` are known."""
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        _tab_lines(lines, line0, this, widths, out)
        line0 = this
        width = minwidth
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, _display_width(lines[this][column]) + padding)
            this += 1
        _tab_block(lines, line0, this, [*widths, width], out, minwidth, padding)
        line0 = this
    _tab_lines(lines, line0, line1, widths, out)


def _tab_lines(lines: list[list[str]], line0: int, line1: int, widths: list[int], out: list[str]) -> None:
    for cells in lines[line0:line1]:
        padded = [cell + " " * (widths[j] - _display_width(cell)) if j < len(widths) else cell
                  for j, cell in enumerate(cells)]
        out.append("".join(padded))


def _display_width(text: str) -> int:
    """Terminal columns, as docker's tabwriter counts them (go-runewidth): wide East Asian characters
    take two, combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf", "Cc"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


# ----------------------------------------------------------------------------
# Grammar: the whole template language, text included, parsed by one LALR(1) parser.
#
# Lark's contextual lexer only tries the terminals the parser can take next,
# so TEXT (anything up to "{{") competes with the action tokens only between
# actions. White space inside actions is ignored; where Go needs it (between
# a command's operands) the builder checks token positions, and a field chain
# (".A.B", "$x.A", ").A") is one token, so that ".A .B" stays two operands.

_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
             "true", "false", "nil")

_GRAMMAR = r"""
start: (_item | define)*

_item: TEXT | COMMENT | BAD_COMMENT | action | if_ | with_ | range_ | template | block | break_ | continue_

action: _ld pipeline _rd

if_: _ld "if" pipeline _rd _item* if_tail
if_tail: _ld "end" _rd                                -> end_
       | _ld "else" _rd _item* _ld "end" _rd          -> else_
       | _ld "else" "if" pipeline _rd _item* if_tail  -> else_if

with_: _ld "with" pipeline _rd _item* with_tail
with_tail: _ld "end" _rd                                    -> end_
         | _ld "else" _rd _item* _ld "end" _rd              -> else_
         | _ld "else" "with" pipeline _rd _item* with_tail  -> else_with

range_: _ld "range" pipeline _rd _item* range_tail
range_tail: _ld "end" _rd                        -> end_
          | _ld "else" _rd _item* _ld "end" _rd  -> else_

break_: _ld "break" _rd
continue_: _ld "continue" _rd
define: _ld "define" _name _rd _item* _ld "end" _rd
template: _ld "template" _name pipeline? _rd
block: _ld "block" _name pipeline _rd _item* _ld "end" _rd
_name: STRING | RAW_STRING

pipeline: decl? _commands
decl: VAR ("," VAR)? (DECLARE | ASSIGN)
_commands: command ("|" command)*
command: _operand+
_operand: FIELD | VAR | IDENT | DOT | NIL | TRUE | FALSE | NUMBER | STRING | RAW_STRING | CHAR | paren | chain
paren: LPAR _commands RPAR
chain: LPAR _commands RPAR_CHAIN

_ld: _LD | _LD_TRIM
_rd: _RD | _RD_TRIM

TEXT.2: /(?:[^{]|\{(?!\{))+/
COMMENT: /\{\{(?:-[ \t\r\n])?\/\*(?:[^*]|\*(?!\/))*\*\/(?:[ \t\r\n]-)?\}\}/
BAD_COMMENT: /\{\{(?:-[ \t\r\n])?\/\*/
_LD_TRIM: /\{\{-(?=[ \t\r\n])/
_LD: "{{"
_RD_TRIM: /(?<=[ \t\r\n])-\}\}/
_RD: "}}"
FIELD: /(?:\.[^\W\d]\w*)+/
VAR: /\$\w*(?:\.[^\W\d]\w*)*/
IDENT: /(?!(?:KEYWORDS)(?!\w))[^\W\d]\w*/
NUMBER: /[+-]?(?:\d|\.\d)(?:[\w.]|(?<=[eEpP])[+-])*/
STRING: /"(?:[^"\\\n]|\\[^\n])*"/
RAW_STRING: /`[^`]*`/
CHAR: /'(?:[^'\\\n]|\\[^\n])*'/
LPAR: "("
RPAR: ")"
RPAR_CHAIN: /\)(?:\.[^\W\d]\w*)+/
DOT: "."
NIL: "nil"
TRUE: "true"
FALSE: "false"
DECLARE: ":="
ASSIGN: "="

%ignore /[ \t\r\n]+/
""".replace("KEYWORDS", "|".join(_KEYWORDS))


@functools.cache
def _parser() -> Lark:
    """Built on the first compile (about 0.1 s), never at import: listing without --format pays nothing."""
    from lark import Lark

    return Lark(_GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)


# ----------------------------------------------------------------------------
# Syntax errors, worded as Go's parser words them


def _parse_error(source: str, pos: int, message: str) -> UsageError:
    return UsageError(f"template: :{source.count(chr(10), 0, pos) + 1}: {message}")


def _syntax_error(source: str, exc: UnexpectedInput) -> UsageError:
    """lark's complaint, told as Go tells it: what was found where, not lark's expected-token list."""
    token = getattr(exc, "token", None)
    if token is None or token.type == "$END":
        expected = set(getattr(exc, "expected", ()) or ())
        inside_action = bool(expected & {"_RD", "_RD_TRIM"})
        return _parse_error(source, len(source), "unclosed action" if inside_action else "unexpected EOF")
    pos = token.start_pos if token.start_pos is not None else exc.pos_in_stream or 0
    return _parse_error(source, pos, _unexpected_at(source, pos))


_WORD = re.compile(r"[^\W\d]\w*")
_OPERAND_TEXT = re.compile(r"\.?[\w.$]+|\S")
_OPENED = re.compile(r"(?:\{\{-?|\||\(|:?=)\s*\Z")
_CONTROL_OPENED = re.compile(r"(?:\{\{-?|\belse)\s*(if|with|range|template|block)\s*\Z")


def _unexpected_at(source: str, pos: int) -> str:
    before = source[max(0, pos - 200):pos]
    word = _WORD.match(source, pos)
    if word and word[0] in _KEYWORDS:
        if before.rstrip().endswith(("{{", "{{-")):
            return f"unexpected {{{{{word[0]}}}}}"
        return f"unexpected <{word[0]}> in operand"
    if source.startswith(("}}", "-}}", "|", ")"), pos):
        control = _CONTROL_OPENED.search(before)
        if control:
            return f"missing value for {control[1]}"
        if _OPENED.search(before):
            return "missing value for command"
    quote = source[pos:pos + 1]
    if quote == '"':
        return "unterminated quoted string"
    if quote == "`":
        return "unterminated raw quoted string"
    if quote == "'":
        return "unterminated character constant"
    found = _OPERAND_TEXT.match(source, pos)
    return f"unexpected {_item_repr(found[0] if found else source[pos:pos + 1])} in operand"


def _item_repr(text: str) -> str:
    """A token as Go's parser quotes it in errors: %q, cut after 10 characters."""
    return _go_quote(text[:10]) + "..." if len(text) > 10 else _go_quote(text)


# ----------------------------------------------------------------------------
# The executable tree


class _Node:
    """A piece of a template's list: text, an action or a control structure."""

    __slots__ = ()


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Action(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe


class _Control(_Node):
    """``if``, ``with`` and ``range``: a pipeline, its body and the ``else`` list (empty if none)."""

    __slots__ = ("pipe", "body", "orelse")

    def __init__(self, pipe: _Pipe, body: list[_Node], orelse: list[_Node]) -> None:
        self.pipe = pipe
        self.body = body
        self.orelse = orelse


class _If(_Control):
    __slots__ = ()


class _With(_Control):
    __slots__ = ()


class _Range(_Control):
    __slots__ = ()


class _Break(_Node):
    __slots__ = ()


class _Continue(_Node):
    __slots__ = ()


class _Call(_Node):
    """``{{template "name" pipeline}}`` (and the call half of ``block``)."""

    __slots__ = ("name", "pipe", "where")

    def __init__(self, name: str, pipe: _Pipe | None, where: _Where) -> None:
        self.name = name
        self.pipe = pipe
        self.where = where


class _Where:
    """A node's place in the source, for errors: ``template: :1:2: executing "" at <.Foo>: ...``."""

    __slots__ = ("start", "end", "text")

    def __init__(self, start: int, end: int, text: str) -> None:
        self.start = start
        self.end = end
        self.text = text


class _Pipe:
    """Commands joined by ``|``, and the variables the pipeline declares (``:=``) or assigns (``=``)."""

    __slots__ = ("decl", "assign", "cmds")

    def __init__(self, decl: tuple[str, ...], assign: bool, cmds: tuple[_Command, ...]) -> None:
        self.decl = decl
        self.assign = assign
        self.cmds = cmds


class _Command:
    """A function, a method or a field and its arguments, or a single operand."""

    __slots__ = ("args", "where")

    def __init__(self, args: tuple[_Arg, ...], where: _Where) -> None:
        self.args = args
        self.where = where


class _Arg(_Where):
    """An operand; its subclasses say which."""

    __slots__ = ()


class _Field(_Arg):
    __slots__ = ("names",)

    def __init__(self, where: _Where, names: tuple[str, ...]) -> None:
        super().__init__(where.start, where.end, where.text)
        self.names = names


class _Var(_Arg):
    """``$x`` or ``$x.A.B``."""

    __slots__ = ("name", "names")

    def __init__(self, where: _Where, name: str, names: tuple[str, ...]) -> None:
        super().__init__(where.start, where.end, where.text)
        self.name = name
        self.names = names


class _Ident(_Arg):
    """A function's name."""

    __slots__ = ("name",)

    def __init__(self, where: _Where, name: str) -> None:
        super().__init__(where.start, where.end, where.text)
        self.name = name


class _Dot(_Arg):
    __slots__ = ()


class _Nil(_Arg):
    __slots__ = ()


class _Const(_Arg):
    """A string, number, character or boolean constant."""

    __slots__ = ("value",)

    def __init__(self, where: _Where, value: object) -> None:
        super().__init__(where.start, where.end, where.text)
        self.value = value


class _Paren(_Arg):
    __slots__ = ("pipe",)

    def __init__(self, where: _Where, pipe: _Pipe) -> None:
        super().__init__(where.start, where.end, where.text)
        self.pipe = pipe


class _Chain(_Paren):
    """``(pipeline).A.B``."""

    __slots__ = ("names",)

    def __init__(self, where: _Where, pipe: _Pipe, names: tuple[str, ...]) -> None:
        super().__init__(where, pipe)
        self.names = names


# ----------------------------------------------------------------------------
# From lark's tree to the executable one, with the checks Go's parser makes beyond its grammar


_SPACE = " \t\r\n"
_LITERALS = (_Const, _Dot, _Nil)


class _Builder:
    """Checks what the grammar cannot: functions exist, variables are in scope, break/continue are in
    a range, operands are separated by spaces; and applies the trim markers to the text."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.defines: dict[str, list[_Node]] = {}

    def fail(self, pos: int, message: str) -> NoReturn:
        raise _parse_error(self.source, pos, message)

    def template(self, tree: Tree[Token]) -> Template:
        root = self.items(tree.children)
        return Template(self.source, root, self.defines)

    def items(self, children: Sequence[_Child]) -> list[_Node]:
        nodes = []
        for child in children:
            node = self.item(child)
            if node is not None:
                nodes.append(node)
        return nodes

    def scoped_items(self, children: Sequence[_Child]) -> list[_Node]:
        """A body: the variables it declares end with it, as in Go."""
        mark = len(self.vars)
        nodes = self.items(children)
        del self.vars[mark:]
        return nodes

    def item(self, child: _Child) -> _Node | None:
        if isinstance(child, str):
            return self.token_item(child)
        kind = child.data
        if kind == "action":
            return _Action(self.pipeline(child.children[0], "command"))
        if kind in ("if_", "with_"):
            return self.if_or_with(child)
        if kind == "range_":
            return self.range_(child)
        if kind in ("break_", "continue_"):
            return self.loop_control(child)
        if kind == "template":
            return self.template_call(child)
        if kind == "block":
            return self.block(child)
        self.define(child)
        return None

    def token_item(self, token: Token) -> _Node | None:
        if token.type == "TEXT":
            text = self.trimmed(token)
            return _Text(text) if text else None
        if token.type == "BAD_COMMENT":
            closed = self.source.find("*/", token.end_pos)
            self.fail(token.start_pos or 0,
                      "unclosed comment" if closed < 0 else "comment ends before closing delimiter")
        return None  # a comment

    def trimmed(self, token: Token) -> str:
        """The text less the white space a neighbouring ``{{- `` or `` -}}`` trims (ASCII space, tab, CR, LF)."""
        text = str(token)
        start, end = token.start_pos or 0, token.end_pos or 0
        if self.source.startswith("{{-", end) and self.source[end + 3:end + 4] in tuple(_SPACE):
            text = text.rstrip(_SPACE)
        if start >= 4 and self.source.startswith("-}}", start - 3) and self.source[start - 4] in _SPACE:
            text = text.lstrip(_SPACE)
        return text

    def if_or_with(self, tree: Tree[Token]) -> _Control:
        """``if`` and ``with``; ``{{else if ...}}`` is an ``if`` alone in the else list, as Go reads it."""
        kind = _If if tree.data in ("if_", "else_if") else _With
        mark = len(self.vars)
        pipe = self.pipeline(tree.children[0], "if" if kind is _If else "with")
        body = self.scoped_items(tree.children[1:-1])
        tail = tree.children[-1]
        assert not isinstance(tail, str)
        if tail.data == "end_":
            orelse: list[_Node] = []
        elif tail.data == "else_":
            orelse = self.scoped_items(tail.children)
        else:
            orelse = [self.if_or_with(tail)]
        del self.vars[mark:]
        return kind(pipe, body, orelse)

    def range_(self, tree: Tree[Token]) -> _Range:
        mark = len(self.vars)
        pipe = self.pipeline(tree.children[0], "range")
        self.range_depth += 1
        body = self.scoped_items(tree.children[1:-1])
        self.range_depth -= 1
        tail = tree.children[-1]
        assert not isinstance(tail, str)
        orelse = self.scoped_items(tail.children)
        del self.vars[mark:]
        return _Range(pipe, body, orelse)

    def loop_control(self, tree: Tree[Token]) -> _Node:
        word = "break" if tree.data == "break_" else "continue"
        if not self.range_depth:
            self.fail(tree.meta.start_pos if not tree.meta.empty else 0, f"{{{{{word}}}}} outside {{{{range}}}}")
        return _Break() if word == "break" else _Continue()

    def template_call(self, tree: Tree[Token]) -> _Call:
        name_token = tree.children[0]
        assert isinstance(name_token, str)
        pipe = self.pipeline(tree.children[1], "template") if len(tree.children) > 1 else None
        start = name_token.start_pos or 0
        return _Call(self.string(name_token), pipe, _Where(start, start, "{{template " + name_token + "}}"))

    def block(self, tree: Tree[Token]) -> _Call:
        """``{{block "name" pipeline}}T{{end}}``: defines ``name`` as T, and calls it here."""
        name_token = tree.children[0]
        assert isinstance(name_token, str)
        pipe = self.pipeline(tree.children[1], "block")
        self.add_define(name_token, tree.children[2:])
        start = name_token.start_pos or 0
        return _Call(self.string(name_token), pipe, _Where(start, start, "{{template " + name_token + "}}"))

    def define(self, tree: Tree[Token]) -> None:
        name_token = tree.children[0]
        assert isinstance(name_token, str)
        self.add_define(name_token, tree.children[1:])

    def add_define(self, name_token: Token, children: Sequence[_Child]) -> None:
        """A template body gets a scope of its own; an empty definition does not replace another (Go's rule)."""
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body = self.items(children)
        self.vars, self.range_depth = saved
        name = self.string(name_token)
        if name in self.defines and not _is_empty(body) and not _is_empty(self.defines[name]):
            self.fail(name_token.start_pos or 0, f"template: multiple definition of template {_go_quote(name)}")
        if name not in self.defines or not _is_empty(body):
            self.defines[name] = body

    def pipeline(self, tree: _Child, context: str) -> _Pipe:
        assert not isinstance(tree, str)
        children = list(tree.children)
        decl = children.pop(0) if children and not isinstance(children[0], str) and \
            children[0].data == "decl" else None
        cmds = self.commands(children)
        if decl is None:
            return _Pipe((), False, cmds)
        assert not isinstance(decl, str)
        names, assign = self.declare(decl, context)
        return _Pipe(names, assign, cmds)

    def declare(self, decl: Tree[Token], context: str) -> tuple[tuple[str, ...], bool]:
        """The variables of ``$x :=`` or ``$x =`` (two only in a range), in scope from here on."""
        tokens = [t for t in decl.children if isinstance(t, str)]
        names = [t for t in tokens if t.type == "VAR"]
        assign = any(t.type == "ASSIGN" for t in tokens)
        if len(names) > 1 and context != "range":
            self.fail(names[1].start_pos or 0, f"too many declarations in {context}")
        for name in names:
            if "." in name:
                self.fail(name.start_pos or 0, f"unexpected {_item_repr(str(name))} in declaration")
            if assign and str(name) not in self.vars:
                self.fail(name.start_pos or 0, f"undefined variable {_go_quote(str(name))}")
        if not assign:
            self.vars.extend(str(n) for n in names)
        return tuple(str(n) for n in names), assign

    def commands(self, children: Sequence[_Child]) -> tuple[_Command, ...]:
        cmds = tuple(self.command(c) for c in children)
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], _LITERALS):
                self.fail(cmd.where.start, f"non executable command in pipeline stage {stage}")
        return cmds

    def command(self, tree: _Child) -> _Command:
        assert not isinstance(tree, str)
        args = tuple(self.operand(c) for c in tree.children)
        for before, after in zip(args, args[1:], strict=False):
            if before.end >= after.start:  # Go's lexer needs white space between operands
                self.fail(after.start, f"unexpected {_item_repr(after.text)} in operand")
        start, end = args[0].start, args[-1].end
        return _Command(args, _Where(start, end, self.source[start:end]))

    def operand(self, child: _Child) -> _Arg:
        if not isinstance(child, str):
            return self.parenthesised(child)
        where = _Where(child.start_pos or 0, child.end_pos or 0, str(child))
        kind = child.type
        if kind == "FIELD":
            return _Field(where, tuple(child[1:].split(".")))
        if kind == "VAR":
            name, *names = child.split(".")
            if name not in self.vars:
                self.fail(where.start, f"undefined variable {_go_quote(name)}")
            return _Var(where, name, tuple(names))
        if kind == "IDENT":
            if child not in _FUNCS:
                self.fail(where.start, f"function {_go_quote(str(child))} not defined")
            return _Ident(where, str(child))
        if kind == "DOT":
            return _Dot(where.start, where.end, where.text)
        if kind == "NIL":
            return _Nil(where.start, where.end, where.text)
        return _Const(where, self.constant(child))

    def parenthesised(self, tree: Tree[Token]) -> _Arg:
        first, last = tree.children[0], tree.children[-1]
        assert isinstance(first, str) and isinstance(last, str)
        start, end = first.start_pos or 0, last.end_pos or 0
        where = _Where(start, end, self.source[start:end])
        pipe = _Pipe((), False, self.commands(tree.children[1:-1]))
        if tree.data == "chain":
            return _Chain(where, pipe, tuple(last[2:].split(".")))
        return _Paren(where, pipe)

    def constant(self, token: Token) -> object:
        kind = token.type
        if kind in ("TRUE", "FALSE"):
            return kind == "TRUE"
        if kind == "NUMBER":
            return self.number(token)
        if kind == "CHAR":
            text = self.unquote(token, "'")
            if len(text) != 1:
                self.fail(token.start_pos or 0, f"malformed character constant: {token}")
            return ord(text)
        return self.string(token)

    def string(self, token: Token) -> str:
        if token.type == "RAW_STRING":
            return token[1:-1].replace("\r", "")  # Go drops carriage returns from raw strings
        return self.unquote(token, '"')

    def unquote(self, token: Token, quote: str) -> str:
        try:
            return _unquote(token[1:-1], quote)
        except ValueError as exc:
            self.fail(token.start_pos or 0, f"{exc} in {token}")

    def number(self, token: Token) -> int | float:
        try:
            return _parse_number(token)
        except ValueError:
            self.fail(token.start_pos or 0, f"bad number syntax: {_go_quote(str(token))}")


def _is_empty(body: list[_Node]) -> bool:
    """Go's IsEmptyTree: nothing but white space and comments."""
    return all(isinstance(n, _Text) and not n.text.strip() for n in body)


_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.S)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote(body: str, quote: str) -> str:
    """A Go string or character literal's text: ``\\x`` and octal escapes are bytes, as in Go."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(body):
        out += body[pos:m.start()].encode("utf-8", "surrogatepass")
        pos = m.end()
        hex_byte, octal, short_u, long_u, single = m.groups()
        if hex_byte or octal:
            value = int(hex_byte, 16) if hex_byte else int(octal, 8)
            if value > 255:
                raise ValueError("octal escape value > 255")
            out.append(value)
        elif short_u or long_u:
            code = int(short_u or long_u, 16)
            if code > 0x10FFFF or 0xD800 <= code < 0xE000:
                raise ValueError("escape sequence is invalid Unicode code point")
            out += chr(code).encode()
        elif single in _SIMPLE_ESCAPES or single == quote:
            out += (_SIMPLE_ESCAPES.get(single) or quote).encode()
        else:
            raise ValueError("unknown escape sequence")
    out += body[pos:].encode("utf-8", "surrogatepass")
    return out.decode("utf-8", "replace")


_DIGITS = r"\d(?:_?\d)*"
_HEX = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_GO_INT = re.compile(r"[+-]?(?:0[xX]_?" + _HEX + r"|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])*|[1-9](?:_?\d)*)")
_GO_FLOAT = re.compile(r"[+-]?(?:(?:" + _DIGITS + r")?\.(?:" + _DIGITS + r")?(?:[eE][+-]?" + _DIGITS + r")?"
                       r"|" + _DIGITS + r"[eE][+-]?" + _DIGITS + r")")
_GO_HEX_FLOAT = re.compile(r"[+-]?0[xX]_?(?:" + _HEX + r")?(?:\.(?:" + _HEX + r")?)?[pP][+-]?" + _DIGITS)


def _parse_number(text: str) -> int | float:
    """A Go number literal: an int unless it has a fraction or exponent (Go's idealConstant)."""
    plain = text.replace("_", "")
    if _GO_INT.fullmatch(text):
        sign, digits = ("-" if plain[0] == "-" else ""), plain.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567_":
            return int(sign + digits, 8)  # Go's legacy octal, 0755
        return int(sign + digits, 0)
    if _GO_FLOAT.fullmatch(text) and any(ch.isdigit() for ch in text):
        return float(plain)
    if _GO_HEX_FLOAT.fullmatch(text):
        return float.fromhex(plain)
    raise ValueError(text)


# ----------------------------------------------------------------------------
# Execution


_MAX_DEPTH = 100  # template calls nested; Go allows 100000, Python's stack fewer


class _Missing:
    """Go's invalid reflect.Value: what a missing map key yields while a field chain is evaluated."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


_MISSING = _Missing()
_NO_FINAL = _Missing()  # a command that is the first of its pipeline has no value piped in


class _BreakLoop(Exception):
    """``{{break}}``, caught by the innermost range."""


class _ContinueLoop(Exception):
    """``{{continue}}``, caught by the innermost range."""


class _FuncError(Exception):
    """A function failed: reported as Go's ``error calling NAME: ...``."""


class _ArgError(_FuncError):
    """A function got an argument of a type it does not take: reported as it is, as Go does."""


class _Exec:
    """One execution: the output so far, the variables in scope and the template being run."""

    def __init__(self, template: Template, funcs: Mapping[str, _Func]) -> None:
        self.template = template
        self.funcs = funcs
        self.out: list[str] = []
        self.names: list[str] = []
        self.values: list[Any] = []
        self.name = ""
        self.depth = 0

    def run(self, data: Any) -> None:
        self.names, self.values = ["$"], [data]
        self.walk(data, self.template._root)

    def fail(self, where: _Where, message: str) -> NoReturn:
        source = self.template._source
        line_start = source.rfind("\n", 0, where.start) + 1
        line = source.count("\n", 0, where.start) + 1
        column = len(source[line_start:where.start].encode())
        raise UsageError(f"template: :{line}:{column}: executing {_go_quote(self.name)} at <{where.text}>: {message}")

    # -- statements

    def walk(self, dot: Any, nodes: list[_Node]) -> None:
        for node in nodes:
            kind = type(node)
            if kind is _Text:
                self.out.append(node.text)  # type: ignore[attr-defined]
            elif kind is _Action:
                pipe: _Pipe = node.pipe  # type: ignore[attr-defined]
                value = self.pipeline(dot, pipe)
                if not pipe.decl:
                    self.out.append(_print_value(value))
            elif kind is _Range:
                self.range_(dot, node)  # type: ignore[arg-type]
            elif kind is _If or kind is _With:
                self.if_or_with(dot, node)  # type: ignore[arg-type]
            elif kind is _Call:
                self.call_template(dot, node)  # type: ignore[arg-type]
            elif kind is _Break:
                raise _BreakLoop
            else:
                raise _ContinueLoop

    def if_or_with(self, dot: Any, node: _Control) -> None:
        mark = len(self.names)
        value = self.pipeline(dot, node.pipe)
        if _truth(value):
            self.walk(value if isinstance(node, _With) else dot, node.body)
        elif node.orelse:
            self.walk(dot, node.orelse)
        self.pop(mark)

    def range_(self, dot: Any, node: _Range) -> None:
        outer = len(self.names)
        value = self.pipeline(dot, node.pipe)
        mark = len(self.names)
        empty = True
        for key, element in self.range_items(value, node):
            empty = False
            self.set_range_vars(node.pipe, key, element)
            try:
                self.walk(element, node.body)
            except _ContinueLoop:
                pass
            except _BreakLoop:
                self.pop(mark)
                break
            self.pop(mark)
        if empty and node.orelse:
            self.walk(dot, node.orelse)
        self.pop(outer)

    def range_items(self, value: Any, node: _Range) -> Iterator[tuple[Any, Any]]:
        """What a range visits: (index, element) of a list, (key, value) of a dict in key order, 0..n-1."""
        if value is None:
            return iter(())
        if isinstance(value, (list, tuple)):
            return enumerate(value)
        if isinstance(value, Mapping):
            return ((key, value[key]) for key in _sorted_keys(value))
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.fail(node.pipe.cmds[0].where, f"can't use {value} to iterate over more than one variable")
            return ((i, i) for i in range(value))
        if not isinstance(value, (str, bytes, bool, float)) and hasattr(value, "__iter__"):
            return enumerate(list(value))
        self.fail(node.pipe.cmds[0].where, f"range can't iterate over {_sprint_v(value)}")

    def set_range_vars(self, pipe: _Pipe, key: Any, element: Any) -> None:
        """Go's walkRange: one variable gets the element; two get the index (or key) and the element."""
        if not pipe.decl:
            return
        if pipe.assign:
            if len(pipe.decl) > 1:
                self.set_var(pipe.decl[0], key)
                self.set_var(pipe.decl[1], element)
            else:
                self.set_var(pipe.decl[0], element)
            return
        self.values[-1] = element
        if len(pipe.decl) > 1:
            self.values[-2] = key

    def call_template(self, dot: Any, node: _Call) -> None:
        body = self.template._defines.get(node.name)
        if body is None:
            self.fail(node.where, f"template {_go_quote(node.name)} not defined")
        if self.depth >= _MAX_DEPTH:
            self.fail(node.where, f"exceeded maximum template depth ({_MAX_DEPTH})")
        value = self.pipeline(dot, node.pipe) if node.pipe is not None else None
        saved = self.names, self.values, self.name
        self.names, self.values, self.name = ["$"], [value], node.name
        self.depth += 1
        try:
            self.walk(value, body)
        finally:
            self.names, self.values, self.name = saved
            self.depth -= 1

    # -- variables

    def pop(self, mark: int) -> None:
        del self.names[mark:]
        del self.values[mark:]

    def variable(self, name: str, where: _Where) -> Any:
        for i in range(len(self.names) - 1, -1, -1):
            if self.names[i] == name:
                return self.values[i]
        self.fail(where, f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for i in range(len(self.names) - 1, -1, -1):
            if self.names[i] == name:
                self.values[i] = value
                return
        raise UsageError(f"template: undefined variable: {name}")

    # -- pipelines and commands

    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        value: Any = _NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.assign:
                self.set_var(name, value)
            else:
                self.names.append(name)
                self.values.append(value)
        return value

    def command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        """A command's value; ``final`` is the previous command's, passed as the last argument."""
        first, args = cmd.args[0], cmd.args[1:]
        if isinstance(first, _Field):
            return self.field_chain(dot, dot, first.names, args, final, first)
        if isinstance(first, _Chain):
            return self.field_chain(dot, self.pipeline(dot, first.pipe), first.names, args, final, first)
        if isinstance(first, _Ident):
            return self.call(dot, first.name, args, final, cmd.where)
        if isinstance(first, _Var):
            value = self.variable(first.name, first)
            if first.names:
                return self.field_chain(dot, value, first.names, args, final, first)
            self.not_a_function(cmd, final)
            return value
        self.not_a_function(cmd, final)
        if isinstance(first, _Paren):
            return self.pipeline(dot, first.pipe)
        if isinstance(first, _Dot):
            return dot
        if isinstance(first, _Nil):
            self.fail(first, "nil is not a command")
        assert isinstance(first, _Const)
        return first.value

    def not_a_function(self, cmd: _Command, final: Any) -> None:
        if len(cmd.args) > 1 or final is not _NO_FINAL:
            self.fail(cmd.where, f"can't give argument to non-function {cmd.args[0].text}")

    def arg(self, dot: Any, node: _Arg) -> Any:
        """An argument's value; a missing key is nil (Go's zero interface{})."""
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Field):
            return self.field_chain(dot, dot, node.names, (), _NO_FINAL, node)
        if isinstance(node, _Var):
            value = self.variable(node.name, node)
            return self.field_chain(dot, value, node.names, (), _NO_FINAL, node) if node.names else value
        if isinstance(node, _Chain):
            return self.field_chain(dot, self.pipeline(dot, node.pipe), node.names, (), _NO_FINAL, node)
        if isinstance(node, _Paren):
            return self.pipeline(dot, node.pipe)
        if isinstance(node, _Ident):
            return self.call(dot, node.name, (), _NO_FINAL, node)
        if isinstance(node, _Dot):
            return dot
        return None

    # -- fields

    def field_chain(self, dot: Any, receiver: Any, names: tuple[str, ...], args: tuple[_Arg, ...], final: Any,
                    where: _Where) -> Any:
        """``.A.B.C`` from ``receiver``: only the last name gets the arguments.

        A missing key makes the rest of the chain missing too (Go goes on with
        an invalid value); a nil met inside the chain is an error, as Go's
        nil interface is. The chain's value is None when it is missing.
        """
        value = _MISSING if receiver is None else receiver
        last = len(names) - 1
        for i, name in enumerate(names):
            value = self.field(dot, value, name, args if i == last else (), final if i == last else _NO_FINAL, where)
        return None if value is _MISSING else value

    def field(self, dot: Any, receiver: Any, name: str, args: tuple[_Arg, ...], final: Any, where: _Where) -> Any:
        if receiver is _MISSING:
            return _MISSING
        has_args = bool(args) or final is not _NO_FINAL
        if receiver is None:
            self.fail(where, f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, Mapping):
            if has_args:
                self.fail(where, f"{name} is not a method but has arguments")
            try:
                return receiver[name]
            except KeyError:
                return _MISSING
        if name.startswith("_") or isinstance(receiver, _VALUE_TYPES):
            self.fail(where, f"can't evaluate field {name} in type {_go_type(receiver)}")
        try:
            attr = getattr(receiver, name)
        except AttributeError:
            self.fail(where, f"can't evaluate field {name} in type {_go_type(receiver)}")
        if callable(attr) and not isinstance(attr, type):
            return self.call_method(dot, attr, name, args, final, where)
        if has_args:
            self.fail(where, f"{name} has arguments but cannot be invoked as function")
        return attr

    def call_method(self, dot: Any, method: Callable[..., Any], name: str, args: tuple[_Arg, ...], final: Any,
                    where: _Where) -> Any:
        values = [self.arg(dot, a) for a in args]
        if final is not _NO_FINAL:
            values.append(final)
        try:
            return method(*values)
        except UsageError:
            raise
        except Exception as exc:
            self.fail(where, f"error calling {name}: {exc}")

    # -- functions

    def call(self, dot: Any, name: str, args: tuple[_Arg, ...], final: Any, where: _Where) -> Any:
        func = self.funcs[name]
        given = len(args) + (final is not _NO_FINAL)
        if given < func.min_args or (func.max_args is not None and given > func.max_args):
            self.fail(where, func.arity_error(given))
        if func.lazy:
            return self.and_or(dot, name, args, final)
        values = [self.arg(dot, a) for a in args]
        if final is not _NO_FINAL:
            values.append(final)
        try:
            return func.impl(*values)
        except _ArgError as exc:
            self.fail(where, str(exc))
        except _FuncError as exc:
            self.fail(where, f"error calling {name}: {exc}")

    def and_or(self, dot: Any, name: str, args: tuple[_Arg, ...], final: Any) -> Any:
        """Go's and/or evaluate their arguments only until the answer is known, and return that argument."""
        stop_at = name == "or"
        value = None
        for node in args:
            value = self.arg(dot, node)
            if _truth(value) == stop_at:
                return value
        return final if final is not _NO_FINAL else value


# ----------------------------------------------------------------------------
# Values as Go sees them


_VALUE_TYPES = (str, bytes, bool, int, float, list, tuple, set, frozenset)


def _go_type(value: Any) -> str:
    """The Go type docker's JSON-like data would have: for error messages and %T."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return type(value).__qualname__


def _truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false; structs are true."""
    if value is None or value is _MISSING:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (str, bytes, list, tuple, Mapping, set, frozenset)):
        return len(value) > 0
    return True


def _sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    """A map's keys in Go's order (sorted), whatever their mix of types."""
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=lambda k: (type(k).__name__, str(k)))


def _struct_fields(value: Any) -> list[tuple[str, Any]] | None:
    """The public fields of a dataclass or plain object, as Go prints a struct; None for other objects."""
    fields = getattr(type(value), "__dataclass_fields__", None)
    if fields is not None:
        return [(name, getattr(value, name)) for name in fields if not name.startswith("_")]
    kind: Any = type(value)
    if kind.__str__ is object.__str__ and kind.__repr__ is object.__repr__ and hasattr(value, "__dict__"):
        return [(name, v) for name, v in vars(value).items() if not name.startswith("_")]
    return None


def _print_value(value: Any) -> str:
    """An action's output: Go prints a missing (or nil, from a map) value as ``<no value>``."""
    if type(value) is str:
        return value
    if value is None:
        return "<no value>"
    return _sprint_v(value)


def _sprint_v(value: Any) -> str:
    """Go's ``%v``."""
    return _format(value, "v", _PLAIN, 0)


# ----------------------------------------------------------------------------
# fmt: Go's Sprint, Sprintln and Sprintf


class _Spec:
    """A printf directive's flags, width and precision."""

    __slots__ = ("minus", "plus", "sharp", "space", "zero", "width", "prec", "plus_v")

    def __init__(self, flags: str = "") -> None:
        self.minus = "-" in flags
        self.plus = "+" in flags
        self.sharp = "#" in flags
        self.space = " " in flags
        self.zero = "0" in flags and not self.minus  # Go pads with zeros on the left only
        self.width: int | None = None
        self.prec: int | None = None
        self.plus_v = False


_PLAIN = _Spec()
_DIRECTIVE = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:(\.)(\*|\d+)?)?(.)?", re.S)


def _sprint(args: Sequence[Any]) -> str:
    """Go's Sprint: operands as %v, a space between two when neither is a string."""
    out: list[str] = []
    previous_string = True
    for value in args:
        is_string = isinstance(value, str)
        if out and not is_string and not previous_string:
            out.append(" ")
        out.append(_sprint_v(value))
        previous_string = is_string
    return "".join(out)


def _sprintln(args: Sequence[Any]) -> str:
    """Go's Sprintln: operands as %v, spaces between all, a newline after."""
    return " ".join(_sprint_v(v) for v in args) + "\n"


def _sprintf(fmt: str, args: Sequence[Any]) -> str:
    """Go's Sprintf, with its in-band error strings rather than exceptions."""
    out: list[str] = []
    pos = 0
    used = 0
    while True:
        percent = fmt.find("%", pos)
        if percent < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:percent])
        m = _DIRECTIVE.match(fmt, percent)
        assert m is not None
        pos = m.end()
        flags, width, dot, prec, verb = m.groups()
        spec = _Spec(flags)
        used = _directive_numbers(spec, width, dot, prec, args, used, out)
        if verb is None:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        if verb == "v":
            spec.plus_v, spec.plus = spec.plus, False
        out.append(_format(args[used], verb, spec, 0))
        used += 1
    if used < len(args):
        extra = ", ".join("<nil>" if a is None else f"{_go_type(a)}={_sprint_v(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _directive_numbers(spec: _Spec, width: str | None, dot: str | None, prec: str | None, args: Sequence[Any],
                       used: int, out: list[str]) -> int:
    """Width and precision, from the directive or (``*``) from the arguments; returns the arguments used."""
    if width == "*":
        number, used = _star_arg(args, used)
        if number is None:
            out.append("%!(BADWIDTH)")
        elif number < 0:
            spec.width, spec.minus, spec.zero = -number, True, False
        else:
            spec.width = number
    elif width is not None:
        spec.width = int(width)
    if dot:
        if prec == "*":
            number, used = _star_arg(args, used)
            if number is None:
                out.append("%!(BADPREC)")
            spec.prec = number if number is not None and number >= 0 else None
        else:
            spec.prec = int(prec) if prec else 0
    return used


def _star_arg(args: Sequence[Any], used: int) -> tuple[int | None, int]:
    if used >= len(args):
        return None, used
    value = args[used]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 1_000_000:
        return value, used + 1
    return None, used + 1


def _format(value: Any, verb: str, spec: _Spec, depth: int) -> str:
    """One operand for one verb, as Go's printArg/printValue; ``depth`` > 0 inside a list or map."""
    if verb == "T":
        return _pad(_go_type(value), spec)
    if value is None or value is _MISSING:
        return _pad("<nil>", spec) if verb == "v" or depth else _bad_verb(verb, None)
    if isinstance(value, bool):
        return _pad("true" if value else "false", spec) if verb in "tv" else _bad_verb(verb, value)
    if isinstance(value, int):
        return _format_int(value, verb, spec)
    if isinstance(value, float):
        return _format_float(value, verb, spec)
    if isinstance(value, str):
        return _format_str(value, verb, spec)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_format(v, verb, spec, depth + 1) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{_format(k, verb, spec, depth + 1)}:{_format(value[k], verb, spec, depth + 1)}"
                 for k in _sorted_keys(value))
        return "map[" + " ".join(pairs) + "]"
    fields = _struct_fields(value)
    if fields is not None:
        return "{" + " ".join((f"{name}:" if spec.plus_v else "") + _format(v, verb, spec, depth + 1)
                              for name, v in fields) + "}"
    return _format_str(str(value), verb, spec) if verb in "vsqxX" else _bad_verb(verb, value)


def _bad_verb(verb: str, value: Any) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(value)}={_sprint_v(value)})"


def _pad(text: str, spec: _Spec) -> str:
    """Go pads to the width in runes, with spaces (zeros are the numbers' business)."""
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = " " * (spec.width - len(text))
    return text + fill if spec.minus else fill + text


_INT_BASES = {"v": "d", "d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}


def _format_int(value: int, verb: str, spec: _Spec) -> str:
    if verb == "c":
        return _pad(_rune(value), spec)
    if verb == "q":
        return _pad(_go_quote(_rune(value), "'", spec.plus), spec)
    if verb == "U":
        return _pad(_unicode_point(value, spec.sharp), spec)
    base = _INT_BASES.get(verb)
    if base is None:
        return _bad_verb(verb, value)
    negative = value < 0
    digits = format(abs(value), base)
    if spec.prec is not None:
        if spec.prec == 0 and value == 0:
            return " " * (spec.width or 0)
        digits = digits.rjust(spec.prec, "0")
    elif spec.zero and spec.width is not None:
        digits = digits.rjust(spec.width - (negative or spec.plus or spec.space), "0")
    prefix = ""
    if spec.sharp:
        prefix = {"b": "0b", "x": "0x", "X": "0X"}.get(base, "0" if base == "o" and digits[0] != "0" else "")
    if verb == "O":
        prefix = "0o"
    sign = "-" if negative else "+" if spec.plus else " " if spec.space else ""
    return _pad(sign + prefix + digits, spec)


def _rune(code: int) -> str:
    return chr(code) if 0 <= code <= 0x10FFFF and not 0xD800 <= code < 0xE000 else "\ufffd"


def _unicode_point(code: int, sharp: bool) -> str:
    text = f"U+{code:04X}" if code >= 0 else f"U+{code & 0xFFFFFFFFFFFFFFFF:04X}"
    char = _rune(code)
    return f"{text} '{char}'" if sharp and char.isprintable() else text


def _format_float(value: float, verb: str, spec: _Spec) -> str:
    if verb not in "vgGeEfF":
        return _bad_verb(verb, value)
    if math.isinf(value) or math.isnan(value):
        return _pad(_float_special(value, spec), spec)
    negative = math.copysign(1.0, value) < 0
    body = _float_body(abs(value), verb, spec.prec)
    sign = "-" if negative else "+" if spec.plus else " " if spec.space else ""
    if spec.zero and spec.width is not None and spec.width > len(sign) + len(body):
        return sign + body.rjust(spec.width - len(sign), "0")
    return _pad(sign + body, spec)


def _float_special(value: float, spec: _Spec) -> str:
    """Go writes ``+Inf`` even without a ``+`` flag, ``NaN`` with a sign only when asked."""
    if math.isnan(value):
        return ("+" if spec.plus else " " if spec.space else "") + "NaN"
    if value < 0:
        return "-Inf"
    return (" " if spec.space and not spec.plus else "+") + "Inf"


def _float_body(value: float, verb: str, prec: int | None) -> str:
    """A non-negative finite float for the verb; without a precision %v and %g are Go's shortest form."""
    if verb in "vgG" and prec is None:
        text = _shortest_g(value)
    elif verb in "gG":
        text = f"{value:.{prec}g}"
    else:
        text = f"{value:.{6 if prec is None else prec}{verb.lower()}}"
    return text.upper() if verb in "EG" else text


def _float_digits(value: float) -> tuple[str, int]:
    """The shortest digits that read back as ``value`` (>= 0), and the decimal point's place:
    value == 0.DIGITS × 10**point. Python's repr and Go's strconv both print the shortest."""
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    significant = significant.rstrip("0")
    return (significant, point) if significant else ("0", 1)


def _shortest_g(value: float) -> str:
    """Go's %v of a float: %e when the exponent is < -4 or >= 21, else %f, shortest digits both ways.

    (The 21 is for %v only with ... no: Go's shortest %g switches at exponent 6 is not what it does;
    see _SHORTEST_E_FROM.)
    """
    digits, point = _float_digits(value)
    exponent = point - 1
    if exponent < -4 or exponent >= _SHORTEST_E_FROM:
        return _shortest_e(digits, point)
    return _shortest_f(digits, point)


_SHORTEST_E_FROM = 21


def _shortest_e(digits: str, point: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exponent = point - 1
    return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _shortest_f(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _format_str(text: str, verb: str, spec: _Spec) -> str:
    if verb in "vs":
        return _pad(text if spec.prec is None else text[:spec.prec], spec)
    if verb == "q":
        text = text if spec.prec is None else text[:spec.prec]
        quoted = f"`{text}`" if spec.sharp and _can_backquote(text) else _go_quote(text, '"', spec.plus)
        return _pad(quoted, spec)
    if verb in "xX":
        return _pad(_hex_bytes(text.encode(), verb, spec), spec)
    return _bad_verb(verb, text)


def _hex_bytes(data: bytes, verb: str, spec: _Spec) -> str:
    if spec.prec is not None:
        data = data[:spec.prec]
    prefix = ("0" + verb) if spec.sharp else ""
    text = " ".join(prefix + f"{b:02x}" for b in data) if spec.space else (prefix if data else "") + data.hex()
    return text.upper().replace("0X", "0X") if verb == "X" else text


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(text: str, quote: str = '"', ascii_only: bool = False) -> str:
    """Go's strconv.Quote (or QuoteRune, QuoteToASCII): printable characters as they are, others escaped."""
    out = [quote]
    for ch in text:
        code = ord(ch)
        if ch == quote or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F or (code >= 0x80 and not ascii_only and ch.isprintable()
                                     and not 0xD800 <= code < 0xE000):
            out.append(ch)
        elif ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code < 0xE000:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append(quote)
    return "".join(out)


def _can_backquote(text: str) -> bool:
    return not any((ch < " " and ch != "\t") or ch in "`\x7f\ufeff" for ch in text)


# ----------------------------------------------------------------------------
# Go's JSON encoding, as docker's json function (compact, no HTML escaping, no trailing newline)


class _JSONUnsupported(Exception):
    """Go's json.Marshal refuses the value (NaN or an infinity): docker then prints nothing."""


def _json(value: Any) -> str:
    out: list[str] = []
    try:
        _json_value(value, out, 0)
    except _JSONUnsupported:
        return ""  # docker ignores Encode's error and prints the empty buffer
    return "".join(out)


def _json_value(value: Any, out: list[str], depth: int) -> None:
    if depth > 500:
        raise _FuncError("json: unsupported value: encountered a cycle")
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_json_float(value))
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, (list, tuple)):
        _json_items(value, out, depth)
    elif isinstance(value, Mapping):
        _json_object([(str(k), value[k]) for k in value], out, depth, sort=True)
    else:
        _json_object(_json_fields(value), out, depth, sort=False)


def _json_items(values: Sequence[Any], out: list[str], depth: int) -> None:
    out.append("[")
    for i, item in enumerate(values):
        if i:
            out.append(",")
        _json_value(item, out, depth + 1)
    out.append("]")


def _json_object(pairs: list[tuple[str, Any]], out: list[str], depth: int, sort: bool) -> None:
    """A Go map's keys come out sorted; a struct's fields in their order."""
    out.append("{")
    for i, (key, item) in enumerate(sorted(pairs, key=lambda p: p[0]) if sort else pairs):
        if i:
            out.append(",")
        out.append(_json_string(key) + ":")
        _json_value(item, out, depth + 1)
    out.append("}")


def _json_fields(value: Any) -> list[tuple[str, Any]]:
    """An object's JSON: what its ``to_json()`` returns (as Go's MarshalJSON), else its public fields."""
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        encoded = to_json()
        if isinstance(encoded, Mapping):
            return [(str(k), encoded[k]) for k in _sorted_keys(encoded)]
        raise _FuncError(f"json: {type(value).__qualname__}.to_json returned {_go_type(encoded)}")
    fields = _struct_fields(value)
    if fields is None:
        raise _FuncError(f"json: unsupported type: {_go_type(value)}")
    return fields


def _json_string(text: str) -> str:
    """Go's JSON string: control characters escaped (``\\b``, ``\\f`` short since Go 1.22), U+2028 and
    U+2029 escaped, everything else, ``<>&`` included, as it is."""
    from json.encoder import encode_basestring

    encoded: str = encode_basestring(text)
    if "\u2028" in encoded or "\u2029" in encoded:
        encoded = encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return re.sub("[\ud800-\udfff]", "\\\\ufffd", encoded)


def _json_float(value: float) -> str:
    """Go's float encoding: shortest digits, %f between 1e-6 and 1e21, else %e with a bare exponent."""
    if math.isinf(value) or math.isnan(value):
        raise _JSONUnsupported
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    magnitude = abs(value)
    digits, point = _float_digits(magnitude)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exponent = point - 1
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent)}"
    return sign + _shortest_f(digits, point)


# ----------------------------------------------------------------------------
# The functions


class _Func:
    """A template function: how many arguments it takes and its implementation."""

    __slots__ = ("name", "impl", "min_args", "max_args", "lazy")

    def __init__(self, name: str, impl: Callable[..., Any], min_args: int, max_args: int | None,
                 lazy: bool = False) -> None:
        self.name = name
        self.impl = impl
        self.min_args = min_args
        self.max_args = max_args
        self.lazy = lazy

    def arity_error(self, given: int) -> str:
        if self.max_args is None:
            return f"wrong number of args for {self.name}: want at least {self.min_args} got {given}"
        return f"wrong number of args for {self.name}: want {self.min_args} got {given}"


def _want_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _ArgError(_wrong_type("string", value))


def _want_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _ArgError(_wrong_type("int", value))


def _want_strings(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _ArgError(_wrong_type("[]string", value))


def _wrong_type(expected: str, value: Any) -> str:
    if value is None:
        return f"invalid value; expected {expected}"
    return f"wrong type for value; expected {expected}; got {_go_type(value)}"


def _fn_not(value: Any) -> bool:
    return not _truth(value)


def _fn_len(value: Any) -> int:
    if value is None:
        raise _FuncError("len of nil pointer")
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, list, tuple, Mapping, set, frozenset)):
        return len(value)
    raise _FuncError(f"len of type {_go_type(value)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise _FuncError("cannot index slice/array with nil")
    if isinstance(index, bool) or not isinstance(index, int):
        raise _FuncError(f"cannot index slice/array with type {_go_type(index)}")
    if index < 0 or index > cap:
        raise _FuncError(f"index out of range: {index}")
    return index


def _fn_index(item: Any, *indexes: Any) -> Any:
    """``index x 1 2 3`` is x[1][2][3]; a missing map key gives nil (printed ``<no value>``)."""
    if item is None:
        raise _FuncError("index of untyped nil")
    for index in indexes:
        if item is None:
            raise _FuncError("index of nil pointer")
        if isinstance(item, Mapping):
            try:
                item = item[index]
            except KeyError:
                item = None
            except TypeError:
                raise _FuncError(f"value has type {_go_type(index)}; should be string") from None
            continue
        sequence = item.encode() if isinstance(item, str) else item
        if not isinstance(sequence, (bytes, list, tuple)):
            raise _FuncError(f"can't index item of type {_go_type(item)}")
        position = _index_arg(index, len(sequence))
        if position == len(sequence):
            raise _FuncError(f"index out of range: {position}")
        item = sequence[position]
    return item


def _fn_slice(item: Any, *indexes: Any) -> Any:
    """``slice x 1 2`` is x[1:2], as Go slices (a string by bytes)."""
    if item is None:
        raise _FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise _FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _FuncError("cannot 3-index slice a string")
        sequence: Any = item.encode()
    elif isinstance(item, (list, tuple)):
        sequence = item
    else:
        raise _FuncError(f"can't slice item of type {_go_type(item)}")
    bounds = [0, len(sequence), len(sequence)]
    for i, index in enumerate(indexes):
        bounds[i] = _index_arg(index, len(sequence))
    if bounds[0] > bounds[1]:
        raise _FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    if len(indexes) == 3 and bounds[1] > bounds[2]:
        raise _FuncError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    part = sequence[bounds[0]:bounds[1]]
    return part.decode("utf-8", "replace") if isinstance(item, str) else part


def _fn_print(*args: Any) -> str:
    return _sprint(args)


def _fn_printf(fmt: Any, *args: Any) -> str:
    return _sprintf(_want_str(fmt), args)


def _fn_println(*args: Any) -> str:
    return _sprintln(args)


def _basic_kind(value: Any) -> str | None:
    """Go's basicKind for comparisons; None for nil and for lists, maps and structs."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return None


def _fn_eq(first: Any, *others: Any) -> bool:
    """``eq a b c`` is a == b || a == c; Go compares basic values of one kind, or anything with nil."""
    if not others:
        raise _FuncError("missing argument for comparison")
    kind = _basic_kind(first)
    for other in others:
        if kind != _basic_kind(other):
            if first is not None and other is not None:
                raise _FuncError("incompatible types for comparison")
        elif kind is not None:
            if first == other:
                return True
        elif first is None or other is None:
            if first is other:
                return True
        elif isinstance(first, (list, tuple, Mapping)) or isinstance(other, (list, tuple, Mapping)):
            raise _FuncError(f"non-comparable type {_sprint_v(other)}: {_go_type(other)}")
        elif first == other:
            return True
    return False


def _fn_ne(first: Any, second: Any) -> bool:
    return not _fn_eq(first, second)


def _fn_lt(first: Any, second: Any) -> bool:
    kind, other_kind = _basic_kind(first), _basic_kind(second)
    if kind is None or other_kind is None:
        raise _FuncError("invalid type for comparison")
    if kind != other_kind:
        raise _FuncError("incompatible types for comparison")
    if kind == "bool":
        raise _FuncError("invalid type for comparison")
    return bool(first < second)


def _fn_le(first: Any, second: Any) -> bool:
    return _fn_lt(first, second) or _fn_eq(first, second)


def _fn_gt(first: Any, second: Any) -> bool:
    return not _fn_le(first, second)


def _fn_ge(first: Any, second: Any) -> bool:
    return not _fn_lt(first, second)


def _escaper_text(args: Sequence[Any]) -> str:
    """Go's evalArgs for html/js/urlquery: one string as it is, else Sprint (a nil counting as <no value>)."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return _sprint(["<no value>" if a is None else a for a in args])


_HTML_ESCAPES = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_JS_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def _fn_html(*args: Any) -> str:
    return "".join(_HTML_ESCAPES.get(ch, ch) for ch in _escaper_text(args))


def _fn_js(*args: Any) -> str:
    out = []
    for ch in _escaper_text(args):
        if ch in _JS_ESCAPES:
            out.append(_JS_ESCAPES[ch])
        elif ch < " " or (ch >= "\x7f" and not ch.isprintable()):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _fn_urlquery(*args: Any) -> str:
    from urllib.parse import quote_plus

    return quote_plus(_escaper_text(args), safe="")


def _fn_json(value: Any) -> str:
    return _json(value)


def _fn_split(text: Any, sep: Any) -> list[str]:
    """Go's strings.Split: an empty separator splits after each character."""
    text, sep = _want_str(text), _want_str(sep)
    return list(text) if sep == "" else text.split(sep)


def _fn_join(items: Any, sep: Any) -> str:
    return _want_str(sep).join(_want_strings(items))


def _fn_title(text: Any) -> str:
    """Go's strings.Title: the first letter of each word upper-cased, the rest left as it is."""
    out = []
    previous = " "
    for ch in _want_str(text):
        out.append(_one_char(ch.title(), ch) if _is_word_separator(previous) else ch)
        previous = ch
    return "".join(out)


def _is_word_separator(ch: str) -> bool:
    if ch.isascii():
        return not (ch.isalnum() or ch == "_")
    if ch.isalpha() or ch.isdecimal():
        return False
    return ch.isspace()


def _one_char(mapped: str, original: str) -> str:
    """Go maps case a rune at a time: where Unicode's mapping gives several characters, none applies."""
    return mapped if len(mapped) == 1 else original


def _fn_lower(text: Any) -> str:
    text = _want_str(text)
    return text.lower() if text.isascii() else "".join(_one_char(ch.lower(), ch) for ch in text)


def _fn_upper(text: Any) -> str:
    text = _want_str(text)
    return text.upper() if text.isascii() else "".join(_one_char(ch.upper(), ch) for ch in text)


def _fn_pad(text: Any, left: Any, right: Any) -> str:
    """docker's padWithSpace: spaces before and after, unless the string is empty."""
    text, left, right = _want_str(text), _want_int(left), _want_int(right)
    if left < 0 or right < 0:
        raise _FuncError("strings: negative Repeat count")
    return str(" " * left + text + " " * right if text else text)


def _fn_truncate(text: Any, length: Any) -> str:
    """docker's truncateWithLength: the first ``length`` bytes."""
    data, length = _want_str(text).encode(), _want_int(length)
    if len(data) < length:
        return str(text)
    if length < 0:
        raise _FuncError(f"slice bounds out of range [:{length}]")
    return data[:length].decode("utf-8", "replace")


def _header_passthrough(text: Any, *_ignored: Any) -> str:
    """docker's HeaderFunctions: in the header line json, split, join... leave the header as it is."""
    return _want_str(text)


_FUNCS: dict[str, _Func] = {f.name: f for f in (
    _Func("and", _fn_not, 1, None, lazy=True),
    _Func("or", _fn_not, 1, None, lazy=True),
    _Func("not", _fn_not, 1, 1),
    _Func("len", _fn_len, 1, 1),
    _Func("index", _fn_index, 1, None),
    _Func("slice", _fn_slice, 1, None),
    _Func("print", _fn_print, 0, None),
    _Func("printf", _fn_printf, 1, None),
    _Func("println", _fn_println, 0, None),
    _Func("eq", _fn_eq, 1, None),
    _Func("ne", _fn_ne, 2, 2),
    _Func("lt", _fn_lt, 2, 2),
    _Func("le", _fn_le, 2, 2),
    _Func("gt", _fn_gt, 2, 2),
    _Func("ge", _fn_ge, 2, 2),
    _Func("html", _fn_html, 0, None),
    _Func("js", _fn_js, 0, None),
    _Func("urlquery", _fn_urlquery, 0, None),
    _Func("json", _fn_json, 1, 1),
    _Func("split", _fn_split, 2, 2),
    _Func("join", _fn_join, 2, 2),
    _Func("title", _fn_title, 1, 1),
    _Func("lower", _fn_lower, 1, 1),
    _Func("upper", _fn_upper, 1, 1),
    _Func("pad", _fn_pad, 3, 3),
    _Func("truncate", _fn_truncate, 2, 2),
)}

_HEADER_FUNCS: dict[str, _Func] = {**_FUNCS, **{f.name: f for f in (
    _Func("json", _header_passthrough, 1, 1),
    _Func("split", _header_passthrough, 2, 2),
    _Func("join", _header_passthrough, 2, 2),
    _Func("title", _header_passthrough, 1, 1),
    _Func("lower", _header_passthrough, 1, 1),
    _Func("upper", _header_passthrough, 1, 1),
    _Func("truncate", _header_passthrough, 2, 2),
)}}
