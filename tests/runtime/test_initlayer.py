"""The init layer: its files, and the one resolv.conf rule for containers and RUN steps."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pybuild.runtime import initlayer
from pybuild.runtime.initlayer import filter_resolv_conf, is_local_nameserver

FALLBACK = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "127.1.2.3", "::1", "0.0.0.0", "::",
                                     "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"])
def test_resolvers_that_mean_this_host(address: str) -> None:
    assert is_local_nameserver(address)


@pytest.mark.parametrize("address", ["192.0.2.1", "10.0.0.1", "128.0.0.1", "2001:db8::1", "fe80::1%eth0",
                                     "not-an-address"])
def test_resolvers_reachable_from_another_namespace(address: str) -> None:
    assert not is_local_nameserver(address)


@pytest.mark.parametrize("network", ["bridge", "none", "mynet", "default", "container:abc"])
def test_another_namespace_drops_loopback_and_unspecified_resolvers(network: str) -> None:
    host = ("search example.com\nnameserver 127.0.0.53\nnameserver 0.0.0.0\nnameserver 192.0.2.1\n"
            "nameserver ::1\noptions edns0\n")
    assert filter_resolv_conf(host, network=network) == "search example.com\nnameserver 192.0.2.1\noptions edns0\n"


@pytest.mark.parametrize("host", ["nameserver 127.0.0.53\n", "nameserver 0.0.0.0\n", "nameserver ::1\n",
                                  "nameserver 127.0.0.1\nnameserver 0.0.0.0\n", ""])
@pytest.mark.parametrize("network", ["bridge", "none"])
def test_public_resolvers_only_when_nothing_is_left(host: str, network: str) -> None:
    assert filter_resolv_conf(host, network=network) == FALLBACK
    assert filter_resolv_conf(host + "search lan\n", network=network) == "search lan\n" + FALLBACK


def test_no_fallback_while_a_resolver_is_left() -> None:
    assert filter_resolv_conf("nameserver 192.0.2.1\nnameserver ::1\n", network="bridge") == "nameserver 192.0.2.1\n"
    ipv6 = "nameserver 2001:db8::53\n"
    assert filter_resolv_conf(ipv6, network="bridge") == ipv6
    # commented-out lines are not resolvers, and stay
    commented = "# nameserver 192.0.2.1\nnameserver 127.0.0.53\n"
    assert filter_resolv_conf(commented, network="bridge") == "# nameserver 192.0.2.1\n" + FALLBACK


def test_the_host_network_keeps_the_host_file() -> None:
    host = "nameserver 127.0.0.53\nnameserver 0.0.0.0\noptions edns0\n"
    assert filter_resolv_conf(host, network="host") == host
    assert filter_resolv_conf("", network="host") == ""


def test_dns_replaces_every_nameserver() -> None:
    host = "search example.com\nnameserver 127.0.0.53\nnameserver 192.0.2.1\noptions edns0\n"
    want = "search example.com\noptions edns0\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n"
    assert filter_resolv_conf(host, network="bridge", dns=["1.1.1.1", "9.9.9.9"]) == want
    assert filter_resolv_conf(host, network="host", dns=["1.1.1.1", "9.9.9.9"]) == want
    assert filter_resolv_conf("", network="none", dns=["127.0.0.1"]) == "nameserver 127.0.0.1\n"  # as asked


def test_the_host_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.1\n")
    monkeypatch.setattr(initlayer, "HOST_RESOLV_CONF", str(host))
    assert initlayer.resolv_conf("bridge") == "nameserver 192.0.2.1\n"
    assert initlayer.resolv_conf("host") == host.read_text()
    monkeypatch.setattr(initlayer, "HOST_RESOLV_CONF", str(tmp_path / "missing"))
    assert initlayer.resolv_conf("bridge") == FALLBACK


def test_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert initlayer.hosts("box", "none") == initlayer.default_hosts("box")
    assert initlayer.default_hosts("box").endswith("127.0.1.1\tbox\n")
    bridge = initlayer.hosts("box", "bridge", ("db:10.0.0.9", "gw:host-gateway"), "10.0.0.2", "10.0.0.1")
    assert "10.0.0.9\tdb\n10.0.0.1\tgw\n10.0.0.2\tbox\n" in bridge
    host = tmp_path / "hosts"
    host.write_text("127.0.0.1\tlocalhost\n192.0.2.7\tfileserver\n")
    monkeypatch.setattr(initlayer, "HOST_HOSTS", str(host))
    assert initlayer.hosts("box", "host", ("db:10.0.0.9", "gw:host-gateway")) == host.read_text() + "10.0.0.9\tdb\n"


def test_write(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()  # an existing etc/ is fine
    initlayer.write(tmp_path, hostname="box", hosts="127.0.0.1\tlocalhost\n", resolv_conf="nameserver 192.0.2.1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev", "etc", "proc", "sys"]
    etc = tmp_path / "etc"
    assert (etc / "hostname").read_text() == "box\n"
    assert (etc / "hosts").read_text() == "127.0.0.1\tlocalhost\n"
    assert (etc / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
    assert {stat.S_IMODE((etc / n).stat().st_mode) for n in ("hostname", "hosts", "resolv.conf")} == {0o644}
