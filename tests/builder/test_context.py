"""The build context: ignore files, source resolution, symlinks, tar contexts."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from pybuild.builder.context import Context, SourceTree, clean_source, split_parents
from pybuild.errors import BuildError, UsageError


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def ctx_dir(workdir: Path) -> Path:
    root = workdir / "ctx"
    _tree(root, {
        "Dockerfile": "FROM scratch\n",
        "app.py": "print()\n",
        "README.md": "readme\n",
        "NOTES.md": "notes\n",
        "src/a.go": "a\n",
        "src/b.go": "b\n",
        "src/sub/c.go": "c\n",
        "docs/keep.md": "keep\n",
        "docs/drop.md": "drop\n",
        "secret.key": "s3cret\n",
        "arr[0].txt": "bracket\n",
    })
    return root


def test_clean_source_never_leaves_the_context() -> None:
    assert clean_source("../x") == "x"
    assert clean_source("/x/../../y/") == "y"
    assert clean_source("./") == "."
    assert clean_source("a/./b//c") == "a/b/c"
    assert split_parents("./x/./y/*.txt") == ("x", "y/*.txt")
    assert split_parents("x/a.txt") == (".", "x/a.txt")


def test_resolve_plain_wildcard_and_missing(ctx_dir: Path) -> None:
    ctx = Context.from_dir(ctx_dir)
    assert ctx.dockerfile_path == ctx_dir / "Dockerfile"
    assert ctx.ignore_file is None
    assert ctx.resolve("app.py") == ["app.py"]
    assert ctx.resolve("../app.py") == ["app.py"]
    assert ctx.resolve("/src/") == ["src"]
    assert ctx.resolve("src/*.go") == ["src/a.go", "src/b.go"]
    assert ctx.resolve("*/*.go") == ["src/a.go", "src/b.go"]
    assert ctx.resolve("*.md") == ["NOTES.md", "README.md"]
    assert ctx.resolve("src/?.go") == ["src/a.go", "src/b.go"]
    assert ctx.resolve("src/[a].go") == ["src/a.go"]
    assert ctx.resolve("arr[[]0].txt") == ["arr[0].txt"]
    assert ctx.resolve(".") == ["."]
    with pytest.raises(BuildError) as err:
        ctx.resolve("nosuch")
    assert str(err.value) == ("COPY failed: file not found in build context or excluded by .dockerignore: "
                              "stat nosuch: file does not exist")
    with pytest.raises(BuildError, match="ADD failed: file not found.*stat src/nope.go"):
        ctx.resolve("src/nope.go", keyword="ADD")
    with pytest.raises(BuildError, match="no source files were specified.*nomatch"):
        ctx.resolve("nomatch*")
    assert ctx.resolve("nomatch*", allow_empty_wildcard=True) == []


def test_dockerignore_makes_files_invisible(ctx_dir: Path) -> None:
    (ctx_dir / ".dockerignore").write_text("*.key\ndocs\n!docs/keep.md\n*.md\n!README.md\n")
    ctx = Context.from_dir(ctx_dir)
    assert ctx.ignore_file == ctx_dir / ".dockerignore"
    with pytest.raises(BuildError, match="excluded by .dockerignore: stat secret.key"):
        ctx.resolve("secret.key")
    assert ctx.resolve("*.md") == ["README.md"]
    assert ctx.resolve("docs/*") == ["docs/keep.md"]
    assert ctx.resolve("docs") == ["docs"]  # excluded, but it holds a re-included file
    with pytest.raises(BuildError):
        ctx.resolve("docs/drop.md")
    assert [p for p, _ in ctx.children("docs")] == ["docs/keep.md"]
    assert "secret.key" not in [p for p, _ in ctx.children(".")]


def test_excluded_dir_without_exceptions_is_gone(ctx_dir: Path) -> None:
    (ctx_dir / ".dockerignore").write_text("src\n")
    ctx = Context.from_dir(ctx_dir)
    for name in ("src", "src/a.go", "src/sub/c.go"):
        with pytest.raises(BuildError):
            ctx.resolve(name)
    assert ctx.resolve("*/*.go", allow_empty_wildcard=True) == []


def test_dockerfile_specific_ignore_file_wins(ctx_dir: Path) -> None:
    (ctx_dir / ".dockerignore").write_text("app.py\n")
    build = ctx_dir / "build"
    build.mkdir()
    (build / "app.Dockerfile").write_text("FROM scratch\n")
    (build / "app.Dockerfile.dockerignore").write_text("README.md\n")
    ctx = Context.from_dir(ctx_dir, build / "app.Dockerfile")
    assert ctx.ignore_file == build / "app.Dockerfile.dockerignore"
    assert ctx.ignore_patterns == ["README.md"]
    assert ctx.resolve("app.py") == ["app.py"]  # the context's .dockerignore is not used at all
    with pytest.raises(BuildError):
        ctx.resolve("README.md")
    assert ctx.read_dockerfile() == "FROM scratch\n"
    # Without its own ignore file, the context's applies.
    (build / "other.Dockerfile").write_text("FROM scratch\n")
    ctx = Context.from_dir(ctx_dir, build / "other.Dockerfile")
    assert ctx.ignore_patterns == ["app.py"]
    ctx = Context.from_dir(ctx_dir, "-")
    assert ctx.dockerfile_path is None and ctx.ignore_patterns == ["app.py"]


def test_missing_context_dir_is_a_usage_error(workdir: Path) -> None:
    with pytest.raises(UsageError, match="unable to prepare context"):
        Context.from_dir(workdir / "nope")


def test_symlinks_resolve_inside_the_context(ctx_dir: Path, workdir: Path) -> None:
    outside = workdir / "outside.txt"
    outside.write_text("host secret\n")
    (ctx_dir / "etc").mkdir()
    (ctx_dir / "etc" / "hosts").write_text("context hosts\n")
    os.symlink("/etc/hosts", ctx_dir / "abs-link")  # absolute: taken relative to the context root
    os.symlink("../../../../../outside.txt", ctx_dir / "climb")  # climbs: stops at the context root
    os.symlink(str(outside), ctx_dir / "host-link")
    os.symlink("src", ctx_dir / "srclink")
    os.symlink("nowhere", ctx_dir / "dangling")
    ctx = Context.from_dir(ctx_dir)
    [src] = ctx.resolve_sources("abs-link")
    assert src.path == "abs-link" and src.real == "etc/hosts" and src.name == "abs-link"
    assert Path(src.host).read_text() == "context hosts\n"
    with pytest.raises(BuildError):
        ctx.resolve("climb")  # would be <ctx>/outside.txt, which does not exist
    with pytest.raises(BuildError):
        ctx.resolve("host-link")
    (ctx_dir / "outside.txt").write_text("in the context\n")
    [src] = ctx.resolve_sources("climb")
    assert src.real == "outside.txt"
    [src] = ctx.resolve_sources("srclink/sub/c.go")
    assert src.real == "src/sub/c.go"
    with pytest.raises(BuildError):
        ctx.resolve("dangling")
    # Wildcard levels do not go through symlinked directories (filepath.Walk does not).
    assert ctx.resolve("*/sub/*.go") == ["src/sub/c.go"]


def test_symlink_loops_are_errors(ctx_dir: Path) -> None:
    os.symlink("loop-b", ctx_dir / "loop-a")
    os.symlink("loop-a", ctx_dir / "loop-b")
    ctx = Context.from_dir(ctx_dir)
    with pytest.raises(BuildError, match="too many levels of symbolic links"):
        ctx.resolve("loop-a")


def test_ignored_symlink_cannot_be_traversed(ctx_dir: Path) -> None:
    os.symlink("src", ctx_dir / "srclink")
    (ctx_dir / ".dockerignore").write_text("srclink\n")
    ctx = Context.from_dir(ctx_dir)
    with pytest.raises(BuildError):
        ctx.resolve("srclink/a.go")
    assert ctx.resolve("src/a.go") == ["src/a.go"]


def test_source_tree_without_ignore_rules(workdir: Path) -> None:
    _tree(workdir / "stage", {"app/bin/tool": "x", "app/lib/x.so": "y"})
    tree = SourceTree(workdir / "stage", where='stage "build"')
    assert tree.resolve("/app/*/*") == ["app/bin/tool", "app/lib/x.so"]
    with pytest.raises(BuildError, match='file not found in stage "build": stat app/nope'):
        tree.resolve("/app/nope")


def _tar_bytes(members: dict[str, bytes | None], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if compress else raw


def test_tar_context_from_stdin(workdir: Path) -> None:
    data = _tar_bytes({
        "Dockerfile": b"FROM scratch\nCOPY . /\n",
        ".dockerignore": b"ignored.txt\n",
        "app/": None,
        "app/main.py": b"print(1)\n",
        "app/.wh.keep": b"not a whiteout\n",
        "app/.wh..wh..opq": b"not opaque\n",
        "ignored.txt": b"nope\n",
    }, compress=True)
    scratch = workdir / "scratch"
    with Context.from_tar(io.BytesIO(data), scratch) as ctx:
        root = Path(ctx.root)
        assert root.is_relative_to(scratch)
        assert ctx.read_dockerfile().startswith("FROM scratch")
        assert ctx.ignore_patterns == ["ignored.txt"]
        assert (root / "app" / ".wh.keep").read_bytes() == b"not a whiteout\n"
        assert (root / "app" / ".wh..wh..opq").is_file()
        assert ctx.resolve("app/*") == ["app/.wh..wh..opq", "app/.wh.keep", "app/main.py"]
        with pytest.raises(BuildError):
            ctx.resolve("ignored.txt")
    assert not root.exists()
    assert list(scratch.iterdir()) == []


def test_tar_context_with_dockerfile_in_a_subdir(workdir: Path) -> None:
    data = _tar_bytes({
        "sub/Dockerfile": b"FROM scratch\n",
        "sub/Dockerfile.dockerignore": b"a.txt\n",
        ".dockerignore": b"b.txt\n",
        "a.txt": b"a",
        "b.txt": b"b",
    })
    with Context.from_tar(io.BytesIO(data), workdir / "scratch", dockerfile="sub/Dockerfile") as ctx:
        assert ctx.ignore_patterns == ["a.txt"]
        assert ctx.resolve("b.txt") == ["b.txt"]


def test_tar_context_symlinks_stay_inside(workdir: Path) -> None:
    host_secret = workdir / "host-ignore"
    host_secret.write_text("everything\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, target in ((".dockerignore", str(host_secret)), ("Dockerfile", "/etc/hostname")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    with Context.from_tar(io.BytesIO(buf.getvalue()), workdir / "scratch") as ctx:
        assert ctx.ignore_patterns == []  # the link points inside the extracted root, where nothing is
        assert ctx.dockerfile_path is not None and ctx.dockerfile_path.is_relative_to(ctx.root)
        with pytest.raises(UsageError, match="cannot read Dockerfile"):
            ctx.read_dockerfile()


def test_hostile_tar_context_is_refused(workdir: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BuildError, match="escapes"):
        Context.from_tar(io.BytesIO(buf.getvalue()), workdir / "scratch")
    assert not (workdir / "escape").exists()
    assert list((workdir / "scratch").iterdir()) == []
