"""``build --ssh`` and ``RUN --mount=type=ssh``: the host's ssh-agent, forwarded into a RUN step.

``--ssh default`` (or ``--ssh ID``) names the agent at ``$SSH_AUTH_SOCK``;
``--ssh ID=SOCKET`` another agent socket (buildx also takes key files
there, which need an agent of its own in the client: pybuild refuses them
clearly). A step's ``RUN --mount=type=ssh[,id=ID][,target=PATH]`` gets, at
``target`` (BuildKit's default ``/run/buildkit/ssh_agent.N``, N counting the
step's ssh mounts), a unix socket that relays every connection to that
agent, owned ``uid:gid`` with ``mode`` (default 0:0, 0600), and
``SSH_AUTH_SOCK`` set to the first such target unless the image sets it, as
BuildKit does. An id that was not given is an error with ``required=true``;
without it the mount is left out.

The relay (:class:`AgentProxy`) is a listening socket in the step's scratch
directory, bind-mounted into the container, and one thread that accepts
and copies bytes both ways; it knows nothing of the agent protocol, so
the agent itself decides what to answer (keys never leave it). The proxy
lives exactly as long as the step: the step's exit stack closes it
however the step ends (an error, a cancelled build, Ctrl-C), which stops
the thread, closes every connection and unlinks the socket; a build killed
outright leaves the socket in its scratch directory, which the next
command that opens the store removes with the rest.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from pybuild.errors import BuildError, UsageError
from pybuild.records import record

DEFAULT_ID = "default"
TARGET_FORMAT = "/run/buildkit/ssh_agent.{}"
_CHUNK = 65536
_IO_TIMEOUT = 60.0  # a peer that stops reading does not hold the step's relay for ever


@record(frozen=True)
class SshSource:
    """An agent a build may forward: its id and the host's socket path."""

    id: str
    socket: str


def parse_ssh(values: Iterable[str], environ: dict[str, str] | None = None) -> dict[str, SshSource]:
    """``--ssh`` values: ``ID`` (the agent at $SSH_AUTH_SOCK) or ``ID=SOCKET``; checked now, before the build."""
    env = os.environ if environ is None else environ
    out: dict[str, SshSource] = {}
    for text in values:
        sid, eq, paths = text.partition("=")
        sid = sid.strip()
        if not sid or (eq and not paths):
            raise UsageError(f"invalid --ssh {text!r}", "use --ssh default or --ssh ID=SOCKET")
        if eq:
            items = [p for p in paths.split(",") if p]
            if len(items) != 1:
                raise UsageError(f"invalid --ssh {text!r}: pybuild forwards one agent socket per id",
                                 "use --ssh ID=SOCKET")
            path = items[0]
        else:
            path = env.get("SSH_AUTH_SOCK", "")
            if not path:
                raise UsageError(f"--ssh {sid}: SSH_AUTH_SOCK is not set", "start ssh-agent, or use --ssh ID=SOCKET")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise UsageError(f"--ssh {sid}: cannot use {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            hint = "key files need an agent: ssh-add them to ssh-agent and pass its socket" \
                if stat.S_ISREG(st.st_mode) else "give the ssh-agent socket"
            raise UsageError(f"--ssh {sid}: {path} is not a socket", hint)
        out[sid] = SshSource(sid, os.path.abspath(path))
    return out


class AgentProxy:
    """A unix socket at ``path`` relaying each connection to the agent at ``agent``; a context manager."""

    def __init__(self, agent: str, path: Path, *, uid: int = 0, gid: int = 0, mode: int = 0o600) -> None:
        self.agent = agent
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        try:
            self._bind(uid, gid, mode)
            self._listener.listen(16)
            self._listener.setblocking(False)
        except OSError as exc:
            self._close_fds()
            raise BuildError(f"RUN --mount=type=ssh: cannot make the agent socket: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._loop, name="ssh-agent-proxy", daemon=True)
        self._thread.start()

    def _bind(self, uid: int, gid: int, mode: int) -> None:
        # a unix socket path holds at most 107 bytes: bind through the directory's fd, whatever its depth
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._listener.bind(f"/proc/self/fd/{dir_fd}/{self.path.name}")
            os.chown(self.path.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            os.chmod(self.path.name, mode, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        peers: dict[socket.socket, socket.socket] = {}

        def drop(sock: socket.socket) -> None:
            other = peers.pop(sock, None)
            for s in (sock, other):
                if s is None:
                    continue
                peers.pop(s, None)
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(s)
                s.close()

        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._wake_r:
                        return
                    if key.fileobj is self._listener:
                        self._accept(sel, peers)
                        continue
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(_CHUNK)
                        if data:
                            peers[sock].sendall(data)
                            continue
                    except (OSError, KeyError):
                        pass
                    drop(sock)  # one side closed (or failed): the other goes too
        finally:
            for sock in list(peers):
                drop(sock)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, peers: dict[socket.socket, socket.socket]) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(True)
        client.settimeout(_IO_TIMEOUT)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.settimeout(_IO_TIMEOUT)
        try:
            upstream.connect(self.agent)
        except OSError:
            client.close()  # the agent is gone: the client sees the connection closed
            upstream.close()
            return
        peers[client] = upstream
        peers[upstream] = client
        sel.register(client, selectors.EVENT_READ)
        sel.register(upstream, selectors.EVENT_READ)

    def close(self) -> None:
        """Stop relaying, close every connection and remove the socket (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            thread.join()
        self._close_fds()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _close_fds(self) -> None:
        self._listener.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> AgentProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
