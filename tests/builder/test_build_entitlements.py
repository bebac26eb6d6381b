"""Build entitlements, as BuildKit's: RUN --network=host and RUN --security=insecure need ``--allow``.

Without the build's consent the build is refused before anything runs (the
whole plan is checked, after --target pruning); with it, host networking
reaches the host's loopback and an insecure RUN is privileged (no seccomp,
every capability), while the other steps keep Docker's default isolation.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builder.test_build import write_context
from tests.conftest import Cli


@pytest.fixture
def ctx(workdir: Path) -> Path:
    path = workdir / "ctx"
    path.mkdir()
    return path


class _LoopbackServer:
    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                requests.append(self.path)
                body = b"only-on-the-host-loopback\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def loopback() -> Iterator[_LoopbackServer]:
    """A tiny HTTP server on the host's 127.0.0.1 only (a service no build should reach unasked)."""
    srv = _LoopbackServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.server.shutdown()
        srv.server.server_close()
        srv.thread.join(timeout=10)


def _sh(cli: Cli, image: str, script: str) -> str:
    return cli("run", "--rm", "--network", "none", image, "sh", "-c", script).stdout


@pytest.mark.slow
def test_run_network_host_needs_allow(bcli: Cli, ctx: Path, loopback: _LoopbackServer) -> None:
    url = f"http://127.0.0.1:{loopback.port}/"
    df = f"FROM busybox\nRUN echo first-step-ran\nRUN --network=host wget -qO- {url} > /got\n"
    write_context(ctx, {"Dockerfile": df})
    refused = bcli("build", "--network", "none", "-t", "net:v1", str(ctx), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == ("pybuild: error: Dockerfile:3: RUN --network=host needs the build's consent: "
                                      "pybuild build --allow network.host")
    assert "first-step-ran" not in refused.stdout + refused.stderr  # refused before anything ran
    assert loopback.requests == []
    assert bcli("images", "-q", "net:v1", check=False).stdout.strip() == ""
    bcli("build", "--network", "none", "--allow", "network.host", "-t", "net:v1", str(ctx))
    assert loopback.requests == ["/"]
    assert _sh(bcli, "net:v1", "cat /got") == "only-on-the-host-loopback\n"
    # the build's own --network host is consent to host networking (as buildx adds the entitlement)
    bcli("build", "--network", "host", "--no-cache", "-t", "net:v2", str(ctx))
    assert loopback.requests == ["/", "/"]


def test_entitlements_are_checked_after_target_pruning(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox AS privileged
RUN --security=insecure echo privileged-ran
FROM busybox AS hostnet
RUN --network=host echo host-ran
FROM busybox AS plain
RUN echo plain-ran
"""
    write_context(ctx, {"Dockerfile": df})
    # the last stage needs neither: nothing to consent to
    ok = bcli("build", "--progress", "plain", str(ctx))
    assert "plain-ran" in ok.stdout and "privileged-ran" not in ok.stdout
    refused = bcli("build", "--target", "privileged", str(ctx), check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("pybuild: error: Dockerfile:2: RUN --security=insecure needs the build's "
                                      "consent: pybuild build --allow security.insecure")
    refused = bcli("build", "--target", "hostnet", "--allow", "security.insecure", str(ctx), check=False)
    assert refused.returncode == 1
    assert "Dockerfile:4: RUN --network=host needs the build's consent: pybuild build --allow network.host" \
        in refused.stderr
    # repeatable and comma-separated, as docker buildx takes them
    bcli("build", "--target", "hostnet", "--allow", "network.host,security.insecure", str(ctx))
    bcli("build", "--target", "privileged", "--allow", "network.host", "--allow", "security.insecure", str(ctx))


def test_unknown_entitlement_is_a_usage_error(bcli: Cli, ctx: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nRUN echo should-not-run\n"})
    bad = bcli("build", "--allow", "network.host,device", str(ctx), check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert 'unknown entitlement "device"' in bad.stderr and "network.host, security.insecure" in bad.stderr
    assert "should-not-run" not in bad.stdout


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.slow
def test_security_insecure_is_privileged_and_keyed(bcli: Cli, ctx: Path) -> None:
    df = """\
FROM busybox
RUN grep -E '^(Seccomp|CapBnd):' /proc/self/status > /normal
RUN --security=insecure grep -E '^(Seccomp|CapBnd):' /proc/self/status > /insecure && \\
    mkdir /m && mount -t tmpfs none /m && umount /m && rmdir /m && test -e /dev/loop-control
RUN --security=sandbox grep -E '^(Seccomp|CapBnd):' /proc/self/status > /sandbox
"""
    write_context(ctx, {"Dockerfile": df})
    bcli("build", "--allow", "security.insecure", "-t", "sec:v1", str(ctx))
    normal = _status(_sh(bcli, "sec:v1", "cat /normal"))
    insecure = _status(_sh(bcli, "sec:v1", "cat /insecure"))
    sandbox = _status(_sh(bcli, "sec:v1", "cat /sandbox"))
    host = _status(Path("/proc/self/status").read_text())
    assert normal == sandbox == {"Seccomp": "2", "CapBnd": "00000000a80425fb"}  # Docker's 14 capabilities
    assert insecure == {"Seccomp": "0", "CapBnd": host["CapBnd"]}  # every capability, unconfined
    # the security mode is part of the step's key: the same command without it is another step
    (ctx / "Dockerfile").write_text(df.replace("--security=insecure ", ""))
    out = bcli("build", "-t", "sec:v2", str(ctx), check=False)
    assert out.returncode == 1  # sandboxed, the mount is refused: it really ran again
    assert "CACHED [3/4]" not in out.stdout


def test_onbuild_triggers_need_consent_in_the_child_build(bcli: Cli, ctx: Path, workdir: Path) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nONBUILD RUN --security=insecure echo trigger-ran\n"})
    bcli("build", "-t", "parent:v1", str(ctx))  # the trigger does not run here: nothing to consent to
    child = workdir / "child"
    write_context(child, {"Dockerfile": "FROM parent:v1\nRUN echo child-ran\n"})
    refused = bcli("build", str(child), check=False)
    assert refused.returncode == 1
    assert "RUN --security=insecure needs the build's consent: pybuild build --allow security.insecure" \
        in refused.stderr
    assert "trigger-ran" not in refused.stdout and "child-ran" not in refused.stdout
