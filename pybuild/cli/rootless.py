"""``pybuild unshare``: a command inside the rootless user and mount namespace, as ``podman unshare``."""

from __future__ import annotations

import os

from pybuild.cli import Settings, pass_settings
from pybuild.cli.cmdline import argument, command
from pybuild.errors import PybuildError, UsageError


@command("unshare", interspersed=False)
@argument("command", nargs=-1)
@pass_settings
def unshare_cmd(settings: Settings, command: tuple[str, ...]) -> None:
    """Run COMMAND (default: $SHELL) as root of your rootless namespace, where the store's mounts are.

    For looking at a rootless store as its containers see it: files with their
    container ids, a 'pybuild mount' path, 'rm -rf' of what the host shows as
    someone else's (your subordinate ids). As root there is no such namespace.
    """
    if os.geteuid() == 0:
        raise UsageError("pybuild unshare is for an ordinary user: as root there is no rootless namespace")
    settings.enter_namespace()
    argv = list(command) or [os.environ.get("SHELL") or "/bin/sh"]
    os.environ["PYBUILD_ROOT"] = settings.root
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise PybuildError(f"cannot run {argv[0]}: {exc.strerror}") from None
