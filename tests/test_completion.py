"""``pybuild completion``: the scripts work in the real shells (bash and fish asked for completions, zsh parsed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script(shell: str, tmp_path: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pybuild", "completion", shell], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYBUILD_ROOT": "/nonexistent/completion"}, check=True)
    path = tmp_path / f"pybuild.{shell}"
    path.write_text(done.stdout)
    return path


def _bash(script: Path, *words: str) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    code = (f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); "
            'COMPREPLY=(); _pybuild; printf "%s\\n" "${COMPREPLY[@]}"')
    return subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_bash_completes_commands_subcommands_and_flags(tmp_path: Path) -> None:
    script = _script("bash", tmp_path)
    assert _bash(script, "pybuild", "ima") == ["image", "images"]
    assert _bash(script, "pybuild", "image", "l") == ["list", "load", "ls"]
    assert _bash(script, "pybuild", "run", "--ne") == ["--net", "--network"]
    assert _bash(script, "pybuild", "--root", "/x", "ps", "--fi") == ["--filter"]
    assert _bash(script, "pybuild", "network", "c") == ["create"]


def test_fish_completes(tmp_path: Path) -> None:
    script = _script("fish", tmp_path)
    out = subprocess.run(["fish", "-c", f'source {script}; complete -C"pybuild image l"'], capture_output=True,
                         text=True, check=True).stdout
    assert [line.split("\t")[0] for line in out.splitlines()] == ["list", "load", "ls"]
    flags = subprocess.run(["fish", "-c", f'source {script}; complete -C"pybuild build --no-c"'],
                           capture_output=True, text=True, check=True).stdout
    assert "--no-cache" in flags


def test_zsh_script_parses(tmp_path: Path) -> None:
    script = _script("zsh", tmp_path)
    assert script.read_text().startswith("#compdef pybuild\n")
    subprocess.run(["zsh", "-n", str(script)], check=True)


def test_unknown_shell_is_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "pybuild", "completion", "tcsh"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 1
    assert done.stderr == "pybuild: error: unsupported shell 'tcsh' (use bash, zsh or fish)\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_command_is_in_the_script(shell: str, tmp_path: Path) -> None:
    from pybuild.cli import COMMANDS

    text = _script(shell, tmp_path).read_text()
    missing = [name for name in COMMANDS if name not in text]
    assert not missing
