"""The store as a whole: opening a root, writing layers and images, GC, checks.

Concurrency: processes that add to the store hold the root lock shared; the
garbage collector holds it exclusive, so it never sweeps a layer or blob that
a running import, pull or build has written but not yet referenced. Work in
progress is owned through locked files under ``tmp/`` (see ``locks``), which
lets any process recognise and remove what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from pybuild.errors import (
    LayerNotFound,
    PybuildError,
    StoreError,
    UnsupportedFilesystem,
)
from pybuild.linux.fsutil import atomic_write, remove_tree, tree_size
from pybuild.records import field, record

from . import digest as _digest
from . import reference as _reference
from .blobs import BlobStore
from .images import Image, ImageStore, now_iso
from .layers import Layer, LayerStore, Snapshot
from .locks import Ownership, is_abandoned, locked
from .model import (
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    ContainerConfig,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Platform,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from .buildcache import BuildCache


DEFAULT_ROOT = "/var/lib/pybuild"
FORMAT_VERSION = "1"
MOUNT_PROGRAM_FILE = "mount-program"  # present when the store's overlays are fuse-overlayfs's
OVERLAYFS_MAGIC = 0x794C7630

_SUBDIRS = ("tmp", "blobs/sha256", "overlay2/l", "layerdb/sha256", "layerdb/mounts",
            "imagedb/sha256", "containers", "volumes")

BUILD_SCRATCH_PREFIX = "build-"
# builder/runstep.py writes a RUN's secret mounts as <scratch>/run-*/secret-*, plaintext:
# an abandoned scratch dir loses those first.
SECRET_FILE_PREFIX = "secret-"


@record
class GCReport:
    layers: int = 0
    dirs: int = 0
    blobs: int = 0
    bytes_freed: int = 0
    leftovers: int = 0


@record
class Problem:
    what: str
    repaired: bool = False


@record
class CheckReport:
    problems: list[Problem] = field(default_factory=list)

    def add(self, what: str, repaired: bool = False) -> None:
        self.problems.append(Problem(what, repaired))

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)


class ScratchDir:
    """A build's private directory ``tmp/build-<hex>``, owned through ``tmp/build-<hex>.owner``.

    The owner file is made (locked) before the directory and released after
    it is gone, so a directory whose owner lock is free belongs to a build
    that was killed: the next command that opens the store removes it, the
    secret files in it first (:meth:`Store.clean_abandoned`).
    """

    def __init__(self, tmp: Path) -> None:
        name = BUILD_SCRATCH_PREFIX + os.urandom(8).hex()
        self.path = tmp / name
        self._owner = Ownership(tmp / f"{name}.owner")
        try:
            self.path.mkdir(mode=0o700)
        except BaseException:
            self._owner.release()
            raise

    def remove(self) -> None:
        """Remove the directory, then give up its ownership (even if removing failed: a later command retries)."""
        try:
            remove_scratch(self.path)
        finally:
            self._owner.release()


def remove_scratch(path: Path) -> int:
    """Remove a build's scratch dir, its secret files first; returns how many secret files there were."""
    secrets = 0
    try:
        runs = [e for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        runs = []
    for run in runs:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(run.path):
                if entry.name.startswith(SECRET_FILE_PREFIX) and not entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    secrets += 1
    remove_tree(path)
    return secrets


def _count_secrets(path: Path) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for run in os.scandir(path):
            if run.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    count += sum(e.name.startswith(SECRET_FILE_PREFIX) for e in os.scandir(run.path))
    return count


class Store:
    """A pybuild store rooted at one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.lock_path = root / "store.lock"
        self.blobs = BlobStore(root / "blobs" / "sha256", self.tmp)
        self.layers = LayerStore(root)
        self.images = ImageStore(root, self.blobs)
        self._build_cache: BuildCache | None = None

    @property
    def build_cache(self) -> BuildCache:
        """The builder's step records (imported on first use: ``run`` does not need them)."""
        if self._build_cache is None:
            from .buildcache import BuildCache

            self._build_cache = BuildCache(self.root / "buildcache")
        return self._build_cache

    # ---- opening ------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, *, clean: bool = True,
             mount_program: str | None = None) -> Store:
        """Open (initialising if needed) the store at ``root``.

        ``clean`` (the default) removes what killed processes left first; only
        ``system check`` opens without it, to report those leftovers.
        ``mount_program`` (podman's ``overlay.mount_program``) chooses the
        overlay of a new store: a fuse-overlayfs path, or "" for the kernel's;
        None picks the kernel's where it works (rootless: else fuse-overlayfs).
        """
        path = Path(root or os.environ.get("PYBUILD_ROOT") or DEFAULT_ROOT).absolute()
        store = cls(path)
        marker = path / "version"
        if not marker.exists():
            store._initialise(mount_program)
        store._use_mount_program(mount_program)
        if clean:
            store.clean_abandoned()
        return store

    @property
    def mount_program(self) -> str | None:
        """The overlay this store was made for: "fuse-overlayfs", or None for the kernel's."""
        try:
            return (self.root / MOUNT_PROGRAM_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _use_mount_program(self, asked: str | None) -> None:
        from pybuild.linux import fuseoverlay

        made_for = self.mount_program
        if asked is not None and (asked != "") != (made_for is not None):
            raise StoreError(f"store {self.root} was made for {made_for or 'the kernel overlay'}; "
                             f"overlay.mount_program={asked} applies to a new store only",
                             "leave the option out, or remove the store (pybuild system reset)")
        if made_for is None:
            fuseoverlay.use(None)
            return
        program = asked or fuseoverlay.find()
        if program is None:
            raise StoreError(f"store {self.root} uses fuse-overlayfs, which is not installed",
                             "apt-get install fuse-overlayfs")
        fuseoverlay.use(program)

    def _initialise(self, mount_program: str | None = None) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store root {self.root}: {exc.strerror}") from None
        with locked(self.root / "init.lock"):
            if (self.root / "version").exists():
                return
            program = choose_overlay(self.root, mount_program)
            os.chmod(self.root, 0o700)
            for sub in _SUBDIRS:
                (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root / "overlay2", 0o710)
            if program is not None:
                atomic_write(self.root / MOUNT_PROGRAM_FILE, fuseoverlay_name().encode(), 0o600)
            atomic_write(self.root / "version", FORMAT_VERSION.encode(), 0o600)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the root shared while adding to the store (the GC waits for it)."""
        with locked(self.lock_path, shared=True):
            yield

    def build_scratch(self) -> ScratchDir:
        """A new scratch directory for one build, owned by this process until ``remove()``."""
        return ScratchDir(self.tmp)

    def abandoned_builds(self, entries: list[os.DirEntry[str]] | None = None) -> list[str]:
        """Names (``build-<hex>``) under tmp/ of scratch dirs or owner files of builds that were killed."""
        if entries is None:
            try:
                entries = list(os.scandir(self.tmp))
            except FileNotFoundError:
                return []
        names = {e.name.removesuffix(".owner") for e in entries if e.name.startswith(BUILD_SCRATCH_PREFIX)}
        return sorted(n for n in names if is_abandoned(self.tmp / f"{n}.owner"))

    def _clean_abandoned_builds(self, entries: list[os.DirEntry[str]] | None = None) -> int:
        count = 0
        for name in self.abandoned_builds(entries):
            remove_scratch(self.tmp / name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp / f"{name}.owner")
            count += 1
        return count

    def snapshot_in_progress(self, cache_id_prefix: str) -> bool:
        """Whether a live process owns an uncommitted layer whose cache id starts with ``cache_id_prefix``."""
        if not cache_id_prefix or any(c not in "0123456789abcdef" for c in cache_id_prefix):
            return False
        return any(not is_abandoned(owner) for owner in self.tmp.glob(f"layer-{cache_id_prefix}*.owner"))

    def clean_abandoned(self) -> int:
        """Remove what killed processes left: build scratch dirs (secrets first), temp blobs and
        uncommitted layer dirs. Cheap."""
        count = 0
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return 0
        # first: a killed build's scratch dir may hold the plaintext of its RUN secrets
        count += self._clean_abandoned_builds(entries)
        for entry in entries:
            if entry.name.startswith(".new-") and is_abandoned(Path(entry.path)):
                # killed between creating and publishing a locked file; give a live
                # creator (it holds the lock within microseconds) no chance to race
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - entry.stat().st_mtime > 60:
                        os.unlink(entry.path)
                        count += 1
            if entry.name.startswith("blob-") and is_abandoned(Path(entry.path)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                count += 1
        if any(e.name.endswith(".owner") for e in entries):
            count += self.layers.clean_abandoned()
        return count

    # ---- writing layers and images ------------------------------------------

    def commit_snapshot(self, snap: Snapshot, compression: str = "gzip",
                        source_date_epoch: int | None = None) -> tuple[Layer, Descriptor]:
        """Tar a written layer dir into a blob and commit the layer; returns it and its descriptor."""
        from .compression import Compression
        from .layertar import write_layer

        comp = {"gzip": Compression.GZIP, "zstd": Compression.ZSTD}.get(compression)
        if comp is None:
            raise PybuildError(f"unknown compression {compression!r}", "use gzip or zstd")
        try:
            with self.blobs.writer() as w:
                below = (self.layers.overlay, self.layers.lowers(snap.cache_id))
                blob = write_layer(snap.diff_dir, w, comp, source_date_epoch=source_date_epoch,  # type: ignore[arg-type]
                                   below=below)
                dgst = w.commit()
            _digest.verify(blob.digest, dgst, "layer blob")
        except BaseException:
            self.layers.discard(snap)
            raise
        layer = self.layers.commit(snap, blob.diff_id)
        media = OCI_LAYER_ZSTD if comp is Compression.ZSTD else OCI_LAYER_GZIP
        return layer, Descriptor(media, dgst, blob.size)

    def import_tar(self, stream: BinaryIO, ref: _reference.Reference | None, *,
                   message: str = "", changes: ContainerConfig | None = None,
                   compression: str = "gzip", source: str = "-") -> Image:
        """A rootfs tarball (plain or compressed) becomes a one-layer image, as ``docker import``."""
        from .layertar import apply_layer, max_layer_size

        limit = max_layer_size()
        with self.writing():
            snap = self.layers.create(None)
            try:
                apply_layer(stream, snap.diff_dir, max_size=limit)
            except BaseException:
                self.layers.discard(snap)
                raise
            epoch = _source_date_epoch()
            layer, desc = self.commit_snapshot(snap, compression, epoch)
            created = now_iso() if epoch is None else _epoch_iso(epoch)
            config = ImageConfig(
                diff_ids=(layer.diff_id,),
                config=changes or ContainerConfig(),
                history=(HistoryEntry(created=created, created_by=f"pybuild import {source}",
                                      comment=message or "Imported from " + source),),
                created=created,
                platform=Platform.host(),
            )
            image = self.images.create(config, [desc])
            if ref is not None:
                self.images.tag(ref, image.manifest_digest)
        return image

    # ---- garbage collection ---------------------------------------------------

    def gc(self, wait: bool = True) -> GCReport | None:
        """Remove layers, layer dirs and blobs no image or container uses.

        With ``wait=False`` returns None at once if another process is writing.
        """
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return None
            return self._sweep()
        finally:
            os.close(fd)

    def live_set(self, include_build_cache: bool = True) -> tuple[set[str], set[str]]:
        """(chain ids, blob digests) reachable from images, containers and (by default) the build cache."""
        chains: set[str] = set()
        blobs: set[str] = set()
        for image in self.images.walk():
            blobs.add(image.manifest_digest)
            blobs.add(image.config_digest)
            index = self.images.index_of(image.manifest_digest)
            if index is not None:
                blobs.add(index)
            blobs.update(d.digest for d in image.manifest.layers)
            chains.update(image.chain_ids)
        for entry in self.build_cache.walk() if include_build_cache else ():
            blobs.add(entry.config_digest)
            blobs.update(d.digest for d in entry.layers)
            chains.update(_digest.chain_ids(list(entry.diff_ids)))
        for rw in self.layers.walk_rw():
            chain = rw.parent
            while chain is not None and chain not in chains:
                chains.add(chain)
                try:
                    chain = self.layers.get(chain).parent
                except LayerNotFound:
                    break
        return chains, blobs

    def _sweep(self) -> GCReport:
        report = GCReport(leftovers=self.clean_abandoned())
        live_chains, live_blobs = self.live_set()
        for layer in list(self.layers.walk()):
            if layer.chain_id not in live_chains:
                report.bytes_freed += layer.size
                self.layers.remove(layer.chain_id)
                report.layers += 1
        for staging_dir in (self.layers.db, self.layers.mounts_db):
            for entry in os.scandir(staging_dir):
                if entry.name.startswith((".tmp-", ".rm-")):
                    remove_tree(entry.path)
                    report.leftovers += 1
        for cache_id in self.layers.orphan_dirs():
            self.layers.remove_orphan_dir(cache_id)
            report.dirs += 1
        self.layers.repair_links()
        for dgst in list(self.blobs.walk()):
            if dgst not in live_blobs:
                with contextlib.suppress(OSError):
                    report.bytes_freed += self.blobs.path(dgst).stat().st_size
                self.blobs.delete(dgst)
                report.blobs += 1
        return report

    # ---- consistency ------------------------------------------------------------

    def check(self, repair: bool = False) -> CheckReport:
        report = CheckReport()
        for path, want in ((self.root, 0o700), (self.root / "overlay2", 0o710)):
            mode = path.stat().st_mode & 0o777
            if mode & 0o007:
                if repair:
                    os.chmod(path, want)
                report.add(f"{path} is accessible to other users (mode {mode:o})", repair)
        missing, dangling = self.layers.check_links()
        for cache_id in missing:
            report.add(f"layer dir {cache_id}: short link missing", repair)
        for name in dangling:
            report.add(f"short link l/{name} dangles", repair)
        if repair and (missing or dangling):
            self.layers.repair_links()
        for layer in self.layers.walk():
            if not (self.root / "overlay2" / layer.cache_id / "diff").is_dir():
                report.add(f"layer {layer.chain_id}: directory overlay2/{layer.cache_id} missing")
        refs = self.images.refs()
        for key, target in refs.items():
            if not self.images.exists(target):
                report.add(f"reference {key} points to missing image {target}", repair)
                if repair:
                    with contextlib.suppress(PybuildError):
                        self.images.untag(_reference.parse(key))
        for entry in os.scandir(self.images.db):
            if entry.name.startswith("."):
                continue
            try:
                self.images.get("sha256:" + entry.name)
            except (PybuildError, ValueError) as exc:
                report.add(f"image record {entry.name[:12]} is unreadable: {exc}")
        for image in self.images.walk():
            self._check_image(image, report, repair)
        entries = list(os.scandir(self.tmp))
        builds = self.abandoned_builds(entries)
        for name in builds:
            what = f"leftover of a killed build: tmp/{name}"
            secrets = _count_secrets(self.tmp / name)
            if secrets:
                what += f" ({secrets} secret file{'s' if secrets != 1 else ''} in plaintext)"
            report.add(what, repair)
        leftovers = [e.name for e in entries
                     if (e.name.endswith(".owner") or e.name.startswith("blob-"))
                     and not e.name.startswith(BUILD_SCRATCH_PREFIX) and is_abandoned(Path(e.path))]
        for name in leftovers:
            report.add(f"leftover from an interrupted operation: tmp/{name}", repair)
        if repair and (leftovers or builds):
            self.clean_abandoned()
        return report

    def _check_image(self, image: Image, report: CheckReport, repair: bool) -> None:
        name = image.short_id
        for desc in (image.manifest.config, *image.manifest.layers):
            if not self.blobs.exists(desc.digest):
                report.add(f"image {name}: blob {desc.digest} missing")
        for chain, diff_id, desc in zip(image.chain_ids, image.config.diff_ids, image.manifest.layers, strict=False):
            if self.layers.exists(chain):
                continue
            fixed = False
            if repair and self.blobs.exists(desc.digest):
                parent = _parent_chain(image.chain_ids, chain)
                with contextlib.suppress(PybuildError), self.blobs.open(desc.digest) as f:
                    self.layers.register(f, parent, expected_diff_id=diff_id)
                    fixed = True
            report.add(f"image {name}: layer {chain} missing", fixed)

    # ---- usage --------------------------------------------------------------------

    def disk_usage(self) -> dict[str, tuple[int, int, int]]:
        """kind -> (count, bytes, reclaimable bytes)."""
        images = list(self.images.walk())
        live_chains, live_blobs = self.live_set()
        layers = list(self.layers.walk())
        blob_sizes = {d: self.blobs.path(d).stat().st_size for d in self.blobs.walk()}
        tagged = set(self.images.refs().values())
        size_of = {layer.chain_id: layer.size for layer in layers}
        image_chains = {c for img in images for c in img.chain_ids}
        kept_chains = {c for img in images if img.manifest_digest in tagged for c in img.chain_ids}
        # as docker: what the images' layers hold unpacked, each layer once; untagged images' own reclaimable
        image_bytes = sum(size_of.get(c, 0) for c in image_chains)
        untagged = sum(size_of.get(c, 0) for c in image_chains - kept_chains)
        without_cache, _ = self.live_set(include_build_cache=False)
        records = list(self.build_cache.walk())
        cache_only = live_chains - without_cache
        # the build cache: its records' own layers and what RUN --mount=type=cache wrote
        cache_bytes = sum(layer.size for layer in layers if layer.chain_id in cache_only) + \
            tree_size(self.build_cache.root / "mounts")
        return {
            "Images": (len(images), image_bytes, untagged),
            "Build Cache": (len(records), cache_bytes, cache_bytes),
            "Layers": (len(layers), sum(layer.size for layer in layers),
                       sum(layer.size for layer in layers if layer.chain_id not in live_chains)),
            "Blobs": (len(blob_sizes), sum(blob_sizes.values()),
                      sum(s for d, s in blob_sizes.items() if d not in live_blobs)),
        }


def _parent_chain(chain_ids: list[str], chain: str) -> str | None:
    i = chain_ids.index(chain)
    return chain_ids[i - 1] if i else None


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PybuildError(f"invalid SOURCE_DATE_EPOCH {value!r}", "expected seconds since 1970") from None


def _epoch_iso(epoch: int) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fuseoverlay_name() -> str:
    from pybuild.linux import fuseoverlay

    return fuseoverlay.PROGRAM


def choose_overlay(root: Path, mount_program: str | None) -> str | None:
    """The overlay a new store at ``root`` uses: None for the kernel's, else the fuse-overlayfs to run.

    ``mount_program`` as for :meth:`Store.open`. Rootless, where the kernel
    refuses an overlay here (an upper dir on overlayfs: a store inside a
    container), fuse-overlayfs is taken when it can run; as root, the
    kernel's or nothing (its daemon's lifetime relies on the rootless pause process).
    """
    from pybuild.linux import fuseoverlay, userns

    if mount_program and not userns.rootless():
        raise UnsupportedFilesystem("overlay.mount_program is for rootless stores",
                                    "as root the kernel's overlay is used; leave the option out")
    if mount_program:
        if not os.access(mount_program, os.X_OK):
            raise UnsupportedFilesystem(f"overlay.mount_program {mount_program} is not an executable",
                                        "apt-get install fuse-overlayfs")
        check_filesystem(root, mount_program)
        return mount_program
    try:
        check_filesystem(root)
        return None
    except UnsupportedFilesystem as native:
        if mount_program == "" or not userns.rootless():
            raise
        why_not = fuseoverlay.usable()
        if why_not is not None:
            raise UnsupportedFilesystem(f"{native.message}, and fuse-overlayfs cannot stand in: {why_not}",
                                        native.hint) from None
        program = fuseoverlay.find()
        assert program is not None
        check_filesystem(root, program)
        return program


def check_filesystem(root: Path, mount_program: str | None = None) -> None:
    """Refuse a root that cannot hold overlay upper dirs: try a real overlay mount in it (with
    ``mount_program``, fuse-overlayfs's)."""
    if mount_program is not None:
        _check_fuse_overlay(root, mount_program)
        return
    from pybuild.linux import mount as _mount
    from pybuild.linux import userns

    f_type = _statfs_type(root)
    if f_type == OVERLAYFS_MAGIC:
        raise UnsupportedFilesystem(f"store root {root} is on overlayfs",
                                    "overlay upper dirs cannot live on overlayfs; use --root on ext4, xfs or btrfs")
    probe = root / f".fscheck-{os.getpid()}"
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (probe / sub).mkdir(parents=True, exist_ok=True)
        kind = "user" if userns.rootless() else "trusted"
        try:
            os.setxattr(probe / "upper", f"{kind}.pybuild.check", b"y")
        except OSError as exc:
            raise UnsupportedFilesystem(f"store root {root} does not support {kind} xattrs ({exc.strerror})",
                                        "overlay needs them for whiteouts; use --root on ext4, xfs or btrfs") from None
        try:
            _mount.mount_overlay(probe, ["lower"], "upper", "work", probe / "merged")
        except PybuildError as exc:
            raise UnsupportedFilesystem(f"store root {root} cannot hold overlay upper dirs ({exc.message})",
                                        "use --root on ext4, xfs or btrfs, as root") from None
        _mount.umount(probe / "merged")
    finally:
        remove_tree(probe)


def _check_fuse_overlay(root: Path, program: str) -> None:
    """A fuse-overlayfs mount of a probe in ``root`` that takes a write, never attached anywhere."""
    from pybuild.linux import fuseoverlay

    why_not = fuseoverlay.usable()
    if why_not is not None:
        raise UnsupportedFilesystem(f"fuse-overlayfs cannot be used: {why_not}")
    probe = root / f".fscheck-{os.getpid()}"
    previous = fuseoverlay.program()
    try:
        for sub in ("lower", "upper", "work"):
            (probe / sub).mkdir(parents=True, exist_ok=True)
        fuseoverlay.use(program)
        try:
            fd = fuseoverlay.detached_mount([str(probe / "lower")], str(probe / "upper"), str(probe / "work"))
            try:
                os.close(os.open("written", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=fd))
            finally:
                os.close(fd)
        except (PybuildError, OSError) as exc:
            detail = exc.message if isinstance(exc, PybuildError) else exc.strerror
            raise UnsupportedFilesystem(f"store root {root} cannot hold fuse-overlayfs upper dirs ({detail})",
                                        "use --root on ext4, xfs or btrfs") from None
        if not (probe / "upper" / "written").exists():
            raise UnsupportedFilesystem(f"fuse-overlayfs did not write into {probe / 'upper'}")
    finally:
        fuseoverlay.use(previous)
        remove_tree(probe)


def _statfs_type(path: Path) -> int:
    from pybuild.linux.libc import libc

    buf = ctypes.create_string_buffer(256)
    if libc.statfs(os.fsencode(path), buf) != 0:
        return 0
    return int(struct.unpack_from("l", buf.raw)[0])
