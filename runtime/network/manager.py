"""The networking facade the lifecycle uses (see the package docstring for the design).

:meth:`NetworkManager.lease` when a container is created, :meth:`~NetworkManager.attach`
before it starts (returns an :class:`Attachment` its monitor holds and
:meth:`~Attachment.detach` es when it ends), :meth:`~NetworkManager.forget`
when it is removed and :meth:`~NetworkManager.reclaim` from ``prune``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pybuild.errors import ConflictError, NetworkError
from pybuild.linux.fsutil import atomic_write
from pybuild.records import asdict, field, record
from pybuild.store.locks import Ownership, is_abandoned, locked
from pybuild.store.root import DEFAULT_ROOT

from . import dns, netns, nft
from .ipam import Leases
from .netlink import mac_for, owner_tag
from .networks import DEFAULT_NETWORK, Network, NetworkStore
from .ports import PortBinding, Reservations


@record(frozen=True)
class Endpoint:
    """A running container's place on a bridge network."""

    container_id: str
    name: str
    hostname: str
    network: str
    user_defined: bool
    bridge: str
    address: str          # with prefix length: 172.29.0.2/16
    gateway: str
    mac: str
    veth: str
    netns: str
    hosts_path: str
    add_hosts: tuple[str, ...] = ()
    ports: tuple[PortBinding, ...] = ()

    @property
    def ip(self) -> str:
        return self.address.partition("/")[0]

    @property
    def prefixlen(self) -> int:
        return int(self.address.partition("/")[2])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Endpoint:
        doc = dict(doc)
        doc["add_hosts"] = tuple(doc.get("add_hosts") or ())
        doc["ports"] = tuple(PortBinding(**p) for p in doc.get("ports") or ())
        return cls(**doc)


@record
class Attachment:
    """What a container's monitor holds while the container runs: the endpoint's owner lock and its ports."""

    manager: NetworkManager
    endpoint: Endpoint
    ownership: Ownership
    reservations: Reservations = field(default_factory=Reservations)

    def detach(self) -> None:
        try:
            with self.manager.locked():
                self.manager._teardown(self.endpoint)
        finally:
            self.reservations.close()
            self.ownership.release()


def open_manager(root: Path) -> NetworkManager:
    """The networking of the store at ``root``: bridges as root, slirp4netns in a rootless namespace."""
    from pybuild.linux import userns

    if userns.rootless():
        from .usermode import UserModeNetworkManager

        return UserModeNetworkManager(root)
    return NetworkManager(root)


class NetworkManager:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "network"
        self.endpoints_dir = self.dir / "endpoints"
        self.networks = NetworkStore(self.dir)
        self.leases = Leases(self.dir)
        self.table = nft.table_name(root)
        self.tag = owner_tag(root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.endpoints_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with locked(self.dir / "lock"):
            yield

    # ---- networks ------------------------------------------------------------------

    def _in_use(self, network: str) -> bool:
        return bool(self.leases.holders(network))

    def network(self, name: str) -> Network:
        """A bridge network by name or id (``bridge``/``default``: the default one). Caller holds the lock."""
        if name in (DEFAULT_NETWORK, "default"):
            before = self.networks.find(DEFAULT_NETWORK)
            net = self._default_network()
            if before is not None and (before.bridge, before.subnet) != (net.bridge, net.subnet):
                from .netlink import Netlink

                with Netlink() as nl:  # PYBUILD_BRIDGE/SUBNET changed: the old bridge goes
                    nl.delete_owned(before.bridge, self.tag)
            return net
        return self.networks.get(name)

    def _default_network(self) -> Network:
        if self.root.resolve() == Path(DEFAULT_ROOT).resolve():
            return self.networks.default(self._in_use)
        from .netlink import Netlink

        tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()
        with Netlink() as nl:
            return self.networks.default(self._in_use, nl.overlapping_route, tag)

    def get_network(self, name: str) -> Network:
        with self.locked():
            return self.network(name)

    def list_networks(self) -> list[Network]:
        with self.locked():
            self._default_network()
            return self.networks.all()

    def create_network(self, name: str, subnet: str | None, gateway: str | None) -> Network:
        from . import netlink
        from .networks import parse_subnet

        net = parse_subnet(subnet) if subnet is not None else None
        with self.locked(), netlink.Netlink() as nl:
            self._default_network()  # so that its subnet is known to the overlap check
            return self.networks.create(name, net, gateway, nl.overlapping_route)

    def remove_network(self, name: str, users: list[str]) -> Network:
        """Remove a user-defined network; ``users`` are the names of containers configured on it."""
        with self.locked():
            net = self.network(name)
            if net.builtin:
                raise NetworkError(f"{net.name} is a pre-defined network and cannot be removed")
            if users or self._in_use(net.name):
                raise ConflictError(f"network {net.name} has active endpoints",
                                    f"remove the containers using it first: {', '.join(users)}" if users else None)
            if any(e.network == net.name for e in self.endpoints()):
                raise ConflictError(f"network {net.name} has active endpoints")
            from .netlink import Netlink

            with Netlink() as nl:
                nl.delete_owned(net.bridge, self.tag)
            self.networks.remove(net.name)
        return net

    # ---- leases (create / rm) --------------------------------------------------------

    def lease(self, name: str, container_id: str) -> tuple[Network, ipaddress.IPv4Interface]:
        with self.locked():
            net = self.network(name)
            return net, self.leases.lease(net, container_id)

    def leased(self, container_id: str) -> tuple[Network, ipaddress.IPv4Interface] | None:
        found = self.leases.of(container_id)
        if found is None:
            return None
        net = self.networks.find(found[0])
        if net is None:
            return None
        return net, ipaddress.IPv4Interface(f"{found[1]}/{net.network.prefixlen}")

    def release(self, container_id: str) -> None:
        with self.locked():
            self.leases.release({container_id})

    # ---- endpoints ---------------------------------------------------------------------

    def _record(self, container_id: str) -> Path:
        return self.endpoints_dir / f"{container_id}.json"

    def _owner(self, container_id: str) -> Path:
        return self.endpoints_dir / f"{container_id}.lock"

    def endpoint(self, container_id: str) -> Endpoint | None:
        try:
            return Endpoint.from_json(json.loads(self._record(container_id).read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def endpoints(self) -> list[Endpoint]:
        try:
            names = sorted(os.listdir(self.endpoints_dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                ep = self.endpoint(name[:-5])
                if ep is not None:
                    out.append(ep)
        return out

    def attach(self, *, container_id: str, name: str, hostname: str, network: str, ports: tuple[PortBinding, ...],
               add_hosts: tuple[str, ...], hosts_path: Path) -> Attachment:
        """Give a container about to start its namespace, veth, address and published ports.

        Ports are bind-tested first: on any failure nothing is left configured.
        """
        self._check_tools()  # before anything is made
        self._wait_for_owner(container_id, 10.0)
        with self.locked():
            self._reap()
            ownership = Ownership(self._owner(container_id))
            reservations = Reservations()
            endpoint: Endpoint | None = None
            try:
                bound = tuple(reservations.reserve(ports))
                net = self.network(network)
                endpoint = self._new_endpoint(net, container_id=container_id, name=name, hostname=hostname,
                                              hosts_path=str(hosts_path), add_hosts=add_hosts, ports=bound)
                atomic_write(self._record(container_id), json.dumps(endpoint.to_json()).encode(), durable=False)
                self._plumb(net, endpoint, reservations)
                self._write_hosts(net.name)
                self._apply_rules()
            except BaseException:
                try:
                    if endpoint is not None:
                        with contextlib.suppress(Exception):  # the first failure is the one to report
                            self._teardown(endpoint)
                finally:
                    reservations.close()
                    ownership.release()
                raise
        return Attachment(self, endpoint, ownership, reservations)

    def _check_tools(self) -> None:
        nft.nft_command()

    def _new_endpoint(self, net: Network, *, container_id: str, name: str, hostname: str, hosts_path: str,
                      add_hosts: tuple[str, ...], ports: tuple[PortBinding, ...]) -> Endpoint:
        """The endpoint a container gets on ``net``: a leased address and a veth. Caller holds the lock."""
        address = self.leases.lease(net, container_id)
        return Endpoint(
            container_id=container_id, name=name, hostname=hostname, network=net.name,
            user_defined=not net.builtin, bridge=net.bridge, address=str(address), gateway=net.gateway,
            mac=mac_for(address.ip), veth=f"pbv{container_id[:12]}", netns=str(netns.path_for(container_id)),
            hosts_path=hosts_path, add_hosts=add_hosts, ports=ports)

    def _plumb(self, net: Network, endpoint: Endpoint, reservations: Reservations) -> None:
        """Make the endpoint real: the bridge, the namespace, the veth (the reservations hold the ports)."""
        from .netlink import Netlink

        with Netlink() as nl:
            nl.ensure_bridge(net.bridge, net.gateway_interface, self.tag)
            netns.create(Path(endpoint.netns))
            nl.add_veth(endpoint.veth, net.bridge, Path(endpoint.netns), ipaddress.IPv4Interface(endpoint.address),
                        ipaddress.IPv4Address(endpoint.gateway))

    def _teardown(self, endpoint: Endpoint) -> None:
        """Undo an endpoint, whatever part of it exists. Caller holds the lock."""
        from .netlink import Netlink

        with Netlink() as nl:
            nl.delete(endpoint.veth)  # takes eth0 in the namespace with it
        netns.remove(Path(endpoint.netns))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record(endpoint.container_id))
        if endpoint.user_defined:
            self._write_hosts(endpoint.network)
        self._apply_rules()

    def _apply_rules(self) -> None:
        bridges = []
        forwards = []
        for e in self.endpoints():
            subnet = ipaddress.IPv4Interface(e.address).network
            bridges.append(nft.BridgeRules(e.bridge, str(subnet)))
            forwards += [nft.Forward(b, e.ip) for b in e.ports]
        nft.apply(nft.render(self.table, bridges, forwards))

    def _write_hosts(self, network: str) -> None:
        """Rewrite /etc/hosts of every running member of ``network`` (in place: it is bind-mounted)."""
        members = [e for e in self.endpoints() if e.network == network]
        for e in members:
            others = [] if not e.user_defined else [
                dns.HostEntry(m.ip, tuple(dict.fromkeys((m.name, m.hostname))))
                for m in members if m.container_id != e.container_id]
            text = dns.hosts_file(e.hostname, e.ip, e.add_hosts, e.gateway, others)
            with contextlib.suppress(FileNotFoundError), open(e.hosts_path, "r+") as f:
                f.truncate(0)
                f.write(text)

    def _wait_for_owner(self, container_id: str, timeout: float) -> None:
        """Wait while a monitor still holds the container's endpoint (it is tearing it down)."""
        owner = self._owner(container_id)
        deadline = time.monotonic() + timeout
        while owner.exists() and not is_abandoned(owner):
            if time.monotonic() >= deadline:
                raise ConflictError(f"container {container_id[:12]} is still attached to its network")
            time.sleep(0.02)

    def _reap(self) -> int:
        """Tear down endpoints whose monitor is gone. Caller holds the lock."""
        count = 0
        for e in self.endpoints():
            owner = self._owner(e.container_id)
            if is_abandoned(owner):
                self._teardown(e)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(owner)
                count += 1
        return count

    # ---- removal and maintenance -------------------------------------------------------

    def forget(self, container_id: str, wait: float = 10.0) -> None:
        """A container is being removed: its endpoint (once its monitor lets go) and its lease go."""
        if not self.dir.exists():
            return
        with contextlib.suppress(ConflictError):
            self._wait_for_owner(container_id, wait)
        with self.locked():
            e = self.endpoint(container_id)
            if e is not None and is_abandoned(self._owner(container_id)):
                self._teardown(e)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._owner(container_id))
            self.leases.release({container_id})

    def reclaim(self, live: set[str]) -> int:
        """``prune``: abandoned endpoints, leases of containers that no longer exist, idle bridges of this store.

        Bridges otherwise stay once made (like docker0): making and deleting
        one costs a container start some 60 ms.
        """
        if not self.dir.exists():
            return 0
        with self.locked():
            count = self._reap()
            # endpoints left after the reap are owned by live processes (a build's RUN step, say)
            count += self.leases.release_unless(live | {e.container_id for e in self.endpoints()})
            in_use = {e.bridge for e in self.endpoints()}
            from .netlink import Netlink

            with Netlink() as nl:
                for name in nl.owned_links(self.tag):
                    if name not in in_use and nl.delete_owned(name, self.tag):
                        count += 1
            self._apply_rules()
        return count
