"""The overlay2 layout: short links, deep chains, repair, permissions, filesystem checks."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pybuild.errors import TooManyLayers, UnsupportedFilesystem
from pybuild.linux import mount as _mount
from pybuild.store.layers import MAX_DEPTH
from pybuild.store.model import ImageConfig
from pybuild.store.root import Store


def _layer_with(store: Store, parent: str | None, files: dict[str, str]):
    snap = store.layers.create(parent)
    for name, text in files.items():
        path = snap.diff_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return store.commit_snapshot(snap)


def test_layout_matches_overlay2(store: Store) -> None:
    base, _ = _layer_with(store, None, {"a": "1"})
    child, _ = _layer_with(store, base.chain_id, {"b": "2"})
    overlay = store.root / "overlay2"
    for layer in (base, child):
        d = overlay / layer.cache_id
        assert (d / "diff").is_dir()
        short = (d / "link").read_text()
        assert len(short) == 26 and set(short) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        assert os.readlink(overlay / "l" / short) == f"../{layer.cache_id}/diff"
    assert not (overlay / base.cache_id / "lower").exists()
    assert (overlay / child.cache_id / "lower").read_text() == "l/" + (overlay / base.cache_id / "link").read_text()
    entry = store.root / "layerdb" / "sha256" / child.chain_id.split(":")[1]
    assert (entry / "diff").read_text() == child.diff_id
    assert (entry / "parent").read_text() == base.chain_id
    assert (entry / "cache-id").read_text() == child.cache_id
    assert int((entry / "size").read_text()) == 1


def test_permissions_are_hardened(store: Store) -> None:
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((store.root / "overlay2").stat().st_mode) == 0o710


@pytest.mark.slow
def test_127_layer_chain_mounts_within_a_page(store: Store) -> None:
    parent = None
    descs = []
    diff_ids = []
    for i in range(MAX_DEPTH):
        layer, desc = _layer_with(store, parent, {f"f{i:03d}": str(i), "top": str(i)})
        parent = layer.chain_id
        descs.append(desc)
        diff_ids.append(layer.diff_id)
    top = store.layers.get(parent)
    lowers = [f"l/{store.layers.short_id(top.cache_id)}", *store.layers.lowers(top.cache_id)]
    assert len(lowers) == MAX_DEPTH
    absolute = _mount.overlay_options([str(store.layers.overlay / p) for p in lowers], None, None)
    relative = _mount.overlay_options(lowers, None, None)
    assert len(absolute) >= _mount.PAGE_SIZE  # the relative form is what makes it mount
    assert len(relative) < _mount.PAGE_SIZE
    image = store.images.create(ImageConfig(diff_ids=tuple(diff_ids)), descs)
    merged = store.layers.mount_view(image.top_chain_id)
    try:
        names = sorted(os.listdir(merged))
        assert names == sorted([f"f{i:03d}" for i in range(MAX_DEPTH)] + ["top"])
        assert (merged / "top").read_text() == str(MAX_DEPTH - 1)
        assert (merged / "f000").read_text() == "0"
    finally:
        store.layers.unmount_view(image.top_chain_id)
    with pytest.raises(TooManyLayers, match="127 layers"):
        store.layers.create(parent)


def test_missing_link_is_repaired_on_mount_and_by_check(store: Store) -> None:
    base, d1 = _layer_with(store, None, {"a": "1"})
    child, d2 = _layer_with(store, base.chain_id, {"b": "2"})
    image = store.images.create(ImageConfig(diff_ids=(base.diff_id, child.diff_id)), [d1, d2])
    short = store.layers.short_id(base.cache_id)
    os.unlink(store.layers.links / short)
    os.symlink("../nonexistent/diff", store.layers.links / "DANGLINGLINKAAAAAAAAAAAAAA")
    report = store.check()
    assert not report.ok
    assert any("short link missing" in p.what for p in report.problems)
    assert any("dangles" in p.what for p in report.problems)
    merged = store.layers.mount_view(image.top_chain_id)  # repairs the link and retries
    try:
        assert (merged / "a").read_text() == "1"
    finally:
        store.layers.unmount_view(image.top_chain_id)
    assert store.check().ok


def test_check_repair_via_cli(cli, busybox) -> None:
    root = cli.root
    links = list((root / "overlay2" / "l").iterdir())
    os.unlink(links[0])
    out = cli("system", "check", check=False)
    assert out.returncode == 1 and "short link missing" in out.stdout
    assert "pybuild system check --repair" in out.stderr
    out = cli("system", "check", "--repair")
    assert "repaired:" in out.stdout
    assert cli("system", "check").stdout.strip() == "store is consistent"


def test_root_on_overlayfs_is_refused(workdir: Path, cli) -> None:
    for sub in ("lower", "upper", "work", "merged"):
        (workdir / sub).mkdir()
    _mount.mount_overlay(workdir, ["lower"], "upper", "work", workdir / "merged")
    try:
        with pytest.raises(UnsupportedFilesystem, match="overlayfs"):
            Store.open(workdir / "merged" / "root")
        cli.root = workdir / "merged" / "root2"
        out = cli("images", check=False)
        assert out.returncode == 1
        assert out.stderr.startswith("pybuild: error: store root") and "Traceback" not in out.stderr
    finally:
        _mount.umount(workdir / "merged")


def test_rw_layer_over_image(store: Store) -> None:
    base, desc = _layer_with(store, None, {"etc/hostname": "img"})
    rw = store.layers.create_rw("c1", base.chain_id)
    init_diff = store.layers.overlay / rw.init_id / "diff"
    (init_diff / "etc").mkdir()
    (init_diff / "etc" / "hostname").write_text("container")
    merged = store.layers.mount_rw(rw)
    try:
        assert (merged / "etc" / "hostname").read_text() == "container"
        (merged / "new").write_text("x")
    finally:
        _mount.umount(merged)
    assert (store.layers.overlay / rw.mount_id / "diff" / "new").read_text() == "x"
    assert not (store.layers.overlay / base.cache_id / "diff" / "new").exists()
    # a container keeps its image's layers alive through GC
    store.gc()
    assert store.layers.exists(base.chain_id)
    store.layers.remove_rw("c1")
    store.gc()
    assert not store.layers.exists(base.chain_id)
    assert list(store.layers.links.iterdir()) == []
    assert [p.name for p in store.layers.overlay.iterdir()] == ["l"]


def test_dirs_are_removed_with_busy_mounts_under_them(store: Store) -> None:
    base, desc = _layer_with(store, None, {"a": "1"})
    store.images.create(ImageConfig(diff_ids=(base.diff_id,)), [desc])
    image = next(store.images.walk())
    merged = store.layers.mount_view(image.top_chain_id)
    assert _mount.is_mounted(merged)
    store.images.forget(image.manifest_digest)
    store.gc()
    assert not _mount.is_mounted(merged)
    assert not store.layers.exists(base.chain_id)


def test_umount_command_line(cli, busybox) -> None:
    path = cli("mount", busybox).stdout.strip()
    try:
        assert os.path.exists(os.path.join(path, "bin", "busybox"))
        assert subprocess.run(["touch", os.path.join(path, "x")], capture_output=True).returncode != 0
    finally:
        cli("umount", busybox)
    assert not _mount.is_mounted(path)
