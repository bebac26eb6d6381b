"""Rootless networking: each container's namespace reaches the network through ``slirp4netns``.

An ordinary user cannot make a bridge, a veth pair or NAT rules on the host.
As podman does without root, every container on the ``bridge`` network gets
a network namespace of its own with a TAP device that ``slirp4netns``
(Debian package ``slirp4netns``) serves from the host's namespace: the
container is 10.0.2.100/24, its gateway 10.0.2.2 and its DNS forwarder
10.0.2.3; what it opens leaves as the user's own sockets, so it reaches
what the user reaches. 127.0.0.1 of the host is not reachable
(``--disable-host-loopback``), as with podman. Published ports are
``slirp4netns`` host forwards, bound by the user: host ports below
``net.ipv4.ip_unprivileged_port_start`` (1024) are refused by the kernel.

The ``slirp4netns`` process belongs to the container's monitor: it ends
when the monitor closes (or loses, killed) the write end of its exit pipe.
User-defined networks need root (they are bridges), so they are refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pybuild.errors import NetworkError, RootlessError
from pybuild.linux.fsutil import atomic_write

from . import netns
from .manager import Endpoint, NetworkManager
from .networks import DEFAULT_NETWORK, Network
from .ports import PortBinding, Reservations

SUBNET = "10.0.2.0/24"
ADDRESS = "10.0.2.100/24"
GATEWAY = "10.0.2.2"
DNS_SERVER = "10.0.2.3"
TAP = "tap0"
MTU = 65520
_READY_TIMEOUT = 10.0

USERMODE_NETWORK = Network(name=DEFAULT_NETWORK, id="0" * 64, bridge="", subnet=SUBNET, gateway=GATEWAY,
                           created="1970-01-01T00:00:00Z", builtin=True)


def slirp4netns_command() -> str:
    path = shutil.which("slirp4netns")
    if path is None:
        raise RootlessError("rootless networking needs slirp4netns, which is not installed",
                            "apt-get install slirp4netns, or run with --network none or host")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise RootlessError("rootless networking needs /dev/net/tun, which you cannot open",
                            "make it mode 0666 as Debian's udev rules do (chmod 0666 /dev/net/tun), "
                            "or run with --network none or host")
    return path


class UserModeNetworkManager(NetworkManager):
    """The :class:`NetworkManager` of a rootless store: one slirp4netns per container, no bridges."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._exit_fds: dict[str, int] = {}  # container id -> the write end that keeps its slirp4netns alive

    def network(self, name: str) -> Network:
        if name in (DEFAULT_NETWORK, "default"):
            return USERMODE_NETWORK
        raise RootlessError(f"network {name!r}: user-defined networks are bridges, which need root",
                            "rootless containers use the default network (slirp4netns), none or host")

    def _default_network(self) -> Network:
        return USERMODE_NETWORK

    def list_networks(self) -> list[Network]:
        return [USERMODE_NETWORK]

    def create_network(self, name: str, subnet: str | None, gateway: str | None) -> Network:
        raise RootlessError("network create needs root: a network is a bridge on the host",
                            "rootless containers use the default network (slirp4netns), none or host")

    def remove_network(self, name: str, users: list[str]) -> Network:
        net = self.network(name)
        raise NetworkError(f"{net.name} is a pre-defined network and cannot be removed")

    def lease(self, name: str, container_id: str) -> tuple[Network, ipaddress.IPv4Interface]:
        return self.network(name), ipaddress.IPv4Interface(ADDRESS)

    def leased(self, container_id: str) -> tuple[Network, ipaddress.IPv4Interface] | None:
        return USERMODE_NETWORK, ipaddress.IPv4Interface(ADDRESS)

    def release(self, container_id: str) -> None:
        return None

    def _check_tools(self) -> None:
        slirp4netns_command()

    def _new_endpoint(self, net: Network, *, container_id: str, name: str, hostname: str, hosts_path: str,
                      add_hosts: tuple[str, ...], ports: tuple[PortBinding, ...]) -> Endpoint:
        return Endpoint(
            container_id=container_id, name=name, hostname=hostname, network=net.name, user_defined=False,
            bridge="", address=ADDRESS, gateway=GATEWAY, mac="", veth=TAP,
            netns=str(netns.path_for(container_id)), hosts_path=hosts_path, add_hosts=add_hosts, ports=ports)

    def _plumb(self, net: Network, endpoint: Endpoint, reservations: Reservations) -> None:
        # The bind test resolved "any port" and said "in use" clearly; slirp4netns binds them itself.
        reservations.close()
        netns.create(Path(endpoint.netns))
        self._start_slirp(slirp4netns_command(), endpoint)

    def _api_socket(self, container_id: str) -> Path:
        # A socket path must fit sockaddr_un's 108 bytes: the short runtime dir, a 64-bit prefix of the id.
        from pybuild.linux import userns

        sockets = userns.runtime_dir() / "slirp"
        sockets.mkdir(mode=0o700, exist_ok=True)
        return sockets / f"{container_id[:16]}.sock"

    def _pid_file(self, container_id: str) -> Path:
        return self.endpoints_dir / f"{container_id}.slirp"

    def _start_slirp(self, slirp: str, endpoint: Endpoint) -> None:
        api = self._api_socket(endpoint.container_id)
        with contextlib.suppress(FileNotFoundError):
            api.unlink()
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                [slirp, "--configure", f"--mtu={MTU}", "--disable-host-loopback", "--netns-type=path",
                 f"--exit-fd={exit_r}", f"--ready-fd={ready_w}", f"--api-socket={api}", endpoint.netns, TAP],
                pass_fds=(exit_r, ready_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            for fd in (ready_r, ready_w, exit_r, exit_w):
                os.close(fd)
            raise NetworkError(f"cannot start slirp4netns: {exc.strerror}") from None
        os.close(ready_w)
        os.close(exit_r)
        # This process (the monitor) keeps the write end: when it exits or is killed, slirp4netns ends too.
        self._exit_fds[endpoint.container_id] = exit_w
        atomic_write(self._pid_file(endpoint.container_id), f"{proc.pid}\n".encode(), durable=False)
        try:
            ready = _read_with_timeout(ready_r, _READY_TIMEOUT)
        finally:
            os.close(ready_r)
        if ready != b"1":
            proc.kill()
            _, err = proc.communicate()
            detail = err.decode(errors="replace").strip().splitlines()
            raise NetworkError("slirp4netns did not start"
                               + (f": {'; '.join(detail[-3:])}" if detail else " (no output)"))
        for binding in endpoint.ports:
            _add_hostfwd(api, binding)
        _reap_later(proc)

    def _teardown(self, endpoint: Endpoint) -> None:
        exit_fd = self._exit_fds.pop(endpoint.container_id, None)
        if exit_fd is not None:
            os.close(exit_fd)
        pid_file = self._pid_file(endpoint.container_id)
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if b"slirp4netns" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        netns.remove(Path(endpoint.netns))
        for path in (pid_file, self._api_socket(endpoint.container_id), self._record(endpoint.container_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _apply_rules(self) -> None:
        return None

    def reclaim(self, live: set[str]) -> int:
        if not self.dir.exists():
            return 0
        with self.locked():
            return self._reap()


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """slirp4netns outlives this call; the monitor's exit (or SIGCHLD default) reaps it."""
    if proc.stderr is not None:
        proc.stderr.close()


def _read_with_timeout(fd: int, timeout: float) -> bytes:
    import select

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            return os.read(fd, 16)


def _add_hostfwd(api: Path, binding: PortBinding) -> None:
    request = {"execute": "add_hostfwd",
               "arguments": {"proto": binding.proto, "host_addr": binding.host_ip or "0.0.0.0",
                             "host_port": binding.host_port, "guest_addr": ADDRESS.partition("/")[0],
                             "guest_port": binding.container_port}}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(str(api))
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError as exc:
            raise NetworkError(f"cannot publish port {binding}: slirp4netns: {exc.strerror or exc}") from None
    try:
        doc = json.loads(reply or b"{}")
    except ValueError:
        doc = {"error": {"desc": reply.decode(errors="replace")}}
    if "error" in doc:
        desc = doc["error"].get("desc", "refused") if isinstance(doc["error"], dict) else str(doc["error"])
        hint = "ports below 1024 need root" if binding.host_port < 1024 else None
        raise NetworkError(f"cannot publish port {binding}: {desc}", hint)
