#!/usr/bin/env python3
"""Dockerfile size benchmark: build time against the number of instructions, pybuild beside buildah.

usage: bench/bench_dockerfile_size.py [--runs 3] [--sizes 1000,2000,4000] [--tools pybuild,buildah]

A Dockerfile of N instructions: FROM busybox, N LABEL lines (the case that
was quadratic: 1,000 / 2,000 / 4,000 LABELs took 5 / 25 / 116 s), one RUN
in the middle and one at the end. For each size and tool, on a fresh store
holding only the base image: a cold build, then a no-op rebuild. Runs are
interleaved (tool order alternates); medians are printed with the time per
instruction, whose growth from the smallest to the largest size shows
whether an instruction costs O(1) (a ratio near 1) or O(N) (near the size
ratio). The peer is `buildah bud --layers` (Debian's; same base image, a
private storage root). BuildKit joins as a peer in bench/bench_build.py.
Removes everything it made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import Buildah, Pybuild, Tool, find_pybuild, make_base_images, remove_tree  # noqa: E402


def dockerfile(n: int) -> str:
    lines = ["FROM busybox:latest"]
    for i in range(n):
        lines.append(f"LABEL org.example.label{i}=value-{i}")
        if i == n // 2:
            lines.append("RUN echo middle > /middle")
    lines.append("RUN echo end > /end")
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1000,2000,4000")
    parser.add_argument("--tools", default="pybuild,buildah")
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--peer-max", type=int, default=1000,
                        help="the peer builds only Dockerfiles up to this size (buildah takes ~90 ms a LABEL)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    wanted = args.tools.split(",")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pybuild = find_pybuild()
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-dfsize-", dir=args.workdir))
    try:
        make_base_images(work, pybuild, env)
        tools: list[Tool] = []
        if "pybuild" in wanted:
            tools.append(Pybuild(work, env, pybuild, work / "busybox.tar"))
        if "buildah" in wanted:
            tools.append(Buildah(work, env, work / "busybox-oci.tar", "overlay"))
        contexts = {}
        for n in sizes:
            ctx = work / f"ctx-{n}"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(dockerfile(n))
            contexts[n] = ctx
        samples: dict[tuple[str, int, str], list[float]] = {}
        store_no = 0
        for rnd in range(args.runs):
            for n in sizes:
                for tool in tools if rnd % 2 == 0 else tools[::-1]:
                    if tool.name != "pybuild" and n > args.peer_max:
                        continue
                    tool.fresh_store(store_no)
                    store_no += 1
                    log = work / f"{tool.name}-{n}.log"
                    try:
                        for scenario in ("cold", "no-op"):
                            seconds = timed(tool.build_cmd(contexts[n]), tool.env, log)
                            samples.setdefault((tool.name, n, scenario), []).append(seconds)
                            print(f"round {rnd} {tool.name} {n} {scenario}: {seconds:.2f}s", file=sys.stderr,
                                  flush=True)
                    finally:
                        tool.drop_store()
        names = [t.name for t in tools]
        print(f"Medians of {args.runs} runs (seconds; per instruction in ms)\n")
        ratio_head = " pybuild / buildah |" if len(names) > 1 else ""
        print("| instructions | scenario | " + " | ".join(names) + " |" + ratio_head)
        print("| --- | --- | " + " | ".join("---" for _ in names) + " |" + (" --- |" if ratio_head else ""))

        def med(name: str, n: int, scenario: str) -> float | None:
            got = samples.get((name, n, scenario))
            return statistics.median(got) if got else None

        for n in sizes:
            for scenario in ("cold", "no-op"):
                meds = [med(name, n, scenario) for name in names]
                cells = [f"{m:.2f} s ({m / n * 1000:.2f} ms)" if m is not None else "-" for m in meds]
                ratio = ""
                if ratio_head:
                    ratio = f" {meds[0] / meds[1]:.3f}x |" if meds[0] is not None and meds[1] is not None else " - |"
                print(f"| {n} | {scenario} | " + " | ".join(cells) + " |" + ratio)
        print("\nGrowth of the time per instruction from the smallest to the largest size built "
              "(1.0: O(1) per instruction; the size ratio: O(N)):\n")
        for name in names:
            built = [n for n in sizes if med(name, n, "cold") is not None]
            if len(built) < 2:
                continue
            low, high = built[0], built[-1]
            for scenario in ("cold", "no-op"):
                a, b = med(name, low, scenario), med(name, high, scenario)
                assert a is not None and b is not None
                print(f"- {name} {scenario}, {low} -> {high} (size x{high / low:.0f}): {(b / high) / (a / low):.2f}")
    finally:
        remove_tree(work)


if __name__ == "__main__":
    os.umask(0o022)
    main()
