#!/usr/bin/env python3
"""Benchmark pybuild's layer tar writer/applier against GNU tar + gzip.

Creates a tree of N files (mixed sizes, half random / half compressible
bytes, fixed seed), then runs, interleaved and repeated:

  1. pybuild write_layer (gzip) of the tree to a file
  2. tar -C tree --numeric-owner -cf - . | gzip -1 > out.tar.gz
  3. pybuild apply_layer of pybuild's blob into a fresh dir
  4. tar -xf of the tree's uncompressed tar, and tar -xzf of pybuild's blob

Each step runs once untimed first (warm cache). Prints medians, MB/s (of the
tree's file bytes) and pybuild/tar ratios, then removes everything it made.

    python bench/bench_layertar.py --files 5000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pybuild.store.compression import Compression
from pybuild.store.layertar import apply_layer, write_layer

TEXT_WORDS = (
    b"layer overlay whiteout opaque digest manifest config image build step run copy "
    b"add env workdir user label expose volume entrypoint cmd healthcheck shell arg "
    b"from scratch alpine debian ubuntu python node golang rust java ruby perl "
).split()


def make_tree(root: Path, files: int, total_bytes: int, seed: int) -> int:
    rng = random.Random(seed)
    # Sizes: mostly small files, a few large ones (log-uniform), scaled to total_bytes.
    raw = [2 ** rng.uniform(6, 22) for _ in range(files)]
    scale = total_bytes / sum(raw)
    sizes = [max(0, int(s * scale)) for s in raw]
    pool_size = 32 << 20
    random_pool = rng.randbytes(pool_size)
    words = [rng.choice(TEXT_WORDS) for _ in range(400_000)]
    text = bytearray()
    line: list[bytes] = []
    for i, w in enumerate(words):
        line.append(w)
        if len(line) == 12:
            text += b"%d: " % i + b" ".join(line) + b"\n"
            line = []
    while len(text) < pool_size:
        text.extend(bytes(text))
    text_pool = bytes(text[:pool_size])

    per_dir = 25
    written = 0
    for i, size in enumerate(sizes):
        d = root / f"d{i // (per_dir * 20):03d}" / f"s{(i // per_dir) % 20:02d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        half = size // 2
        off_r = rng.randrange(0, pool_size - half) if half < pool_size else 0
        off_t = rng.randrange(0, pool_size - (size - half)) if size - half < pool_size else 0
        with open(d / f"f{i:06d}.dat", "wb") as f:
            f.write(random_pool[off_r:off_r + half])
            f.write(text_pool[off_t:off_t + size - half])
        written += size
    return written


def timed(fn: Callable[[], object]) -> float:
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--megabytes", type=int, default=None,
                    help="total file bytes in MB (default: 25 KB per file, 500 MB for 20,000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workdir", default=None, help="parent of the scratch dir (default /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="do not remove the scratch dir")
    args = ap.parse_args(argv)

    megabytes = args.megabytes if args.megabytes is not None else args.files * 25 // 1000
    parent = args.workdir or "/var/tmp"
    work = Path(tempfile.mkdtemp(prefix="bench-layertar-", dir=parent))
    try:
        tree = work / "tree"
        tree.mkdir()
        t0 = time.perf_counter()
        nbytes = make_tree(tree, args.files, megabytes * 1_000_000, args.seed)
        print(f"tree: {args.files} files, {nbytes / 1e6:.0f} MB in {work} "
              f"(made in {time.perf_counter() - t0:.1f}s)", flush=True)
        plain_tar = work / "tree.tar"
        sh(f"tar -C {tree} --numeric-owner -cf {plain_tar} .")
        blob = work / "pybuild.tar.gz"
        gnu_blob = work / "gnu.tar.gz"
        fresh = work / "fresh"

        def py_write() -> None:
            with open(blob, "wb") as f:
                write_layer(tree, f, Compression.GZIP)

        def gnu_write() -> None:
            sh(f"tar -C {tree} --numeric-owner -cf - . | gzip -1 > {gnu_blob}")

        def reset_fresh() -> None:
            if fresh.exists():
                shutil.rmtree(fresh)
            fresh.mkdir()
            os.sync()

        def py_apply() -> None:
            with open(blob, "rb") as f:
                apply_layer(f, fresh)

        def gnu_x() -> None:
            sh(f"tar -C {fresh} -xf {plain_tar}")

        def gnu_xz() -> None:
            sh(f"tar -C {fresh} -xzf {blob}")

        steps: list[tuple[str, Callable[[], None], bool]] = [
            ("pybuild write_layer gzip", py_write, False),
            ("tar -c | gzip -1", gnu_write, False),
            ("pybuild apply_layer (gzip)", py_apply, True),
            ("tar -xf (plain tar)", gnu_x, True),
            ("tar -xzf (gzip blob)", gnu_xz, True),
        ]
        results: dict[str, list[float]] = {name: [] for name, _, _ in steps}
        for rnd in range(args.repeat + 1):  # round 0 warms up, untimed
            for name, fn, needs_fresh in steps:
                if needs_fresh:
                    reset_fresh()
                dt = timed(fn)
                if rnd:
                    results[name].append(dt)
            print(f"round {rnd}{' (warm-up)' if rnd == 0 else ''} done", flush=True)

        sizes = {"pybuild blob": blob.stat().st_size, "gnu gzip -1": gnu_blob.stat().st_size,
                 "plain tar": plain_tar.stat().st_size}
        med = {name: statistics.median(v) for name, v in results.items()}
        print()
        print(f"{'step':30} {'median s':>9} {'MB/s':>8}   runs")
        for name, _, _ in steps:
            runs = " ".join(f"{x:.2f}" for x in results[name])
            print(f"{name:30} {med[name]:9.3f} {nbytes / 1e6 / med[name]:8.0f}   {runs}")
        print()
        print("speed ratios (>1 means pybuild is faster):")
        print(f"  write: tar|gzip -1  / pybuild  = "
              f"{med['tar -c | gzip -1'] / med['pybuild write_layer gzip']:.2f}")
        print(f"  apply: tar -xf      / pybuild  = "
              f"{med['tar -xf (plain tar)'] / med['pybuild apply_layer (gzip)']:.2f}")
        print(f"  apply: tar -xzf     / pybuild  = "
              f"{med['tar -xzf (gzip blob)'] / med['pybuild apply_layer (gzip)']:.2f}")
        print("sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
