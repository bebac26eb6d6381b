"""``pybuild diff``: what a container changed in its filesystem, from its writable layer.

Docker's kinds: ``A`` added, ``C`` changed (it existed below: any file or
directory written, or a directory whose contents changed), ``D`` deleted
(a whiteout, or everything below an opaque directory that existed below).
The upper dir is walked through descriptors (the container may be running
and may have made it deep or full of links); nothing in it is followed.
"""

from __future__ import annotations

import os

from pybuild.linux.fsutil import ENTER, LEAVE, walk
from pybuild.store.lowerview import exists_below, is_dir_below
from pybuild.store.whiteouts import WHITEOUT_OPAQUE, is_overlay_whiteout, opaque_xattrs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

ADDED, CHANGED, DELETED = "A", "C", "D"


def changes(upper: Path, overlay_root: Path, lowers: list[str]) -> list[tuple[str, str]]:
    """(kind, absolute path) of every change in ``upper`` over ``lowers``, sorted by path as docker's are."""
    out: list[tuple[str, str]] = []
    markers = opaque_xattrs()
    for event, entry in walk(upper):
        if event == LEAVE:
            continue
        path = "/" + os.fsdecode(entry.rel)
        if is_overlay_whiteout(entry.st):
            out.append((DELETED, path))
            continue
        if entry.name == WHITEOUT_OPAQUE:
            continue
        below = exists_below(overlay_root, lowers, path)
        out.append((CHANGED if below else ADDED, path))
        if event == ENTER and below and _opaque(entry.fd, markers):
            out += _hidden(overlay_root, lowers, path, upper)
    return sorted(out, key=lambda change: change[1])


def _opaque(fd: int, markers: tuple[str, ...]) -> bool:
    for name in markers:
        try:
            if os.getxattr(fd, name) == b"y":
                return True
        except OSError:
            continue
    return False


def _hidden(overlay_root: Path, lowers: list[str], path: str, upper: Path) -> list[tuple[str, str]]:
    """What an opaque directory hides: the lower entries right below it that the upper does not have."""
    names: set[str] = set()
    for lower in lowers:
        if not is_dir_below(overlay_root, [lower], path):
            continue  # not there, or reached through a link: never followed
        try:
            names.update(os.listdir(os.path.join(overlay_root, lower, path.lstrip("/"))))
        except OSError:
            continue
    try:
        present = set(os.listdir(os.path.join(upper, path.lstrip("/"))))
    except OSError:
        present = set()
    return [(DELETED, f"{path.rstrip('/')}/{name}") for name in sorted(names - present)
            if exists_below(overlay_root, lowers, f"{path.rstrip('/')}/{name}")]
