"""The in-house command-line parser (pybuild.cli.cmdline): pflag's syntax, click's decorators. No root needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pybuild.cli.cmdline import (
    Choice,
    Command,
    Context,
    IntRange,
    argument,
    command,
    echo,
    group,
    option,
    pass_context,
    pass_obj,
)
from pybuild.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def _kw(**kw: Any) -> dict[str, Any]:
    return kw


@command("run", interspersed=False, help_flags=("--help",))
@argument("image")
@argument("command", nargs=-1)
@option("-d", "--detach", is_flag=True, help="Run in the background.")
@option("--rm", is_flag=True, help="Remove the container when it exits.")
@option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@option("-e", "--env", multiple=True, help="Set an environment variable.")
@option("-p", "--publish", multiple=True, help="Publish a port.")
@option("-h", "--hostname", help="Container host name.")
@option("--name", help="Assign a name.")
@option("--network", "--net", "network", default="bridge", show_default=True, help="The network.")
@option("--cpus", type=float, help="Number of CPUs.")
@option("--pids-limit", type=int, help="Maximum number of processes.")
@option("--memory-swap", help="Memory plus swap; -1 for unlimited.")
def run_cmd(**kw: Any) -> dict[str, Any]:
    """Run a command in a new container.

    The second paragraph of the help.
    """
    return kw


@command("build")
@argument("context", default=".", required=False)
@option("-t", "--tag", "tags", multiple=True, help="Name the image.")
@option("-j", "--jobs", type=IntRange(min=1), help="Stages at a time.")
@option("--progress", type=Choice(["auto", "plain"]), default="auto", show_default=True, help="Output.")
@option("-p/--no-pause", "pause", default=True, help="Pause while committing.")
@option("--secret-thing", hidden=True)
def build_cmd(**kw: Any) -> dict[str, Any]:
    """Build an image."""
    return kw


@command("tag")
@argument("source")
@argument("target")
def tag_cmd(source: str, target: str) -> tuple[str, str]:
    """Create a tag."""
    return source, target


@command("rmi")
@argument("images", nargs=-1, required=True)
@option("-f", "--force", is_flag=True)
def rmi_cmd(images: tuple[str, ...], force: bool) -> tuple[tuple[str, ...], bool]:
    """Remove images."""
    return images, force


def run(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = run_cmd.main(list(args), "pybuild run")
    return result


def build(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = build_cmd.main(list(args), "pybuild build")
    return result


def usage_error(cmd: Command, *args: str, prog: str | None = None) -> str:
    with pytest.raises(UsageError) as info:
        cmd.main(list(args), prog or f"pybuild {cmd.name}")
    return str(info.value)


def test_defaults() -> None:
    kw = run("busybox")
    assert kw == _kw(image="busybox", command=(), detach=False, rm=False, interactive=False, tty=False, env=(),
                     publish=(), hostname=None, name=None, network="bridge", cpus=None, pids_limit=None,
                     memory_swap=None)
    assert build() == _kw(context=".", tags=(), jobs=None, progress="auto", pause=True, secret_thing=None)


def test_long_forms_and_explicit_destination() -> None:
    kw = run("--name", "web", "--net=host", "--cpus", "1.5", "--pids-limit=10", "busybox")
    assert (kw["name"], kw["network"], kw["cpus"], kw["pids_limit"]) == ("web", "host", 1.5, 10)
    assert run("--network", "none", "x")["network"] == "none"


def test_short_forms() -> None:
    assert run("-e", "A=1", "-eB=2", "-e=C=3", "x")["env"] == ("A=1", "B=2", "C=3")
    assert run("-h", "box", "x")["hostname"] == "box"


def test_combined_shorts() -> None:
    kw = run("-it", "x")
    assert kw["interactive"] and kw["tty"] and not kw["detach"]
    kw = run("-itd", "x")
    assert kw["interactive"] and kw["tty"] and kw["detach"]
    assert run("-itp", "80:80", "x")["publish"] == ("80:80",)
    kw = run("-itp80:80", "x")
    assert kw["publish"] == ("80:80",) and kw["tty"]


def test_booleans_take_explicit_values() -> None:
    assert run("--rm=true", "x")["rm"] is True
    assert run("--rm", "--rm=false", "x")["rm"] is False
    assert run("--rm=1", "x")["rm"] is True
    assert run("--rm=0", "x")["rm"] is False
    assert run("-d=false", "x")["detach"] is False
    message = usage_error(run_cmd, "--rm=maybe", "x", prog="pybuild run")
    assert 'invalid value for --rm: "maybe" is not a boolean' in message


def test_on_off_pair() -> None:
    assert build("-p")["pause"] is True
    assert build("--no-pause")["pause"] is False
    assert build("--no-pause=false")["pause"] is True


def test_last_wins_and_multiple_accumulates() -> None:
    kw = run("--name", "a", "--name", "b", "-e", "A=1", "--env", "B=2", "x")
    assert kw["name"] == "b" and kw["env"] == ("A=1", "B=2")
    assert build("-t", "a", "--tag=b", "-tc")["tags"] == ("a", "b", "c")


def test_not_interspersed_stops_at_the_first_positional() -> None:
    kw = run("--rm", "busybox", "ls", "-l", "/", "--name", "x", "--help")
    assert kw["rm"] and kw["image"] == "busybox"
    assert kw["command"] == ("ls", "-l", "/", "--name", "x", "--help")
    assert kw["name"] is None


def test_interspersed_takes_options_after_positionals() -> None:
    kw = build("ctx", "-t", "app:v1", "--progress", "plain")
    assert kw["context"] == "ctx" and kw["tags"] == ("app:v1",) and kw["progress"] == "plain"
    assert rmi_cmd.main(["a", "-f", "b"], "pybuild rmi") == (("a", "b"), True)


def test_double_dash_ends_options() -> None:
    assert run("--", "busybox", "-it")["command"] == ("-it",)
    assert rmi_cmd.main(["--", "-f"], "pybuild rmi") == (("-f",), False)
    assert build("--", "-t")["context"] == "-t"


def test_negative_numbers_are_values() -> None:
    kw = run("--pids-limit", "-1", "--memory-swap", "-1", "x")
    assert kw["pids_limit"] == -1 and kw["memory_swap"] == "-1"
    assert run("--pids-limit=-1", "x")["pids_limit"] == -1


def test_a_value_may_look_like_a_flag() -> None:
    assert run("--name", "--rm", "x")["name"] == "--rm"


def test_dash_alone_is_a_positional() -> None:
    assert build("-")["context"] == "-"


def test_type_errors() -> None:
    assert usage_error(run_cmd, "--cpus", "abc", "x", prog="pybuild run") == \
        "invalid value for --cpus: \"abc\" is not a number (see 'pybuild run --help')"
    assert 'invalid value for --pids-limit: "x" is not an integer' in usage_error(run_cmd, "--pids-limit", "x", "y")
    assert 'invalid value for --progress: "tty" is not one of auto, plain' in usage_error(build_cmd, "--progress=tty")
    assert "invalid value for -j: 0 is not in the range x>=1" in usage_error(build_cmd, "-j", "0")
    assert build("-j", "4")["jobs"] == 4
    assert "not in the range 1<=x<=3" in usage_error(
        command("c")(option("-n", type=IntRange(1, 3))(lambda n: n)), "-n", "4")
    with pytest.raises(UsageError):
        build("--progress", "AUTO")  # Choice is case-sensitive


def test_unknown_flags_and_missing_values() -> None:
    assert usage_error(build_cmd, "--foo") == "unknown flag: --foo (see 'pybuild build --help')"
    assert usage_error(build_cmd, "--foo=1").startswith("unknown flag: --foo ")
    assert usage_error(build_cmd, "-x").startswith("unknown shorthand flag: 'x' in -x")
    assert usage_error(run_cmd, "-itz", "x").startswith("unknown shorthand flag: 'z' in -itz")
    assert usage_error(run_cmd, "--name").startswith("flag needs an argument: --name")
    assert usage_error(run_cmd, "-ite").startswith("flag needs an argument: 'e' in -ite")


def test_argument_counts() -> None:
    assert tag_cmd.main(["a", "b"], "pybuild tag") == ("a", "b")
    assert usage_error(tag_cmd, "a") == "\"pybuild tag\" requires exactly 2 arguments (see 'pybuild tag --help')"
    assert usage_error(tag_cmd, "a", "b", "c").startswith('"pybuild tag" requires exactly 2 arguments')
    assert usage_error(rmi_cmd).startswith('"pybuild rmi" requires at least 1 argument')
    assert usage_error(run_cmd).startswith('"pybuild run" requires at least 1 argument')
    assert usage_error(build_cmd, "a", "b").startswith('"pybuild build" requires at most 1 argument')
    none = command("ps")(lambda: None)
    assert usage_error(none, "x").startswith('"pybuild ps" accepts no arguments')


def test_optional_arguments_and_types() -> None:
    @command("import")
    @argument("source")
    @argument("reference", required=False)
    @argument("count", required=False, type=int)
    def import_cmd(**kw: Any) -> dict[str, Any]:
        return kw

    assert import_cmd.main(["f"]) == {"source": "f", "reference": None, "count": None}
    assert import_cmd.main(["f", "r", "3"]) == {"source": "f", "reference": "r", "count": 3}
    assert "invalid value for COUNT" in usage_error(import_cmd, "f", "r", "x")


def test_required_option_and_envvar(monkeypatch: pytest.MonkeyPatch) -> None:
    @command("c")
    @option("--root", envvar="CMDLINE_TEST_ROOT", default="/var/lib/x")
    @option("--key", required=True)
    def c(root: str, key: str) -> tuple[str, str]:
        return root, key

    monkeypatch.delenv("CMDLINE_TEST_ROOT", raising=False)
    assert c.main(["--key", "k"]) == ("/var/lib/x", "k")
    monkeypatch.setenv("CMDLINE_TEST_ROOT", "/env")
    assert c.main(["--key", "k"]) == ("/env", "k")
    assert c.main(["--key", "k", "--root", "/flag"]) == ("/flag", "k")
    assert usage_error(c).startswith('required flag "--key" not set')


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cmd.main(["--help"], "pybuild run")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: pybuild run [OPTIONS] IMAGE [COMMAND]...\n")
    assert "Run a command in a new container." in out and "The second paragraph of the help." in out
    assert "  -e, --env list" in out and "      --rm " in out
    assert "  -h, --hostname string" in out and "      --network, --net string" in out
    assert "[default: bridge]" in out and "      --help " in out
    with pytest.raises(SystemExit):
        build_cmd.main(["-h"], "pybuild build")
    out = capsys.readouterr().out
    assert "Usage: pybuild build [OPTIONS] [CONTEXT]" in out
    assert "-p / --no-pause" in out and "--progress auto|plain" in out and "[default: auto]" in out
    assert "[x>=1]" in out and "--secret-thing" not in out
    assert "-h, --help" in out
    # help wins even when required arguments are missing
    with pytest.raises(SystemExit):
        rmi_cmd.main(["--help"], "pybuild rmi")
    assert "Usage: pybuild rmi [OPTIONS] IMAGES..." in capsys.readouterr().out


def test_run_style_commands_only_take_long_help() -> None:
    @command("exec", interspersed=False, help_flags=("--help",))
    @argument("container")
    @argument("command", nargs=-1, required=True)
    def exec_cmd(container: str, command: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        return container, command

    assert usage_error(exec_cmd, "-h").startswith("unknown shorthand flag: 'h' in -h")
    assert exec_cmd.main(["c", "ls", "-h"]) == ("c", ("ls", "-h"))


def _make_group() -> tuple[Command, list[Any]]:
    calls: list[Any] = []

    @group("net")
    def net() -> None:
        """Manage networks."""

    @net.command("create")
    @argument("name")
    @option("-d", "--driver", default="bridge")
    @pass_obj
    def create(obj: Any, name: str, driver: str) -> None:
        """Create a network."""
        calls.append((obj, name, driver))

    @net.command("ls", hidden=True)
    def ls() -> None:
        """List networks."""

    @group("tool")
    @option("--root", default="/r")
    @pass_context
    def tool(ctx: Context, root: str) -> None:
        """A tool."""
        ctx.obj = {"root": root}

    @tool.command("inspect")
    @pass_context
    def inspect(ctx: Context) -> None:
        """Inspect something."""
        calls.append(ctx.command_path)

    tool.add_command(net)
    return tool, calls


def test_group_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    tool, calls = _make_group()
    tool.main(["--root", "/x", "net", "create", "-d", "macvlan", "n1"], "pybuild")
    tool.main(["net", "create", "n2"], "pybuild")
    tool.main(["inspect"], "pybuild")
    assert calls == [({"root": "/x"}, "n1", "macvlan"), ({"root": "/r"}, "n2", "bridge"), "pybuild inspect"]
    with pytest.raises(SystemExit):
        tool.main(["net"], "pybuild")  # a bare group prints its help
    out = capsys.readouterr().out
    assert "Usage: pybuild net [OPTIONS] COMMAND [ARGS]..." in out
    assert "create  Create a network." in out and "List networks" not in out
    with pytest.raises(SystemExit):
        tool.main(["--help"], "pybuild")
    out = capsys.readouterr().out
    assert "--root string" in out and "inspect  Inspect something." in out and "net      Manage networks." in out


def test_group_errors() -> None:
    tool, _ = _make_group()
    assert usage_error(tool, "inspekt", prog="pybuild") == "unknown command 'inspekt' (did you mean 'inspect'?)"
    assert usage_error(tool, "zzz", prog="pybuild") == "unknown command 'zzz' (see 'pybuild --help')"
    assert usage_error(tool, "net", "zzz", prog="pybuild") == "unknown command 'zzz' (see 'pybuild net --help')"
    assert usage_error(tool, "--root", "/x", prog="pybuild").startswith("missing command")
    assert usage_error(tool, "net", "create", "--root", "x", prog="pybuild") == \
        "unknown flag: --root (see 'pybuild net create --help')"


def test_declaration_errors() -> None:
    with pytest.raises(ValueError):
        option("env")  # no flag name at all
    with pytest.raises(ValueError):
        command("c")(option("-x")(option("-x", "--ex")(lambda x: None)))


def test_echo(capsys: pytest.CaptureFixture[str]) -> None:
    echo("out")
    echo("err", err=True)
    echo("no newline", nl=False)
    captured = capsys.readouterr()
    assert captured.out == "out\nno newline" and captured.err == "err\n"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYBUILD_ROOT": "/nonexistent/cmdline-test", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pybuild", *args], capture_output=True, text=True, env=full_env,
                          cwd=REPO, timeout=60)


def test_cli_errors_and_help_without_a_store() -> None:
    out = _cli("imagess")
    assert out.returncode == 1 and out.stderr == "pybuild: error: unknown command 'imagess' (did you mean 'images'?)\n"
    out = _cli("frobnicate")
    assert out.stderr == "pybuild: error: unknown command 'frobnicate' (see 'pybuild --help')\n"
    out = _cli("history")
    assert out.returncode == 1
    assert out.stderr == ("pybuild: error: \"pybuild history\" requires exactly 1 argument "
                          "(see 'pybuild history --help')\n")
    out = _cli("run", "--cpus", "abc", "busybox")
    assert out.returncode == 1 and "invalid value for --cpus" in out.stderr
    assert "(see 'pybuild run --help')" in out.stderr
    out = _cli("run", "--help")
    assert out.returncode == 0 and out.stdout.startswith("Usage: pybuild run [OPTIONS] IMAGE [COMMAND]...")
    assert "-h, --hostname string" in out.stdout
    out = _cli("--help")
    assert out.returncode == 0 and "Commands:" in out.stdout and "  network  " in out.stdout
    assert " ".join(out.stdout.split()).count("(env PYBUILD_ROOT; default /var/lib/pybuild, or "
                                              "~/.local/share/pybuild for an ordinary user)") == 1
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("pybuild, version ")
    out = _cli("network", "--help")
    assert out.returncode == 0 and "create" in out.stdout and "inspect" in out.stdout


def test_cli_imports_nothing_heavy() -> None:
    code = ("import sys; before = set(sys.modules); import pybuild.cli; "
            "print(sorted(m for m in set(sys.modules) - before if m in ('click', 'argparse', 'typing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_main_is_usable_from_python(capsys: pytest.CaptureFixture[str]) -> None:
    from pybuild.cli import main, run_cli

    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pybuild, version ")
    assert run_cli(["frobnicate"]) == 1
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 1
