"""One interface over cgroup v1 and cgroup v2: create, limit, join, watch, freeze, kill, remove.

The version is detected at run time from ``/proc/self/mountinfo``: when
``/sys/fs/cgroup`` itself is a ``cgroup2`` mount the host is pure v2,
otherwise each v1 controller is found at its own mount point (a hybrid host
may also have a ``cgroup2`` mount, e.g. ``/sys/fs/cgroup/unified``, which
:class:`CgroupV2` can use when asked to).

Docker's flags map to files the way runc's ``fs`` and ``fs2`` managers do it:

============== ================================================ ===========================
flag           cgroup v1                                        cgroup v2
============== ================================================ ===========================
--memory       memory.limit_in_bytes                            memory.max
--memory-swap  memory.memsw.limit_in_bytes (memory + swap)      memory.swap.max (swap only)
--cpus         cpu.cfs_period_us = 100000, cpu.cfs_quota_us     cpu.max "quota 100000"
--cpu-shares   cpu.shares                                       cpu.weight (converted)
--pids-limit   pids.max                                         pids.max
============== ================================================ ===========================

Device rules (``runtime/devices.py``, Docker's allowlist by default) go
where runc puts them: on v1 into the ``devices`` controller (``a`` to
devices.deny, then each rule, in order, to devices.allow or devices.deny);
on v2, which has no such controller, into a ``BPF_PROG_TYPE_CGROUP_DEVICE``
program (``pybuild/linux/bpf.py``) attached to the new cgroup before any
process joins it. The attachment holds the program; it goes with the cgroup.

``PYBUILD_CGROUP_VERSION`` (``v1`` or ``v2``) overrides the detected
version: on a hybrid host ``v2`` puts containers in its cgroup2 mount,
with eBPF device filtering (and no limits if, as usual there, it has no
controllers: asking for one is then an error).

A cgroup is named by its path relative to the root of every hierarchy, e.g.
``pybuild/<container-id>``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pybuild import records
from pybuild.errors import ContainerError, RootlessError, UsageError
from pybuild.linux.fsutil import ENTER, walk
from pybuild.records import record
from pybuild.store.units import parse_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .devices import DeviceRule

CGROUP_ROOT = Path("/sys/fs/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")

CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144
MIN_MEMORY = 6 * 1024 * 1024  # Docker's linuxMinMemory
_CPU_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
# v1 reports "no limit" as PAGE_COUNTER_MAX pages: LONG_MAX rounded down to a page.
V1_UNLIMITED_THRESHOLD = (1 << 63) - (1 << 20)

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "devices")
V2_CONTROLLERS = ("cpu", "cpuset", "memory", "pids")

_POLL = 0.01


class CgroupNotFound(ContainerError):
    """The named cgroup does not exist in any hierarchy."""


class CgroupDelegationError(RootlessError):
    """Rootless limits without a delegated cgroup v2 subtree (``docker run`` would exit 125)."""

    exit_code = 125


class CgroupVanished(ContainerError):
    """A cgroup file or directory disappeared while it was used (removed concurrently)."""


# ---------------------------------------------------------------- values


@record(frozen=True)
class Limits:
    """Resource limits, in Docker's terms (``docker run`` flags)."""

    memory: int | None = None  # bytes (-m)
    memory_swap: int | None = None  # memory + swap in bytes (--memory-swap); -1 = unlimited swap
    cpus: float | None = None  # --cpus
    cpu_shares: int | None = None  # --cpu-shares
    pids: int | None = None  # --pids-limit; <= 0 means unlimited
    cpu_period: int | None = None  # --cpu-period, microseconds
    cpu_quota: int | None = None  # --cpu-quota, microseconds per period; -1 = unlimited
    cpuset_cpus: str | None = None  # --cpuset-cpus, e.g. "0-2,4"
    cpuset_mems: str | None = None  # --cpuset-mems
    memory_reservation: int | None = None  # --memory-reservation, bytes (a soft limit)


@record(frozen=True)
class Stats:
    cpu_usage_ns: int
    memory_usage: int
    memory_limit: int | None
    pids: int
    pids_limit: int | None


def _ram_in_bytes(text: str) -> int:
    """Docker's RAMInBytes: a number with an optional binary unit (b, k, m, g, t, p)."""
    try:
        return parse_size(text)
    except ValueError:
        raise UsageError(f'invalid memory value "{text}"', "use a number with an optional unit: b, k, m, g") from None


def parse_memory(text: str) -> int:
    """Parse ``--memory``: "32m", "1g", "512k", "100b" or plain bytes; at least 6 MiB."""
    value = _ram_in_bytes(text)
    if value < MIN_MEMORY:
        raise UsageError("minimum memory limit allowed is 6MB", f'got "{text}" = {value} bytes')
    return value


def parse_memory_swap(text: str) -> int:
    """Parse ``--memory-swap``: like :func:`parse_memory`, or "-1" for unlimited swap."""
    return -1 if text.strip() == "-1" else _ram_in_bytes(text)


def cpu_shares_to_weight(shares: int) -> int:
    """Map v1 cpu.shares [2, 262144] onto v2 cpu.weight [1, 10000] as runc does."""
    shares = min(max(shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_quota(cpus: float) -> int:
    """--cpus as a CFS quota in microseconds per :data:`CPU_PERIOD_US`."""
    return round(cpus * CPU_PERIOD_US)


def validate(limits: Limits) -> Limits:
    """Check limits as Docker does; clamp cpu shares into the kernel's range (0 means unset)."""
    if limits.memory is not None and limits.memory < MIN_MEMORY:
        raise UsageError("minimum memory limit allowed is 6MB", f"got {limits.memory} bytes")
    if limits.memory_swap is not None:
        if limits.memory is None:
            raise UsageError("a memory-swap limit needs a memory limit", "set --memory as well")
        if limits.memory_swap != -1 and limits.memory_swap < limits.memory:
            raise UsageError("minimum memory-swap limit should be larger than memory limit",
                             "--memory-swap is memory plus swap, or -1 for unlimited swap")
    if limits.cpus is not None:
        ncpu = os.cpu_count() or 1
        if not math.isfinite(limits.cpus) or cpu_quota(limits.cpus) < MIN_CPU_QUOTA_US or limits.cpus > ncpu:
            raise UsageError(f"invalid value {limits.cpus} for cpus",
                             f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    shares = limits.cpu_shares
    if shares is not None:
        if shares < 0:
            raise UsageError(f"invalid CPU shares {shares}", "must be a positive number")
        shares = None if shares == 0 else min(max(shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
    if limits.cpus is not None and (limits.cpu_period or limits.cpu_quota):
        raise UsageError("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set",
                         "use --cpus, or --cpu-period with --cpu-quota")
    if limits.cpu_period is not None and limits.cpu_period != 0 and not 1000 <= limits.cpu_period <= 1_000_000:
        raise UsageError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if limits.cpu_quota is not None and limits.cpu_quota not in (0, -1) and limits.cpu_quota < 1000:
        raise UsageError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    for what, value in (("cpuset-cpus", limits.cpuset_cpus), ("cpuset-mems", limits.cpuset_mems)):
        if value is not None and not _CPU_LIST.fullmatch(value):
            raise UsageError(f"invalid value {value} for {what}", "a list such as 0-3 or 0,2,4")
    reservation = limits.memory_reservation
    if reservation is not None:
        if reservation == 0:
            reservation = None
        elif reservation < MIN_MEMORY:
            raise UsageError("minimum memory reservation allowed is 6MB")
        elif limits.memory is not None and limits.memory < reservation:
            raise UsageError("Minimum memory limit can not be less than memory reservation limit",
                             "see usage")
    return records.replace(limits, cpu_shares=shares, cpu_period=limits.cpu_period or None,
                           cpu_quota=limits.cpu_quota or None, memory_reservation=reservation)


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"invalid cgroup name {name!r}", "use a relative path such as pybuild/<id>")
    return name


# ---------------------------------------------------------------- mounts


@record(frozen=True)
class Mount:
    mount_point: Path
    root: str
    device: str
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


_MOUNTS_CACHE: dict[Path, list[Mount]] = {}


def cgroup_mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    """Every cgroup and cgroup2 mount, in mount order (read once per process: they do not move)."""
    cached = _MOUNTS_CACHE.get(mountinfo) if mountinfo == MOUNTINFO else None
    if cached is not None:
        return list(cached)
    mounts = _read_cgroup_mounts(mountinfo)
    if mountinfo == MOUNTINFO:
        _MOUNTS_CACHE[mountinfo] = mounts
    return list(mounts)


def _read_cgroup_mounts(mountinfo: Path) -> list[Mount]:
    mounts = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype = fields[sep + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Mount(Path(_unescape(fields[4])), _unescape(fields[3]), fields[2], fstype,
                                frozenset(fields[sep + 3].split(","))))
    return mounts


def v1_mounts() -> dict[str, Path]:
    """Controller name -> mount point of its v1 hierarchy (the mount nearest the hierarchy root)."""
    found: dict[str, Mount] = {}
    for mount in cgroup_mounts():
        if mount.fstype != "cgroup":
            continue
        for option in mount.options:
            best = found.get(option)
            if best is None or len(mount.root) < len(best.root):
                found[option] = mount
    return {name: m.mount_point for name, m in found.items() if name in V1_CONTROLLERS}


def v2_mount() -> Path | None:
    """The cgroup2 mount: /sys/fs/cgroup on a pure v2 host, else any (e.g. a hybrid's unified)."""
    mounts = [m for m in cgroup_mounts() if m.fstype == "cgroup2"]
    for mount in mounts:
        if mount.mount_point == CGROUP_ROOT:
            return mount.mount_point
    return mounts[0].mount_point if mounts else None


VERSION_ENV = "PYBUILD_CGROUP_VERSION"


def version() -> str:
    """"v2" when /sys/fs/cgroup is a cgroup2 mount, "v1" when v1 controllers are mounted.

    ``$PYBUILD_CGROUP_VERSION`` (``v1`` or ``v2``; empty means unset) chooses instead, if this
    host has that kind of hierarchy.
    """
    chosen = os.environ.get(VERSION_ENV, "")
    if chosen:
        if chosen not in ("v1", "v2"):
            raise UsageError(f"invalid {VERSION_ENV} {chosen!r}", 'use "v1" or "v2"')
        if chosen == "v1" and not v1_mounts():
            raise ContainerError(f"{VERSION_ENV}=v1 but no cgroup v1 controller is mounted")
        if chosen == "v2" and v2_mount() is None:
            raise ContainerError(f"{VERSION_ENV}=v2 but no cgroup2 filesystem is mounted")
        return chosen
    at_root = [m for m in cgroup_mounts() if m.mount_point == CGROUP_ROOT]
    if at_root and at_root[-1].fstype == "cgroup2":
        return "v2"
    if v1_mounts():
        return "v1"
    if v2_mount() is not None:
        return "v2"
    raise ContainerError("no cgroup filesystem is mounted", "mount cgroup2 on /sys/fs/cgroup")


def _hierarchy_roots() -> list[Path]:
    seen: dict[str, Path] = {}
    for mount in cgroup_mounts():
        seen.setdefault(mount.device, mount.mount_point)
    return list(seen.values())


def all_pybuild_cgroups(prefix: str = "pybuild") -> list[Path]:
    """Every cgroup directory, in every hierarchy, under a top-level directory named ``prefix*``."""
    found: list[Path] = []
    for root in _hierarchy_roots():
        try:
            tops = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and e.name.startswith(prefix)]
        except OSError:
            continue
        for top in tops:
            found.extend(_walk_dirs(Path(top.path)))
    return sorted(found)


def children(parent: str, prefix: str = "") -> list[str]:
    """Names (``parent/<child>``) of the cgroups right below ``parent`` named ``prefix*``, in any hierarchy."""
    parent = _check_name(parent)
    names: set[str] = set()
    for root in _hierarchy_roots():
        with contextlib.suppress(OSError):
            names.update(f"{parent}/{e.name}" for e in os.scandir(root / parent)
                         if e.is_dir(follow_symlinks=False) and e.name.startswith(prefix))
    return sorted(names)


def remove_everywhere(name: str, timeout: float = 5.0) -> None:
    """Remove cgroup ``name`` from every hierarchy that has it, v1 and cgroup2 alike (an abandoned cgroup).

    Whatever still runs in it is killed first (thawed if frozen), as :meth:`Cgroup.remove` does;
    then the empty parents go. Idempotent.
    """
    name = _check_name(name)
    groups: list[Cgroup] = []
    if v1_mounts():
        groups.append(CgroupV1(name))
    if v2_mount() is not None:
        groups.append(CgroupV2(name))
    for group in groups:
        group.remove(timeout)
    deadline = time.monotonic() + timeout
    for root in _hierarchy_roots():  # hierarchies pybuild makes nothing in itself (name=systemd...)
        if (root / name).is_dir():
            _rmdir_tree(root / name, deadline)
            _rmdir_parents(root, name)


# ---------------------------------------------------------------- file helpers


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise _error(f"cannot read {path}: {e.strerror}", e) from e


def _error(message: str, e: OSError, hint: str | None = None) -> ContainerError:
    """ENOENT/ENODEV mean the cgroup directory went away under us: say so with a subclass."""
    cls = CgroupVanished if e.errno in (errno.ENOENT, errno.ENODEV) else ContainerError
    return cls(message, hint)


def _read_int(path: Path) -> int:
    return int(_read(path).split()[0])


def _read_max(path: Path) -> int | None:
    """A limit file: "max" (v2) or the v1 no-limit value become None."""
    text = _read(path).split()[0]
    if text == "max":
        return None
    value = int(text)
    return None if value >= V1_UNLIMITED_THRESHOLD else value


def _keyed(path: Path) -> dict[str, int]:
    """A flat keyed file ("key value" lines) such as cpu.stat or memory.events."""
    out = {}
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _write_raw(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write(path: Path, value: str, hint: str | None = None) -> None:
    """One write(2) of ``value``; the kernel's refusal becomes a ContainerError naming the file."""
    try:
        _write_raw(path, value)
    except OSError as e:
        raise _error(f"cannot write {value!r} to {path}: {e.strerror}", e, hint) from e


def _rss_of(pids: Iterable[int]) -> int:
    """Resident memory of processes, for hierarchies without a memory controller."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def _walk_dirs(top: Path) -> Iterator[Path]:
    """``top`` and every child cgroup below it, parents first; nothing if ``top`` is gone.

    Iterative (fsutil's descriptor walk): a container allowed to write its cgroups may nest them deep.
    """
    yielded = False
    try:
        for event, entry in walk(top, sort=False, dirs_only=True):
            if not yielded:
                yielded = True
                yield top
            if event == ENTER:
                yield top / os.fsdecode(entry.rel)
    except (FileNotFoundError, NotADirectoryError):  # removed meanwhile: what is left of it is not there
        return
    if not yielded:
        yield top


def _rmdir_tree(top: Path, deadline: float) -> None:
    """Remove a cgroup and its child cgroups, bottom-up, retrying EBUSY until ``deadline``."""
    for d in sorted(_walk_dirs(top), key=lambda p: len(p.parts), reverse=True):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise ContainerError(f"cannot remove cgroup {d}: {e.strerror}") from e
                time.sleep(_POLL)


def _rmdir_parents(root: Path, name: str) -> None:
    """rmdir the now-empty ancestors of ``name`` under ``root``; stop at one still in use."""
    parent = Path(name).parent
    while parent != Path("."):
        try:
            os.rmdir(root / parent)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return
            raise ContainerError(f"cannot remove cgroup {root / parent}: {e.strerror}") from e
        parent = parent.parent


def _make_path(root: Path, name: str, created: list[Path], before: Callable[[Path], None] | None = None,
               after: Callable[[Path], None] | None = None) -> None:
    """mkdir each level of ``name`` below ``root``, calling ``before(parent)`` and ``after(new)`` per level.

    A concurrent remove() may rmdir a shared empty parent between two mkdirs: start over then.
    """
    for attempt in range(5):
        path = root
        try:
            for part in Path(name).parts:
                if before is not None:
                    before(path)
                path = path / part
                try:
                    path.mkdir()
                    created.append(path)
                except FileExistsError:
                    pass
                if after is not None:
                    after(path)
            return
        except FileNotFoundError as e:
            if attempt == 4:
                raise ContainerError(f"cannot create cgroup {path}: {e.strerror}") from e
        except CgroupVanished:
            if attempt == 4:
                raise
        except OSError as e:
            raise ContainerError(f"cannot create cgroup {path}: {e.strerror}") from e


def _rollback(created: list[Path]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(path)


# ---------------------------------------------------------------- the interface


class Cgroup(ABC):
    """A cgroup named ``name`` (relative path) in one or several hierarchies."""

    name: str

    @abstractmethod
    def _dirs(self) -> list[Path]:
        """Every directory this cgroup has or will have (existing or not), one per hierarchy."""

    @abstractmethod
    def stats(self) -> Stats:
        """CPU time, memory and pids; without a memory (pids) controller, the RSS (count) of procs()."""

    @abstractmethod
    def oom_killed(self) -> bool:
        """True once the kernel's OOM killer killed a process of this cgroup."""

    @abstractmethod
    def can_freeze(self) -> bool:
        """Whether this cgroup exists and has a freezer (v1 freezer hierarchy, v2 cgroup.freeze)."""

    @abstractmethod
    def freeze(self) -> None:
        """Stop every process and return once all are frozen (ContainerError after a timeout)."""

    @abstractmethod
    def thaw(self) -> None:
        """Let frozen processes run again; a no-op without a freezer."""

    @abstractmethod
    def frozen(self) -> bool: ...

    @abstractmethod
    def _roots(self) -> list[Path]:
        """The hierarchy roots ``name`` is relative to."""

    def update(self, limits: Limits) -> None:
        """Apply the limits set in ``limits`` to this existing cgroup; the others stay as they are."""
        raise ContainerError(f"cgroup {self.name} cannot take limits")

    def paths(self) -> list[Path]:
        """Every existing directory of this cgroup: write a pid to cgroup.procs of each to join."""
        return [d for d in self._dirs() if d.is_dir()]

    def exists(self) -> bool:
        return bool(self.paths())

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup in every hierarchy."""
        dirs = self.paths()
        if not dirs:
            raise CgroupNotFound(f"cgroup {self.name} does not exist")
        for d in dirs:
            _write(d / "cgroup.procs", str(pid), f"cannot add process {pid} to cgroup {self.name}")

    def procs(self) -> list[int]:
        """Pids in this cgroup and its child cgroups, in any of its hierarchies."""
        pids: set[int] = set()
        for top in self.paths():
            for d in _walk_dirs(top):
                try:
                    pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ENODEV):  # a child cgroup removed meanwhile
                        continue
                    raise ContainerError(f"cannot read {d / 'cgroup.procs'}: {e.strerror}") from e
        return sorted(pids)

    def _signal_each(self, sig: int) -> None:
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process; freeze first so none forks away, then thaw so SIGKILL lands."""
        if not self.exists():
            return
        freeze = self.can_freeze()
        if freeze:
            try:
                self.freeze()
            except ContainerError:
                freeze = False
        try:
            self._signal_each(sig)
            if not freeze:  # a fork may have raced with the first pass
                self._signal_each(sig)
        finally:
            if freeze:
                self.thaw()

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left, wait for it to go, rmdir everywhere, then the empty parents. Idempotent."""
        deadline = time.monotonic() + timeout
        if self.exists():
            self._wait_empty(deadline)
            for d in self.paths():
                _rmdir_tree(d, deadline)
        for root in self._roots():
            _rmdir_parents(root, self.name)

    def _wait_empty(self, deadline: float) -> None:
        last_kill = 0.0
        while pids := self.procs():
            now = time.monotonic()
            if now > deadline:
                raise ContainerError(f"cgroup {self.name} still has processes {pids} after kill",
                                     "they may be stuck in uninterruptible sleep")
            if now - last_kill > 0.5:
                self.kill_all(signal.SIGKILL)
                last_kill = now
            time.sleep(_POLL)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ---------------------------------------------------------------- v1


class CgroupV1(Cgroup):
    """A cgroup in the separate v1 hierarchies (memory, cpu, cpuacct, pids, freezer, cpuset, devices).

    Its ``devices`` directory is made only when device rules are given: without
    them the cgroup is what it was before, the root's (allow-all) device list.
    """

    def __init__(self, name: str, mounts: dict[str, Path] | None = None) -> None:
        self.name = _check_name(name)
        self.mounts = dict(mounts) if mounts is not None else v1_mounts()

    def dir(self, controller: str) -> Path | None:
        """This cgroup's directory in ``controller``'s hierarchy, or None if it is not mounted."""
        mount = self.mounts.get(controller)
        return None if mount is None else mount / self.name

    def _dirs(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for controller in V1_CONTROLLERS:
            d = self.dir(controller)
            if d is not None:
                seen.setdefault(d)
        return list(seen)

    def _roots(self, devices: bool = True) -> list[Path]:
        """The hierarchies' mount points; without ``devices``, not the devices one (unless co-mounted)."""
        return list(dict.fromkeys(self.mounts[c] for c in V1_CONTROLLERS
                                  if c in self.mounts and (devices or c != "devices")))

    def _need(self, controller: str, what: str) -> Path:
        d = self.dir(controller)
        if d is None:
            raise ContainerError(f"cannot set the {what} limit: the {controller} controller is not mounted",
                                 "cgroup v1 hierarchies found: " + (", ".join(sorted(self.mounts)) or "none"))
        return d

    def _create(self, limits: Limits, devices: tuple[DeviceRule, ...] | None = None) -> None:
        if limits.memory is not None:
            self._need("memory", "memory")
        if limits.cpus is not None or limits.cpu_shares is not None or limits.cpu_period or limits.cpu_quota:
            self._need("cpu", "cpu")
        if limits.cpuset_cpus is not None or limits.cpuset_mems is not None:
            self._need("cpuset", "cpuset")
        if limits.pids is not None:
            self._need("pids", "pids")
        lines = None if devices is None else _v1_device_lines(devices)
        if lines is not None and self.dir("devices") is None:
            hint = "cgroup v1 hierarchies found: " + (", ".join(sorted(self.mounts)) or "none")
            if v2_mount() is not None:
                hint += f"; {VERSION_ENV}=v2 filters devices with eBPF in the cgroup2 hierarchy"
            raise ContainerError("cannot apply the device rules: the devices controller is not mounted", hint)
        if any(d.exists() for d in self._dirs()):
            raise ContainerError(f"cgroup {self.name} already exists", "remove it first (pybuild prune)")
        created: list[Path] = []
        try:
            for root in self._roots(devices=lines is not None):
                self._make(root, created)
            self._apply(limits)
            d = self.dir("devices")
            if lines is not None and d is not None:
                _write_device_lines(d, lines)
        except BaseException:
            _rollback(created)
            raise

    def _make(self, root: Path, created: list[Path]) -> None:
        is_cpuset = self.mounts.get("cpuset") == root
        _make_path(root, self.name, created, after=_inherit_cpuset if is_cpuset else None)

    def _apply(self, limits: Limits) -> None:
        mem = self.dir("memory")
        if limits.memory is not None and mem is not None:
            swap = limits.memory if limits.memory_swap is None else limits.memory_swap
            _set_memory_v1(mem, limits.memory, swap)
        if limits.memory_reservation is not None and mem is not None:
            _write(mem / "memory.soft_limit_in_bytes", str(limits.memory_reservation))
        cpu = self.dir("cpu")
        if limits.cpu_shares is not None and cpu is not None:
            _set_shares_v1(cpu, limits.cpu_shares)
        if limits.cpus is not None and cpu is not None:
            _set_cfs_v1(cpu, cpu_quota(limits.cpus))
        elif (limits.cpu_period is not None or limits.cpu_quota is not None) and cpu is not None:
            _set_cfs_v1(cpu, limits.cpu_quota if limits.cpu_quota is not None else _read_int(cpu / "cpu.cfs_quota_us"),
                        limits.cpu_period or CPU_PERIOD_US)
        cpuset = self.dir("cpuset")
        if cpuset is not None:
            if limits.cpuset_cpus is not None:
                _write(cpuset / "cpuset.cpus", limits.cpuset_cpus)
            if limits.cpuset_mems is not None:
                _write(cpuset / "cpuset.mems", limits.cpuset_mems)
        pids = self.dir("pids")
        if limits.pids is not None and pids is not None:
            _write(pids / "pids.max", "max" if limits.pids <= 0 else str(limits.pids))

    def update(self, limits: Limits) -> None:
        """Apply the limits set in ``limits`` to this existing cgroup; the others stay as they are."""
        if not self.exists():
            raise CgroupNotFound(f"cgroup {self.name} does not exist")
        self._apply(limits)

    def stats(self) -> Stats:
        if not self.exists():
            raise CgroupNotFound(f"cgroup {self.name} does not exist")
        cpuacct = self.dir("cpuacct")
        cpu_ns = _read_int(cpuacct / "cpuacct.usage") if cpuacct is not None else 0
        mem = self.dir("memory")
        if mem is not None:
            usage, limit = _read_int(mem / "memory.usage_in_bytes"), _read_max(mem / "memory.limit_in_bytes")
        else:
            usage, limit = _rss_of(self.procs()), None
        pids = self.dir("pids")
        if pids is not None:
            count, pids_limit = _read_int(pids / "pids.current"), _read_max(pids / "pids.max")
        else:
            count, pids_limit = len(self.procs()), None
        return Stats(cpu_ns, usage, limit, count, pids_limit)

    def oom_killed(self) -> bool:
        """True once the kernel OOM-killed a process here (oom_kill counter, else failcnt)."""
        mem = self.dir("memory")
        if mem is None or not mem.is_dir():
            return False
        control = _keyed(mem / "memory.oom_control")
        if "oom_kill" in control:
            return control["oom_kill"] > 0
        return _read_int(mem / "memory.failcnt") > 0  # kernels < 4.13: the limit was hit

    def _freezer(self) -> Path:
        d = self.dir("freezer")
        if d is None or not d.is_dir():
            raise ContainerError(f"cannot freeze cgroup {self.name}: no freezer cgroup",
                                 "the freezer controller is not mounted" if d is None else "it was removed")
        return d / "freezer.state"

    def can_freeze(self) -> bool:
        d = self.dir("freezer")
        return d is not None and d.is_dir()

    def freeze(self, timeout: float = 5.0) -> None:
        state = self._freezer()
        deadline = time.monotonic() + timeout
        tries = 0
        while _read(state).strip() != "FROZEN":
            if time.monotonic() > deadline:
                self.thaw()
                raise ContainerError(f"cannot freeze cgroup {self.name}: still {_read(state).strip()}",
                                     f"after {timeout}s; a task may be in uninterruptible sleep")
            if tries % 10 == 0:  # the kernel may need the request repeated to finish
                _write(state, "FROZEN")
            tries += 1
            time.sleep(_POLL)

    def thaw(self, timeout: float = 5.0) -> None:
        if not self.can_freeze():
            return
        state = self._freezer()
        deadline = time.monotonic() + timeout
        _write(state, "THAWED")
        while _read(state).strip() != "THAWED":
            if time.monotonic() > deadline:
                raise ContainerError(f"cannot thaw cgroup {self.name}: still {_read(state).strip()}",
                                     f"after {timeout}s; is a parent cgroup frozen?")
            time.sleep(_POLL)
            _write(state, "THAWED")

    def frozen(self) -> bool:
        return self.can_freeze() and _read(self._freezer()).strip() == "FROZEN"


def _v1_device_lines(rules: Iterable[DeviceRule]) -> list[tuple[str, str]]:
    """(file, line) writes for ``rules``: "a" to devices.deny, then each rule in order.

    The v1 controller keeps a default and a list of exceptions: "a" rules set
    the default and clear the list, other rules add an exception or, when
    they have the default's verdict, take access away from the exception with
    exactly their type and numbers. Rules it would read otherwise than
    "the last match wins" are refused, not approximated: an "a" rule that is
    not "a *:* rwm", and a rule that overlaps an earlier exception of another
    type:major:minor it cannot cancel (``allow c 1:3`` then ``deny c 1:*``).
    """
    lines = [("devices.deny", "a")]
    default_allow = False
    exceptions: list[DeviceRule] = []
    for rule in rules:
        text = rule.v1_text()
        if rule.type == "a":
            if text != "a *:* rwm":
                raise ContainerError(f"cgroup v1 cannot apply the device rule {text!r}",
                                     f"its devices controller reads any 'a' rule as 'a *:* rwm'; {VERSION_ENV}=v2 can")
            default_allow = rule.allow
            exceptions.clear()
        elif rule.allow == default_allow:
            for earlier in exceptions:
                if _overlap(earlier, rule) and (earlier.type, earlier.major, earlier.minor) != (
                        rule.type, rule.major, rule.minor):
                    raise ContainerError(
                        f"cgroup v1 cannot apply the device rule {text!r} after {earlier.v1_text()!r}",
                        "its devices controller only takes access away from an entry with the same numbers; "
                        f"{VERSION_ENV}=v2 can")
        else:
            exceptions.append(rule)
        lines.append(("devices.allow" if rule.allow else "devices.deny", text))
    return lines


def _overlap(a: DeviceRule, b: DeviceRule) -> bool:
    """Whether two rules (not "a") can match one request."""
    return (a.type == b.type and (a.major is None or b.major is None or a.major == b.major)
            and (a.minor is None or b.minor is None or a.minor == b.minor)
            and any(c in b.access for c in a.access))


def _write_device_lines(d: Path, lines: list[tuple[str, str]]) -> None:
    """Each line a write(2) of its own (the controller parses one rule per write), two files opened once."""
    fds: dict[str, int] = {}
    try:
        for name, line in lines:
            fd = fds.get(name)
            if fd is None:
                try:
                    fd = fds[name] = os.open(d / name, os.O_WRONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise _error(f"cannot open {d / name}: {e.strerror}", e) from e
            try:
                os.write(fd, line.encode())
            except OSError as e:
                raise _error(f"cannot write {line!r} to {d / name}: {e.strerror}", e,
                             "a parent cgroup may not allow that device") from e
    finally:
        for fd in fds.values():
            os.close(fd)


def _inherit_cpuset(path: Path) -> None:
    """A new v1 cpuset starts with empty cpus/mems and cannot take tasks: copy the parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(path / name).strip():
            _write(path / name, _read(path.parent / name).strip())


def _set_memory_v1(d: Path, memory: int, memsw: int) -> None:
    """Write memory and memory+swap limits in the order the kernel accepts (limit <= memsw always)."""
    swap_file = d / "memory.memsw.limit_in_bytes"
    if not swap_file.exists():  # no swap accounting: Docker ignores --memory-swap then
        _set_memory_limit_v1(d, memory)
        return
    if memsw == -1 or memory > _read_int(swap_file):
        _write(swap_file, str(memsw))
        _set_memory_limit_v1(d, memory)
    else:
        _set_memory_limit_v1(d, memory)
        _write(swap_file, str(memsw))


def _set_memory_limit_v1(d: Path, memory: int) -> None:
    try:
        _write_raw(d / "memory.limit_in_bytes", str(memory))
    except OSError as e:
        hint = None
        if e.errno == errno.EBUSY:
            hint = f"current usage is {_read_int(d / 'memory.usage_in_bytes')} bytes"
        raise ContainerError(f"cannot write {str(memory)!r} to {d / 'memory.limit_in_bytes'}: {e.strerror}",
                             hint) from e


def _set_shares_v1(d: Path, shares: int) -> None:
    _write(d / "cpu.shares", str(shares))
    actual = _read_int(d / "cpu.shares")
    if actual != shares:
        raise ContainerError(f"cannot set cpu.shares to {shares}: the kernel set {actual}",
                             f"allowed range is {MIN_CPU_SHARES} to {MAX_CPU_SHARES}")


def _set_cfs_v1(d: Path, quota: int, period: int = CPU_PERIOD_US) -> None:
    period_file, quota_file = d / "cpu.cfs_period_us", d / "cpu.cfs_quota_us"
    try:
        _write_raw(period_file, str(period))
    except OSError as e:
        if e.errno != errno.EINVAL:  # the old quota may not fit the new period: quota first
            raise ContainerError(f"cannot write '{period}' to {period_file}: {e.strerror}") from e
        _write(quota_file, str(quota))
        _write(period_file, str(period))
        return
    _write(quota_file, str(quota))


# ---------------------------------------------------------------- v2


class CgroupV2(Cgroup):
    """A cgroup in the unified hierarchy mounted at ``root`` (default: the host's cgroup2 mount)."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = _check_name(name)
        if root is None:
            root = v2_mount()
            if root is None:
                raise ContainerError("no cgroup2 filesystem is mounted", "mount cgroup2 on /sys/fs/cgroup")
        self.root = Path(root)
        self.path = self.root / self.name

    def _dirs(self) -> list[Path]:
        return [self.path]

    def _roots(self) -> list[Path]:
        return [self.root]

    def _create(self, limits: Limits, devices: tuple[DeviceRule, ...] | None = None) -> None:
        required = _required_v2(limits)
        if self.path.exists():
            raise ContainerError(f"cgroup {self.name} already exists", "remove it first (pybuild prune)")
        prog = None if devices is None else _load_device_filter(devices)  # before mkdir: nothing to undo
        created: list[Path] = []
        try:
            _make_path(self.root, self.name, created, before=lambda parent: _enable_controllers(parent, required))
            self._apply(limits)
            if prog is not None:
                _attach_device_filter(self.path, prog)
        except BaseException:
            _rollback(created)
            raise
        finally:
            if prog is not None:
                os.close(prog)  # the attachment keeps the program

    def _apply(self, limits: Limits) -> None:
        p = self.path
        if limits.memory is not None:
            _write(p / "memory.max", str(limits.memory))
            swap = limits.memory if limits.memory_swap is None else limits.memory_swap
            if (p / "memory.swap.max").exists():
                _write(p / "memory.swap.max", "max" if swap == -1 else str(swap - limits.memory))
        if limits.cpu_shares is not None:
            _write(p / "cpu.weight", str(cpu_shares_to_weight(limits.cpu_shares)))
        if limits.cpus is not None:
            _write(p / "cpu.max", f"{cpu_quota(limits.cpus)} {CPU_PERIOD_US}")
        elif limits.cpu_period is not None or limits.cpu_quota is not None:
            quota = "max" if limits.cpu_quota in (None, -1) else str(limits.cpu_quota)
            _write(p / "cpu.max", f"{quota} {limits.cpu_period or CPU_PERIOD_US}")
        if limits.memory_reservation is not None:
            _write(p / "memory.low", str(limits.memory_reservation))
        if limits.cpuset_cpus is not None:
            _write(p / "cpuset.cpus", limits.cpuset_cpus)
        if limits.cpuset_mems is not None:
            _write(p / "cpuset.mems", limits.cpuset_mems)
        if limits.pids is not None:
            _write(p / "pids.max", "max" if limits.pids <= 0 else str(limits.pids))

    def update(self, limits: Limits) -> None:
        """Apply the limits set in ``limits`` to this existing cgroup; the others stay as they are."""
        if not self.path.is_dir():
            raise CgroupNotFound(f"cgroup {self.name} does not exist")
        self._apply(limits)

    def stats(self) -> Stats:
        if not self.path.is_dir():
            raise CgroupNotFound(f"cgroup {self.name} does not exist")
        p = self.path
        cpu_ns = _keyed(p / "cpu.stat").get("usage_usec", 0) * 1000
        if (p / "memory.current").exists():
            usage, limit = _read_int(p / "memory.current"), _read_max(p / "memory.max")
        else:
            usage, limit = _rss_of(self.procs()), None
        if (p / "pids.current").exists():
            count, pids_limit = _read_int(p / "pids.current"), _read_max(p / "pids.max")
        else:
            count, pids_limit = len(self.procs()), None
        return Stats(cpu_ns, usage, limit, count, pids_limit)

    def oom_killed(self) -> bool:
        events = self.path / "memory.events"
        return events.exists() and _keyed(events).get("oom_kill", 0) > 0

    def can_freeze(self) -> bool:
        return (self.path / "cgroup.freeze").exists()

    def _events(self) -> dict[str, int]:
        return _keyed(self.path / "cgroup.events")

    def _set_frozen(self, value: int, timeout: float) -> None:
        if not self.can_freeze():
            raise ContainerError(f"cannot freeze cgroup {self.name}: no {self.path / 'cgroup.freeze'}",
                                 "the cgroup is gone or the kernel is older than 5.2")
        _write(self.path / "cgroup.freeze", str(value))
        deadline = time.monotonic() + timeout
        while self._events().get("frozen") != value:
            if time.monotonic() > deadline:
                raise ContainerError(f"cgroup {self.name} did not become {'frozen' if value else 'thawed'}",
                                     f"after {timeout}s")
            time.sleep(_POLL)

    def freeze(self, timeout: float = 5.0) -> None:
        try:
            self._set_frozen(1, timeout)
        except ContainerError:
            if self.can_freeze():
                _write(self.path / "cgroup.freeze", "0")
            raise

    def thaw(self, timeout: float = 5.0) -> None:
        if self.can_freeze():
            self._set_frozen(0, timeout)

    def frozen(self) -> bool:
        return self.path.is_dir() and self._events().get("frozen") == 1

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL through cgroup.kill (kernel >= 5.14, no fork race); other signals per process."""
        kill = self.path / "cgroup.kill"
        if sig == signal.SIGKILL and kill.exists():
            _write(kill, "1")
        else:
            super().kill_all(sig)


def _load_device_filter(rules: Iterable[DeviceRule]) -> int:
    """The device rules as a loaded eBPF program: its fd."""
    from pybuild.linux import bpf

    try:
        insns = bpf.device_filter([rule.as_tuple() for rule in rules])
    except ValueError as e:
        raise ContainerError(f"cannot build the device filter: {e}") from None
    try:
        return bpf.load_device_program(insns)
    except OSError as e:
        hint = "loading BPF programs needs CAP_SYS_ADMIN (or CAP_BPF)" if e.errno == errno.EPERM else None
        raise ContainerError(f"cannot load the cgroup device filter: {e.strerror}", hint) from e


def _attach_device_filter(path: Path, prog: int) -> None:
    from pybuild.linux import bpf

    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _error(f"cannot open cgroup {path}: {e.strerror}", e) from e
    try:
        bpf.attach_device_program(fd, prog)
    except OSError as e:
        raise ContainerError(f"cannot attach the device filter to cgroup {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def _required_v2(limits: Limits) -> set[str]:
    required = set()
    if limits.memory is not None or limits.memory_reservation is not None:
        required.add("memory")
    if limits.cpus is not None or limits.cpu_shares is not None or limits.cpu_period or limits.cpu_quota:
        required.add("cpu")
    if limits.cpuset_cpus is not None or limits.cpuset_mems is not None:
        required.add("cpuset")
    if limits.pids is not None:
        required.add("pids")
    return required


def _enable_controllers(parent: Path, required: set[str]) -> None:
    """Enable cpu/memory/pids for ``parent``'s children when available; the required ones or fail."""
    available = set(_read(parent / "cgroup.controllers").split())
    missing = sorted(required - available)
    if missing:
        controller = missing[0]
        raise ContainerError(
            f"cannot set a {controller} limit: the {controller} controller is not available "
            "in this cgroup v2 hierarchy",
            f"{parent}/cgroup.controllers offers: {' '.join(sorted(available)) or 'nothing'}"
            "; on a hybrid host it is bound to cgroup v1",
        )
    enabled = set(_read(parent / "cgroup.subtree_control").split())
    for controller in V2_CONTROLLERS:
        if controller not in available or controller in enabled:
            continue
        try:
            _write_raw(parent / "cgroup.subtree_control", f"+{controller}")
        except OSError as e:
            if controller in required:
                raise ContainerError(f"cannot enable the {controller} controller in "
                                     f"{parent / 'cgroup.subtree_control'}: {e.strerror}",
                                     "a cgroup with processes cannot delegate controllers") from e


# ---------------------------------------------------------------- entry points


def _make(name: str, ver: str | None, root: Path | None) -> CgroupV1 | CgroupV2:
    ver = ver or version()
    if ver == "v1":
        return CgroupV1(name)
    if ver == "v2":
        return CgroupV2(name, root)
    raise UsageError(f"invalid cgroup version {ver!r}", 'use "v1" or "v2"')


def prime_attach() -> None:
    """Start, in the background, the wait that the next move of a process into a cgroup would begin with.

    Every write to a ``cgroup.procs`` takes the kernel's cgroup_threadgroup_rwsem
    for writing, and the first such write after a quiet spell waits for an RCU
    grace period (6-25 ms here, measured per write; the writes right after it
    take ~0.05 ms, the grace period "passed" state outliving the lock by about
    one more grace period). A no-op write, this process's pid to the cgroup it
    is already in, made from a thread while the caller prepares the container,
    pays that wait off the critical path; the real attach a few milliseconds
    later finds it passed. The no-op write holds cgroup_mutex while it waits,
    so a cgroup mkdir meanwhile waits too: call this well before the cgroup
    is created (``Runtime.create`` does, for ``run``). Best effort: any
    failure is ignored, and nothing moves.
    """
    path = _own_procs_file()
    if path is None:
        return
    import _thread

    def write() -> None:
        with contextlib.suppress(OSError):
            _write_raw(path, str(os.getpid()))

    with contextlib.suppress(RuntimeError):
        _thread.start_new_thread(write, ())


def _own_procs_file() -> Path | None:
    """``cgroup.procs`` of the cgroup this process is in, in one hierarchy mounted at its root."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    for mount in cgroup_mounts():
        key = "" if mount.fstype == "cgroup2" else next((o for o in sorted(mount.options) if o in own), None)
        if key is None or key not in own or mount.root != "/":
            continue
        return mount.mount_point / own[key].lstrip("/") / "cgroup.procs"
    return None


def create(name: str, limits: Limits, version: str | None = None, *, root: Path | None = None,
           devices: tuple[DeviceRule, ...] | None = None) -> Cgroup:
    """Create cgroup ``name`` with ``limits`` (validated first); undo everything on failure.

    ``version`` defaults to the host's (or ``$PYBUILD_CGROUP_VERSION``); "v2" on a
    hybrid host uses its cgroup2 mount, or ``root``. ``devices``: the device
    allowlist, in order (None: no device rules, the parent's apply).
    """
    limits = validate(limits)
    if root is None and _rootless():
        return _rootless_cgroup(name, limits)
    group = _make(name, version, root)
    group._create(limits, devices)
    return group


def open_existing(name: str, version: str | None = None, *, root: Path | None = None) -> Cgroup:
    """The existing cgroup ``name``; on a hybrid host found in the chosen hierarchies or else the others."""
    if root is None and _rootless():
        return _delegated_existing(name) or NoCgroup(name)
    group = _make(name, version, root)
    if group.exists():
        return group
    if version is None:  # made before $PYBUILD_CGROUP_VERSION changed, or on a hybrid's other side
        other: CgroupV1 | CgroupV2 | None = None
        if isinstance(group, CgroupV1) and v2_mount() is not None:
            other = CgroupV2(name, root)
        elif isinstance(group, CgroupV2) and root is None and v1_mounts():
            other = CgroupV1(name)
        if other is not None and other.exists():
            return other
    raise CgroupNotFound(f"cgroup {name} does not exist")


# ---------------------------------------------------------------- rootless


def _rootless() -> bool:
    from pybuild.linux import userns

    return userns.rootless()


class NoCgroup(Cgroup):
    """A rootless container's stand-in for a cgroup: it has none.

    An ordinary user can make cgroups only in a subtree delegated to it, used
    for containers with limits; without limits a rootless container needs none (its PID namespace
    holds its processes: they die with its init), so it gets this. Freezing
    and statistics need a real cgroup and say so.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def _dirs(self) -> list[Path]:
        return []

    def _roots(self) -> list[Path]:
        return []

    def add(self, pid: int) -> None:
        return None

    def stats(self) -> Stats:
        raise ContainerError("statistics need a cgroup: this rootless container runs without one",
                             "a rootless container gets a cgroup only with limits, in a subtree delegated to you")

    def oom_killed(self) -> bool:
        return False

    def can_freeze(self) -> bool:
        return False

    def freeze(self) -> None:
        raise ContainerError("pause needs a cgroup freezer: this rootless container runs without a cgroup",
                             "a rootless container gets a cgroup only with limits, in a subtree delegated to you")

    def thaw(self) -> None:
        return None

    def frozen(self) -> bool:
        return False


def _rootless_cgroup(name: str, limits: Limits) -> Cgroup:
    """Rootless: no cgroup without limits; with limits, one in the subtree delegated to the user, or a
    clear refusal (never silently unlimited)."""
    if limits == Limits():
        return NoCgroup(name)
    required = _required_v2(limits)
    group = _delegated(name, required)
    if group is None:
        raise _delegation_error(sorted(required))
    group._create(limits, None)  # no device rules: a user namespace cannot make device nodes anyway
    return group


def _writable(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK) and os.access(d / "cgroup.procs", os.W_OK)


def _own_v1_cgroups() -> dict[str, Path]:
    """Per v1 controller, this process's cgroup in its hierarchy."""
    mounts = v1_mounts()
    own: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in mounts:
                own[controller] = mounts[controller] / path.lstrip("/")
    return own


def delegated_v1() -> dict[str, Path]:
    """The v1 hierarchies where this process's own cgroup is the user's to write (delegated to it, as
    LXC's pam_cgfs or a root-made, chowned cgroup does): controller -> that cgroup."""
    return {c: d for c, d in _own_v1_cgroups().items() if c in V1_CONTROLLERS and _writable(d)}


def delegated_v2() -> Path | None:
    """This process's own cgroup v2, when it is the user's to write (systemd's Delegate=yes)."""
    own = _own_v2_cgroup()
    return own if own is not None and _writable(own) else None


def _delegated(name: str, required: set[str]) -> CgroupV1 | CgroupV2 | None:
    """Cgroup ``name`` in the user's delegated subtree that has every ``required`` controller: v1 or v2
    (whichever binds them here), not yet made; None if there is none."""
    v1 = delegated_v1()
    if required and required <= set(v1):
        return CgroupV1(name, mounts={c: d for c, d in v1.items() if c != "devices"})
    own = delegated_v2()
    if own is None:
        return None
    try:
        available = set((own / "cgroup.controllers").read_text().split())
    except OSError:
        return None
    if not required <= available:
        return None
    _leave_inner_node(own, required)
    return CgroupV2(name, root=own)


def _leave_inner_node(own: Path, required: set[str]) -> None:
    """cgroup v2 lets only a cgroup without processes hand controllers to its children: move this process
    into a leaf of its delegated cgroup (``init``, as BuildKit's rootless mode does) when it must."""
    try:
        enabled = set(_read(own / "cgroup.subtree_control").split())
    except ContainerError:
        return
    if required <= enabled or not _read(own / "cgroup.procs").split():
        return
    leaf = own / "init"
    try:
        leaf.mkdir(exist_ok=True)
        _write_raw(leaf / "cgroup.procs", str(os.getpid()))
    except OSError as exc:
        raise CgroupDelegationError(f"cannot move pybuild into {leaf} to delegate controllers: {exc.strerror}",
                                    "run pybuild in a cgroup of its own (systemd-run --user --scope "
                                    "-p Delegate=yes pybuild ...)") from None


def _delegated_existing(name: str) -> Cgroup | None:
    v1 = delegated_v1()
    if v1:
        group: Cgroup = CgroupV1(name, mounts={c: d for c, d in v1.items() if c != "devices"})
        if group.exists():
            return group
    own = delegated_v2()
    if own is not None:
        for root in (own, own.parent):  # this process may have moved into own/init since
            group = CgroupV2(name, root=root)
            if group.exists():
                return group
    return None


def check_rootless_limits(limits: Limits) -> None:
    """Refuse limits a rootless process cannot enforce (never run silently unlimited); nothing as root.

    Limits need a subtree delegated to the user with the controllers they
    use: on cgroup v2 (systemd's Delegate=yes), or on the v1 hierarchies that
    bind them (the user's own cgroup in each, owned by it). Says what is missing.
    """
    if limits == Limits() or not _rootless():
        return
    required = _required_v2(limits)
    if not _delegated_probe(required):
        raise _delegation_error(sorted(required))


def _delegation_error(required: list[str]) -> CgroupDelegationError:
    """What is missing for ``required`` controllers, as the error to raise."""
    from pybuild.linux import userns

    uid = userns.host_uid()
    own = _own_v2_cgroup()
    where = "this host has no cgroup2 hierarchy"
    if own is not None:
        try:
            available = set((own / "cgroup.controllers").read_text().split())
        except OSError:
            available = set()
        missing = [c for c in required if c not in available]
        if missing:
            where = f"your cgroup {own} offers {', '.join(sorted(available)) or 'no controllers'}"
        elif not _writable(own):
            where = f"your cgroup {own} is not writable by you"
    v1 = _own_v1_cgroups()
    not_yours = [str(v1[c]) for c in required if c in v1 and not _writable(v1[c])]
    if not_yours:
        where += f"; on cgroup v1 your cgroup{'s' if len(not_yours) > 1 else ''} {', '.join(not_yours)} " \
                 f"{'are' if len(not_yours) > 1 else 'is'} not yours to write"
    return CgroupDelegationError(
        f"resource limits need a cgroup subtree delegated to uid {uid} with the "
        f"{', '.join(required)} controller{'s' if len(required) > 1 else ''}; {where}",
        "on cgroup v2: systemd-run --user --scope -p Delegate=yes pybuild ...; on cgroup v1: a cgroup of "
        "yours in each hierarchy, made and chowned by root; or run without limits, or as root")


def _delegated_probe(required: set[str]) -> bool:
    if required <= set(delegated_v1()):
        return True
    own = delegated_v2()
    if own is None:
        return False
    try:
        return required <= set((own / "cgroup.controllers").read_text().split())
    except OSError:
        return False


def _own_v2_cgroup() -> Path | None:
    mount = v2_mount()
    if mount is None:
        return None
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    except OSError:
        return None
    return mount
