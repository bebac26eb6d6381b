"""COPY and ADD into a destination root, checked against Docker's documented rules."""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import http.server
import io
import lzma
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from pybuild.builder.context import Context, SourceTree
from pybuild.builder.copy import ChmodSpec, CopySummary, copy_instruction, copy_sources, is_archive, resolve_dest
from pybuild.builder.parse import parse_dockerfile
from pybuild.errors import BuildError, UnsafeLayerError
from pybuild.linux import mount as _mount
from pybuild.store.layertar import apply_layer

MTIME = 1_600_000_000


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def ctx_dir(workdir: Path) -> Path:
    """A build context; every file owned by 1000:1000 with a fixed mtime."""
    root = workdir / "ctx"
    files = {
        "f.txt": "file\n",
        "g.txt": "gee\n",
        "one.md": "one\n",
        "dir/a": "a\n",
        "dir/sub/b": "b\n",
        "dir/notes.md": "notes\n",
        "x/a.txt": "xa\n",
        "y/a.txt": "ya\n",
        "x/y/a.txt": "xya\n",
        "x/y/b.txt": "xyb\n",
        "src/a.txt": "sa\n",
        "src/x/b.txt": "sxb\n",
        "src/x/y/c.txt": "sxyc\n",
        "src/x/y/d.md": "sxyd\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chmod(root / "dir" / "sub", 0o750)
    os.chmod(root / "f.txt", 0o640)
    os.symlink("f.txt", root / "link")
    os.symlink("../f.txt", root / "dir" / "rel-link")
    os.symlink("/etc/shadow", root / "dir" / "abs-link")
    os.link(root / "dir" / "a", root / "dir" / "a-hard")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            os.chown(p, 1000, 1000, follow_symlinks=False)
            os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    return root


@pytest.fixture
def ctx(ctx_dir: Path) -> Context:
    return Context.from_dir(ctx_dir)


@pytest.fixture
def dest(workdir: Path) -> Path:
    """A destination rootfs with /etc/passwd, /etc/group, an existing dir and file."""
    root = workdir / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002:app:/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:app\napp:x:1002:\n")
    (root / "existing").mkdir()
    os.chmod(root / "existing", 0o711)
    os.chown(root / "existing", 7, 8)
    (root / "existing-file").write_text("old\n")
    return root


def _copy(dest: Path, ctx: SourceTree, sources: list[str], to: str, **kw: Any) -> CopySummary:
    summary: CopySummary = copy_sources(dest, sources, to, tree=ctx, **kw)
    return summary


def _files(root: Path) -> dict[str, str]:
    """Relative path -> content / 'dir' / '-> target' for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_text()
    return out


# ---------------------------------------------------------------------------- source kinds x destination forms

CASES = [
    # (sources, dest, workdir, expected paths -> content)
    (["f.txt"], "/abs/", "/", {"abs/f.txt": "file\n"}),
    (["f.txt"], "/abs", "/", {"abs": "file\n"}),
    (["f.txt"], "/existing", "/", {"existing/f.txt": "file\n"}),
    (["f.txt"], "rel/", "/w", {"w/rel/f.txt": "file\n"}),
    (["f.txt"], ".", "/w", {"w/f.txt": "file\n"}),
    (["f.txt"], "new", "/w", {"w/new": "file\n"}),
    (["f.txt"], "/existing-file", "/", {"existing-file": "file\n"}),
    (["../f.txt"], "/up", "/", {"up": "file\n"}),
    (["/f.txt"], "/abs/", "/", {"abs/f.txt": "file\n"}),
    (["link"], "/abs/", "/", {"abs/link": "file\n"}),  # the source symlink is followed, keeps its name
    (["dir"], "/abs/", "/", {"abs/a": "a\n", "abs/sub/b": "b\n", "abs/notes.md": "notes\n"}),
    (["dir"], "/abs", "/", {"abs/a": "a\n", "abs/sub/b": "b\n"}),
    (["dir/"], "/existing/", "/", {"existing/a": "a\n", "existing/sub/b": "b\n"}),
    (["dir/sub"], "sub", "/w", {"w/sub/b": "b\n"}),
    (["*.txt"], "/abs/", "/", {"abs/f.txt": "file\n", "abs/g.txt": "gee\n"}),
    (["one*"], "/abs", "/", {"abs": "one\n"}),  # a wildcard matching one file may name a file
    (["f.txt", "g.txt"], "/abs/", "/", {"abs/f.txt": "file\n", "abs/g.txt": "gee\n"}),
    (["f.txt", "none*"], "/abs", "/", {"abs": "file\n"}),  # an empty wildcard is no source
    (["f.txt", "dir"], "/abs/", "/", {"abs/f.txt": "file\n", "abs/a": "a\n", "abs/sub/b": "b\n"}),
    # x/* matches x/a.txt and the directory x/y, whose *contents* land in /abs/ too (and win)
    (["x/*"], "/abs/", "/", {"abs/a.txt": "xya\n", "abs/b.txt": "xyb\n"}),
]


@pytest.mark.parametrize(("sources", "to", "wd", "expected"), CASES)
def test_copy_rules(dest: Path, ctx: Context, sources: list[str], to: str, wd: str,
                    expected: dict[str, str]) -> None:
    _copy(dest, ctx, sources, to, workdir=wd)
    got = _files(dest)
    for rel, content in expected.items():
        assert got.get(rel) == content, (rel, got)


ERRORS = [
    (["f.txt", "g.txt"], "/abs", "When using COPY with more than one source file, the destination must be a "
                                 "directory and end with a /"),
    (["*.txt"], "/abs", "When using COPY with more than one source file"),
    (["dir"], "/existing-file", "cannot copy to non-directory: /existing-file"),
    (["nosuch"], "/abs/", "COPY failed: file not found in build context or excluded by .dockerignore: "
                          "stat nosuch: file does not exist"),
    (["none*"], "/abs/", "COPY failed: no source files were specified"),
    (["http://example.com/x"], "/abs/", "source can't be a URL for COPY"),
]


@pytest.mark.parametrize(("sources", "to", "message"), ERRORS)
def test_copy_errors(dest: Path, ctx: Context, sources: list[str], to: str, message: str) -> None:
    with pytest.raises(BuildError) as err:
        _copy(dest, ctx, sources, to)
    assert str(err.value).startswith(message)


def test_file_onto_existing_directory_entry_is_an_error(dest: Path, ctx: Context) -> None:
    (dest / "d" / "f.txt").mkdir(parents=True)
    with pytest.raises(BuildError, match="cannot replace to directory /d/f.txt with file"):
        _copy(dest, ctx, ["f.txt"], "/d/")


def test_resolve_dest() -> None:
    assert resolve_dest("rel/", "/w") == ("/w/rel", True)
    assert resolve_dest(".", "/w") == ("/w", True)
    assert resolve_dest("x", "/w/") == ("/w/x", False)
    assert resolve_dest("/a/../../b", "/w") == ("/b", False)


# ---------------------------------------------------------------------------- metadata


def test_metadata_is_kept_owner_reset(dest: Path, ctx: Context) -> None:
    summary = _copy(dest, ctx, ["dir", "f.txt"], "/app/")
    app = dest / "app"
    st = os.stat(app)
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid, st.st_gid) == (0, 0)  # created, not copied
    st = os.lstat(app / "f.txt")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert st.st_mtime == MTIME
    st = os.lstat(app / "sub")
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime == MTIME
    # symlinks below the source are copied as symlinks, never followed
    assert os.readlink(app / "rel-link") == "../f.txt"
    assert os.readlink(app / "abs-link") == "/etc/shadow"
    assert os.lstat(app / "abs-link").st_uid == 0
    # hardlinks within the COPY stay hardlinks
    assert os.stat(app / "a").st_ino == os.stat(app / "a-hard").st_ino
    assert summary.files >= 5 and summary.symlinks == 2


def test_preserve_owner_for_stage_sources(dest: Path, ctx_dir: Path) -> None:
    _copy(dest, SourceTree(ctx_dir), ["f.txt"], "/s/", preserve_owner=True)
    st = os.lstat(dest / "s" / "f.txt")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_xattrs_are_kept(dest: Path, ctx_dir: Path) -> None:
    os.setxattr(ctx_dir / "f.txt", "user.origin", b"ctx")
    try:
        os.setxattr(ctx_dir / "g.txt", "security.selinux", b"system_u:object_r:etc_t:s0")
        selinux = True
    except OSError:
        selinux = False
    _copy(dest, Context.from_dir(ctx_dir), ["f.txt", "g.txt"], "/x/")
    assert os.getxattr(dest / "x" / "f.txt", "user.origin") == b"ctx"
    if selinux:
        assert "security.selinux" not in os.listxattr(dest / "x" / "g.txt") or \
            os.getxattr(dest / "x" / "g.txt", "security.selinux") != b"system_u:object_r:etc_t:s0"


def test_existing_destination_dirs_keep_their_metadata(dest: Path, ctx: Context) -> None:
    (dest / "existing" / "sub").mkdir()
    os.chmod(dest / "existing" / "sub", 0o700)
    _copy(dest, ctx, ["dir"], "/existing/")
    st = os.stat(dest / "existing")
    assert stat.S_IMODE(st.st_mode) == 0o711 and (st.st_uid, st.st_gid) == (7, 8)
    # a merged subdirectory takes the source's metadata (BuildKit)
    assert stat.S_IMODE(os.stat(dest / "existing" / "sub").st_mode) == 0o750


def test_epoch_sets_every_time(dest: Path, ctx: Context) -> None:
    _copy(dest, ctx, ["dir"], "/e/", epoch=1_000_000)
    for p in ("e/a", "e/sub", "e/sub/b", "e/rel-link"):
        assert os.lstat(dest / p).st_mtime == 1_000_000


# ---------------------------------------------------------------------------- --chown / --chmod


@pytest.mark.parametrize(("spec", "ids"), [
    ("app", (1001, 1002)),
    ("app:staff", (1001, 50)),
    ("1001", (1001, 1001)),
    ("55:staff", (55, 50)),
    ("10:11", (10, 11)),
    ("web:1002", (33, 1002)),
])
def test_chown(dest: Path, ctx: Context, spec: str, ids: tuple[int, int]) -> None:
    _copy(dest, ctx, ["dir"], "/home/app/data/", chown=spec)
    for p in ("home/app/data", "home/app/data/a", "home/app/data/sub/b", "home/app/data/rel-link"):
        st = os.lstat(dest / p)
        assert (st.st_uid, st.st_gid) == ids, p
    assert (os.stat(dest / "home").st_uid, os.stat(dest / "home").st_gid) == ids  # created parents too


def test_chown_unknown_names(dest: Path, ctx: Context) -> None:
    with pytest.raises(BuildError, match="unable to find user nobody"):
        _copy(dest, ctx, ["f.txt"], "/x", chown="nobody")
    with pytest.raises(BuildError, match="unable to find group wheel"):
        _copy(dest, ctx, ["f.txt"], "/x", chown="app:wheel")
    os.unlink(dest / "etc" / "passwd")
    with pytest.raises(BuildError, match="unable to find user app"):
        _copy(dest, ctx, ["f.txt"], "/x", chown="app")
    _copy(dest, ctx, ["f.txt"], "/x", chown="42")  # numeric ids need no lookup
    assert os.stat(dest / "x").st_uid == 42


def test_chown_reads_passwd_inside_the_root(dest: Path, ctx: Context, workdir: Path) -> None:
    os.unlink(dest / "etc" / "passwd")
    (workdir / "host-passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    os.symlink(str(workdir / "host-passwd"), dest / "etc" / "passwd")  # resolved inside the root
    with pytest.raises(BuildError, match="unable to find user evil"):
        _copy(dest, ctx, ["f.txt"], "/x", chown="evil")


@pytest.mark.parametrize(("spec", "file_mode", "dir_mode"), [
    ("0755", 0o755, 0o755),
    ("644", 0o644, 0o644),
    ("u+x,g-w", 0o740, 0o750),
    ("u=rwX,go=rX", 0o644, 0o755),
    ("+x", 0o751, 0o751),
    ("g=u", 0o660, 0o770),
    ("a-rwx,u+r", 0o400, 0o400),
    ("u+s", 0o4640, 0o4750),
])
def test_chmod(dest: Path, ctx: Context, spec: str, file_mode: int, dir_mode: int) -> None:
    _copy(dest, ctx, ["f.txt", "dir"], "/m/", chmod=spec)
    assert stat.S_IMODE(os.lstat(dest / "m" / "f.txt").st_mode) == file_mode  # source 0640
    assert stat.S_IMODE(os.lstat(dest / "m" / "sub").st_mode) == dir_mode  # source 0750
    assert stat.S_IMODE(os.stat(dest / "m").st_mode) == 0o755  # created dest dirs are not chmodded


def test_chmod_errors() -> None:
    with pytest.raises(BuildError, match="invalid chmod parameter: '08'. it should be octal"):
        ChmodSpec.parse("08")
    with pytest.raises(BuildError, match="invalid chmod parameter: '17777'"):
        ChmodSpec.parse("17777")
    with pytest.raises(BuildError, match="invalid chmod"):
        ChmodSpec.parse("u+q")
    assert ChmodSpec.parse("g-w,o=").apply(stat.S_IFREG | 0o777) == 0o750


# ---------------------------------------------------------------------------- --exclude, --parents, .dockerignore


def test_exclude(dest: Path, ctx: Context) -> None:
    _copy(dest, ctx, ["dir", "*.txt", "one.md"], "/e/", excludes=["*.md", "sub", "g.txt"])
    got = _files(dest / "e")
    assert "notes.md" not in got and "sub" not in got and "g.txt" not in got
    assert got["a"] == "a\n" and got["f.txt"] == "file\n"
    assert got["one.md"] == "one\n"  # a plain (non-wildcard) source is not filtered itself
    _copy(dest, ctx, ["src"], "/e2/", excludes=["**/*.txt", "!x/y/c.txt"])
    assert _files(dest / "e2") == {"x": "dir", "x/y": "dir", "x/y/c.txt": "sxyc\n", "x/y/d.md": "sxyd\n"}


def test_parents(dest: Path, ctx: Context) -> None:
    _copy(dest, ctx, ["./x/a.txt", "./y/a.txt"], "/no_parents/")
    assert _files(dest / "no_parents") == {"a.txt": "ya\n"}  # the later one wins
    _copy(dest, ctx, ["./x/a.txt", "./y/a.txt"], "/parents/", parents=True)
    assert _files(dest / "parents") == {"x": "dir", "x/a.txt": "xa\n", "y": "dir", "y/a.txt": "ya\n"}
    _copy(dest, ctx, ["./x/./y/*.txt"], "/pivot/", parents=True)
    assert _files(dest / "pivot") == {"y": "dir", "y/a.txt": "xya\n", "y/b.txt": "xyb\n"}
    _copy(dest, ctx, ["./src/**/*.txt"], "/star/", parents=True)
    assert _files(dest / "star") == {"src": "dir", "src/a.txt": "sa\n", "src/x": "dir", "src/x/b.txt": "sxb\n",
                                     "src/x/y": "dir", "src/x/y/c.txt": "sxyc\n"}
    _copy(dest, ctx, ["dir/sub"], "/whole/", parents=True)
    assert _files(dest / "whole") == {"dir": "dir", "dir/sub": "dir", "dir/sub/b": "b\n"}
    assert stat.S_IMODE(os.stat(dest / "whole" / "dir" / "sub").st_mode) == 0o750
    with pytest.raises(BuildError, match="stat x/nope: file does not exist"):
        _copy(dest, ctx, ["x/nope"], "/p/", parents=True)


def test_dockerignore_applies_to_copy(dest: Path, ctx_dir: Path) -> None:
    (ctx_dir / ".dockerignore").write_text("dir\n!dir/sub/b\n*.md\nsrc\n")
    _copy(dest, Context.from_dir(ctx_dir), ["."], "/app/")
    got = _files(dest / "app")
    assert got["dir/sub/b"] == "b\n"
    assert "dir/a" not in got and "one.md" not in got and "src" not in got
    assert got["f.txt"] == "file\n" and got[".dockerignore"].startswith("dir")


# ---------------------------------------------------------------------------- hostile destination roots


def test_hostile_dest_symlinks_stay_inside(workdir: Path, ctx: Context) -> None:
    root = workdir / "evil"
    (root / "etc").mkdir(parents=True)
    canary = workdir / "canary"
    canary.mkdir()
    (canary / "passwd").write_text("untouched\n")
    os.symlink("/etc", root / "app")
    os.symlink("../../..", root / "x")
    os.symlink(str(canary), root / "abs-canary")
    os.symlink("../canary/passwd", root / "etc" / "rel-canary")
    (root / "data").mkdir()
    os.symlink(str(canary), root / "data" / "sub")  # below the resolved destination

    _copy(root, ctx, ["f.txt"], "/app/passwd")
    assert (root / "etc" / "passwd").read_text() == "file\n"
    _copy(root, ctx, ["dir"], "/x/")
    assert (root / "a").read_text() == "a\n"
    _copy(root, ctx, ["g.txt"], "/abs-canary/passwd")
    assert (root / str(canary).lstrip("/") / "passwd").read_text() == "gee\n"
    _copy(root, ctx, ["f.txt"], "/etc/rel-canary")
    _copy(root, ctx, ["f.txt"], "/x/../../../canary/")
    with pytest.raises(BuildError, match="cannot copy to non-directory: /data/sub"):
        _copy(root, ctx, ["dir"], "/data/")
    copy_sources(root, [], "/app/x/../../../heredoc", heredocs=[("EOF", "hi\n")])
    assert (root / "heredoc").read_text() == "hi\n"
    copy_sources(root, [], "/hd/", heredocs=[("../../../../escape", "no\n")])  # a name, not a path
    assert (root / "hd" / "escape").read_text() == "no\n"

    assert (canary / "passwd").read_text() == "untouched\n"
    assert sorted(os.listdir(canary)) == ["passwd"]
    assert not (workdir / "a").exists() and not (workdir / "f.txt").exists()


def test_add_archive_cannot_write_through_dest_symlinks(workdir: Path, ctx_dir: Path) -> None:
    root = workdir / "evil"
    root.mkdir()
    canary = workdir / "canary"
    canary.mkdir()
    (root / "out").mkdir()
    os.symlink(str(canary), root / "out" / "lib")
    (ctx_dir / "evil.tar").write_bytes(_tar({"lib/payload": b"pwned"}))
    with pytest.raises(BuildError, match="symlink"):
        _copy(root, Context.from_dir(ctx_dir), ["evil.tar"], "/out/", add=True)
    assert list(canary.iterdir()) == []


# ---------------------------------------------------------------------------- heredocs


def test_heredocs(dest: Path) -> None:
    df = parse_dockerfile("FROM scratch\nCOPY --chmod=0755 <<EOF <<two /docs/\nhello\nEOF\nbye\ntwo\n"
                          "COPY <<EOF /single\nx\nEOF\n")
    first, second = df.stages[0].instructions
    summary = copy_instruction(first, dest, tree=None)
    assert (dest / "docs" / "EOF").read_text() == "hello\n"
    assert (dest / "docs" / "two").read_text() == "bye\n"
    assert stat.S_IMODE(os.stat(dest / "docs" / "EOF").st_mode) == 0o755
    assert summary.files == 2
    copy_instruction(second, dest, tree=None, heredocs=[("EOF", "expanded\n")])
    assert (dest / "single").read_text() == "expanded\n"
    assert stat.S_IMODE(os.stat(dest / "single").st_mode) == 0o644


def test_copy_instruction_from_parsed_dockerfile(dest: Path, ctx: Context) -> None:
    df = parse_dockerfile("FROM scratch\nCOPY --chown=app --exclude=*.md dir /srv/\n")
    [instr] = df.stages[0].instructions
    summary = copy_instruction(instr, dest, tree=ctx, workdir="/w")
    assert os.stat(dest / "srv" / "a").st_uid == 1001
    assert not (dest / "srv" / "notes.md").exists()
    assert "file" in str(summary)


# ---------------------------------------------------------------------------- ADD: local archives


def _tar(members: dict[str, bytes], uid: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            info.uid = info.gid = uid
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CODECS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: bytes(zstandard.ZstdCompressor().compress(b)),
}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_add_local_archive_each_codec(dest: Path, ctx_dir: Path, codec: str) -> None:
    data = CODECS[codec](_tar({"pkg/bin/tool": b"#!/bin/sh\n", "pkg/.wh.keep": b"plain file\n"}, uid=123))
    (ctx_dir / "archive.bin").write_bytes(data)  # recognised by content, not by name
    assert is_archive(str(ctx_dir / "archive.bin"))
    summary = _copy(dest, Context.from_dir(ctx_dir), ["archive.bin"], "/opt", add=True)
    assert (dest / "opt" / "pkg" / "bin" / "tool").read_text() == "#!/bin/sh\n"
    assert (dest / "opt" / "pkg" / ".wh.keep").read_text() == "plain file\n"  # no whiteout conversion
    st = os.lstat(dest / "opt" / "pkg" / "bin" / "tool")
    assert st.st_uid == 123 and stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime == MTIME
    assert summary.archives == 1


def test_add_non_archives_are_copied(dest: Path, ctx_dir: Path) -> None:
    (ctx_dir / "fake.tar.gz").write_text("not an archive\n")
    (ctx_dir / "text.gz").write_bytes(gzip.compress(b"compressed text, not a tar\n" * 40))
    ctx = Context.from_dir(ctx_dir)
    _copy(dest, ctx, ["fake.tar.gz", "text.gz"], "/d/", add=True)
    assert (dest / "d" / "fake.tar.gz").read_text() == "not an archive\n"
    assert gzip.decompress((dest / "d" / "text.gz").read_bytes()).startswith(b"compressed")
    _copy(dest, ctx, ["f.txt"], "/plain", add=True)
    assert (dest / "plain").read_text() == "file\n"
    with pytest.raises(BuildError, match="checksum requires HTTP"):
        _copy(dest, ctx, ["f.txt"], "/x", add=True, checksum="sha256:" + "0" * 64)
    with pytest.raises(BuildError, match="checksum can't be specified for COPY"):
        _copy(dest, ctx, ["f.txt"], "/x", checksum="sha256:" + "0" * 64)


def test_apply_layer_without_whiteouts(workdir: Path) -> None:
    """store.layertar: whiteouts=False creates .wh.* literally and still refuses overlay xattrs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("d/.wh.gone", "d/.wh..wh..opq"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        info = tarfile.TarInfo("e")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.kept": "v"}
        tar.addfile(info)
    plain = workdir / "plain"
    plain.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), plain, whiteouts=False)
    assert (plain / "d" / ".wh.gone").read_bytes() == b"x"
    assert (plain / "d" / ".wh..wh..opq").is_file()
    assert "trusted.overlay.opaque" not in os.listxattr(plain / "e")
    assert os.getxattr(plain / "e", "user.kept") == b"v"
    layer = workdir / "layer"
    layer.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), layer)  # the default still converts
    assert stat.S_ISCHR(os.lstat(layer / "d" / "gone").st_mode)
    assert not (layer / "d" / ".wh.gone").exists()
    with pytest.raises(UnsafeLayerError):
        evil = io.BytesIO()
        with tarfile.open(fileobj=evil, mode="w") as tar:
            info = tarfile.TarInfo("../x")
            info.size = 0
            tar.addfile(info)
        apply_layer(io.BytesIO(evil.getvalue()), plain, whiteouts=False)


# ---------------------------------------------------------------------------- ADD: URLs

LAST_MODIFIED = 1_500_000_000


@pytest.fixture
def http_root(workdir: Path) -> Iterator[tuple[str, Path]]:
    served = workdir / "www"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Last-Modified taken from their mtime (http.server does that)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(served: Path, name: str, data: bytes) -> str:
    (served / name).write_bytes(data)
    os.utime(served / name, (LAST_MODIFIED, LAST_MODIFIED))
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_add_url(dest: Path, http_root: tuple[str, Path], workdir: Path) -> None:
    base, served = http_root
    digest = _serve(served, "tool.bin", b"binary\x00payload")
    archive = gzip.compress(_tar({"inside": b"x"}))
    _serve(served, "bundle.tgz", archive)
    scratch = workdir / "scratch"
    scratch.mkdir()
    head = requests.head(f"{base}/tool.bin", timeout=10)
    assert head.headers["Last-Modified"] == formatdate(LAST_MODIFIED, usegmt=True)

    summary = copy_sources(dest, [f"{base}/tool.bin"], "/dl/", add=True, checksum=digest, scratch_dir=scratch)
    got = dest / "dl" / "tool.bin"
    assert got.read_bytes() == b"binary\x00payload"
    st = os.stat(got)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == LAST_MODIFIED and st.st_uid == 0
    assert summary.downloads == 1
    assert list(scratch.iterdir()) == []  # the temp file is gone

    copy_sources(dest, [f"{base}/tool.bin"], "/opt/renamed", add=True, chown="app", chmod="0755")
    st = os.stat(dest / "opt" / "renamed")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 1002, 0o755)

    copy_sources(dest, [f"{base}/bundle.tgz"], "/arch/", add=True)  # URL archives are not extracted
    assert (dest / "arch" / "bundle.tgz").read_bytes() == archive

    with pytest.raises(BuildError, match="digest mismatch"):
        copy_sources(dest, [f"{base}/tool.bin"], "/bad/", add=True, checksum="sha256:" + "1" * 64)
    assert not (dest / "bad" / "tool.bin").exists()
    with pytest.raises(BuildError, match="404"):
        copy_sources(dest, [f"{base}/missing"], "/m/", add=True)
    with pytest.raises(BuildError, match="invalid checksum"):
        copy_sources(dest, [f"{base}/tool.bin"], "/m/", add=True, checksum="md5:abc")


# ---------------------------------------------------------------------------- through a real overlay mount


def test_copy_through_overlay_keeps_lower_dir_metadata(workdir: Path, ctx: Context) -> None:
    for sub in ("lower", "upper", "work", "merged"):
        (workdir / sub).mkdir()
    lower = workdir / "lower"
    (lower / "etc").mkdir()
    (lower / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/:/bin/sh\n")
    (lower / "srv" / "www").mkdir(parents=True)
    os.chmod(lower / "srv", 0o710)
    os.chown(lower / "srv", 3, 4)
    os.chmod(lower / "srv" / "www", 0o750)
    os.chown(lower / "srv" / "www", 33, 33)
    (lower / "srv" / "www" / "old.html").write_text("old\n")
    _mount.mount_overlay(workdir, ["lower"], "upper", "work", workdir / "merged")
    try:
        merged = workdir / "merged"
        _copy(merged, ctx, ["dir"], "/srv/www/", chown="app")
        _copy(merged, ctx, ["f.txt"], "/srv/www/new/")
        for root in (merged, workdir / "upper"):
            st = os.stat(root / "srv")
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 3, 4)
            st = os.stat(root / "srv" / "www")
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 33, 33)
        assert (merged / "srv" / "www" / "old.html").read_text() == "old\n"
        assert (merged / "srv" / "www" / "sub" / "b").read_text() == "b\n"
        assert os.stat(merged / "srv" / "www" / "a").st_uid == 1001
        new = os.stat(merged / "srv" / "www" / "new")
        assert (stat.S_IMODE(new.st_mode), new.st_uid) == (0o755, 0)
        assert (workdir / "upper" / "srv" / "www" / "a").read_text() == "a\n"  # written to the upper dir
        assert not (workdir / "upper" / "srv" / "www" / "old.html").exists()  # untouched: not copied up
        assert not (lower / "srv" / "www" / "a").exists()
    finally:
        _mount.umount(workdir / "merged")
