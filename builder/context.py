"""The build context, and source trees COPY and ADD read from.

A :class:`SourceTree` is a directory seen the way BuildKit sees a transferred
context or a stage's filesystem:

* paths are context paths: relative, slash-separated, cleaned like Go's
  ``filepath.Clean`` after joining with ``/`` (so ``../x`` and ``/x`` both name
  ``x``: a source can never leave the tree);
* a source path is resolved component by component with every symlink
  followed *inside* the tree (an absolute target, or one climbing out with
  ``..``, is taken relative to the tree's root, never the host's);
* with an ignore :class:`~.dockerignore.Matcher`, an excluded path does not
  exist: it is never resolved, listed or read. A directory that is itself
  excluded but holds a path an exception re-includes is there, holding only
  that path (as the file-sync of BuildKit's context transfer sends it).

:class:`Context` is the main build context: a directory, or a tar stream
(``-`` on stdin) extracted into a private temp directory under a scratch dir.
The extraction uses the layer store's hostile-input-safe tar applier with
whiteout conversion off (a ``.wh.x`` file is just a file). The ignore file is
``<Dockerfile>.dockerignore`` beside the Dockerfile when that exists, else
``<context>/.dockerignore`` (BuildKit's rule; the two are not merged). With a
tar context the ignore rules apply after extraction: ignored files are written
to the temp dir but never read from it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from pybuild.errors import BuildError, LayerError, UsageError
from pybuild.linux import safefs as _safefs
from pybuild.linux.fsutil import remove_tree
from pybuild.records import record
from pybuild.store.layertar import apply_layer

from .dockerignore import Matcher, go_clean, go_match, has_wildcards, parse, split_wildcards

__all__ = [
    "Context",
    "Entry",
    "Selection",
    "Source",
    "SourceTree",
    "clean_source",
    "select_sources",
    "split_parents",
    "walk_selection",
]

_IGNORE_LIMIT = 16 << 20


def secure_join(root: str, path: str) -> str:
    """``path`` resolved inside the context directory ``root``, links included, never leaving it."""
    try:
        return _safefs.secure_join(root, path)
    except _safefs.TooManySymlinks:
        raise BuildError(f"too many levels of symbolic links resolving {path} in the build context") from None


@record(frozen=True)
class Source:
    """One resolved source: ``path`` as named (wildcards expanded), ``real`` after following symlinks."""

    path: str  # context path as the user named it ("." is the root)
    real: str  # context path after every symlink was followed ("." is the root)
    host: str  # host path of ``real``
    st: os.stat_result  # lstat of ``host``

    @property
    def name(self) -> str:
        """The name the source is copied under (the last component as named)."""
        return self.path.rsplit("/", 1)[-1] if self.path != "." else "."

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def clean_source(path: str) -> str:
    """A source as a context path: joined to ``/``, cleaned, ``..`` stopping at the root."""
    cleaned = go_clean("/" + path).lstrip("/")
    return cleaned or "."


def _join(base: str, name: str) -> str:
    return name if base == "." else f"{base}/{name}"


def split_parents(src: str) -> tuple[str, str]:
    """``COPY --parents``: (pivot, pattern). ``a/./b/*.txt`` -> (``a``, ``b/*.txt``); no ``/./`` -> (``.``, src)."""
    pivot, sep, pattern = src.partition("/./")
    if not sep:
        return ".", clean_source(src)
    return clean_source(pivot), clean_source(pattern)


class SourceTree:
    """A directory COPY reads from, with an optional ignore matcher (see module doc)."""

    #: How missing files are described in errors ("file not found in <where>").
    where = "the source"

    def __init__(self, root: str | os.PathLike[str], matcher: Matcher | None = None,
                 *, where: str | None = None) -> None:
        real = os.path.realpath(os.fspath(root))
        if not os.path.isdir(real):
            raise UsageError(f"source directory {root} does not exist or is not a directory")
        self.root = real
        self.matcher = matcher if matcher else None
        if where is not None:
            self.where = where
        self._visible: dict[str, bool] = {}
        self._infos: dict[str, tuple[bool, ...]] = {}

    # ---- paths -----------------------------------------------------------------

    def host_path(self, rel: str) -> str:
        """Host path of a real context path (no symlink resolution: pass ``Source.real``)."""
        return self.root if rel == "." else os.path.join(self.root, rel)

    def visible(self, rel: str, st: os.stat_result | None = None) -> bool:
        """Whether the real context path ``rel`` is part of the tree (not ignored)."""
        if self.matcher is None or rel == ".":
            return True
        cached = self._visible.get(rel)
        if cached is not None:
            return cached
        result = True
        if self.matcher.decide(self._match_info(rel, st)):
            result = False
            if self.matcher.needs_walk(rel):
                if st is None:
                    try:
                        st = os.lstat(self.host_path(rel))
                    except OSError:
                        st = None
                if st is not None and stat.S_ISDIR(st.st_mode):
                    result = self._anything_visible_below(rel)
        if st is None or stat.S_ISDIR(st.st_mode):
            self._visible[rel] = result  # files are asked about once per walk: not worth keeping
        return result

    def _anything_visible_below(self, rel: str) -> bool:
        """Whether an excluded directory holds a path an exception (``!pattern``) brings back.

        Depth first with an explicit stack (not through :meth:`visible`, which would recurse once per
        level); the directories it settles are remembered as :meth:`visible` would, so a walk that asks
        again level by level costs nothing more.
        """
        assert self.matcher is not None
        stack: list[tuple[str, Iterator[str]]] = []
        directory: str | None = rel
        while True:
            if directory is not None:  # look at a directory's entries: one visible, or the dirs to search
                try:
                    with os.scandir(self.host_path(directory)) as it:
                        entries = sorted(it, key=lambda e: e.name)
                except (FileNotFoundError, NotADirectoryError):
                    entries = []
                below: list[str] = []
                for entry in entries:
                    child = _join(directory, entry.name)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    cached = self._visible.get(child)
                    if cached is not None:
                        if not cached:
                            continue
                    elif self.matcher.decide(self._match_info(child, st)):
                        if stat.S_ISDIR(st.st_mode) and self.matcher.needs_walk(child):
                            below.append(child)
                        continue
                    for settled, _ in stack:  # found: every directory on the way holds it
                        self._visible[settled] = True
                    self._visible[directory] = True
                    return True
                stack.append((directory, iter(below)))
            if not stack:
                return False
            directory = next(stack[-1][1], None)
            if directory is None:
                self._visible[stack.pop()[0]] = False  # searched through: nothing in it comes back

    def _match_info(self, rel: str, st: os.stat_result | None = None) -> tuple[bool, ...]:
        """The matcher's per-pattern info for ``rel``, built from its parent's (directories' are kept)."""
        assert self.matcher is not None
        if rel == ".":
            return self.matcher.root_info()
        cached = self._infos.get(rel)
        if cached is not None:
            return cached
        # the nearest ancestor already known, then down from it (iteratively: a path may be deep)
        missing: list[str] = []
        parent = rel.rpartition("/")[0] or "."
        while parent != "." and parent not in self._infos:
            missing.append(parent)
            parent = parent.rpartition("/")[0] or "."
        info = self.matcher.root_info() if parent == "." else self._infos[parent]
        for ancestor in reversed(missing):
            info = self.matcher.info(ancestor, info)
            self._infos[ancestor] = info
        info = self.matcher.info(rel, info)
        if st is None or stat.S_ISDIR(st.st_mode):
            self._infos[rel] = info
        return info

    def children(self, rel: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """Visible entries of the real directory ``rel``, sorted by name: (context path, entry)."""
        try:
            with os.scandir(self.host_path(rel)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            child = _join(rel, entry.name)
            if self.matcher is None:
                yield child, entry
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if self.visible(child, st):
                yield child, entry

    def follow(self, path: str) -> tuple[str, os.stat_result] | None:
        """Resolve a context path following symlinks inside the tree: (real path, lstat) or None.

        None when a component is missing or not a directory, or when the path
        (or a symlink on the way) is ignored.
        """
        try:
            resolved = _safefs.resolve_beneath(self.root, path, keep_missing=False, link_allowed=self.visible)
        except _safefs.TooManySymlinks:
            raise BuildError(f"too many levels of symbolic links resolving {path}") from None
        if resolved is None:
            return None
        real = "/".join(resolved) or "."
        st = os.lstat(self.host_path(real))  # ".." in a link target may have moved us up
        if not self.visible(real, st):
            return None
        return real, st

    # ---- COPY sources --------------------------------------------------------------

    def _not_found(self, keyword: str, path: str) -> BuildError:
        return BuildError(
            f"{keyword} failed: file not found in {self.where}: stat {path}: file does not exist"
        )

    def resolve_sources(self, pattern: str, *, keyword: str = "COPY",
                        allow_empty_wildcard: bool = False) -> list[Source]:
        """The sources ``pattern`` names: one path, or every match of its wildcards (sorted).

        Wildcards follow Go's ``filepath.Match`` per component (``*``, ``?``,
        ``[a-z]``, ``\\`` escapes); the literal prefix before the first
        wildcard is resolved through symlinks, the matched levels are not
        (as ``filepath.Walk`` lists them). Each match is then followed itself,
        like a plain source. A missing plain source is a BuildError; a
        wildcard that matches nothing is one unless ``allow_empty_wildcard``.
        """
        cleaned = clean_source(pattern)
        literal, wild = split_wildcards(cleaned)
        if not wild:
            found = self.follow(cleaned)
            if found is None:
                raise self._not_found(keyword, cleaned)
            real, st = found
            return [Source(cleaned, real, self.host_path(real), st)]
        base_path = "/".join(literal) or "."
        base = self.follow(base_path)
        matches: list[tuple[str, str]] = []  # (named path, real path before following the match)
        if base is not None and stat.S_ISDIR(base[1].st_mode):
            self._match_level(base_path, base[0], wild, matches)
        out: list[Source] = []
        for named, _ in matches:
            found = self.follow(named)
            if found is None:
                continue  # a dangling symlink matched: nothing to copy (BuildKit fails on it later)
            real, st = found
            out.append(Source(named, real, self.host_path(real), st))
        if not out and not allow_empty_wildcard:
            raise BuildError(
                f"{keyword} failed: no source files were specified: {pattern!r} matches nothing in {self.where}"
            )
        return out

    def _match_level(self, named: str, real: str, comps: list[str], out: list[tuple[str, str]]) -> None:
        comp, rest = comps[0], comps[1:]
        for child, entry in self.children(real):
            if not go_match(comp, entry.name):
                continue
            child_named = _join(named, entry.name)
            if not rest:
                out.append((child_named, child))
            elif entry.is_dir(follow_symlinks=False):
                self._match_level(child_named, child, rest, out)

    def resolve(self, pattern: str, *, keyword: str = "COPY", allow_empty_wildcard: bool = False) -> list[str]:
        """The context paths ``pattern`` names (see :meth:`resolve_sources`)."""
        return [s.path for s in self.resolve_sources(pattern, keyword=keyword,
                                                     allow_empty_wildcard=allow_empty_wildcard)]


class Context(SourceTree):
    """The build context: a directory or an extracted tar, its Dockerfile and ignore file."""

    where = "build context or excluded by .dockerignore"

    def __init__(self, root: str | os.PathLike[str], *, dockerfile: Path | None,
                 ignore_file: Path | None, patterns: list[str], temp_dir: Path | None = None) -> None:
        matcher = Matcher(patterns) if patterns else None
        super().__init__(root, matcher)
        self.dockerfile_path = dockerfile
        self.ignore_file = ignore_file
        self.ignore_patterns = patterns
        self._temp_dir = temp_dir

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], dockerfile: str | os.PathLike[str] | None = None) -> Context:
        """A directory context; ``dockerfile`` is a path (relative to the cwd, as ``-f``), ``-`` or None.

        None means ``<context>/Dockerfile`` (or, when only that exists,
        ``<context>/dockerfile``, then ``<context>/Containerfile``: podman's and
        buildah's name); ``-`` means the Dockerfile comes from elsewhere
        (stdin), so only ``<context>/.dockerignore`` can apply.
        """
        root = Path(path)
        if not root.is_dir():
            raise UsageError(f"unable to prepare context: path {os.fspath(path)!r} not found or not a directory")
        root = root.resolve()
        df: Path | None
        if dockerfile is None:
            df = _default_dockerfile(root)
        elif os.fspath(dockerfile) == "-":
            df = None
        else:
            df = Path(os.path.abspath(dockerfile))
        ignore_file, patterns = cls._find_ignore(str(root), df)
        return cls(root, dockerfile=df, ignore_file=ignore_file, patterns=patterns)

    @classmethod
    def from_tar(cls, stream: BinaryIO, scratch_dir: str | os.PathLike[str],
                 dockerfile: str | None = None) -> Context:
        """A context from a (possibly compressed) tar stream, extracted under ``scratch_dir``.

        ``dockerfile`` is a path inside the archive (``None``: ``Dockerfile``, or
        ``Containerfile`` when only that is there, as :meth:`from_dir`; ``-``: none).
        The temp dir belongs to the context: :meth:`close` removes it.
        """
        scratch = Path(scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="context-", dir=scratch))
        try:
            os.chmod(tmp, 0o700)
            root = tmp / "root"
            root.mkdir(mode=0o755)
            try:
                apply_layer(stream, root, whiteouts=False)
            except LayerError as exc:
                raise BuildError(f"cannot read the build context archive: {exc}") from None
            df: Path | None = None
            if dockerfile is None:
                df = _default_dockerfile(root, confined=True)
            elif dockerfile != "-":
                df = Path(secure_join(str(root), clean_source(dockerfile)))
            ignore_file, patterns = cls._find_ignore(str(root), df, confined=True)
            return cls(root, dockerfile=df, ignore_file=ignore_file, patterns=patterns, temp_dir=tmp)
        except BaseException:
            remove_tree(tmp)
            raise

    @classmethod
    def from_stdin(cls, stream: BinaryIO, scratch_dir: str | os.PathLike[str],
                   dockerfile: str | None = None) -> tuple[Context, str | None]:
        """``pybuild build -``: a tar context, or (as Docker reads it) a bare Dockerfile and no context.

        Returns the context and, when stdin held a Dockerfile, its text; the
        context is then an empty directory (COPY of local files fails, ADD of
        URLs works).
        """
        from pybuild.store.compression import Compression, detect

        from .copy import read_head, tar_header_ok

        head = read_head(stream, 512)
        if detect(head) is not Compression.NONE or tar_header_ok(head):
            return cls.from_tar(cast(BinaryIO, _Prepended(head, stream)), scratch_dir, dockerfile), None
        try:
            text = (head + stream.read()).decode()
        except UnicodeDecodeError:
            raise UsageError("stdin holds neither a tar archive nor a Dockerfile (it is not UTF-8 text)") from None
        scratch = Path(scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="context-", dir=scratch))
        try:
            os.chmod(tmp, 0o700)
            (tmp / "root").mkdir(mode=0o755)
            empty = cls(tmp / "root", dockerfile=None, ignore_file=None, patterns=[], temp_dir=tmp)
            empty.where = "build context (there is none: the Dockerfile was read from stdin)"
            return empty, text
        except BaseException:
            remove_tree(tmp)
            raise

    @staticmethod
    def _find_ignore(root: str, dockerfile: Path | None, confined: bool = False) -> tuple[Path | None, list[str]]:
        """The ignore file and its patterns; ``confined``: symlinks resolve inside ``root`` (a tar context)."""
        candidates: list[Path] = []
        if dockerfile is not None:
            candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
        candidates.append(Path(root) / ".dockerignore")
        if confined:
            candidates = [Path(secure_join(root, os.path.relpath(c, root))) for c in candidates]
        for candidate in candidates:
            text = _read_regular(candidate)
            if text is not None:
                return candidate, parse(text)
        return None, []

    # ---- the Dockerfile ------------------------------------------------------------

    def read_dockerfile(self) -> str:
        """The Dockerfile's text (UsageError when it is missing)."""
        if self.dockerfile_path is None:
            raise UsageError("no Dockerfile: it was to be read from elsewhere")
        text = _read_regular(self.dockerfile_path, limit=64 << 20)
        if text is None:
            raise UsageError(f"cannot read Dockerfile {self.dockerfile_path}: no such file")
        return text

    # ---- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Remove the temp dir of a tar context (a directory context is left alone)."""
        if self._temp_dir is not None:
            remove_tree(self._temp_dir)
            self._temp_dir = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


DEFAULT_DOCKERFILES = ("Dockerfile", "dockerfile", "Containerfile")


def _default_dockerfile(root: Path, confined: bool = False) -> Path:
    """The first of :data:`DEFAULT_DOCKERFILES` that ``root`` holds (``Dockerfile`` wins), else ``Dockerfile``
    (whose absence is then the error); ``confined``: links resolve inside ``root`` (a tar context)."""
    def place(name: str) -> Path:
        return Path(secure_join(str(root), name)) if confined else root / name

    for name in DEFAULT_DOCKERFILES:
        candidate = place(name)
        if candidate.exists():
            return candidate
    return place(DEFAULT_DOCKERFILES[0])


def _read_regular(path: Path, limit: int = _IGNORE_LIMIT) -> str | None:
    """A regular file's text (following symlinks, as docker does), None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return None
            raise UsageError(f"cannot read {path}: not a regular file")
        with contextlib.closing(os.fdopen(os.dup(fd), "rb")) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"cannot read {path}: larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- selecting what a COPY copies


@record(frozen=True)
class Selection:
    """One top-level item a COPY/ADD copies: a resolved source and how its tree is filtered."""

    pattern: str  # the source as written
    source: Source  # followed; for --parents, the pivot directory
    include: Matcher | None = None  # --parents: the path pattern below the pivot
    parents: bool = False


@record(frozen=True)
class Entry:
    """One path of a selection's tree, in walk (pre-)order; ``rel`` is relative to the selection root."""

    rel: str
    host: str
    st: os.stat_result

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def select_sources(tree: SourceTree, sources: list[str], *, excludes: Matcher | None = None,
                   parents: bool = False, keyword: str = "COPY") -> list[Selection]:
    """What ``COPY [--parents] [--exclude...] sources... dest`` copies from ``tree``, in order.

    Wildcards that match nothing are allowed here (the caller fails when no
    source at all is left, as the classic builder does); a plain path that
    does not exist is a BuildError. ``--exclude`` patterns also drop wildcard
    matches themselves, matched relative to the wildcard's literal prefix.
    """
    out: list[Selection] = []
    for pattern in sources:
        if parents:
            pivot, below = split_parents(pattern)
            if not has_wildcards(pivot) and not has_wildcards(below):
                required = clean_source(_join(pivot, below) if below != "." else pivot)
                if tree.follow(required) is None:
                    raise tree._not_found(keyword, required)
            include = None if below == "." else Matcher([below])
            for src in tree.resolve_sources(pivot, keyword=keyword, allow_empty_wildcard=True):
                out.append(Selection(pattern, src, include, parents=True))
            continue
        cleaned = clean_source(pattern)
        literal, wild = split_wildcards(cleaned)
        base = "/".join(literal)
        for src in tree.resolve_sources(pattern, keyword=keyword, allow_empty_wildcard=True):
            if wild and excludes is not None:
                rel = src.path[len(base) + 1:] if base else src.path
                if excludes.matches(rel):
                    continue
            out.append(Selection(pattern, src))
    return out


def walk_selection(tree: SourceTree, sel: Selection, excludes: Matcher | None = None) -> list[Entry]:
    """Every path a selection copies, root first, in sorted depth-first order.

    Nothing is followed below the root. A directory is dropped when the
    ignore file, ``--exclude`` or the ``--parents`` pattern leaves nothing
    in it that it would have to hold.
    """
    root = Entry(".", sel.source.host, sel.source.st)
    out = [root]
    if not root.is_dir:
        return out
    include = sel.include
    # Iterative (a stack of directories being listed), so no depth of tree can exhaust Python's stack.
    stack = [_Visit(tree.children(sel.source.real), ".", include is None, 0, False)]
    while stack:
        top = stack[-1]
        nxt = next(top.children, None)
        if nxt is None:
            stack.pop()
            if stack:
                if top.conditional and not top.added:
                    del out[top.index:]  # a directory kept only for what might be below it, and nothing was
                else:
                    stack[-1].added = True
            continue
        child_real, entry = nxt
        rel = entry.name if top.rel == "." else f"{top.rel}/{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        conditional = False
        child_full = top.full
        if not top.full and include is not None:
            if include.matches(rel):
                child_full = True
            elif is_dir and include.could_match_below(rel):
                conditional = True
            else:
                continue
        if excludes is not None and excludes.matches(rel):
            if is_dir and excludes.needs_walk(rel):
                conditional = True
            else:
                continue
        index = len(out)
        out.append(Entry(rel, tree.host_path(child_real), st))
        if is_dir:
            stack.append(_Visit(tree.children(child_real), rel, child_full, index, conditional))
            continue
        top.added = True
    return out


class _Visit:
    """A directory :func:`walk_selection` is listing: its children still to see, and whether any was kept."""

    __slots__ = ("children", "rel", "full", "index", "conditional", "added")

    def __init__(self, children: Iterator[tuple[str, os.DirEntry[str]]], rel: str, full: bool, index: int,
                 conditional: bool) -> None:
        self.children = children
        self.rel = rel
        self.full = full
        self.index = index  # of its own entry in the output
        self.conditional = conditional  # dropped unless something below it is kept
        self.added = False


class _Prepended:
    """A stream whose first bytes were already read: ``head``, then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._stream.read(n)
