"""pybuild.linux.safefs: staying inside a tree that holds hostile links."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pybuild.linux import safefs


def test_links_resolve_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")
    (root / "up").symlink_to("../../../../etc")
    assert safefs.secure_join(str(root), "/abs/passwd") == str(root / "etc" / "passwd")
    assert safefs.secure_join(str(root), "up/passwd") == str(root / "etc" / "passwd")
    assert safefs.secure_join(str(root), "../../x") == str(root / "x")
    assert safefs.resolve_beneath(str(root), "missing/deeper") == ["missing", "deeper"]


def test_without_keep_missing_a_missing_or_blocked_path_is_none(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert safefs.resolve_beneath(str(tmp_path), "nope", keep_missing=False) is None
    assert safefs.resolve_beneath(str(tmp_path), "file/below", keep_missing=False) is None
    assert safefs.resolve_beneath(str(tmp_path), "dir/../file", keep_missing=False) == ["file"]


def test_a_link_the_caller_refuses_makes_the_path_none(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (tmp_path / "link").symlink_to("secret")
    seen: list[str] = []

    def allowed(rel: str, st: os.stat_result) -> bool:
        seen.append(rel)
        return False

    assert safefs.resolve_beneath(str(tmp_path), "link", keep_missing=False, link_allowed=allowed) is None
    assert seen == ["link"]


def test_a_link_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(safefs.TooManySymlinks) as info:
        safefs.secure_join(str(tmp_path), "a")
    assert info.value.errno == errno.ELOOP


def test_open_dir_at_never_follows_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    root = os.open(tmp_path, safefs.DIR_FLAGS)
    try:
        with pytest.raises(safefs.SymlinkInPath) as link:
            safefs.open_dir_at(root, "link")
        assert link.value.filename == "link"
        with pytest.raises(NotADirectoryError):
            safefs.open_dir_at(root, "file")
        fd = safefs.open_dir_path(root, ["made", "deeper"], create=True)
        os.close(fd)
        assert (tmp_path / "made" / "deeper").is_dir()
        with pytest.raises(FileNotFoundError):
            safefs.open_dir_at(root, "absent")
    finally:
        os.close(root)


def test_dir_chain_reuses_shared_parents_and_stops_at_links(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "evil").symlink_to("/")
    root = os.open(tmp_path, safefs.DIR_FLAGS)
    chain = safefs.DirChain(root)
    try:
        first = chain.parent((b"a", b"b"))
        assert chain.parent((b"a", b"b")) == first
        chain.parent((b"a", b"c"))
        assert chain.names == [b"a", b"c"]
        with pytest.raises(safefs.SymlinkInPath):
            chain.parent((b"a", b"evil", b"x"))
    finally:
        chain.close()
        os.close(root)
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "c", "evil"]


def test_create_replacing_removes_what_is_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "name" / "inside").mkdir(parents=True)
    root = os.open(tmp_path, safefs.DIR_FLAGS)
    try:
        fd = safefs.create_replacing(lambda: os.open("name", safefs.NEW_FILE_FLAGS, 0o600, dir_fd=root), root, "name")
        os.close(fd)
    finally:
        os.close(root)
    assert (tmp_path / "name").is_file()


def test_xattrs_round_trip_and_an_unsupported_target_reads_empty(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    safefs.write_xattrs(str(f), [("user.b", b"2"), ("user.a", b"1")])
    assert safefs.read_xattrs(str(f)) == [("user.a", b"1"), ("user.b", b"2")]
    fd = os.open(f, os.O_RDONLY)
    try:
        assert safefs.read_xattrs(fd) == [("user.a", b"1"), ("user.b", b"2")]
    finally:
        os.close(fd)
    assert safefs.read_xattrs(str(tmp_path / "absent")) == []
    # /proc files keep no xattrs: refused quietly, as tar and cp do
    safefs.write_xattrs("/proc/self/status", [("user.x", b"1")])
