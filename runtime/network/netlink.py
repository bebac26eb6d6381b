"""Links, addresses and routes over rtnetlink, through pyroute2 (imported here only).

pyroute2 rather than running ``ip``: one netlink socket per namespace instead
of a process per change, structured answers instead of parsed text, errors
as errno values. Its package ``__init__`` imports every family it supports
(IPDB, NDB, wireless, IPVS...) and costs about 250 ms, twice the rest of a
container start, so :func:`_iproute` loads ``pyroute2.iproute`` without
running it; the full package still imports normally afterwards.

Every bridge pybuild makes carries an interface alias naming the store that
owns it (``pybuild:<root>``): pybuild never changes or deletes a link that
does not carry its own alias.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import importlib.util
import ipaddress
import os
import socket
import sys
import types
from pathlib import Path
from typing import Any

from pybuild.errors import NetworkError
from pybuild.linux import syscalls

from .netns import in_thread

_loaded: dict[str, Any] = {}


def _iproute() -> tuple[Any, type[Exception]]:
    """(IPRoute, NetlinkError), imported without pyroute2's all-inclusive package __init__."""
    if not _loaded:
        stub = None
        if "pyroute2" not in sys.modules:
            spec = importlib.util.find_spec("pyroute2")
            if spec is None or not spec.submodule_search_locations:
                raise NetworkError("bridge networking needs pyroute2", "pip install pyroute2")
            stub = types.ModuleType("pyroute2")
            stub.__path__ = list(spec.submodule_search_locations)
            stub.__spec__ = spec
            sys.modules["pyroute2"] = stub
        try:
            linux_mod = importlib.import_module("pyroute2.iproute.linux")
            exc_mod = importlib.import_module("pyroute2.netlink.exceptions")
        except ImportError as exc:
            raise NetworkError(f"cannot load pyroute2: {exc}", "pip install pyroute2") from None
        finally:
            if stub is not None and sys.modules.get("pyroute2") is stub:
                del sys.modules["pyroute2"]  # a later `import pyroute2` runs the real one
        _loaded["IPRoute"] = linux_mod.IPRoute
        _loaded["NetlinkError"] = exc_mod.NetlinkError
    return _loaded["IPRoute"], _loaded["NetlinkError"]


def owner_tag(root: Path) -> str:
    text = f"pybuild:{root}"
    if len(text.encode()) > 200:  # IFALIASZ is 256
        text = "pybuild:sha256:" + hashlib.sha256(str(root).encode()).hexdigest()
    return text


def mac_for(ip: ipaddress.IPv4Address) -> str:
    """Docker's rule: 02:42 and the four bytes of the address, so a reused address keeps its MAC (no stale ARP)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "r+") as f:
            if f.read().strip() != value:
                f.seek(0)
                f.write(value)
    except OSError as exc:
        raise NetworkError(f"cannot set {path.removeprefix('/proc/sys/').replace('/', '.')}={value}: "
                           f"{exc.strerror}") from None


class Netlink:
    """An rtnetlink socket in the host's network namespace."""

    def __init__(self) -> None:
        iproute, self._error = _iproute()
        self._iproute = iproute
        self.ipr = iproute()

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, what: str, exc: BaseException) -> NetworkError:
        code = getattr(exc, "code", 0)
        reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
        return NetworkError(f"{what}: {reason}")

    # ---- lookups ----------------------------------------------------------------

    def index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def _link(self, index: int) -> Any:
        return self.ipr.get_links(index)[0]

    def alias(self, name: str) -> str | None:
        idx = self.index(name)
        if idx is None:
            return None
        return str(self._link(idx).get_attr("IFLA_IFALIAS") or "")

    def owned_links(self, tag: str) -> list[str]:
        return [str(link.get_attr("IFLA_IFNAME")) for link in self.ipr.get_links()
                if link.get_attr("IFLA_IFALIAS") == tag]

    def overlapping_route(self, subnet: ipaddress.IPv4Network, ignore_dev: str | None = None) -> str | None:
        """A host route (any table, the default route aside) that overlaps ``subnet``, as text."""
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in self.ipr.get_links()}
        for route in self.ipr.route("dump", family=socket.AF_INET):
            length = int(route["dst_len"])
            dst = route.get_attr("RTA_DST")
            if length == 0 or dst is None:
                continue
            dev = names.get(int(route.get_attr("RTA_OIF") or 0), "?")
            if ignore_dev is not None and dev == ignore_dev:
                continue
            net = ipaddress.IPv4Network(f"{dst}/{length}", strict=False)
            if net.overlaps(subnet):
                table = int(route.get_attr("RTA_TABLE") or route["table"])
                where = {254: "", 255: " table local"}.get(table, f" table {table}")
                return f"{net} dev {dev}{where}"
        return None

    # ---- bridges -----------------------------------------------------------------

    def ensure_bridge(self, name: str, gateway: ipaddress.IPv4Interface, tag: str) -> None:
        """The bridge up with the gateway address; made (after an overlap check) if missing."""
        idx = self.index(name)
        if idx is not None:
            link = self._link(idx)
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            alias = link.get_attr("IFLA_IFALIAS") or ""
            if kind != "bridge" or alias != tag:
                owner = alias.removeprefix("pybuild:") if alias.startswith("pybuild:") else None
                raise NetworkError(f"network device {name} already exists and is not this store's bridge"
                                   + (f" (it belongs to the pybuild store {owner})" if owner else ""),
                                   "set PYBUILD_BRIDGE or use another network")
        else:
            clash = self.overlapping_route(gateway.network)
            if clash is not None:
                raise NetworkError(f"subnet {gateway.network} overlaps the host route {clash}",
                                   "choose another subnet (PYBUILD_SUBNET, or network create --subnet)")
            try:
                self.ipr.link("add", ifname=name, kind="bridge", address=mac_for(gateway.ip))
                idx = self.index(name)
                assert idx is not None
                self.ipr.link("set", index=idx, ifalias=tag)
            except self._error as exc:
                with contextlib.suppress(Exception):
                    if self.index(name) is not None and self.alias(name) in (tag, ""):
                        self.ipr.link("del", ifname=name)
                raise self._fail(f"cannot create bridge {name}", exc) from None
        try:
            addrs = {(a.get_attr("IFA_ADDRESS"), int(a["prefixlen"]))
                     for a in self.ipr.get_addr(family=socket.AF_INET, index=idx)}
            if (str(gateway.ip), gateway.network.prefixlen) not in addrs:
                self.ipr.addr("add", index=idx, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
            self.ipr.link("set", index=idx, state="up")
        except self._error as exc:
            raise self._fail(f"cannot configure bridge {name}", exc) from None
        # route_localnet: what lets DNAT send 127.0.0.1-sourced packets (published
        # ports reached through loopback) to a container and take the replies back.
        _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")

    def delete_owned(self, name: str, tag: str) -> bool:
        """Delete link ``name`` if it carries ``tag``; False if it is not there."""
        idx = self.index(name)
        if idx is None or self.alias(name) != tag:
            return False
        return self.delete(name)

    def delete(self, name: str) -> bool:
        try:
            self.ipr.link("del", ifname=name)
        except self._error as exc:
            if getattr(exc, "code", 0) == errno.ENODEV:
                return False
            raise self._fail(f"cannot delete {name}", exc) from None
        return True

    # ---- a container's end of the bridge -------------------------------------------

    def add_veth(self, host_name: str, bridge: str, netns: Path, address: ipaddress.IPv4Interface,
                 gateway: ipaddress.IPv4Address) -> None:
        """A veth pair: ``host_name`` on the bridge, ``eth0`` in ``netns`` with address and default route."""
        br = self.index(bridge)
        if br is None:
            raise NetworkError(f"bridge {bridge} vanished")
        nsfd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                self.ipr.link("add", ifname=host_name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": nsfd})
            except self._error as exc:
                raise self._fail(f"cannot create veth {host_name}", exc) from None
            try:
                idx = self.index(host_name)
                assert idx is not None
                self.ipr.link("set", index=idx, master=br, state="up")
                # hairpin: a container reaching its own published port through the
                # host comes back out of the bridge port it went in by.
                self.ipr.link("set", index=idx, kind="bridge_slave", mode=1)
                in_thread(lambda: self._configure_inside(nsfd, address, gateway))
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    self.delete(host_name)
                if isinstance(exc, self._error):
                    raise self._fail(f"cannot configure veth {host_name}", exc) from None
                raise
        finally:
            os.close(nsfd)

    def _configure_inside(self, nsfd: int, address: ipaddress.IPv4Interface, gateway: ipaddress.IPv4Address) -> None:
        syscalls.setns(nsfd, syscalls.CLONE_NEWNET)  # this thread only; it ends right after
        with self._iproute() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, address=mac_for(address.ip))
            ipr.addr("add", index=idx, address=str(address.ip), prefixlen=address.network.prefixlen)
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))
