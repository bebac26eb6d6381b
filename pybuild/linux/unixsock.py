"""The few socket operations the runtime needs, on the ``_socket`` extension module.

The runtime talks to the processes it forks over a ``SOCK_SEQPACKET``
socketpair that carries descriptors (a pidfd, a terminal's master), sets the
container's host name and opens a datagram socket for interface ioctls.
``socket.py`` offers all of that but builds its enum classes when imported:
~6 ms on these machines, which every ``pybuild run`` would pay before its
container starts. ``_socket``, the C module socket.py wraps, loads in ~0.5
ms; these helpers are the part of socket.py's Python layer the runtime used
(``send_fds``/``recv_fds``).
"""

from __future__ import annotations

import _socket
import array

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

Socket = _socket.socket

MSG_CMSG_CLOEXEC = _socket.MSG_CMSG_CLOEXEC


def seqpacket_pair() -> tuple[Socket, Socket]:
    """Two connected ``AF_UNIX``/``SOCK_SEQPACKET`` sockets, close-on-exec."""
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)


def datagram() -> Socket:
    """An ``AF_INET`` datagram socket (for ``SIOC*IF*`` ioctls); close it after use."""
    return _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)


def send_fds(sock: Socket, data: bytes, fds: Sequence[int]) -> int:
    """Send ``data`` with ``fds`` attached (SCM_RIGHTS)."""
    return sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])


def recv_fds(sock: Socket, bufsize: int, maxfds: int, flags: int = 0) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(bufsize, _socket.CMSG_LEN(maxfds * fds.itemsize), flags)
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - (len(payload) % fds.itemsize)])
    return data, list(fds)


def sethostname(name: str) -> None:
    _socket.sethostname(name)
