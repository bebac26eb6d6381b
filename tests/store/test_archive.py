"""Image archives: ``pybuild save`` / ``pybuild load``, checked against real tools.

skopeo, umoci and buildah read what we write and write what we read; the
whiteout test is an acceptance test of the store (overlay upper -> layer tar
-> other tools and back).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pty
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.errors import ArchiveError, DigestMismatch
from pybuild.linux import mount as _mount
from pybuild.store import archive as _archive
from pybuild.store import reference as _reference
from pybuild.store.model import OCI_INDEX, OCI_MANIFEST, ImageConfig, Platform
from pybuild.store.root import Store

# ---------------------------------------------------------------------------- helpers


def _run(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([str(a) for a in args], input=input, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def _pybuild_raw(root: Path, *args: str, input: bytes | None = None,
                 stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """The CLI with binary stdout (the ``cli`` fixture decodes it as text)."""
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    return subprocess.run([sys.executable, "-m", "pybuild", "--root", str(root), *args],
                          input=input, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120)


@contextlib.contextmanager
def _mounted(cli, name: str) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    path = Path(cli("mount", name).stdout.strip())
    try:
        yield path
    finally:
        cli("umount", name, check=False)


def _umoci_rootfs(archive: Path, workdir: Path, label: str) -> Path:
    """skopeo copy oci-archive -> oci dir, umoci unpack; returns the bundle's rootfs."""
    layout = workdir / f"{label}-layout"
    bundle = workdir / f"{label}-bundle"
    _run("skopeo", "copy", "-q", f"oci-archive:{archive}", f"oci:{layout}:t")
    _run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    return bundle / "rootfs"


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _write_tar(path: Path, entries: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(path: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _busybox_binary(busybox_tar: Path) -> bytes:
    with tarfile.open(busybox_tar) as tar:
        f = tar.extractfile("./bin/busybox")
        assert f is not None
        return f.read()


def _assert_clean_failure(result: Any, *expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("pybuild: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


# ---------------------------------------------------------------------------- 1. save -> skopeo, umoci


def test_save_is_read_by_skopeo_and_umoci(cli: Any, busybox: str, busybox_tar: Path, workdir: Path) -> None:
    out = workdir / "busybox.tar"
    cli("save", "-o", str(out), "busybox")
    assert not Path(str(out) + ".tmp").exists()
    image = Store.open(cli.root).images.resolve("busybox")

    # The tar: sorted, owner 0:0, mtime 0, modes 0644/0755, each blob once.
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and len(names) == len(set(names))
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert all(m.mode == (0o755 if m.isdir() else 0o644) for m in members)
    blobs = {"blobs/sha256/" + d.split(":")[1]
             for d in (image.manifest_digest, image.config_digest, *(x.digest for x in image.manifest.layers))}
    assert {n for n in names if n.startswith("blobs/sha256/")} == blobs
    files = _members(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"] == [{
        "mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
        "size": len(files["blobs/sha256/" + image.manifest_digest.split(":")[1]]),
        "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest",
                        "org.opencontainers.image.ref.name": "latest"},
    }]
    assert json.loads(files["manifest.json"]) == [{
        "Config": "blobs/sha256/" + image.config_digest.split(":")[1],
        "RepoTags": ["busybox:latest"],
        "Layers": ["blobs/sha256/" + d.digest.split(":")[1] for d in image.manifest.layers],
    }]

    # Deterministic, and the same bytes through stdout.
    piped = _pybuild_raw(cli.root, "save", "busybox:latest")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == out.read_bytes()
    # A terminal on stdout is refused, as docker does.
    master, slave = pty.openpty()
    try:
        tty = _pybuild_raw(cli.root, "save", "busybox", stdout=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert tty.returncode == 1 and b"refusing to save to a terminal" in tty.stderr

    inspect = json.loads(_run("skopeo", "inspect", f"oci-archive:{out}").stdout)
    assert inspect["Digest"] == image.manifest_digest
    assert inspect["Layers"] == [d.digest for d in image.manifest.layers]
    rootfs = _umoci_rootfs(out, workdir, "bb")
    assert (rootfs / "bin" / "busybox").read_bytes() == _busybox_binary(busybox_tar)
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"


# ---------------------------------------------------------------------------- 2. whiteouts


def test_whiteouts_and_opaque_dirs_round_trip(store: Store, cli: Any, workdir: Path) -> None:
    snap1 = store.layers.create(None)
    d = snap1.diff_dir
    for name in ("a/x", "a/y", "b/z"):
        (d / name).parent.mkdir(exist_ok=True)
        (d / name).write_text(name + "\n")
    l1, desc1 = store.commit_snapshot(snap1)

    snap = store.layers.create(l1.chain_id)
    lowers = ["l/" + store.layers.short_id(l1.cache_id)]
    _mount.mount_overlay(store.layers.overlay, lowers, f"{snap.cache_id}/diff", f"{snap.cache_id}/work",
                         snap.merged_dir)
    try:
        merged = snap.merged_dir
        os.unlink(merged / "a" / "x")
        shutil.rmtree(merged / "b")
        (merged / "b").mkdir()
        (merged / "b" / "new").write_text("\n")
    finally:
        _mount.umount(snap.merged_dir)
    l2, desc2 = store.commit_snapshot(snap)
    image = store.images.create(ImageConfig(diff_ids=(l1.diff_id, l2.diff_id)), [desc1, desc2])
    store.images.tag(_reference.parse("wh:test"), image.manifest_digest)

    with store.blobs.open(desc2.digest) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
        names = {m.name.removeprefix("./") for m in tar}
    assert "a/.wh.x" in names and "b/.wh..wh..opq" in names and "b/new" in names
    assert "b/z" not in names and "a/y" not in names

    def check_view(root: Path) -> None:
        assert (root / "a" / "y").read_text() == "a/y\n"
        assert (root / "b" / "new").read_text() == "\n"
        assert not (root / "a" / "x").exists() and not (root / "b" / "z").exists()
        assert sorted(os.listdir(root / "a")) == ["y"] and sorted(os.listdir(root / "b")) == ["new"]

    with _mounted(cli, "wh:test") as root:
        check_view(root)

    # The blobs applied afresh (another store) give the same layers and view.
    other = Store.open(workdir / "root2")
    with store.blobs.open(desc1.digest) as f:
        r1 = other.layers.register(f, None, expected_diff_id=l1.diff_id)
    with store.blobs.open(desc2.digest) as f:
        r2 = other.layers.register(f, r1.chain_id, expected_diff_id=l2.diff_id)
    assert r2.chain_id == l2.chain_id
    diff = other.layers.overlay / r2.cache_id / "diff"
    st = os.lstat(diff / "a" / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(diff / "b", "trusted.overlay.opaque") == b"y"
    view = other.layers.mount_view(r2.chain_id)
    try:
        check_view(view)
    finally:
        other.layers.unmount_view(r2.chain_id)

    # And another tool reads the same tree from our archive.
    out = workdir / "wh.tar"
    cli("save", "-o", str(out), "wh:test")
    rootfs = _umoci_rootfs(out, workdir, "wh")
    assert _tree(rootfs) == {"a", "a/y", "b", "b/new"}
    assert (rootfs / "b" / "new").read_text() == "\n"


# ---------------------------------------------------------------------------- 3. images built by other tools


def test_load_oci_archive_built_by_umoci(cli: Any, workdir: Path) -> None:
    layout, bundle, archive = workdir / "L", workdir / "B", workdir / "F.tar"
    _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:t")
    _run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    (bundle / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "etc" / "greeting").write_text("hello from umoci\n")
    _run("umoci", "repack", "--image", f"{layout}:t", bundle)
    _run("skopeo", "copy", "-q", f"oci:{layout}:t", f"oci-archive:{archive}:t")

    out = cli("load", "-i", str(archive))
    # skopeo's ref.name is the bare tag "t": no repository, so the image is loaded untagged.
    assert out.stdout.startswith("Loaded image ID: sha256:"), out.stdout
    image_id = out.stdout.split()[-1]
    assert cli("images", "-q").stdout.split() == [image_id.split(":")[1][:12]]
    with _mounted(cli, image_id) as root:
        assert (root / "etc" / "greeting").read_text() == "hello from umoci\n"
    assert "store is consistent" in cli("system", "check").stdout


def test_load_oci_archive_built_by_buildah(cli: Any, workdir: Path) -> None:
    # A private storage root with the vfs driver: no daemon, no network, nothing outside workdir.
    bh = ["buildah", "--root", str(workdir / "bh-root"), "--runroot", str(workdir / "bh-run"),
          "--storage-driver", "vfs"]
    try:
        ctr = _run(*bh, "from", "scratch").stdout.decode().strip()
    except (AssertionError, FileNotFoundError) as exc:
        pytest.skip(f"buildah cannot run here: {exc}")
    try:
        src = workdir / "greeting.txt"
        src.write_text("hello from buildah\n")
        _run(*bh, "copy", ctr, src, "/etc/greeting")
        _run(*bh, "config", "--cmd", '["/bin/true"]', ctr)
        _run(*bh, "commit", "-q", ctr, "bhimg")
        archive = workdir / "bh.tar"
        _run(*bh, "push", "-q", "bhimg", f"oci-archive:{archive}:bhimg:v1")
    finally:
        subprocess.run([*bh, "rm", "-a"], capture_output=True, check=False)
        subprocess.run([*bh, "rmi", "-a", "-f"], capture_output=True, check=False)

    out = cli("load", "-i", str(archive))
    assert out.stdout.strip() == "Loaded image: bhimg:v1"  # ref.name "bhimg:v1" is a full name
    doc = json.loads(cli("inspect", "bhimg:v1").stdout)[0]
    assert doc["Config"]["Cmd"] == ["/bin/true"]
    with _mounted(cli, "bhimg:v1") as root:
        assert (root / "etc" / "greeting").read_text() == "hello from buildah\n"


# ---------------------------------------------------------------------------- 4. docker save (legacy)


def _legacy_archive(path: Path, busybox_tar: Path, tag: str, *, tamper: bool = False,
                    layer_paths: tuple[str, str] | None = None) -> None:
    """A docker-save tar as docker < 25 writes it: <hex>.json, <id>/layer.tar, manifest.json."""
    layer1 = busybox_tar.read_bytes()  # uncompressed
    layer2 = _tar_bytes({"etc/motd": b"legacy\n"})
    config = json.dumps({
        "architecture": Platform.host().architecture, "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer1), _sha(layer2)]},
        "history": [{"created_by": "import"}, {"created_by": "motd"}],
    }).encode()
    if tamper:
        layer2 = _tar_bytes({"etc/motd": b"evil!!\n"})
    blob2 = gzip.compress(layer2, mtime=0)  # docker load accepts compressed layer.tar too
    id1, id2 = "1" * 64, "2" * 64
    paths = layer_paths or (f"{id1}/layer.tar", f"{id2}/layer.tar")
    config_name = _sha(config).split(":")[1] + ".json"
    _write_tar(path, [
        (config_name, config),
        (f"{id1}/VERSION", b"1.0"),
        (f"{id1}/json", json.dumps({"id": id1}).encode()),
        (f"{id1}/layer.tar", layer1),
        (f"{id2}/VERSION", b"1.0"),
        (f"{id2}/json", json.dumps({"id": id2, "parent": id1}).encode()),
        (f"{id2}/layer.tar", blob2),
        ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag],
                                       "Layers": list(paths)}]).encode()),
        ("repositories", json.dumps({tag.split(":")[0]: {tag.split(":")[1]: id2}}).encode()),
    ])


def test_load_docker_save_legacy(cli: Any, busybox_tar: Path, workdir: Path) -> None:
    good = workdir / "legacy.tar"
    _legacy_archive(good, busybox_tar, "legacy/app:1.0")
    out = cli("load", "-i", str(good))
    assert out.stdout.strip() == "Loaded image: legacy/app:1.0"
    doc = json.loads(cli("inspect", "legacy/app:1.0").stdout)[0]
    assert doc["Config"]["Cmd"] == ["sh"] and len(doc["RootFS"]["Layers"]) == 2
    with _mounted(cli, "legacy/app:1.0") as root:
        assert (root / "etc" / "motd").read_text() == "legacy\n"
        assert (root / "bin" / "busybox").read_bytes() == _busybox_binary(busybox_tar)
    store = Store.open(cli.root)
    image = store.images.resolve("legacy/app:1.0")
    assert image.manifest.media_type == OCI_MANIFEST
    before_images = {i.manifest_digest for i in store.images.walk()}
    before_layers = {layer.chain_id for layer in store.layers.walk()}
    before_refs = store.images.refs()

    bad = workdir / "tampered.tar"
    _legacy_archive(bad, busybox_tar, "legacy/bad:1.0", tamper=True)
    result = cli("load", "-i", str(bad), check=False)
    _assert_clean_failure(result, "layer 2 of legacy/bad:1.0", "does not match the image config")
    unsafe = workdir / "unsafe.tar"
    _legacy_archive(unsafe, busybox_tar, "legacy/unsafe:1.0", layer_paths=("../../etc/passwd", "x/layer.tar"))
    _assert_clean_failure(cli("load", "-i", str(unsafe), check=False), "unsafe path '../../etc/passwd'")
    missing = workdir / "missing.tar"
    _legacy_archive(missing, busybox_tar, "legacy/missing:1.0", layer_paths=("1" * 64 + "/layer.tar", "nope.tar"))
    _assert_clean_failure(cli("load", "-i", str(missing), check=False), "the archive is missing nope.tar")

    assert {i.manifest_digest for i in store.images.walk()} == before_images
    assert {layer.chain_id for layer in store.layers.walk()} == before_layers
    assert store.images.refs() == before_refs
    assert "store is consistent" in cli("system", "check").stdout
    assert not [p for p in store.tmp.iterdir() if p.name.startswith(("blob-", "load-"))]


# ---------------------------------------------------------------------------- 5. round trip, bad archives


@pytest.mark.slow
def test_save_load_round_trip_into_a_fresh_store(cli: Any, busybox: str, workdir: Path) -> None:
    cli("tag", "busybox", "localhost:5000/bb:v1")
    archive = workdir / "both.tar"
    cli("save", "-o", str(archive), "busybox", "localhost:5000/bb:v1")
    src = json.loads(cli("inspect", "busybox").stdout)[0]

    fresh = type(cli)(workdir / "fresh")
    out = fresh("load", "-i", str(archive))
    assert sorted(out.stdout.splitlines()) == ["Loaded image: busybox:latest", "Loaded image: localhost:5000/bb:v1"]
    dst = json.loads(fresh("inspect", "busybox").stdout)[0]
    assert dst["Id"] == src["Id"] and dst["Manifest"] == src["Manifest"]
    assert sorted(dst["RepoTags"]) == sorted(src["RepoTags"]) == ["busybox:latest", "localhost:5000/bb:v1"]
    with _mounted(fresh, "localhost:5000/bb:v1") as root:
        assert (root / "bin" / "busybox").is_file()

    # From a pipe (spooled), compressed, and a second time (everything already there).
    piped = workdir / "piped"
    data = archive.read_bytes()
    r = _pybuild_raw(piped, "load", "-q", input=gzip.compress(data, compresslevel=1))
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.decode().splitlines()) == ["Loaded image: busybox:latest",
                                                      "Loaded image: localhost:5000/bb:v1"]
    r = _pybuild_raw(piped, "load", input=data)
    assert r.returncode == 0 and b"Loading layer" not in r.stderr
    assert not list((piped / "tmp").iterdir())

    # Broken archives: one clean line, exit 1, nothing added.
    broken = workdir / "broken"
    truncated = workdir / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2])
    fresh_cli = type(cli)(broken)
    _assert_clean_failure(fresh_cli("load", "-i", str(truncated), check=False), "truncated")
    short = workdir / "short.tar"
    short.write_bytes(data[:600])
    _assert_clean_failure(fresh_cli("load", "-i", str(short), check=False))
    junk = workdir / "junk.tar"
    junk.write_bytes(b"this is not an archive\n" * 100)
    _assert_clean_failure(fresh_cli("load", "-i", str(junk), check=False), "not a tar archive")
    r = _pybuild_raw(broken, "load", input=data[:100_000])
    assert r.returncode == 1 and b"pybuild: error: " in r.stderr and b"Traceback" not in r.stderr
    r = _pybuild_raw(broken, "load", input=b"")
    assert r.returncode == 1 and b"pybuild: error: " in r.stderr and b"Traceback" not in r.stderr
    assert fresh_cli("images", "-q").stdout.strip() == ""
    assert "store is consistent" in fresh_cli("system", "check").stdout
    assert not list((broken / "tmp").iterdir())


def test_load_picks_the_host_platform_and_verifies_blobs(store: Store, cli: Any, busybox: str, workdir: Path) -> None:
    archive = workdir / "bb.tar"
    cli("save", "-o", str(archive), "busybox")
    files = _members(archive)
    index = json.loads(files["index.json"])
    host_desc = dict(index["manifests"][0])
    del host_desc["annotations"]
    host_desc["platform"] = Platform.host().to_json()
    foreign = {"mediaType": OCI_MANIFEST, "digest": _sha(b"not in the archive"), "size": 18,
               "platform": {"os": "linux", "architecture": "s390x"}}
    nested = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [foreign, host_desc]}).encode()
    top = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
        "mediaType": OCI_INDEX, "digest": _sha(nested), "size": len(nested),
        "annotations": {"io.containerd.image.name": "docker.io/multi/arch:1",
                        "org.opencontainers.image.ref.name": "1"}}]}
    entries = [(n, b) for n, b in files.items() if n.startswith("blobs/")]
    entries += [("blobs/sha256/" + _sha(nested).split(":")[1], nested),
                ("index.json", json.dumps(top).encode()), ("oci-layout", files["oci-layout"])]
    multi = workdir / "multi.tar"
    _write_tar(multi, entries)
    other = Store.open(workdir / "other")
    with open(multi, "rb") as f:
        loaded = _archive.load(other, f)
    assert [str(r) for r in loaded[0].refs] == ["docker.io/multi/arch:1"]
    assert loaded[0].image.manifest_digest == host_desc["digest"]
    with open(multi, "rb") as f, pytest.raises(ArchiveError, match="no image for linux/arm"):
        _archive.load(other, f, platform=Platform("linux", "arm", "v7"))
    # The variants listed directly in index.json under one name: the host's is taken.
    names = {"io.containerd.image.name": "docker.io/multi/flat:1", "org.opencontainers.image.ref.name": "1"}
    flat_index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                  "manifests": [{**foreign, "annotations": names}, {**host_desc, "annotations": names}]}
    flat = workdir / "flat.tar"
    _write_tar(flat, [e for e in entries if e[0] != "index.json"] + [("index.json", json.dumps(flat_index).encode())])
    with open(flat, "rb") as f:
        loaded = _archive.load(other, f)
    assert [(str(r), x.image.manifest_digest) for x in loaded for r in x.refs] == [
        ("docker.io/multi/flat:1", host_desc["digest"])]

    # A blob that does not hash to its name is refused, nothing is tagged.
    layer_name = next(n for n in files if n.startswith("blobs/") and len(files[n]) > 100_000)
    bad = dict(files)
    blob = bytearray(bad[layer_name])
    blob[len(blob) // 2] ^= 0xFF
    bad[layer_name] = bytes(blob)
    tampered = workdir / "tampered.tar"
    _write_tar(tampered, sorted(bad.items()))
    third = Store.open(workdir / "third")
    with open(tampered, "rb") as f, pytest.raises(DigestMismatch, match="layer 1 of busybox:latest"):
        _archive.load(third, f)
    assert third.images.refs() == {} and list(third.images.walk()) == []
