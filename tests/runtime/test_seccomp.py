"""runtime/seccomp.py: Docker's profiles compiled by libseccomp, loaded on the real kernel.

Each verdict is taken in a forked child that installs the program and then
makes raw syscalls (x86_64 numbers) through libc's ``syscall``, reporting the
errno of each (0: it succeeded) through a pipe. Arguments are chosen so that
an allowed call fails in the kernel with something other than the errno the
filter would give (EFAULT, EINVAL, EBADF...), or succeeds harmlessly in the
child.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from pybuild.errors import ContainerError
from pybuild.linux import syscalls
from pybuild.runtime import seccomp
from pybuild.runtime.seccomp import Profile, SeccompError, compile_program, parse_profile
from pybuild.runtime.spec import DEFAULT_CAPS
from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="the syscall numbers here are x86_64's"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the children drop privileges as root"),
]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers
SYS_CLOSE, SYS_GETPID, SYS_SOCKET, SYS_CLONE, SYS_UNAME = 3, 39, 41, 56, 63
SYS_SYSLOG, SYS_GETPPID, SYS_PERSONALITY, SYS_MOUNT, SYS_SWAPON = 103, 110, 135, 165, 167
SYS_KEXEC_LOAD, SYS_ADD_KEY, SYS_REQUEST_KEY, SYS_KEYCTL, SYS_UNSHARE = 246, 248, 249, 250, 272
SYS_PERF_EVENT_OPEN, SYS_OPEN_BY_HANDLE_AT, SYS_SETNS, SYS_BPF, SYS_USERFAULTFD = 298, 304, 308, 321, 323
SYS_IO_URING_SETUP, SYS_CLONE3 = 425, 435

AF_INET, AF_VSOCK, SOCK_STREAM = 2, 40, 1
CLONE_FS = 0x200
SIGCHLD = 17
SYSLOG_ACTION_SIZE_BUFFER = 10
_UTSNAME = ctypes.create_string_buffer(6 * 65)

Call = tuple[int, ...]  # (number, *arguments)

# What the default profile with runc's default capabilities must refuse, and with what.
REFUSED_BY_DEFAULT: dict[str, tuple[Call, int]] = {
    "keyctl": ((SYS_KEYCTL, 0xDEAD), errno.EPERM),
    "add_key": ((SYS_ADD_KEY, 0, 0, 0, 0, 0), errno.EPERM),
    "request_key": ((SYS_REQUEST_KEY, 0, 0, 0, 0), errno.EPERM),
    "unshare(CLONE_NEWUSER)": ((SYS_UNSHARE, syscalls.CLONE_NEWUSER), errno.EPERM),
    "unshare(CLONE_NEWNS)": ((SYS_UNSHARE, syscalls.CLONE_NEWNS), errno.EPERM),
    "clone(CLONE_NEWUSER)": ((SYS_CLONE, syscalls.CLONE_NEWUSER | CLONE_FS | SIGCHLD, 0, 0, 0, 0), errno.EPERM),
    "clone3": ((SYS_CLONE3, 0, 0), errno.ENOSYS),
    "io_uring_setup": ((SYS_IO_URING_SETUP, 0, 0), errno.EPERM),
    "perf_event_open": ((SYS_PERF_EVENT_OPEN, 0, 0, -1, -1, 0), errno.EPERM),
    "bpf": ((SYS_BPF, 0xFFFF, 0, 0), errno.EPERM),
    "userfaultfd": ((SYS_USERFAULTFD, 0xFFFFFFFF), errno.EPERM),
    "kexec_load": ((SYS_KEXEC_LOAD, 0, 0, 0, 0xFFFFFFFF), errno.EPERM),
    "open_by_handle_at": ((SYS_OPEN_BY_HANDLE_AT, -1, 0, 0), errno.EPERM),
    "mount": ((SYS_MOUNT, 0, 0, 0, 0, 0), errno.EPERM),
    "swapon": ((SYS_SWAPON, 0, 0), errno.EPERM),
    "syslog": ((SYS_SYSLOG, SYSLOG_ACTION_SIZE_BUFFER, 0, 0), errno.EPERM),
    "setns": ((SYS_SETNS, -1, 0), errno.EPERM),
    "socket(AF_VSOCK)": ((SYS_SOCKET, AF_VSOCK, SOCK_STREAM, 0), errno.EPERM),
}
ALLOWED_BY_DEFAULT: dict[str, Call] = {
    "socket(AF_INET)": (SYS_SOCKET, AF_INET, SOCK_STREAM, 0),
    "personality(0xffffffff)": (SYS_PERSONALITY, 0xFFFFFFFF),
    "getpid": (SYS_GETPID,),
    "uname": (SYS_UNAME, ctypes.addressof(_UTSNAME)),
    "getppid": (SYS_GETPPID,),
}


def _syscall(call: Call) -> int:
    """The errno of one raw syscall, 0 if it succeeded."""
    args = [ctypes.c_long(a) if a < 0 else ctypes.c_ulong(a) for a in call[1:]]
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(call[0]), *args)
    return ctypes.get_errno() if result == -1 else 0


def verdicts(program: bytes | None, calls: Sequence[Call], *, before: Callable[[], None] | None = None) -> list[int]:
    """In a forked child: ``before()``, install ``program``, then the errno of each call."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 0
        try:
            os.close(r)
            if before is not None:
                before()
            if program is not None:
                seccomp.install(program)
            results = [_syscall(call) for call in calls]
            os.write(w, b"R" + struct.pack(f"{len(results)}i", *results))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            status = 1
            os.write(w, b"E" + f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data.startswith(b"R"):
        raise AssertionError(f"child failed ({status:#x}): {data[1:].decode(errors='replace')}")
    return list(struct.unpack(f"{len(calls)}i", data[1:]))


def names(errnos: Sequence[int]) -> list[str]:
    return [errno.errorcode.get(e, str(e)) if e else "ok" for e in errnos]


@pytest.fixture(scope="module")
def default_program() -> bytes:
    return compile_program(seccomp.default_profile(), DEFAULT_CAPS)


# ---- the default profile ---------------------------------------------------------------

def test_the_default_profile_is_mobys_file() -> None:
    profile = seccomp.default_profile()
    text = (REPO / "runtime" / "seccomp_default.json").read_text()
    assert profile == Profile(name="default", document=text)
    assert profile.digest == hashlib.sha256(text.encode()).hexdigest()
    assert seccomp.default_profile() is profile  # memoised
    assert json.loads(text)["defaultAction"] == "SCMP_ACT_ERRNO"


def test_a_program_is_a_sock_filter_array(default_program: bytes) -> None:
    assert len(default_program) % 8 == 0
    assert 0 < len(default_program) // 8 <= seccomp.BPF_MAXINSNS
    # the first instruction loads seccomp_data.arch (BPF_LD|BPF_W|BPF_ABS, k=4)
    code, _, _, k = struct.unpack_from("=HBBI", default_program, 0)
    assert (code, k) == (0x20, 4)


def test_an_empty_document_stands_for_the_default_profile(default_program: bytes) -> None:
    assert compile_program(Profile(name="default", document=""), DEFAULT_CAPS) == default_program


def test_the_default_profile_refuses_what_docker_refuses(default_program: bytes) -> None:
    calls = [call for call, _ in REFUSED_BY_DEFAULT.values()]
    got = dict(zip(REFUSED_BY_DEFAULT, names(verdicts(default_program, calls)), strict=True))
    want = {name: errno.errorcode[e] for name, (_, e) in REFUSED_BY_DEFAULT.items()}
    assert got == want


def test_the_refusals_come_from_the_filter() -> None:
    """The same profile with another defaultErrnoRet: every refusal but clone3's changes with it."""
    doc = json.loads(seccomp.default_profile().document)
    doc["defaultErrnoRet"] = errno.ENOTRECOVERABLE
    program = compile_program(parse_profile(json.dumps(doc), "variant"), DEFAULT_CAPS)
    calls = [call for call, _ in REFUSED_BY_DEFAULT.values()]
    got = dict(zip(REFUSED_BY_DEFAULT, verdicts(program, calls), strict=True))
    assert got.pop("clone3") == errno.ENOSYS  # its own rule's errnoRet
    assert set(got.values()) == {errno.ENOTRECOVERABLE}, names(list(got.values()))


def test_without_a_filter_the_calls_are_not_refused_so() -> None:
    # swapon, syslog, kexec_load, io_uring_setup...: the host's own policy (lockdown, sysctls) may refuse
    # them to root as well; test_the_refusals_come_from_the_filter covers them.
    calls = [call for call, _ in REFUSED_BY_DEFAULT.values()]
    got = dict(zip(REFUSED_BY_DEFAULT, names(verdicts(None, calls)), strict=True))
    for name in ("keyctl", "add_key", "request_key", "clone(CLONE_NEWUSER)", "clone3", "bpf", "mount", "setns",
                 "open_by_handle_at", "perf_event_open"):
        assert got[name] not in ("EPERM", "ENOSYS"), (name, got[name])


def test_the_default_profile_allows_ordinary_calls(default_program: bytes) -> None:
    got = dict(zip(ALLOWED_BY_DEFAULT, names(verdicts(default_program, list(ALLOWED_BY_DEFAULT.values()))),
                   strict=True))
    assert got == dict.fromkeys(ALLOWED_BY_DEFAULT, "ok")


def test_cap_sys_admin_opens_the_namespace_calls() -> None:
    program = compile_program(seccomp.default_profile(), (*DEFAULT_CAPS, "CAP_SYS_ADMIN"))
    calls = [REFUSED_BY_DEFAULT[name][0] for name in ("unshare(CLONE_NEWUSER)", "clone(CLONE_NEWUSER)", "clone3",
                                                      "mount", "setns", "keyctl")]
    user_ns, clone_ns, clone3, mount, setns, keyctl = names(verdicts(program, calls))
    assert user_ns == "ok"  # the child may: it is root
    assert clone_ns == "EINVAL"  # the kernel's answer to CLONE_NEWUSER|CLONE_FS: the filter let it through
    assert clone3 == "EINVAL"  # no args: the kernel refuses, not the filter's ENOSYS
    assert mount == "EFAULT"
    assert setns == "EBADF"
    assert keyctl == "EPERM"  # not a CAP_SYS_ADMIN call in Docker's profile


def test_capabilities_may_be_spelled_without_the_prefix() -> None:
    assert (compile_program(seccomp.default_profile(), ["sys_admin", *DEFAULT_CAPS])
            == compile_program(seccomp.default_profile(), [*DEFAULT_CAPS, "CAP_SYS_ADMIN"]))


def test_a_non_root_child_with_no_new_privs_can_install(default_program: bytes) -> None:
    def drop() -> None:
        syscalls.set_no_new_privs()
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    assert names(verdicts(default_program, [REFUSED_BY_DEFAULT["keyctl"][0], (SYS_GETPID,)], before=drop)) == [
        "EPERM", "ok"]


def test_without_no_new_privs_or_cap_sys_admin_the_kernel_refuses(default_program: bytes) -> None:
    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    with pytest.raises(AssertionError, match=r"PermissionError: .*seccomp"):
        verdicts(default_program, [(SYS_GETPID,)], before=drop)


def test_install_imports_nothing(default_program: bytes) -> None:
    def lock_imports() -> None:
        import builtins

        def refuse(name: str, *args: object, **kwargs: object) -> types.ModuleType:
            raise ImportError(f"import of {name} after lockdown")

        builtins.__import__ = refuse
        sys.meta_path[:] = []
        sys.path[:] = []

    assert names(verdicts(default_program, [REFUSED_BY_DEFAULT["bpf"][0]], before=lock_imports)) == ["EPERM"]


def test_a_program_that_is_no_sock_filter_array_is_refused_before_the_kernel() -> None:
    with pytest.raises(OSError) as info:
        seccomp.install(b"1234567")
    assert info.value.errno == errno.EINVAL


# ---- user profiles -----------------------------------------------------------------------

def profile(rules: Sequence[Mapping[str, object]], **top: object) -> Profile:
    return parse_profile(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", **top, "syscalls": rules}), "test.json")


def test_a_user_profile_with_one_errno_rule() -> None:
    program = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]), [])
    assert names(verdicts(program, [(SYS_GETPPID,), (SYS_GETPID,), (SYS_KEYCTL, 0xDEAD)])) == [
        "ENOSYS", "ok", errno.errorcode[errno.EOPNOTSUPP]]


def test_errno_without_errnoret_is_eperm_and_the_legacy_name_field_works() -> None:
    program = compile_program(profile([{"name": "getppid", "action": "SCMP_ACT_ERRNO"}]), [])
    assert names(verdicts(program, [(SYS_GETPPID,)])) == ["EPERM"]


def test_an_errno_default_action_takes_default_errnoret() -> None:
    program = compile_program(parse_profile(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EXDEV,
        "syscalls": [{"names": ["getpid", "write", "exit_group", "exit", "close"], "action": "SCMP_ACT_ALLOW"}],
    }), "deny.json"), [])
    assert names(verdicts(program, [(SYS_GETPPID,), (SYS_GETPID,)])) == ["EXDEV", "ok"]


def test_masked_eq_args() -> None:
    program = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
                                        "args": [{"index": 0, "value": 0xF0, "valueTwo": 0x30,
                                                  "op": "SCMP_CMP_MASKED_EQ"}]}]), [])
    assert names(verdicts(program, [(SYS_GETPPID, 0x35), (SYS_GETPPID, 0x3F), (SYS_GETPPID, 0x45),
                                    (SYS_GETPPID, 0)])) == ["EACCES", "EACCES", "ok", "ok"]


def test_args_on_distinct_indexes_are_anded_and_on_one_index_ored() -> None:
    anded = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]}]), [])
    assert names(verdicts(anded, [(SYS_GETPPID, 1, 2), (SYS_GETPPID, 1, 3), (SYS_GETPPID, 0, 2)])) == [
        "EPERM", "ok", "ok"]
    ored = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]), [])
    assert names(verdicts(ored, [(SYS_GETPPID, 1), (SYS_GETPPID, 2), (SYS_GETPPID, 3)])) == ["EPERM", "EPERM", "ok"]


@pytest.mark.parametrize("op,value,refused", [
    ("SCMP_CMP_NE", 5, [True, False, True]), ("SCMP_CMP_LT", 5, [True, False, False]),
    ("SCMP_CMP_LE", 5, [True, True, False]), ("SCMP_CMP_EQ", 5, [False, True, False]),
    ("SCMP_CMP_GE", 5, [False, True, True]), ("SCMP_CMP_GT", 5, [False, False, True]),
])
def test_comparison_ops(op: str, value: int, refused: list[bool]) -> None:
    program = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                        "args": [{"index": 2, "value": value, "op": op}]}]), [])
    got = verdicts(program, [(SYS_GETPPID, 0, 0, 4), (SYS_GETPPID, 0, 0, 5), (SYS_GETPPID, 0, 0, 6)])
    assert [e == errno.EPERM for e in got] == refused


def test_includes_and_excludes() -> None:
    def rule(errno_ret: int, **conditions: object) -> dict[str, object]:
        return {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret,
                "args": [{"index": 0, "value": errno_ret, "op": "SCMP_CMP_EQ"}], **conditions}

    rules = [
        rule(1, includes={"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}),  # needs both: has one
        rule(2, includes={"caps": ["CAP_NET_ADMIN"]}),
        rule(3, excludes={"caps": ["CAP_CHOWN", "CAP_NET_ADMIN"]}),  # skipped: holds one
        rule(4, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        rule(5, includes={"arches": ["amd64", "x32"]}),
        rule(6, includes={"arches": ["arm64"]}),
        rule(7, excludes={"arches": ["amd64"]}),
        rule(8, includes={"minKernel": "3.0"}),
        rule(9, includes={"minKernel": "99.0"}),
        rule(10, excludes={"minKernel": "3.0"}),
        rule(11, excludes={"minKernel": "99.99"}),
        rule(12, includes={}, excludes={}),
    ]
    program = compile_program(profile(rules), ["CAP_NET_ADMIN"])
    got = verdicts(program, [(SYS_GETPPID, n) for n in range(1, 13)])
    refused = [i for i, e in enumerate(got, start=1) if e]
    assert refused == [2, 4, 5, 8, 11, 12]
    assert got[1] == 2


def test_unknown_syscall_names_are_skipped() -> None:
    program = compile_program(profile([{"names": ["no_such_syscall_here", "getppid"], "action": "SCMP_ACT_ERRNO"}]),
                              [])
    assert names(verdicts(program, [(SYS_GETPPID,)])) == ["EPERM"]


def test_a_rule_with_the_default_action_is_dropped() -> None:
    program = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}]), [])
    assert names(verdicts(program, [(SYS_GETPPID,)])) == ["ok"]


def test_kill_process_kills_the_child() -> None:
    program = compile_program(profile([{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]), [])
    with pytest.raises(AssertionError, match="child failed"):
        verdicts(program, [(SYS_GETPPID,)])


def test_architectures_list_and_arch_map_alike() -> None:
    rules = [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]
    old = compile_program(profile(rules, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]), [])
    new = compile_program(profile(rules, archMap=[
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}]), [])
    native_only = compile_program(profile(rules), [])
    assert old == new
    assert len(native_only) < len(new)
    assert names(verdicts(new, [(SYS_GETPPID,)])) == ["EPERM"]


def test_the_podman_profile_compiles() -> None:
    path = "/usr/share/containers/seccomp.json"
    if not os.path.exists(path):
        pytest.skip(f"{path} (containers-common) is not installed")
    program = compile_program(seccomp.load_profile(path), DEFAULT_CAPS)
    assert names(verdicts(program, [(SYS_GETPID,), REFUSED_BY_DEFAULT["keyctl"][0]]))[0] == "ok"


# ---- bad input ---------------------------------------------------------------------------

BAD_PROFILES: dict[str, tuple[object, str]] = {
    "unknown action": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}, {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["getppid"], "action": "SCMP_ACT_FOO"}]}, 'syscalls[2].action: unknown action "SCMP_ACT_FOO"'),
    "unknown default action": ({"defaultAction": "ALLOW"}, 'defaultAction: unknown action "ALLOW"'),
    "no default action": ({"syscalls": []}, "missing defaultAction"),
    "unknown op": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]},
        'syscalls[0].args[0]: unknown op "SCMP_CMP_XX"'),
    "missing names": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]},
                      "syscalls[0]: no syscall names"),
    "name and names": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"name": "read", "names": ["write"], "action": "SCMP_ACT_ERRNO"}]}, "syscalls[0]: both 'name' and 'names'"),
    "index > 5": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
        "syscalls[0].args[0]: argument index 6 is out of range"),
    "notify rule": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}, "syscalls[0].action: SCMP_ACT_NOTIFY is not supported"),
    "notify default": ({"defaultAction": "SCMP_ACT_NOTIFY"}, "defaultAction: SCMP_ACT_NOTIFY is not supported"),
    "listener": ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"},
                 "listenerPath: seccomp notify listeners are not supported"),
    "both arch lists": ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                         "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "both 'architectures' and 'archMap'"),
    "unknown arch": ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
                     'architectures[0]: unknown architecture "SCMP_ARCH_Z80"'),
    "bad min kernel": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "5.8.1"}}]},
        'syscalls[0].includes.minKernel: invalid kernel version "5.8.1"'),
    "negative errno": ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1},
                       "defaultErrnoRet: expected an integer from 0 to 65535"),
    "not an object": (["SCMP_ACT_ALLOW"], "expected an object"),
    "names not strings": ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [1], "action": "SCMP_ACT_LOG"}]},
                          "syscalls[0].names: expected a list of strings"),
    "unsupported flag": ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]},
                         'flags[0]: the flag "SECCOMP_FILTER_FLAG_LOG" is not supported'),
}


@pytest.mark.parametrize("case", list(BAD_PROFILES))
def test_bad_profiles_are_one_line_errors_naming_the_file(case: str, tmp_path: Path) -> None:
    doc, message = BAD_PROFILES[case]
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(SeccompError) as info:
        seccomp.load_profile(str(path))
    text = str(info.value)
    assert text.startswith(f"seccomp profile {path}: {message}"), text
    assert "\n" not in text
    assert isinstance(info.value, ContainerError) and info.value.exit_code == 125


def test_invalid_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW",\n    ,\n}\n')
    with pytest.raises(SeccompError) as info:
        seccomp.load_profile(str(path))
    assert info.value.message == f"seccomp profile {path}: invalid JSON at line 3 column 5"
    assert "\n" not in str(info.value)


def test_an_unreadable_profile(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(SeccompError, match=f"^seccomp profile {missing}: cannot read it: No such file or directory$"):
        seccomp.load_profile(str(missing))
    with pytest.raises(SeccompError, match=r": cannot read it: Is a directory$"):
        seccomp.load_profile(str(tmp_path))


def test_parse_profile_names_what_it_was_given() -> None:
    with pytest.raises(SeccompError, match=r"^seccomp profile inline: invalid JSON at line 1 column 1"):
        parse_profile("", "inline")
    good = parse_profile('{"defaultAction": "SCMP_ACT_ALLOW"}', "inline")
    assert good == Profile(name="inline", document='{"defaultAction": "SCMP_ACT_ALLOW"}')


# ---- the program cache -------------------------------------------------------------------

_COMPILE_TWICE = """
import hashlib, sys
from pathlib import Path
from pybuild.runtime import seccomp
json_before = "json" in sys.modules
caps = {caps!r}
program = seccomp.compile_program(seccomp.default_profile(), caps, cache_dir=Path(sys.argv[1]))
again = seccomp.compile_program(seccomp.default_profile(), caps, cache_dir=Path(sys.argv[1]))
assert again is program
print("pyseccomp" in sys.modules, json_before or "json" not in sys.modules, hashlib.sha256(program).hexdigest())
"""


def _compile_in_a_new_process(cache: Path, caps: Sequence[str] = DEFAULT_CAPS) -> tuple[bool, bool, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _COMPILE_TWICE.format(caps=list(caps)), str(cache)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    imported, no_json, digest = proc.stdout.split()
    return imported == "True", no_json == "True", digest


def test_a_cache_hit_imports_neither_the_binding_nor_json(tmp_path: Path, default_program: bytes) -> None:
    cache = tmp_path / "cache" / "seccomp"
    imported, _, digest = _compile_in_a_new_process(cache)
    assert imported  # the miss compiled
    files = list(cache.iterdir())
    assert [f.suffix for f in files] == [".bpf"]
    assert cache.stat().st_mode & 0o777 == 0o700
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert files[0].read_bytes() == default_program
    imported, no_json, digest_hit = _compile_in_a_new_process(cache)
    assert not imported and no_json
    assert digest_hit == digest == hashlib.sha256(default_program).hexdigest()


def test_another_capability_set_is_another_cache_entry(tmp_path: Path) -> None:
    cache = tmp_path / "seccomp"
    _compile_in_a_new_process(cache)
    imported, _, _ = _compile_in_a_new_process(cache, (*DEFAULT_CAPS, "CAP_SYS_ADMIN"))
    assert imported
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("garbage", [b"", b"1234567", b"x" * 12, b"\0" * (8 * (seccomp.BPF_MAXINSNS + 1))])
def test_a_corrupt_cache_file_is_rebuilt(tmp_path: Path, default_program: bytes, garbage: bytes,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "seccomp"
    compile_program(seccomp.default_profile(), DEFAULT_CAPS, cache_dir=cache)  # may be a memo hit: no file
    monkeypatch.setattr(seccomp, "_programs", {})
    compile_program(seccomp.default_profile(), DEFAULT_CAPS, cache_dir=cache)
    (entry,) = cache.iterdir()
    entry.write_bytes(garbage)
    monkeypatch.setattr(seccomp, "_programs", {})
    assert compile_program(seccomp.default_profile(), DEFAULT_CAPS, cache_dir=cache) == default_program
    assert entry.read_bytes() == default_program


def test_a_cached_program_is_what_a_fresh_compile_gives(tmp_path: Path, default_program: bytes,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "seccomp"
    monkeypatch.setattr(seccomp, "_programs", {})
    compile_program(seccomp.default_profile(), DEFAULT_CAPS, cache_dir=cache)
    monkeypatch.setattr(seccomp, "_programs", {})
    from_cache = compile_program(seccomp.default_profile(), DEFAULT_CAPS, cache_dir=cache)
    monkeypatch.setattr(seccomp, "_programs", {})
    assert from_cache == compile_program(seccomp.default_profile(), DEFAULT_CAPS) == default_program
    assert names(verdicts(from_cache, [REFUSED_BY_DEFAULT["keyctl"][0]])) == ["EPERM"]


def test_an_unwritable_cache_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         default_program: bytes) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(seccomp, "_programs", {})
    assert compile_program(seccomp.default_profile(), DEFAULT_CAPS, cache_dir=blocker / "seccomp") == default_program
