"""Filesystem work of build steps on the layer store.

* :func:`writable_snapshot`: a new layer over a parent chain, mounted with
  overlay so COPY and WORKDIR see (and resolve symlinks and names against)
  the image below while writing only the new layer's ``diff/``.
* :func:`readonly_view`: a stage's or image's layers mounted read-only, the
  source of ``COPY --from`` and ``RUN --mount=from=``; :func:`writable_view`
  the same with a throw-away upper (``RUN --mount=from=...,rw``).
* :func:`remove_mount_stubs`: a RUN's mount points out of its layer.

Mounts are made in the calling process's mount namespace and always undone
in ``finally``; ``pybuild build`` runs in a private mount namespace of its
own, so even a killed build leaves nothing mounted on the host.
"""

from __future__ import annotations

import contextlib
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pybuild.linux import mount as _mount
from pybuild.linux.fsutil import remove_tree
from pybuild.store.layers import LINK_DIR, LayerStore, Snapshot
from pybuild.store.lowerview import exists_below


def chain_lowers(layers: LayerStore, chain_id: str | None) -> list[str]:
    """The lower dirs (relative to the overlay root, nearest first) of a chain's merged view."""
    if chain_id is None:
        return []
    layer = layers.get(chain_id)
    return [f"{LINK_DIR}/{layers.short_id(layer.cache_id)}", *layers.lowers(layer.cache_id)]


@contextlib.contextmanager
def writable_snapshot(layers: LayerStore, snap: Snapshot) -> Iterator[Path]:
    """Mount ``snap`` over its parent chain; yields the merged dir (the diff dir itself when there is no parent)."""
    lowers = layers.lowers(snap.cache_id)
    if not lowers:
        yield snap.diff_dir
        return
    target = snap.merged_dir
    target.mkdir(mode=0o700, exist_ok=True)
    _mount.mount_overlay(layers.overlay, lowers, f"{snap.cache_id}/diff", f"{snap.cache_id}/work", target)
    try:
        yield target
    finally:
        _mount.umount(target, _mount.MNT_DETACH)
        with contextlib.suppress(OSError):
            target.rmdir()


@contextlib.contextmanager
def readonly_view(layers: LayerStore, chain_id: str | None, scratch: Path) -> Iterator[Path]:
    """Mount a chain read-only at a fresh dir under ``scratch`` (an empty dir for an empty chain)."""
    target = Path(tempfile.mkdtemp(prefix="view-", dir=scratch))
    mounted = False
    try:
        lowers = chain_lowers(layers, chain_id)
        if len(lowers) == 1:
            _mount.mount(str(layers.overlay / lowers[0]), target, None, _mount.MS_BIND)
            mounted = True
            _mount.mount(None, target, None, _mount.MS_BIND | _mount.MS_REMOUNT | _mount.MS_RDONLY)
        elif lowers:
            _mount.mount_overlay(layers.overlay, lowers, None, None, target, readonly=True)
            mounted = True
        yield target
    finally:
        if mounted:
            _mount.umount(target, _mount.MNT_DETACH)
        with contextlib.suppress(OSError):
            target.rmdir()


@contextlib.contextmanager
def writable_view(layers: LayerStore, chain_id: str | None, scratch: Path) -> Iterator[Path]:
    """A chain's merged view that takes writes, thrown away afterwards (a ``rw`` RUN --mount from a stage).

    An overlay with its upper under ``scratch``: nothing is copied but what
    is written (an empty chain gives an empty directory).
    """
    work = Path(tempfile.mkdtemp(prefix="rwview-", dir=scratch))
    target = work / "merged"
    target.mkdir(mode=0o700)
    mounted = False
    try:
        lowers = chain_lowers(layers, chain_id)
        if lowers:
            (work / "upper").mkdir(mode=0o700)
            (work / "work").mkdir(mode=0o700)
            _mount.mount_overlay(layers.overlay, lowers, str(work / "upper"), str(work / "work"), target)
            mounted = True
        yield target
    finally:
        if mounted:
            _mount.umount(target, _mount.MNT_DETACH)  # raises rather than let the removal below reach in
        remove_tree(work)


def remove_mount_stubs(diff: Path, overlay_root: Path, lowers: list[str], targets: list[str]) -> None:
    """Delete from a RUN's layer the empty mount points it created only to mount over them."""
    for target in sorted(targets, key=lambda t: -t.count("/")):
        parts = [p for p in target.split("/") if p]
        while parts:
            rel = "/".join(parts)
            host = diff / rel
            if exists_below(overlay_root, lowers, "/" + rel):
                break
            try:
                st = host.lstat()
            except OSError:
                break
            if stat.S_ISDIR(st.st_mode):
                try:
                    host.rmdir()
                except OSError:
                    break  # not empty: the command wrote there
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                host.unlink()
            else:
                break
            parts.pop()
