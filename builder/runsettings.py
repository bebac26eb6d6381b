"""What ``build --add-host``, ``--ulimit`` and ``--shm-size`` give every RUN step, and how it is keyed.

The three are buildx's flags with Docker's syntax:

* ``--add-host NAME:IP`` (or ``NAME=IP``; ``IP`` may be ``host-gateway``, the
  gateway of the store's default bridge network, as Docker resolves it to
  its default bridge's address): lines in the steps' ``/etc/hosts``;
* ``--ulimit NAME=SOFT[:HARD]`` (``nofile=1024:2048``): setrlimit(2) before the
  command runs, as ``run --ulimit``;
* ``--shm-size SIZE`` (``128m``): the size of the steps' ``/dev/shm``.

Cache keys follow BuildKit's ExecOp cache map (solver/llbsolver/ops/exec.go):
the ulimits are part of ``Meta`` and the shm size is a tmpfs mount of the
op, so both enter the key; the extra hosts enter it by *name* only (their
IPs are blanked before hashing), so a host that moved does not rebuild.
Nothing enters the key when a flag is not given: earlier cache records
still match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pybuild.errors import NetworkError, PybuildError, UsageError
from pybuild.records import record
from pybuild.runtime.spec import Rlimit


@record(frozen=True)
class RunSettings:
    add_hosts: tuple[str, ...] = ()  # NAME:IP, host-gateway kept as written (resolved with the init layer)
    ulimits: tuple[Rlimit, ...] = ()
    ulimit_texts: tuple[str, ...] = ()  # as given (normalised): what the key holds
    shm_size: int | None = None  # bytes; None: Docker's default (64 MiB)

    def key_material(self) -> dict[str, Any]:
        """What a RUN step's cache key gets from these settings (nothing when none is set)."""
        out: dict[str, Any] = {}
        if self.add_hosts:
            out["extra_hosts"] = [entry.partition(":")[0] for entry in self.add_hosts]
        if self.ulimit_texts:
            out["ulimits"] = list(self.ulimit_texts)
        if self.shm_size is not None:
            out["shm_size"] = self.shm_size
        return out


def parse_run_settings(add_hosts: Iterable[str] = (), ulimits: Iterable[str] = (),
                       shm_size: str | None = None) -> RunSettings:
    """The flags' values checked (a bad one is a one-line UsageError naming the flag)."""
    from pybuild.runtime.network.dns import check_add_hosts
    from pybuild.runtime.security import ULIMIT_NAMES, parse_ulimit

    hosts: list[str] = []
    for entry in add_hosts:
        # buildx takes several addresses for one name: NAME:IP1,IP2 (an entry per address)
        name, sep, addresses = entry.partition("=" if "=" in entry else ":")
        parts = addresses.split(",") if sep and "," in addresses else [addresses]
        for address in parts:
            try:
                hosts.extend(check_add_hosts([f"{name}:{address}" if sep else entry]))
            except NetworkError:
                raise UsageError(f"invalid --add-host {entry!r}", "use NAME:IP or NAME:host-gateway") from None
    limits: dict[int, Rlimit] = {}
    for text in ulimits:
        try:
            limit = parse_ulimit(text)
        except PybuildError as exc:
            raise UsageError(exc.message, exc.hint) from None
        limits[limit.resource] = limit  # a repeated name: the last one wins, as docker's map
    texts = tuple(f"{ULIMIT_NAMES[r.resource]}={r.soft}:{r.hard}" for r in sorted(limits.values(),
                                                                               key=lambda r: r.resource))
    size: int | None = None
    if shm_size is not None:
        from pybuild.store.units import parse_size

        try:
            size = parse_size(shm_size)
        except ValueError:
            raise UsageError(f"invalid --shm-size {shm_size!r}", "use a size such as 128m or 1g") from None
        if size <= 0:
            raise UsageError(f"invalid --shm-size {shm_size!r}: it must be positive")
    return RunSettings(add_hosts=tuple(hosts), ulimits=tuple(sorted(limits.values(), key=lambda r: r.resource)),
                       ulimit_texts=texts, shm_size=size)


def hosts_text(base: str, add_hosts: Iterable[str], gateway: str | None) -> str:
    """``base`` (the steps' /etc/hosts) with the ``--add-host`` lines after it, ``host-gateway`` as ``gateway``."""
    from pybuild.runtime.network.dns import HOST_GATEWAY

    out = [base if base.endswith("\n") or not base else base + "\n"]
    for entry in add_hosts:
        name, _, address = entry.partition(":")
        if address == HOST_GATEWAY:
            if gateway is None:
                raise UsageError(f"--add-host {name}:{HOST_GATEWAY}: the host's gateway address is not known")
            address = gateway
        out.append(f"{address}\t{name}\n")
    return "".join(out)
