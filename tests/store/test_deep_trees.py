"""Deep trees and big layers (issue 14, items 3 and 6).

A tree 5,000 directories deep must go through every store operation that
walks one (commit's tar and size count, apply, remove, the clean-up of an
abandoned snapshot at open, load, save, export, commit, prune, df, check
--repair) without recursion, and without one descriptor per level. A layer
that expands past ``PYBUILD_MAX_LAYER_SIZE`` (a real gzip bomb: 1 GiB of
zeros in ~1 MiB) is refused with one line, nothing of it kept.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pybuild.errors import LayerTooLarge
from pybuild.linux.fsutil import ENTER, FILE, LEAVE, remove_tree, walk
from pybuild.store import layers as _layers
from pybuild.store.compression import Compression
from pybuild.store.layertar import apply_layer, write_layer
from pybuild.store.model import Platform
from pybuild.store.root import Store
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root")

DEPTH = 5000
LEAF = b"bottom\n"


# ---------------------------------------------------------------------------- helpers


def make_deep(parent: str | os.PathLike[str], depth: int = DEPTH) -> None:
    """``parent/d/d/.../d/leaf``: ``depth`` directories made through descriptors (the path passes PATH_MAX)."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, LEAF)
        os.close(leaf)
    finally:
        os.close(fd)


def deep_shape(root: str | os.PathLike[str]) -> tuple[int, bytes | None]:
    """(deepest directory level, content of the file named ``leaf`` there) of the tree at ``root``."""
    level = deepest = 0
    leaf: bytes | None = None
    for event, entry in walk(root, sort=False):
        if event == ENTER:
            level += 1
            deepest = max(deepest, level)
        elif event == LEAVE:
            level -= 1
        elif event == FILE and entry.name == b"leaf" and level == deepest:
            fd = os.open(entry.name, os.O_RDONLY, dir_fd=entry.parent_fd)
            try:
                leaf = os.read(fd, 100)
            finally:
                os.close(fd)
    return deepest, leaf


def deep_layer_tar(depth: int = DEPTH) -> bytes:
    """A layer tar (hand-made with tarfile, PAX names) of ``depth`` nested directories and a leaf file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for level in range(1, depth + 1):
            info = tarfile.TarInfo("d/" * level)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1_000_000 + level
            tar.addfile(info)
        info = tarfile.TarInfo("d/" * depth + "leaf")
        info.size = len(LEAF)
        info.mtime = 1_000_000
        tar.addfile(info, io.BytesIO(LEAF))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def docker_save_tar(path: Path, layer: bytes, diff_id: str, tag: str) -> None:
    """A docker-save archive (manifest.json, <config>.json, <id>/layer.tar) of a one-layer image."""
    config = json.dumps({"architecture": Platform.host().architecture, "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         "history": [{"created_by": "hand-made"}]}).encode()
    config_name = sha(config).split(":")[1] + ".json"
    members = [(config_name, config), ("1" * 64 + "/layer.tar", layer),
               ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag],
                                              "Layers": ["1" * 64 + "/layer.tar"]}]).encode())]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def gzip_bomb(out: Any, size: int = 1 << 30) -> None:
    """A gzip'd tar holding one file of ``size`` zeros, written as it is made (~1 KiB per MiB).

    Multi-member gzip: one member per MiB of zeros, the same bytes each time, so nothing is compressed
    twice; every gzip reader (and pybuild's) reads the members as one stream.
    """
    info = tarfile.TarInfo("zeros")
    info.size = size
    out.write(gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT), mtime=0))
    mib = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    for _ in range(size >> 20):
        out.write(mib)
    out.write(gzip.compress(bytes(2 * 512), mtime=0))  # end of archive


def store_is_clean(store: Store) -> None:
    """Nothing half-written: no layer dirs but committed ones, no owner files or temp blobs."""
    committed = {layer.cache_id for layer in store.layers.walk()}
    committed |= {i for rw in store.layers.walk_rw() for i in (rw.mount_id, rw.init_id) if i}
    assert set(os.listdir(store.layers.overlay)) - {"l"} == committed
    assert not [n for n in os.listdir(store.tmp) if n.endswith(".owner") or n.startswith("blob-")]
    assert [n for n in os.listdir(store.layers.db) if n.startswith(".")] == []


def top_diff(store: Store, ref: str) -> Path:
    image = store.images.resolve(ref)
    return store.layers.overlay / store.layers.get(image.top_chain_id).cache_id / "diff"


# ---------------------------------------------------------------------------- the store, in process


def test_commit_of_a_5000_deep_snapshot_then_apply_and_remove(store: Store) -> None:
    snap = store.layers.create(None)
    make_deep(snap.diff_dir)
    layer, desc = store.commit_snapshot(snap)
    assert layer.size == len(LEAF)  # the size count walked the whole tree
    assert deep_shape(store.layers.overlay / layer.cache_id / "diff") == (DEPTH, LEAF)
    # the blob applies back into a fresh layer dir, and both go without a trace
    with store.blobs.open(desc.digest) as f:
        again = store.layers.register(f, None)
    assert again == layer  # the same layer: the second copy was discarded
    store.layers.remove(layer.chain_id)
    store_is_clean(Store.open(store.root))


def test_a_commit_that_fails_leaves_nothing_for_the_next_open(store: Store, monkeypatch: Any) -> None:
    def boom(path: Path) -> int:
        raise RecursionError("maximum recursion depth exceeded")  # what the size count used to raise

    monkeypatch.setattr(_layers, "_tree_size", boom)
    snap = store.layers.create(None)
    make_deep(snap.diff_dir)
    with pytest.raises(RecursionError):
        store.commit_snapshot(snap)
    assert not snap.path.exists()
    monkeypatch.undo()
    store_is_clean(Store.open(store.root))


def test_apply_of_a_5000_deep_layer_holds_few_descriptors(store: Store) -> None:
    """The soft limit of open files is 1,024 on most hosts (and less here): the chain of a deep tar must not
    hold one descriptor per level."""
    tar = deep_layer_tar()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    snap = store.layers.create(None)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 300, hard))
        try:
            applied = apply_layer(io.BytesIO(tar), snap.diff_dir)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert applied.entries == DEPTH + 1
        assert deep_shape(snap.diff_dir) == (DEPTH, LEAF)
        # directory times were set (deepest first) through reopened levels too
        fd = os.open(snap.diff_dir, os.O_RDONLY | os.O_DIRECTORY)
        times = []
        try:
            for level in range(1, DEPTH + 1):
                nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
                if level in (1, 17, 300, 2500, DEPTH):
                    times.append((level, os.fstat(fd).st_mtime))
        finally:
            os.close(fd)
        assert times == [(level, 1_000_000 + level) for level, _ in times]
        blob = write_layer(snap.diff_dir, io.BytesIO(), Compression.NONE)  # and it tars back
        assert blob.uncompressed_size > DEPTH * DEPTH
    finally:
        store.layers.discard(snap)
    store_is_clean(store)


def test_the_dir_chain_keeps_few_descriptors_and_reopens_what_it_closed(workdir: Path) -> None:
    from pybuild.linux.safefs import DIR_FLAGS, DirChain

    class Small(DirChain):
        KEEP_TOP = 2
        MAX_OPEN = 5

    root = os.open(workdir, DIR_FLAGS)
    chain = Small(root)
    try:
        parts = tuple(b"%d" % i for i in range(40))
        deepest = chain.parent(parts)
        assert sum(fd >= 0 for fd in chain.fds) == 5 and chain.fds[:2] == [fd for fd in chain.fds[:2] if fd >= 0]
        os.mkdir("leaf", dir_fd=deepest)
        for n in range(39, 0, -1):  # climbing back level by level, then across to a sibling and down again
            fd = chain.parent(parts[:n], create=False)
            assert os.readlink(f"/proc/self/fd/{fd}") == os.path.join(workdir, *(p.decode() for p in parts[:n]))
            assert sum(f >= 0 for f in chain.fds) <= 5
        fd = chain.parent((*parts[:20], b"other", b"x"))
        assert os.readlink(f"/proc/self/fd/{fd}") == os.path.join(workdir, *(p.decode() for p in parts[:20]),
                                                                    "other", "x")
        assert os.path.isdir(os.path.join(workdir, *(p.decode() for p in parts), "leaf"))
    finally:
        chain.close()
        os.close(root)
    assert chain.fds == [] and chain._open == 0


_ABANDON = """
import os, sys, time
sys.path.insert(0, {repo!r})
from pybuild.store.root import Store
store = Store.open({root!r})
snap = store.layers.create(None)
fd = os.open(snap.diff_dir, os.O_RDONLY | os.O_DIRECTORY)
for _ in range({depth}):
    os.mkdir("d", dir_fd=fd)
    fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
print(snap.cache_id, flush=True)
time.sleep(600)
"""


def test_an_abandoned_5000_deep_snapshot_goes_at_the_next_open(store: Store, cli: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _ABANDON.format(repo=str(REPO), root=str(store.root), depth=DEPTH)],
                            stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None
        cache_id = proc.stdout.readline().decode().strip()
        assert cache_id, "the child did not make its snapshot"
        # while its owner lives, nothing touches it
        assert Store.open(store.root).layers.abandoned_snapshots() == []
        assert (store.layers.overlay / cache_id).is_dir()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # killed: every command works, and the first one removed it
    cli("images")
    assert not (store.layers.overlay / cache_id).exists()
    cli("ps")
    assert "store is consistent" in cli("system", "check").stdout
    cli("prune")
    store_is_clean(Store.open(store.root))


def test_load_of_a_docker_save_with_a_5000_deep_layer(cli: Any, workdir: Path) -> None:
    layer = deep_layer_tar()
    archive = workdir / "deep.tar"
    docker_save_tar(archive, layer, sha(layer), "deep:hand")
    assert cli("load", "-i", str(archive)).stdout.strip() == "Loaded image: deep:hand"
    store = Store.open(cli.root)
    assert deep_shape(top_diff(store, "deep:hand")) == (DEPTH, LEAF)
    assert cli("system", "df").stdout.splitlines()[0].split()[:2] == ["TYPE", "TOTAL"]
    cli("rmi", "deep:hand")
    cli("prune")
    store_is_clean(Store.open(cli.root))


def test_the_copy_selection_walk_and_dockerignore_have_no_recursion(workdir: Path) -> None:
    """COPY reads its sources by host path (PATH_MAX bounds them near 2,000 levels of ``d/``): 1,500 levels is
    past Python's recursion limit, which the selection walk and the .dockerignore exceptions used to recurse on."""
    from pybuild.builder.context import SourceTree, select_sources, walk_selection
    from pybuild.builder.dockerignore import Matcher

    depth = 1500
    ctx = workdir / "ctx"
    ctx.mkdir()
    make_deep(ctx, depth)
    plain = SourceTree(ctx)
    (sel,) = select_sources(plain, ["d"])
    entries = walk_selection(plain, sel)
    assert len(entries) == depth + 1 and entries[-1].rel == "d/" * (depth - 1) + "leaf"
    # everything ignored but the leaf, brought back by an exception: the whole chain of directories is walked
    ignored = SourceTree(ctx, Matcher(["d", "!**/leaf"]))
    assert ignored.visible("d")
    (sel,) = select_sources(ignored, ["d"])
    assert walk_selection(ignored, sel)[-1].rel == "d/" * (depth - 1) + "leaf"
    assert not SourceTree(ctx, Matcher(["d", "!**/nothing"])).visible("d")


# ---------------------------------------------------------------------------- PYBUILD_MAX_LAYER_SIZE


def test_a_gzip_bomb_is_refused_by_import_and_load(cli: Any, workdir: Path) -> None:
    bomb = workdir / "bomb.tar.gz"
    with open(bomb, "wb") as f:
        gzip_bomb(f)
    assert bomb.stat().st_size < 2 << 20  # 1 GiB of zeros in about 1 MiB
    limit = {"PYBUILD_MAX_LAYER_SIZE": "100m"}

    result = cli("import", str(bomb), "bomb:import", check=False, env=limit)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "pybuild: error: the layer is larger than PYBUILD_MAX_LAYER_SIZE (100 MiB) uncompressed "
        "(refused, nothing of it kept; raise the limit if the layer is genuine)"]

    # load: the blob is stored (it is only 1 MiB) but the layer is never applied past the limit
    fake_diff_id = sha(b"what the config claims: the apply stops long before the digest is known")
    archive = workdir / "bomb-save.tar"
    docker_save_tar(archive, bomb.read_bytes(), fake_diff_id, "bomb:load")
    result = cli("load", "-i", str(archive), check=False, env=limit)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]  # after the progress line "Loading layer ..."
    assert error.startswith("pybuild: error: layer 1 of bomb:load (1111"), error
    assert f"layer {fake_diff_id} is larger than PYBUILD_MAX_LAYER_SIZE (100 MiB) uncompressed" in error

    store = Store.open(cli.root)
    store_is_clean(store)
    assert list(store.images.walk()) == [] and store.images.refs() == {}
    assert "store is consistent" in cli("system", "check").stdout

    # under the limit, the same commands go through
    small = workdir / "small.tar"
    with tarfile.open(small, "w") as tar:
        info = tarfile.TarInfo("etc/motd")
        info.size = 10 << 20
        tar.addfile(info, io.BytesIO(bytes(10 << 20)))
    cli("import", str(small), "small:import", env=limit)
    layer = small.read_bytes()
    docker_save_tar(workdir / "small-save.tar", gzip.compress(layer, compresslevel=1), sha(layer), "small:load")
    cli("load", "-i", str(workdir / "small-save.tar"), env=limit)
    assert {ref.split("/")[-1] for ref in Store.open(cli.root).images.refs()} >= {"small:import", "small:load"}


def test_the_limit_counts_the_stream_and_bad_values_are_usage_errors(store: Store, cli: Any,
                                                                     workdir: Path) -> None:
    tar = deep_layer_tar(10)
    snap = store.layers.create(None)
    try:
        with pytest.raises(LayerTooLarge, match=r"layer sha256:0+ is larger than PYBUILD_MAX_LAYER_SIZE \(4 KiB\)"):
            apply_layer(io.BytesIO(tar), snap.diff_dir, max_size=4096, expected_diff_id="sha256:" + "0" * 64)
        applied = apply_layer(io.BytesIO(tar), snap.diff_dir, max_size=len(tar))  # exactly the limit: fine
        assert applied.size == len(tar)
    finally:
        store.layers.discard(snap)
    small = workdir / "small.tar"
    small.write_bytes(tar)
    result = cli("import", str(small), check=False, env={"PYBUILD_MAX_LAYER_SIZE": "lots"})
    assert result.returncode == 1
    assert result.stderr.startswith("pybuild: error: invalid PYBUILD_MAX_LAYER_SIZE 'lots'"), result.stderr
    cli("import", str(small), "unlimited:0", env={"PYBUILD_MAX_LAYER_SIZE": "0"})  # 0: no limit


def test_a_full_disk_is_a_clean_error_and_the_store_stays_consistent(workdir: Path, cli: Any) -> None:
    """ENOSPC as before the limit existed: one line, the snapshot discarded, the store usable."""
    small = workdir / "small-fs"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    try:
        tight = type(cli)(small / "root")
        big = workdir / "big.tar.gz"
        with open(big, "wb") as f:
            gzip_bomb(f, 96 << 20)
        result = tight("import", str(big), "big:1", check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("pybuild: error: ") and "No space left on device" in result.stderr
        assert "Traceback" not in result.stderr
        store_is_clean(Store.open(tight.root))
        assert "store is consistent" in tight("system", "check").stdout
        with open(big, "wb") as f:
            gzip_bomb(f, 8 << 20)
        tight("import", str(big), "fits:1")  # the space came back
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# ---------------------------------------------------------------------------- end to end


# 5 x `mkdir -p` of 1,000 levels (a shell loop of 5,000 mkdirs takes minutes); `cd -P`: ash's logical cd stops
# at PATH_MAX
_RUN_DEEP = ("set -e; p=d; i=1; while [ $i -lt 1000 ]; do p=$p/d; i=$((i+1)); done; "
             "for j in 1 2 3 4 5; do mkdir -p $p; cd -P $p; done; echo bottom > leaf")


@pytest.mark.slow
def test_a_5000_deep_tree_through_run_save_load_commit_export_and_gc(cli: Any, busybox: str, workdir: Path) -> None:
    ctx = workdir / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox}\nRUN {_RUN_DEEP}\n")
    cli("build", "-t", "deep:run", "--network", "none", str(ctx))
    store = Store.open(cli.root)
    assert deep_shape(top_diff(store, "deep:run")) == (DEPTH, LEAF)

    saved = workdir / "saved.tar"
    cli("save", "-o", str(saved), "deep:run")
    other = type(cli)(workdir / "root2")
    assert other("load", "-i", str(saved)).stdout.strip() == "Loaded image: deep:run"
    assert deep_shape(top_diff(Store.open(other.root), "deep:run")) == (DEPTH, LEAF)

    # a container that makes one: commit and export read it, rm removes it
    cli("run", "--name", "maker", "--network", "none", busybox, "sh", "-c", _RUN_DEEP)
    cli("commit", "maker", "deep:commit")
    assert deep_shape(top_diff(Store.open(cli.root), "deep:commit")) == (DEPTH, LEAF)
    exported = workdir / "export.tar"
    cli("export", "-o", str(exported), "maker")
    with tarfile.open(exported) as tar:
        names = {m.name for m in tar.getmembers()}
    assert "d/" * DEPTH + "leaf" in names or "./" + "d/" * DEPTH + "leaf" in names
    cli("rm", "maker")

    # df, check --repair (re-applies a deep layer from its blob), rmi, prune
    assert cli("system", "df").returncode == 0
    store = Store.open(cli.root)
    image = store.images.resolve("deep:commit")
    layer = store.layers.get(image.top_chain_id)
    remove_tree(store.layers.db / layer.chain_id.split(":")[1])
    remove_tree(store.layers.overlay / layer.cache_id)
    repaired = cli("system", "check", "--repair")
    assert "missing" in repaired.stdout
    assert "store is consistent" in cli("system", "check").stdout
    assert deep_shape(top_diff(Store.open(cli.root), "deep:commit")) == (DEPTH, LEAF)
    cli("rmi", "deep:run", "deep:commit")
    cli("prune")
    store_is_clean(Store.open(cli.root))
    assert "store is consistent" in cli("system", "check").stdout


@pytest.mark.slow
def test_the_issue_loop_of_1200_levels_builds(cli: Any, busybox: str, workdir: Path) -> None:
    """The reproduction of issue 14 item 3, word for word: it ended in ``internal error: RecursionError``."""
    ctx = workdir / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox}\nRUN i=0; while [ $i -lt 1200 ]; do mkdir d && cd d; i=$((i+1)); done\n")
    cli("build", "-t", "deep:issue", "--network", "none", str(ctx))
    assert deep_shape(top_diff(Store.open(cli.root), "deep:issue"))[0] == 1200
    for args in (("images",), ("ps",), ("prune",), ("system", "check", "--repair"), ("rmi", "deep:issue")):
        cli(*args)
