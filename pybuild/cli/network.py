"""Network commands: network ls, create, rm, inspect."""

from __future__ import annotations

import sys

from pybuild.cli import Settings, pass_settings, ui
from pybuild.cli.cmdline import argument, echo, group, option

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _runtime(settings: Settings) -> Any:
    from pybuild.runtime.lifecycle import Runtime

    return Runtime(settings.store())


@group("network")
def network_group() -> None:
    """Manage networks (bridges with their own subnet; containers on one resolve each other by name)."""


network_group.add_lazy("prune", "pybuild.cli.prune:network_prune_cmd")


@network_group.command("ls")
@option("-q", "--quiet", is_flag=True, help="Only show network IDs.")
@option("--no-trunc", is_flag=True, help="Don't truncate the IDs.")
@option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
        help="Filter: driver, id, label, name, scope, type (custom|builtin), dangling.")
@option("--format", "fmt", help="Go template (table, json, or {{.Name}} ...).")
@pass_settings
def network_ls_cmd(settings: Settings, quiet: bool, no_trunc: bool, filters: tuple[str, ...],
                   fmt: str | None) -> None:
    """List networks."""
    from pybuild.cli.filters import Filters
    from pybuild.errors import UsageError

    rt = _runtime(settings)
    wanted = Filters(filters, ("driver", "id", "label", "name", "scope", "type", "dangling"))
    for kind in wanted.values("type"):
        if kind not in ("custom", "builtin"):
            raise UsageError(f"invalid filter: 'type'='{kind}'", "use custom or builtin")
    dangling = wanted.boolean("dangling")
    used = {c.network for c in rt.containers.walk()} if dangling is not None else set()
    rows = []
    nets = [(n.id, n.name, "bridge", n.created, n.builtin) for n in rt.networks.list_networks()]
    nets += [("", mode, "null" if mode == "none" else mode, "", True) for mode in ("host", "none")]
    for net_id, name, driver, created, builtin in nets:
        if not (wanted.match("name", name) and wanted.exact("driver", driver) and wanted.exact("scope", "local")
                and wanted.labels({}) and (not wanted.has("id") or any(net_id.startswith(v) for v in
                                                                           wanted.values("id")))):
            continue
        if wanted.has("type") and ("builtin" if builtin else "custom") not in wanted.values("type"):
            continue
        in_use = name in used or (name == "bridge" and ("bridge" in used or "default" in used))
        if dangling is not None and (dangling == in_use or builtin):
            continue
        from pybuild.cli.pslist import go_time

        rows.append({"ID": net_id if no_trunc else net_id[:12], "Name": name, "Driver": driver, "Scope": "local",
                     "IPv6": "false", "Internal": "false", "Labels": "", "CreatedAt": go_time(created)})
    if quiet:
        for row in rows:
            if row["ID"]:
                echo(row["ID"])
        return
    if fmt:
        from pybuild.cli import formatting

        formatting.emit(fmt, rows, {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                                    "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                                    "CreatedAt": "CREATED AT"})
        return
    ui.table(("NETWORK ID", "NAME", "DRIVER", "SCOPE"), [(r["ID"], r["Name"], r["Driver"], r["Scope"]) for r in rows])


@network_group.command("create")
@argument("name")
@option("-d", "--driver", default="bridge", show_default=True, help="Only bridge is supported.")
@option("--subnet", help="IPv4 subnet in CIDR form (default: a free /24 of 172.30.0.0/16).")
@option("--gateway", help="The bridge's address (default: the subnet's first host address).")
@pass_settings
def network_create_cmd(settings: Settings, name: str, driver: str, subnet: str | None, gateway: str | None) -> None:
    """Create a bridge network; prints its ID."""
    from pybuild.errors import UsageError

    if driver != "bridge":
        raise UsageError(f"unsupported network driver {driver!r}", "only bridge networks are supported")
    echo(_runtime(settings).networks.create_network(name, subnet, gateway).id)


@network_group.command("rm")
@argument("names", nargs=-1, required=True)
@pass_settings
def network_rm_cmd(settings: Settings, names: tuple[str, ...]) -> None:
    """Remove networks that no container uses."""
    rt = _runtime(settings)

    def one(name: str) -> None:
        net = rt.networks.get_network(name)
        users = [c.name for c in rt.containers.walk() if c.network == net.name]
        rt.networks.remove_network(net.name, users)
        echo(name)

    if not ui.each(names, one):
        sys.exit(1)


@network_group.command("inspect")
@argument("names", nargs=-1, required=True)
@option("-f", "--format", "fmt", help="Go template applied to each network.")
@pass_settings
def network_inspect_cmd(settings: Settings, names: tuple[str, ...], fmt: str | None) -> None:
    """Show networks as JSON (Docker's shape), with their running containers."""
    rt = _runtime(settings)
    docs = []
    for name in names:
        net = rt.networks.get_network(name)
        containers = {}
        for e in rt.networks.endpoints():
            if e.network == net.name:
                containers[e.container_id] = {"Name": e.name, "EndpointID": e.veth, "MacAddress": e.mac,
                                              "IPv4Address": e.address, "IPv6Address": ""}
        docs.append({
            "Name": net.name, "Id": net.id, "Created": net.created, "Scope": "local", "Driver": "bridge",
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": net.subnet, "Gateway": net.gateway}]},
            "Internal": False, "Attachable": False,
            "Containers": containers,
            "Options": {"com.docker.network.bridge.name": net.bridge,
                        "pybuild.nftables.table": rt.networks.table},
            "Labels": {},
        })
    if fmt:
        from pybuild.cli import formatting

        formatting.inspect(fmt, docs)
        return
    ui.print_json(docs)
