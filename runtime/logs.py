"""``pybuild logs``: a detached container's output, from ``container.log`` (Docker's json-file format).

Each line of the log is ``{"log": text, "stream": "stdout"|"stderr", "time": ...}``,
written by the container's monitor (see monitor.py).
"""

from __future__ import annotations

import json
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from .containers import ContainerConfig
    from .lifecycle import Runtime


def copy_logs(runtime: Runtime, config: ContainerConfig, out: BinaryIO, err: BinaryIO, *, follow: bool = False,
              tail: int | None = None) -> None:
    """Write the container's output to ``out`` and ``err``; with ``follow``, until the container ends."""
    path = runtime.containers.log_path(config.id)
    while not path.exists():
        if not follow or not runtime.refresh(config).running:
            return
        time.sleep(0.05)
    with open(path, "rb") as f:
        if tail is not None:
            lines = f.readlines()[-tail:] if tail > 0 else []
            for line in lines:
                _emit(line, out, err)
        while True:
            line = f.readline()
            if line.endswith(b"\n"):
                _emit(line, out, err)
                continue
            if not follow:
                return
            if not runtime.refresh(config).running:
                rest = f.read()
                for extra in rest.splitlines(keepends=True):
                    _emit(extra, out, err)
                return
            f.seek(f.tell() - len(line))
            time.sleep(0.1)


def _emit(line: bytes, out: BinaryIO, err: BinaryIO) -> None:
    try:
        doc = json.loads(line)
    except ValueError:
        return
    stream = err if doc.get("stream") == "stderr" else out
    stream.write(doc.get("log", "").encode("utf-8", "surrogateescape"))
    stream.flush()
