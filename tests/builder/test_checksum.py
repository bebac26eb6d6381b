"""Content checksums of COPY sources and their memo in the store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pybuild.builder import checksum as checksum_mod
from pybuild.builder.checksum import ChecksumCache, checksum_sources
from pybuild.builder.context import Context

AGE = checksum_mod.RACY_NS / 1e9 + 0.05  # how long to wait until fresh files may be memoised


@pytest.fixture
def ctx_dir(workdir: Path) -> Path:
    root = workdir / "ctx"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "src" / "b.txt").write_text("beta\n")
    (root / "src" / "sub" / "c.txt").write_text("gamma\n")
    os.symlink("a.txt", root / "src" / "link")
    (root / "top.txt").write_text("top\n")
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file whose content the checksum code reads."""
    seen: list[str] = []
    real = checksum_mod.file_digest

    def counting(path: str) -> str:
        seen.append(path)
        return str(real(path))

    monkeypatch.setattr(checksum_mod, "file_digest", counting)
    return seen


def _sum(root: Path, sources: list[str], cache: ChecksumCache | None = None, **kw: Any) -> str:
    return str(checksum_sources(Context.from_dir(root), sources, cache=cache, **kw))


def test_touch_keeps_the_checksum_and_changes_do_not(ctx_dir: Path) -> None:
    base = _sum(ctx_dir, ["src", "top.txt"])
    assert base.startswith("sha256:") and len(base) == 71
    os.utime(ctx_dir / "src" / "a.txt", (1, 1))
    os.utime(ctx_dir / "src" / "sub", (2, 2))
    assert _sum(ctx_dir, ["src", "top.txt"]) == base

    (ctx_dir / "src" / "a.txt").write_text("ALPHA\n")
    edited = _sum(ctx_dir, ["src", "top.txt"])
    assert edited != base
    (ctx_dir / "src" / "a.txt").write_text("alpha\n")
    assert _sum(ctx_dir, ["src", "top.txt"]) == base

    os.chmod(ctx_dir / "src" / "b.txt", 0o755)
    assert _sum(ctx_dir, ["src", "top.txt"]) != base
    os.chmod(ctx_dir / "src" / "b.txt", 0o644)
    assert _sum(ctx_dir, ["src", "top.txt"]) == base

    os.chown(ctx_dir / "src" / "sub" / "c.txt", 1000, 1000)
    assert _sum(ctx_dir, ["src", "top.txt"]) != base
    os.chown(ctx_dir / "src" / "sub" / "c.txt", 0, 0)
    assert _sum(ctx_dir, ["src", "top.txt"]) == base

    os.unlink(ctx_dir / "src" / "link")
    os.symlink("b.txt", ctx_dir / "src" / "link")
    assert _sum(ctx_dir, ["src", "top.txt"]) != base
    os.unlink(ctx_dir / "src" / "link")
    os.symlink("a.txt", ctx_dir / "src" / "link")
    assert _sum(ctx_dir, ["src", "top.txt"]) == base

    os.setxattr(ctx_dir / "top.txt", "user.note", b"x")
    assert _sum(ctx_dir, ["src", "top.txt"]) != base
    os.removexattr(ctx_dir / "top.txt", "user.note")
    assert _sum(ctx_dir, ["src", "top.txt"]) == base

    (ctx_dir / "src" / "new.txt").write_text("")
    assert _sum(ctx_dir, ["src", "top.txt"]) != base


def test_names_order_ignores_and_excludes_count(ctx_dir: Path) -> None:
    base = _sum(ctx_dir, ["src", "top.txt"])
    assert _sum(ctx_dir, ["top.txt", "src"]) != base
    assert _sum(ctx_dir, ["src/a.txt"]) != _sum(ctx_dir, ["src/link"])  # same content, another name
    assert _sum(ctx_dir, ["src/*.txt"]) == _sum(ctx_dir, ["src/*.txt"])
    excluded = _sum(ctx_dir, ["src"], excludes=["sub"])
    assert excluded != _sum(ctx_dir, ["src"])
    (ctx_dir / "src" / "sub" / "c.txt").write_text("changed\n")
    assert _sum(ctx_dir, ["src"], excludes=["sub"]) == excluded  # excluded content does not count
    (ctx_dir / ".dockerignore").write_text("src/b.txt\n")
    ignored = _sum(ctx_dir, ["src"])
    (ctx_dir / "src" / "b.txt").write_text("whatever\n")
    assert _sum(ctx_dir, ["src"]) == ignored


def test_ignored_files_are_never_read(ctx_dir: Path, reads: list[str]) -> None:
    (ctx_dir / "src" / "secret.key").write_text("k")
    os.mkfifo(ctx_dir / "src" / "pipe")  # would block if anything opened it
    (ctx_dir / ".dockerignore").write_text("**/*.key\nsrc/pipe\n")
    checksum_sources(Context.from_dir(ctx_dir), ["src"])
    assert sorted(Path(p).name for p in reads) == ["a.txt", "b.txt", "c.txt"]


def test_memo_serves_an_unchanged_context_without_reading(ctx_dir: Path, workdir: Path, reads: list[str]) -> None:
    db = workdir / "root" / "builder" / "checksums.db"
    cache = ChecksumCache.for_store(workdir / "root")
    time.sleep(AGE)
    first = _sum(ctx_dir, ["src", "top.txt"], cache)
    assert len(reads) == 4 and cache.misses == 4 and cache.hits == 0
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM files").fetchone()[0] == 4
    cache.close()

    reads.clear()
    again = ChecksumCache(db)  # a new connection, as another process would have
    assert _sum(ctx_dir, ["src", "top.txt"], again) == first
    assert reads == [] and again.hits == 4 and again.misses == 0

    os.utime(ctx_dir / "top.txt", (5, 5))  # touch: re-read once, same checksum
    time.sleep(AGE)
    assert _sum(ctx_dir, ["src", "top.txt"], again) == first
    assert [Path(p).name for p in reads] == ["top.txt"]

    reads.clear()
    (ctx_dir / "src" / "a.txt").write_text("ALPHA\n")
    assert _sum(ctx_dir, ["src", "top.txt"], again) != first
    assert [Path(p).name for p in reads] == ["a.txt"]
    again.close()


def test_racily_fresh_files_are_not_memoised(workdir: Path, reads: list[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = workdir / "ctx"
    root.mkdir()
    (root / "f").write_text("1")
    cache = ChecksumCache(workdir / "memo.db")
    monkeypatch.setattr(checksum_mod, "RACY_NS", 3600 * 10**9)  # everything counts as just modified
    _sum(root, ["f"], cache)
    _sum(root, ["f"], cache)
    assert len(reads) == 2  # its timestamps cannot be trusted yet: not memoised
    monkeypatch.setattr(checksum_mod, "RACY_NS", 0)
    _sum(root, ["f"], cache)
    _sum(root, ["f"], cache)
    assert len(reads) == 3
    cache.close()


def test_large_context_second_run_reads_nothing(workdir: Path, reads: list[str]) -> None:
    root = workdir / "ctx"
    root.mkdir()
    block = os.urandom(1 << 20)
    for i in range(30):  # 150 MB
        with open(root / f"blob{i:02d}", "wb") as f:
            for _ in range(5):
                f.write(block)
    time.sleep(AGE)
    cache = ChecksumCache.for_store(workdir / "root")
    t0 = time.monotonic()
    first = _sum(root, ["."], cache)
    cold = time.monotonic() - t0
    assert len(reads) == 30
    reads.clear()
    t0 = time.monotonic()
    assert _sum(root, ["."], cache) == first
    warm = time.monotonic() - t0
    assert reads == [] and cache.hits == 30
    assert warm < cold
    cache.close()


_CHILD = """
import sys
from pybuild.builder.checksum import ChecksumCache, checksum_sources
from pybuild.builder.context import Context
cache = ChecksumCache(sys.argv[2])
for _ in range(5):
    print(checksum_sources(Context.from_dir(sys.argv[1]), ["src", "top.txt"], cache=cache))
cache.close()
"""


def test_concurrent_processes_share_the_memo(ctx_dir: Path, workdir: Path) -> None:
    time.sleep(AGE)
    db = workdir / "shared.db"
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(ctx_dir), str(db)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    sums = {line for out, _ in outputs for line in out.split()}
    assert sums == {checksum_sources(Context.from_dir(ctx_dir), ["src", "top.txt"])}


def test_corrupt_memo_is_replaced(workdir: Path, ctx_dir: Path) -> None:
    db = workdir / "bad.db"
    db.write_bytes(b"this is not a database" * 100)
    cache = ChecksumCache(db)
    assert _sum(ctx_dir, ["src"], cache) == _sum(ctx_dir, ["src"])
    cache.close()
