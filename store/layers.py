"""Layers laid out like Docker's overlay2 driver, plus the layer database.

``overlay2/<cache-id>/`` holds ``diff/`` (the layer's content, or the upper
dir while it is written), ``work/`` and ``merged/`` (overlay's work and mount
dirs), ``link`` (the layer's 26-character short id) and ``lower`` (the short
links of all ancestors, nearest first, ``l/AAA:l/BBB``). ``overlay2/l/<id>``
is a relative symlink to ``../<cache-id>/diff``: short names keep the overlay
option string of a deep chain within the kernel's one-page limit.

``layerdb/sha256/<chain-id>/`` records a committed layer: ``diff`` (its
diff-id), ``parent`` (the parent's chain-id), ``cache-id`` and ``size``.
``layerdb/mounts/<name>/`` records a read-write layer (a container's) with
its ``mount-id``, ``init-id`` and ``parent``.

A layer directory being written is owned by its process through a locked
file under ``tmp/``; if the process dies, the lock is free and the next open
of the store removes the directory.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from pybuild.errors import LayerError, LayerNotFound, MountError, TooManyLayers
from pybuild.linux import mount as _mount
from pybuild.linux.fsutil import FILE, fsync_dir, remove_tree, walk
from pybuild.records import record

from . import digest as _digest
from .locks import Ownership, is_abandoned

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

MAX_DEPTH = 127  # the kernel stacks at most 128 lower dirs; a container adds its upper
SHORT_ID_LEN = 26
LINK_DIR = "l"


@record(frozen=True)
class Layer:
    """A committed, read-only layer."""

    chain_id: str
    diff_id: str
    parent: str | None
    cache_id: str
    size: int


@record
class Snapshot:
    """A layer directory being written (not yet committed)."""

    cache_id: str
    parent: Layer | None
    path: Path
    owner: Ownership

    @property
    def diff_dir(self) -> Path:
        return self.path / "diff"

    @property
    def work_dir(self) -> Path:
        return self.path / "work"

    @property
    def merged_dir(self) -> Path:
        return self.path / "merged"


@record(frozen=True)
class RWLayer:
    """A container's read-write layer: an init layer and a mount (upper) layer over a parent chain."""

    name: str
    mount_id: str
    init_id: str | None
    parent: str | None


def new_short_id() -> str:
    return base64.b32encode(os.urandom(16)).decode().rstrip("=")[:SHORT_ID_LEN]


def new_cache_id() -> str:
    return os.urandom(32).hex()


_CACHE_ID_RE = re.compile(r"[0-9a-f]{64}(?:-init)?")


def _valid_cache_id(name: str) -> bool:
    return _CACHE_ID_RE.fullmatch(name) is not None


class LayerStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.overlay = root / "overlay2"
        self.links = self.overlay / LINK_DIR
        self.db = root / "layerdb" / "sha256"
        self.mounts_db = root / "layerdb" / "mounts"
        self.tmp = root / "tmp"

    # ---- the layer database -------------------------------------------------

    def _entry(self, chain_id: str) -> Path:
        return self.db / _digest.hex_of(chain_id)

    def exists(self, chain_id: str) -> bool:
        return self._entry(chain_id).is_dir()

    def get(self, chain_id: str) -> Layer:
        entry = self._entry(chain_id)
        try:
            diff_id = (entry / "diff").read_text().strip()
            cache_id = (entry / "cache-id").read_text().strip()
            size = int((entry / "size").read_text().strip() or 0)
        except FileNotFoundError:
            raise LayerNotFound(f"layer {chain_id} not found", "run 'pybuild system check'") from None
        try:
            parent: str | None = (entry / "parent").read_text().strip() or None
        except FileNotFoundError:
            parent = None
        return Layer(chain_id, _digest.validate(diff_id), parent, cache_id, size)

    def walk(self) -> Iterator[Layer]:
        if not self.db.is_dir():
            return
        for entry in os.scandir(self.db):
            if entry.name.startswith(".") or not _digest.is_valid("sha256:" + entry.name):
                continue
            with contextlib.suppress(LayerNotFound):
                yield self.get("sha256:" + entry.name)

    def chain(self, chain_id: str | None) -> list[Layer]:
        """The layer and its ancestors, nearest first."""
        out: list[Layer] = []
        while chain_id is not None:
            layer = self.get(chain_id)
            out.append(layer)
            chain_id = layer.parent
            if len(out) > MAX_DEPTH + 1:
                raise LayerError(f"layer chain of {out[0].chain_id} loops or is too deep")
        return out

    # ---- directories and short links ---------------------------------------

    def layer_dir(self, cache_id: str) -> Path:
        if not _valid_cache_id(cache_id) or "/" in cache_id:
            raise LayerError(f"invalid layer id {cache_id!r}")
        return self.overlay / cache_id

    def short_id(self, cache_id: str) -> str:
        return (self.layer_dir(cache_id) / "link").read_text().strip()

    def lowers(self, cache_id: str) -> list[str]:
        """``l/<id>`` of all ancestors of a layer dir, nearest first."""
        try:
            text = (self.layer_dir(cache_id) / "lower").read_text().strip()
        except FileNotFoundError:
            return []
        return [p for p in text.split(":") if p]

    def _make_dir(self, cache_id: str, parent_cache_id: str | None, *, with_work: bool = True) -> Path:
        path = self.layer_dir(cache_id)
        path.mkdir(mode=0o710)
        (path / "diff").mkdir(mode=0o755)
        if with_work:
            (path / "work").mkdir(mode=0o700)
            (path / "merged").mkdir(mode=0o700)
        short = new_short_id()
        (path / "link").write_text(short)
        if parent_cache_id is not None:
            lowers = [f"{LINK_DIR}/{self.short_id(parent_cache_id)}", *self.lowers(parent_cache_id)]
            (path / "lower").write_text(":".join(lowers))
        os.symlink(f"../{cache_id}/diff", self.links / short)
        return path

    def _remove_dir(self, cache_id: str) -> None:
        path = self.layer_dir(cache_id)
        with contextlib.suppress(FileNotFoundError, OSError):
            short = (path / "link").read_text().strip()
            if short and "/" not in short:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.links / short)
        for target in _mount.mounts_under(path):
            _mount.umount(target, _mount.MNT_DETACH)
        remove_tree(path)

    # ---- creating and committing -------------------------------------------

    def depth(self, chain_id: str | None) -> int:
        if chain_id is None:
            return 0
        return 1 + len(self.lowers(self.get(chain_id).cache_id))

    def create(self, parent: str | None) -> Snapshot:
        """A new, empty layer directory over ``parent`` (a chain id), owned by this process."""
        parent_layer = self.get(parent) if parent is not None else None
        if parent is not None and self.depth(parent) >= MAX_DEPTH:
            raise TooManyLayers(
                f"cannot add a layer over {parent}: the chain already has {MAX_DEPTH} layers",
                f"overlayfs stacks at most {MAX_DEPTH + 1} directories; squash some steps")
        cache_id = new_cache_id()
        owner = Ownership(self.tmp / f"layer-{cache_id}.owner")
        try:
            path = self._make_dir(cache_id, parent_layer.cache_id if parent_layer else None)
        except BaseException:
            with contextlib.suppress(Exception):
                self._remove_dir(cache_id)
            owner.release()
            raise
        return Snapshot(cache_id, parent_layer, path, owner)

    def discard(self, snap: Snapshot) -> None:
        try:
            self._remove_dir(snap.cache_id)
        finally:
            snap.owner.release()

    def commit(self, snap: Snapshot, diff_id: str) -> Layer:
        """Record ``snap`` as the layer with ``diff_id``; an identical existing layer wins."""
        try:  # a commit that fails leaves nothing behind (the snapshot goes)
            _digest.validate(diff_id)
            parent_chain = snap.parent.chain_id if snap.parent else None
            chain = diff_id if parent_chain is None else _digest.of_bytes(f"{parent_chain} {diff_id}".encode())
            size = _tree_size(snap.diff_dir)
            # work/ and merged/ of a committed layer are only needed to mount it as an upper.
            for name in ("work", "merged"):
                with contextlib.suppress(OSError):
                    remove_tree(snap.path / name)
        except BaseException:
            self.discard(snap)
            raise
        entry = self._entry(chain)
        if entry.is_dir():
            self.discard(snap)
            return self.get(chain)
        staging = self.db / f".tmp-{snap.cache_id}"
        staging.mkdir(mode=0o700)
        try:
            (staging / "diff").write_text(diff_id)
            (staging / "cache-id").write_text(snap.cache_id)
            (staging / "size").write_text(str(size))
            if parent_chain is not None:
                (staging / "parent").write_text(parent_chain)
            for f in staging.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            fsync_dir(staging)
            os.rename(staging, entry)
            fsync_dir(self.db)
        except OSError as exc:
            remove_tree(staging)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and entry.is_dir():
                self.discard(snap)  # another process committed the same layer first
                return self.get(chain)
            self.discard(snap)
            raise
        except BaseException:
            remove_tree(staging)
            self.discard(snap)
            raise
        snap.owner.release()
        return Layer(chain, diff_id, parent_chain, snap.cache_id, size)

    def register(self, stream: BinaryIO, parent: str | None, expected_diff_id: str | None = None) -> Layer:
        """Apply a (possibly compressed) layer tar over ``parent`` and commit it."""
        from .layertar import apply_layer, max_layer_size

        if expected_diff_id is not None and parent is not None:
            known = _digest.of_bytes(f"{parent} {expected_diff_id}".encode())
            if self.exists(known):
                return self.get(known)
        elif expected_diff_id is not None and self.exists(expected_diff_id):
            return self.get(expected_diff_id)
        limit = max_layer_size()
        snap = self.create(parent)
        try:
            applied = apply_layer(stream, snap.diff_dir, expected_diff_id=expected_diff_id, max_size=limit)
        except BaseException:
            self.discard(snap)
            raise
        return self.commit(snap, applied.diff_id)

    def remove(self, chain_id: str) -> None:
        """Delete a committed layer (the caller ensures nothing uses it)."""
        layer = self.get(chain_id)
        entry = self._entry(chain_id)
        doomed = self.db / f".rm-{_digest.hex_of(chain_id)}"
        os.rename(entry, doomed)  # the layer is gone from the db before its files are
        self._remove_dir(layer.cache_id)
        remove_tree(doomed)

    # ---- read-write layers (containers) ------------------------------------

    def create_rw(self, name: str, parent: str | None, init: bool = True) -> RWLayer:
        """A container's layers: ``<id>-init`` for generated files, then the upper ``<id>``."""
        if not name or "/" in name or name.startswith("."):
            raise LayerError(f"invalid mount name {name!r}")
        entry = self.mounts_db / name
        if entry.exists():
            raise LayerError(f"read-write layer {name} exists")
        parent_layer = self.get(parent) if parent is not None else None
        mount_id = new_cache_id()
        init_id = mount_id + "-init" if init else None
        staging = self.mounts_db / f".tmp-{name}"
        staging.mkdir(mode=0o700)
        try:
            (staging / "mount-id").write_text(mount_id)
            if init_id:
                (staging / "init-id").write_text(init_id)
            if parent is not None:
                (staging / "parent").write_text(parent)
            os.rename(staging, entry)  # recorded before the dirs exist: cleanup can always find them
            below = parent_layer.cache_id if parent_layer else None
            if init_id:
                self._make_dir(init_id, below, with_work=False)  # only ever a lower: no work/ or merged/
                below = init_id
            self._make_dir(mount_id, below)
        except BaseException:
            remove_tree(staging)
            with contextlib.suppress(Exception):
                self.remove_rw(name)
            raise
        return RWLayer(name, mount_id, init_id, parent)

    def get_rw(self, name: str) -> RWLayer:
        entry = self.mounts_db / name
        try:
            mount_id = (entry / "mount-id").read_text().strip()
        except FileNotFoundError:
            raise LayerNotFound(f"read-write layer {name} not found") from None
        init_id = (entry / "init-id").read_text().strip() if (entry / "init-id").exists() else None
        parent = (entry / "parent").read_text().strip() if (entry / "parent").exists() else None
        return RWLayer(name, mount_id, init_id, parent or None)

    def walk_rw(self) -> Iterator[RWLayer]:
        if not self.mounts_db.is_dir():
            return
        for entry in os.scandir(self.mounts_db):
            if not entry.name.startswith("."):
                with contextlib.suppress(LayerNotFound):
                    yield self.get_rw(entry.name)

    def remove_rw(self, name: str) -> None:
        entry = self.mounts_db / name
        rw = self.get_rw(name)
        for cache_id in (rw.mount_id, rw.init_id):
            if cache_id:
                self._remove_dir(cache_id)
        remove_tree(entry)

    # ---- mounting -----------------------------------------------------------

    def mount_rw(self, rw: RWLayer, target: Path | None = None) -> Path:
        """Mount a read-write layer (its upper over init and the parent chain)."""
        target = target or self.layer_dir(rw.mount_id) / "merged"
        lowers = self.lowers(rw.mount_id)
        if not lowers:
            # A container over scratch: overlay needs a lower; the empty init/diff of this layer serves.
            lowers = [f"{LINK_DIR}/{self.short_id(rw.init_id)}"] if rw.init_id else []
        if not lowers:
            raise MountError("cannot mount a layer with no lower directory")
        self._mount_checked(lowers, f"{rw.mount_id}/diff", f"{rw.mount_id}/work", target, False)
        return target

    def mount_view(self, chain_id: str) -> Path:
        """Mount an image's layer chain read-only at the top layer's ``merged/`` and return it."""
        layer = self.get(chain_id)
        path = self.layer_dir(layer.cache_id)
        target = path / "merged"
        target.mkdir(mode=0o700, exist_ok=True)
        if _mount.is_mounted(target):
            return target
        lowers = [f"{LINK_DIR}/{self.short_id(layer.cache_id)}", *self.lowers(layer.cache_id)]
        if len(lowers) == 1:
            _mount.mount(str(path / "diff"), target, None, _mount.MS_BIND)
            try:
                _mount.mount(None, target, None, _mount.MS_BIND | _mount.MS_REMOUNT | _mount.MS_RDONLY)
            except BaseException:
                _mount.umount(target, _mount.MNT_DETACH)
                raise
        else:
            self._mount_checked(lowers, None, None, target, True)
        return target

    def unmount_view(self, chain_id: str) -> bool:
        target = self.layer_dir(self.get(chain_id).cache_id) / "merged"
        if not _mount.is_mounted(target):
            return False
        _mount.umount(target)
        with contextlib.suppress(OSError):
            target.rmdir()
        return True

    def _mount_checked(self, lowers: list[str], upper: str | None, work: str | None,
                       target: Path, readonly: bool) -> None:
        try:
            _mount.mount_overlay(self.overlay, lowers, upper, work, target, readonly)
        except MountError:
            # A lost short link is the usual culprit: repair links and retry once.
            if not self.repair_links():
                raise
            _mount.mount_overlay(self.overlay, lowers, upper, work, target, readonly)

    # ---- consistency --------------------------------------------------------

    def check_links(self) -> tuple[list[str], list[str]]:
        """(layer dirs whose short link is missing or wrong, links that dangle)."""
        missing: list[str] = []
        dangling: list[str] = []
        for entry in os.scandir(self.overlay):
            if entry.name == LINK_DIR or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                short = (Path(entry.path) / "link").read_text().strip()
            except FileNotFoundError:
                continue
            link_path = self.links / short
            if not link_path.is_symlink() or os.readlink(link_path) != f"../{entry.name}/diff":
                missing.append(entry.name)
        for link_entry in os.scandir(self.links):
            if not os.path.exists(link_entry.path):
                dangling.append(link_entry.name)
        return missing, dangling

    def repair_links(self) -> bool:
        """Recreate missing short links from ``link`` files; drop dangling ones. True if anything changed."""
        missing, dangling = self.check_links()
        for name in dangling:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.links / name)
        for cache_id in missing:
            short = (self.overlay / cache_id / "link").read_text().strip()
            link = self.links / short
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(f"../{cache_id}/diff", link)
        return bool(missing or dangling)

    def abandoned_snapshots(self) -> list[str]:
        """Layer dirs whose creating process died before committing them."""
        out = []
        for owner in self.tmp.glob("layer-*.owner"):
            if is_abandoned(owner):
                out.append(owner.name[len("layer-"):-len(".owner")])
        return out

    def clean_abandoned(self) -> int:
        count = 0
        for cache_id in self.abandoned_snapshots():
            owner = self.tmp / f"layer-{cache_id}.owner"
            if not self._referenced_cache_ids_contains(cache_id):
                with contextlib.suppress(LayerError):
                    self._remove_dir(cache_id)
                count += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(owner)
        return count

    def _referenced_cache_ids_contains(self, cache_id: str) -> bool:
        return cache_id in self.referenced_cache_ids()

    def referenced_cache_ids(self) -> set[str]:
        ids = {layer.cache_id for layer in self.walk()}
        for rw in self.walk_rw():
            ids.add(rw.mount_id)
            if rw.init_id:
                ids.add(rw.init_id)
        return ids

    def orphan_dirs(self) -> list[str]:
        """Layer dirs nothing refers to and no live process owns."""
        referenced = self.referenced_cache_ids()
        out = []
        for entry in os.scandir(self.overlay):
            if entry.name == LINK_DIR or entry.name in referenced:
                continue
            owner = self.tmp / f"layer-{entry.name}.owner"
            if owner.exists() and not is_abandoned(owner):
                continue
            out.append(entry.name)
        return out

    def remove_orphan_dir(self, cache_id: str) -> None:
        self._remove_dir(cache_id)


def _tree_size(path: Path) -> int:
    """The bytes of everything but directories below ``path`` (iterative: any depth)."""
    return sum(entry.st.st_size for event, entry in walk(path, sort=False) if event == FILE)
