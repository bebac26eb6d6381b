"""What a container is made of, as plain frozen values.

A :class:`ContainerSpec` is the runtime's whole input: the prepared root
filesystem, the process to run in it and the isolation around it. Defaults
are Docker's (``docker run`` with no security options): its 14 capabilities,
its seccomp profile, its device allowlist, its masked and read-only paths;
setuid programs may gain privileges (no-new-privileges is off, as in Docker).
"""

from __future__ import annotations

from pathlib import Path

from pybuild.errors import UsageError
from pybuild.linux import syscalls
from pybuild.records import record

from .devices import DEFAULT_RULES, Device, DeviceRule
from .seccomp import Profile

# moby's oci/caps/defaults.go: what a container keeps of root's capabilities.
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# moby's oci/defaults.go: files get /dev/null bound over them, directories an
# empty read-only tmpfs; paths missing on this kernel are skipped.
DEFAULT_MASKED: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

DEFAULT_READONLY: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# The built-in profile (runtime/seccomp_default.json, read when first compiled);
# ContainerSpec.seccomp = None runs the container unconfined.
DEFAULT_SECCOMP = Profile(name="default", document="")

DEFAULT_SHM_SIZE = 64 << 20  # Docker's default /dev/shm

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK_MODES = ("none", "host")


def _check_container_path(path: str, what: str) -> None:
    if not path.startswith("/"):
        raise UsageError(f"invalid {what} {path!r}: the path must be absolute")
    if "\0" in path:
        raise UsageError(f"invalid {what} {path!r}")


@record(frozen=True)
class Mount:
    """A mount in the container: ``source`` is a host path for binds, a label otherwise.

    ``options`` are mount(8) words: ``ro``, ``nosuid``, ``rbind``, ``rprivate``,
    ``size=64m``... Words that are not flags become the filesystem's data string.
    """

    source: str
    target: str
    type: str
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_container_path(self.target, "mount target")
        if self.is_bind and not self.source.startswith("/"):
            raise UsageError(f"invalid bind source {self.source!r}: the path must be absolute")

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    @classmethod
    def bind(cls, source: str | Path, target: str, readonly: bool = False,
             options: tuple[str, ...] = ()) -> Mount:
        """A recursive bind (what ``-v /host:/ctr`` gives), private, optionally read-only."""
        opts = ("rbind", "ro" if readonly else "rw", *options)
        if not any(o in _PROPAGATION_WORDS for o in opts):
            opts += ("rprivate",)
        return cls(str(source), target, "bind", opts)

    @classmethod
    def tmpfs(cls, target: str, options: tuple[str, ...] = ("nosuid", "nodev", "noexec")) -> Mount:
        return cls("tmpfs", target, "tmpfs", options)


_PROPAGATION_WORDS = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared",
                                "unbindable", "runbindable"})


def parse_volume(text: str) -> Mount:
    """``-v /host:/ctr[:ro|rw[,...]]`` as a bind :class:`Mount` (named volumes are the caller's)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"invalid volume specification {text!r}", "use /host/path:/container/path[:ro]")
    source, target = parts[0], parts[1]
    words = tuple(w for w in (parts[2].split(",") if len(parts) == 3 else ()) if w)
    for w in words:
        if w not in ("ro", "rw", "z", "Z", "nocopy") and w not in _PROPAGATION_WORDS:
            raise UsageError(f"invalid mode {w!r} in volume specification {text!r}")
    if not source.startswith("/"):
        raise UsageError(f"invalid volume specification {text!r}",
                         "the host path must be absolute (named volumes are not handled here)")
    readonly = "ro" in words
    extra = tuple(w for w in words if w in _PROPAGATION_WORDS)
    return Mount.bind(source, target, readonly=readonly, options=extra)


@record(frozen=True)
class User:
    """Numeric credentials the container process runs with."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@record(frozen=True)
class Rlimit:
    """A resource limit set with setrlimit(2) before the program runs (``--ulimit``)."""

    resource: int  # RLIMIT_* number
    soft: int
    hard: int


@record(frozen=True)
class ProcessSpec:
    """The program to run: ``args[0]`` is looked up in the container's ``$PATH``.

    ``user`` is as given on the command line or in USER: ``""`` (root),
    ``name``, ``uid``, ``name:group``, ``uid:gid``; it is resolved against the
    container's own /etc/passwd and /etc/group. ``stdin=False`` gives the
    process /dev/null as stdin unless the caller passes one (``docker run``
    without ``-i``).
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    cwd: str = "/"
    user: str = ""
    tty: bool = False
    stdin: bool = False
    groups: tuple[str, ...] = ()  # --group-add: names (from the container's /etc/group) or gids
    rlimits: tuple[Rlimit, ...] = ()

    def __post_init__(self) -> None:
        if not self.args:
            raise UsageError("no command specified")
        if any("\0" in a for a in self.args) or any("\0" in e for e in self.env):
            raise UsageError("arguments and environment cannot contain NUL bytes")
        for e in self.env:
            if "=" not in e or e.startswith("="):
                raise UsageError(f"invalid environment entry {e!r}", "use NAME=value")
        _check_container_path(self.cwd, "working directory")

    def getenv(self, name: str) -> str | None:
        value = None
        for e in self.env:
            key, _, val = e.partition("=")
            if key == name:
                value = val  # the last one wins, as execve's consumers see it
        return value


@record(frozen=True)
class OverlayRootfs:
    """An overlay the container mounts at ``rootfs`` inside its own mount namespace.

    Paths are relative to ``overlay_root`` (the store's ``overlay2/``), lowers
    nearest first. Mounted there, the rootfs is invisible to the host and
    vanishes with the container, however the container ends.
    """

    overlay_root: Path
    lowers: tuple[str, ...]
    upper: str
    work: str


@record(frozen=True)
class ContainerSpec:
    rootfs: Path
    process: ProcessSpec
    hostname: str
    network: str = "none"
    mounts: tuple[Mount, ...] = ()
    capabilities: tuple[str, ...] = DEFAULT_CAPS
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] = DEFAULT_MASKED
    readonly_paths: tuple[str, ...] = DEFAULT_READONLY
    init: Path | None = None
    overlay: OverlayRootfs | None = None
    # The overlay already made, as a detached mount (fuse-overlayfs, made outside the container: see
    # pybuild.linux.fuseoverlay): the container attaches this fd at ``rootfs`` instead of mounting ``overlay``.
    rootfs_mount_fd: int | None = None
    # A network namespace to join (a bind-mounted nsfs file or /proc/PID/ns/net)
    # instead of a new empty one; ``network`` must then be "none".
    netns: str | None = None
    seccomp: Profile | None = DEFAULT_SECCOMP  # None: unconfined
    device_rules: tuple[DeviceRule, ...] = DEFAULT_RULES  # the cgroup's allowlist, in order
    devices: tuple[Device, ...] = ()  # nodes made in the container besides the default ones
    readonly_rootfs: bool = False
    sysctls: tuple[tuple[str, str], ...] = ()  # written under /proc/sys before it is made read-only
    shm_size: int = DEFAULT_SHM_SIZE
    writable_sysfs: bool = False  # --privileged: /sys read-write

    def __post_init__(self) -> None:
        if self.network not in NETWORK_MODES:
            raise UsageError(f"unsupported network mode {self.network!r}",
                             f"use one of: {', '.join(NETWORK_MODES)}")
        if self.netns is not None:
            if self.network != "none":
                raise UsageError(f"a network namespace to join ({self.netns}) needs network mode none")
            _check_container_path(self.netns, "network namespace path")
        if not self.hostname or len(self.hostname.encode()) > 64 or "\0" in self.hostname:
            raise UsageError(f"invalid hostname {self.hostname!r}")
        for cap in self.capabilities:
            try:
                syscalls.cap_number(cap)
            except KeyError:
                raise UsageError(f"unknown capability {cap!r}") from None
        for path in (*self.masked_paths, *self.readonly_paths):
            _check_container_path(path, "masked or read-only path")
        for device in self.devices:
            _check_container_path(device.path, "device path")
        for key, value in self.sysctls:
            if not all(part and part not in (".", "..") for part in key.split(".")) \
                    or "/" in key or "\0" in key or "\0" in value:
                raise UsageError(f"invalid sysctl {key!r}")
        if self.shm_size <= 0:
            raise UsageError(f"invalid shm size {self.shm_size}: it must be positive")
        if self.init is not None and not Path(self.init).is_absolute():
            raise UsageError(f"invalid init {self.init}: the path must be absolute")

    @property
    def capability_mask(self) -> int:
        return syscalls.caps_mask(self.capabilities)
