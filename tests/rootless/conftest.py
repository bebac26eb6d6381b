"""Fixtures for rootless pybuild: a real ordinary user, the checkout it runs, a test host to download from.

The user is made with ``useradd`` (with a subordinate id range, as Debian's
useradd allocates one, or as a system user without any), runs pybuild through
``setpriv`` with a login-like environment and Debian's ``/usr/bin/python3``
(the venv of ``scripts/make-rootless-python``), and a copy of the checkout laid
out as installed (the checkout itself may sit under a home nobody else can
enter). Teardown kills every process of the user (its pause process too, so
its namespaces and every mount in them go) and deletes the user and its home.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, SCRIPTS, TMP_BASE

VENV = Path("/var/tmp/pybuild-test-cache/rootless-venv")


@pytest.fixture(scope="session")
def rootless_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's packages copied as ``pip install`` lays them out, readable by everyone."""
    done = subprocess.run([str(SCRIPTS / "make-rootless-python"), str(VENV)], capture_output=True, text=True)
    assert done.returncode == 0, f"scripts/make-rootless-python failed:\n{done.stderr[-3000:]}"
    with open(REPO / "pyproject.toml", "rb") as f:
        package_dirs: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    top = Path(TMP_BASE) / f"pbrl-code-{secrets.token_hex(4)}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, source in sorted(package_dirs.items()):
        target = top.joinpath(*package.split("."))
        if not target.exists():
            shutil.copytree(REPO / source, target, ignore=ignore)
    for dirpath, _, _ in os.walk(top):
        os.chmod(dirpath, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
    yield top  # type: ignore[misc]
    shutil.rmtree(top, ignore_errors=True)


@dataclass
class User:
    """An ordinary user that runs pybuild; ``run`` is ``pybuild ARGS`` as that user."""

    name: str
    uid: int
    gid: int
    home: Path
    runtime_dir: Path
    code: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
               "PATH": f"{VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(self.code),
               "XDG_RUNTIME_DIR": str(self.runtime_dir), "LANG": "C.UTF-8", **self.extra_env}
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def argv(self, *args: str) -> list[str]:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                f"{VENV}/bin/python", "-m", "pybuild", *args]

    def run(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 300,
            cwd: Path | None = None, **env: str | None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*args), input=None if input is None else input.decode(),
                              capture_output=True, text=True, timeout=timeout, env=self.env(**env),
                              cwd=cwd or self.home)
        if check and done.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} as {self.name} failed ({done.returncode}):\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def popen(self, *args: str, **env: str | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env=self.env(**env), cwd=self.home, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def give(self, path: Path) -> Path:
        """Make ``path`` (a file or tree) belong to the user."""
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)
        return path

    def pause_pid(self) -> int | None:
        try:
            pid = int((self.runtime_dir / "pybuild" / "pause.pid").read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def processes(self) -> list[str]:
        """``pid args`` of the user's processes other than its pause process."""
        out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-u", str(self.uid)], capture_output=True,
                             text=True).stdout.splitlines()
        return [line.strip() for line in out if "pybuild-pause" not in line and " Z" not in line
                and "<defunct>" not in line]

    def mounts_in_namespace(self, under: Path) -> list[str]:
        """Mount points below ``under`` in the user's rootless mount namespace."""
        pid = self.pause_pid()
        if pid is None:
            return []
        found = []
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            target = line.split()[4].encode().decode("unicode_escape")
            if target == str(under) or target.startswith(str(under).rstrip("/") + "/"):
                found.append(target)
        return found

    def settle(self, timeout: float = 10.0) -> list[str]:
        """Wait for the user's processes (monitors ending) to go; the ones left."""
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


def _free_subordinate_start() -> int:
    top = 100000
    for file in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(FileNotFoundError), open(file) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    top = max(top, int(parts[1]) + int(parts[2]))
    return top


def make_user(code: Path, *, subordinate_ids: bool) -> User:
    name = f"pbrl{secrets.token_hex(3)}"
    args = ["useradd", "--create-home", "--shell", "/bin/sh"]
    if not subordinate_ids:
        args.append("--system")  # system users get no subordinate ranges
    subprocess.run([*args, name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    if subordinate_ids and name not in Path("/etc/subuid").read_text():
        start = _free_subordinate_start()
        subprocess.run(["usermod", "--add-subuids", f"{start}-{start + 65535}",
                        "--add-subgids", f"{start}-{start + 65535}", name], check=True)
    runtime = Path(f"/run/user/{entry.pw_uid}")
    runtime.mkdir(parents=True, exist_ok=True)
    os.chown(runtime, entry.pw_uid, entry.pw_gid)
    os.chmod(runtime, 0o700)
    return User(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), runtime, code)


def remove_user(user: User) -> None:
    for _ in range(50):
        subprocess.run(["pkill", "-KILL", "-u", str(user.uid)], capture_output=True)
        if subprocess.run(["pgrep", "-u", str(user.uid)], capture_output=True).returncode != 0:
            break
        time.sleep(0.1)
    subprocess.run(["userdel", "--force", "--remove", user.name], capture_output=True)
    for file in ("/etc/subuid", "/etc/subgid"):  # userdel removes them; make sure
        with contextlib.suppress(FileNotFoundError):
            lines = Path(file).read_text().splitlines(keepends=True)
            Path(file).write_text("".join(x for x in lines if not x.startswith(user.name + ":")))
    shutil.rmtree(user.runtime_dir, ignore_errors=True)
    shutil.rmtree(user.home, ignore_errors=True)


@pytest.fixture(scope="module")
def user(rootless_code: Path) -> Iterator[User]:
    """An ordinary user with a subordinate id range."""
    u = make_user(rootless_code, subordinate_ids=True)
    try:
        yield u
    finally:
        remove_user(u)


@pytest.fixture(scope="module")
def lone_user(rootless_code: Path) -> Iterator[User]:
    """An ordinary user without subordinate ids."""
    u = make_user(rootless_code, subordinate_ids=False)
    try:
        yield u
    finally:
        remove_user(u)


@pytest.fixture(scope="module")
def user_busybox(user: User, busybox_tar: Path) -> Path:
    """The busybox rootfs tar, where the user can read it."""
    return user.give(Path(shutil.copy(busybox_tar, user.home / "busybox.tar")))


@pytest.fixture
def clean_user(user: User) -> Iterator[User]:
    """The user; afterwards none of its processes but the pause process runs and nothing stays mounted."""
    yield user
    left = user.settle()
    assert not left, f"processes left behind: {left}"
    mounts = user.mounts_in_namespace(user.home)
    assert not mounts, f"left mounted in the rootless namespace: {mounts}"


@dataclass
class WebHost:
    """A host of the tests' own: a network namespace joined to this one by a veth pair, serving HTTP."""

    address: str
    port: int
    files: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


@pytest.fixture(scope="module")
def web_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHost]:
    tag = secrets.token_hex(3)
    ns, outer, inner = f"pbrl{tag}", f"pbrlh{tag}", f"pbrlc{tag}"
    net = random.randrange(0, 1 << 14)  # a random /30 of 10.251.0.0/16
    base = (10 << 24) | (251 << 16) | (net << 2)
    host_ip = ".".join(str((base + 1) >> s & 255) for s in (24, 16, 8, 0))
    peer_ip = ".".join(str((base + 2) >> s & 255) for s in (24, 16, 8, 0))
    files = tmp_path_factory.mktemp("www")
    (files / "payload.txt").write_text("hello from the test host\n")

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    server: subprocess.Popen[bytes] | None = None
    try:
        ip("netns", "add", ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", ns, "addr", "add", f"{peer_ip}/30", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "--bind",
                                   peer_ip, "8000", "--directory", str(files)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-sf", "-m", "1", f"http://{peer_ip}:8000/payload.txt"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the test host's HTTP server did not start"
            time.sleep(0.1)
        yield WebHost(peer_ip, 8000, files)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
