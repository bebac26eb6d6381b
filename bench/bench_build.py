#!/usr/bin/env python3
"""Build benchmark: `pybuild build` against Debian's `buildah bud --layers`, interleaved in one run.

usage: bench/bench_build.py [--runs 5] [--workdir /var/tmp] [--big-assets-mib 256]
                            [--tools pybuild,buildah,rootless]

``--tools`` may add ``rootless``: pybuild run by an ordinary user the benchmark
makes (and deletes), in its user namespace with slirp4netns, as a third tool.

Makes the reference context with scripts/make-reference-context
(multi-stage, 3,000 small files, 4 x 32 MiB assets, base busybox:latest)
and the busybox base image with scripts/make-busybox-rootfs. Both
tools get the same base image: pybuild imports the tar; pybuild saves it as
an OCI archive and `skopeo copy` puts that into buildah's private
containers-storage (overlay driver, --root/--runroot under the scratch dir,
nothing global is touched; buildah's default isolation, i.e. `oci` = runc).

Each run, for each tool (order alternates between runs), on a fresh store
with only the base image in it:

  cold   build the context
  no-op  build the same context again (everything cached)
  edit   append a line to app.sh, build again (last two steps rebuilt)

Every build is timed (wall clock) and its process tree is watched: peak of
the summed PSS of the build process and all its descendants (sampled every
--sample-ms by reading /proc), and the largest single-process max RSS
(GNU time's %M: wait4's rusage of the build and every descendant it reaped).
One untimed warm-up round runs first (page cache, Python byte code).
Then one cold pybuild build of a context whose assets are 4 x
--big-assets-mib MiB shows whether memory grows with the context.

Prints medians, pybuild/buildah ratios against the targets of the issue and
the memory figures as markdown tables. Removes everything it made.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCENARIOS = ("cold", "no-op", "edit")
# Targets of the issue: pybuild / buildah wall time, and the memory bound.
TARGETS = {"cold": 1.0, "no-op": 0.2, "edit": 0.5}
MEMORY_TARGET_MB = 200.0
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # apt-get install time


def sh(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, check=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]


@dataclass
class Sample:
    seconds: float
    tree_pss_mb: float  # peak of the summed PSS of the process tree
    tree_rss_mb: float  # peak of the summed RSS (counts shared pages once per process)
    max_rss_mb: float  # largest single process (wait4 rusage)
    procs: int  # most processes seen in the tree at once


class TreeWatcher(threading.Thread):
    """Samples the memory of ``root`` and its descendants until stopped.

    PIDs are read once each (their parent from /proc/PID/stat); a process
    belongs to the tree when its parent does. Only processes of the tree are
    re-read (smaps_rollup) on every sample, so a sample costs little more
    than one listdir of /proc.
    """

    def __init__(self, root: int, interval: float, count_root: bool = True) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.count_root = count_root
        self.interval = interval
        self.stop_event = threading.Event()
        self.parent: dict[int, int] = {}
        self.in_tree: dict[int, bool] = {root: True}
        self.peak_pss = 0
        self.peak_rss = 0
        self.peak_procs = 0

    def _classify(self, pid: int) -> bool:
        known = self.in_tree.get(pid)
        if known is not None:
            return known
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split(b" ", 2)[1])
        except (OSError, ValueError):
            return False
        result = ppid == self.root or (ppid in self.in_tree and self.in_tree[ppid])
        if not result and ppid not in self.in_tree and ppid > 1:
            result = self._classify(ppid)
        self.in_tree[pid] = result
        return result

    def sample(self) -> None:
        pss = rss = procs = 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if not self._classify(pid) or (pid == self.root and not self.count_root):
                continue
            try:
                with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                    text = f.read()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith(b"Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith(b"Pss:"):
                    pss += int(line.split()[1])
            procs += 1
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, procs)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def finish(self) -> None:
        self.stop_event.set()
        self.join()


def measure(cmd: list[str], env: dict[str, str], interval: float, log: Path) -> Sample:
    """Run ``cmd``: wall time, peak tree memory, largest max RSS.

    The command runs under GNU time (``/usr/bin/time -f %M``), whose report is
    the wait4 rusage of the command and every descendant it reaped. Waiting
    for the command directly would not do: a child's max RSS starts at the
    RSS of the process that forked it (the kernel takes the old mm's high
    water mark at execve), i.e. this benchmark's own Python. The wrapper
    itself (about 1 MB) is left out of the tree sums.
    """
    os.sync()  # write back the previous build's dirty pages before timing this one
    maxrss_file = log.with_suffix(".maxrss")
    wrapped = [TIME, "-f", "%M", "-o", str(maxrss_file), *cmd] if TIME else cmd
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        watcher = TreeWatcher(proc.pid, interval, count_root=not TIME)
        watcher.start()
        _, status, rusage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        watcher.finish()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    maxrss_kb = int(maxrss_file.read_text().split()[-1]) if TIME else rusage.ru_maxrss
    return Sample(seconds, watcher.peak_pss / 1024, watcher.peak_rss / 1024, maxrss_kb / 1024, watcher.peak_procs)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt.startswith(prefix):
                found.append(mnt)
    return found


def remove_networking(path: Path) -> None:
    """The bridges (and nft tables) that the stores under ``path`` made on the host: they outlive a store dir."""
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    roots = set()
    for link in json.loads(out or "[]"):
        alias = link.get("ifalias", "")
        if alias.startswith(f"pybuild:{path}/"):
            roots.add(alias.partition(":")[2])
            subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)
    try:
        from pybuild.runtime.network.nft import table_name
    except ImportError:
        return
    for root in roots:
        subprocess.run(["nft", "delete", "table", "ip", table_name(Path(root))], capture_output=True)


def remove_tree(path: Path) -> None:
    for mnt in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    remove_networking(path)
    shutil.rmtree(path, ignore_errors=True)


def find_pybuild() -> str:
    """The console script next to this interpreter: no pyenv shim (~50 ms) in front of it."""
    here = Path(sys.executable).parent / "pybuild"
    if here.exists():
        return str(here)
    found = shutil.which("pybuild")
    if not found:
        raise SystemExit("pybuild not installed (pip install -e .)")
    real = subprocess.run(["pyenv", "which", "pybuild"], capture_output=True, text=True)
    return real.stdout.strip() if real.returncode == 0 and real.stdout.strip() else found


def make_base_images(work: Path, pybuild: str, env: dict[str, str]) -> None:
    """``work/busybox.tar`` (a rootfs tar, for pybuild import) and ``work/busybox-oci.tar`` (the image pybuild
    makes of it, as an OCI archive for skopeo): both tools start from the very same image."""
    sh("sh", str(REPO / "scripts" / "make-busybox-rootfs"), str(work / "busybox.tar"))
    seed_root = work / "seed"
    sh(pybuild, "--root", str(seed_root), "import", str(work / "busybox.tar"), "busybox:latest", env=env)
    sh(pybuild, "--root", str(seed_root), "save", "-o", str(work / "busybox-oci.tar"), "busybox:latest", env=env)
    remove_tree(seed_root)


def make_big_context(ref: Path, dest: Path, mib: int) -> None:
    """The reference context with its four assets grown to ``mib`` MiB each (fixed seed)."""
    shutil.copytree(ref, dest, ignore=shutil.ignore_patterns("assets"))
    (dest / "assets").mkdir()
    rng = random.Random(2)
    chunk = 16 << 20
    for i in range(4):
        with open(dest / "assets" / f"blob{i}.bin", "wb") as f:
            for _ in range(0, mib << 20, chunk):
                f.write(rng.randbytes(min(chunk, mib << 20)))


class Tool:
    name: str

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.store: Path | None = None

    def fresh_store(self, n: int) -> None:
        raise NotImplementedError

    def build_cmd(self, context: Path) -> list[str]:
        raise NotImplementedError

    def drop_store(self) -> None:
        if self.store is not None:
            remove_tree(self.store)
            self.store = None


class Pybuild(Tool):
    name = "pybuild"

    def __init__(self, work: Path, env: dict[str, str], exe: str, base_tar: Path) -> None:
        super().__init__(work, env)
        self.exe = exe
        self.base_tar = base_tar

    def fresh_store(self, n: int) -> None:
        self.store = self.work / f"pybuild-{n}"
        sh(self.exe, "--root", str(self.store), "import", str(self.base_tar), "busybox:latest", env=self.env)

    def build_cmd(self, context: Path) -> list[str]:
        assert self.store is not None
        return [self.exe, "--root", str(self.store), "build", "-t", "ref:v1", str(context)]


class RootlessPybuild(Pybuild):
    """pybuild run by an ordinary user made for the benchmark (``useradd``, a subordinate range, ``setpriv``).

    It runs Debian's /usr/bin/python3 from the venv of scripts/make-rootless-python
    over a copy of the checkout laid out as installed, as the rootless tests do.
    """

    name = "rootless"

    def __init__(self, work: Path, env: dict[str, str], base_tar: Path) -> None:
        super().__init__(work, env, "", base_tar)
        venv = Path("/var/tmp/pybuild-test-cache/rootless-venv")
        sh(str(REPO / "scripts" / "make-rootless-python"), str(venv))
        self.user = f"pbbench{os.getpid() % 100000}"
        sh("useradd", "--create-home", "--shell", "/bin/sh", self.user)
        import pwd

        entry = pwd.getpwnam(self.user)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
        if self.user not in Path("/etc/subuid").read_text():
            raise SystemExit(f"useradd gave {self.user} no subordinate ids (SUB_UID_COUNT in /etc/login.defs)")
        self.runtime = Path(f"/run/user/{self.uid}")
        self.runtime.mkdir(parents=True, exist_ok=True)
        os.chown(self.runtime, self.uid, self.gid)
        os.chmod(self.runtime, 0o700)
        code = work / "rootless-code"
        with open(REPO / "pyproject.toml", "rb") as f:
            import tomllib

            package_dirs: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
        for package, source in sorted(package_dirs.items()):
            target = code.joinpath(*package.split("."))
            if not target.exists():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        sh("chmod", "-R", "a+rX", str(code))
        compileall.compile_dir(str(code), quiet=1)
        self.base_copy = self.home / "busybox.tar"
        shutil.copy(base_tar, self.base_copy)
        self.env = {"HOME": str(self.home), "USER": self.user, "PATH": f"{venv}/bin:/usr/bin:/bin",
                    "PYTHONPATH": str(code), "XDG_RUNTIME_DIR": str(self.runtime)}
        self.prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                       f"{venv}/bin/python", "-m", "pybuild"]
        os.chmod(work, 0o755)  # the context lives here

    def fresh_store(self, n: int) -> None:
        self.store = self.home / f"pybuild-{n}"
        sh(*self.prefix, "--root", str(self.store), "import", str(self.base_copy), "busybox:latest", env=self.env)

    def build_cmd(self, context: Path) -> list[str]:
        assert self.store is not None
        return [*self.prefix, "--root", str(self.store), "build", "-t", "ref:v1", str(context)]

    def close(self) -> None:
        for _ in range(50):
            subprocess.run(["pkill", "-KILL", "-u", str(self.uid)], capture_output=True)
            if subprocess.run(["pgrep", "-u", str(self.uid)], capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        subprocess.run(["userdel", "--force", "--remove", self.user], capture_output=True)
        shutil.rmtree(self.runtime, ignore_errors=True)


class Buildah(Tool):
    name = "buildah"

    def __init__(self, work: Path, env: dict[str, str], oci_archive: Path, driver: str) -> None:
        super().__init__(work, env)
        self.oci_archive = oci_archive
        self.driver = driver

    def opts(self) -> list[str]:
        assert self.store is not None
        return ["--root", str(self.store / "root"), "--runroot", str(self.store / "runroot"),
                "--storage-driver", self.driver]

    def fresh_store(self, n: int) -> None:
        self.store = self.work / f"buildah-{n}"
        dest = f"containers-storage:[{self.driver}@{self.store / 'root'}+{self.store / 'runroot'}]" \
               "localhost/busybox:latest"
        sh("skopeo", "copy", "--quiet", f"oci-archive:{self.oci_archive}", dest, env=self.env)

    def build_cmd(self, context: Path) -> list[str]:
        return ["buildah", *self.opts(), "bud", "--layers", "-t", "ref:v1", str(context)]

    def drop_store(self) -> None:
        if self.store is not None:
            subprocess.run(["buildah", *self.opts(), "rm", "--all"], capture_output=True, env=self.env)
            subprocess.run(["buildah", *self.opts(), "umount", "--all"], capture_output=True, env=self.env)
        super().drop_store()


@dataclass
class Results:
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)

    def add(self, tool: str, scenario: str, sample: Sample) -> None:
        self.samples.setdefault(tool, {}).setdefault(scenario, []).append(sample)


def one_round(tool: Tool, n: int, context: Path, app_sh: bytes, interval: float, results: Results | None,
              log_dir: Path) -> str:
    (context / "app.sh").write_bytes(app_sh)
    tool.fresh_store(n)
    try:
        line = []
        for scenario in SCENARIOS:
            if scenario == "edit":
                with open(context / "app.sh", "ab") as f:
                    f.write(f"echo edit {n}\n".encode())
            s = measure(tool.build_cmd(context), tool.env, interval, log_dir / f"{tool.name}-{n}-{scenario}.log")
            if results is not None:
                results.add(tool.name, scenario, s)
            line.append(f"{scenario} {s.seconds:.2f}s/{s.tree_pss_mb:.0f}MB")
        return f"{tool.name:8s} " + "  ".join(line)
    finally:
        (context / "app.sh").write_bytes(app_sh)
        tool.drop_store()


def med(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(float(getattr(s, attr)) for s in samples))


def report(results: Results, runs: int, big: tuple[int, list[tuple[str, Sample]]] | None, isolation: str,
           driver: str) -> None:
    py = results.samples.get("pybuild", {})
    ba = results.samples.get("buildah", {})
    print()
    print(f"### Build: reference context, median of {runs} interleaved runs")
    print()
    print(f"buildah: `buildah bud --layers`, isolation {isolation}, storage driver {driver}")
    print()
    print("| scenario | pybuild | buildah | pybuild / buildah | target | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for sc in SCENARIOS:
        p = med(py[sc], "seconds") if sc in py else float("nan")
        b = med(ba[sc], "seconds") if sc in ba else float("nan")
        ratio = p / b if b == b and p == p else float("nan")
        target = TARGETS[sc]
        met = "yes" if ratio <= target else ("no" if ratio == ratio else "?")
        print(f"| {sc} | {p:.2f} s | {b:.2f} s | {ratio:.2f}x | < {target:.1f}x | {met} |")
    rl = results.samples.get("rootless", {})
    if rl:
        print()
        print(f"### Rootless pybuild (an ordinary user) against rootful pybuild, median of {runs} interleaved runs")
        print()
        print("| scenario | rootful | rootless | rootless / rootful |")
        print("| --- | --- | --- | --- |")
        for sc in SCENARIOS:
            p = med(py[sc], "seconds") if sc in py else float("nan")
            r = med(rl[sc], "seconds") if sc in rl else float("nan")
            print(f"| {sc} | {p:.2f} s | {r:.2f} s | {r / p if p == p and p else float('nan'):.2f}x |")
    print()
    print("all runs (s):")
    named = [(name, results.samples[name]) for name in ("pybuild", "buildah", "rootless")
             if name in results.samples]
    for name, per in named:
        for sc in SCENARIOS:
            if sc in per:
                print(f"  {name:8s} {sc:6s} " + " ".join(f"{s.seconds:.2f}" for s in per[sc]))
    print()
    print(f"### Peak memory of the build's process tree (median of {runs}; target pybuild < "
          f"{MEMORY_TARGET_MB:.0f} MB)")
    print()
    print("| tool | scenario | tree PSS peak | tree RSS peak | largest process max RSS | processes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, per in named:
        for sc in SCENARIOS:
            if sc in per:
                ss = per[sc]
                print(f"| {name} | {sc} | {med(ss, 'tree_pss_mb'):.0f} MB | {med(ss, 'tree_rss_mb'):.0f} MB | "
                      f"{med(ss, 'max_rss_mb'):.0f} MB | {max(s.procs for s in ss)} |")
    if big is not None:
        mib, big_named = big
        for tool_name, s in big_named:
            print(f"| {tool_name} | cold, assets 4 x {mib} MiB "
                  f"({s.seconds:.1f} s) | {s.tree_pss_mb:.0f} MB | {s.tree_rss_mb:.0f} MB | {s.max_rss_mb:.0f} MB | "
                  f"{s.procs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", default="/var/tmp", help="parent of the scratch dir (ext4, not tmpfs)")
    parser.add_argument("--tools", default="pybuild,buildah")
    parser.add_argument("--storage-driver", default="overlay", help="buildah's driver (overlay or vfs)")
    parser.add_argument("--big-assets-mib", type=int, default=256,
                        help="one more cold pybuild build with 4 assets of this size (0: skip)")
    parser.add_argument("--big-buildah", action="store_true", help="also build the big context with buildah")
    parser.add_argument("--sample-ms", type=float, default=20.0, help="memory sampling interval")
    parser.add_argument("--json", help="also write every sample to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    args = parser.parse_args()
    tools_wanted = args.tools.split(",")
    interval = args.sample_ms / 1000

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the console script should find warm byte code
    env.pop("BUILDAH_ISOLATION", None)
    isolation = "-"
    if "buildah" in tools_wanted:
        runc = sh("runc", "--version").stdout.decode().split()[2]
        isolation = f"oci (buildah's default, BUILDAH_ISOLATION unset; runc {runc})"
    pybuild = find_pybuild()
    # Byte-compile pybuild's packages once; the warm-up round fills the rest (requests, ...).
    for sub in ("pybuild", "pybuild.store", "pybuild.builder", "pybuild.runtime", "pybuild.registry"):
        mod = __import__(sub, fromlist=["_"])
        compileall.compile_dir(str(Path(str(mod.__file__)).parent), quiet=1)

    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-build-", dir=args.workdir))
    logs = work / "logs"
    logs.mkdir()
    try:
        context = work / "ctx"
        sh(sys.executable, str(REPO / "scripts" / "make-reference-context"), str(context), "--base", "busybox:latest")
        app_sh = (context / "app.sh").read_bytes()
        make_base_images(work, pybuild, env)

        tools: list[Tool] = []
        if "pybuild" in tools_wanted:
            tools.append(Pybuild(work, env, pybuild, work / "busybox.tar"))
        if "buildah" in tools_wanted:
            tools.append(Buildah(work, env, work / "busybox-oci.tar", args.storage_driver))
        if "rootless" in tools_wanted:
            tools.append(RootlessPybuild(work, env, work / "busybox.tar"))
        print(f"pybuild: {pybuild}; scratch {work}", file=sys.stderr)

        results = Results()
        n = 0
        for rnd in range(args.runs + 1):  # round 0 warms up, untimed
            order = tools if rnd % 2 == 0 else tools[::-1]
            for tool in order:
                line = one_round(tool, n, context, app_sh, interval, results if rnd else None, logs)
                n += 1
                print(f"round {rnd}{' (warm-up)' if rnd == 0 else ''}: {line}", file=sys.stderr, flush=True)

        big: tuple[int, list[tuple[str, Sample]]] | None = None
        if args.big_assets_mib and "pybuild" in tools_wanted:
            big_ctx = work / "ctx-big"
            make_big_context(context, big_ctx, args.big_assets_mib)
            big_samples = []
            for tool in tools:
                if tool.name == "buildah" and not args.big_buildah:
                    continue
                tool.fresh_store(n)
                n += 1
                try:
                    s = measure(tool.build_cmd(big_ctx), tool.env, interval, logs / f"{tool.name}-big.log")
                finally:
                    tool.drop_store()
                print(f"big context: {tool.name} {s.seconds:.2f}s/{s.tree_pss_mb:.0f}MB", file=sys.stderr)
                big_samples.append((tool.name, s))
            big = (args.big_assets_mib, big_samples)

        report(results, args.runs, big, isolation, args.storage_driver)
        if args.json:
            dump: dict[str, object] = {name: {sc: [vars(s) for s in ss] for sc, ss in per.items()}
                                       for name, per in results.samples.items()}
            if big:
                dump["big"] = {"assets_mib": big[0], "samples": {name: vars(s) for name, s in big[1]}}
            Path(args.json).write_text(json.dumps(dump, indent=1))
    finally:
        for tool in locals().get("tools", []):
            if isinstance(tool, RootlessPybuild):
                tool.close()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            remove_tree(work)


if __name__ == "__main__":
    os.umask(0o022)
    main()
