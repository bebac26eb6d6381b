"""The pure parts of networking: -p parsing, address leases, network records, the nft ruleset, DNS files."""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path

import pytest

from pybuild.errors import NetworkError, NetworkNotFound
from pybuild.runtime.network import dns, nft
from pybuild.runtime.network.ipam import Leases
from pybuild.runtime.network.netlink import mac_for
from pybuild.runtime.network.networks import Network, NetworkStore
from pybuild.runtime.network.ports import PortBinding, Reservations, parse_all, parse_publish
from pybuild.store.locks import locked


def test_parse_publish_forms() -> None:
    assert parse_publish("8080:80") == [PortBinding(80, 8080)]
    assert parse_publish("127.0.0.1:8080:80") == [PortBinding(80, 8080, "127.0.0.1")]
    assert parse_publish("80") == [PortBinding(80)]
    assert parse_publish("127.0.0.1::80/udp") == [PortBinding(80, 0, "127.0.0.1", "udp")]
    assert parse_publish("0.0.0.0:53:53/UDP") == [PortBinding(53, 53, "", "udp")]
    assert parse_publish("8000-8001:80-81") == [PortBinding(80, 8000), PortBinding(81, 8001)]
    assert str(PortBinding(80, 8080, "127.0.0.1")) == "127.0.0.1:8080->80/tcp"


@pytest.mark.parametrize("spec", ["99999:80", "abc", "80:0", "", ":", "1:2:3:4", "80/sctp", "1.2.3:80:80",
                                  "[::1]:80:80", "8000-8002:80-81", "90-80", "-1:80"])
def test_parse_publish_refuses(spec: str) -> None:
    with pytest.raises(NetworkError):
        parse_publish(spec)


def test_the_same_host_port_twice_is_refused() -> None:
    with pytest.raises(NetworkError, match="published twice"):
        parse_all(["8080:80", "127.0.0.1:8080:81"])
    assert len(parse_all(["8080:80", "8080:80/udp", "80", "80"])) == 4


def test_reservations_bind_test_and_release() -> None:
    r = Reservations()
    bound = r.reserve((PortBinding(80, 0, "127.0.0.1"), PortBinding(53, 0, "127.0.0.1", "udp")))
    port = bound[0].host_port
    assert port > 0 and bound[1].host_port > 0
    other = Reservations()
    with pytest.raises(NetworkError, match="already in use"):
        other.reserve((PortBinding(81, 0, "127.0.0.1", "udp"), PortBinding(80, port, "127.0.0.1")))
    assert not other.bindings and not other._sockets  # the first one was let go again
    r.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def _network(subnet: str = "10.50.0.0/29") -> Network:
    net = ipaddress.IPv4Network(subnet)
    return Network("n", "0" * 64, "pbtest", subnet, str(net[1]), "now")


def test_leases_are_lowest_free_stable_and_released(tmp_path: Path) -> None:
    leases = Leases(tmp_path)
    net = _network()
    got = [str(leases.lease(net, f"c{i}").ip) for i in range(5)]
    assert got == ["10.50.0.2", "10.50.0.3", "10.50.0.4", "10.50.0.5", "10.50.0.6"]
    assert str(leases.lease(net, "c2").ip) == "10.50.0.4"  # already holds one
    with pytest.raises(NetworkError, match="no free address"):
        leases.lease(net, "c5")
    assert leases.release({"c1"}) == 1
    assert str(leases.lease(net, "c9").ip) == "10.50.0.3"
    assert leases.of("c9") == ("n", "10.50.0.3")
    assert leases.release_unless({"c0"}) == 4
    assert leases.load() == {"n": {"10.50.0.2": "c0"}}
    leases.release({"c0"})
    assert leases.path.read_text() == "{}"


def test_leases_under_the_lock_are_distinct_across_threads(tmp_path: Path) -> None:
    leases = Leases(tmp_path)
    net = _network("10.50.0.0/24")
    got: list[str] = []

    def take(i: int) -> None:
        with locked(tmp_path / "lock"):
            got.append(str(leases.lease(net, f"c{i}").ip))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 30


def test_network_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = NetworkStore(tmp_path)
    monkeypatch.setenv("PYBUILD_BRIDGE", "pbunit0")
    monkeypatch.setenv("PYBUILD_SUBNET", "10.60.0.0/24")
    default = store.default(lambda name: False)
    assert (default.bridge, default.subnet, default.gateway, default.builtin) == ("pbunit0", "10.60.0.0/24",
                                                                                 "10.60.0.1", True)
    no_clash = lambda net: None  # noqa: E731
    net = store.create("app", None, None, no_clash)
    assert net.subnet == "172.30.0.0/24" and net.bridge == f"pb-{net.id[:12]}"
    assert store.create("app2", None, None, lambda n: "x" if n.network_address.packed[2] == 1 else None).subnet \
        == "172.30.2.0/24"
    with pytest.raises(NetworkError, match="overlaps network app"):
        store.create("app3", ipaddress.IPv4Network("172.30.0.0/16"), None, no_clash)
    with pytest.raises(NetworkError, match="overlaps the host route"):
        store.create("app3", ipaddress.IPv4Network("10.70.0.0/24"), None, lambda n: "10.70.0.0/16 dev eth9")
    with pytest.raises(NetworkError, match="already exists"):
        store.create("app", None, None, no_clash)
    with pytest.raises(NetworkError, match="reserved"):
        store.create("host", None, None, no_clash)
    assert store.get(net.id[:8]).name == "app"
    # The environment moves the default network only while nobody holds an address on it.
    monkeypatch.setenv("PYBUILD_SUBNET", "10.61.0.0/24")
    with pytest.raises(NetworkError, match="in use"):
        store.default(lambda name: True)
    assert store.default(lambda name: False).subnet == "10.61.0.0/24"
    store.remove("app")
    with pytest.raises(NetworkNotFound):
        store.get("app")


def test_nft_ruleset() -> None:
    assert nft.table_name(Path("/var/lib/pybuild")) == "pybuild"
    assert nft.table_name(Path("/srv/other")).startswith("pybuild_")
    assert nft.render("pybuild", [], []) == "table ip pybuild\ndelete table ip pybuild\n"
    text = nft.render("pybuild", [nft.BridgeRules("pybuild0", "172.29.0.0/16")],
                      [nft.Forward(PortBinding(80, 8080), "172.29.0.2"),
                       nft.Forward(PortBinding(53, 5353, "127.0.0.1", "udp"), "172.29.0.3")])
    assert "    tcp dport 8080 dnat to 172.29.0.2:80\n" in text
    assert "    ip daddr 127.0.0.1 udp dport 5353 dnat to 172.29.0.3:53\n" in text
    assert 'ip saddr 172.29.0.0/16 oifname != "pybuild0" masquerade' in text
    assert 'iifname { "pybuild0" } ip daddr 127.0.0.0/8 drop' in text
    assert text.startswith("table ip pybuild\ndelete table ip pybuild\ntable ip pybuild {\n")


def test_hosts_and_the_dns_flags() -> None:  # resolv.conf: see test_initlayer.py
    assert dns.check_add_hosts(["db:10.0.0.1", "gw=host-gateway"]) == ("db:10.0.0.1", "gw:host-gateway")
    with pytest.raises(NetworkError):
        dns.check_add_hosts(["nocolon"])
    with pytest.raises(NetworkError):
        dns.check_dns(["8.8.8"])
    text = dns.hosts_file("abc", "10.0.0.2", ("db:10.0.0.9", "gw:host-gateway"), "10.0.0.1",
                          [dns.HostEntry("10.0.0.3", ("web", "123456789abc"))])
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert "10.0.0.9\tdb\n10.0.0.1\tgw\n10.0.0.2\tabc\n10.0.0.3\tweb 123456789abc\n" in text
    assert mac_for(ipaddress.IPv4Address("172.29.0.2")) == "02:42:ac:1d:00:02"


def test_a_store_off_the_default_root_gets_a_bridge_and_subnet_of_its_own(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYBUILD_BRIDGE", raising=False)
    monkeypatch.delenv("PYBUILD_SUBNET", raising=False)
    taken = ipaddress.IPv4Network("172.30.0.0/24")  # as if another store's bridge held the first /24

    def clash(subnet: ipaddress.IPv4Network) -> str | None:
        return "172.30.0.0/24 dev pb0-other" if subnet.overlaps(taken) else None

    store = NetworkStore(tmp_path)
    net = store.default(lambda _name: False, clash, "5c8e9c83aa")
    assert (net.bridge, net.subnet) == ("pb0-5c8e9c83", "172.30.1.0/24")
    # the choice is kept, even when the route it avoided has gone
    assert store.default(lambda _name: False, lambda _s: None, "5c8e9c83aa") == net
    # the store at the default root keeps Docker-like defaults
    (tmp_path / "other").mkdir()
    assert NetworkStore(tmp_path / "other").default(lambda _name: False).bridge == "pybuild0"
