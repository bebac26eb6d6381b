"""Network records: ``<root>/network/networks.json``, one bridge and one subnet per network.

``bridge`` is the default network every container joins unless told
otherwise; its device and subnet come from ``PYBUILD_BRIDGE`` (``pybuild0``)
and ``PYBUILD_SUBNET`` (``172.29.0.0/16``) whenever no container holds an
address on it (the variables are read on every use). ``host`` and ``none``
are modes, listed but not stored. User-defined networks get a ``pb-<id>``
bridge and a /24 from 172.30.0.0/16 unless given ``--subnet``. The defaults
stay clear of Docker's (172.17.0.0/16) and podman's (10.88.0.0/16,
10.89.x.0/24); any subnet is checked against the host's routes before its
bridge is made. Callers hold the network lock.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pybuild.errors import NetworkError, NetworkNotFound, UsageError
from pybuild.linux.fsutil import atomic_write
from pybuild.records import asdict, record
from pybuild.store.images import now_iso

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "pybuild0"
DEFAULT_SUBNET = "172.29.0.0/16"
USER_SUBNET_POOL = ipaddress.IPv4Network("172.30.0.0/16")
MODES = ("host", "none")
RESERVED = (DEFAULT_NETWORK, "default", *MODES)
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DEVICE_RE = re.compile(r"[a-zA-Z0-9_.-]{1,15}")


@record(frozen=True)
class Network:
    name: str
    id: str
    bridge: str
    subnet: str
    gateway: str
    created: str
    builtin: bool = False

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.gateway}/{self.network.prefixlen}")

    @property
    def short_id(self) -> str:
        return self.id[:12]


def check_device_name(name: str) -> str:
    if not _DEVICE_RE.fullmatch(name) or name in (".", ".."):
        raise NetworkError(f"invalid bridge name {name!r}", "1-15 characters of [a-zA-Z0-9_.-]")
    return name


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise NetworkError(f"invalid subnet {text!r}: {exc}", "use an IPv4 network such as 10.90.0.0/24") from None
    if net.prefixlen > 30:
        raise NetworkError(f"subnet {net} is too small", "a /30 or larger leaves room for a gateway and a container")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise NetworkError(f"subnet {net} cannot be used for containers")
    return net


def first_host(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return net.network_address + 1


class NetworkStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "networks.json"

    def _load(self) -> dict[str, Network]:
        try:
            doc: dict[str, Any] = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return {name: Network(**record) for name, record in doc.items()}

    def _save(self, networks: dict[str, Network]) -> None:
        atomic_write(self.path, json.dumps({n: asdict(v) for n, v in sorted(networks.items())}, indent=1).encode(),
                     durable=False)

    def all(self) -> list[Network]:
        return sorted(self._load().values(), key=lambda n: (not n.builtin, n.name))

    def find(self, name: str) -> Network | None:
        networks = self._load()
        if name in networks:
            return networks[name]
        matches = [n for n in networks.values() if name and n.id.startswith(name)]
        return matches[0] if len(matches) == 1 else None

    def get(self, name: str) -> Network:
        found = self.find(name)
        if found is None:
            raise NetworkNotFound(f"network {name} not found", "see 'pybuild network ls'")
        return found

    def default(self, in_use: Callable[[str], bool],
                route_clash: Callable[[ipaddress.IPv4Network], str | None] | None = None,
                store_tag: str | None = None) -> Network:
        """The ``bridge`` network, (re)made from the environment when nothing holds an address on it.

        Without ``PYBUILD_BRIDGE``/``PYBUILD_SUBNET``, the store at the default root gets
        ``pybuild0`` on 172.29.0.0/16; any other store (``store_tag`` given) a bridge of its own,
        ``pb0-<tag>``, on the first free /24 of the user pool, so two stores on one host never
        fight over one device or subnet. The choice is recorded and kept.
        """
        networks = self._load()
        current = networks.get(DEFAULT_NETWORK)
        from_env = bool(os.environ.get("PYBUILD_BRIDGE") or os.environ.get("PYBUILD_SUBNET"))
        if current is not None and not from_env:
            return current
        if from_env or store_tag is None or route_clash is None:
            bridge = check_device_name(os.environ.get("PYBUILD_BRIDGE") or DEFAULT_BRIDGE)
            subnet = parse_subnet(os.environ.get("PYBUILD_SUBNET") or DEFAULT_SUBNET)
        else:
            bridge = check_device_name(f"pb0-{store_tag[:8]}")
            subnet = self._pick_subnet(networks, route_clash)
        if current is not None and (current.bridge, current.subnet) == (bridge, str(subnet)):
            return current
        if current is not None and in_use(DEFAULT_NETWORK):
            if not (os.environ.get("PYBUILD_BRIDGE") or os.environ.get("PYBUILD_SUBNET")):
                return current  # the variables were unset: keep what the containers use
            raise NetworkError(f"the default network is in use with bridge {current.bridge} and subnet "
                               f"{current.subnet}", "remove its containers before changing PYBUILD_BRIDGE "
                               "or PYBUILD_SUBNET")
        self._check_free(networks, bridge, subnet, DEFAULT_NETWORK)
        record = Network(DEFAULT_NETWORK, current.id if current else secrets.token_hex(32), bridge, str(subnet),
                         str(first_host(subnet)), current.created if current else now_iso(), builtin=True)
        networks[DEFAULT_NETWORK] = record
        self._save(networks)
        return record

    def create(self, name: str, subnet: ipaddress.IPv4Network | None, gateway: str | None,
               route_clash: Callable[[ipaddress.IPv4Network], str | None]) -> Network:
        if not _NAME_RE.fullmatch(name):
            raise UsageError(f"invalid network name {name!r}", "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if name in RESERVED:
            raise NetworkError(f"network name {name!r} is reserved for the predefined networks")
        networks = self._load()
        if name in networks:
            raise NetworkError(f"network with name {name} already exists")
        net_id = secrets.token_hex(32)
        bridge = f"pb-{net_id[:12]}"
        if subnet is None:
            subnet = self._pick_subnet(networks, route_clash)
        else:
            clash = route_clash(subnet)
            if clash is not None:
                raise NetworkError(f"subnet {subnet} overlaps the host route {clash}", "choose another --subnet")
        self._check_free(networks, bridge, subnet, name)
        if gateway is None:
            gw = first_host(subnet)
        else:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError:
                raise NetworkError(f"invalid gateway {gateway!r}") from None
            if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
                raise NetworkError(f"gateway {gw} is not a host address of subnet {subnet}")
        record = Network(name, net_id, bridge, str(subnet), str(gw), now_iso())
        networks[name] = record
        self._save(networks)
        return record

    def remove(self, name: str) -> None:
        networks = self._load()
        networks.pop(name, None)
        self._save(networks)

    @staticmethod
    def _check_free(networks: dict[str, Network], bridge: str, subnet: ipaddress.IPv4Network, name: str) -> None:
        for other in networks.values():
            if other.name == name:
                continue
            if other.network.overlaps(subnet):
                raise NetworkError(f"subnet {subnet} overlaps network {other.name} ({other.subnet})",
                                   "choose another subnet")
            if other.bridge == bridge:
                raise NetworkError(f"bridge {bridge} is already used by network {other.name}")

    @staticmethod
    def _pick_subnet(networks: dict[str, Network],
                     route_clash: Callable[[ipaddress.IPv4Network], str | None]) -> ipaddress.IPv4Network:
        for candidate in USER_SUBNET_POOL.subnets(new_prefix=24):
            if any(n.network.overlaps(candidate) for n in networks.values()):
                continue
            if route_clash(candidate) is None:
                return candidate
        raise NetworkError(f"no free /24 left in {USER_SUBNET_POOL}", "give one with --subnet")
