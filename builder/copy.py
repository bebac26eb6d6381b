"""Performing COPY and ADD into a destination root directory.

The destination root is the filesystem of the step being built (normally the
overlay-merged rootfs, so writes copy up). Every destination path is resolved
with :func:`~pybuild.runtime.rootfs.secure_join`: symlinks already in the
image are followed *inside* the root (``/app -> /etc`` lands in the root's
``etc``, ``/x -> ../../..`` at the root itself), never outside it. Below the
resolved destination nothing is followed: every directory is opened with
``O_NOFOLLOW`` relative to its parent's descriptor, so a symlink met where a
directory is needed is an error, not a way out.

The rules are Docker's (BuildKit's fileop copy, with the classic builder's
"several sources need a directory" check):

* ``dest`` is relative to WORKDIR; a trailing ``/`` (or ``.``) makes it a
  directory. Missing directories on the way are created 0755, owned by the
  ``--chown`` user (root otherwise); existing ones keep their metadata.
* several sources (after wildcard expansion) need a directory destination.
* a directory source copies its *contents*; subdirectories merge into existing
  ones (taking the source's metadata); a file over an existing directory, or
  a directory over an existing file, is an error.
* a file source goes to ``dest`` itself, or into it when ``dest`` is (or ends
  like) a directory; the top-level source is followed when it is a symlink
  (and keeps the name it was given), symlinks below are copied as symlinks.
* ``--parents`` keeps each source's path below the context root, or below a
  ``/./`` pivot; ``**`` matches any number of directories there.
* ``--exclude`` patterns (.dockerignore syntax) apply relative to each source,
  and to wildcard matches themselves.
* modes are kept unless ``--chmod`` (octal, or symbolic like ``u+x,g-w``);
  owners are 0:0 unless ``--chown user[:group]`` (names looked up in the
  destination's /etc/passwd and /etc/group) or, for ``COPY --from``,
  ``preserve_owner``; mtimes are kept (``epoch`` overrides them); xattrs are
  kept except ``security.selinux`` and overlay-private ones; hardlinks among
  the copied files stay hardlinks.

ADD adds: a local tar (plain, gzip, bzip2, xz, zstd: recognised by content)
is extracted into ``dest`` with the store's hostile-tar-safe applier, without
whiteout conversion (ownership and modes come from the archive, as BuildKit
does); an http(s) URL is streamed to a temp file, verified against
``--checksum``, and saved mode 0600 (unless ``--chmod``) under the last
component of the URL path, with its mtime from ``Last-Modified``; URL
archives are not extracted. Heredocs (``COPY <<EOF /dest``) are written as
files named after their delimiter, mode 0644.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import os
import posixpath
import re
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pybuild.errors import BuildError, ContainerError, LayerError, PybuildError
from pybuild.linux import safefs as _safefs
from pybuild.records import field, record
from pybuild.runtime import users as _users
from pybuild.runtime.rootfs import secure_join
from pybuild.store import tarformat
from pybuild.store.compression import open_decompressed
from pybuild.store.layertar import apply_layer

from .checksum import xattr_items
from .context import Entry, Selection, SourceTree, select_sources, walk_selection
from .dockerignore import Matcher, go_clean
from .instructions import Add, Copy
from .lexer import Heredoc

__all__ = [
    "ChmodSpec",
    "CopySummary",
    "copy_instruction",
    "copy_sources",
    "heredoc_sources",
    "is_archive",
    "resolve_chown",
    "resolve_dest",
]

_DIR_FLAGS = _safefs.DIR_FLAGS
_NEW_FILE = _safefs.NEW_FILE_FLAGS
_CHUNK = 1 << 20
HTTP_TIMEOUT = 60.0


@record
class CopySummary:
    """What one COPY/ADD wrote, for the build output."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    other: int = 0
    bytes: int = 0
    archives: int = 0  # ADD: local archives extracted
    extracted: int = 0  # ADD: entries written from those archives
    downloads: int = 0  # ADD: URLs fetched

    def __str__(self) -> str:
        parts = [f"{self.files} file{'s' if self.files != 1 else ''}"]
        if self.dirs:
            parts.append(f"{self.dirs} dir{'s' if self.dirs != 1 else ''}")
        if self.symlinks:
            parts.append(f"{self.symlinks} symlink{'s' if self.symlinks != 1 else ''}")
        if self.archives:
            parts.append(f"{self.archives} archive{'s' if self.archives != 1 else ''} "
                         f"({self.extracted} entries)")
        parts.append(_human(self.bytes))
        return ", ".join(parts)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- --chmod

_NON_OCTAL = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)\Z")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o0007}


@record(frozen=True)
class ChmodSpec:
    """A ``--chmod`` value: octal (``0755``) or chmod(1) symbolic (``u+x,g-w``, ``u=rwX,go=rX``, ``g=u``)."""

    text: str
    octal: int | None = None
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ChmodSpec:
        if text.isdigit():
            if not re.fullmatch(r"[0-7]+", text) or int(text, 8) > 0o7777:
                raise BuildError(_NON_OCTAL.format(text))
            return cls(text, octal=int(text, 8))
        clauses = []
        for clause in text.split(","):
            m = _CLAUSE.match(clause)
            if not m:
                raise BuildError(f"invalid chmod parameter: {text!r}",
                                 "use octal (0755) or chmod(1) symbolic notation (u+x,g-w)")
            actions = tuple((a.group(1), a.group(2)) for a in _ACTION.finditer(m.group(2)))
            clauses.append((m.group(1), actions))
        return cls(text, clauses=tuple(clauses))

    def apply(self, st_mode: int) -> int:
        """The permission bits (07777) for an item whose current mode is ``st_mode``."""
        if self.octal is not None:
            return self.octal
        original = stat.S_IMODE(st_mode)
        is_dir = stat.S_ISDIR(st_mode)
        mode = original
        for who_text, actions in self.clauses:
            who = set(who_text.replace("a", "ugo")) or set("ugo")
            explicit = bool(who_text)
            mask = 0
            for w in who:
                mask |= _WHO_BITS[w]
            for op, perms in actions:
                bits = 0
                if perms in ("u", "g", "o"):
                    shift = {"u": 6, "g": 3, "o": 0}[perms]
                    triple = (mode >> shift) & 0o7
                    bits = (triple << 6 | triple << 3 | triple) & mask & 0o777
                else:
                    for p in perms:
                        if p == "r":
                            bits |= 0o444
                        elif p == "w":
                            bits |= 0o222
                        elif p == "x":
                            bits |= 0o111
                        elif p == "X":
                            if is_dir or (mode | original) & 0o111:
                                bits |= 0o111
                        elif p == "s":
                            if not explicit or who - {"o"}:
                                bits |= 0o6000
                        elif p == "t" and (not explicit or who - {"o"}):
                            bits |= 0o1000
                    sticky = bits & 0o1000
                    bits = (bits & mask) | sticky
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    clear = mask | (0o1000 if not explicit or "o" in who else 0)
                    mode = (mode & ~clear) | bits
        return mode & 0o7777


# ---------------------------------------------------------------------------- --chown


def resolve_chown(spec: str, dest_root: str | os.PathLike[str]) -> tuple[int, int]:
    """``--chown user[:group]`` as (uid, gid), names looked up in ``dest_root``'s passwd/group files.

    A numeric user alone gives that id for both (BuildKit); a name alone
    takes the passwd entry's group; an unknown name is a BuildError.
    """
    user, sep, group = spec.partition(":")
    numeric = re.compile(r"[0-9]+")
    if sep and not group:
        group = ""
    if not user:
        user = "0"
    if numeric.fullmatch(user) and not group:
        uid = _check_id(user, "user")
        return uid, uid
    if numeric.fullmatch(user) and numeric.fullmatch(group):
        return _check_id(user, "user"), _check_id(group, "group")
    root = os.fspath(dest_root)
    try:
        passwd = _users.read_bounded(secure_join(root, "/etc/passwd"))
        groups = _users.read_bounded(secure_join(root, "/etc/group")) if group else None
        found = _users.resolve(f"{user}:{group}" if group else user, passwd, groups)
    except ContainerError as exc:
        raise BuildError(exc.message, exc.hint) from None
    return found.uid, found.gid


def _check_id(value: str, what: str) -> int:
    number = int(value)
    if number > _users.MAX_ID:
        raise BuildError(f"invalid {what} {value!r} in --chown: ids must be in range 0-{_users.MAX_ID}")
    return number


# ---------------------------------------------------------------------------- destination


def resolve_dest(dest: str, workdir: str = "/") -> tuple[str, bool]:
    """The destination as a clean absolute path, and whether it names a directory (trailing ``/``, ``.``)."""
    is_dir = dest in ("", ".") or dest.endswith("/")
    path = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    return go_clean("/" + path), is_dir


def is_url(src: str) -> bool:
    """Whether an ADD source is fetched over HTTP(S) rather than read from the context."""
    return src.startswith(("http://", "https://"))


def _url_name(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rstrip("/")
    base = path.rsplit("/", 1)[-1] if path else ""
    return base if base not in ("", ".", "..") else "__unnamed__"


# ---------------------------------------------------------------------------- archives


def read_head(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes from the start of ``stream`` (fewer only at its end)."""
    head = b""
    while len(head) < size:
        chunk = stream.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


def tar_header_ok(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header (its checksum, signed or unsigned, and size field check out)."""
    if len(block) != 512 or block == bytes(512):
        return False
    if not tarformat.checksum_ok(block):
        return False
    size = block[124:136]
    if size[0] & 0x80:
        return True  # base-256
    text = size.split(b"\0", 1)[0].strip(b" ")
    return not text or re.fullmatch(rb"[0-7]+", text) is not None


def is_archive(path: str) -> bool:
    """Whether ``path`` is a regular file holding a tar (plain, gzip, bzip2, xz or zstd), by content."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(os.dup(fd), "rb") as raw:
            try:
                block = read_head(open_decompressed(raw), 512)
            except (PybuildError, OSError, EOFError, ValueError):
                return False
        return tar_header_ok(block)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- the writer


def _open_dir(parent_fd: int, name: str, shown: str) -> int:
    try:
        return _safefs.open_dir_at(parent_fd, name)
    except NotADirectoryError:  # SymlinkInPath included
        raise BuildError(f"cannot copy to non-directory: {shown}") from None


def _copy_data(src_fd: int, dst_fd: int) -> int:
    """Copy ``src_fd`` to its end into ``dst_fd``; returns the byte count."""
    total = 0
    method = "copy_file_range"
    while True:
        try:
            if method == "copy_file_range":
                n = os.copy_file_range(src_fd, dst_fd, _CHUNK * 16)
            elif method == "sendfile":
                n = os.sendfile(dst_fd, src_fd, None, _CHUNK * 16)
            else:
                data = os.read(src_fd, _CHUNK)
                n = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(dst_fd, view):]
        except OSError as exc:
            if method != "read" and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                                  errno.ENOTSUP, errno.EBADF, errno.EPERM):
                method = "sendfile" if method == "copy_file_range" else "read"
                continue
            raise
        if n == 0:
            return total
        total += n


@record
class _Options:
    dest_root: str
    owner: tuple[int, int] | None = None  # --chown
    chmod: ChmodSpec | None = None
    preserve_owner: bool = False
    epoch: int | None = None  # SOURCE_DATE_EPOCH: every copied mtime
    keyword: str = "COPY"


@record
class _Writer:
    """Writes entries under the destination root, keeping hardlinks and deferring directory metadata."""

    opts: _Options
    summary: CopySummary = field(default_factory=CopySummary)
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # (dev, ino) -> host path written

    # -- directories on the destination path

    def ensure_dir(self, abs_path: str) -> str:
        """Create ``abs_path`` (inside the root, symlinks followed inside it) like ``mkdir -p``; its host path."""
        root = self.opts.dest_root
        host = str(secure_join(root, abs_path))
        rel = os.path.relpath(host, root)
        fd = os.open(root, _DIR_FLAGS)
        try:
            shown = ""
            for comp in ([] if rel == "." else rel.split("/")):
                shown += "/" + comp
                try:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    created = True
                except FileExistsError:
                    created = False
                nfd = _open_dir(fd, comp, shown)
                os.close(fd)
                fd = nfd
                if created:
                    os.fchmod(fd, 0o755)
                    if self.opts.owner is not None:
                        os.fchown(fd, *self.opts.owner)
                    if self.opts.epoch is not None:
                        os.utime(fd, ns=(self.opts.epoch * 10**9,) * 2)
            real = os.readlink(f"/proc/self/fd/{fd}")
            if real != root and not real.startswith(root.rstrip("/") + "/"):
                raise BuildError(f"destination {abs_path} resolves outside the root filesystem")
        finally:
            os.close(fd)
        return host

    # -- metadata

    def _owner(self, st: os.stat_result) -> tuple[int, int]:
        if self.opts.owner is not None:
            return self.opts.owner
        if self.opts.preserve_owner:
            return st.st_uid, st.st_gid
        return 0, 0

    def _perm(self, st: os.stat_result) -> int:
        if self.opts.chmod is not None:
            return self.opts.chmod.apply(st.st_mode)
        return stat.S_IMODE(st.st_mode)

    def _times(self, st: os.stat_result) -> tuple[int, int]:
        if self.opts.epoch is not None:
            return self.opts.epoch * 10**9, self.opts.epoch * 10**9
        return st.st_atime_ns, st.st_mtime_ns

    _set_xattrs = staticmethod(_safefs.write_xattrs)

    def apply_meta_fd(self, fd: int, st: os.stat_result, src_host: str | None) -> None:
        os.fchown(fd, *self._owner(st))
        os.fchmod(fd, self._perm(st))
        if src_host is not None:
            self._set_xattrs(fd, xattr_items(src_host))
        os.utime(fd, ns=self._times(st))

    # -- leaves

    def _clear(self, pfd: int, leaf: str, shown: str) -> None:
        """Make room for a non-directory: refuse to replace a directory, remove anything else."""
        try:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise BuildError(f"cannot replace to directory {shown} with file")
        os.unlink(leaf, dir_fd=pfd)

    def write_entry(self, pfd: int, leaf: str, host_of_parent: str, entry: Entry, shown: str) -> None:
        """Copy one non-directory entry to ``leaf`` in the directory ``pfd``."""
        st = entry.st
        mode = st.st_mode
        dst_host = os.path.join(host_of_parent, leaf)
        self._clear(pfd, leaf, shown)
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                os.link(first, leaf, dst_dir_fd=pfd, follow_symlinks=False)
                self.summary.files += 1
                return
            src_fd = os.open(entry.host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(os.fstat(src_fd).st_mode):
                    raise BuildError(f"{entry.host} changed while it was copied")
                fd = os.open(leaf, _NEW_FILE, 0o600, dir_fd=pfd)
                try:
                    self.summary.bytes += _copy_data(src_fd, fd)
                    self.apply_meta_fd(fd, st, entry.host)
                finally:
                    os.close(fd)
            finally:
                os.close(src_fd)
            if st.st_nlink > 1:
                self.links[key] = dst_host
            self.summary.files += 1
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.host), leaf, dir_fd=pfd)
            os.chown(leaf, *self._owner(st), dir_fd=pfd, follow_symlinks=False)
            self._set_xattrs(f"/proc/self/fd/{pfd}/{leaf}", xattr_items(entry.host))
            os.utime(leaf, ns=self._times(st), dir_fd=pfd, follow_symlinks=False)
            self.summary.symlinks += 1
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            try:
                os.mknod(leaf, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=pfd)
            except PermissionError:
                if stat.S_ISFIFO(mode):
                    raise
                return  # device nodes need CAP_MKNOD: skipped, as an unprivileged copy would
            fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                path = f"/proc/self/fd/{fd}"
                os.chown(path, *self._owner(st))
                os.chmod(path, self._perm(st))
                self._set_xattrs(path, xattr_items(entry.host))
                os.utime(path, ns=self._times(st))
            finally:
                os.close(fd)
            self.summary.other += 1
        # sockets cannot be copied: skipped

    def write_bytes(self, pfd: int, leaf: str, data: bytes, mode: int, mtime_ns: int, shown: str) -> None:
        """A file made from memory (a heredoc)."""
        self._clear(pfd, leaf, shown)
        fd = os.open(leaf, _NEW_FILE, 0o600, dir_fd=pfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fake = os.stat_result((stat.S_IFREG | mode, 0, 0, 1, 0, 0, len(data), 0, 0, 0))
            os.fchown(fd, *(self.opts.owner or (0, 0)))
            os.fchmod(fd, self._perm(fake))
            t = self.opts.epoch * 10**9 if self.opts.epoch is not None else mtime_ns
            os.utime(fd, ns=(t, t))
        finally:
            os.close(fd)
        self.summary.files += 1
        self.summary.bytes += len(data)

    # -- trees

    def copy_tree(self, entries: list[Entry], target_host: str, shown_base: str) -> None:
        """Copy a directory selection's children into the existing directory ``target_host``.

        ``entries[0]`` is the source directory itself: its metadata is not
        copied (the destination directory keeps its own, or got 0755 when
        it was created), as BuildKit copies a directory's contents only.
        """
        root_fd = os.open(target_host, _DIR_FLAGS)
        chain: list[tuple[str, int]] = []  # open directories below root_fd, outermost first
        deferred: list[tuple[tuple[str, ...], Entry]] = []
        try:
            for entry in entries[1:]:
                parts = tuple(entry.rel.split("/"))
                parent, leaf = parts[:-1], parts[-1]
                common = 0
                while common < min(len(chain), len(parent)) and chain[common][0] == parent[common]:
                    common += 1
                while len(chain) > common:
                    os.close(chain.pop()[1])
                for comp in parent[common:]:
                    fd = chain[-1][1] if chain else root_fd
                    shown = posixpath.join(shown_base, *[c for c, _ in chain], comp)
                    chain.append((comp, _open_dir(fd, comp, shown)))
                pfd = chain[-1][1] if chain else root_fd
                shown = posixpath.join(shown_base, *parts)
                if entry.is_dir:
                    try:
                        os.mkdir(leaf, 0o700, dir_fd=pfd)
                    except FileExistsError:
                        st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
                        if not stat.S_ISDIR(st.st_mode):
                            raise BuildError(f"cannot copy to non-directory: {shown}") from None
                    deferred.append((parts, entry))
                    self.summary.dirs += 1
                else:
                    self.write_entry(pfd, leaf, os.path.join(target_host, *parent), entry, shown)
            while chain:
                os.close(chain.pop()[1])
            # Directory metadata last (children first), so writing into them cannot disturb it.
            for parts, entry in reversed(deferred):
                fd = root_fd
                opened: list[int] = []
                try:
                    for comp in parts:
                        fd = _open_dir(fd, comp, posixpath.join(shown_base, *parts))
                        opened.append(fd)
                    self.apply_meta_fd(fd, entry.st, entry.host)
                finally:
                    for ofd in opened:
                        os.close(ofd)
        finally:
            while chain:
                os.close(chain.pop()[1])
            os.close(root_fd)

    def file_target(self, dest_abs: str, dest_is_dir: bool, name: str) -> tuple[str, str, str]:
        """Where a non-directory source named ``name`` goes: (parent host dir, leaf, shown path)."""
        if dest_is_dir:
            parent = self.ensure_dir(dest_abs)
            return parent, name, posixpath.join(dest_abs, name)
        host = str(secure_join(self.opts.dest_root, dest_abs))
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return self.ensure_dir(dest_abs), name, posixpath.join(dest_abs, name)
        rel = os.path.relpath(host, self.opts.dest_root)
        if rel == ".":
            raise BuildError(f"cannot copy to {dest_abs}: it is the root directory")
        parent_abs = "/" + posixpath.dirname(rel)
        return self.ensure_dir(parent_abs), posixpath.basename(rel), dest_abs

    def write_at(self, parent_host: str, leaf: str, entry: Entry, shown: str) -> None:
        """:meth:`write_entry` into the directory ``parent_host`` (a path :meth:`ensure_dir` returned)."""
        fd = os.open(parent_host, _DIR_FLAGS)
        try:
            self.write_entry(fd, leaf, parent_host, entry, shown)
        finally:
            os.close(fd)

    def bytes_at(self, parent_host: str, leaf: str, data: bytes, mode: int, mtime_ns: int, shown: str) -> None:
        fd = os.open(parent_host, _DIR_FLAGS)
        try:
            self.write_bytes(fd, leaf, data, mode, mtime_ns, shown)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------- ADD from URLs


@record(frozen=True)
class Download:
    """A URL fetched for ADD: the temp file holding it, its Last-Modified (ns) and its sha256 digest."""

    path: str
    mtime: int | None
    digest: str


def download(url: str, scratch_dir: str | None, checksum: str | None = None, session: Any = None,
             timeout: float = HTTP_TIMEOUT) -> Download:
    """Stream ``url`` to a temp file in ``scratch_dir`` (the caller removes it), checked against ``checksum``."""
    import requests

    own = session is None
    sess = requests.Session() if own else session
    fd, tmp = tempfile.mkstemp(prefix="add-", dir=scratch_dir)
    try:
        try:
            with sess.get(url, stream=True, timeout=timeout, allow_redirects=True,
                          headers={"Accept-Encoding": "identity", "User-Agent": "pybuild"}) as resp:
                if resp.status_code >= 400:
                    raise BuildError(f"ADD failed: GET {url}: invalid response status {resp.status_code} "
                                     f"{resp.reason}")
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as f:
                    fd = -1
                    for chunk in resp.iter_content(_CHUNK):
                        h.update(chunk)
                        f.write(chunk)
                last_modified = resp.headers.get("Last-Modified")
        except requests.RequestException as exc:
            raise BuildError(f"ADD failed: GET {url}: {exc}") from None
        actual = "sha256:" + h.hexdigest()
        if checksum is not None and actual != checksum:
            raise BuildError(f"ADD failed: digest mismatch for {url}: expected {checksum}, got {actual}")
        mtime: int | None = None
        if last_modified:
            try:
                mtime = int(email.utils.parsedate_to_datetime(last_modified).timestamp()) * 10**9
            except (TypeError, ValueError, IndexError, OverflowError):
                mtime = None
        return Download(tmp, mtime, actual)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if own:
            sess.close()


# ---------------------------------------------------------------------------- the instruction


def copy_sources(
    dest_root: str | os.PathLike[str],
    sources: Sequence[str],
    dest: str,
    *,
    tree: SourceTree | None = None,
    workdir: str = "/",
    heredocs: Sequence[tuple[str, str]] = (),
    chown: str | None = None,
    chmod: str | None = None,
    excludes: Sequence[str] = (),
    parents: bool = False,
    add: bool = False,
    checksum: str | None = None,
    preserve_owner: bool = False,
    epoch: int | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
    session: Any = None,
    http_timeout: float = HTTP_TIMEOUT,
    downloaded: Mapping[str, Download] | None = None,
) -> CopySummary:
    """Perform ``COPY``/``ADD`` (``add=True``) of ``sources`` (and ``heredocs``: (name, content)) to ``dest``.

    ``tree`` is where sources are read from (the build context, or a stage's
    rootfs for ``--from`` with ``preserve_owner=True``). URLs in
    ``downloaded`` were fetched already (to compute the cache key): they are
    used, not fetched again, and stay the caller's to remove. See the module
    doc for the rules.
    """
    keyword = "ADD" if add else "COPY"
    root = os.path.realpath(os.fspath(dest_root))
    if not os.path.isdir(root):
        raise BuildError(f"{keyword} failed: destination root {dest_root} is not a directory")
    dest_abs, dest_is_dir = resolve_dest(dest, workdir)
    urls = [s for s in sources if is_url(s)]
    if urls and not add:
        raise BuildError("source can't be a URL for COPY")
    if checksum is not None:
        if not add:
            raise BuildError("checksum can't be specified for COPY")
        if len(sources) != 1 or heredocs:
            raise BuildError("checksum can't be specified for multiple sources")
        if not urls:
            raise BuildError("checksum requires HTTP(S) sources")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", checksum):
            raise BuildError(f"invalid checksum digest format: {checksum!r}", "use sha256:<64 hex digits>")

    exclude_matcher = Matcher(list(excludes)) if excludes else None
    items: list[Selection | str] = []  # in source order: selections, and URLs
    for src in sources:
        if is_url(src):
            items.append(src)
            continue
        if tree is None:
            raise BuildError(f"{keyword} failed: no build context to copy {src} from")
        items.extend(select_sources(tree, [src], excludes=exclude_matcher, parents=parents, keyword=keyword))
    count = len(items) + len(heredocs)
    if count == 0:
        raise BuildError(f"{keyword} failed: no source files were specified",
                         "nothing matches " + ", ".join(repr(s) for s in sources) if sources else None)
    if count > 1 and not dest_is_dir and not parents:
        raise BuildError(f"When using {keyword} with more than one source file, "
                         "the destination must be a directory and end with a /")

    owner = resolve_chown(chown, root) if chown else None
    spec = ChmodSpec.parse(chmod) if chmod else None
    writer = _Writer(_Options(root, owner, spec, preserve_owner, epoch, keyword))
    fetched: dict[str, Download] = {}  # fetched here, removed here
    try:
        # Every URL is fetched (and verified) before anything is written.
        for url in urls:
            given = (downloaded or {}).get(url)
            if given is not None and checksum is not None and given.digest != checksum:
                raise BuildError(f"ADD failed: digest mismatch for {url}: expected {checksum}, got {given.digest}")
            if given is None and url not in fetched:
                fetched[url] = download(url, os.fspath(scratch_dir) if scratch_dir else None, checksum,
                                        session, http_timeout)
        for item in items:
            if isinstance(item, str):
                got = (downloaded or {}).get(item) or fetched[item]
                _write_download(writer, item, got.path, got.mtime, dest_abs, dest_is_dir)
            else:
                assert tree is not None
                _write_selection(writer, tree, item, exclude_matcher, dest_abs, dest_is_dir, add)
        now = time.time_ns()
        for name, content in heredocs:
            base = posixpath.basename(go_clean("/" + name)) or "__unnamed__"  # a name, never a path
            parent, leaf, shown = writer.file_target(dest_abs, dest_is_dir, base)
            writer.bytes_at(parent, leaf, content.encode(), 0o644, now, shown)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise BuildError(f"{keyword} failed: {exc.strerror or exc}{where}") from None
    finally:
        for got in fetched.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(got.path)
    return writer.summary


def copy_entries(entries: Sequence[Entry], into: str | os.PathLike[str], *, preserve_owner: bool = True) -> CopySummary:
    """Copy a walked directory tree (``entries[0]`` its root, parents before children) into ``into``.

    ``into`` exists; it takes the root's metadata too (a whole-tree copy,
    not COPY's contents-only rule). Owners are kept unless told otherwise.
    """
    target = os.path.realpath(os.fspath(into))
    writer = _Writer(_Options(target, preserve_owner=preserve_owner))
    writer.copy_tree(list(entries), target, "/")
    fd = os.open(target, _DIR_FLAGS)
    try:
        writer.apply_meta_fd(fd, entries[0].st, entries[0].host)
    finally:
        os.close(fd)
    return writer.summary


def _write_selection(writer: _Writer, tree: SourceTree, sel: Selection, excludes: Matcher | None,
                     dest_abs: str, dest_is_dir: bool, add: bool) -> None:
    src = sel.source
    if add and stat.S_ISREG(src.st.st_mode) and is_archive(src.host):
        target = writer.ensure_dir(dest_abs)  # an archive always unpacks into a directory
        with open(src.host, "rb") as f:
            try:
                applied = apply_layer(f, target, whiteouts=False)
            except LayerError as exc:
                raise BuildError(f"ADD failed: extracting {src.path}: {exc}") from None
        writer.summary.archives += 1
        writer.summary.extracted += applied.entries
        writer.summary.bytes += applied.size
        return
    entries = walk_selection(tree, sel, excludes)
    if src.is_dir:
        writer.copy_tree(entries, writer.ensure_dir(dest_abs), dest_abs)
    else:
        parent, leaf, shown = writer.file_target(dest_abs, dest_is_dir or sel.parents, src.name)
        writer.write_at(parent, leaf, entries[0], shown)


def _write_download(writer: _Writer, url: str, tmp: str, mtime: int | None, dest_abs: str,
                    dest_is_dir: bool) -> None:
    st = os.lstat(tmp)
    os.utime(tmp, ns=(mtime, mtime) if mtime is not None else (st.st_atime_ns, st.st_mtime_ns))
    os.chmod(tmp, 0o600)
    parent, leaf, shown = writer.file_target(dest_abs, dest_is_dir, _url_name(url))
    writer.write_at(parent, leaf, Entry(".", tmp, os.lstat(tmp)), shown)
    writer.summary.downloads += 1


def copy_instruction(
    instruction: Copy | Add,
    dest_root: str | os.PathLike[str],
    *,
    tree: SourceTree | None,
    workdir: str = "/",
    heredocs: Sequence[tuple[str, str]] | None = None,
    preserve_owner: bool = False,
    epoch: int | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
    session: Any = None,
    downloaded: Mapping[str, Download] | None = None,
) -> CopySummary:
    """Perform an (already variable-expanded) COPY or ADD instruction into ``dest_root``.

    ``tree`` is the build context, or for ``COPY --from`` a
    ``SourceTree(stage_rootfs)`` (pass ``preserve_owner=True`` then: files
    from a stage keep their owners, context files become 0:0). ``heredocs``
    are the inline sources as (name, content) with the content expanded by
    the caller (see :func:`heredoc_sources`); by default the instruction's
    heredoc bodies are used as written. ``--link`` and ``--keep-git-dir``
    are the caller's business.
    """
    docs = [(doc.name, doc.content) for doc in instruction.heredocs] if heredocs is None else heredocs
    if isinstance(instruction, Add):
        return copy_sources(
            dest_root, instruction.sources, instruction.dest, tree=tree, workdir=workdir, heredocs=docs,
            chown=instruction.chown, chmod=instruction.chmod, excludes=instruction.excludes, add=True,
            checksum=instruction.checksum, preserve_owner=preserve_owner, epoch=epoch,
            scratch_dir=scratch_dir, session=session, downloaded=downloaded,
        )
    return copy_sources(
        dest_root, instruction.sources, instruction.dest, tree=tree, workdir=workdir, heredocs=docs,
        chown=instruction.chown, chmod=instruction.chmod, excludes=instruction.excludes,
        parents=instruction.parents, preserve_owner=preserve_owner, epoch=epoch,
        scratch_dir=scratch_dir, session=session,
    )


def make_dirs(dest_root: str | os.PathLike[str], path: str, *, owner: tuple[int, int] | None = None,
              epoch: int | None = None) -> str:
    """``mkdir -p`` of ``path`` inside ``dest_root`` (symlinks resolved inside it); new dirs get ``owner``."""
    root = os.path.realpath(os.fspath(dest_root))
    return _Writer(_Options(root, owner=owner, epoch=epoch, keyword="WORKDIR")).ensure_dir(path)


def heredoc_sources(docs: Sequence[Heredoc], expand: Callable[[str], str] | None = None) -> list[tuple[str, str]]:
    """(name, content) pairs of heredocs, content expanded with ``expand`` where the delimiter allows it."""
    return [(d.name, expand(d.content) if expand is not None and d.expand else d.content) for d in docs]
