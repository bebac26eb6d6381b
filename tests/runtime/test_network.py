"""Bridge networking through the real CLI: published ports, container-to-container traffic,
user-defined networks, concurrent leases, bad input, container: mode, inspect/stats, crash recovery.

Each test store has a bridge and a /24 of its own (conftest's ``network_env``);
traffic goes only to loopback and to the tests' own containers. The ``net``
fixture checks, with ip/nft directly, that nothing is left configured.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pybuild.runtime.network.nft import table_name
from tests.conftest import Cli, Result, network_leftovers

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="networking needs root")

HTTPD = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"


class Net:
    """The CLI plus what a network test needs to look at."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.root = cli.root
        self.subnet = ipaddress.IPv4Network(cli.env["PYBUILD_SUBNET"])
        self.bridge = cli.env["PYBUILD_BRIDGE"]
        self.table = table_name(cli.root)

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> Result:
        return self.cli(*args, check=check, env=env)

    def inspect(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cli("inspect", name).stdout)[0]
        return doc

    def ip_of(self, name: str) -> str:
        return str(self.inspect(name)["NetworkSettings"]["IPAddress"])

    def leases(self) -> dict[str, Any]:
        path = self.root / "network" / "leases.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def links(self) -> set[str]:
        out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
        return {link["ifname"] for link in json.loads(out)}

    def table_present(self) -> bool:
        return subprocess.run(["nft", "list", "table", "ip", self.table], capture_output=True).returncode == 0

    def assert_clean(self, ids: tuple[str, ...] | list[str] = ()) -> None:
        """No veth, rules, namespace or lease of these containers; the bridge may stay (like docker0)."""
        links = self.links()
        assert not [n for n in links if any(n == f"pbv{i[:12]}" for i in ids)], "veth left behind"
        assert not self.table_present(), "nftables table left behind"
        assert not [i for i in ids if os.path.exists(f"/run/pybuild/netns/{i}")], "netns mount left behind"
        assert self.leases() == {}, self.leases()


@pytest.fixture
def net(cli: Cli, busybox: str) -> Iterator[Net]:
    n = Net(cli)
    yield n
    ids = cli("ps", "-a", "-q", "--no-trunc", check=False).stdout.split()
    for cid in ids:
        cli("rm", "-f", "-v", cid, check=False)
    for name in ("users", "tnet"):
        cli("network", "rm", name, check=False)
    cli("prune", check=False)  # idle bridges go with prune
    leaked = network_leftovers(cli.root, cleanup=True)
    assert not leaked, f"network configuration left behind: {leaked}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, attempts: int = 50) -> requests.Response:
    for _ in range(attempts):
        try:
            return requests.get(url, timeout=3)
        except requests.ConnectionError:
            time.sleep(0.1)
    return requests.get(url, timeout=3)


@pytest.mark.slow
def test_published_port_is_reachable_and_removed_with_the_container(net: Net) -> None:
    port = free_port()
    cid = net("run", "-d", "--name", "web", "-p", f"{port}:80", "-p", "127.0.0.1::80",
              "busybox", "sh", "-c", HTTPD).stdout.strip()
    reply = get(f"http://127.0.0.1:{port}/")
    assert reply.status_code == 200 and reply.text == f"hello from {cid[:12]}\n"
    doc = net.inspect("web")
    bound = doc["NetworkSettings"]["Ports"]["80/tcp"]
    assert {"HostIp": "0.0.0.0", "HostPort": str(port)} in bound
    random_port = int(next(b["HostPort"] for b in bound if b["HostIp"] == "127.0.0.1"))
    assert get(f"http://127.0.0.1:{random_port}/").text == reply.text
    ps = net("ps").stdout
    assert f"0.0.0.0:{port}->80/tcp" in ps and f"127.0.0.1:{random_port}->80/tcp" in ps
    # The host port is held: nobody else can take it while the container runs.
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("0.0.0.0", port))
    assert net.table_present() and f"pbv{cid[:12]}" in net.links() and net.bridge in net.links()
    rules = subprocess.run(["nft", "list", "table", "ip", net.table], capture_output=True, text=True).stdout
    assert f"dport {port} dnat to {doc['NetworkSettings']['IPAddress']}:80" in rules

    net("rm", "-f", "web")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=3)
    net.assert_clean([cid])
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))  # free again


@pytest.mark.slow
def test_udp_port_is_forwarded(net: Net) -> None:
    port = free_port()
    net("run", "-d", "--name", "u", "-p", f"{port}:9999/udp", "busybox", "sleep", "60")

    def noports() -> int:
        snmp = net("exec", "u", "cat", "/proc/net/snmp").stdout.splitlines()
        header, values = [line.split() for line in snmp if line.startswith("Udp:")][:2]
        return int(values[header.index("NoPorts")])

    before = noports()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", port))
        s.send(b"ping")
        # Nothing listens on 9999 in the container: its ICMP port-unreachable comes
        # back through conntrack (with the host's reservation socket, there would be silence).
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)
    assert noports() > before
    cid = net.inspect("u")["Id"]
    net("rm", "-f", "u")
    net.assert_clean([cid])


@pytest.mark.slow
def test_containers_reach_each_other_and_none_is_cut_off(net: Net) -> None:
    net("run", "-d", "--name", "a", "busybox", "sh", "-c", HTTPD)
    net("run", "-d", "--name", "b", "busybox", "sh", "-c", HTTPD)
    a, b = net.ip_of("a"), net.ip_of("b")
    assert a != b and ipaddress.IPv4Address(a) in net.subnet and ipaddress.IPv4Address(b) in net.subnet
    out = net("exec", "b", "sh", "-c", f"ping -c 1 -W 2 {a} && wget -q -O- http://{a}/")
    assert "1 packets received" in out.stdout and "hello from" in out.stdout
    out = net("exec", "a", "wget", "-q", "-O-", f"http://{b}/")
    assert out.stdout.startswith("hello from")
    # A published port is reachable from another container too (through the host, hairpin NAT).
    port = free_port()
    net("run", "-d", "--name", "p", "-p", f"{port}:80", "busybox", "sh", "-c", HTTPD)
    gateway = net.inspect("p")["NetworkSettings"]["Gateway"]
    for _ in range(50):
        out = net("exec", "a", "wget", "-q", "-O-", f"http://{gateway}:{port}/", check=False)
        if out.returncode == 0:
            break
        time.sleep(0.1)
    assert out.stdout.startswith("hello from")
    # --network none: only lo, no route anywhere.
    out = net("run", "--rm", "--network", "none", "busybox", "sh", "-c",
              f"ls /sys/class/net; ping -c 1 -W 1 {a} >/dev/null 2>&1 || echo unreachable;"
              f" wget -q -O- http://{b}/ 2>/dev/null || echo nohttp",
              check=False)
    assert out.stdout.split() == ["lo", "unreachable", "nohttp"]


@pytest.mark.slow
def test_user_defined_network_resolves_names(net: Net) -> None:
    subnet = f"10.{net.subnet.network_address.packed[1]}.{(net.subnet.network_address.packed[2] + 1) % 256}.0/24"
    net_id = net("network", "create", "--subnet", subnet, "users").stdout.strip()
    assert len(net_id) == 64
    assert "users" in net("network", "ls").stdout
    net("run", "-d", "--name", "alpha", "--network", "users", "busybox", "sh", "-c", HTTPD)
    net("run", "-d", "--name", "beta", "--network", "users", "busybox", "sh", "-c", HTTPD)
    net("run", "-d", "--name", "outsider", "busybox", "sleep", "60")
    alpha = net.ip_of("alpha")
    assert ipaddress.IPv4Address(alpha) in ipaddress.IPv4Network(subnet)
    # beta resolves alpha (written when it joined) and alpha resolves beta (its hosts file was updated).
    out = net("exec", "beta", "sh", "-c", "ping -c 1 -W 2 alpha && wget -q -O- http://alpha/")
    assert f"({alpha})" in out.stdout and "hello from" in out.stdout
    out = net("exec", "alpha", "wget", "-q", "-O-", "http://beta/")
    assert out.stdout.startswith("hello from")
    # The default network's containers are not in the user network's hosts files, and vice versa.
    assert "outsider" not in net("exec", "alpha", "cat", "/etc/hosts").stdout
    assert "alpha" not in net("exec", "outsider", "cat", "/etc/hosts").stdout
    doc = json.loads(net("network", "inspect", "users").stdout)[0]
    assert doc["IPAM"]["Config"] == [{"Subnet": subnet, "Gateway": str(ipaddress.IPv4Network(subnet)[1])}]
    assert sorted(c["Name"] for c in doc["Containers"].values()) == ["alpha", "beta"]
    bridge = doc["Options"]["com.docker.network.bridge.name"]
    assert bridge in net.links()
    # Leaving updates the members' hosts files; a network in use cannot be removed.
    net("rm", "-f", "beta")
    assert "beta" not in net("exec", "alpha", "cat", "/etc/hosts").stdout
    out = net("network", "rm", "users", check=False)
    assert out.returncode == 1 and "has active endpoints" in out.stderr
    net("rm", "-f", "alpha")
    net("network", "rm", "users")
    assert bridge not in net.links()
    assert "users" not in net("network", "ls").stdout


@pytest.mark.slow
def test_twenty_concurrent_starts_get_distinct_addresses(net: Net) -> None:
    ids: list[str] = []
    errors: list[str] = []

    def start() -> None:
        out = net.cli("run", "-d", "busybox", "sleep", "120", check=False)
        if out.returncode:
            errors.append(out.stderr)
        else:
            ids.append(out.stdout.strip())

    threads = [threading.Thread(target=start) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(ids) == 20
    addresses = [net.ip_of(cid) for cid in ids]
    assert len(set(addresses)) == 20 and all(ipaddress.IPv4Address(a) in net.subnet for a in addresses)
    assert sorted(net.leases()["bridge"]) == sorted(addresses)
    eth0 = net("exec", ids[0], "ip", "addr", "show", "eth0").stdout
    assert f"inet {addresses[0]}/24" in eth0
    net("rm", "-f", *ids)
    assert (net.root / "network" / "leases.json").read_text().strip() == "{}"
    net.assert_clean(ids)


@pytest.mark.slow
def test_bad_network_input_is_refused_cleanly(net: Net) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = net("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
        assert out.returncode == 125
        assert f"cannot publish port 0.0.0.0:{port}/tcp: the port is already in use" in out.stderr
        out = net("run", "-d", "--name", "clash", "-p", f"{port}:80", "busybox", "sleep", "30", check=False)
        assert out.returncode == 125 and "already in use" in out.stderr
    assert net.inspect("clash")["State"]["Status"] == "exited"
    net("rm", "clash")
    for spec, message in (("99999:80", "invalid host port '99999'"), ("abc", "invalid container port 'abc'"),
                          ("80/sctp", "invalid protocol 'sctp'"), ("1.2.3:80:80", "invalid host address"),
                          ("8000-8002:80-81", "same length")):
        out = net("run", "--rm", "-p", spec, "busybox", "true", check=False)
        assert out.returncode == 125 and message in out.stderr, (spec, out)
        assert "Traceback" not in out.stderr
    out = net("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert out.returncode == 125 and "network nosuchnet not found" in out.stderr
    out = net("run", "--rm", "--network", "none", "-p", "80", "busybox", "true", check=False)
    assert out.returncode == 125 and "cannot publish ports with --network none" in out.stderr
    out = net("run", "--rm", "--network", "container:ghost", "busybox", "true", check=False)
    assert out.returncode == 125 and "no such container" in out.stderr
    out = net("run", "--rm", "--dns", "not-an-ip", "busybox", "true", check=False)
    assert out.returncode == 125 and "invalid --dns address" in out.stderr
    # Subnets that overlap what the host routes already.
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True).stdout)
    host_net = next(r["dst"] for r in routes if r["dst"] != "default" and "/" in r["dst"])
    out = net("network", "create", "--subnet", host_net, "tnet", check=False)
    assert out.returncode == 1 and f"subnet {host_net} overlaps the host route {host_net}" in out.stderr
    out = net("network", "create", "--subnet", "127.0.0.0/8", "tnet", check=False)
    assert out.returncode == 1 and "127.0.0.0/8" in out.stderr
    out = net("network", "create", "--subnet", "10.300.0.0/24", "tnet", check=False)
    assert out.returncode == 1 and "invalid subnet" in out.stderr
    out = net("network", "rm", "bridge", check=False)
    assert out.returncode == 1 and "pre-defined network" in out.stderr
    out = net.cli("run", "--rm", "busybox", "true", env={"PYBUILD_SUBNET": host_net}, check=False)
    assert out.returncode == 125 and "overlaps the host route" in out.stderr, out
    assert "tnet" not in net("network", "ls").stdout
    assert net("ps", "-a", "-q").stdout == ""
    net.assert_clean()


NETNS_AND_ADDRESSES = "readlink /proc/self/ns/net && ip addr"


def netns_and_interfaces(out: str) -> tuple[str, dict[str, tuple[str, frozenset[str]]]]:
    """The output of NETNS_AND_ADDRESSES: the network namespace's identity (``net:[inode]``) and, per interface,
    its link address and its inet/inet6 addresses. Flags and states are left out: they change by themselves
    (an IPv6 address is ``tentative`` until duplicate address detection ends), so two snapshots of the same
    namespace need not match as text."""
    netns, _, rest = out.partition("\n")
    interfaces: dict[str, tuple[str, set[str]]] = {}
    name = ""
    for line in rest.splitlines():
        header = re.match(r"\d+: ([^:@\s]+)[@:]", line)
        words = line.split()
        if header:
            name = header.group(1)
            interfaces[name] = ("", set())
        elif name and words and words[0].startswith("link/"):
            interfaces[name] = (words[1], interfaces[name][1])
        elif name and words and words[0] in ("inet", "inet6"):
            interfaces[name][1].add(words[1])
    return netns.strip(), {n: (mac, frozenset(addrs)) for n, (mac, addrs) in interfaces.items()}


@pytest.mark.slow
def test_container_mode_shares_the_namespace(net: Net) -> None:
    net("run", "-d", "--name", "owner", "busybox", "sleep", "60")
    own_ns, own = netns_and_interfaces(net("exec", "owner", "sh", "-c", NETNS_AND_ADDRESSES).stdout)
    joined_ns, joined = netns_and_interfaces(
        net("run", "--rm", "--network", "container:owner", "busybox", "sh", "-c", NETNS_AND_ADDRESSES).stdout)
    assert re.fullmatch(r"net:\[\d+\]", own_ns) and own_ns != os.readlink("/proc/self/ns/net")
    assert joined_ns == own_ns  # the very same namespace, not a look-alike
    assert joined == own and f"{net.ip_of('owner')}/24" in own["eth0"][1], (own, joined)
    cid = net("create", "--network", "container:owner", "busybox", "ip", "addr").stdout.strip()
    assert net.ip_of(cid) == net.ip_of("owner")
    net("rm", cid)
    net("stop", "-t", "0", "owner")
    out = net("run", "--rm", "--network", "container:owner", "busybox", "true", check=False)
    assert out.returncode == 125 and "not running" in out.stderr


@pytest.mark.slow
def test_inspect_stats_dns_and_restart(net: Net) -> None:
    net("run", "-d", "--name", "s", "--dns", "192.0.2.53", "--add-host", "db:10.1.2.3",
        "--add-host", "hostgw:host-gateway", "busybox", "sleep", "60")
    settings = net.inspect("s")["NetworkSettings"]
    ip = settings["IPAddress"]
    assert ipaddress.IPv4Address(ip) in net.subnet
    assert settings["Gateway"] == str(net.subnet[1]) and settings["IPPrefixLen"] == 24
    assert settings["MacAddress"] == "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)
    assert settings["Networks"]["bridge"]["IPAddress"] == ip
    out = net("exec", "s", "sh", "-c", "cat /etc/resolv.conf /etc/hosts").stdout
    assert "nameserver 192.0.2.53" in out and not re.search(r"nameserver 127\.", out)
    assert "10.1.2.3\tdb" in out and f"{settings['Gateway']}\thostgw" in out and f"{ip}\t" in out
    net("exec", "s", "ping", "-c", "3", "-i", "0.2", settings["Gateway"])
    row = net("stats", "--no-stream", "s").stdout.splitlines()[1]
    rx, tx = re.search(r"([\d.]+\S*B) / ([\d.]+\S*B)\s+\d+\s*$", row).groups()
    assert not rx.startswith("0B") and not tx.startswith("0B"), row
    # The address is the container's until it is removed: a restart keeps it.
    net("stop", "-t", "0", "s")
    assert net.inspect("s")["NetworkSettings"]["IPAddress"] == ip
    assert net.inspect("s")["NetworkSettings"]["Ports"] == {}
    net("start", "s")
    assert net.ip_of("s") == ip
    assert ip in net("exec", "s", "ip", "addr", "show", "eth0").stdout


@pytest.mark.slow
def test_prune_reclaims_what_a_killed_run_left(net: Net) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(net.root), "run", "--rm", "--name",
                             "doomed", "-p", f"{port}:80", "busybox", "sleep", "60"],
                            env={**os.environ, **net.cli.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            endpoints = list((net.root / "network" / "endpoints").glob("*.json"))
            if endpoints and net.table_present():
                break
            time.sleep(0.1)
        cid = endpoints[0].name[:-5]
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert f"pbv{cid[:12]}" in net.links() and net.table_present()  # a killed CLI cannot clean up
    for _ in range(100):  # the container dies with its monitor (PR_SET_PDEATHSIG), a moment later
        if net.inspect(cid)["State"]["Status"] == "exited":
            break
        time.sleep(0.05)
    net("prune")
    assert net("ps", "-a", "-q").stdout == ""
    net.assert_clean([cid])
    assert net.bridge not in net.links()  # idle: prune removes it too
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
