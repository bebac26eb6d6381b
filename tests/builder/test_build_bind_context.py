"""RUN --mount=type=bind from the build context shows what COPY sees: the context filtered by .dockerignore.

BuildKit transfers the context without the excluded files, so a bind mount
of it lacks them too; pybuild mounts a filtered view of the context (made
once per build) instead of the context directory. Read-only and ``rw``
mounts alike; a ``source=`` that is excluded (or a link to an excluded file)
is "not found".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.builder.context import Context, select_sources, walk_selection
from pybuild.linux.fsutil import remove_tree
from tests.builder.test_build import write_context
from tests.conftest import Cli

IGNORE = """\
secret.txt
.env
sub/private
**/*.key
!keep.key
hidden
!hidden/wanted.txt
"""

FILES: dict[str, str | bytes] = {
    ".dockerignore": IGNORE,
    "app.txt": "app\n",
    "secret.txt": "s3cr3t\n",
    ".env": "TOKEN=s3cr3t\n",
    "keep.key": "public key\n",
    "sub/ok.txt": "ok\n",
    "sub/private/x": "s3cr3t\n",
    "sub/deep/a.key": "s3cr3t\n",
    "sub/deep/b.txt": "b\n",
    "hidden/wanted.txt": "wanted\n",
    "hidden/unwanted.txt": "s3cr3t\n",
    "gone/only.key": "s3cr3t\n",
}

# what COPY . sees of that context (find . | sort, from the mount point)
VISIBLE = [".", "./.dockerignore", "./Dockerfile", "./app.txt", "./gone", "./hidden", "./hidden/wanted.txt",
           "./keep.key", "./link-to-app", "./link-to-secret", "./sub", "./sub/deep", "./sub/deep/b.txt", "./sub/ok.txt"]


def _make_context(path: Path, dockerfile: str) -> Path:
    path.mkdir(exist_ok=True)
    write_context(path, {**FILES, "Dockerfile": dockerfile})
    os.symlink("secret.txt", path / "link-to-secret")
    os.symlink("app.txt", path / "link-to-app")
    os.chmod(path / "sub", 0o750)
    os.chown(path / "sub", 1234, 4321)  # a directory that holds excluded paths keeps its own metadata
    return path


@pytest.fixture
def ctx(workdir: Path) -> Path:
    return workdir / "ctx"


def _sh(cli: Cli, image: str, script: str) -> str:
    return cli("run", "--rm", "--network", "none", image, "sh", "-c", script).stdout


DOCKERFILE = """\
FROM busybox
RUN --mount=type=bind,target=/ctx cd /ctx && find . | sort > /ro-list && cat app.txt hidden/wanted.txt > /ro-read \\
    && stat -c '%a %u %g' sub > /ro-sub && ! cat secret.txt .env sub/private/x sub/deep/a.key link-to-secret
RUN --mount=type=bind,target=/ctx,rw cd /ctx && find . | sort > /rw-list && echo new > new.txt \\
    && echo changed > app.txt && rm keep.key && ! cat secret.txt .env link-to-secret
RUN --mount=type=bind,source=sub,target=/sub cd /sub && find . | sort > /sub-list
RUN --mount=type=bind,source=hidden,target=/h,rw cd /h && find . | sort > /h-list && touch more
"""


@pytest.mark.slow
def test_bind_mounts_of_the_context_honour_dockerignore(bcli: Cli, ctx: Path) -> None:
    _make_context(ctx, DOCKERFILE)
    before = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*"))
    bcli("build", "--network", "none", "-t", "bind:v1", str(ctx))
    out = _sh(bcli, "bind:v1", "cat /ro-list; echo --; cat /rw-list; echo --; cat /sub-list; echo --; cat /h-list; "
                               "echo --; cat /ro-read /ro-sub")
    ro, rw, sub, hidden, rest = (part.strip("\n").splitlines() for part in out.split("--\n"))
    assert ro == VISIBLE
    assert rw == VISIBLE
    assert sub == [".", "./deep", "./deep/b.txt", "./ok.txt"]
    assert hidden == [".", "./wanted.txt"]
    assert rest == ["app", "wanted", "750 1234 4321"]
    # a rw mount's writes are thrown away: the context is untouched
    assert sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*")) == before
    assert (ctx / "app.txt").read_text() == "app\n" and (ctx / "keep.key").exists()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["secret.txt", "link-to-secret", "sub/private", "sub/private/x", ".env"])
@pytest.mark.parametrize("rw", [False, True])
def test_an_excluded_source_is_not_found(bcli: Cli, ctx: Path, source: str, rw: bool) -> None:
    mount = f"type=bind,source={source},target=/m" + (",rw" if rw else "")
    _make_context(ctx, f"FROM busybox\nRUN echo should-not-run\nRUN --mount={mount} cat /m\n")
    result = bcli("build", "--network", "none", str(ctx), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Dockerfile:3: RUN --mount failed: file not found in build context or excluded by .dockerignore" \
        in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_store_inside_the_context_gets_a_filtered_copy(cli: Cli, busybox: str, workdir: Path) -> None:
    """overlayfs refuses layers inside each other: with the store below the context the view is a copy."""
    ctx = workdir  # holds the store root (workdir/root)
    _make_context(ctx, DOCKERFILE)
    with open(ctx / ".dockerignore", "a") as f:
        f.write("root\n")
    cli("build", "--network", "none", "-t", "bind:v1", str(ctx))
    out = _sh(cli, "bind:v1", "cat /ro-list; echo --; cat /rw-list; echo --; cat /ro-sub")
    ro, rw, sub = (part.strip("\n").splitlines() for part in out.split("--\n"))
    assert ro == rw == VISIBLE
    assert sub == ["750 1234 4321"]
    assert (ctx / "app.txt").read_text() == "app\n" and not (ctx / "new.txt").exists()


# ---------------------------------------------------------------------------- the view itself (no build)

def _copy_view(context: Context) -> list[str]:
    """What COPY . sees: the reference the view must equal."""
    (sel,) = select_sources(context, ["."])
    return sorted(e.rel for e in walk_selection(context, sel))


@pytest.mark.parametrize("patterns", [
    "secret.txt\n",
    "**/*.key\n!keep.key\n",
    "hidden\n!hidden/wanted.txt\n",
    "*\n!sub\n",
    "sub\n!sub/deep/b.txt\n",
    "**\n!app.txt\n",
    IGNORE,
])
def test_scan_hides_exactly_what_copy_does_not_see(workdir: Path, patterns: str) -> None:
    from pybuild.builder.contextview import scan

    path = _make_context(workdir / "ctx", "FROM scratch\n")
    (path / ".dockerignore").write_text(patterns)
    context = Context.from_dir(path)
    found = scan(context, full=True)
    assert found.entries is not None
    assert sorted(e.rel for e in found.entries) == _copy_view(context)
    shown = set(_copy_view(context))
    # every hidden path is excluded, and every path not shown is hidden or below a hidden directory
    for rel in found.hidden:
        assert rel not in shown
    everything = {str(p.relative_to(path)) for p in path.rglob("*")}
    for rel in everything - shown:
        parts = rel.split("/")
        assert any("/".join(parts[:i]) in found.hidden for i in range(1, len(parts) + 1)), rel
    # the pruned scan (whiteouts only) hides the same paths
    assert sorted(scan(context, full=False).hidden) == sorted(found.hidden)


def test_scan_is_iterative(workdir: Path) -> None:
    from pybuild.builder.contextview import scan

    path = workdir / "ctx"
    path.mkdir()
    deep = path
    for _ in range(1200):  # deeper than Python's recursion limit
        deep = deep / "d"
        os.mkdir(deep)
    try:
        (deep / "secret.key").write_text("x")
        (deep / "ok.txt").write_text("x")
        (path / ".dockerignore").write_text("**/*.key\n")
        context = Context.from_dir(path, "-")
        assert scan(context).hidden == ["/".join(["d"] * 1200 + ["secret.key"])]
        assert len(scan(context, full=True).entries or []) == 1 + 1 + 1200 + 1  # root, .dockerignore, dirs, ok.txt
    finally:
        remove_tree(path)  # iteratively: the fixture's shutil.rmtree recurses


def test_view_mounts_once_and_cleans_up(workdir: Path) -> None:
    from pybuild.builder.contextview import ContextView

    path = _make_context(workdir / "ctx", "FROM scratch\n")
    scratch = workdir / "scratch"
    scratch.mkdir()
    view = ContextView(Context.from_dir(path), scratch)
    try:
        root = view.root()
        assert view.root() == root  # made once per build
        listing = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))
        assert ["."] + listing == [v.removeprefix("./") if v != "." else "." for v in VISIBLE]
        step = scratch / "step"
        step.mkdir()
        with view.writable(step) as rw:
            (Path(rw) / "app.txt").write_text("changed\n")
            (Path(rw) / "new.txt").write_text("new\n")
            assert not (Path(rw) / "secret.txt").exists()
        assert (path / "app.txt").read_text() == "app\n" and not (path / "new.txt").exists()
    finally:
        view.close()
    with open("/proc/self/mountinfo") as f:
        assert str(scratch) not in f.read()


@pytest.mark.slow
def test_rw_bind_mounts_from_a_stage_are_copy_on_write(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox AS base
RUN mkdir /data && echo orig > /data/f
FROM scratch AS empty
FROM busybox
RUN --mount=type=bind,from=base,source=/data,target=/d,rw echo changed > /d/f && echo new > /d/g && cat /d/f > /rw
RUN --mount=type=bind,from=base,source=/data,target=/d cat /d/f > /ro && ! test -e /d/g
RUN --mount=type=bind,from=empty,target=/e,rw touch /e/x && ls -A /e > /empty
"""
    ctx.mkdir()
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "--network", "none", "-t", "from:v1", str(ctx))
    assert _sh(bcli, "from:v1", "cat /rw /ro /empty") == "changed\norig\nx\n"
