"""A small command-line parser with Docker's (cobra/pflag) conventions and a click-like decorator API.

It exists so that starting ``pybuild`` costs nothing it does not need: it
imports only ``os`` and ``sys`` (``getpass`` and
``importlib.metadata`` lazily, on the paths that need them). Commands are declared as with click::

    @command("run", interspersed=False)
    @argument("image")
    @argument("command", nargs=-1)
    @option("-e", "--env", multiple=True, help="Set an environment variable.")
    @option("--rm", is_flag=True, help="Remove the container when it exits.")
    def run_cmd(image: str, command: tuple[str, ...], env: tuple[str, ...], rm: bool) -> None: ...

and parsed as pflag does: ``--name value``, ``--name=value``, ``-e value``,
``-evalue``, combined shorts (``-it``, ``-itp 80:80``), ``--rm=false``, ``--``
ending the options, the last of a repeated option winning. Malformed command
lines raise :class:`pybuild.errors.UsageError`; ``--help`` and ``--version``
print and raise ``SystemExit(0)``.
"""

from __future__ import annotations

import os
import sys

from pybuild.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, NoReturn, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])
    C = TypeVar("C", bound="Command")

HELP_FLAGS = ("-h", "--help")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class Abort(Exception):
    """The user ended a prompt (EOF or ^C)."""


class ParamType:
    """Converts the text of a flag or argument (``ValueError``: why it is wrong); ``name``: its metavar."""

    name = "string"

    def convert(self, text: str) -> Any:
        return text

    def describe(self) -> str:
        return ""


class _Int(ParamType):
    name = "int"

    def convert(self, text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f'"{text}" is not an integer') from None


class _Float(ParamType):
    name = "float"

    def convert(self, text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f'"{text}" is not a number') from None


class Choice(ParamType):
    """One of a fixed set of strings (case-sensitive)."""

    def __init__(self, choices: Iterable[str]) -> None:
        self.choices = tuple(choices)
        self.name = "|".join(self.choices)

    def convert(self, text: str) -> Any:
        if text not in self.choices:
            raise ValueError(f'"{text}" is not one of {", ".join(self.choices)}')
        return text


class IntRange(_Int):
    """An integer within ``min`` and ``max`` (both inclusive, either may be open)."""

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min = min
        self.max = max

    def convert(self, text: str) -> Any:
        value = super().convert(text)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ValueError(f"{value} is not in the range {self.describe()}")
        return value

    def describe(self) -> str:
        if self.max is None:
            return "" if self.min is None else f"x>={self.min}"
        return f"x<={self.max}" if self.min is None else f"{self.min}<=x<={self.max}"


_TYPES: dict[object, ParamType] = {str: ParamType(), int: _Int(), float: _Float()}


def _param_type(kind: object) -> ParamType:
    if isinstance(kind, ParamType):
        return kind
    if kind is None:
        return _TYPES[str]
    if kind not in _TYPES:
        raise TypeError(f"unsupported parameter type {kind!r}")
    return _TYPES[kind]


class Option:
    """A flag: ``-e/--env VALUE``, a boolean (``is_flag``) or an on/off pair (``"-p/--no-pause"``)."""

    def __init__(self, decls: Sequence[str], *, help: str | None = None, is_flag: bool = False,
                 multiple: bool = False, default: Any = None, type: object = None,
                 required: bool = False, metavar: str | None = None, show_default: bool = False,
                 hidden: bool = False, envvar: str | None = None,
                 action: Callable[[Context], None] | None = None) -> None:
        self.flags: dict[str, bool] = {}  # for booleans: what each name sets
        self.names: list[str] = []
        dest = None
        for decl in decls:
            if "/" in decl:  # click's secondary form: "-p/--no-pause"
                on, _, off = (part.strip() for part in decl.partition("/"))
                self.names += [on, off]
                self.flags.update({on: True, off: False})
            elif decl.startswith("-"):
                self.names.append(decl)
            else:
                dest = decl
        if not self.names:
            raise ValueError(f"option {decls!r} has no flag name")
        for name in self.names:
            if not ((len(name) == 2 and name[1] != "-") or (len(name) > 2 and name.startswith("--"))):
                raise ValueError(f"bad option name {name!r} (want -x or --name)")
        self.is_flag = is_flag or bool(self.flags)
        if self.is_flag:
            self.flags = self.flags or dict.fromkeys(self.names, True)
        longs = [n for n in self.names if n.startswith("--")]
        self.dest = dest or (longs or self.names)[0].lstrip("-").replace("-", "_")
        self.multiple = multiple
        if multiple:
            self.default: Any = tuple(default or ())
        else:
            self.default = bool(default) if self.is_flag else default
        self.type = _param_type(type)
        self.help = help
        self.required = required
        self.metavar = metavar
        self.show_default = show_default
        self.hidden = hidden
        self.envvar = envvar
        self.action = action

    def help_row(self) -> tuple[str, str]:
        shorts = [n for n in self.names if len(n) == 2]
        longs = [n for n in self.names if len(n) > 2]
        sep = " / " if len(self.flags) > 1 and not all(self.flags.values()) else ", "
        decl = sep.join(shorts + longs) if shorts else "    " + sep.join(longs)
        if not self.is_flag:
            decl += " " + (self.metavar or ("list" if self.multiple and self.type.name == "string" else self.type.name))
        text = self.help or ""
        extras = []
        if self.show_default and self.default not in (None, (), False):
            shown = ", ".join(self.default) if self.multiple else self.default
            extras.append(f"default: {shown}")
        if self.type.describe():
            extras.append(self.type.describe())
        if self.required:
            extras.append("required")
        if extras:
            text = (text + "  " if text else "") + f"[{'; '.join(extras)}]"
        return decl, text


class Argument:
    """A positional parameter; ``nargs=-1`` collects the rest into a tuple."""

    def __init__(self, name: str, *, nargs: int = 1, required: bool | None = None, default: Any = None,
                 type: object = None, metavar: str | None = None) -> None:
        if nargs not in (1, -1):
            raise ValueError("nargs must be 1 or -1")
        self.name = name
        self.nargs = nargs
        self.required = (nargs == 1 and default is None) if required is None else required
        self.default: Any = tuple(default or ()) if nargs == -1 else default
        self.type = _param_type(type)
        self.metavar = metavar or name.upper()

    def usage(self) -> str:
        text = self.metavar if self.required else f"[{self.metavar}]"
        return text + "..." if self.nargs == -1 else text


class Context:
    """One command of a command line as it runs: its name, its parent's context, the shared ``obj``."""

    def __init__(self, command: Command, name: str, parent: Context | None = None, obj: Any = None) -> None:
        self.command = command
        self.info_name = name
        self.parent = parent
        self.obj: Any = obj if obj is not None or parent is None else parent.obj

    @property
    def command_path(self) -> str:
        return f"{self.parent.command_path} {self.info_name}" if self.parent else self.info_name

    def usage_error(self, message: str) -> UsageError:
        return UsageError(message, self.see_help())

    def convert(self, kind: ParamType | None, text: str, flag: str) -> Any:
        """``text`` as ``kind`` (None: a boolean) says; a bad one is a usage error naming ``flag``."""
        try:
            return _parse_bool(text) if kind is None else kind.convert(text)
        except ValueError as exc:
            raise self.usage_error(f"invalid value for {flag}: {exc}") from None

    def see_help(self) -> str | None:
        flags = self.command.help_flags
        return f"see '{self.command_path} {flags[-1]}'" if flags else None


class Command:
    """A function plus the options and arguments that call it."""

    def __init__(self, name: str, callback: Callable[..., Any] | None = None, *,
                 params: Sequence[Option | Argument] = (), help: str | None = None,
                 interspersed: bool = True, hidden: bool = False,
                 help_flags: Sequence[str] = HELP_FLAGS, pass_mode: str | None = None) -> None:
        self.name = name
        self.callback = callback
        self.help = _cleandoc(help or "")
        self.interspersed = interspersed
        self.hidden = hidden
        self.pass_mode = pass_mode
        self.options = [p for p in params if isinstance(p, Option)]
        self.arguments = [p for p in params if isinstance(p, Argument)]
        taken = {n for opt in self.options for n in opt.names}
        self.help_flags = tuple(n for n in help_flags if n not in taken)
        if self.help_flags:
            self.options.append(Option(self.help_flags, is_flag=True, help="Show this message and exit.",
                                       action=_print_help))
        self._names: dict[str, Option] = {}
        for opt in self.options:
            for n in opt.names:
                if n in self._names:
                    raise ValueError(f"{name}: option {n} declared twice")
                self._names[n] = opt

    @property
    def short_help(self) -> str:
        return self.help.split("\n", 1)[0]

    def main(self, args: Sequence[str], prog_name: str | None = None, obj: Any = None) -> Any:
        """Parse ``args`` and run the command; what the callback returns."""
        return self.invoke(Context(self, prog_name or self.name, obj=obj), list(args))

    def invoke(self, ctx: Context, args: list[str]) -> Any:
        values, positionals = self.parse_options(ctx, args, self.interspersed)
        values.update(self.bind_arguments(ctx, positionals))
        return self.call(ctx, values)

    def call(self, ctx: Context, values: dict[str, Any]) -> Any:
        if self.callback is None:
            return None
        if self.pass_mode == "obj":
            return self.callback(ctx.obj, **values)
        if self.pass_mode == "context":
            return self.callback(ctx, **values)
        return self.callback(**values)

    def parse_options(self, ctx: Context, args: list[str], interspersed: bool) -> tuple[dict[str, Any], list[str]]:
        """The options' values (defaults filled in) and the positional arguments, as pflag parses them."""
        seen: dict[str, Any] = {}
        positionals: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                positionals += args[i:]
                break
            if arg.startswith("--"):
                name, eq, text = arg.partition("=")
                opt = self._names.get(name)
                if opt is None:
                    raise ctx.usage_error(f"unknown flag: {name}")
                if opt.is_flag:
                    on = opt.flags[name]
                    self._store(ctx, opt, name, on if not eq or ctx.convert(None, text, name) else not on, seen)
                    continue
                if not eq:
                    if i >= len(args):
                        raise ctx.usage_error(f"flag needs an argument: {name}")
                    text = args[i]
                    i += 1
                self._store(ctx, opt, name, ctx.convert(opt.type, text, name), seen)
            elif arg.startswith("-") and arg != "-":
                i = self._parse_shorts(ctx, args, i, seen)
            else:
                positionals.append(arg)
                if not interspersed:
                    positionals += args[i:]
                    break
        return self._finish_options(ctx, seen), positionals

    def _parse_shorts(self, ctx: Context, args: list[str], i: int, seen: dict[str, Any]) -> int:
        """``-itd``, ``-itp 80:80``, ``-itp80:80``, ``-e=A=1``, ``-d=false``; returns the next index."""
        arg = args[i - 1]
        j = 1
        while j < len(arg):
            name = "-" + arg[j]
            j += 1
            opt = self._names.get(name)
            if opt is None:
                raise ctx.usage_error(f"unknown shorthand flag: '{name[1]}' in {arg}")
            if opt.is_flag:
                on = opt.flags[name]
                if arg[j:j + 1] == "=":
                    on = on if ctx.convert(None, arg[j + 1:], name) else not on
                    j = len(arg)
                self._store(ctx, opt, name, on, seen)
                continue
            if j < len(arg):
                text = arg[j + 1:] if arg[j] == "=" else arg[j:]
            elif i < len(args):
                text = args[i]
                i += 1
            else:
                raise ctx.usage_error(f"flag needs an argument: '{name[1]}' in {arg}")
            self._store(ctx, opt, name, ctx.convert(opt.type, text, name), seen)
            break
        return i

    @staticmethod
    def _store(ctx: Context, opt: Option, name: str, value: Any, seen: dict[str, Any]) -> None:
        if opt.action is not None:
            opt.action(ctx)
        elif opt.multiple:
            seen.setdefault(opt.dest, []).append(value)
        else:
            seen[opt.dest] = value

    def _finish_options(self, ctx: Context, seen: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for opt in self.options:
            if opt.action is not None:
                continue
            if opt.dest in seen:
                value = seen[opt.dest]
                values[opt.dest] = tuple(value) if opt.multiple else value
            elif opt.envvar and os.environ.get(opt.envvar):
                text = os.environ[opt.envvar]
                flag = f"{opt.names[-1]} (env {opt.envvar})"
                value = ctx.convert(None if opt.is_flag else opt.type, text, flag)
                values[opt.dest] = (value,) if opt.multiple else value
            elif opt.required:
                raise ctx.usage_error(f'required flag "{opt.names[-1]}" not set')
            else:
                values[opt.dest] = opt.default
        return values

    def bind_arguments(self, ctx: Context, positionals: list[str]) -> dict[str, Any]:
        """Positional words to arguments; a wrong count is cobra's ``requires ... argument(s)``."""
        args = self.arguments
        low = sum(a.required for a in args)
        high = None if any(a.nargs == -1 for a in args) else len(args)
        count = len(positionals)
        if count < low or (high is not None and count > high):
            raise ctx.usage_error(_count_message(ctx.command_path, low, high, count))
        values: dict[str, Any] = {}
        rest = list(positionals)
        for k, a in enumerate(args):
            flag = a.metavar
            if a.nargs == -1:
                keep = sum(b.required for b in args[k + 1:])
                take, rest = rest[:max(len(rest) - keep, 0)], rest[max(len(rest) - keep, 0):]
                values[a.name] = tuple(ctx.convert(a.type, t, flag) for t in take) if take else a.default
            elif rest and (a.required or len(rest) > sum(b.required for b in args[k + 1:])):
                values[a.name] = ctx.convert(a.type, rest.pop(0), flag)
            else:
                values[a.name] = a.default
        return values

    def usage(self) -> str:
        return " ".join(["[OPTIONS]", *(a.usage() for a in self.arguments)])

    def format_help(self, ctx: Context) -> str:
        width = _width()
        lines = [f"Usage: {ctx.command_path} {self.usage()}", ""]
        if self.help:
            for paragraph in self.help.split("\n\n"):
                lines += _wrap(paragraph, width, "  ")
                lines.append("")
        rows = [opt.help_row() for opt in self.options if not opt.hidden]
        lines += ["Options:", *_table(rows, width)]
        return "\n".join(lines) + "\n"


class Group(Command):
    """A command whose first positional argument names a subcommand (``pybuild network create``)."""

    def __init__(self, name: str, callback: Callable[..., Any] | None = None, **kw: Any) -> None:
        kw["interspersed"] = False
        super().__init__(name, callback, **kw)
        self.commands: dict[str, Command] = {}
        self.lazy: dict[str, str] = {}  # name -> "module:attribute", imported when first asked for

    def add_command(self, cmd: Command, name: str | None = None) -> None:
        self.commands[name or cmd.name] = cmd

    def add_lazy(self, name: str, target: str) -> None:
        """A subcommand defined in another module, imported only when it is run (or help lists it)."""
        self.lazy[name] = target

    def command(self, name: str, **kw: Any) -> Callable[[Callable[..., Any]], Command]:
        def decorator(f: Callable[..., Any]) -> Command:
            cmd = _make(Command, name, f, **kw)
            self.add_command(cmd)
            return cmd

        return decorator

    def list_commands(self) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, name: str) -> Command | None:
        if name not in self.commands and name in self.lazy:
            import importlib

            module, _, attr = self.lazy[name].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            self.commands[name] = cmd
        return self.commands.get(name)

    def invoke(self, ctx: Context, args: list[str]) -> Any:
        values, positionals = self.parse_options(ctx, args, interspersed=False)
        if not positionals:
            if not args:  # as docker: a bare group prints its help
                _print_help(ctx)
            raise ctx.usage_error("missing command")
        name = positionals[0]
        cmd = self.get_command(name)
        if cmd is None:
            raise self.unknown_command(ctx, name)
        self.call(ctx, values)
        return cmd.invoke(Context(cmd, name, parent=ctx), positionals[1:])

    def unknown_command(self, ctx: Context, name: str) -> UsageError:
        close = suggestions(name, [n for n in self.list_commands() if not self.commands_hidden(n)])
        hint = ("did you mean " + " or ".join(f"'{n}'" for n in close[:3]) + "?") if close else ctx.see_help()
        return UsageError(f"unknown command {name!r}", hint)

    def commands_hidden(self, name: str) -> bool:
        cmd = self.get_command(name)
        return cmd is None or cmd.hidden

    def usage(self) -> str:
        return "[OPTIONS] COMMAND [ARGS]..."

    def format_help(self, ctx: Context) -> str:
        rows = []
        for name in self.list_commands():
            cmd = self.get_command(name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.short_help))
        width = _width()
        limit = width - 4 - max((len(r[0]) for r in rows), default=0)
        rows = [(name, _shorten(text, limit)) for name, text in rows]
        return super().format_help(ctx) + "\nCommands:\n" + "\n".join(_table(rows, width)) + "\n"


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute: 1 each)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def suggestions(typed: str, names: Iterable[str]) -> list[str]:
    """cobra's rule for "did you mean": within 2 edits (case-insensitive), or a command the typed text
    begins; of those, the nearest."""
    low = typed.lower()
    ranked = []
    for n in names:
        d = _distance(low, n.lower())
        if n.lower().startswith(low):
            d = min(d, 1)
        if d <= 2:
            ranked.append((d, n))
    best = min((d for d, _ in ranked), default=0)
    return sorted(n for d, n in ranked if d == best)  # the nearest only


# -- decorators ----------------------------------------------------------------------------------------------


def _params(f: Callable[..., Any]) -> list[Option | Argument]:
    params: list[Option | Argument] | None = getattr(f, "__cmdline_params__", None)
    if params is None:
        params = []
        setattr(f, "__cmdline_params__", params)  # noqa: B010 - an attribute of a function
    return params


def _make(cls: type[C], name: str, f: Callable[..., Any], **kw: Any) -> C:
    params = list(reversed(getattr(f, "__cmdline_params__", [])))  # decorators apply bottom-up
    return cls(name, f, params=params, help=f.__doc__, pass_mode=getattr(f, "__cmdline_pass__", None), **kw)


def command(name: str, *, interspersed: bool = True, hidden: bool = False,
            help_flags: Sequence[str] = HELP_FLAGS) -> Callable[[Callable[..., Any]], Command]:
    """Make a :class:`Command` of a function; its docstring is the help (first line: the short help)."""

    def decorator(f: Callable[..., Any]) -> Command:
        return _make(Command, name, f, interspersed=interspersed, hidden=hidden, help_flags=help_flags)

    return decorator


def group(name: str, *, cls: type[Group] = Group, hidden: bool = False) -> Callable[[Callable[..., Any]], Group]:
    """Make a :class:`Group`; the function runs (with the group's options) before the subcommand."""

    def decorator(f: Callable[..., Any]) -> Group:
        return _make(cls, name, f, hidden=hidden)

    return decorator


def option(*decls: str, help: str | None = None, is_flag: bool = False, multiple: bool = False,
           default: Any = None, type: object = None, required: bool = False,
           metavar: str | None = None, show_default: bool = False, hidden: bool = False,
           envvar: str | None = None) -> Callable[[F], F]:
    """Add an option; ``decls`` as click's: ``"-e", "--env"``, an explicit name, ``"-p/--no-pause"``."""
    opt = Option(decls, help=help, is_flag=is_flag, multiple=multiple, default=default, type=type,
                 required=required, metavar=metavar, show_default=show_default, hidden=hidden, envvar=envvar)

    def decorator(f: F) -> F:
        _params(f).append(opt)
        return f

    return decorator


def argument(name: str, *, nargs: int = 1, required: bool | None = None, default: Any = None,
             type: object = None, metavar: str | None = None) -> Callable[[F], F]:
    """Add a positional argument (``nargs=-1``: the rest, as a tuple, optional unless ``required``)."""
    arg = Argument(name, nargs=nargs, required=required, default=default, type=type, metavar=metavar)

    def decorator(f: F) -> F:
        _params(f).append(arg)
        return f

    return decorator


def version_option(*, package_name: str, prog_name: str) -> Callable[[F], F]:
    """``--version``: print ``PROG, version X`` (from the installed package's metadata) and exit."""

    def show(ctx: Context) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version(package_name)
        except PackageNotFoundError:
            text = "unknown"
        echo(f"{prog_name}, version {text}")
        raise SystemExit(0)

    opt = Option(("--version",), is_flag=True, help="Show the version and exit.", action=show)

    def decorator(f: F) -> F:
        _params(f).append(opt)
        return f

    return decorator


def pass_obj(f: F) -> F:
    """The function gets the context's ``obj`` as its first positional argument."""
    setattr(f, "__cmdline_pass__", "obj")  # noqa: B010
    return f


def pass_context(f: F) -> F:
    """The function gets the :class:`Context` as its first positional argument."""
    setattr(f, "__cmdline_pass__", "context")  # noqa: B010
    return f


# -- input and output ----------------------------------------------------------------------------------------


def echo(message: str | bytes = "", *, err: bool = False, nl: bool = True) -> None:
    """Write a line (str or bytes) to stdout or stderr and flush."""
    stream = sys.stderr if err else sys.stdout
    if isinstance(message, bytes):
        stream.flush()
        stream.buffer.write(message + b"\n" if nl else message)
        stream.buffer.flush()
    else:
        stream.write(message + "\n" if nl else message)
        stream.flush()


def prompt(text: str, *, hide_input: bool = False) -> str:
    """Ask on stderr until the answer is not empty; :class:`Abort` on EOF or ^C."""
    while True:
        try:
            if hide_input:
                import getpass

                value = getpass.getpass(f"{text}: ", stream=sys.stderr)
            else:
                sys.stderr.write(f"{text}: ")
                sys.stderr.flush()
                line = sys.stdin.readline()
                if not line:
                    raise EOFError
                value = line.rstrip("\r\n")
        except (EOFError, KeyboardInterrupt):
            sys.stderr.write("\n")
            raise Abort() from None
        if value:
            return value


# -- helpers -------------------------------------------------------------------------------------------------


def _print_help(ctx: Context) -> NoReturn:
    echo(ctx.command.format_help(ctx), nl=False)
    raise SystemExit(0)


def _parse_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'"{text}" is not a boolean (use true or false)')


def _count_message(path: str, low: int, high: int | None, count: int) -> str:
    def n(k: int) -> str:
        return f"{k} argument" + ("" if k == 1 else "s")

    if high == 0:
        return f'"{path}" accepts no arguments'
    if low == high:
        return f'"{path}" requires exactly {n(low)}'
    if count < low:
        return f'"{path}" requires at least {n(low)}'
    return f'"{path}" requires at most {n(high or 0)}'


def _cleandoc(doc: str) -> str:
    lines = doc.expandtabs().split("\n")
    indents = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    margin = min(indents, default=0)
    lines = [lines[0].strip(), *(line[margin:].rstrip() for line in lines[1:])]
    return "\n".join(lines).strip("\n")


def _width() -> int:
    try:
        return max(min(os.get_terminal_size(sys.stdout.fileno()).columns, 100), 60)
    except (OSError, ValueError, AttributeError):
        return 80


def _wrap(text: str, width: int, indent: str) -> list[str]:
    """Greedy word wrap; ``[default: X]`` stays on one line."""
    words: list[str] = []
    for word in text.split():
        if words and words[-1].startswith("[") and words[-1].endswith(":"):
            words[-1] += " " + word
        else:
            words.append(word)
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(indent) + len(line) + 1 + len(word) > width:
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, indent + line] if line else lines or [""]


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:(") + "..."


def _table(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Two columns; a first cell too wide for the column puts its text on the next line."""
    col = min(max((len(r[0]) for r in rows), default=0), 30) + 2
    lines = []
    for left, text in rows:
        wrapped = _wrap(text, width - col - 2, "") if text else [""]
        if len(left) > col - 2:
            lines.append(f"  {left}")
            lines += [" " * (col + 2) + w for w in wrapped if w]
            continue
        lines.append(f"  {left.ljust(col)}{wrapped[0]}".rstrip())
        lines += [" " * (col + 2) + w for w in wrapped[1:]]
    return lines
