"""The id mapping a rootless namespace gets, from /etc/subuid-style files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.errors import RootlessError
from pybuild.linux import userns


def write_etc(tmp_path: Path, subuid: str, subgid: str) -> Path:
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subgid)
    return tmp_path


def test_ranges_by_name_or_uid_in_order(tmp_path: Path) -> None:
    etc = write_etc(tmp_path, "# comment\nalice:100000:65536\nbob:200000:65536\n1000:300000:10\n\nbad line\n",
                    "alice:100000:65536\n")
    assert userns.subordinate_ranges(etc / "subuid", "alice", 1000) == [(100000, 65536), (300000, 10)]
    mapping = userns.plan_mapping(1000, 1000, "alice", etc)
    assert mapping.uids == (userns.IdRange(0, 1000, 1), userns.IdRange(1, 100000, 65536),
                            userns.IdRange(65537, 300000, 10))
    assert mapping.gids == (userns.IdRange(0, 1000, 1), userns.IdRange(1, 100000, 65536))
    assert not mapping.single and mapping.uid_count() == 65547


def test_no_ranges_is_a_single_mapping(tmp_path: Path) -> None:
    etc = write_etc(tmp_path, "bob:200000:65536\nalice:1:0\nalice:x:5\n", "")
    mapping = userns.plan_mapping(1000, 1000, "alice", etc)
    assert mapping.single and mapping.uids == (userns.IdRange(0, 1000, 1),)
    assert userns.subordinate_ranges(tmp_path / "missing", "alice", 1000) == []


def test_runtime_dir_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with pytest.raises(RootlessError, match="XDG_RUNTIME_DIR is not set"):
        userns.runtime_dir()


def test_default_store_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/data/home")
    assert userns.default_store_root() == "/data/home/pybuild"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/alice")
    assert userns.default_store_root() == "/home/alice/.local/share/pybuild"


def test_root_is_not_rootless() -> None:
    assert not userns.rootless()
    assert userns.gid_mapped(5)
