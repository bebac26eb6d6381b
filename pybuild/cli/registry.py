"""Registry commands: pull, push, login, logout."""

from __future__ import annotations

import sys

from pybuild.cli import Settings, pass_settings
from pybuild.cli.cmdline import Choice, argument, command, echo, option, prompt
from pybuild.errors import PybuildError, UsageError
from pybuild.store import reference as _reference

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.store.images import Image
    from pybuild.store.root import Store

_INSECURE_HELP = ("Allow this registry without valid TLS: HTTPS without verification, "
                  "then plain HTTP (env PYBUILD_INSECURE_REGISTRIES lists such hosts).")


def _options(insecure_domain: str | None):  # type: ignore[no-untyped-def]
    from pybuild.registry.transport import RegistryOptions

    return RegistryOptions.from_env([insecure_domain] if insecure_domain else [])


@command("pull")
@argument("name")
@option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to pull from a multi-platform image.")
@option("-q", "--quiet", is_flag=True, help="Print only the image's full reference.")
@option("--insecure", is_flag=True, help=_INSECURE_HELP)
@pass_settings
def pull_cmd(settings: Settings, name: str, platform: str | None, quiet: bool, insecure: bool) -> None:
    """Download an image from a registry (NAME[:TAG] or NAME@DIGEST)."""
    from pybuild.cli.progress import make_progress
    from pybuild.registry.pull import pull
    from pybuild.store.model import Platform

    ref = _reference.parse(name)
    plat = Platform.parse(platform) if platform else None
    store = settings.store()
    progress = make_progress(quiet)
    try:
        result = pull(store, ref, plat, progress, options=_options(ref.domain if insecure else None))
    finally:
        progress.close()
    echo(str(result.ref))


@command("push")
@argument("name")
@option("--compression", type=Choice(["gzip", "zstd"]),
        help="Recompress layers stored otherwise before pushing them.")
@option("-q", "--quiet", is_flag=True, help="Print only the full reference pushed.")
@option("--insecure", is_flag=True, help=_INSECURE_HELP)
@pass_settings
def push_cmd(settings: Settings, name: str, compression: str | None, quiet: bool, insecure: bool) -> None:
    """Upload an image (NAME[:TAG], as tagged in the store) to its registry."""
    from pybuild.cli.progress import make_progress
    from pybuild.registry.push import push

    ref = _reference.parse(name)
    if ref.digest is not None:
        raise UsageError(f"cannot push a digest reference: {name}", "push a NAME:TAG")
    store = settings.store()
    progress = make_progress(quiet)
    try:
        push(store, ref.key, ref, compression=compression, progress=progress,
             options=_options(ref.domain if insecure else None))
    finally:
        progress.close()
    if quiet:
        echo(str(ref))


@command("login")
@argument("server", required=False)
@option("-u", "--username", help="Username.")
@option("-p", "--password", help="Password (prefer --password-stdin).")
@option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@option("--insecure", is_flag=True, help=_INSECURE_HELP)
def login_cmd(server: str | None, username: str | None, password: str | None, password_stdin: bool,
              insecure: bool) -> None:
    """Log in to a registry (default Docker Hub); credentials go to Docker's config.json."""
    from pybuild.registry.auth import Credentials, parse_login_server, store_credentials
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.errors import RegistryAuthError, prefixed

    domain = parse_login_server(server)
    if password is not None and password_stdin:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("no username given", "use -u USER")
        username = prompt("Username")
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password given", "use --password-stdin")
        password = prompt("Password", hide_input=True)
    if not username or not password:
        raise UsageError("username and password must not be empty")
    creds = Credentials(username, password)
    try:
        with RegistryClient(domain, _options(domain if insecure else None), credentials=creds,
                            use_stored_credentials=False) as client:
            client.ping()
    except RegistryAuthError as exc:
        raise prefixed(exc, f"login to {domain} failed") from None
    except PybuildError as exc:
        raise prefixed(exc, f"login to {domain}") from None
    where = store_credentials(domain, creds)
    if not where.startswith("credential helper"):
        echo(f"WARNING! Your password will be stored unencrypted in {where}.", err=True)
    echo("Login Succeeded")


@command("logout")
@argument("server", required=False)
def logout_cmd(server: str | None) -> None:
    """Remove a registry's credentials from Docker's config.json (or its credential helper)."""
    from pybuild.registry.auth import erase_credentials, parse_login_server, server_key

    domain = parse_login_server(server)
    shown = server_key(domain)
    if erase_credentials(domain):
        echo(f"Removing login credentials for {shown}")
    else:
        echo(f"Not logged in to {shown}")


def push_built(store: Store, image: Image, ref: _reference.Reference, quiet: bool) -> None:
    """``build --push``: push the image just built to ``ref`` and print the digest."""
    from pybuild.cli.progress import make_progress
    from pybuild.registry.push import push

    progress = make_progress(quiet)
    try:
        result = push(store, image, ref, progress=progress, options=_options(None))
    finally:
        progress.close()
    echo(f"pushed {ref.familiar()}@{result.digest}")
