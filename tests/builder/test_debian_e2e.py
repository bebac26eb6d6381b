"""The most common real Dockerfile, end to end: a Debian base, apt-get install in RUN, the app copied
in, run with a published port and fetched from the host."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import SCRIPTS, Cli

CACHE = Path(os.environ.get("PYBUILD_TEST_CACHE", "/var/tmp/pybuild-test-cache"))

DOCKERFILE = """\
FROM debian:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends busybox \\
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/www
COPY site/ ./
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/srv/www"]
"""


@pytest.fixture(scope="session")
def debian_tar() -> Path:
    """A minimal Debian bookworm rootfs made with debootstrap by scripts/make-debian-rootfs (kept between runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / "debian-bookworm.tar"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run(["sh", str(SCRIPTS / "make-debian-rootfs"), str(tmp), "bookworm"], check=True, timeout=900)
        tmp.rename(out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_debian_apt_get_app_with_published_port(cli: Cli, debian_tar: Path, workdir: Path) -> None:
    cli("import", str(debian_tar), "debian:bookworm")
    ctx = workdir / "ctx"
    (ctx / "site").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "site" / "index.html").write_text("<h1>built by pybuild</h1>\n")
    out = cli("-t", "webapp:v1", str(ctx), timeout=900).stdout
    assert "RUN apt-get update" in out
    again = cli("-t", "webapp:v1", str(ctx)).stdout
    assert "CACHED [2/4] RUN apt-get update" in again  # the slow step is not run twice
    assert cli("run", "--rm", "webapp:v1", "busybox", "--help", check=False).returncode in (0, 1)
    port = _free_port()
    cid = cli("run", "-d", "--name", "web", "-p", f"{port}:8080", "webapp:v1").stdout.strip()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert resp.status_code == 200
        assert resp.text == "<h1>built by pybuild</h1>\n"
        logs = cli("logs", "web")
        assert "response:200" in logs.stderr + logs.stdout  # httpd -v logs each request
    finally:
        cli("rm", "-f", cid, check=False)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
