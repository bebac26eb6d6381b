"""A bridge container's /etc/hosts, as text, and the checks of ``--dns`` and ``--add-host``.

/etc/hosts has localhost, the container's own address and hostname,
``--add-host`` entries and, on a user-defined network, every other running
member by name. (resolv.conf, the same for every network, is initlayer.py's.)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from pybuild.errors import NetworkError
from pybuild.records import record

HOST_GATEWAY = "host-gateway"
_LOCALHOST = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
              "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
_HOSTNAME_RE = re.compile(r"[a-zA-Z0-9_]([a-zA-Z0-9_.-]*[a-zA-Z0-9_])?")


@record(frozen=True)
class HostEntry:
    address: str
    names: tuple[str, ...]


def check_dns(servers: Iterable[str]) -> tuple[str, ...]:
    out = []
    for s in servers:
        try:
            out.append(str(ipaddress.ip_address(s)))
        except ValueError:
            raise NetworkError(f"invalid --dns address {s!r}", "give an IP address") from None
    return tuple(out)


def check_add_hosts(entries: Iterable[str]) -> tuple[str, ...]:
    """``NAME:IP`` (``NAME=IP`` too, and ``host-gateway``), normalised to ``NAME:IP``."""
    out = []
    for entry in entries:
        sep = "=" if "=" in entry else ":"
        name, _, address = entry.partition(sep)
        if not _HOSTNAME_RE.fullmatch(name) or not address:
            raise NetworkError(f"invalid --add-host {entry!r}", "use NAME:IP")
        if address != HOST_GATEWAY:
            try:
                address = str(ipaddress.ip_address(address.strip("[]")))
            except ValueError:
                raise NetworkError(f"invalid address in --add-host {entry!r}", "use NAME:IP") from None
        out.append(f"{name}:{address}")
    return tuple(out)


def hosts_file(hostname: str, address: str | None, add_hosts: Iterable[str], gateway: str | None,
               members: Iterable[HostEntry] = ()) -> str:
    out = [_LOCALHOST]
    for entry in add_hosts:
        name, _, ip = entry.partition(":")
        if ip == HOST_GATEWAY:
            if gateway is None:
                continue
            ip = gateway
        out.append(f"{ip}\t{name}\n")
    out.append(f"{address}\t{hostname}\n" if address else f"127.0.1.1\t{hostname}\n")
    for member in members:
        out.append(f"{member.address}\t{' '.join(member.names)}\n")
    return "".join(out)
