"""The image commands end to end through the real CLI: import, images, tag, rmi, inspect,
history, prune, system df, concurrency and crash safety."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from pybuild.store.root import Store


def test_import_then_list_inspect_history(cli, busybox) -> None:
    images = cli("images").stdout.splitlines()
    assert images[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert images[1].split()[:2] == ["busybox", "latest"]
    doc = json.loads(cli("inspect", "busybox").stdout)
    assert len(doc) == 1
    assert doc[0]["RepoTags"] == ["busybox:latest"]
    assert doc[0]["Id"].startswith("sha256:")
    assert doc[0]["Os"] == "linux" and doc[0]["RootFS"]["Type"] == "layers"
    assert len(doc[0]["RootFS"]["Layers"]) == 1
    upper = Path(doc[0]["GraphDriver"]["Data"]["UpperDir"])
    assert (upper / "bin" / "busybox").is_file()
    hist = cli("history", "busybox").stdout.splitlines()
    assert hist[0].split()[:2] == ["IMAGE", "CREATED"]
    assert "pybuild import" in hist[1]
    quiet = cli("images", "-q").stdout.split()
    assert quiet == [doc[0]["Id"].split(":")[1][:12]]


def test_tag_and_rmi(cli, busybox) -> None:
    cli("tag", "busybox", "localhost:5000/bb:v1")
    cli("tag", "busybox:latest", "other")
    names = {tuple(line.split()[:2]) for line in cli("images").stdout.splitlines()[1:]}
    assert names == {("busybox", "latest"), ("localhost:5000/bb", "v1"), ("other", "latest")}
    image_id = cli("images", "-q").stdout.split()[0]
    out = cli("rmi", image_id, check=False)
    assert out.returncode == 1 and "referenced in multiple repositories" in out.stderr
    out = cli("rmi", "other")
    assert out.stdout.strip() == "Untagged: other:latest"
    out = cli("rmi", "-f", image_id)
    assert "Untagged: busybox:latest" in out.stdout and "Deleted: sha256:" in out.stdout
    assert cli("images", "-q").stdout.strip() == ""
    # rmi collected the unused layer and blobs at once
    store = Store.open(cli.root)
    assert list(store.layers.walk()) == []
    assert list(store.blobs.walk()) == []


def test_errors_are_one_line_and_exit_1(cli, busybox) -> None:
    cases = [
        (("rmi", "nosuch"), "pybuild: error: no such image: nosuch:latest"),
        (("tag", "busybox", "Bad/Name"), "pybuild: error: invalid reference format"),
        (("inspect", "nosuch"), "pybuild: error: No such object: nosuch"),
        (("import", "/nonexistent.tar", "x"), "pybuild: error: cannot open /nonexistent.tar"),
        (("frobnicate",), "pybuild: error: unknown command 'frobnicate'"),
        (("imagess",), "did you mean 'images'?"),
        (("history",), "pybuild: error: \"pybuild history\" requires exactly 1 argument"),
    ]
    for args, expected in cases:
        out = cli(*args, check=False)
        assert out.returncode == 1, args
        assert expected in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    out = cli("--debug", "inspect", "nosuch", check=False)
    assert "Traceback" in out.stderr and out.returncode == 1


def _tar_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_hostile_import_changes_nothing(cli, workdir: Path) -> None:
    canary = workdir / "canary"
    canary.write_text("safe")
    evil = _tar_bytes([("ok", b"1"), ("../../../../" + str(canary).lstrip("/"), b"pwned")])
    out = cli("import", "-", "evil", input=evil, check=False)
    assert out.returncode == 1
    assert "escapes" in out.stderr or "unsafe" in out.stderr.lower(), out.stderr
    assert canary.read_text() == "safe"
    assert cli("images", "-q").stdout == ""
    assert cli("system", "check").stdout.strip() == "store is consistent"
    store = Store.open(cli.root)
    assert [p.name for p in store.layers.overlay.iterdir()] == ["l"]
    assert list(store.blobs.walk()) == []


def test_import_with_changes_and_message(cli, busybox_tar: Path) -> None:
    cli("import", "-m", "hello", "-c", "CMD [\"/bin/sh\"]", "-c", "ENV A=1", str(busybox_tar), "bb:1")
    doc = json.loads(cli("inspect", "bb:1").stdout)[0]
    assert doc["Config"]["Cmd"] == ["/bin/sh"]
    assert doc["Config"]["Env"] == ["A=1"]
    assert doc["History"][0]["comment"] == "hello"


def test_same_tree_same_digests_with_source_date_epoch(cli, busybox_tar: Path, workdir: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = cli("import", "--", str(busybox_tar), "a", env=env).stdout.strip()
    other = type(cli)(workdir / "root2")
    second = other("import", str(busybox_tar), "a", env=env).stdout.strip()
    assert first == second
    d1 = json.loads(cli("inspect", "a").stdout)[0]
    d2 = json.loads(other("inspect", "a").stdout)[0]
    assert d1["RootFS"] == d2["RootFS"]
    assert d1["Manifest"] == d2["Manifest"]


def test_concurrent_imports_and_tags(cli, busybox_tar: Path) -> None:
    cli("images")  # create the root first, as a user's first command would
    procs = [subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(cli.root), "import",
                               str(busybox_tar), f"img{i}:v{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(4)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), results
    tags = [p for p in (
        subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(cli.root), "tag", f"img{i}:v{i}",
                          f"alias{i}"], stderr=subprocess.PIPE) for i in range(4))]
    assert all(t.wait(timeout=120) == 0 for t in tags)
    names = {line.split()[0] for line in cli("images").stdout.splitlines()[1:]}
    assert names == {f"img{i}" for i in range(4)} | {f"alias{i}" for i in range(4)}
    assert cli("system", "check").stdout.strip() == "store is consistent"


def test_kill_9_during_import_leaves_store_usable(cli, busybox_tar: Path) -> None:
    cli("images")
    data = busybox_tar.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(cli.root), "import", "-", "half"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(data[: len(data) // 2])
    proc.stdin.flush()
    root = cli.root
    deadline = time.time() + 30
    while time.time() < deadline and not any((root / "tmp").glob("layer-*.owner")):
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in (root / "overlay2").iterdir() if p.name != "l"]
    assert leftovers, "the import was killed before it wrote anything"
    # The next command works, and cleans what the killed process left.
    cli("import", str(busybox_tar), "whole")
    assert {line.split()[0] for line in cli("images").stdout.splitlines()[1:]} == {"whole"}
    out = cli("prune")
    assert "Total reclaimed space" in out.stdout
    store = Store.open(root)
    image = store.images.resolve("whole")
    dirs = {p.name for p in (root / "overlay2").iterdir()} - {"l"}
    assert dirs == {store.layers.get(image.top_chain_id).cache_id}
    assert [p.name for p in (root / "tmp").iterdir()] == []
    assert cli("system", "check").stdout.strip() == "store is consistent"


def test_system_df_and_prune_all(cli, busybox) -> None:
    out = cli("system", "df").stdout.splitlines()
    assert out[0].split() == ["TYPE", "TOTAL", "SIZE", "RECLAIMABLE"]
    assert out[1].split()[:2] == ["Images", "1"]
    cli("rmi", "--no-prune", "busybox")
    out = cli("prune", "-a").stdout
    assert "Total reclaimed space" in out
    assert cli("system", "df").stdout.splitlines()[1].split()[:2] == ["Images", "0"]
