"""Signals by name, as ``--stop-signal``, ``kill -s`` and an image's STOPSIGNAL give them."""

from __future__ import annotations

import contextlib
import signal

from pybuild.errors import UsageError


def signal_number(name: str) -> int:
    """``SIGTERM``, ``TERM``, ``15`` -> 15."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        with contextlib.suppress(AttributeError):
            return int(getattr(signal.Signals, text if text.startswith("SIG") else "SIG" + text))
    raise UsageError(f"invalid signal: {name}")
