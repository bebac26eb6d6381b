"""The descriptor-based tree walk and the removal built on it: depth, swapped symlinks, moved dirs."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.linux.fsutil import ENTER, FILE, LEAVE, TreeChanged, remove_tree, walk
from pybuild.store.compression import Compression
from pybuild.store.layertar import write_layer

_made: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_deep_trees() -> Iterator[None]:
    """pytest's own clean-up of tmp_path recurses on depth: deep trees go by remove_tree, even on failure."""
    yield
    while _made:
        remove_tree(_made.pop())


def _deep(root: Path, depth: int) -> Path:
    """``root/d/d/.../d/leaf`` with ``depth`` directories, made through descriptors (paths pass PATH_MAX)."""
    root.mkdir()
    _made.append(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"bottom\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return root


def test_walk_order_events_and_one_descriptor_at_any_depth(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "b" / "c").mkdir(parents=True)
    (root / "a").write_text("a")
    (root / "b" / "c" / "f").write_text("f")
    (root / "b" / "link").symlink_to("/")
    events = [(kind, e.rel.decode()) for kind, e in walk(root)]
    assert events == [(FILE, "a"), (ENTER, "b"), (ENTER, "b/c"), (FILE, "b/c/f"), (LEAVE, "b/c"),
                      (FILE, "b/link"), (LEAVE, "b")]
    deep = _deep(tmp_path / "deep", 5000)
    fds_before = len(os.listdir("/proc/self/fd"))
    most = 0
    count = 0
    for kind, _entry in walk(deep):
        count += kind != LEAVE
        most = max(most, len(os.listdir("/proc/self/fd")) - fds_before) if count % 500 == 0 else most
    assert count == 5001 and most <= 2


def test_a_symlink_swapped_in_for_a_directory_is_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "inside").write_text("x")
    seen = []
    for kind, entry in walk(root):
        seen.append((kind, entry.rel.decode()))
        if kind == ENTER and entry.rel == b"a":
            # between the listing of a and the look at a/b: b becomes a link to the host's root
            (root / "a" / "b" / "inside").unlink()
            (root / "a" / "b").rmdir()
            (root / "a" / "b").symlink_to("/")
    assert seen == [(ENTER, "a"), (FILE, "a/b"), (LEAVE, "a")]


def test_a_directory_moved_away_during_the_walk_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "a" / "b").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    with pytest.raises(TreeChanged, match="was moved while it was being walked"):
        for kind, entry in walk(root):
            if kind == ENTER and entry.rel == b"a/b":
                (root / "a" / "b").rename(root / "elsewhere" / "b")


@pytest.mark.slow
def test_remove_tree_of_a_5000_deep_tree_with_a_locked_directory(tmp_path: Path) -> None:
    deep = _deep(tmp_path / "deep", 5000)
    (deep / "d" / "locked").mkdir()
    (deep / "d" / "locked" / "f").write_text("x")
    (deep / "d" / "locked").chmod(0)
    (deep / "link").symlink_to(tmp_path)  # a link out: unlinked, not followed
    keep = tmp_path / "keep"
    keep.write_text("stays")
    remove_tree(deep)
    assert not deep.exists() and keep.read_text() == "stays"
    remove_tree(deep)  # absent: nothing to do


@pytest.mark.slow
def test_write_layer_of_a_5000_deep_tree(tmp_path: Path) -> None:
    deep = _deep(tmp_path / "deep", 5000)
    out = io.BytesIO()
    write_layer(deep, out, Compression.NONE)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = tar.getmembers()
    assert len(members) == 5001
    assert members[-1].name == "d/" * 5000 + "leaf" and members[-1].size == 7
