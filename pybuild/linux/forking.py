"""Run a piece of work in a forked child and bring its failure back to the parent.

Some kernel state is per process and must not touch the caller: the working
directory (a relative overlay option string is resolved against it), the
mount namespace (a throw-away one, whose mounts die with the child), setns(2)
(refused to a threaded process). The child runs the work and exits; if it
fails, it reports an errno and a one-line message through a pipe, and the
parent raises :class:`ChildFailed` with them for the caller to word.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_MESSAGE_LIMIT = 8000


class ChildFailed(OSError):
    """The work failed in the child: ``errno`` is its errno (0 when it was no OSError), ``strerror`` its message."""


def _report(fd: int, exc: BaseException) -> None:
    code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
    message = (exc.strerror if isinstance(exc, OSError) and exc.strerror and not exc.filename else str(exc))
    data = code.to_bytes(4, "little") + (message or type(exc).__name__).encode(errors="replace")[:_MESSAGE_LIMIT]
    with contextlib.suppress(OSError):
        os.write(fd, data)


def run_in_child(work: Callable[[], None]) -> None:
    """Run ``work`` in a forked child; raise :class:`ChildFailed` here if it raised there.

    The child never returns into the caller's code: it leaves with
    ``os._exit``. An interrupted parent (Ctrl-C) kills and reaps the child
    before the interruption goes on.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 0
        try:
            os.close(r)
            work()
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            status = 1
            _report(w, exc)
        finally:
            os._exit(status)
    os.close(w)
    chunks: list[bytes] = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(r)
    if status == 0:
        return
    data = b"".join(chunks)
    if len(data) >= 4:
        code = int.from_bytes(data[:4], "little")
        raise ChildFailed(code, data[4:].decode(errors="replace"))
    if os.WIFSIGNALED(status):
        how = f"killed by signal {os.WTERMSIG(status)}"
    else:
        how = f"status {os.waitstatus_to_exitcode(status)}"
    raise ChildFailed(errno.EIO, f"helper process failed ({how})")
