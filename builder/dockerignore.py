""".dockerignore files and the path patterns of moby/patternmatcher.

:func:`parse` reads an ignore file the way ``moby/patternmatcher/ignorefile``
does: a UTF-8 BOM is dropped, lines *starting* with ``#`` are comments,
whitespace around a pattern is trimmed, blank lines are skipped, ``!`` marks an
exception, and every pattern is cleaned like Go's ``filepath.Clean`` with one
leading ``/`` removed (so ``/foo``, ``./foo`` and ``foo/`` are all ``foo``).

:class:`Matcher` follows ``PatternMatcher.MatchesOrParentMatches``: patterns
are applied in order, the last one that matches decides, and a pattern that
matches a parent directory of a path matches the path too (``node_modules``
excludes ``node_modules/x/y``). Pattern syntax: ``*`` any run of characters
except ``/``, ``?`` one character except ``/``, ``[a-z]``/``[^a-z]`` a class,
``\\`` escapes the next character, and ``**`` any number of directories
(including none). A malformed pattern (``[``, ``a\\`` at the end...) is an
:class:`IgnorePatternError`, as ``filepath.Match`` reports ``ErrBadPattern``.

:meth:`Matcher.needs_walk` tells a tree walker whether an excluded directory
must still be entered because an exception (``!pattern``) could re-include
something below it; when it says no, the whole directory can be pruned.

:func:`go_clean`, :func:`go_match` and :func:`has_wildcards` are the Go
``filepath.Clean`` / ``filepath.Match`` semantics that COPY and ADD sources use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from pybuild.errors import BuildError
from pybuild.records import field, record

__all__ = [
    "IgnorePatternError",
    "Matcher",
    "Pattern",
    "go_clean",
    "go_dir",
    "go_match",
    "has_wildcards",
    "parse",
    "split_wildcards",
]

_BOM = "\ufeff"


class IgnorePatternError(BuildError):
    """A .dockerignore or --exclude pattern that is not valid (``filepath.ErrBadPattern``)."""


# ---------------------------------------------------------------------------- Go path helpers


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a slash-separated path ("" -> ".", "a/../.." -> "..")."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(comp)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def go_dir(path: str) -> str:
    """Go's ``filepath.Dir``: everything before the last ``/``, cleaned ("." when there is none)."""
    i = path.rfind("/")
    return go_clean(path[:i + 1]) if i >= 0 else "."


class _BadPattern(Exception):
    pass


def _class_char(pattern: str, pos: int) -> tuple[str, int]:
    """One (possibly escaped) character of a ``[...]`` class, as Go's ``getEsc``."""
    if pos >= len(pattern) or pattern[pos] in "-]":
        raise _BadPattern
    if pattern[pos] == "\\":
        pos += 1
        if pos >= len(pattern):
            raise _BadPattern
    ch = pattern[pos]
    pos += 1
    if pos >= len(pattern):
        raise _BadPattern  # the class is never closed
    return ch, pos


def _class_regex(pattern: str, pos: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``pos``; returns (regex, position after ``]``)."""
    negated = False
    if pos < len(pattern) and pattern[pos] == "^":
        negated = True
        pos += 1
    ranges: list[tuple[str, str]] = []
    count = 0
    while True:
        if pos < len(pattern) and pattern[pos] == "]" and count > 0:
            pos += 1
            break
        lo, pos = _class_char(pattern, pos)
        hi = lo
        if pattern[pos] == "-":
            hi, pos = _class_char(pattern, pos + 1)
        count += 1
        if lo <= hi:  # a reversed range is valid in Go but never matches
            ranges.append((lo, hi))
    if not ranges:
        return ("(?s:.)" if negated else "(?!)"), pos
    body = "".join(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges)
    return f"[{'^' if negated else ''}{body}]", pos


@lru_cache(maxsize=4096)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go ``filepath.Match`` syntax as a compiled regex (raises _BadPattern)."""
    out: list[str] = []
    pos = 0
    n = len(pattern)
    while pos < n:
        ch = pattern[pos]
        if ch == "*":
            while pos < n and pattern[pos] == "*":
                pos += 1
            out.append("[^/]*")
            continue
        if ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            pos += 1
            if pos >= n:
                raise _BadPattern
            out.append(re.escape(pattern[pos]))
        elif ch == "[":
            cls, pos = _class_regex(pattern, pos + 1)
            out.append(cls)
            continue
        else:
            out.append(re.escape(ch))
        pos += 1
    return re.compile("".join(out) + r"\Z")


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)``; IgnorePatternError for a malformed pattern."""
    try:
        regex = _glob_regex(pattern)
    except _BadPattern:
        raise IgnorePatternError(f"syntax error in pattern {pattern!r}") from None
    return regex.match(name) is not None


def validate_glob(pattern: str) -> None:
    """Raise IgnorePatternError when ``pattern`` is not valid ``filepath.Match`` syntax."""
    go_match(pattern, ".")


def has_wildcards(name: str) -> bool:
    """Whether ``name`` holds an unescaped ``*``, ``?`` or ``[`` (BuildKit's containsWildcards)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def split_wildcards(path: str) -> tuple[list[str], list[str]]:
    """Split path components into the literal prefix and the rest from the first wildcard on."""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        if has_wildcards(part):
            return parts[:i], parts[i:]
    return parts, []


# ---------------------------------------------------------------------------- patterns


@record
class Pattern:
    """One cleaned pattern, compiled the way patternmatcher compiles it."""

    text: str
    exclusion: bool = False
    kind: str = field(init=False, default="exact")  # exact | prefix | suffix | regex
    regex: re.Pattern[str] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            _glob_regex(self.text)  # the syntax check patternmatcher makes with filepath.Match
            self._compile()
        except _BadPattern:
            raise IgnorePatternError(f"syntax error in pattern {self.text!r}") from None

    def _compile(self) -> None:
        p = self.text
        reg: list[str] = []
        kind = "exact"
        pos = 0
        index = 0
        n = len(p)
        while pos < n:
            ch = p[pos]
            pos += 1
            if ch == "*":
                if pos < n and p[pos] == "*":
                    pos += 1
                    if pos < n and p[pos] == "/":
                        pos += 1  # "**/" is "**"
                    if pos >= n:  # a trailing "**" accepts everything below
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            reg.append(".*")
                            kind = "regex"
                    else:
                        reg.append("(.*/)?")
                        kind = "regex"
                    if index == 0:
                        kind = "suffix"
                else:
                    reg.append("[^/]*")
                    kind = "regex"
            elif ch == "?":
                reg.append("[^/]")
                kind = "regex"
            elif ch == "\\":
                if pos < n:
                    reg.append(re.escape(p[pos]))
                    pos += 1
                    kind = "regex"
                else:
                    reg.append(r"\\")
            elif ch == "[":
                cls, pos = _class_regex(p, pos)
                reg.append(cls)
                kind = "regex"
            elif ch == "]":
                reg.append(r"\]")
                kind = "regex"
            else:
                reg.append(re.escape(ch))
            index += 1
        self.kind = kind
        if kind == "regex":
            self.regex = re.compile("".join(reg) + r"\Z")

    def match(self, path: str) -> bool:
        """Whether the pattern matches ``path`` itself (no parent matching)."""
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None

    def could_match_below(self, directory: str) -> bool:
        """Whether the pattern may match some path strictly below ``directory`` (conservative)."""
        below = directory + "/"
        if self.kind == "exact":
            return self.text.startswith(below)
        if self.kind == "prefix":
            prefix = self.text[:-2]
            return below.startswith(prefix) or prefix.startswith(below)
        if self.kind == "suffix":
            return True
        text = self.text
        if "**" in text or "[" in text or "\\" in text:
            return True  # may cross directories or match "/": assume it can
        comps = text.split("/")
        dirs = directory.split("/")
        if len(comps) <= len(dirs):
            return False
        return all(go_match(c, d) for c, d in zip(comps, dirs, strict=False))

    def __str__(self) -> str:
        return ("!" if self.exclusion else "") + self.text


# ---------------------------------------------------------------------------- ignore files


def parse(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned (``!`` kept as a prefix)."""
    patterns: list[str] = []
    if text.startswith(_BOM):
        text = text[len(_BOM):]
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


class Matcher:
    """Ordered include/exception patterns (patternmatcher.PatternMatcher)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        self.exclusions = False
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise IgnorePatternError('illegal exclusion pattern: "!"')
                p = p[1:]
                self.exclusions = True
            self.patterns.append(Pattern(p, exclusion))

    @classmethod
    def from_text(cls, text: str) -> Matcher:
        return cls(parse(text))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"Matcher({[str(p) for p in self.patterns]!r})"

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative, slash-separated) is excluded: it or a parent matches, last pattern wins."""
        if path in ("", "."):
            return False  # the root itself is never excluded
        return self.decide(self.info(path))

    def info(self, path: str, parent: tuple[bool, ...] | None = None) -> tuple[bool, ...]:
        """Per pattern: does it match ``path`` or one of its parents?

        ``parent`` is the info of the parent directory (a walker keeps it, as
        with patternmatcher's MatchesUsingParentResults), which saves matching
        every prefix again; without it the prefixes are matched here.
        """
        if parent is not None:
            return tuple(hit or p.match(path) for hit, p in zip(parent, self.patterns, strict=True))
        parent_path = go_dir(path)
        dirs = [] if parent_path == "." else parent_path.split("/")
        prefixes = ["/".join(dirs[:i + 1]) for i in range(len(dirs))]
        return tuple(p.match(path) or any(p.match(x) for x in prefixes) for p in self.patterns)

    def root_info(self) -> tuple[bool, ...]:
        """The info of the root directory (nothing matches it)."""
        return (False,) * len(self.patterns)

    def decide(self, info: tuple[bool, ...]) -> bool:
        """Whether a path with this info is excluded: the last pattern that matters wins."""
        matched = False
        for pattern, hit in zip(self.patterns, info, strict=True):
            # An include only matters while unmatched, an exception only while matched.
            if pattern.exclusion != matched:
                continue
            if hit:
                matched = not pattern.exclusion
        return matched

    def needs_walk(self, directory: str) -> bool:
        """Whether an excluded ``directory`` may hold paths an exception re-includes.

        When this is false nothing below the directory can be anything but
        excluded (it is safe to prune it); when true the walker must look at
        each entry. The answer errs on the side of walking.
        """
        if not self.exclusions:
            return False
        directory = go_clean(directory.lstrip("/"))
        if directory == ".":
            return True
        return any(p.exclusion and p.could_match_below(directory) for p in self.patterns)


    def could_match_below(self, directory: str) -> bool:
        """Whether an include pattern may match something strictly below ``directory`` (conservative)."""
        directory = go_clean(directory.lstrip("/"))
        if directory == ".":
            return True
        return any(not p.exclusion and p.could_match_below(directory) for p in self.patterns)


def matcher_or_none(patterns: Sequence[str]) -> Matcher | None:
    """A Matcher for ``patterns``, or None when there are none."""
    m = Matcher(patterns)
    return m if m else None
