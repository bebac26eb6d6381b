"""Devices a container may use: the cgroup allowlist and the nodes made in its /dev.

Two halves, as in Docker and runc:

- :class:`DeviceRule`: one entry of the device cgroup's allowlist
  (``c 1:3 rwm``). :data:`DEFAULT_RULES` is what ``docker run`` gives:
  moby's default spec (deny everything; allow null, zero, full... ; deny
  fuse) followed by the rules runc always appends (``AllowedDevices`` in
  runc's ``libcontainer/specconv``: mknod of any char or block device,
  the standard nodes, ptys, /dev/ptmx and /dev/net/tun).
  :data:`ALLOW_ALL` is ``--privileged``'s. ``runtime/cgroups.py`` applies
  the rules: on cgroup v1 through the ``devices`` controller, on cgroup v2
  as an eBPF program (``pybuild/linux/bpf.py``).
- :class:`Device`: a node to mknod in the container: ``--device`` entries
  (:func:`parse_device`) and, for ``--privileged``, every host device
  (:func:`host_devices`, what containerd's ``HostDevices`` finds).

The rules' meaning (:func:`permits`, and the eBPF program, which agrees with
it): the last matching rule decides, nothing matching denies. A rule
matches a request when its type is the request's or ``a``, its major and
minor are the request's or wildcards, and, for an allow rule, the request's
access is a subset of the rule's; a deny rule matches when the request asks
for any of its access. That last part differs from a plain subset test on
purpose: ``deny c 1:3 w`` after ``allow c 1:3 rwm`` must refuse an
``O_RDWR`` open (one check of ``rw``), as the v1 controller does when it
removes ``w`` from the entry and as runc's filter does.

Errors are :class:`DeviceError`, exit status 125 as ``docker run`` reports
a bad ``--device``, worded as Docker words them.
"""

from __future__ import annotations

import os
import stat

from pybuild.errors import ContainerError
from pybuild.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_ACCESS = "rwm"
_MAX_NUMBER = (1 << 32) - 1


class DeviceError(ContainerError):
    """A bad ``--device`` or device rule."""

    exit_code = 125


def _normal_access(access: str, what: str) -> str:
    """``access`` in r, w, m order; DeviceError unless it is a non-empty subset of rwm."""
    if not isinstance(access, str) or not access or any(c not in _ACCESS for c in access):
        raise DeviceError(f"invalid device access {access!r} for {what}", "use a non-empty subset of rwm")
    return "".join(c for c in _ACCESS if c in access)


def _check_number(value: int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_NUMBER:
        raise DeviceError(f"invalid device {what} {value!r}", "use a number from 0 to 4294967295, or None for any")


@record(frozen=True)
class DeviceRule:
    """An entry of the device cgroup's list: ``allow``/deny ``type major:minor access``."""

    allow: bool
    type: str                 # "a" (all), "c", "b"
    major: int | None = None  # None: any (*)
    minor: int | None = None
    access: str = "rwm"       # a non-empty subset of "rwm", kept in that order

    def __post_init__(self) -> None:
        if self.type not in ("a", "c", "b"):
            raise DeviceError(f"invalid device rule type {self.type!r}", 'use "a", "c" or "b"')
        _check_number(self.major, "major")
        _check_number(self.minor, "minor")
        object.__setattr__(self, "access", _normal_access(self.access, "a device rule"))

    def v1_text(self) -> str:
        """The line cgroup v1's devices.allow / devices.deny take: ``c 1:3 rwm``, ``a *:* rwm``."""
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def as_tuple(self) -> tuple[bool, str, int | None, int | None, str]:
        """The plain form ``pybuild.linux.bpf.device_filter`` takes."""
        return (self.allow, self.type, self.major, self.minor, self.access)


def _allow(type: str, major: int | None, minor: int | None, access: str = "rwm") -> DeviceRule:
    return DeviceRule(True, type, major, minor, access)


# moby's daemon/pkg/oci/defaults.go (DefaultLinuxSpec's Resources.Devices), then runc's
# AllowedDevices (libcontainer/specconv/spec_linux.go), which runc appends to every container's.
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    DeviceRule(False, "a"),
    _allow("c", 1, 5),    # /dev/zero
    _allow("c", 1, 3),    # /dev/null
    _allow("c", 1, 9),    # /dev/urandom
    _allow("c", 1, 8),    # /dev/random
    _allow("c", 5, 0),    # /dev/tty
    _allow("c", 5, 1),    # /dev/console
    DeviceRule(False, "c", 10, 229),  # /dev/fuse
    # runc's AllowedDevices
    _allow("c", None, None, "m"),
    _allow("b", None, None, "m"),
    _allow("c", 1, 3),    # /dev/null
    _allow("c", 1, 8),    # /dev/random
    _allow("c", 1, 7),    # /dev/full
    _allow("c", 5, 0),    # /dev/tty
    _allow("c", 1, 5),    # /dev/zero
    _allow("c", 1, 9),    # /dev/urandom
    _allow("c", 136, None),  # /dev/pts/*
    _allow("c", 5, 2),    # /dev/ptmx
    _allow("c", 10, 200),  # /dev/net/tun
)

ALLOW_ALL: tuple[DeviceRule, ...] = (DeviceRule(True, "a"),)


@record(frozen=True)
class Device:
    """A device node to create in the container."""

    path: str             # absolute path in the container
    type: str             # "c" or "b"
    major: int
    minor: int
    mode: int = 0o666     # permission bits
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        if self.type not in ("c", "b"):
            raise DeviceError(f"invalid device type {self.type!r} for {self.path}", 'use "c" or "b"')
        if not self.path.startswith("/") or "\0" in self.path:
            raise DeviceError(f"invalid device path {self.path!r}", "the path must be absolute")
        _check_number(self.major, "major")
        _check_number(self.minor, "minor")

    def rule(self, access: str = "rwm") -> DeviceRule:
        """The allow rule that lets the container use this node."""
        return DeviceRule(True, self.type, self.major, self.minor, access)


# ---- evaluation ------------------------------------------------------------------------

def _matches(rule: DeviceRule, type: str, major: int, minor: int, access: str) -> bool:
    if rule.type != "a" and rule.type != type:
        return False
    if rule.major is not None and rule.major != major:
        return False
    if rule.minor is not None and rule.minor != minor:
        return False
    if rule.allow:
        return all(c in rule.access for c in access)
    return any(c in rule.access for c in access)


def permits(rules: Iterable[DeviceRule], type: str, major: int, minor: int, access: str) -> bool:
    """Whether ``rules`` let a process have ``access`` to device ``type major:minor``.

    The last matching rule decides (see the module docstring for "matching");
    no match denies. ``type`` is "c" or "b".
    """
    if type not in ("c", "b"):
        raise DeviceError(f"invalid device type {type!r}", 'use "c" or "b"')
    access = _normal_access(access, "a device request")
    for rule in reversed(tuple(rules)):
        if _matches(rule, type, major, minor, access):
            return rule.allow
    return False


# ---- nodes from the host -----------------------------------------------------------------

def _go_quote(text: str) -> str:
    """Go's %q for the plain strings paths are."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _errno_text(e: OSError) -> str:
    """An errno as Go's syscall.Errno says it: strerror with a lower-case first letter."""
    text = os.strerror(e.errno) if e.errno else str(e)
    return text[:1].lower() + text[1:]


def _node(path: str, st: os.stat_result, container_path: str) -> Device | None:
    """The Device for a char or block node, else None (fifos, files, directories, symlinks)."""
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return Device(container_path, kind, os.major(st.st_rdev), os.minor(st.st_rdev),
                  stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def _walk(top: str, container_top: str, skip_dirs: frozenset[str] = frozenset(),
          skip_files: frozenset[str] = frozenset(), strict: bool = False) -> list[Device]:
    """Every char/block node below ``top``, mapped under ``container_top``, in Go's WalkDir order.

    Depth first, each directory's entries by name, a subdirectory walked at
    its place among them. Iterative (a stack of entries still to visit);
    symlinks are never followed, neither to directories nor to nodes.
    Entries that vanish meanwhile are skipped; other errors are skipped too
    unless ``strict`` (then a DeviceError).
    """
    found: list[Device] = []
    pending: list[tuple[os.DirEntry[str], str]] = []

    def push_children(directory: str, target: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if strict and not isinstance(e, (FileNotFoundError, NotADirectoryError)):
                raise DeviceError(f"error gathering host devices: cannot read {directory}: {_errno_text(e)}") from None
            return
        base = target.rstrip("/")
        pending.extend((entry, f"{base}/{entry.name}") for entry in reversed(entries))

    push_children(top, container_top)
    while pending:
        entry, inside = pending.pop()
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in skip_dirs:
                    push_children(entry.path, inside)
                continue
            if entry.name in skip_files:
                continue
            device = _node(entry.path, entry.stat(follow_symlinks=False), inside)
        except FileNotFoundError:
            continue
        except OSError as e:
            if strict:
                raise DeviceError(f"error gathering host devices: {entry.path}: {_errno_text(e)}") from None
            continue
        if device is not None:
            found.append(device)
    return found


def _valid_mode(mode: str) -> bool:
    """Docker's validDeviceMode: a non-empty combination of r, w, m, each at most once."""
    return bool(mode) and all(c in _ACCESS for c in mode) and len(set(mode)) == len(mode)


def _clean(path: str) -> str:
    """Go's path.Clean for an absolute path."""
    cleaned = os.path.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def split_device(text: str) -> tuple[str, str, str]:
    """``HOST[:CONTAINER][:PERMS]`` -> (host, container, perms), checked as Docker's CLI does."""
    fields = text.split(":")
    if len(fields) > 3 or not fields[0]:
        raise DeviceError(f'invalid argument "{text}" for "--device" flag: bad format for path: {text}')
    host, container, perms = fields[0], "", "rwm"
    if len(fields) == 2:
        if _valid_mode(fields[1]):
            perms = fields[1]
        else:
            container = fields[1]
    elif len(fields) == 3:
        container, perms = fields[1], fields[2]
        if not _valid_mode(perms):
            raise DeviceError(f'invalid argument "{text}" for "--device" flag: bad mode specified: {perms}')
    for path in (host, container or host):
        if not path.startswith("/"):
            raise DeviceError(f'invalid argument "{text}" for "--device" flag: {path} is not an absolute path')
    return host, _clean(container or host), _normal_access(perms, "--device")


def _resolve(host: str) -> str:
    """A symlink's target; a dangling or looping link stays itself (no device then), as in Docker."""
    if not os.path.islink(host):
        return host
    try:
        return os.path.realpath(host, strict=True)
    except OSError:
        return host


def parse_device(text: str) -> list[tuple[Device, DeviceRule]]:
    """``--device HOST[:CONTAINER][:PERMS]``: the nodes to make and the rules that allow them.

    As Docker: a second field that is a valid mode (``/dev/sda:rw``) is the
    permissions; the host path is resolved through symlinks; a directory
    gives every char and block node below it (symlinks inside are not
    followed), each under CONTAINER at the same relative path. The nodes
    keep the host's permission bits and owner.
    """
    host, container, perms = split_device(text)
    resolved = _resolve(host)
    failure: OSError | None = None
    try:
        st = os.lstat(resolved)
    except OSError as e:
        failure = e
    else:
        device = _node(resolved, st, container)
        if device is not None:
            return [(device, device.rule(perms))]
        if stat.S_ISDIR(st.st_mode):
            nodes = _walk(resolved, container)
            if nodes:
                return [(d, d.rule(perms)) for d in nodes]
    reason = "not a device node" if failure is None else _errno_text(failure)
    raise DeviceError(f"error gathering device information while adding custom device {_go_quote(host)}: {reason}")


# containerd's pkg/oci getDevices: directories and files it leaves out of HostDevices, at any depth.
HOST_SKIPPED_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
HOST_SKIPPED_FILES = frozenset({"console"})


def host_devices() -> list[Device]:
    """Every char and block node under the host's /dev, for ``--privileged`` (containerd's HostDevices).

    Skips the directories ``pts``, ``shm``, ``fd``, ``mqueue``, ``.lxc``,
    ``.lxd-mounts``, ``.udev`` and files named ``console`` (the container
    gets its own), fifos, and everything behind a symlink; each node keeps
    its host path, permission bits and owner.
    """
    return _walk("/dev", "/dev", HOST_SKIPPED_DIRS, HOST_SKIPPED_FILES, strict=True)
