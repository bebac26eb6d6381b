"""The ``pybuild`` command line: thin, lazily loaded, the one place errors become exit codes.

Each group of commands lives in its own module of this package and is imported only
when one of its commands runs, so ``pybuild run`` does not pay for the
registry client or the Dockerfile parser.
"""

from __future__ import annotations

import os
import sys

from pybuild.cli.cmdline import (
    Abort,
    Command,
    Context,
    Group,
    echo,
    group,
    option,
    pass_context,
    pass_obj,
    version_option,
)
from pybuild.errors import PybuildError, UsageError
from pybuild.records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from pybuild.store.root import Store

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "import": "pybuild.cli.images:import_cmd",
    "images": "pybuild.cli.images:images_cmd",
    "tag": "pybuild.cli.images:tag_cmd",
    "rmi": "pybuild.cli.images:rmi_cmd",
    "inspect": "pybuild.cli.images:inspect_cmd",
    "history": "pybuild.cli.images:history_cmd",
    "save": "pybuild.cli.archive:save_cmd",
    "load": "pybuild.cli.archive:load_cmd",
    "mount": "pybuild.cli.images:mount_cmd",
    "umount": "pybuild.cli.images:umount_cmd",
    "prune": "pybuild.cli.images:prune_cmd",
    "system": "pybuild.cli.images:system_group",
    "info": "pybuild.cli.images:info_cmd",
    "version": "pybuild.cli.version:version_cmd",
    "events": "pybuild.cli.events:events_cmd",
    "unshare": "pybuild.cli.rootless:unshare_cmd",
    "parse": "pybuild.cli.build:parse_cmd",
    "build": "pybuild.cli.build:build_cmd",
    "builder": "pybuild.cli.prune:builder_group",
    "pull": "pybuild.cli.registry:pull_cmd",
    "push": "pybuild.cli.registry:push_cmd",
    "login": "pybuild.cli.registry:login_cmd",
    "logout": "pybuild.cli.registry:logout_cmd",
    "run": "pybuild.cli.containers:run_cmd",
    "create": "pybuild.cli.containers:create_cmd",
    "start": "pybuild.cli.containers:start_cmd",
    "ps": "pybuild.cli.containers:ps_cmd",
    "stop": "pybuild.cli.containers:stop_cmd",
    "kill": "pybuild.cli.containers:kill_cmd",
    "pause": "pybuild.cli.containers:pause_cmd",
    "unpause": "pybuild.cli.containers:unpause_cmd",
    "rm": "pybuild.cli.containers:rm_cmd",
    "exec": "pybuild.cli.containers:exec_cmd",
    "logs": "pybuild.cli.containers:logs_cmd",
    "stats": "pybuild.cli.containers:stats_cmd",
    "export": "pybuild.cli.containers:export_cmd",
    "commit": "pybuild.cli.containers:commit_cmd",
    "volume": "pybuild.cli.containers:volume_group",
    "restart": "pybuild.cli.manage:restart_cmd",
    "port": "pybuild.cli.manage:port_cmd",
    "top": "pybuild.cli.manage:top_cmd",
    "wait": "pybuild.cli.manage:wait_cmd",
    "diff": "pybuild.cli.manage:diff_cmd",
    "rename": "pybuild.cli.manage:rename_cmd",
    "update": "pybuild.cli.manage:update_cmd",
    "image": "pybuild.cli.groups:image_group",
    "container": "pybuild.cli.groups:container_group",
    "completion": "pybuild.cli.completion:completion_cmd",
    "network": "pybuild.cli.network:network_group",
}


@record
class Settings:
    """What the global options say; handed to every command."""

    root_option: str | None = None
    debug: bool = False
    storage_opts: tuple[str, ...] = ()
    _store: Store | None = field(default=None, repr=False)
    _root: str | None = field(default=None, repr=False)

    @property
    def root(self) -> str:
        """The store root: ``--root``, ``PYBUILD_ROOT``, else root's ``/var/lib/pybuild`` or the user's own."""
        if self._root is None:
            if self.root_option:
                self._root = self.root_option
            elif os.geteuid() == 0:
                self._root = "/var/lib/pybuild"
            else:
                from pybuild.linux import userns

                self._root = userns.default_store_root()
        return self._root

    def enter_namespace(self) -> None:
        """As an ordinary user, move into the rootless user and mount namespace before the store is used.

        As root, nothing. Called before a command starts any thread.
        """
        if os.geteuid() == 0:
            return
        from pybuild.linux import userns

        root = self.root  # resolved with the user's own home and ids, before they all read as root
        _check_own_store(root)
        userns.enter(warn=lambda text: echo(f"pybuild: warning: {text}", err=True))
        os.environ["PYBUILD_ROOT"] = root  # what we start (a monitor, a re-exec) uses the same store

    def store(self, clean: bool = True) -> Store:
        if self._store is None:
            from pybuild.store.root import Store

            program = _mount_program(self.storage_opts)
            self.enter_namespace()
            self._store = Store.open(self.root, clean=clean, mount_program=program)
            from pybuild.linux import userns

            if os.geteuid() == 0 and not userns.rootless():  # a user's namespace can remove no host link
                from pybuild.runtime.network.orphans import remove_vanished_store_links

                remove_vanished_store_links()  # bridges and NAT tables of stores thrown away
        return self._store


def _mount_program(storage_opts: tuple[str, ...]) -> str | None:
    """``--storage-opt overlay.mount_program=PATH`` (podman's; empty: the kernel's overlay)."""
    program = None
    for opt in storage_opts:
        key, sep, value = opt.partition("=")
        if not sep or key.strip() not in ("overlay.mount_program", "mount_program"):
            raise UsageError(f"unknown storage option {opt!r}", "supported: overlay.mount_program=PATH")
        program = value.strip()
    return program


def _check_own_store(root: str) -> None:
    """An ordinary user cannot use a store that someone else (root) owns: say so before anything fails."""
    from pybuild.errors import RootlessError

    path = os.path.abspath(root)
    while True:
        try:
            st = os.stat(path)
            break
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent
        except OSError as exc:
            raise RootlessError(f"store root {root}: {exc.strerror}") from None
    if path == os.path.abspath(root) and st.st_uid != os.getuid():
        raise RootlessError(
            f"store root {root} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
            "as an ordinary user use a store of your own: leave out --root/PYBUILD_ROOT for "
            "~/.local/share/pybuild, or run as root for this one")
    if path != os.path.abspath(root) and not os.access(path, os.W_OK | os.X_OK):
        raise RootlessError(f"cannot create store root {root}: {path} is not writable by you",
                            "choose a store root under a directory of yours")


class LazyGroup(Group):
    def list_commands(self) -> list[str]:
        return sorted(COMMANDS)

    def commands_hidden(self, name: str) -> bool:
        return False  # none at the top; asking would import every command's module

    def get_command(self, name: str) -> Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        cmd = getattr(__import__(module, fromlist=[attr]), attr)
        assert isinstance(cmd, Command)
        return cmd


@group("pybuild", cls=LazyGroup)
@option("--root", envvar="PYBUILD_ROOT", default=None,
        help="Store root directory (env PYBUILD_ROOT; default /var/lib/pybuild, "
             "or ~/.local/share/pybuild for an ordinary user).")
@option("--storage-opt", "storage_opts", multiple=True, metavar="KEY=VALUE",
        help="For a new store: overlay.mount_program=/usr/bin/fuse-overlayfs (rootless), or empty for "
             "the kernel's overlay.")
@option("--debug", is_flag=True, help="Show tracebacks for errors.")
@version_option(package_name="pybuild", prog_name="pybuild")
@pass_context
def cli(ctx: Context, root: str | None, storage_opts: tuple[str, ...], debug: bool) -> None:
    """pybuild: a daemonless Dockerfile engine."""
    ctx.obj = Settings(root_option=root, debug=debug, storage_opts=storage_opts)


def default_to_build(args: list[str]) -> list[str]:
    """``pybuild -t app:v1 .`` is ``pybuild build -t app:v1 .``, as CI scripts write it."""
    i = 0
    while i < len(args):
        if args[i] in ("--root", "--storage-opt"):
            i += 2
        elif args[i].startswith(("--root=", "--storage-opt=")) or args[i] == "--debug":
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


def main(argv: list[str] | None = None) -> NoReturn:
    """The ``pybuild`` command. Run as the console script (no ``argv``) it leaves with ``os._exit``."""
    code = run_cli(argv)
    if argv is not None:
        sys.exit(code)
    _exit_now(code)


def run_cli(argv: list[str] | None = None) -> int:
    """Run one command line; the exit status, whatever happened (nothing is raised)."""
    args = default_to_build(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args[: _first_command_index(args)]
    try:
        cli.main(args, prog_name="pybuild")
    except SystemExit as exc:  # sys.exit() in a command, or --help/--version
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        echo(str(exc.code), err=True)
        return 1
    except PybuildError as exc:  # usage errors too: the parser raises pybuild's UsageError
        return _fail(str(exc), exc.exit_code, debug)
    except Abort:
        return _fail("aborted", 130, debug)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, debug)
    except BrokenPipeError:
        # The reader went away (e.g. `pybuild images | head`): not an error.
        _drop_stdout()
        return 0
    except Exception as exc:  # a bug: say so briefly, the traceback is one flag away
        return _fail(f"internal error: {type(exc).__name__}: {exc}"
                     + ("" if debug else " (run with --debug for a traceback)"), 1, debug)
    return 0


def _exit_now(code: int) -> NoReturn:
    """Leave without the interpreter's teardown (~25 ms): flush, run the atexit handlers, ``os._exit``."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        code = 0
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        code = 0
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)  # threads still running: let the interpreter join them as usual
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = 0
    os._exit(code)


def _drop_stdout() -> None:
    """Point stdout at /dev/null so that flushing what is left cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _first_command_index(args: list[str]) -> int:
    for i, arg in enumerate(args):
        if arg in COMMANDS:
            return i
    return len(args)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    echo(f"pybuild: error: {message}", err=True)
    return code


pass_settings = pass_obj
