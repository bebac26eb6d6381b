"""Sizes as people write them ("500m", "10g", "1.5g", "4096"): Docker's RAMInBytes, shared by every limit.

Here in the store, the lowest layer that needs it (``PYBUILD_MAX_LAYER_SIZE``);
the runtime's ``--memory`` and ``--memory-swap`` parse with it too.
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """Bytes of a number with an optional binary unit (b, k, m, g, t, p; ``kb``, ``KiB`` alike); else ValueError."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
