"""Published ports: ``-p`` parsing and the host-side reservation of each port.

A mapping is ``[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`` as Docker takes
it, ranges included (``8000-8001:80-81``). An empty host port means "any
free port", chosen by the kernel when the port is reserved.

Reservation: the kernel's DNAT carries the traffic, so nothing on the host
would otherwise own the port. The container's monitor binds (without
listening) a socket on each published host address and port for as long as
the container runs: that is the bind test that turns "port already in use"
into a clear error before anything is configured, and it keeps other
programs from taking the port afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

from pybuild.errors import NetworkError
from pybuild.records import record

PROTOCOLS = ("tcp", "udp")


@record(frozen=True)
class PortBinding:
    """One published port; ``host_port`` 0 means "pick a free one"; ``host_ip`` "" means every address."""

    container_port: int
    host_port: int = 0
    host_ip: str = ""
    proto: str = "tcp"

    def __str__(self) -> str:
        host = f"{self.host_ip or '0.0.0.0'}:{self.host_port}"
        return f"{host}->{self.container_port}/{self.proto}"

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


def _port(text: str, spec: str, what: str) -> tuple[int, int]:
    """``80`` or ``8000-8010`` as an inclusive range."""
    lo_text, dash, hi_text = text.partition("-")
    try:
        lo = int(lo_text, 10)
        hi = int(hi_text, 10) if dash else lo
    except ValueError:
        raise NetworkError(f"invalid {what} {text!r} in published port {spec!r}",
                           "use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]") from None
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
        raise NetworkError(f"invalid {what} {text!r} in published port {spec!r}", "ports are 1-65535")
    return lo, hi


def parse_publish(spec: str) -> list[PortBinding]:
    """One ``-p`` value as bindings (several for a range)."""
    text, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in PROTOCOLS:
        raise NetworkError(f"invalid protocol {proto!r} in published port {spec!r}", "use tcp or udp")
    if text.startswith("["):
        raise NetworkError(f"IPv6 host address in published port {spec!r} is not supported",
                           "pybuild's networks are IPv4 only")
    parts = text.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise NetworkError(f"invalid published port {spec!r}", "use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")
    host_ip = ""
    host_text = ""
    if len(parts) == 3:
        host_ip, host_text = parts[0], parts[1]
    elif len(parts) == 2:
        host_text = parts[0]
    if host_ip:
        try:
            addr = ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise NetworkError(f"invalid host address {host_ip!r} in published port {spec!r}",
                               "give an IPv4 address") from None
        host_ip = "" if addr.is_unspecified else str(addr)
    c_lo, c_hi = _port(parts[-1], spec, "container port")
    if not host_text:
        return [PortBinding(p, 0, host_ip, proto) for p in range(c_lo, c_hi + 1)]
    h_lo, h_hi = _port(host_text, spec, "host port")
    if h_hi - h_lo != c_hi - c_lo:
        raise NetworkError(f"invalid published port {spec!r}",
                           "host and container port ranges must be the same length")
    return [PortBinding(c, h, host_ip, proto) for c, h in zip(range(c_lo, c_hi + 1), range(h_lo, h_hi + 1),
                                                              strict=True)]


def parse_all(specs: list[str] | tuple[str, ...]) -> tuple[PortBinding, ...]:
    out: list[PortBinding] = []
    for spec in specs:
        out.extend(parse_publish(spec))
    seen: set[tuple[str, int, str]] = set()
    for b in out:
        if b.host_port:
            key = (b.host_ip, b.host_port, b.proto)
            if key in seen or any(s[1:] == key[1:] and (not s[0] or not key[0]) for s in seen):
                raise NetworkError(f"host port {b.host_port}/{b.proto} is published twice")
            seen.add(key)
    return tuple(out)


class Reservations:
    """Bound sockets that hold the published host ports while the container runs."""

    def __init__(self) -> None:
        self.bindings: list[PortBinding] = []
        self._sockets: list[socket.socket] = []

    def reserve(self, bindings: tuple[PortBinding, ...]) -> list[PortBinding]:
        """Bind every port (the bind test); on any failure nothing stays bound. Returns the resolved bindings."""
        try:
            for b in bindings:
                kind = socket.SOCK_STREAM if b.proto == "tcp" else socket.SOCK_DGRAM
                sock = socket.socket(socket.AF_INET, kind)
                self._sockets.append(sock)
                # No SO_REUSEADDR: with it, two bound (not listening) sockets could
                # share a port, and a server using it could still listen behind us.
                try:
                    sock.bind((b.host_ip or "0.0.0.0", b.host_port))
                except OSError as exc:
                    where = f"{b.host_ip or '0.0.0.0'}:{b.host_port}/{b.proto}"
                    if exc.errno == errno.EADDRINUSE:
                        raise NetworkError(f"cannot publish port {where}: the port is already in use",
                                           "stop what uses it or publish another host port") from None
                    raise NetworkError(f"cannot publish port {where}: {exc.strerror}") from None
                self.bindings.append(PortBinding(b.container_port, sock.getsockname()[1], b.host_ip, b.proto))
        except BaseException:
            self.close()
            self.bindings.clear()
            raise
        return list(self.bindings)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets.clear()
