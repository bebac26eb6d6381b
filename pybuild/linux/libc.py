"""The one ctypes handle on the C library, and errno-raising call checks."""

from __future__ import annotations

import ctypes
import os

# The interpreter's own symbol namespace already holds libc: no ldconfig fork to find it.
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(result: int, what: str) -> int:
    """``result`` unless it is -1; then an OSError with the errno the call left."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result
