#!/usr/bin/env python3
"""Networking costs, in one run: container start latency with `--network bridge` against
`--network none`, and HTTP through a published port against the same busybox httpd on
`--network host`.

usage: bench/bench_network.py [--runs 20] [--requests 500] [--rounds 5] [--workdir /var/tmp]

Start latency: median wall time of `pybuild run --rm busybox true` per network mode
(interleaved, after one warm-up each). HTTP: two detached containers serve the same
page, one published with `-p 127.0.0.1:PORT:80` on the bridge, one on the host's
network; each round makes N sequential GETs through one requests.Session (busybox
httpd closes every connection, so each request is a new TCP connection: this measures
connection setup + NAT + a small response) and downloads a 64 MiB file once; the
medians over interleaved rounds and the ratios are printed. The store, the bridge
(`pbbench<hex>`, a /24 of 10.213.0.0/16) and the nft table are removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
PAGE = ("mkdir -p /www && echo hello > /www/index.html && head -c 67108864 /dev/zero > /www/big"
        " && exec httpd -f -p {port} -h /www")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-net-", dir=args.workdir))
    pybuild = str(Path(sys.executable).parent / "pybuild")
    root = work / "root"
    env = {**os.environ, "PYBUILD_BRIDGE": f"pbbench{secrets.token_hex(2)}",
           "PYBUILD_SUBNET": f"10.213.{secrets.randbelow(256)}.0/24"}
    env.pop("PYBUILD_ROOT", None)

    def pb(*a: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([pybuild, "--root", str(root), *a], check=True, capture_output=True, text=True,
                              env=env, **kw)  # type: ignore[call-overload]

    def timed(*a: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([pybuild, "--root", str(root), *a], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env)
        return time.perf_counter() - t0

    try:
        subprocess.run([str(REPO / "scripts" / "make-busybox-rootfs"), str(work / "bb.tar")], check=True,
                       capture_output=True)
        pb("import", str(work / "bb.tar"), "busybox:latest")

        modes = ("bridge", "none")
        for mode in modes:  # warm caches once
            timed("run", "--rm", "--network", mode, "busybox", "true")
        starts: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.runs):
            for mode in modes:
                starts[mode].append(timed("run", "--rm", "--network", mode, "busybox", "true"))
        start_med = {m: statistics.median(s) for m, s in starts.items()}

        published, host_port = free_port(), free_port()
        pb("run", "-d", "--name", "bridged", "-p", f"127.0.0.1:{published}:80", "busybox", "sh", "-c",
           PAGE.format(port=80))
        pb("run", "-d", "--name", "hostnet", "--network", "host", "busybox", "sh", "-c",
           PAGE.format(port=f"127.0.0.1:{host_port}"))
        urls = {"published port (bridge)": f"http://127.0.0.1:{published}",
                "host network": f"http://127.0.0.1:{host_port}"}
        for url in urls.values():
            for _ in range(100):
                try:
                    requests.get(url + "/", timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
        rates: dict[str, list[float]] = {k: [] for k in urls}
        bulk: dict[str, list[float]] = {k: [] for k in urls}
        with requests.Session() as session:
            for url in urls.values():  # warm-up
                for _ in range(20):
                    session.get(url + "/", timeout=5).raise_for_status()
            for _ in range(args.rounds):
                for name, url in urls.items():
                    t0 = time.perf_counter()
                    for _ in range(args.requests):
                        session.get(url + "/", timeout=5).raise_for_status()
                    rates[name].append(args.requests / (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    size = len(session.get(url + "/big", timeout=60).content)
                    bulk[name].append(size / (time.perf_counter() - t0) / 1e6)

        print(f"container start latency, median of {args.runs} interleaved runs (`run --rm busybox true`)")
        for mode, med in start_med.items():
            print(f"  --network {mode:6s} {med * 1000:7.1f} ms")
        print(f"  bridge / none = {start_med['bridge'] / start_med['none']:.2f}x")
        print(f"HTTP through 127.0.0.1, medians of {args.rounds} interleaved rounds "
              f"({args.requests} sequential GETs of a 6-byte page; one 64 MiB download)")
        rate_med = {k: statistics.median(v) for k, v in rates.items()}
        bulk_med = {k: statistics.median(v) for k, v in bulk.items()}
        for name in urls:
            print(f"  {name:24s} {rate_med[name]:8.0f} requests/s   {bulk_med[name]:8.0f} MB/s")
        a, b = urls
        print(f"  published / host = {rate_med[a] / rate_med[b]:.2f}x requests/s, "
              f"{bulk_med[a] / bulk_med[b]:.2f}x MB/s")
    finally:
        subprocess.run([pybuild, "--root", str(root), "rm", "-f", "bridged", "hostnet"], capture_output=True,
                       env=env)
        subprocess.run([pybuild, "--root", str(root), "prune"], capture_output=True, env=env)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
