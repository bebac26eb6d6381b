"""OCI layer tars: write one from an overlay upper dir, apply one into a layer dir.

Writing (:func:`write_layer`) walks a directory in sorted, depth-first order
and streams a PAX tar through a compressor in one pass, computing both the
diff-id (sha256 of the tar) and the blob digest (sha256 of the compressed
bytes). Overlay whiteouts (char devices 0/0) become ``.wh.<name>`` files and
opaque directories (``trusted.overlay.opaque=y``) get a ``.wh..wh..opq``
entry, as the OCI image-spec and Docker's overlay2 driver do.

Applying (:func:`apply_layer`) treats the tar as hostile: every filesystem
change is made relative to directory file descriptors opened with
``O_NOFOLLOW``, so no entry can write through a symlink or outside the target
(see :class:`pybuild.linux.safefs.DirChain`). Whiteouts are turned back into overlay form.
The tar is parsed by :mod:`.tarformat` rather than with :mod:`tarfile`, which
keeps names as bytes (no encoding round trips), rejects what we do not support
and lets file data go from the decompressor to ``os.write`` without extra
copies; :mod:`.tarstream` moves and hashes the bytes and :mod:`.whiteouts`
converts deletions between tar and overlay form.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pybuild.errors import DigestMismatch, LayerError, LayerTooLarge, UnsafeLayerError, UsageError
from pybuild.linux import safefs as _safefs
from pybuild.linux.fsutil import ENTER, LEAVE, walk
from pybuild.records import record

from . import digest as _digest
from . import tarformat as _tf
from . import tarstream as _stream
from . import whiteouts as _wh
from .compression import Compression, open_compressor, open_decompressed
from .units import parse_size

__all__ = ["AppliedLayer", "LayerBlob", "apply_layer", "max_layer_size", "write_layer"]

# never recorded in a layer: labels of the host's security policy
_SKIP_XATTRS_ON_WRITE = ("security.selinux",)


@record(frozen=True)
class LayerBlob:
    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the bytes written to `out`
    size: int  # bytes written to `out`
    uncompressed_size: int
    media_type: str


@record(frozen=True)
class AppliedLayer:
    diff_id: str  # sha256 of the uncompressed stream, read to its end
    size: int  # uncompressed size in bytes
    entries: int = 0  # tar entries applied (metadata headers not counted)


# =========================================================================== writing


def _xattrs_of(target: bytes | int) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The xattrs to record for an entry (sorted) and whether it is an opaque dir.

    ``target`` is the entry's open descriptor, or a path that names it
    without following it (``WalkEntry.proc_path``).
    """
    out: list[tuple[bytes, bytes]] = []
    opaque = False
    markers = _wh.opaque_xattrs()
    for attr, value in _safefs.read_xattrs(target):
        if attr in markers:
            opaque = opaque or value == b"y"
        elif attr not in _SKIP_XATTRS_ON_WRITE and not os.fsencode(attr).startswith(_wh.OVERLAY_XATTR_PREFIXES):
            out.append((os.fsencode(attr), value))
    return out, opaque


def _has_marker_file(dir_fd: int) -> bool:
    """Whether a directory of a fuse-overlayfs upper dir holds its ``.wh..wh..opq`` opaque mark."""
    try:
        return stat.S_ISREG(os.stat(_wh.WHITEOUT_OPAQUE, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


Below = tuple[Path, list[str]]  # the overlay root and the lower dirs (nearest first) a layer dir was written over


def _walk_into(root: bytes, tw: _stream.TarWriter, epoch: int | None, live: bool = False,
               below: Below | None = None) -> None:
    """Archive the tree below ``root``: iteratively, through directory descriptors (fsutil.walk), so
    neither its depth nor a symlink swapped in while it is read (a live container's root) can make
    the tar hold something from outside it.

    With ``live`` the tree may change while it is read (a running container), as
    GNU tar allows it: an entry that vanishes or is replaced before its header is
    written is left out, and a file that shrinks is padded with zeros.

    fuse-overlayfs marks more than the kernel: every new directory opaque (an
    xattr and a ``.wh..wh..opq`` file), whiteouts of its own ``.wh.`` names.
    Given ``below``, its upper dir is written as the kernel's would be, so a
    layer's bytes do not depend on the overlay that made it: a whiteout or an
    opaque mark is kept only where the lower dirs hold something it hides.
    """
    links: dict[tuple[int, int], bytes] = {}
    marker_files = _wh.fuse_overlay()  # fuse-overlayfs may mark an opaque directory with a .wh..wh..opq file

    def hides(rel: bytes) -> bool:
        if below is None:
            return True
        from .lowerview import exists_below

        return exists_below(below[0], below[1], "/" + os.fsdecode(rel))
    open_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    rel = b""  # the entry being archived (an error names it): WalkEntry.rel is valid during its event only
    try:
        for event, entry in walk(root or b"/"):
            if event == LEAVE:
                continue
            name, rel, st = entry.name, entry.rel, entry.st
            mode = st.st_mode
            fmt = stat.S_IFMT(mode)
            perm = mode & 0o7777
            mtime = st.st_mtime_ns // 1_000_000_000
            if epoch is not None and mtime > epoch:
                mtime = epoch
            uid, gid = st.st_uid, st.st_gid
            reldir = rel[: len(rel) - len(name)]

            if _wh.is_overlay_whiteout(st):
                if marker_files and (name.startswith(_wh.WHITEOUT_PREFIX) or not hides(rel)):
                    continue  # fuse-overlayfs's own bookkeeping, or a whiteout of nothing
                # -> .wh.<name> (an empty regular file), as moby does
                tw.write(_tf.entry_header(_wh.tar_name(reldir, name), 0o600, uid, gid, 0, mtime, _tf.REGTYPE))
                continue
            if fmt == stat.S_IFSOCK:
                continue  # sockets cannot be archived (tar skips them too)
            if marker_files and name == _wh.WHITEOUT_OPAQUE and fmt == stat.S_IFREG:
                continue  # written with its directory

            if event == ENTER:
                xattrs, opaque = _xattrs_of(entry.fd)
                if marker_files:
                    opaque = (opaque or _has_marker_file(entry.fd)) and hides(rel)
                tw.write(_tf.entry_header(rel + b"/", perm, uid, gid, 0, mtime, _tf.DIRTYPE, xattrs=xattrs))
                if opaque:
                    tw.write(_tf.entry_header(rel + b"/" + _wh.WHITEOUT_OPAQUE, perm & 0o777, uid, gid, 0,
                                     mtime, _tf.REGTYPE))
                continue

            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = links.get(key)
                if first is not None:
                    tw.write(_tf.entry_header(rel, perm, uid, gid, 0, mtime, _tf.LNKTYPE, first))
                    continue
                links[key] = rel

            if fmt == stat.S_IFREG:
                try:
                    fd = os.open(name, open_flags, dir_fd=entry.parent_fd)
                except FileNotFoundError:
                    if live:
                        continue
                    raise
                try:
                    fst = os.fstat(fd)
                    if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
                        if live:
                            continue
                        raise LayerError(f"{_tf.show_name(rel)}: file changed while it was being read")
                    xattrs, _ = _xattrs_of(fd)
                    size = st.st_size
                    tw.write(_tf.entry_header(rel, perm, uid, gid, size, mtime, _tf.REGTYPE, xattrs=xattrs))
                    tw.copy_file(fd, size, rel, pad_short=live)
                finally:
                    os.close(fd)
                continue
            try:
                xattrs, _ = _xattrs_of(entry.proc_path)
                target = os.readlink(name, dir_fd=entry.parent_fd) if fmt == stat.S_IFLNK else b""
            except FileNotFoundError:
                if live:
                    continue
                raise
            if fmt == stat.S_IFLNK:
                tw.write(_tf.entry_header(rel, perm, uid, gid, 0, mtime, _tf.SYMTYPE, target, xattrs=xattrs))
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                typeflag = _tf.CHRTYPE if fmt == stat.S_IFCHR else _tf.BLKTYPE
                tw.write(_tf.entry_header(rel, perm, uid, gid, 0, mtime, typeflag, b"",
                                 os.major(st.st_rdev), os.minor(st.st_rdev), xattrs=xattrs))
            elif fmt == stat.S_IFIFO:
                tw.write(_tf.entry_header(rel, perm, uid, gid, 0, mtime, _tf.FIFOTYPE, xattrs=xattrs))
            else:
                raise LayerError(f"{_tf.show_name(rel)}: unsupported file type {fmt:o}")
    except OSError as exc:
        where = _tf.show_name(os.path.join(root, rel) if rel else root)
        raise LayerError(f"cannot archive {where}: {exc.strerror or exc}") from exc


def write_layer(
    src_dir: str | Path,
    out: BinaryIO,
    compression: Compression = Compression.GZIP,
    *,
    source_date_epoch: int | None = None,
    live: bool = False,
    below: Below | None = None,
) -> LayerBlob:
    """Write ``src_dir`` (an overlay upper dir or a layer ``diff/`` dir) as a layer tar.

    The same tree always gives the same bytes. With ``source_date_epoch``,
    mtimes later than it are clamped to it. ``out`` is written to, not closed.
    ``live``: the tree may change meanwhile; ``below``: the lower dirs of an
    upper dir (both: see :func:`_walk_into`).
    """
    root = os.fsencode(os.fspath(src_dir)).rstrip(b"/") or b"/"
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise LayerError(f"cannot archive {_tf.show_name(root)}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise LayerError(f"cannot archive {_tf.show_name(root)}: not a directory")
    if root == b"/":
        root = b""
    epoch = None if source_date_epoch is None else int(source_date_epoch)

    sink = _digest.HashingWriter(out)
    compressor = open_compressor(sink, compression)
    plain = compression is Compression.NONE
    tw = _stream.TarWriter(compressor, threaded=not plain, hash_tar=not plain)
    try:
        _walk_into(root or b"", tw, epoch, live, below)
        tw.write(bytes(2 * _tf.BLOCK))  # end-of-archive marker
        tw.finish()
    except BaseException:
        tw.abort()
        raise
    try:
        compressor.close()
        sink.flush()
    except OSError as exc:
        raise LayerError(f"cannot write layer: {exc.strerror or exc}") from exc
    diff_id = sink.digest() if plain else tw.digest()
    return LayerBlob(
        diff_id=diff_id,
        digest=sink.digest(),
        size=sink.size,
        uncompressed_size=tw.size,
        media_type=compression.media_type,
    )


# =========================================================================== applying

MAX_LAYER_SIZE_ENV = "PYBUILD_MAX_LAYER_SIZE"


def max_layer_size() -> int | None:
    """What a layer applied from a tar may expand to (``PYBUILD_MAX_LAYER_SIZE``); None (unset or 0): no limit."""
    raw = os.environ.get(MAX_LAYER_SIZE_ENV, "").strip()
    if not raw:
        return None
    try:
        value = parse_size(raw)
    except ValueError:
        raise UsageError(f"invalid {MAX_LAYER_SIZE_ENV} {raw!r}",
                         "a size such as 10g, 500m or a number of bytes; 0 for no limit") from None
    return value or None


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _clean(name: bytes, shown: bytes) -> tuple[bytes, ...]:
    """Path components of a tar name, relative to the layer root.

    Leading ``/`` are dropped (absolute names are read relative to the
    target, as Docker does); ``.`` and empty components are dropped; ``..``
    is resolved lexically and must never climb above the root.
    """
    if b"\0" in name:
        raise UnsafeLayerError(f'layer entry "{_tf.show_name(shown)}": name contains a NUL byte')
    inner = name.strip(b"/")
    if not inner:
        return ()
    framed = b"/" + inner + b"/"
    if b"//" not in framed and b"/./" not in framed and b"/../" not in framed:
        return tuple(inner.split(b"/"))  # the usual name, split at C speed (names of deep trees are long)
    parts: list[bytes] = []
    for comp in name.split(b"/"):
        if not comp or comp == b".":
            continue
        if comp == b"..":
            if not parts:
                raise UnsafeLayerError(f'layer entry "{_tf.show_name(shown)}": path escapes the layer')
            parts.pop()
            continue
        parts.append(comp)
    return tuple(parts)


_DIR_FLAGS = _safefs.DIR_FLAGS
_FILE_FLAGS = _safefs.NEW_FILE_FLAGS
_create = _safefs.create_replacing
_remove = _safefs.remove_at


@contextlib.contextmanager
def _entry_path(shown: bytes) -> Iterator[None]:
    """Word a directory that is not one, met on the way to layer entry ``shown``, as a layer error."""
    try:
        yield
    except _safefs.SymlinkInPath as exc:
        raise UnsafeLayerError(
            f'layer entry "{_tf.show_name(shown)}": path goes through symlink "{exc.filename}"') from None
    except NotADirectoryError as exc:
        raise LayerError(f'layer entry "{_tf.show_name(shown)}": "{exc.filename}" is not a directory') from None


class _Applier:
    def __init__(self, root_fd: int) -> None:
        self.dirs = _safefs.DirChain(root_fd)
        self.root_fd = root_fd
        self.is_root = os.geteuid() == 0
        # (entry name, mtime, mode to set at the end or None): directory metadata that
        # must wait until nothing more is written into the directory. The name, not its
        # components, is kept: what a deep tree's entries cost then stays the size of its tar.
        self.dir_times: list[tuple[bytes, int, int | None]] = []

    def parent(self, parts: tuple[bytes, ...], shown: bytes, create: bool = True) -> int:
        """The descriptor of directory ``parts`` (made when missing with ``create``) for entry ``shown``."""
        with _entry_path(shown):
            return self.dirs.parent(parts, create)

    # -- metadata helpers
    def _chown(self, target: int | bytes, uid: int, gid: int, dir_fd: int | None) -> None:
        try:
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        except PermissionError:
            if self.is_root:
                raise

    def _xattrs(self, target: int | bytes, xattrs: list[tuple[bytes, bytes]]) -> None:
        # never let a tar forge overlay whiteouts / redirects
        _safefs.write_xattrs(target, [(k, v) for k, v in xattrs
                                      if k and b"\0" not in k and not k.startswith(_wh.OVERLAY_XATTR_PREFIXES)])

    # -- entries
    def regular(self, pfd: int, leaf: bytes, rd: _stream.TarReader, size: int, e: _tf.TarEntry) -> None:
        fd = _create(lambda: os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd), pfd, leaf)
        try:
            if size:
                rd.copy_to(fd, size)
            self._chown(fd, e.uid, e.gid, None)
            os.fchmod(fd, e.mode)
            if e.xattrs:
                self._xattrs(fd, e.xattrs)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def directory(self, pfd: int, leaf: bytes, e: _tf.TarEntry) -> None:
        try:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                _remove(pfd, leaf)
                os.mkdir(leaf, 0o700, dir_fd=pfd)
        fd = os.open(leaf, _DIR_FLAGS, dir_fd=pfd)
        # Without root, a read-only directory could not be filled: keep it
        # writable for us until the end.
        late_mode = None if self.is_root or e.mode & 0o700 == 0o700 else e.mode
        try:
            self._chown(fd, e.uid, e.gid, None)
            os.fchmod(fd, e.mode if late_mode is None else e.mode | 0o700)
            if e.xattrs:
                self._xattrs(fd, e.xattrs)
        except BaseException:
            os.close(fd)
            raise
        # The next entries are most likely inside this directory: keep its fd.
        self.dirs.push(leaf, fd)
        self.dir_times.append((e.name, e.mtime_ns, late_mode))

    def symlink(self, pfd: int, leaf: bytes, e: _tf.TarEntry) -> None:
        if not e.linkname or b"\0" in e.linkname:
            raise LayerError(f'layer entry "{_tf.show_name(e.name)}": invalid symlink target')
        _create(lambda: os.symlink(e.linkname, leaf, dir_fd=pfd), pfd, leaf)
        self._chown(leaf, e.uid, e.gid, pfd)
        if e.xattrs:
            self._xattrs(b"/proc/self/fd/%d/%s" % (pfd, leaf), e.xattrs)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def hardlink(self, parts: tuple[bytes, ...], pfd: int, leaf: bytes, e: _tf.TarEntry) -> None:
        target = _clean(e.linkname, e.name)
        if not target:
            raise UnsafeLayerError(f'layer entry "{_tf.show_name(e.name)}": hardlink to the layer root')
        if target == parts:
            return
        try:
            with _entry_path(e.name):
                src_fd = _safefs.open_dir_path(self.root_fd, target[:-1])
        except FileNotFoundError:
            raise UnsafeLayerError(
                f'layer entry "{_tf.show_name(e.name)}": hardlink target "{_tf.show_name(e.linkname)}" '
                "does not exist in the layer"
            ) from None
        try:
            src = target[-1]

            def link() -> None:
                os.link(src, leaf, src_dir_fd=src_fd, dst_dir_fd=pfd, follow_symlinks=False)

            try:
                _create(link, pfd, leaf)
            except FileNotFoundError:
                raise UnsafeLayerError(
                    f'layer entry "{_tf.show_name(e.name)}": hardlink target "{_tf.show_name(e.linkname)}" '
                    "does not exist in the layer"
                ) from None
        finally:
            os.close(src_fd)

    def special(self, pfd: int, leaf: bytes, e: _tf.TarEntry) -> None:
        if e.typeflag == _tf.FIFOTYPE:
            fmt = stat.S_IFIFO
            dev = 0
        else:
            if not self.is_root:
                return  # device nodes need root: skipped, as unprivileged tar does
            fmt = stat.S_IFCHR if e.typeflag == _tf.CHRTYPE else stat.S_IFBLK
            dev = os.makedev(e.devmajor, e.devminor)
        try:
            _create(lambda: os.mknod(leaf, fmt | 0o600, dev, dir_fd=pfd), pfd, leaf)
        except PermissionError:
            if fmt != stat.S_IFIFO:
                return  # e.g. root in a user namespace without CAP_MKNOD
            raise
        self._chown(leaf, e.uid, e.gid, pfd)
        # Just created by us as a non-symlink: chmod by name is safe here.
        os.chmod(leaf, e.mode, dir_fd=pfd)
        if e.xattrs:
            self._xattrs(b"/proc/self/fd/%d/%s" % (pfd, leaf), e.xattrs)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def whiteout(self, pfd: int, victim: bytes, e: _tf.TarEntry) -> None:
        try:
            _create(lambda: _wh.make_overlay_whiteout(pfd, victim), pfd, victim)
        except PermissionError as exc:
            raise LayerError(
                f'layer entry "{_tf.show_name(e.name)}": cannot create an overlay whiteout',
                "creating whiteouts needs root (CAP_MKNOD)",
            ) from exc
        self._chown(victim, e.uid, e.gid, pfd)
        os.utime(victim, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def opaque(self, pfd: int, e: _tf.TarEntry) -> None:
        try:
            _wh.mark_opaque(pfd)
        except OSError as exc:
            raise LayerError(
                f'layer entry "{_tf.show_name(e.name)}": cannot mark the directory opaque: {exc.strerror}',
                "setting trusted.* xattrs needs root (CAP_SYS_ADMIN)",
            ) from exc

    def finish(self) -> None:
        """Set directory mtimes (and late modes), children before their parents."""
        for name, mtime_ns, late_mode in reversed(self.dir_times):
            parts = _clean(name, name)
            try:
                pfd = self.parent(parts[:-1], name, create=False)
                if late_mode is None:
                    os.utime(parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=pfd,
                             follow_symlinks=False)
                    continue
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=pfd)
                try:
                    os.fchmod(fd, late_mode)
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
            except (OSError, LayerError):
                continue  # replaced or removed by a later entry
        self.dirs.close()


def _apply_entry(ap: _Applier, rd: _stream.TarReader, e: _tf.TarEntry, size: int, whiteouts: bool = True) -> int:
    """Apply one entry; returns how many data bytes it consumed."""
    parts = _clean(e.name, e.name)
    if not parts:
        return 0  # the root itself ("./"): left as it is, like Docker
    parent, leaf = parts[:-1], parts[-1]

    kind, victim = _wh.classify(leaf) if whiteouts else (None, b"")
    if kind is not None:
        if kind == _wh.OPAQUE:
            ap.opaque(ap.parent(parent, e.name), e)
        elif kind == _wh.META:
            pass  # other AUFS metadata (.wh..wh.plnk etc.) is ignored, as Docker does
        else:
            if victim in (b"", b".", b".."):
                raise UnsafeLayerError(f'layer entry "{_tf.show_name(e.name)}": invalid whiteout name')
            ap.whiteout(ap.parent(parent, e.name), victim, e)
        return 0

    t = e.typeflag
    pfd = ap.parent(parent, e.name)
    if t == _tf.REGTYPE:
        ap.regular(pfd, leaf, rd, size, e)
        return size
    if t == _tf.DIRTYPE:
        ap.directory(pfd, leaf, e)
    elif t == _tf.SYMTYPE:
        ap.symlink(pfd, leaf, e)
    elif t == _tf.LNKTYPE:
        ap.hardlink(parts, pfd, leaf, e)
    elif t in (_tf.CHRTYPE, _tf.BLKTYPE, _tf.FIFOTYPE):
        ap.special(pfd, leaf, e)
    else:
        raise LayerError(
            f'layer entry "{_tf.show_name(e.name)}": unsupported tar entry type {t.decode("latin-1")!r}')
    return 0


def apply_layer(
    stream: BinaryIO,
    target_dir: str | Path,
    *,
    expected_diff_id: str | None = None,
    whiteouts: bool = True,
    max_size: int | None = None,
) -> AppliedLayer:
    """Extract a (possibly compressed) layer tar into ``target_dir``, in overlay form.

    ``.wh.<name>`` entries become whiteouts (char device 0/0) and
    ``.wh..wh..opq`` marks its directory opaque. Raises UnsafeLayerError for
    entries that would escape the target, LayerError for malformed input and
    DigestMismatch when the tar does not hash to ``expected_diff_id``. On any
    error the target is left partly written: the caller discards it.

    With ``whiteouts=False`` (a plain archive: ADD, a tar build context) no
    name is special: ``.wh.*`` entries are created as the files they are.
    ``trusted.overlay.*`` xattrs are refused either way.

    With ``max_size`` a tar stream (the bytes the decompressor yields) longer
    than that is refused with LayerTooLarge before more of it is written.
    """
    if expected_diff_id is not None:
        _digest.validate(expected_diff_id)
    try:
        root_fd = os.open(os.fspath(target_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LayerError(f"cannot apply layer into {target_dir}: {exc.strerror or exc}") from exc
    reader = open_decompressed(stream)
    plain = getattr(reader, "compression", None) is Compression.NONE
    src = _stream.Prefetch(reader, hash_in_thread=plain, limit=max_size)
    ap = _Applier(root_fd)
    entries = 0
    try:
        rd = _stream.TarReader(src)
        for e, size in _tf.read_entries(rd):
            try:
                used = _apply_entry(ap, rd, e, size, whiteouts)
            except OSError as exc:
                raise LayerError(
                    f'layer entry "{_tf.show_name(e.name)}": {exc.strerror or exc}') from exc
            if used < size:
                rd.skip(size - used)
            entries += 1
        rd.drain()  # hash everything, including what follows the end marker
        ap.finish()
    except LayerTooLarge:
        assert max_size is not None
        shown = f"layer {expected_diff_id}" if expected_diff_id else "the layer"
        raise LayerTooLarge(f"{shown} is larger than {MAX_LAYER_SIZE_ENV} ({_human(max_size)}) uncompressed",
                            "refused, nothing of it kept; raise the limit if the layer is genuine") from None
    finally:
        ap.dirs.close()
        src.close()
        os.close(root_fd)
    diff_id = src.digest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DigestMismatch(
            f"layer diff-id mismatch: expected {expected_diff_id}, got {diff_id}")
    return AppliedLayer(diff_id=diff_id, size=src.size, entries=entries)
