"""The ``pybuild`` command line: thin, lazily loaded, the one place errors become exit codes.

Each group of commands lives in its own ``cli_*`` module and is imported only
when one of its commands runs, so ``pybuild run`` does not pay for the
registry client or the Dockerfile parser.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from pybuild.errors import PybuildError

if TYPE_CHECKING:
    from pybuild.store.root import Store

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "import": "pybuild.cli_images:import_cmd",
    "images": "pybuild.cli_images:images_cmd",
    "tag": "pybuild.cli_images:tag_cmd",
    "rmi": "pybuild.cli_images:rmi_cmd",
    "inspect": "pybuild.cli_images:inspect_cmd",
    "history": "pybuild.cli_images:history_cmd",
    "save": "pybuild.cli_archive:save_cmd",
    "load": "pybuild.cli_archive:load_cmd",
    "mount": "pybuild.cli_images:mount_cmd",
    "umount": "pybuild.cli_images:umount_cmd",
    "prune": "pybuild.cli_images:prune_cmd",
    "system": "pybuild.cli_images:system_group",
    "parse": "pybuild.cli_build:parse_cmd",
    "build": "pybuild.cli_build:build_cmd",
    "builder": "pybuild.cli_build:builder_group",
    "pull": "pybuild.cli_registry:pull_cmd",
    "push": "pybuild.cli_registry:push_cmd",
    "login": "pybuild.cli_registry:login_cmd",
    "logout": "pybuild.cli_registry:logout_cmd",
    "run": "pybuild.cli_containers:run_cmd",
    "create": "pybuild.cli_containers:create_cmd",
    "start": "pybuild.cli_containers:start_cmd",
    "ps": "pybuild.cli_containers:ps_cmd",
    "stop": "pybuild.cli_containers:stop_cmd",
    "kill": "pybuild.cli_containers:kill_cmd",
    "pause": "pybuild.cli_containers:pause_cmd",
    "unpause": "pybuild.cli_containers:unpause_cmd",
    "rm": "pybuild.cli_containers:rm_cmd",
    "exec": "pybuild.cli_containers:exec_cmd",
    "logs": "pybuild.cli_containers:logs_cmd",
    "stats": "pybuild.cli_containers:stats_cmd",
    "export": "pybuild.cli_containers:export_cmd",
    "commit": "pybuild.cli_containers:commit_cmd",
    "volume": "pybuild.cli_containers:volume_group",
    "network": "pybuild.cli_network:network_group",
}


@dataclass
class Settings:
    """What the global options say; handed to every command."""

    root: str
    debug: bool = False
    _store: Store | None = field(default=None, repr=False)

    def store(self) -> Store:
        if self._store is None:
            from pybuild.store.root import Store

            self._store = Store.open(self.root)
        return self._store


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
        assert isinstance(cmd, click.Command)
        return cmd

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(name, list(COMMANDS), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "see 'pybuild --help'"
            raise PybuildError(f"unknown command {name!r}", hint)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="PYBUILD_ROOT", default="/var/lib/pybuild", show_default=True,
              help="Store root directory (env PYBUILD_ROOT).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="pybuild", prog_name="pybuild")
@click.pass_context
def cli(ctx: click.Context, root: str, debug: bool) -> None:
    """pybuild: a daemonless Dockerfile engine."""
    ctx.obj = Settings(root=root, debug=debug)


def default_to_build(args: list[str]) -> list[str]:
    """``pybuild -t app:v1 .`` is ``pybuild build -t app:v1 .``, as CI scripts write it."""
    i = 0
    while i < len(args):
        if args[i] == "--root":
            i += 2
        elif args[i].startswith("--root=") or args[i] == "--debug":
            i += 1
        else:
            break
    if i >= len(args):
        return args
    first = args[i]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return args
    if first.startswith("-") or first == "." or os.path.isdir(first):
        return [*args[:i], "build", *args[i:]]
    return args


def main(argv: list[str] | None = None) -> None:
    args = default_to_build(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args[: _first_command_index(args)]
    try:
        cli.main(args=args, prog_name="pybuild", standalone_mode=False)
    except PybuildError as exc:
        _fail(str(exc), exc.exit_code, debug)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail("aborted", 130, debug)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _fail(exc.format_message() + hint, 1, debug)
    except KeyboardInterrupt:
        _fail("interrupted", 130, debug)
    except BrokenPipeError:
        # The reader went away (e.g. `pybuild images | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:  # a bug: say so briefly, the traceback is one flag away
        _fail(f"internal error: {type(exc).__name__}: {exc}"
              + ("" if debug else " (run with --debug for a traceback)"), 1, debug)
    sys.exit(0)


def _first_command_index(args: list[str]) -> int:
    for i, arg in enumerate(args):
        if arg in COMMANDS:
            return i
    return len(args)


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()
    click.echo(f"pybuild: error: {message}", err=True)
    sys.exit(code)


def settings(ctx: click.Context) -> Settings:
    obj: Any = ctx.find_object(Settings)
    assert isinstance(obj, Settings)
    return obj


pass_settings = click.make_pass_decorator(Settings)
