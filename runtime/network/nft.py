"""pybuild's nftables table: NAT for outbound traffic and for published ports.

The table (``table ip pybuild``, one per store: see :func:`table_name`) is a
function of the running containers: every change rewrites it whole in one
``nft -f -`` transaction (delete and re-add are atomic together; conntrack
keeps established connections' NAT across it). When no container runs, the
table is deleted. Nothing outside it is read or touched.

Rules, per bridge network in use:

- ``guard`` (prerouting, before conntrack): a packet from a bridge to
  127.0.0.0/8 is dropped. ``route_localnet`` on the bridge would otherwise
  let a container reach the host's loopback-only services.
- ``prerouting``/``output`` (nat): traffic to a local address (any, or the
  ``-p IP:`` one) and a published port is DNATed to the container. OUTPUT
  covers connections made on the host itself, 127.0.0.1 included.
- ``postrouting`` (nat): masquerade what leaves the subnet for elsewhere;
  masquerade loopback-sourced connections to a container (its replies must
  come back to the host) and DNATed ones between containers of one bridge
  (hairpin: the reply must pass the host to be un-DNATed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from pybuild.errors import NetworkError
from pybuild.records import record

from .ports import PortBinding

DEFAULT_ROOT = Path("/var/lib/pybuild")


def table_name(root: Path) -> str:
    """``pybuild`` for the default store, ``pybuild_<hash>`` for any other: stores never share rules."""
    if root == DEFAULT_ROOT:
        return "pybuild"
    return "pybuild_" + hashlib.sha256(str(root).encode()).hexdigest()[:10]


@record(frozen=True)
class BridgeRules:
    bridge: str
    subnet: str


@record(frozen=True)
class Forward:
    binding: PortBinding
    address: str  # the container's


def _quote(name: str) -> str:
    return '"' + name + '"'


def render(table: str, bridges: Iterable[BridgeRules], forwards: Iterable[Forward]) -> str:
    bridges = sorted(set(bridges), key=lambda b: b.bridge)
    lines = [f"table ip {table}", f"delete table ip {table}"]
    if not bridges:
        return "\n".join(lines) + "\n"
    names = ", ".join(_quote(b.bridge) for b in bridges)
    port_rules = []
    for f in forwards:
        b = f.binding
        match = f"ip daddr {b.host_ip} " if b.host_ip else ""
        port_rules.append(f"    {match}{b.proto} dport {b.host_port} dnat to {f.address}:{b.container_port}")
    post = []
    for br in bridges:
        dev = _quote(br.bridge)
        post.append(f"    ip saddr {br.subnet} oifname != {dev} masquerade")
        post.append(f"    oifname {dev} ip saddr 127.0.0.0/8 masquerade")
        post.append(f"    oifname {dev} ip saddr {br.subnet} ct status dnat masquerade")
    lines += [
        f"table ip {table} {{",
        "  chain guard {",
        "    type filter hook prerouting priority raw; policy accept;",
        f"    iifname {{ {names} }} ip daddr 127.0.0.0/8 drop",
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump ports",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump ports",
        "  }",
        "  chain ports {",
        *port_rules,
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *post,
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def nft_command() -> str:
    """The nft binary; there is no iptables fallback."""
    for candidate in (shutil.which("nft"), "/usr/sbin/nft", "/sbin/nft"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NetworkError("bridge networking needs nftables (the nft command)", "apt-get install nftables")


def apply(ruleset: str) -> None:
    proc = subprocess.run([nft_command(), "-f", "-"], input=ruleset.encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise NetworkError("nftables refused pybuild's rules: " + (lines[0] if lines else f"exit {proc.returncode}"))

