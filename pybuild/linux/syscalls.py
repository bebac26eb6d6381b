"""Linux syscalls pybuild needs and Python's ``os`` does not offer (3.11).

Thin ctypes wrappers: each raises :class:`OSError` with the errno the kernel
returned, so callers can tell EPERM from EINVAL. Nothing here knows about
containers; the policy (which namespaces, which capabilities) lives in
``process`` and ``rootfs``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Iterable

from . import unixsock
from .libc import check as _check
from .libc import libc as _libc

_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

# ---- namespaces -------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The entries of /proc/<pid>/ns/ and the flag each one stands for, in the
# order a process joins them (mnt last: after it, paths are the container's).
NAMESPACES: tuple[tuple[str, int], ...] = (
    ("ipc", CLONE_NEWIPC),
    ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET),
    ("pid", CLONE_NEWPID),
    ("cgroup", CLONE_NEWCGROUP),
    ("mnt", CLONE_NEWNS),
)



def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def namespace_supported(name: str) -> bool:
    """Whether this kernel has the namespace type (``cgroup``, ``time``...)."""
    return os.path.exists(f"/proc/self/ns/{name}")


# ---- pivot_root (glibc has no wrapper) ------------------------------------

_SYS_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 217,
    "arm64": 217,
    "riscv64": 41,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
}


def pivot_root(new_root: str, put_old: str) -> None:
    machine = os.uname().machine
    nr = _SYS_PIVOT_ROOT.get(machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {machine}")
    result = _libc.syscall(ctypes.c_long(nr), ctypes.c_char_p(os.fsencode(new_root)),
                           ctypes.c_char_p(os.fsencode(put_old)))
    _check(result, "pivot_root")


# ---- seccomp(2) (glibc has no wrapper) -------------------------------------

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4

_SYS_SECCOMP = {
    "x86_64": 317,
    "aarch64": 277,
    "arm64": 277,
    "riscv64": 277,
    "loongarch64": 277,
    "ppc64le": 358,
    "ppc64": 358,
    "s390x": 348,
    "i386": 354,
    "i686": 354,
    "armv7l": 383,
    "armv8l": 383,
}


class _SockFprog(ctypes.Structure):
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: bytes, flags: int = 0) -> None:
    """Load a classic-BPF seccomp program (an array of 8-byte ``struct sock_filter``) on this thread.

    The kernel wants no_new_privs set or CAP_SYS_ADMIN (EACCES otherwise).
    Everything used here is imported with the module: a child whose imports
    are locked down can call it.
    """
    count, rest = divmod(len(program), 8)
    if rest or not count or count > 0xFFFF:
        raise OSError(errno.EINVAL, f"seccomp: a program of {len(program)} bytes is no sock_filter array")
    nr = _SYS_SECCOMP.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"seccomp: unknown syscall number on {os.uname().machine}")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.cast(buffer, ctypes.c_void_p))
    result = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(flags),
                           ctypes.byref(fprog))
    _check(result, "seccomp")


# ---- prctl ------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_dumpable(dumpable: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_keepcaps(keep: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if keep else 0)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper(on: bool = True) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def clear_ambient() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def bounding_has(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap) == 1


def drop_bounding(keep: Iterable[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP)."""
    kept = set(keep)
    for cap in range(cap_last_cap() + 1):
        if cap not in kept and bounding_has(cap):
            prctl(PR_CAPBSET_DROP, cap)


# ---- capabilities -------------------------------------------------------------

CAP_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(CAP_NAMES)}


def cap_number(name: str) -> int:
    """``"CAP_CHOWN"``, ``"chown"`` or ``"Chown"`` -> 0; KeyError for unknown names."""
    upper = name.strip().upper()
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    return CAP_NUMBERS[upper]


def cap_name(number: int) -> str:
    return CAP_NAMES[number] if 0 <= number < len(CAP_NAMES) else f"CAP_{number}"


def caps_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << cap_number(name)
    return mask


_cap_last_cap: int | None = None


def cap_last_cap() -> int:
    """The highest capability number the running kernel knows (read once, on the host)."""
    global _cap_last_cap
    if _cap_last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _cap_last_cap = int(f.read().strip())
        except (OSError, ValueError):
            _cap_last_cap = len(CAP_NAMES) - 1
    return _cap_last_cap


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of ``pid`` (0: this thread) as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    def join(field: str) -> int:
        return int(getattr(data[0], field)) | (int(getattr(data[1], field)) << 32)
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets from 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# ---- network interfaces -------------------------------------------------------

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16
_IFREQ_SIZE = 40  # struct ifreq: the name, then a 24-byte union (flags is a short at its start)


def _ifreq(name: str, flags: int = 0) -> bytes:
    raw = name.encode()
    if len(raw) >= IFNAMSIZ:
        raise OSError(errno.EINVAL, f"interface name too long: {name!r}")
    return struct.pack(f"{IFNAMSIZ}sh", raw, flags).ljust(_IFREQ_SIZE, b"\0")


def link_flags(name: str) -> int:
    s = unixsock.datagram()
    try:
        out = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(name))
    finally:
        s.close()
    return int(struct.unpack_from("h", out, IFNAMSIZ)[0]) & 0xFFFF


def link_up(name: str = "lo") -> None:
    """Set IFF_UP on an interface of the current network namespace (``ip link set lo up``)."""
    s = unixsock.datagram()
    try:
        out = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(name))
        flags = int(struct.unpack_from("h", out, IFNAMSIZ)[0]) & 0xFFFF
        if not flags & IFF_UP:
            # struct.pack wants a signed short; flags above 0x7fff wrap like the C field.
            new = (flags | IFF_UP) & 0xFFFF
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _ifreq(name, new - 0x10000 if new > 0x7FFF else new))
    finally:
        s.close()


# ---- terminals --------------------------------------------------------------

TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


def unlockpt(master: int) -> None:
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))


def ptsname_number(master: int) -> int:
    out = fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0))
    return int(struct.unpack("I", out)[0])


def set_controlling_tty(fd: int) -> None:
    fcntl.ioctl(fd, TIOCSCTTY, 0)


# ---- resource limits ----------------------------------------------------------------

RLIM_INFINITY = (1 << 64) - 1


class _Rlimit64(ctypes.Structure):
    _fields_ = [("rlim_cur", ctypes.c_uint64), ("rlim_max", ctypes.c_uint64)]


_libc.prlimit64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """setrlimit(2) of this process (prlimit64; the resource module would be one more import to run)."""
    limit = _Rlimit64(soft, hard)
    _check(_libc.prlimit64(0, resource, ctypes.byref(limit), None), "setrlimit")
