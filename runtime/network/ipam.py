"""Address leases: ``<root>/network/leases.json``, network name -> address -> container id.

A container leases its address when it is created and keeps it until it is
removed (stable across restarts, shown by ``inspect`` while stopped). The
lowest free host address after the gateway is taken; addresses map to MACs
one to one (``netlink.mac_for``), so reusing one never leaves a stale ARP
entry behind. The file is replaced atomically; callers hold the network lock,
which serialises concurrent ``run``s. A lease whose container no longer
exists (the CLI was killed between the two) is reclaimed by ``prune``.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from pybuild.errors import NetworkError
from pybuild.linux.fsutil import atomic_write

from .networks import Network


class Leases:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "leases.json"

    def load(self) -> dict[str, dict[str, str]]:
        try:
            doc: dict[str, dict[str, str]] = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return doc

    def _save(self, doc: dict[str, dict[str, str]]) -> None:
        doc = {net: dict(sorted(leases.items(), key=lambda kv: ipaddress.IPv4Address(kv[0])))
               for net, leases in sorted(doc.items()) if leases}
        atomic_write(self.path, json.dumps(doc, indent=1).encode(), durable=False)

    def lease(self, network: Network, container_id: str) -> ipaddress.IPv4Interface:
        doc = self.load()
        taken = doc.setdefault(network.name, {})
        for address, owner in taken.items():
            if owner == container_id:
                return ipaddress.IPv4Interface(f"{address}/{network.network.prefixlen}")
        gateway = ipaddress.IPv4Address(network.gateway)
        for host in network.network.hosts():
            if host == gateway or str(host) in taken:
                continue
            taken[str(host)] = container_id
            self._save(doc)
            return ipaddress.IPv4Interface(f"{host}/{network.network.prefixlen}")
        raise NetworkError(f"no free address left in network {network.name} ({network.subnet})")

    def of(self, container_id: str) -> tuple[str, str] | None:
        """(network name, address) leased by a container."""
        for net, leases in self.load().items():
            for address, owner in leases.items():
                if owner == container_id:
                    return net, address
        return None

    def holders(self, network: str) -> dict[str, str]:
        return dict(self.load().get(network, {}))

    def release(self, container_ids: set[str]) -> int:
        doc = self.load()
        count = 0
        for leases in doc.values():
            for address in [a for a, owner in leases.items() if owner in container_ids]:
                del leases[address]
                count += 1
        if count:
            self._save(doc)
        return count

    def release_unless(self, live: set[str]) -> int:
        """Drop every lease whose container is not in ``live``."""
        owners = {owner for leases in self.load().values() for owner in leases.values()}
        return self.release(owners - live)
