""".dockerignore parsing and moby/patternmatcher matching semantics."""

from __future__ import annotations

import pytest

from pybuild.builder.dockerignore import (
    IgnorePatternError,
    Matcher,
    Pattern,
    go_clean,
    go_match,
    has_wildcards,
    parse,
)

# ---------------------------------------------------------------------------- parsing


def test_parse_comments_blanks_exceptions_and_cleaning() -> None:
    text = ("\ufeff# a comment\n\n  *.md  \n!README.md\n/abs/path\n./rel/path\ndir/\na/../b\n"
            "  #not-a-comment\r\n! spaced\n")
    assert parse(text) == ["*.md", "!README.md", "abs/path", "rel/path", "dir", "b", "#not-a-comment", "!spaced"]


def test_parse_keeps_root_and_single_bang_is_an_error() -> None:
    assert parse("/\n") == ["/"]
    with pytest.raises(IgnorePatternError, match="illegal exclusion pattern"):
        Matcher(parse("!\n"))


@pytest.mark.parametrize("pattern", ["[", "a[", "[^bc", "\\", "[]a]", "[-]", "[x-]", "[a-b-c]"])
def test_malformed_patterns_are_errors(pattern: str) -> None:
    with pytest.raises(IgnorePatternError):
        Matcher([pattern])


def test_go_clean() -> None:
    assert go_clean("") == "."
    assert go_clean("a//b/./c/..") == "a/b"
    assert go_clean("../../x") == "../../x"
    assert go_clean("/../x/") == "/x"
    assert go_clean("/") == "/"


# ---------------------------------------------------------------------------- Docker's documented examples


def _m(*patterns: str) -> Matcher:
    return Matcher(parse("\n".join(patterns)))


def test_docs_example_temp_patterns() -> None:
    m = _m("# comment", "*/temp*", "*/*/temp*", "temp?")
    assert m.matches("somedir/temporary.txt")
    assert m.matches("somedir/temp")
    assert m.matches("somedir/temp/inner/file")  # a matched dir excludes its children
    assert m.matches("somedir/subdir/temporary.txt")
    assert m.matches("tempa") and m.matches("tempb")
    assert not m.matches("temporary.txt")  # */temp* needs one directory level
    assert not m.matches("tempab")
    assert not m.matches("a/b/c/temp.txt")  # */*/temp* is exactly two levels
    assert not m.matches("somedir/other.txt")


def test_docs_example_double_star() -> None:
    m = _m("**/*.go")
    assert m.matches("main.go")
    assert m.matches("pkg/a/b/util.go")
    assert not m.matches("pkg/a/b/util.gox")


def test_docs_example_markdown_exception() -> None:
    m = _m("*.md", "!README.md")
    assert m.matches("CHANGELOG.md")
    assert not m.matches("README.md")
    assert not m.matches("docs/guide.md")  # *.md is root-level only


def test_docs_example_exception_order() -> None:
    m = _m("*.md", "!README*.md", "README-secret.md")
    assert m.matches("CHANGES.md")
    assert not m.matches("README.md")
    assert m.matches("README-secret.md")
    m = _m("*.md", "README-secret.md", "!README*.md")
    assert not m.matches("README-secret.md")  # the last matching pattern wins
    assert not m.matches("README.md")
    assert m.matches("CHANGES.md")


def test_exception_reincludes_inside_an_excluded_dir() -> None:
    m = _m("docs", "!docs/keep.md")
    assert m.matches("docs")
    assert m.matches("docs/other.md")
    assert not m.matches("docs/keep.md")
    m = _m("docs/*", "!docs/README.md")
    assert not m.matches("docs/README.md")
    assert m.matches("docs/x/y")


def test_matched_directory_excludes_children() -> None:
    m = _m("node_modules", "build/")
    assert m.matches("node_modules/a/b/c.js")
    assert m.matches("build/out.o")
    assert not m.matches("src/node_modules_helper.js")


def test_leading_slash_and_dot_slash_are_removed() -> None:
    m = _m("/secret", "./private/key")
    assert m.matches("secret")
    assert m.matches("private/key")
    assert not m.matches("other/secret")


def test_escapes() -> None:
    m = _m("a\\*b", "q\\?")
    assert m.matches("a*b")
    assert not m.matches("axb")
    assert m.matches("q?")
    assert not m.matches("qx")


# ---------------------------------------------------------------------------- patternmatcher's own table

_TABLE = [
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "dir/file", True), ("**/**", "dir/file", True), ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True), ("**/dir", "dir", True), ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True), ("**file", "dir/file", True), ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True), ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True), ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True), (".*", ".foo", True),
    (".*", "foo", False), ("abc.def", "abcdef", False), ("abc.def", "abc.def", True),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False), ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False), ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False), ("a(b)c/def", "a(b)c/def", True),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True), ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                                            True),
    ("a\\\\", "a\\", True), ("a\\*b", "a*b", True),
    # Go's filepath.Match table, through the matcher
    ("a*", "ab/c", True), ("a*/b", "a/c/b", False), ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("ab[^c]", "abc", False), ("a?b", "a\u263ab", True),
    ("a[^a]b", "a\u263ab", True), ("a???b", "a\u263ab", False), ("[a-\u03b6]*", "\u03b1", True),
    ("*[a-\u03b6]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False), ("[\\]a]", "]", True),
    ("[\\-]", "-", True), ("[x\\-]", "-", True), ("[x\\-]", "z", False), ("[\\-x]", "a", False), ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), _TABLE)
def test_patternmatcher_table(pattern: str, path: str, expected: bool) -> None:
    assert Matcher([pattern]).matches(path) is expected


def test_multi_pattern_table() -> None:
    assert not Matcher(["**", "!util/docker/web"]).matches("util/docker/web/foo")
    assert Matcher(["**", "!util/docker/web", "util/docker/web/foo"]).matches("util/docker/web/foo")
    assert not Matcher(["**", "!dist/*.whl"]).matches("dist/x-1.0-py3-none-any.whl")
    assert Matcher(["!fileutils.go", "*.go"]).matches("fileutils.go")
    assert not Matcher(["*.go", "!fileutils.go"]).matches("fileutils.go")
    assert not Matcher(["*.go"]).matches(".")


def test_pattern_kinds_follow_patternmatcher() -> None:
    assert Pattern("dir/**").kind == "prefix"
    assert Pattern("**/dir").kind == "suffix"
    assert Pattern("**").kind == "suffix"
    assert Pattern("a[b-d]e").kind == "regex"
    assert Pattern("plain/name").kind == "exact"


# ---------------------------------------------------------------------------- walking


def test_needs_walk_prunes_only_when_no_exception_can_reach_below() -> None:
    m = _m("docs", "!docs/keep.md")
    assert m.needs_walk("docs")
    assert not m.needs_walk("other")
    m = _m("node_modules")
    assert not m.needs_walk("node_modules")  # no exceptions at all
    m = _m("*", "!src/*.go")
    assert m.needs_walk("src")
    assert not m.needs_walk("vendor")
    m = _m("*", "!**/keep")
    assert m.needs_walk("anything")
    m = _m("a", "!a/b/c")
    assert m.needs_walk("a") and m.needs_walk("a/b")
    assert not m.needs_walk("a/x")


# ---------------------------------------------------------------------------- Go's filepath.Match for COPY sources


def test_go_match_and_wildcards() -> None:
    assert go_match("*.txt", "a.txt")
    assert not go_match("*.txt", "dir/a.txt")
    assert go_match("arr[[]0].txt", "arr[0].txt")
    assert go_match("index.?s", "index.js")
    assert go_match("file[0-9].txt", "file7.txt")
    assert not go_match("file[0-9].txt", "filex.txt")
    assert has_wildcards("a*") and has_wildcards("[a]") and has_wildcards("a?")
    assert not has_wildcards("a\\*b") and not has_wildcards("plain/path")
