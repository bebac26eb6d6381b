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
              tail: int | None = None, timestamps: bool = False, since: str | None = None,
              until: str | None = None) -> None:
    """Write the container's output to ``out`` and ``err``; with ``follow``, until the container ends.

    ``since``/``until`` are times as the log writes them (UTC, RFC 3339 with
    microseconds: they compare as text); ``timestamps`` prefixes each line
    with its time, as ``docker logs -t``.
    """
    path = runtime.containers.log_path(config.id)
    while not path.exists():
        if not follow or not runtime.refresh(config).running:
            return
        time.sleep(0.05)

    def emit(line: bytes) -> bool:
        """Write one record; False once past ``until`` (nothing later is wanted)."""
        try:
            doc = json.loads(line)
        except ValueError:
            return True
        when = str(doc.get("time", ""))
        if until is not None and when > until:
            return False
        if since is not None and when < since:
            return True
        stream = err if doc.get("stream") == "stderr" else out
        text = doc.get("log", "").encode("utf-8", "surrogateescape")
        stream.write(when.encode() + b" " + text if timestamps else text)
        stream.flush()
        return True

    with open(path, "rb") as f:
        if tail is not None:
            lines = f.readlines()[-tail:] if tail > 0 else []
            for line in lines:
                if not emit(line):
                    return
        while True:
            line = f.readline()
            if line.endswith(b"\n"):
                if not emit(line):
                    return
                continue
            if not follow:
                return
            if not runtime.refresh(config).running:
                rest = f.read()
                for extra in rest.splitlines(keepends=True):
                    if not emit(extra):
                        return
                return
            f.seek(f.tell() - len(line))
            time.sleep(0.1)


def log_time(value: str, now: float | None = None) -> str:
    """docker's --since/--until value as the log's time text: an RFC 3339 date or time, a Unix time
    (``1700000000.5``) or a duration before now (``10m``, ``1h30m``, ``90s``)."""
    import datetime as _dt
    import re

    from pybuild.errors import UsageError

    now = time.time() if now is None else now
    text = value.strip()
    when: _dt.datetime | None = None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        when = _dt.datetime.fromtimestamp(float(text), _dt.UTC)
    elif re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", text):
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        seconds = sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", text))
        when = _dt.datetime.fromtimestamp(now - seconds, _dt.UTC)
    else:
        try:
            when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"invalid value for --since/--until: {value!r}",
                             "use an RFC 3339 time, a Unix timestamp or a duration such as 10m") from None
        if when.tzinfo is None:
            when = when.astimezone()  # docker reads a time without zone as local
    when = when.astimezone(_dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}Z"
