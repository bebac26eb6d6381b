#!/usr/bin/env python3
"""Container start latency: `pybuild run --rm --network none busybox true` against `runc run` and
`podman run --rm --network none` on the same busybox rootfs, interleaved in one run.

usage: bench/bench_start.py [--runs 20] [--workdir /var/tmp]

Makes the busybox image with scripts/make-busybox-rootfs, imports it into a
throw-away pybuild root, saves it as an OCI archive, unpacks that with skopeo
and umoci into a runc bundle, and loads it into podman (when installed).
Prints the median wall time of each tool and the ratios. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--installed", action="store_true",
                        help="use this interpreter's pybuild instead of a fresh `pip install .` in a venv")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-start-", dir=args.workdir))
    if args.installed:
        # The console script of this interpreter (no shell shims in front of it).
        pybuild = str(Path(sys.executable).parent / "pybuild")
    else:
        # As users install it: a plain (not editable) install in a venv of its own, byte-compiled.
        sh(sys.executable, "-m", "venv", str(work / "venv"))
        sh(str(work / "venv" / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        sh(str(work / "venv" / "bin" / "python"), "-m", "compileall", "-q", str(work / "venv" / "lib"), env=env)
        pybuild = str(work / "venv" / "bin" / "pybuild")
    root = work / "root"
    tools: dict[str, list[str]] = {}
    try:
        sh(str(REPO / "scripts" / "make-busybox-rootfs"), str(work / "bb.tar"))
        sh(pybuild, "--root", str(root), "import", str(work / "bb.tar"), "busybox:latest")
        tools["pybuild"] = [pybuild, "--root", str(root), "run", "--rm", "--network", "none", "busybox", "true"]
        if shutil.which("runc") and shutil.which("umoci") and shutil.which("skopeo"):
            sh(pybuild, "--root", str(root), "save", "-o", str(work / "bb-oci.tar"), "busybox:latest")
            sh("skopeo", "copy", f"oci-archive:{work / 'bb-oci.tar'}", f"oci:{work / 'oci'}:latest")
            sh("umoci", "unpack", "--image", f"{work / 'oci'}:latest", str(work / "bundle"))
            cfg_path = work / "bundle" / "config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["process"]["args"] = ["true"]
            cfg["process"]["terminal"] = False
            cfg_path.write_text(json.dumps(cfg))
            tools["runc"] = ["runc", "--root", str(work / "runc-state"), "run", "--bundle", str(work / "bundle"),
                             "bench"]
        if shutil.which("podman") and "runc" in tools:
            # A private storage root (nothing global is touched), the same events/cgroup setup as the tests.
            podman = ["podman", "--root", str(work / "podman-root"), "--runroot", str(work / "podman-run"),
                      "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
            sh(*podman, "load", "-i", str(work / "bb-oci.tar"))
            # Limits podman can set where root lacks CAP_SYS_RESOURCE (it asks for 1M open files by default).
            nofile = os.sysconf("SC_OPEN_MAX")
            tools["podman"] = [*podman, "run", "--rm", "--network", "none", "--ulimit", f"nofile={nofile}:{nofile}",
                               "--ulimit", "nproc=4096:4096", "busybox:latest", "true"]
        for cmd in tools.values():  # warm caches once
            timed(cmd)
        samples: dict[str, list[float]] = {name: [] for name in tools}
        for _ in range(args.runs):
            for name, cmd in tools.items():
                samples[name].append(timed(cmd))
        medians = {name: statistics.median(s) for name, s in samples.items()}
        print(f"container start latency, median of {args.runs} interleaved runs (`true` in busybox)")
        for name, med in medians.items():
            ratio = "" if name == "pybuild" else f"   pybuild/{name} = {medians['pybuild'] / med:.2f}x"
            print(f"  {name:8s} {med * 1000:7.1f} ms{ratio}")
    finally:
        if "podman" in tools:
            subprocess.run([*tools["podman"][:11], "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
