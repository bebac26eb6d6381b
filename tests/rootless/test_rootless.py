"""pybuild as an ordinary user: a user namespace with subordinate ids, native overlay, slirp4netns.

Every command here runs as a real user made for the module (see conftest),
against the real kernel: the user namespace and its pause process, overlay
with ``userxattr``, a network namespace served by slirp4netns, seccomp.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pybuild.linux.fsutil import remove_tree
from tests.conftest import Cli
from tests.registry.conftest import PASSWORD, USER, Registry, start_registry, write_htpasswd
from tests.rootless.conftest import User, WebHost

pytestmark = pytest.mark.slow

DOCKERFILE = """\
FROM busybox:latest
COPY hello.txt /hello.txt
RUN id -u > /uid && chown 1234:2345 /hello.txt
RUN wget -q -O /payload.txt {url}/payload.txt
RUN rm /bin/vi && mkdir /d && touch /d/a
"""

REPRODUCIBLE = """\
FROM busybox:latest
COPY hello.txt /hello.txt
RUN chown 1234:2345 /hello.txt && rm /bin/vi && mkdir -p /d/e && touch /d/e/f
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg  # type: ignore[misc]
    reg.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    work = tmp_path_factory.mktemp("registry-basic")
    write_htpasswd(work / "htpasswd", {USER: PASSWORD})
    reg = start_registry(work, f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {work / 'htpasswd'}\n")
    yield reg  # type: ignore[misc]
    reg.stop()


def context(user: User, name: str, dockerfile: str) -> Path:
    ctx = user.home / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hello\n")
    return user.give(ctx)


def test_build_run_push_and_pull_as_root(clean_user: User, user_busybox: Path, web_host: WebHost,
                                         registry: Registry, cli: Cli) -> None:
    user = clean_user
    user.run("import", str(user_busybox), "busybox:latest")
    store = user.home / ".local" / "share" / "pybuild"
    assert (store / "version").exists(), "the default store of an ordinary user is ~/.local/share/pybuild"
    assert os.stat(store).st_uid == user.uid
    ctx = context(user, "app", DOCKERFILE.format(url=web_host.url))
    built = user.run("build", "-t", "app:v1", str(ctx))
    assert "4 steps: 0 cached, 4 built" in built.stdout + built.stderr

    out = user.run("run", "--rm", "app:v1", "sh", "-c",
                   "cat /uid; stat -c %u:%g /hello.txt; cat /payload.txt; ls /bin/vi 2>&1; ls /d").stdout
    lines = out.splitlines()
    assert lines[0] == "0", "RUN runs as root of the user namespace"
    assert lines[1] == "1234:2345"
    assert lines[2] == "hello from the test host"
    assert "No such file" in lines[3], "the whiteout of /bin/vi holds"
    assert lines[4] == "a"
    # the layers hold the container's ids, the host's disk the subordinate ones
    layer_file = next(store.glob("overlay2/*/diff/hello.txt"))
    assert os.stat(layer_file).st_uid != 1234

    ref = f"{registry.host}/rootless/app:v1"
    user.run("tag", "app:v1", ref)
    user.run("push", ref)
    cli("pull", ref)
    owner = cli("run", "--rm", "--network", "none", ref, "stat", "-c", "%u:%g", "/hello.txt").stdout.strip()
    assert owner == "1234:2345"


def test_rootless_image_is_the_rootful_image(clean_user: User, cli: Cli, busybox: str) -> None:
    """Layer tars carry the container's ids, never the subordinate ones: same digests as a rootful build."""
    user = clean_user
    root = user.home / "repro-store"
    base = user.home / "base.tar"
    cli("save", "-o", str(base), busybox)  # the same base image config on both sides
    user.give(base)
    user.run("--root", str(root), "load", "-i", str(base))
    ctx = context(user, "repro", REPRODUCIBLE)
    os.utime(ctx / "hello.txt", (1_600_000_000, 1_600_000_000))
    user.run("--root", str(root), "build", "-q", "-t", "repro", str(ctx), SOURCE_DATE_EPOCH="1700000000")
    rootless = json.loads(user.run("--root", str(root), "inspect", "repro").stdout)[0]
    cli("build", "-q", "-t", "repro", str(ctx), env={"SOURCE_DATE_EPOCH": "1700000000"})
    rootful = json.loads(cli("inspect", "repro").stdout)[0]
    assert rootless["RootFS"]["Layers"] == rootful["RootFS"]["Layers"]
    assert rootless["Id"] == rootful["Id"]


def test_detached_container_exec_logs_ports(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "svc-store"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    port = 20000 + os.getpid() % 20000
    user.run("--root", str(root), "run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox:latest",
             "sh", "-c", "echo started; exec httpd -f -p 80 -h /etc")
    try:
        deadline = time.monotonic() + 10
        while True:
            got = subprocess.run(["curl", "-sf", "-m", "2", f"http://127.0.0.1:{port}/passwd"],
                                 capture_output=True, text=True)
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got.stdout.startswith("root:x:0:0"), got.stderr
        ps = user.run("--root", str(root), "ps").stdout
        assert f"127.0.0.1:{port}->80/tcp" in ps and "web" in ps
        assert user.run("--root", str(root), "exec", "web", "id", "-u").stdout.strip() == "0"
        assert "started" in user.run("--root", str(root), "logs", "web").stdout
        user.run("--root", str(root), "stop", "-t", "1", "web")
    finally:
        user.run("--root", str(root), "rm", "-f", "web", check=False)
    assert subprocess.run(["curl", "-sf", "-m", "1", f"http://127.0.0.1:{port}/"],
                          capture_output=True).returncode != 0, "the port is closed once the container is gone"


def test_network_none_and_host(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "net-store"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    none = user.run("--root", str(root), "run", "--rm", "--network", "none", "busybox:latest", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in none.stdout.splitlines()] == ["lo"]
    host = user.run("--root", str(root), "run", "--rm", "--network", "host", "busybox:latest", "ip", "-o", "link")
    assert len(host.stdout.splitlines()) > 1, "--network host sees the host's links"


def test_save_load_prune_and_check(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "misc-store"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    archive = user.home / "bb.tar"
    user.run("--root", str(root), "save", "-o", str(archive), "busybox:latest")
    other = user.home / "misc-store-2"
    user.run("--root", str(other), "load", "-i", str(archive))
    assert "busybox" in user.run("--root", str(other), "images").stdout
    user.run("--root", str(root), "prune", "-a")
    assert "store is consistent" in user.run("--root", str(other), "system", "check").stdout


def test_kill_mid_build_then_the_next_command_cleans_up(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "kill-store"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    ctx = context(user, "slow", "FROM busybox:latest\nRUN echo begun && sleep 60\n")
    proc = user.popen("--root", str(root), "build", str(ctx))
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = b""
    while b"begun" not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        seen += proc.stdout.read1(4096)  # type: ignore[attr-defined]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    user.run("--root", str(root), "images")  # the next command cleans up what the build left
    assert not user.mounts_in_namespace(root), "a killed build's mounts are removed by the next command"
    assert "store is consistent" in user.run("--root", str(root), "system", "check").stdout


def test_single_id_mapping_warns_and_refuses_chown(lone_user: User, busybox_tar: Path) -> None:
    user = lone_user
    tar = user.home / "busybox.tar"
    subprocess.run(["cp", str(busybox_tar), str(tar)], check=True)
    user.give(tar)
    first = user.run("import", str(tar), "busybox:latest")
    assert "warning: no subordinate ids" in first.stderr
    assert "usermod --add-subuids" in first.stderr
    assert user.run("run", "--rm", "--network", "none", "busybox:latest", "id", "-u").stdout.strip() == "0"
    ctx = context(user, "chown", "FROM busybox:latest\nRUN chown 1234 /etc/passwd\n")
    failed = user.run("build", str(ctx), check=False)
    assert failed.returncode != 0
    assert "Invalid argument" in failed.stdout + failed.stderr


def test_bad_setups_are_one_line_errors(user: User, workdir: Path) -> None:
    no_runtime = user.run("images", check=False, XDG_RUNTIME_DIR=None, PYBUILD_ROOT=str(user.home / "e1"))
    assert no_runtime.returncode == 1
    assert no_runtime.stderr.strip().splitlines() == [no_runtime.stderr.strip()]
    assert "XDG_RUNTIME_DIR is not set" in no_runtime.stderr and "/run/user/" in no_runtime.stderr

    root_store = workdir / "roots-store"
    root_store.mkdir(mode=0o755)
    os.chmod(workdir, 0o755)
    theirs = user.run("--root", str(root_store), "images", check=False)
    assert theirs.returncode == 1
    assert f"store root {root_store} belongs to uid 0, not to you" in theirs.stderr
    assert "Traceback" not in theirs.stderr and len(theirs.stderr.strip().splitlines()) == 1


def test_limits_without_delegation_fail_clearly(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "limits-store"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    for flags in (["-m", "64m"], ["--pids-limit", "10"], ["--cpus", "0.5"]):
        done = user.run("--root", str(root), "run", "--rm", "--network", "none", *flags, "busybox:latest", "true",
                        check=False)
        assert done.returncode == 125, done.stderr
        assert "resource limits need a cgroup subtree delegated to uid" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert user.run("--root", str(root), "run", "--rm", "--network", "none", "busybox:latest",
                           "id", "-u").stdout.strip() == "0", "without limits it runs"


def test_user_defined_networks_need_root(clean_user: User) -> None:
    done = clean_user.run("--root", str(clean_user.home / "nn-store"), "network", "create", "n1", check=False)
    assert done.returncode == 1
    assert "network create needs root" in done.stderr


def test_pause_process_holds_one_namespace_for_all_commands(clean_user: User) -> None:
    user = clean_user
    user.run("--root", str(user.home / "ns-store"), "images")
    pid = user.pause_pid()
    assert pid is not None
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"pybuild-pause\0")
    uid_map = Path(f"/proc/{pid}/uid_map").read_text().split()
    assert uid_map[:3] == ["0", str(user.uid), "1"] and uid_map[3] == "1" and int(uid_map[5]) >= 65536
    assert stat.S_IMODE(os.stat(user.runtime_dir / "pybuild").st_mode) == 0o700
    user.run("--root", str(user.home / "ns-store"), "images")
    assert user.pause_pid() == pid, "later commands join the same namespace"


def test_without_newuidmap_only_the_user_is_mapped(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    alt = user.runtime_dir / "alt"  # a runtime dir of its own: a new pause process, a new namespace
    alt.mkdir(exist_ok=True)
    user.give(alt)
    os.chmod(alt, 0o700)
    env = {"XDG_RUNTIME_DIR": str(alt), "PATH": f"{user.env()['PATH'].split(':')[0]}"}
    root = str(user.home / "nouidmap-store")
    try:
        first = user.run("--root", root, "import", str(user_busybox), "busybox:latest", **env)
        assert "warning: newuidmap/newgidmap not found" in first.stderr and "apt-get install uidmap" in first.stderr
        pid = int((alt / "pybuild" / "pause.pid").read_text())
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(user.uid), "1"]
        assert user.run("--root", root, "run", "--rm", "--network", "none", "busybox:latest", "id", "-u",
                        **env).stdout.strip() == "0"
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((alt / "pybuild" / "pause.pid").read_text()), signal.SIGKILL)


def test_info_says_rootless_and_overlay(clean_user: User) -> None:
    out = clean_user.run("--root", str(clean_user.home / "info-store"), "info").stdout
    assert " Storage Driver: overlay2" in out
    assert " Rootless: true" in out and "  userxattr: true" in out and "  Network: slirp4netns" in out
    assert f"  UID Map: 0:{clean_user.uid}:1, 1:" in out
    assert " Cgroup Driver: none" in out
    assert f" Docker Root Dir: {clean_user.home / 'info-store'}" in out


def test_a_root_stores_bridge_the_user_cannot_see_into_is_left_alone(clean_user: User) -> None:
    """A rootful store under a 0700 directory keeps a bridge: inside the user's namespace its
    root reads as permission denied, which is neither gone nor a reason to fail."""
    hidden = Path("/root") / f"pbrl-hidden-{os.getpid()}"
    (hidden / "root").mkdir(parents=True)
    os.chmod(hidden, 0o700)
    (hidden / "root" / "version").write_text("1")
    link = f"pbrlh{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", link, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", link, "alias", f"pybuild:{hidden / 'root'}"], check=True)
        out = clean_user.run("--root", str(clean_user.home / "hidden-store"), "images").stdout
        assert out.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
        assert Path("/sys/class/net", link).exists()
    finally:
        subprocess.run(["ip", "link", "del", link], check=False)
        remove_tree(hidden)


def test_login_push_pull_with_the_users_own_credentials(clean_user: User, user_busybox: Path,
                                                        basic_registry: Registry) -> None:
    user = clean_user
    root = str(user.home / "auth-store")
    user.run("--root", root, "import", str(user_busybox), "busybox:latest")
    ref = f"{basic_registry.host}/rootless/bb:v1"
    user.run("--root", root, "tag", "busybox:latest", ref)
    refused = user.run("--root", root, "push", ref, check=False)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower() + refused.stdout.lower()
    user.run("login", "-u", USER, "--password-stdin", basic_registry.host, input=PASSWORD.encode())
    config = user.home / ".docker" / "config.json"
    assert basic_registry.host in json.loads(config.read_text())["auths"]
    assert os.stat(config).st_uid == user.uid and stat.S_IMODE(os.stat(config).st_mode) == 0o600
    user.run("--root", root, "push", ref)
    other = str(user.home / "auth-store-2")
    user.run("--root", other, "pull", ref)
    assert ref.partition("/")[2].partition(":")[0] in user.run("--root", other, "images").stdout


def test_unshare_runs_a_command_in_the_namespace(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = user.home / "unshare-store"
    user.run("--root", str(root), "import", str(user_busybox), "busybox:latest")
    path = user.run("--root", str(root), "mount", "busybox:latest").stdout.strip()
    try:
        inside = user.run("--root", str(root), "unshare", "sh", "-c",
                          f'id -u; cat /proc/self/uid_map | head -1; ls {path}/bin/busybox; echo "$PYBUILD_ROOT"')
        lines = inside.stdout.split("\n")
        assert lines[0] == "0" and lines[1].split() == ["0", str(user.uid), "1"]
        assert lines[2] == f"{path}/bin/busybox", "a 'pybuild mount' path is seen from inside the namespace"
        assert lines[3] == str(root)
        assert not os.path.exists(f"{path}/bin/busybox"), "the mount is not on the host"
    finally:
        user.run("--root", str(root), "umount", "busybox:latest")


def test_multi_stage_build_with_a_secret_and_the_cache(clean_user: User, user_busybox: Path) -> None:
    user = clean_user
    root = str(user.home / "stages-store")
    user.run("--root", root, "import", str(user_busybox), "busybox:latest")
    ctx = context(user, "stages", """\
FROM busybox:latest AS tool
RUN --mount=type=secret,id=token cp /run/secrets/token /token-copy && echo tool > /tool
FROM busybox:latest
COPY --from=tool /tool /token-copy /out/
RUN --mount=type=bind,target=/ctx cat /ctx/hello.txt > /out/hello
""")
    secret = user.home / "token.txt"
    secret.write_text("s3cret\n")
    user.give(secret)
    first = user.run("--root", root, "build", "--secret", f"id=token,src={secret}", "-t", "stages", str(ctx))
    assert "3 steps: 0 cached, 3 built" in first.stdout + first.stderr
    out = user.run("--root", root, "run", "--rm", "--network", "none", "stages", "sh", "-c",
                   "cat /out/tool /out/token-copy /out/hello").stdout
    assert out.splitlines() == ["tool", "s3cret", "hello"]
    again = user.run("--root", root, "build", "--secret", f"id=token,src={secret}", "-t", "stages", str(ctx))
    assert "3 steps: 3 cached, 0 built" in again.stdout + again.stderr
