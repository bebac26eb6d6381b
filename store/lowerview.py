"""What a chain's layer directories say about a path, read without mounting them.

Whiteouts and opaque directories are honoured as the store's overlay reads
them. The builder asks whether COPY or WORKDIR can work on the layer dirs
directly; the layer writer asks, for fuse-overlayfs upper dirs, whether a
whiteout or an opaque mark hides anything (see :mod:`layertar`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .whiteouts import opaque_xattrs

__all__ = ["exists_below", "is_dir_below"]


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for name in opaque_xattrs():
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _stat_below(overlay_root: Path, lowers: list[str], path: str, *, dirs_only: bool) -> bool:
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts:
        return True
    for lower in lowers:
        current = os.path.join(overlay_root, lower)
        opaque_above = False
        for i, part in enumerate(parts):
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                break  # perhaps in a layer further down
            if _is_whiteout(st) or (dirs_only and not stat.S_ISDIR(st.st_mode)):
                return False
            if i == len(parts) - 1:
                return True
            if not stat.S_ISDIR(st.st_mode):
                return False  # a file or (unfollowed) symlink on the way
            if _is_opaque(current):
                opaque_above = True  # layers further down are hidden below this directory
        if opaque_above:
            return False
    return False


def exists_below(overlay_root: Path, lowers: list[str], path: str) -> bool:
    """Whether ``path`` (absolute, symlinks not followed) exists in the merged view of ``lowers``."""
    return _stat_below(overlay_root, lowers, path, dirs_only=False)


def is_dir_below(overlay_root: Path, lowers: list[str], path: str) -> bool:
    """Whether ``path`` is a directory reached without any symlink in the merged view of ``lowers``.

    False means "look in a mounted view": the path is missing, or a symlink
    (perhaps dangling, which WORKDIR must follow and create) is on the way.
    """
    return _stat_below(overlay_root, lowers, path, dirs_only=True)
