"""The init layer: the files a container gets from its runtime rather than its image.

Docker's ``<id>-init`` layer, below a container's read-write layer:
/etc/hostname, /etc/hosts, /etc/resolv.conf (0644) and the /proc, /sys, /dev
mount points. A build's RUN steps share one such layer, never committed.

resolv.conf follows one rule, for containers and RUN steps alike. On the
host's network it is the host's file as it is. In any other network
namespace the resolvers that mean "this host" are dropped: loopback ones
(127.0.0.0/8, ``::1``; typically a stub resolver such as systemd-resolved's
127.0.0.53) and the unspecified ``0.0.0.0``/``::`` (which the resolver also
sends to the local host), since they are unreachable from there. When
nothing is left, Docker's fallback fills in: Google's public resolvers.
``--dns`` replaces the nameservers (search and options lines stay).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"
MOUNT_POINTS = ("proc", "sys", "dev")


def write(diff: Path, *, hostname: str, hosts: str, resolv_conf: str) -> None:
    """Fill ``diff`` (an init layer's directory) with etc/{hostname,hosts,resolv.conf} and the mount points."""
    etc = diff / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    for d in MOUNT_POINTS:
        (diff / d).mkdir(mode=0o755, exist_ok=True)
    for name, text in (("hostname", hostname + "\n"), ("hosts", hosts), ("resolv.conf", resolv_conf)):
        (etc / name).write_text(text)
        os.chmod(etc / name, 0o644)


# ---- /etc/resolv.conf ---------------------------------------------------------------------


def resolv_conf(network: str, dns: Iterable[str] = ()) -> str:
    """The resolv.conf for a container on ``network`` ("host" or any other), from the host's."""
    return filter_resolv_conf(_read_host_file(HOST_RESOLV_CONF), network=network, dns=dns)


def filter_resolv_conf(host_text: str, *, network: str, dns: Iterable[str] = ()) -> str:
    """The module's rule applied to the text of the host's resolv.conf."""
    servers = list(dns)
    if network == "host" and not servers:
        return host_text
    lines = []
    left = False
    for line in host_text.splitlines():
        address = _nameserver(line)
        if address is not None:
            if servers or (network != "host" and is_local_nameserver(address)):
                continue  # --dns replaces them all; a local one is unreachable from here
            left = True
        lines.append(line)
    if not servers and not left:
        servers = list(FALLBACK_NAMESERVERS)
    lines += [f"nameserver {s}" for s in servers]
    return "\n".join(lines) + ("\n" if lines else "")


def is_local_nameserver(address: str) -> bool:
    """Whether a nameserver address names the host itself: loopback, or unspecified (0.0.0.0, ::)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # fe80::1%eth0: the zone is not the address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _nameserver(line: str) -> str | None:
    words = line.split()
    return words[1] if len(words) >= 2 and words[0] == "nameserver" else None


# ---- /etc/hosts -----------------------------------------------------------------------------


def default_hosts(hostname: str) -> str:
    """localhost and the hostname on 127.0.1.1: a container without an address of its own, and RUN steps."""
    return f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"


def hosts(hostname: str, network: str, add_hosts: Iterable[str] = (), address: str | None = None,
          gateway: str | None = None) -> str:
    """A container's /etc/hosts: the host's on its network, else its own (``address`` on a bridge).

    ``add_hosts`` are ``NAME:IP`` entries (``host-gateway`` is ``gateway``, and
    means nothing on the host's network).
    """
    add_hosts = tuple(add_hosts)
    if network == "host":
        text = _read_host_file(HOST_HOSTS) or "127.0.0.1\tlocalhost\n"
        for entry in add_hosts:
            name, _, ip = entry.partition(":")
            if ip != "host-gateway":
                text += f"{ip}\t{name}\n"
        return text
    if address is None and not add_hosts:
        return default_hosts(hostname)
    from .network.dns import hosts_file

    return hosts_file(hostname, address, add_hosts, gateway)


def _read_host_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
