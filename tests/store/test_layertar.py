from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.errors import DigestMismatch, LayerError, UnsafeLayerError
from pybuild.store.compression import Compression
from pybuild.store.layertar import AppliedLayer, LayerBlob, apply_layer, write_layer

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown, trusted.* xattrs)")

# security.capability v2: cap_net_bind_service (bit 10) permitted + effective
CAPABILITY = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")
EPOCH = 1_600_000_000
LONG_DIR = "d" * 70
LONG_FILE = "f" * 90  # LONG_DIR/LONG_FILE is > 100 bytes


# --------------------------------------------------------------------------- helpers


def build_tree(root: Path) -> None:
    """A tree with every kind of entry a layer can hold."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a").mkdir()
    (root / "a" / "hello.txt").write_bytes(b"hello world\n")
    (root / "a" / "big.bin").write_bytes(os.urandom(3 << 20) + b"text " * 100_000)
    (root / "a" / "empty").write_bytes(b"")
    os.link(root / "a" / "hello.txt", root / "a" / "z-hardlink")
    os.symlink("hello.txt", root / "a" / "rel-link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("x" * 150, root / "long-target-link")
    os.mkfifo(root / "fifo")
    (root / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    (root / "owned").write_bytes(b"owned by someone\n")
    (root / "caps").write_bytes(b"\x7fELF")
    (root / LONG_DIR).mkdir()
    (root / LONG_DIR / LONG_FILE).write_bytes(b"long name\n")
    (root / "ünïcode-名前").write_bytes(b"utf8 name\n")
    os.setxattr(root / "a" / "hello.txt", "user.foo", b"bar")
    os.setxattr(root / "a", "user.dir", b"dir xattr")
    # opaque dir with content, and a whiteout
    (root / "b").mkdir()
    (root / "b" / "kept").write_bytes(b"kept\n")
    if IS_ROOT:
        os.chown(root / "owned", 1234, 5678)
        os.chown(root / "abs-link", 4321, 8765, follow_symlinks=False)
        os.setxattr(root / "caps", "security.capability", CAPABILITY)
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "x", stat.S_IFCHR, os.makedev(0, 0))  # whiteout of "x"
        os.mknod(root / "b" / "gone", stat.S_IFCHR, os.makedev(0, 0))
        os.setxattr(root / "b", "trusted.overlay.opaque", b"y")
        os.setxattr(root / "abs-link", "trusted.on-symlink", b"v", follow_symlinks=False)
    set_times(root)


def set_times(root: Path, base: int = EPOCH - 1000) -> None:
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for i, p in enumerate(paths):
        os.utime(p, (base + i, base + i), follow_symlinks=False)


def snapshot(root: Path) -> dict[str, tuple]:  # type: ignore[type-arg]
    """Everything about a tree we expect a layer round trip to keep."""
    out: dict[str, tuple] = {}  # type: ignore[type-arg]
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                content = (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                xattrs = {k: os.getxattr(p, k, follow_symlinks=False)
                          for k in sorted(os.listxattr(p, follow_symlinks=False))}
            except OSError:
                xattrs = {}
            link_group = None
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                link_group = inodes.setdefault(st.st_ino, rel)
            mode = stat.S_IMODE(st.st_mode) if kind != stat.S_IFLNK else None
            out[rel] = (kind, mode, st.st_uid, st.st_gid, st.st_size if kind == stat.S_IFREG else 0,
                        content, xattrs, link_group, st.st_mtime_ns)
    return out


def gz_blob(src: Path, compression: Compression = Compression.GZIP, **kw: int) -> tuple[bytes, LayerBlob]:
    out = io.BytesIO()
    blob = write_layer(src, out, compression, **kw)
    return out.getvalue(), blob


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes = b"pwned\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


@pytest.fixture
def jail(tmp_path: Path) -> tuple[Path, Path]:
    """(target dir, canary file outside it)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_bytes(b"canary\n")
    target = tmp_path / "layer"
    target.mkdir()
    return target, canary


def assert_canary(canary: Path) -> None:
    assert canary.read_bytes() == b"canary\n"
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]
    assert not (canary.parent.parent / "pwned").exists()


def apply_bytes(data: bytes, target: Path, **kw: str) -> AppliedLayer:
    return apply_layer(io.BytesIO(data), target, **kw)


# --------------------------------------------------------------------------- writing


def test_write_layer_entries(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_tree(src)
    data, blob = gz_blob(src, Compression.NONE, source_date_epoch=EPOCH)
    assert blob.diff_id == blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blob.size == blob.uncompressed_size == len(data)
    assert blob.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    by_name = {m.name: m for m in members}
    # sorted, depth-first walk; dirs before their contents; no "./" or "/" prefix
    assert names[0] == "a"
    assert not any(n.startswith(("./", "/")) for n in names)
    assert names.index("a") < names.index("a/big.bin") < names.index("a/hello.txt")
    assert names.index("a/rel-link") < names.index("abs-link")
    assert f"{LONG_DIR}/{LONG_FILE}" in names
    assert by_name["a/z-hardlink"].type == tarfile.LNKTYPE
    assert by_name["a/z-hardlink"].linkname == "a/hello.txt"
    assert by_name["a/rel-link"].issym() and by_name["a/rel-link"].linkname == "hello.txt"
    assert by_name["long-target-link"].linkname == "x" * 150
    assert by_name["fifo"].isfifo()
    assert by_name["suid"].mode == 0o4755
    assert by_name["sticky"].mode == 0o1777 and by_name["sticky"].isdir()
    assert by_name["a/hello.txt"].pax_headers["SCHILY.xattr.user.foo"] == "bar"
    assert by_name["a"].pax_headers["SCHILY.xattr.user.dir"] == "dir xattr"
    for m in members:
        assert m.uname == "" and m.gname == ""
        assert m.mtime <= EPOCH
        assert "atime" not in m.pax_headers and "ctime" not in m.pax_headers
        assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for k in m.pax_headers)
    # raw header: directory names carry a trailing slash
    raw_names = [data[i:i + 100].rstrip(b"\0") for i in range(0, 512 * 4, 512)]
    assert b"a/" in raw_names
    if IS_ROOT:
        assert (by_name["owned"].uid, by_name["owned"].gid) == (1234, 5678)
        assert (by_name["abs-link"].uid, by_name["abs-link"].gid) == (4321, 8765)
        cap = by_name["caps"].pax_headers["SCHILY.xattr.security.capability"]
        assert cap.encode("utf-8", "surrogateescape") == CAPABILITY
        assert by_name["null"].ischr() and (by_name["null"].devmajor, by_name["null"].devminor) == (1, 3)
        # whiteout char dev 0/0 -> .wh.x ; opaque dir -> b/.wh..wh..opq right after b/
        assert ".wh.x" in names and "x" not in names
        assert by_name[".wh.x"].isreg() and by_name[".wh.x"].size == 0
        assert names[names.index("b") + 1] == "b/.wh..wh..opq"
        assert "b/.wh.gone" in names and "b/gone" not in names


def test_gnu_tar_lists_layer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_tree(src)
    path = tmp_path / "layer.tar.gz"
    with open(path, "wb") as f:
        write_layer(src, f, Compression.GZIP)
    proc = subprocess.run(["tar", "-tvzf", str(path)], capture_output=True, text=True, check=True)
    listing = proc.stdout
    assert f"{LONG_DIR}/{LONG_FILE}" in listing
    assert "a/z-hardlink link to a/hello.txt" in listing
    assert "long-target-link -> " + "x" * 150 in listing
    if IS_ROOT:
        assert "b/.wh..wh..opq" in listing
        assert " 1234/5678 " in listing
    subprocess.run(["gzip", "-t", str(path)], check=True)


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_round_trip(tmp_path: Path, compression: Compression) -> None:
    src = tmp_path / "src"
    build_tree(src)
    data, blob = gz_blob(src, compression)
    dst = tmp_path / "dst"
    dst.mkdir()
    applied = apply_bytes(data, dst, expected_diff_id=blob.diff_id)
    assert applied.diff_id == blob.diff_id
    assert applied.size == blob.uncompressed_size
    assert snapshot(dst) == snapshot(src)
    assert os.stat(dst / "a" / "z-hardlink").st_ino == os.stat(dst / "a" / "hello.txt").st_ino
    if IS_ROOT:
        assert os.getxattr(dst / "caps", "security.capability") == CAPABILITY
        assert os.getxattr(dst / "b", "trusted.overlay.opaque") == b"y"
        st = os.lstat(dst / "x")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    # and writing the applied tree gives the very same layer
    assert gz_blob(dst, compression)[1] == blob


def test_non_utf8_names_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    name = b"latin1-\xe9t\xe9"
    with open(os.path.join(os.fsencode(src), name), "wb") as f:
        f.write(b"bytes name\n")
    long_name = b"\xff" * 120
    with open(os.path.join(os.fsencode(src), long_name), "wb") as f:
        f.write(b"long bytes name\n")
    data, blob = gz_blob(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    apply_bytes(data, dst, expected_diff_id=blob.diff_id)
    assert sorted(os.listdir(os.fsencode(dst))) == sorted([name, long_name])


def test_deterministic_with_source_date_epoch(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_tree(src)
    os.utime(src / "a" / "hello.txt", (EPOCH + 10, EPOCH + 10))  # changed after the epoch
    os.utime(src / "a", (EPOCH + 20, EPOCH + 20))
    _, first = gz_blob(src, source_date_epoch=EPOCH)
    _, second = gz_blob(src, source_date_epoch=EPOCH)
    assert first == second
    # touching it (or its dir) again, beyond the epoch, changes nothing: mtimes are clamped
    os.utime(src / "a" / "hello.txt", (EPOCH + 5000, EPOCH + 5000))
    os.utime(src / "a", (EPOCH + 99999, EPOCH + 99999))
    _, third = gz_blob(src, source_date_epoch=EPOCH)
    assert third == first
    _, unclamped = gz_blob(src)
    assert unclamped.diff_id != first.diff_id
    # an mtime before the epoch is kept: different digests
    os.utime(src / "a" / "hello.txt", (EPOCH - 5, EPOCH - 5))
    _, fourth = gz_blob(src, source_date_epoch=EPOCH)
    assert fourth.diff_id != first.diff_id and fourth.digest != first.digest


def test_same_tree_twice_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_tree(src)
    a, _ = gz_blob(src)
    b, _ = gz_blob(src)
    assert a == b


def test_write_layer_rejects_non_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(LayerError):
        write_layer(tmp_path / "file", io.BytesIO())
    with pytest.raises(LayerError):
        write_layer(tmp_path / "missing", io.BytesIO())


class FailingSink:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > 100_000:
            raise OSError(28, "No space left on device")
        return len(data)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.NONE])
def test_write_layer_sink_error_is_layer_error(tmp_path: Path, compression: Compression) -> None:
    src = tmp_path / "src"
    build_tree(src)
    with pytest.raises(LayerError, match="cannot write layer: No space left"):
        write_layer(src, FailingSink(), compression)  # type: ignore[arg-type]


def test_write_layer_skips_sockets(tmp_path: Path) -> None:
    import socket

    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"x")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "sock"))
        data, _ = gz_blob(src, Compression.NONE)
    finally:
        sock.close()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert tf.getnames() == ["file"]


def test_large_file_header_uses_pax_size() -> None:
    from pybuild.store import tarformat

    size = (8 << 30) + 12345
    header = tarformat.entry_header(b"huge.bin", 0o644, 0, 0, size, 0, b"0")
    with tarfile.open(fileobj=io.BytesIO(header), mode="r|") as tf:
        info = tf.next()
    assert info is not None and info.size == size and info.name == "huge.bin"


def test_empty_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data, blob = gz_blob(src, Compression.NONE)
    assert data == bytes(1024)
    dst = tmp_path / "dst"
    dst.mkdir()
    assert apply_bytes(data, dst).diff_id == blob.diff_id
    assert list(dst.iterdir()) == []


# --------------------------------------------------------------------------- applying


def test_apply_digest_mismatch(tmp_path: Path) -> None:
    data = tar_bytes(reg("file", b"content"))
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(DigestMismatch):
        apply_bytes(data, target, expected_diff_id="sha256:" + "0" * 64)
    target2 = tmp_path / "t2"
    target2.mkdir()
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert apply_bytes(data, target2, expected_diff_id=good).diff_id == good


def test_diff_id_covers_trailing_bytes(tmp_path: Path) -> None:
    data = tar_bytes(reg("file", b"content")) + bytes(10240) + b"trailing"
    target = tmp_path / "t"
    target.mkdir()
    applied = apply_bytes(data, target)
    assert applied.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert applied.size == len(data)


def test_apply_replaces_existing_entries(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    (target / "was-dir").mkdir()
    (target / "was-dir" / "child").write_bytes(b"x")
    (target / "was-file").write_bytes(b"old")
    (target / "keep-dir").mkdir()
    (target / "keep-dir" / "child").write_bytes(b"kept")
    other = tmp_path / "other"
    other.write_bytes(b"other")
    os.link(other, target / "hardlinked")
    data = tar_bytes(
        reg("was-dir", b"now a file"),
        directory("was-file"),
        directory("keep-dir"),
        reg("hardlinked", b"new content"),
    )
    apply_bytes(data, target)
    assert (target / "was-dir").read_bytes() == b"now a file"
    assert (target / "was-file").is_dir()
    assert (target / "keep-dir" / "child").read_bytes() == b"kept"
    assert (target / "hardlinked").read_bytes() == b"new content"
    assert other.read_bytes() == b"other"  # unlinked, not truncated through the link


def test_apply_creates_missing_parents_and_skips_root(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    os.chmod(target, 0o711)
    data = tar_bytes(directory("./"), reg("./deep/er/file", b"x"), reg("/abs/file", b"y"))
    apply_bytes(data, target)
    assert (target / "deep" / "er" / "file").read_bytes() == b"x"
    assert (target / "abs" / "file").read_bytes() == b"y"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o711


def test_apply_gnu_tar_output(tmp_path: Path) -> None:
    """Layers made by GNU tar (GNU long names, ./ prefixes) apply too."""
    src = tmp_path / "src"
    build_tree(src)
    path = tmp_path / "gnu.tar"
    subprocess.run(["tar", "--format=gnu", "--numeric-owner", "-C", str(src), "-cf", str(path), "."],
                   check=True)
    dst = tmp_path / "dst"
    dst.mkdir()
    with open(path, "rb") as f:
        apply_layer(f, dst)
    want = {k: v[:6] for k, v in snapshot(src).items() if not k.startswith(("x", "b/gone"))}
    got = {k: v[:6] for k, v in snapshot(dst).items() if not k.startswith(("x", "b/gone"))}
    assert got == want


def test_apply_pax_global_header_and_hardlink_over_existing(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tf:
        for info, data in (reg("first", b"1"), reg("second", b"2"),
                           link("second", "first", tarfile.LNKTYPE)):
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    target = tmp_path / "t"
    target.mkdir()
    apply_bytes(buf.getvalue(), target)
    assert (target / "second").read_bytes() == b"1"
    assert os.stat(target / "second").st_ino == os.stat(target / "first").st_ino
    assert sorted(os.listdir(target)) == ["first", "second"]


def test_apply_ignores_forged_overlay_xattrs(tmp_path: Path) -> None:
    info, data = reg("file", b"x")
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                        "SCHILY.xattr.user.ok": "fine"}
    d, _ = directory("dir")
    d.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y"}
    target = tmp_path / "t"
    target.mkdir()
    apply_bytes(tar_bytes((info, data), (d, None)), target)
    assert os.listxattr(target / "file") == ["user.ok"]
    assert "trusted.overlay.opaque" not in os.listxattr(target / "dir")


@needs_root
def test_apply_whiteouts(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    (target / "victim").mkdir()
    (target / "victim" / "inner").write_bytes(b"x")
    data = tar_bytes(directory("d"), reg("d/.wh..wh..opq", b""), reg(".wh.victim", b""),
                     reg("d/.wh.gone", b""), reg(".wh..wh.plnk", b""))
    apply_bytes(data, target)
    for p in (target / "victim", target / "d" / "gone"):
        st = os.lstat(p)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(target / "d", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(target)) == ["d", "victim"]
    assert os.listdir(target / "d") == ["gone"]


def test_apply_rejects_garbage(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(LayerError):
        apply_bytes(b"this is not a tar archive at all" * 20, target)
    data = tar_bytes(reg("file", b"x" * 5000))
    with pytest.raises(LayerError):
        apply_bytes(data[:1500], target)  # truncated inside the data


# --------------------------------------------------------------------------- hostile tars


def test_hostile_dotdot_traversal(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(reg("../outside/canary.txt"))
    with pytest.raises(UnsafeLayerError, match=r'layer entry "\.\./outside/canary\.txt": path escapes'):
        apply_bytes(data, target)
    assert_canary(canary)
    data = tar_bytes(reg("ok/../../pwned"))
    with pytest.raises(UnsafeLayerError, match="escapes"):
        apply_bytes(data, target)
    assert_canary(canary)


def test_hostile_absolute_path_lands_inside(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(reg(str(canary)))
    apply_bytes(data, target)
    assert_canary(canary)
    assert (target / str(canary).lstrip("/")).read_bytes() == b"pwned\n"


def test_hostile_absolute_dotdot_escape(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(reg("/../../outside/canary.txt"))
    with pytest.raises(UnsafeLayerError, match="escapes the layer"):
        apply_bytes(data, target)
    assert_canary(canary)


def test_hostile_symlink_then_write_through(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("evil", str(canary.parent)), reg("evil/canary.txt"), reg("evil/pwned"))
    with pytest.raises(UnsafeLayerError, match=r'layer entry "evil/canary\.txt": .*symlink'):
        apply_bytes(data, target)
    assert_canary(canary)
    assert os.readlink(target / "evil") == str(canary.parent)  # the link itself is harmless data


def test_hostile_symlink_to_dotdot(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("up", ".."), reg("up/outside/canary.txt"))
    with pytest.raises(UnsafeLayerError, match="symlink"):
        apply_bytes(data, target)
    assert_canary(canary)
    data = tar_bytes(link("sub/up", "../.."), directory("sub/up/outside/"))
    with pytest.raises(UnsafeLayerError, match="symlink"):
        apply_bytes(data, target)
    assert_canary(canary)


def test_hostile_preexisting_symlink_in_target(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    os.symlink(canary.parent, target / "planted")
    with pytest.raises(UnsafeLayerError, match="symlink"):
        apply_bytes(tar_bytes(reg("planted/canary.txt")), target)
    assert_canary(canary)


def test_hostile_symlink_leaf_is_replaced_not_followed(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("evil", str(canary)), reg("evil"))
    apply_bytes(data, target)
    assert_canary(canary)
    assert (target / "evil").read_bytes() == b"pwned\n"
    assert not (target / "evil").is_symlink()


def test_hostile_hardlink_outside(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("evil", "../outside/canary.txt", tarfile.LNKTYPE), reg("evil"))
    with pytest.raises(UnsafeLayerError, match=r'layer entry "evil": path escapes'):
        apply_bytes(data, target)
    assert_canary(canary)
    assert os.stat(canary).st_nlink == 1
    data = tar_bytes(link("evil", str(canary), tarfile.LNKTYPE))  # absolute: inside, missing
    with pytest.raises(UnsafeLayerError, match="does not exist"):
        apply_bytes(data, target)
    assert os.stat(canary).st_nlink == 1


def test_hostile_hardlink_through_symlinked_dir(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("dir", str(canary.parent)), link("evil", "dir/canary.txt", tarfile.LNKTYPE),
                     reg("evil"))
    with pytest.raises(UnsafeLayerError, match="symlink"):
        apply_bytes(data, target)
    assert_canary(canary)
    assert os.stat(canary).st_nlink == 1


def test_hostile_hardlink_to_symlink_is_not_followed(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("sym", str(canary)), link("hard", "sym", tarfile.LNKTYPE))
    apply_bytes(data, target)
    assert (target / "hard").is_symlink()
    assert os.stat(canary).st_nlink == 1
    assert_canary(canary)


def test_hostile_hardlink_missing_target(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    with pytest.raises(UnsafeLayerError, match="does not exist"):
        apply_bytes(tar_bytes(link("evil", "nope/nothing", tarfile.LNKTYPE)), target)
    with pytest.raises(UnsafeLayerError, match="does not exist"):
        apply_bytes(tar_bytes(link("evil", "nothing", tarfile.LNKTYPE)), target)
    assert_canary(canary)


@pytest.mark.parametrize("name", [".wh..", ".wh...", "a/.wh...", "../.wh.canary.txt",
                                  "../outside/.wh.canary.txt", "a/../../.wh.outside",
                                  ".wh.../../../.wh.canary.txt"])
def test_hostile_whiteout_traversal(jail: tuple[Path, Path], name: str) -> None:
    target, canary = jail
    with pytest.raises(UnsafeLayerError, match=r"layer entry .*(escapes|invalid whiteout)"):
        apply_bytes(tar_bytes(directory("a"), reg(name, b"")), target)
    assert_canary(canary)
    assert canary.parent.parent.joinpath("outside").is_dir()


def test_hostile_whiteout_through_symlink(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    data = tar_bytes(link("evil", str(canary.parent)), reg("evil/.wh.canary.txt", b""))
    with pytest.raises(UnsafeLayerError, match="symlink"):
        apply_bytes(data, target)
    assert_canary(canary)


def test_hostile_device_only_inside(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    info = tarfile.TarInfo("../outside/dev")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    with pytest.raises(UnsafeLayerError, match="escapes"):
        apply_bytes(tar_bytes((info, None)), target)
    assert_canary(canary)


def test_hostile_nul_in_pax_path(jail: tuple[Path, Path]) -> None:
    target, canary = jail
    info, data = reg("placeholder")
    info.pax_headers = {"path": "ok\x00/../../outside/canary.txt"}
    with pytest.raises(LayerError):
        apply_bytes(tar_bytes((info, data)), target)
    assert_canary(canary)


def test_a_file_that_shrinks_is_an_error_unless_the_tree_is_live(tmp_path: Path) -> None:
    """A layer is written from a tree that stands still, so a short read is an error; a running container's
    export (``live``) makes the missing bytes up with zeros, as GNU tar does."""
    from pybuild.store.compression import open_compressor
    from pybuild.store.tarstream import TarWriter

    short = tmp_path / "short"
    short.write_bytes(b"abc")
    fd = os.open(short, os.O_RDONLY)
    try:
        strict = TarWriter(open_compressor(io.BytesIO(), Compression.NONE), threaded=False, hash_tar=False)
        with pytest.raises(LayerError, match="short: file shrank while it was being read"):
            strict.copy_file(fd, 10, b"short")
        os.lseek(fd, 0, os.SEEK_SET)
        out = io.BytesIO()
        padded = TarWriter(open_compressor(out, Compression.NONE), threaded=False, hash_tar=False)
        padded.copy_file(fd, 10, b"short", pad_short=True)
        padded.finish()
    finally:
        os.close(fd)
    assert out.getvalue() == b"abc" + bytes(512 - 3)


def test_a_live_tree_churning_while_it_is_archived(tmp_path: Path) -> None:
    """Entries created, removed, replaced by links and truncated while a live tree is written: every tar
    is whole and readable, and nothing outside the tree gets in."""
    src = tmp_path / "live"
    src.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    script = (f"cd {src}; while :; do for i in 1 2 3 4 5 6 7 8; do "
              "mkdir -p d$i/e; head -c 20000 /dev/zero > d$i/e/f; ln -sf x l$i; : > d$i/e/f; "
              f"rm -rf d$i; ln -s {outside} d$i; rm -f d$i l$i; echo $i > f$i; rm -f f$i; done; done")
    churn = subprocess.Popen(["sh", "-c", script])
    try:
        for _ in range(30):
            out = io.BytesIO()
            write_layer(src, out, Compression.NONE, live=True)
            with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
                for member in tf.getmembers():
                    assert "secret" not in member.name
                    if member.isfile():
                        assert len(tf.extractfile(member).read()) == member.size  # type: ignore[union-attr]
    finally:
        churn.kill()
        churn.wait()
