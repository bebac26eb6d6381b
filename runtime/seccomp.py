"""Seccomp for containers: Docker's JSON profiles, compiled by libseccomp, loaded with seccomp(2).

A profile is Docker's JSON format (``runtime/seccomp_default.json`` is moby's
default profile, unmodified: see ``SECCOMP_ORIGIN.md``). It is read the way
moby turns it into a runtime-spec filter, then compiled the way runc hands
that filter to libseccomp:

* ``defaultAction`` with ``defaultErrnoRet`` (EPERM when absent);
  ``archMap``: the native architecture's entry and its
  ``subArchitectures`` (no entry: the native architecture alone), or the
  older ``architectures`` list, every one added (not both: moby refuses it).
* ``syscalls[]``: ``names`` (or the legacy ``name``), ``action`` with
  ``errnoRet`` (EPERM when absent, for ERRNO and TRACE), ``args``
  (``index`` 0-5, ``value``, ``valueTwo``, ``op``; all in one rule, ANDed,
  unless an index repeats: then, as runc does, every condition is a rule of
  its own, ORed), ``includes``/``excludes`` on ``caps`` (includes: every
  listed capability must be held; excludes: skip when any is), ``arches``
  (the native architecture in Docker's Go naming: ``amd64``, ``arm64``...)
  and ``minKernel`` (``"5.8"``: compared with ``uname -r``'s first two
  numbers). A rule whose action is the default action is dropped (libseccomp
  refuses it; runc drops it too).
* Names libseccomp does not know on this architecture are skipped, as runc
  does; the kernel then gives them the default action.
* libseccomp is told not to set no_new_privs (the runtime decides that);
  the bad-architecture action is libseccomp's default, KILL_THREAD, which
  runc keeps; with more than 32 names the binary-tree optimisation is on, as
  runc sets it.
* SCMP_ACT_NOTIFY, ``listenerPath`` and filter ``flags`` other than
  SECCOMP_FILTER_FLAG_TSYNC (a no-op for the single-threaded init) are
  refused: pybuild has no seccomp agent, and the program is loaded with no
  flags.

Not done: runc prepends to libseccomp's program a hand-written stub that
answers ENOSYS (instead of the default action) for syscall numbers above the
highest one the profile names, so that a program built for a newer kernel
falls back. Programs here are libseccomp's alone: such syscalls get the
default action (EPERM with the default profile).

Cost: ``pybuild run`` is a fresh process every time, and importing the
libseccomp binding costs ~40 ms (ctypes.util.find_library runs ldconfig).
:func:`compile_program` therefore memoises programs in the process and, with
``cache_dir``, keeps them on disk as ``<key>.bpf``; the key covers the
profile text, the capabilities, the architecture, the kernel release, the
identity (path, size, mtime) of the libseccomp.so.2 the loader finds in the
usual library directories and :data:`FORMAT_VERSION`. A hit imports neither
the binding nor :mod:`json`. :func:`install` runs in the container's child,
whose imports are locked down: it imports nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys

from pybuild.errors import ContainerError
from pybuild.linux import fsutil, syscalls
from pybuild.records import record

# The bare SHA-256 module: hashlib would load OpenSSL and blake2 on every `pybuild run`.
try:
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]  # CPython <= 3.11
except ImportError:  # pragma: no cover - other interpreters
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore,no-redef]  # 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment,unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path
    from typing import Any

__all__ = ["FORMAT_VERSION", "Profile", "SeccompError", "compile_program", "default_profile", "install",
           "load_profile", "parse_profile"]

# Bump when the compiler's output changes for the same inputs: old cache files are then never read.
FORMAT_VERSION = 1

BPF_MAXINSNS = 4096  # the kernel refuses longer classic-BPF programs
_SOCK_FILTER_SIZE = 8
_DEFAULT_FILE = "seccomp_default.json"
_EPERM = 1


class SeccompError(ContainerError):
    """A seccomp profile cannot be read, is malformed, or cannot be compiled."""

    exit_code = 125  # docker run's status for bad options


@record(frozen=True)
class Profile:
    """A seccomp profile in Docker's JSON format."""

    name: str  # "default", or the path it was read from (for messages)
    document: str  # the JSON text

    @property
    def digest(self) -> str:
        return str(_sha256(self.document.encode("utf-8", "surrogatepass")).hexdigest())


# ---- the profile's model (validated) ---------------------------------------------------

_ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
})
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_FLAGS_ACCEPTED = frozenset({"SECCOMP_FILTER_FLAG_TSYNC"})
_FLAGS_KNOWN = _FLAGS_ACCEPTED | {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}

# libseccomp's SCMP_ARCH_* tokens (AUDIT_ARCH_* values; X32 is libseccomp's own).
_64BIT, _LE, _N32 = 0x80000000, 0x40000000, 0x20000000
_ARCH_TOKENS: dict[str, int] = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _64BIT | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64BIT | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64BIT,
    "SCMP_ARCH_MIPS64N32": 8 | _64BIT | _N32,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64BIT | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64BIT | _LE | _N32,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64BIT,
    "SCMP_ARCH_PPC64LE": 21 | _64BIT | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64BIT,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _64BIT,
    "SCMP_ARCH_RISCV64": 243 | _64BIT | _LE,
    "SCMP_ARCH_LOONGARCH64": 258 | _64BIT | _LE,
}

# uname's machine -> (Docker's name for it in "arches", the SCMP_ARCH_* of its archMap entry).
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv8l": ("arm", "SCMP_ARCH_ARM"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "i486": ("x86", "SCMP_ARCH_X86"),
    "i586": ("x86", "SCMP_ARCH_X86"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "ppc": ("ppc", "SCMP_ARCH_PPC"),
    "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390": ("s390", "SCMP_ARCH_S390"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "loongarch64": ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}


@record(frozen=True)
class _Filter:
    caps: tuple[str, ...]
    arches: tuple[str, ...]
    min_kernel: tuple[int, int] | None


@record(frozen=True)
class _Arg:
    index: int
    value: int
    value_two: int
    op: int


@record(frozen=True)
class _Rule:
    where: str  # "syscalls[3]", for messages
    names: tuple[str, ...]
    action: str
    errno_ret: int | None
    args: tuple[_Arg, ...]
    includes: _Filter | None
    excludes: _Filter | None


@record(frozen=True)
class _Parsed:
    default_action: str
    default_errno_ret: int | None
    arch_map: tuple[tuple[str, tuple[str, ...]], ...]  # (architecture, its subArchitectures)
    architectures: tuple[str, ...]
    rules: tuple[_Rule, ...]


class _Invalid(Exception):
    """A validation failure: ``where`` (a JSON path) and what is wrong."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}" if where else what)


def _error(name: str, message: str, hint: str | None = None) -> SeccompError:
    return SeccompError(f"seccomp profile {name}: {message}", hint)


def _get(obj: dict[str, Any], key: str, default: Any = None) -> Any:
    value = obj.get(key)
    return default if value is None else value  # null is Go's zero value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(where, "expected a string")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(where, "expected a list of strings")
    return tuple(value)


def _uint(value: Any, where: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _Invalid(where, f"expected an integer from 0 to {limit}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(where, "expected an object")
    return value


def _action(value: Any, where: str) -> str:
    action = _string(value, where)
    if action == "SCMP_ACT_NOTIFY":
        raise _Invalid(where, "SCMP_ACT_NOTIFY is not supported (pybuild has no seccomp agent)")
    if action not in _ACTIONS:
        raise _Invalid(where, f'unknown action "{action}"')
    return action


def _arch(value: Any, where: str) -> str:
    arch = _string(value, where)
    if arch not in _ARCH_TOKENS:
        raise _Invalid(where, f'unknown architecture "{arch}"')
    return arch


def _caps(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_cap_name(c) for c in _strings(value, where))


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _kernel_version(value: Any, where: str) -> tuple[int, int] | None:
    text = _string(value, where)
    if not text:
        return None
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts) or text == "0.0":
        raise _Invalid(where, f'invalid kernel version "{text}", expected "<kernel>.<major>" (e.g. "5.8")')
    return int(parts[0]), int(parts[1])


def _condition(value: Any, where: str) -> _Filter | None:
    if value is None:
        return None
    obj = _object(value, where)
    return _Filter(caps=_caps(_get(obj, "caps", []), f"{where}.caps"),
                   arches=_strings(_get(obj, "arches", []), f"{where}.arches"),
                   min_kernel=_kernel_version(_get(obj, "minKernel", ""), f"{where}.minKernel"))


def _arg(value: Any, where: str) -> _Arg:
    obj = _object(value, where)
    if "op" not in obj or obj["op"] is None:
        raise _Invalid(where, "missing op")
    op = _string(obj["op"], f"{where}.op")
    if op not in _OPS:
        raise _Invalid(where, f'unknown op "{op}"')
    index = _get(obj, "index", 0)
    if isinstance(index, int) and not isinstance(index, bool) and index > 5:
        raise _Invalid(where, f"argument index {index} is out of range (a syscall has arguments 0 to 5)")
    return _Arg(index=_uint(index, f"{where}.index", 5),
                value=_uint(_get(obj, "value", 0), f"{where}.value", 2**64 - 1),
                value_two=_uint(_get(obj, "valueTwo", 0), f"{where}.valueTwo", 2**64 - 1),
                op=_OPS[op])


def _rule(value: Any, where: str) -> _Rule:
    obj = _object(value, where)
    names = _strings(_get(obj, "names", []), f"{where}.names")
    name = _string(_get(obj, "name", ""), f"{where}.name")
    if name:
        if names:
            raise _Invalid(where, "both 'name' and 'names' are given, use one of them")
        names = (name,)
    if not names:
        raise _Invalid(where, "no syscall names (missing 'names')")
    if "" in names:
        raise _Invalid(f"{where}.names", "an empty syscall name")
    if "action" not in obj or obj["action"] is None:
        raise _Invalid(where, "missing action")
    errno_ret = obj.get("errnoRet")
    args = _get(obj, "args", [])
    if not isinstance(args, list):
        raise _Invalid(f"{where}.args", "expected a list")
    return _Rule(where=where, names=names, action=_action(obj["action"], f"{where}.action"),
                 errno_ret=None if errno_ret is None else _uint(errno_ret, f"{where}.errnoRet", 0xFFFF),
                 args=tuple(_arg(a, f"{where}.args[{i}]") for i, a in enumerate(args)),
                 includes=_condition(obj.get("includes"), f"{where}.includes"),
                 excludes=_condition(obj.get("excludes"), f"{where}.excludes"))


def _validate(doc: Any) -> _Parsed:
    obj = _object(doc, "")
    if obj.get("defaultAction") in (None, ""):
        raise _Invalid("", "missing defaultAction")
    default_action = _action(obj["defaultAction"], "defaultAction")
    default_errno = obj.get("defaultErrnoRet")
    if _get(obj, "listenerPath", ""):
        raise _Invalid("listenerPath", "seccomp notify listeners are not supported (pybuild has no seccomp agent)")
    for i, flag in enumerate(_strings(_get(obj, "flags", []), "flags")):
        if flag not in _FLAGS_KNOWN:
            raise _Invalid(f"flags[{i}]", f'unknown flag "{flag}"')
        if flag not in _FLAGS_ACCEPTED:
            raise _Invalid(f"flags[{i}]", f'the flag "{flag}" is not supported')
    architectures = tuple(_arch(a, f"architectures[{i}]")
                          for i, a in enumerate(_strings(_get(obj, "architectures", []), "architectures")))
    arch_map_raw = _get(obj, "archMap", [])
    if not isinstance(arch_map_raw, list):
        raise _Invalid("archMap", "expected a list")
    arch_map = []
    for i, entry in enumerate(arch_map_raw):
        where = f"archMap[{i}]"
        item = _object(entry, where)
        subs = _strings(_get(item, "subArchitectures", []), f"{where}.subArchitectures")
        arch_map.append((_arch(item.get("architecture"), f"{where}.architecture"),
                         tuple(_arch(s, f"{where}.subArchitectures[{j}]") for j, s in enumerate(subs))))
    if architectures and arch_map:
        raise _Invalid("", "both 'architectures' and 'archMap' are given, use one of them")
    rules_raw = _get(obj, "syscalls", [])
    if not isinstance(rules_raw, list):
        raise _Invalid("syscalls", "expected a list")
    return _Parsed(default_action=default_action,
                   default_errno_ret=None if default_errno is None else _uint(default_errno, "defaultErrnoRet",
                                                                              0xFFFF),
                   arch_map=tuple(arch_map), architectures=architectures,
                   rules=tuple(_rule(r, f"syscalls[{i}]") for i, r in enumerate(rules_raw)))


def _parse(text: str, name: str) -> _Parsed:
    import json  # only when a profile is read or compiled, never on a cache hit

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(name, f"invalid JSON at line {exc.lineno} column {exc.colno}", exc.msg) from None
    except RecursionError:
        raise _error(name, "invalid JSON: nested too deeply") from None
    try:
        return _validate(doc)
    except _Invalid as exc:
        raise _error(name, str(exc)) from None


# ---- reading profiles --------------------------------------------------------------------

_default: Profile | None = None


def default_profile() -> Profile:
    """Docker's default profile (``runtime/seccomp_default.json``), read once per process."""
    global _default
    if _default is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _DEFAULT_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                _default = Profile(name="default", document=f.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise _error("default", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return _default


def parse_profile(text: str, name: str) -> Profile:
    """A profile from its JSON text, validated (SeccompError naming ``name`` if it is not one)."""
    _parse(text, name)
    return Profile(name=name, document=text)


def load_profile(path: str) -> Profile:
    """Read and validate the profile at ``path``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _error(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(path, f"not UTF-8 text (byte {exc.start})") from None
    return parse_profile(text, path)


# ---- compiling -------------------------------------------------------------------------

_programs: dict[str, bytes] = {}
_libseccomp_id: str | None = None


def _native() -> tuple[str, str, str | None]:
    """(uname's machine, Docker's arch name, the SCMP_ARCH_* name or None) of this machine."""
    machine = os.uname().machine
    docker, scmp = _MACHINES.get(machine, (machine, None))
    return machine, docker, scmp


def _libseccomp_identity() -> str:
    """Path, size and mtime of the libseccomp.so.2 the loader most likely finds (cheap: a few stats).

    The binding finds the library with ldconfig, which is what costs; this
    looks in the usual directories instead, in the loader's order. A library
    elsewhere (LD_LIBRARY_PATH) is not seen: the key then says "unknown".
    """
    global _libseccomp_id
    if _libseccomp_id is None:
        multiarch = getattr(sys.implementation, "_multiarch", "") or ""
        _libseccomp_id = "unknown"
        for base in ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"):
            for directory in ((f"{base}/{multiarch}", base) if multiarch else (base,)):
                path = f"{directory}/libseccomp.so.2"
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                _libseccomp_id = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
                return _libseccomp_id
    return _libseccomp_id


def _cache_key(profile: Profile, caps: tuple[str, ...]) -> str:
    machine, _, _ = _native()
    parts = (f"pybuild-seccomp-bpf {FORMAT_VERSION}", profile.digest, ",".join(caps), machine,
             os.uname().release, _libseccomp_identity())
    return str(_sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest())


def _valid_program(data: bytes) -> bool:
    return 0 < len(data) <= BPF_MAXINSNS * _SOCK_FILTER_SIZE and len(data) % _SOCK_FILTER_SIZE == 0


def _read_cached(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        if not 0 < st.st_size <= BPF_MAXINSNS * _SOCK_FILTER_SIZE or st.st_size % _SOCK_FILTER_SIZE:
            return None  # empty or torn: rebuilt
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, BPF_MAXINSNS * _SOCK_FILTER_SIZE + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > BPF_MAXINSNS * _SOCK_FILTER_SIZE:
                return None
        data = b"".join(chunks)
        return data if _valid_program(data) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_cached(cache_dir: str, path: str, program: bytes) -> None:
    """Keep ``program`` for the next process; a cache that cannot be written is no error."""
    try:
        if not os.path.isdir(cache_dir):
            parent = os.path.dirname(os.path.abspath(cache_dir))
            os.makedirs(parent, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(cache_dir, 0o700)
                os.chmod(cache_dir, 0o700)  # whatever the umask
        fsutil.atomic_write(path, program, 0o600)
    except OSError:
        pass


def compile_program(profile: Profile, capabilities: Iterable[str], *, cache_dir: Path | None = None) -> bytes:
    """The classic-BPF program (``struct sock_filter`` array) of ``profile`` for a container holding
    ``capabilities`` (``"CAP_SYS_ADMIN"``...), compiled for this machine and kernel.

    A profile with an empty document stands for the default profile.
    """
    if not profile.document:
        profile = default_profile()
    caps = tuple(sorted({_cap_name(c) for c in capabilities}))
    key = _cache_key(profile, caps)
    program = _programs.get(key)
    if program is not None:
        return program
    path = None
    if cache_dir is not None:
        path = os.path.join(os.fspath(cache_dir), f"{key}.bpf")
        program = _read_cached(path)
    if program is None:
        program = _compile(profile, caps)
        if cache_dir is not None and path is not None:
            _write_cached(os.fspath(cache_dir), path, program)
    _programs[key] = program
    return program


def _applies(rule: _Rule, caps: frozenset[str], arch: str, kernel: tuple[int, int] | None) -> bool:
    """moby's filtering of a rule on the container's capabilities and the host's arch and kernel."""
    if rule.excludes is not None:
        ex = rule.excludes
        if arch in ex.arches or any(c in caps for c in ex.caps):
            return False
        if ex.min_kernel is not None and kernel is not None and kernel >= ex.min_kernel:
            return False
    if rule.includes is not None:
        inc = rule.includes
        if inc.arches and arch not in inc.arches:
            return False
        if not all(c in caps for c in inc.caps):
            return False
        if inc.min_kernel is not None and kernel is not None and kernel < inc.min_kernel:
            return False
    return True


def _running_kernel(name: str) -> tuple[int, int]:
    release = os.uname().release
    numbers = []
    for part in release.split(".")[:2]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        numbers.append(int(digits))
    if len(numbers) != 2:
        raise _error(name, f"cannot read the kernel version from {release!r} for minKernel")
    return numbers[0], numbers[1]


class _Fd:
    """What the binding's export_bpf wants: something with a ``fileno()``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _compile(profile: Profile, caps_sorted: tuple[str, ...]) -> bytes:
    parsed = _parse(profile.document, profile.name)
    name = profile.name
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as exc:
        raise SeccompError("seccomp: libseccomp (the pyseccomp binding and libseccomp.so.2) is not available",
                           str(exc)) from None

    def action(act: str, errno_ret: int | None) -> int:
        if act in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
            return int(pyseccomp.KILL_THREAD)
        if act == "SCMP_ACT_KILL_PROCESS":
            return int(pyseccomp.KILL_PROCESS)
        if act == "SCMP_ACT_TRAP":
            return int(pyseccomp.TRAP)
        if act == "SCMP_ACT_ERRNO":
            return int(pyseccomp.ERRNO(_EPERM if errno_ret is None else errno_ret))
        if act == "SCMP_ACT_TRACE":
            return int(pyseccomp.TRACE(_EPERM if errno_ret is None else errno_ret))
        if act == "SCMP_ACT_LOG":
            return int(pyseccomp.LOG)
        return int(pyseccomp.ALLOW)

    _, arch, scmp_native = _native()
    caps = frozenset(caps_sorted)
    needs_kernel = any(f is not None and f.min_kernel is not None
                       for r in parsed.rules for f in (r.includes, r.excludes))
    kernel = _running_kernel(name) if needs_kernel else None
    rules = [r for r in parsed.rules if _applies(r, caps, arch, kernel)]

    default = action(parsed.default_action, parsed.default_errno_ret)
    try:
        flt = pyseccomp.SyscallFilter(default)
    except OSError as exc:
        raise _error(name, f"libseccomp refuses the default action {parsed.default_action}: {exc.strerror}") from None
    try:
        flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # no_new_privs is the runtime's business
        flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_THREAD)  # libseccomp's default, as runc keeps it
    except OSError as exc:
        raise _error(name, f"libseccomp refuses a filter attribute: {exc.strerror}") from None

    arches: list[str] = list(parsed.architectures)
    for main, subs in parsed.arch_map:
        if main == scmp_native:
            arches += [main, *subs]
            break
    for arch_name in arches:
        token = _ARCH_TOKENS[arch_name]
        try:
            if not flt.exist_arch(token):
                flt.add_arch(token)
        except OSError as exc:
            raise _error(name, f"libseccomp cannot filter the architecture {arch_name}: {exc.strerror}") from None

    if sum(len(r.names) for r in rules) > 32:
        # A binary tree, as runc asks for long rule sets; an older libseccomp's linear program is as correct.
        with contextlib.suppress(OSError):
            flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)

    for rule in rules:
        act = action(rule.action, rule.errno_ret)
        if act == default:
            continue  # redundant (libseccomp refuses it)
        conditions = [pyseccomp.Arg(a.index, a.op, a.value, a.value_two) for a in rule.args]
        indexes = [a.index for a in rule.args]
        groups = [[c] for c in conditions] if len(set(indexes)) != len(indexes) else [conditions]
        for syscall in rule.names:
            number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, syscall))
            if number == -1:  # __NR_SCMP_ERROR: libseccomp does not know it here
                continue
            for group in groups:
                try:
                    flt.add_rule(act, number, *group)
                except OSError as exc:
                    raise _error(name, f'{rule.where}: libseccomp refuses the rule for "{syscall}": '
                                       f"{exc.strerror}") from None

    fd = os.memfd_create("pybuild-seccomp", os.MFD_CLOEXEC)
    try:
        try:
            flt.export_bpf(_Fd(fd))
        except OSError as exc:
            raise _error(name, f"libseccomp cannot export the program: {exc.strerror}") from None
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks: list[bytes] = []
        while chunk := os.read(fd, max(size, 1)):
            chunks.append(chunk)
        program = b"".join(chunks)
    finally:
        os.close(fd)
    del flt
    if not _valid_program(program):
        count = len(program) // _SOCK_FILTER_SIZE
        raise _error(name, f"the compiled program has {count} instructions; the kernel takes 1 to {BPF_MAXINSNS}")
    return program


# ---- loading ---------------------------------------------------------------------------

def install(program: bytes) -> None:
    """Load ``program`` on the calling thread with seccomp(2); OSError with the kernel's errno if refused.

    Called in the container's child after its credentials are set: the kernel
    requires no_new_privs or CAP_SYS_ADMIN (EACCES otherwise). Imports nothing.
    """
    syscalls.seccomp_set_filter(program)
