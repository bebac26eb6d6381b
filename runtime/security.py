"""A container's security options in Docker's terms: capabilities, ``--security-opt``,
``--sysctl`` and ``--ulimit``, checked and turned into what the runtime applies.

Errors are :class:`SecurityOptionError` (exit 125, as ``docker run`` reports a
bad option): one line that names the option.
"""

from __future__ import annotations

from collections.abc import Iterable

from pybuild import records
from pybuild.errors import ContainerError
from pybuild.linux import syscalls
from pybuild.records import record

from . import devices as _devices
from .seccomp import Profile
from .spec import DEFAULT_CAPS, DEFAULT_MASKED, DEFAULT_READONLY, DEFAULT_SECCOMP, DEFAULT_SHM_SIZE, Rlimit


class SecurityOptionError(ContainerError):
    exit_code = 125


# ---- capabilities -----------------------------------------------------------------

def all_capabilities() -> tuple[str, ...]:
    """Every capability the running kernel knows (what --privileged and --cap-add ALL give)."""
    return tuple(syscalls.cap_name(n) for n in range(min(syscalls.cap_last_cap(), len(syscalls.CAP_NAMES) - 1) + 1))


def normalize_capability(name: str) -> str:
    """``net_admin``, ``NET_ADMIN`` or ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``ALL`` stays ``ALL``."""
    text = name.strip().upper()
    if text == "ALL":
        return text
    if not text.startswith("CAP_"):
        text = "CAP_" + text
    if text not in syscalls.CAP_NUMBERS:
        raise SecurityOptionError(f'unknown capability: "{name}"')
    return text


def tweak_capabilities(base: Iterable[str], add: Iterable[str], drop: Iterable[str]) -> tuple[str, ...]:
    """The capability set of ``--cap-add``/``--cap-drop`` applied to ``base``, as Docker does it.

    ``--cap-add ALL`` gives every capability but the dropped ones; ``--cap-drop
    ALL`` keeps only the added ones; otherwise the dropped ones go and the
    added ones come (an added capability wins over the same one dropped).
    """
    adds = [normalize_capability(c) for c in add]
    drops = [normalize_capability(c) for c in drop]
    if "ALL" in adds:
        caps = [c for c in all_capabilities() if c not in drops]
    elif "ALL" in drops:
        caps = [c for c in adds if c != "ALL"]
    else:
        caps = [c for c in base if c not in drops] + adds
    return tuple(dict.fromkeys(caps))


# ---- --security-opt ----------------------------------------------------------------

@record(frozen=True)
class SecurityOpts:
    """What ``--security-opt`` asked for. ``seccomp``: "default", "unconfined" or a profile's JSON text."""

    seccomp: str = "default"
    seccomp_source: str = ""  # the profile's path, for messages
    no_new_privileges: bool = False
    systempaths_unconfined: bool = False

    def as_docker_list(self) -> list[str]:
        """HostConfig.SecurityOpt as ``docker inspect`` shows it (a profile inlined, as the docker CLI sends it)."""
        out = []
        if self.seccomp != "default":
            out.append(f"seccomp={self.seccomp}")
        if self.no_new_privileges:
            out.append("no-new-privileges")
        if self.systempaths_unconfined:
            out.append("systempaths=unconfined")
        return out


def _bool(value: str, what: str) -> bool:
    lowered = value.lower()
    if lowered in ("", "true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise SecurityOptionError(f"invalid --security-opt {what}: {value!r} is not a boolean")


def parse_security_opts(options: Iterable[str]) -> SecurityOpts:
    """Docker's ``--security-opt`` words; ``seccomp=FILE`` is read (and checked) here, as the docker CLI does."""
    from . import seccomp

    result = SecurityOpts()
    for text in options:
        key, sep, value = text.partition("=")
        if not sep:
            key, sep, value = text.partition(":")  # the old colon form
        key = key.strip()
        if key == "no-new-privileges":
            result = records.replace(result, no_new_privileges=_bool(value if sep else "", text))
        elif key == "seccomp" and sep:
            if value == "unconfined":
                result = records.replace(result, seccomp="unconfined", seccomp_source="")
            elif value == "builtin":
                result = records.replace(result, seccomp="default", seccomp_source="")
            elif value.lstrip().startswith("{"):  # inline, as the docker CLI sends a file's content
                profile = seccomp.parse_profile(value, "(inline profile)")
                result = records.replace(result, seccomp=profile.document, seccomp_source="")
            else:
                profile = seccomp.load_profile(value)
                result = records.replace(result, seccomp=profile.document, seccomp_source=value)
        elif key == "systempaths" and value == "unconfined":
            result = records.replace(result, systempaths_unconfined=True)
        elif (key == "apparmor" and value == "unconfined") or (key == "label" and value == "disable"):
            continue  # turning off what pybuild does not have (README: Security)
        elif key in ("apparmor", "label"):
            raise SecurityOptionError(f"--security-opt {text}: {'AppArmor' if key == 'apparmor' else 'SELinux'} "
                                      "is not supported by pybuild")
        else:
            raise SecurityOptionError(f"invalid --security-opt: {text!r}")
    return result


def seccomp_profile(opts: SecurityOpts) -> Profile | None:
    """The runtime's seccomp input for ``opts``: a Profile, or None for unconfined."""
    from . import seccomp

    if opts.seccomp == "unconfined":
        return None
    if opts.seccomp == "default":
        return DEFAULT_SECCOMP
    return seccomp.parse_profile(opts.seccomp, opts.seccomp_source or "profile")


# ---- --sysctl ----------------------------------------------------------------------

# Kernel parameters that belong to a namespace the container has of its own
# (runc's validator): IPC, then the network namespace's net.* (not with the
# host's network), the UTS namespace's domain name.
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


def check_sysctl(key: str, host_network: bool) -> None:
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return
    if key.startswith("net."):
        if host_network:
            raise SecurityOptionError(f'sysctl "{key}" not allowed in host network namespace')
        return
    if key == "kernel.domainname":
        return
    raise SecurityOptionError(f'sysctl "{key}" is not in a separate kernel namespace',
                              "only IPC (kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*), net.* and "
                              "kernel.domainname can be set")


def parse_sysctls(items: Iterable[str], host_network: bool) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for text in items:
        key, sep, value = text.partition("=")
        key = key.strip().replace("/", ".")
        if not sep or not key:
            raise SecurityOptionError(f"invalid --sysctl {text!r}", "use NAME=VALUE")
        check_sysctl(key, host_network)
        out[key] = value
    return tuple(out.items())


# ---- --ulimit ----------------------------------------------------------------------

# Linux's RLIMIT_* numbers (asm-generic; Python's resource module lacks some, e.g. RLIMIT_LOCKS).
ULIMITS: dict[str, int] = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14,
    "rttime": 15,
}
ULIMIT_NAMES = {number: name for name, number in ULIMITS.items()}
_UNLIMITED = syscalls.RLIM_INFINITY


def _limit_value(text: str, option: str) -> int:
    if text in ("-1", "unlimited"):
        return _UNLIMITED
    try:
        value = int(text)
    except ValueError:
        raise SecurityOptionError(f"invalid --ulimit {option}: {text!r} is not a number") from None
    if value < 0:
        raise SecurityOptionError(f"invalid --ulimit {option}: {text!r} is negative")
    return value


def parse_ulimit(text: str) -> Rlimit:
    """``name=soft[:hard]`` (Docker's --ulimit; a missing hard limit equals the soft one)."""
    name, sep, values = text.partition("=")
    if not sep or not values:
        raise SecurityOptionError(f"invalid --ulimit {text!r}", "use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    if name not in ULIMITS:
        raise SecurityOptionError(f"invalid --ulimit {text!r}: unknown limit {name!r}",
                                  "known: " + ", ".join(sorted(ULIMITS)))
    soft_text, _, hard_text = values.partition(":")
    soft = _limit_value(soft_text, text)
    hard = _limit_value(hard_text, text) if hard_text else soft
    if soft > hard:
        raise SecurityOptionError(f"invalid --ulimit {text!r}: the soft limit is above the hard limit")
    return Rlimit(ULIMITS[name], soft, hard)


def ulimit_doc(limit: Rlimit) -> dict[str, object]:
    """One entry of HostConfig.Ulimits as Docker shows it (-1 for unlimited)."""
    def shown(value: int) -> int:
        return -1 if value == _UNLIMITED else value

    return {"Name": ULIMIT_NAMES.get(limit.resource, str(limit.resource)), "Hard": shown(limit.hard),
            "Soft": shown(limit.soft)}


# ---- everything together -------------------------------------------------------------

@record(frozen=True)
class Isolation:
    """What a container's options make of Docker's defaults: the security part of its ContainerSpec."""

    capabilities: tuple[str, ...]
    seccomp: Profile | None  # None: unconfined
    no_new_privs: bool
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    device_rules: tuple[_devices.DeviceRule, ...]
    devices: tuple[_devices.Device, ...]
    readonly_rootfs: bool
    writable_sysfs: bool
    sysctls: tuple[tuple[str, str], ...]
    shm_size: int
    rlimits: tuple[Rlimit, ...]
    groups: tuple[str, ...]

    def spec_fields(self) -> dict[str, object]:
        """Keyword arguments of ContainerSpec."""
        return {"capabilities": self.capabilities, "seccomp": self.seccomp, "no_new_privs": self.no_new_privs,
                "masked_paths": self.masked_paths, "readonly_paths": self.readonly_paths,
                "device_rules": self.device_rules, "devices": self.devices,
                "readonly_rootfs": self.readonly_rootfs, "writable_sysfs": self.writable_sysfs,
                "sysctls": self.sysctls, "shm_size": self.shm_size}


def isolation(*, cap_add: Iterable[str] = (), cap_drop: Iterable[str] = (), privileged: bool = False,
              read_only: bool = False, security_opt: Iterable[str] = (), devices: Iterable[str] = (),
              ulimits: Iterable[str] = (), sysctls: Iterable[str] = (), shm_size: int | None = None,
              group_add: Iterable[str] = (), host_network: bool = False) -> Isolation:
    """Check the options (SecurityOptionError / DeviceError, exit 125) and combine them as Docker does.

    ``--privileged``: every capability, every host device and an allow-all
    device cgroup, no seccomp filter, no masked or read-only paths, /sys
    read-write; --cap-drop, --security-opt and --read-only still apply.
    """
    opts = parse_security_opts(security_opt)
    base = all_capabilities() if privileged else DEFAULT_CAPS
    caps = tweak_capabilities(base, cap_add, cap_drop)
    nodes: list[_devices.Device] = []
    rules: list[_devices.DeviceRule] = list(_devices.ALLOW_ALL if privileged else _devices.DEFAULT_RULES)
    if privileged:
        nodes.extend(_devices.host_devices())
    for text in devices:
        for node, rule in _devices.parse_device(text):
            nodes.append(node)
            if not privileged:
                rules.append(rule)
    seccomp = None if privileged else seccomp_profile(opts)  # Docker: --privileged runs unconfined
    unconfined_paths = privileged or opts.systempaths_unconfined
    if shm_size is not None and shm_size <= 0:
        raise SecurityOptionError(f"invalid --shm-size {shm_size}: it must be greater than 0")
    return Isolation(
        capabilities=caps, seccomp=seccomp, no_new_privs=opts.no_new_privileges,
        masked_paths=() if unconfined_paths else DEFAULT_MASKED,
        readonly_paths=() if unconfined_paths else DEFAULT_READONLY,
        device_rules=tuple(rules), devices=tuple(nodes), readonly_rootfs=read_only, writable_sysfs=privileged,
        sysctls=parse_sysctls(sysctls, host_network), shm_size=shm_size or DEFAULT_SHM_SIZE,
        rlimits=tuple(parse_ulimit(u) for u in ulimits), groups=tuple(group_add))
