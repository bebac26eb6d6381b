"""pybuild.linux.bpf: the device-filter assembler, and bpf(2) load/attach/query on the real kernel.

The kernel offers no BPF_PROG_TEST_RUN for cgroup device programs, so the
programs' logic is checked by interpreting the emitted instructions here
(the nine opcodes the assembler uses) against
``pybuild.runtime.devices.permits`` on random rule lists; the kernel then
checks that each program loads (its verifier) and, in
``tests/runtime/test_devices.py``, that attached programs allow and refuse
what they should.
"""

from __future__ import annotations

import errno
import os
import random
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.linux import bpf
from pybuild.runtime import cgroups
from pybuild.runtime.devices import ALLOW_ALL, DEFAULT_RULES, DeviceRule, permits

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) program loading needs root")

ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
ALL_ACCESS = ("r", "w", "m", "rw", "rm", "wm", "rwm")


def _decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(program), 8):
        opcode, regs, off, imm = struct.unpack_from("=BBhi", program, i)
        out.append((opcode, regs & 0xF, regs >> 4, off, imm))  # little-endian hosts: dst in the low nibble
    return out


def run(program: bytes, kind: str, major: int, minor: int, access: str) -> int:
    """Interpret a device filter on one bpf_cgroup_dev_ctx, as the kernel would run it."""
    ctx = struct.pack("=III", (1 if kind == "b" else 2) | sum(ACCESS_BITS[c] for c in access) << 16, major, minor)
    insns = _decode(program)
    regs = [0] * 11
    pc, steps = 0, 0
    context_in_r1 = True
    mask32 = 0xFFFFFFFF
    while True:
        steps += 1
        assert steps < 100_000, "no exit"
        opcode, dst, src, off, imm = insns[pc]
        pc += 1
        if opcode == 0x61:    # ldxw dst, [src + off]; src must be the untouched context pointer
            assert src == 1 and context_in_r1, "context read through a clobbered r1"
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif opcode == 0x54:  # w_dst &= imm
            regs[dst] = regs[dst] & imm & mask32
        elif opcode == 0x74:  # w_dst >>= imm
            regs[dst] = (regs[dst] & mask32) >> imm
        elif opcode == 0xB4:  # w_dst = imm
            regs[dst] = imm & mask32
        elif opcode == 0xBC:  # w_dst = w_src
            regs[dst] = regs[src] & mask32
        elif opcode == 0x55:  # if dst != imm goto +off
            pc += off if regs[dst] != imm & 0xFFFFFFFFFFFFFFFF else 0
        elif opcode == 0x5D:  # if dst != src goto +off
            pc += off if regs[dst] != regs[src] else 0
        elif opcode == 0x15:  # if dst == imm goto +off
            pc += off if regs[dst] == imm & 0xFFFFFFFFFFFFFFFF else 0
        elif opcode == 0x95:  # exit
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {opcode:#x}")
        if dst == 1 and opcode in (0x54, 0x74, 0xB4, 0xBC):
            context_in_r1 = False


def _tuples(rules: tuple[DeviceRule, ...] | list[DeviceRule]) -> list[tuple[bool, str, int | None, int | None, str]]:
    return [r.as_tuple() for r in rules]


def _random_rules(rng: random.Random) -> list[DeviceRule]:
    rules = []
    for _ in range(rng.randint(0, 8)):
        kind = rng.choice("acb")
        major = None if kind == "a" and rng.random() < 0.7 else rng.choice([None, 1, 5, 7])
        minor = rng.choice([None, 0, 3])
        rules.append(DeviceRule(rng.random() < 0.6, kind, major, minor, rng.choice(ALL_ACCESS)))
    return rules


# ---- encoding ------------------------------------------------------------------------------

def test_instruction_encoding_matches_the_kernel_layout() -> None:
    assert bpf.encode(0x95) == bytes.fromhex("9500000000000000")                      # exit
    assert bpf.encode(0xB4, bpf.R0, imm=1) == bytes.fromhex("b400000001000000")     # w0 = 1
    assert bpf.encode(0x61, bpf.R2, bpf.R1, 4) == bytes.fromhex("6112040000000000")  # r2 = *(u32 *)(r1 + 4)
    assert bpf.encode(0x55, bpf.R2, off=3, imm=2) == bytes.fromhex("5502030002000000")  # if r2 != 2 goto +3
    assert bpf.encode(0x5D, bpf.R1, bpf.R3, off=-1) == bytes.fromhex("5d31ffff00000000")


def test_a_match_all_rule_ends_the_program() -> None:
    """Rules before an unconditional one are dead code, which the verifier refuses: none is emitted."""
    only_last = bpf.device_filter([(True, "c", 1, 3, "rwm"), (False, "a", None, None, "rwm")])
    assert only_last == bpf.device_filter([(False, "a", None, None, "rwm")])
    assert len(bpf.device_filter(_tuples(ALLOW_ALL))) // 8 == 2  # return 1
    assert run(bpf.device_filter(_tuples(ALLOW_ALL)), "b", 8, 0, "rwm") == 1


@pytest.mark.parametrize("rule", [
    (True, "p", 1, 3, "rwm"),
    (True, "c", 1, 3, ""),
    (True, "c", 1, 3, "rwx"),
    (True, "c", 1 << 31, 3, "rwm"),
    (True, "c", 1, -1, "rwm"),
])
def test_bad_rules_are_refused(rule: tuple[bool, str, int | None, int | None, str]) -> None:
    with pytest.raises(ValueError):
        bpf.device_filter([rule])


# ---- the program's logic against permits() -----------------------------------------------

@pytest.mark.parametrize("rules", [DEFAULT_RULES, ALLOW_ALL, ()], ids=["default", "allow-all", "empty"])
def test_the_program_agrees_with_permits_on_the_fixed_lists(rules: tuple[DeviceRule, ...]) -> None:
    program = bpf.device_filter(_tuples(rules))
    for kind in "cb":
        for major in (1, 5, 7, 10, 136, 200):
            for minor in (0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 229, 232):
                for access in ALL_ACCESS:
                    assert run(program, kind, major, minor, access) == permits(rules, kind, major, minor, access), (
                        kind, major, minor, access)


def test_the_program_agrees_with_permits_on_random_lists() -> None:
    rng = random.Random(20261203)
    for _ in range(400):
        rules = _random_rules(rng)
        program = bpf.device_filter(_tuples(rules))
        for kind in "cb":
            for major in (1, 5, 7, 9):
                for minor in (0, 3, 4):
                    for access in ALL_ACCESS:
                        expected = permits(rules, kind, major, minor, access)
                        assert run(program, kind, major, minor, access) == expected, (rules, kind, major, minor,
                                                                                       access)


# ---- the kernel ------------------------------------------------------------------------------

@root_only
@pytest.mark.parametrize("rules", [DEFAULT_RULES, ALLOW_ALL, ()], ids=["default", "allow-all", "empty"])
def test_the_verifier_accepts_the_programs(rules: tuple[DeviceRule, ...]) -> None:
    fd = bpf.load_device_program(bpf.device_filter(_tuples(rules)))
    try:
        assert fd > 2
        assert os.get_inheritable(fd) is False  # bpf(2) fds are close-on-exec
    finally:
        os.close(fd)


@root_only
def test_the_verifier_accepts_random_and_long_lists() -> None:
    rng = random.Random(7)
    lists = [_random_rules(rng) for _ in range(30)]
    lists.append([DeviceRule(i % 3 != 0, "cb"[i % 2], i, None if i % 5 == 0 else i + 1, ALL_ACCESS[i % 7])
                  for i in range(1, 2_000)])  # about 2,700 of four tests fit: see device_filter
    for rules in lists:
        os.close(bpf.load_device_program(bpf.device_filter(_tuples(rules))))


@root_only
def test_a_refused_program_comes_back_with_the_verifier_log() -> None:
    no_exit = bpf.encode(0xB4, bpf.R0, imm=1)
    with pytest.raises(bpf.VerifierError) as info:
        bpf.load_device_program(no_exit)
    assert info.value.errno == errno.EINVAL
    assert "last insn is not an exit or jmp" in info.value.log
    assert "verifier log: last insn is not an exit or jmp" in str(info.value)
    reads_r6 = bpf.encode(0xBC, bpf.R0, 6) + bpf.encode(0x95)  # w0 = w6: r6 was never written
    with pytest.raises(bpf.VerifierError, match="R6 !read_ok"):
        bpf.load_device_program(reads_r6)


def test_instructions_must_be_whole_records() -> None:
    with pytest.raises(ValueError):
        bpf.load_device_program(b"\x95\0\0")
    with pytest.raises(ValueError):
        bpf.load_device_program(b"")


@pytest.fixture
def v2_dir() -> Iterator[Path]:
    """A fresh directory in the host's cgroup2 hierarchy, removed afterwards."""
    root = cgroups.v2_mount()
    if root is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup2 mount")
    path = Path(root) / f"pybuild-test-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()  # attached programs go with it


@root_only
def test_attach_query_detach(v2_dir: Path) -> None:
    fd = os.open(v2_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert bpf.query_device_programs(fd) == []
        progs = [bpf.load_device_program(bpf.device_filter(_tuples(rules))) for rules in (DEFAULT_RULES, ALLOW_ALL)]
        try:
            for prog in progs:
                bpf.attach_device_program(fd, prog)  # BPF_F_ALLOW_MULTI: both stay
            ids = bpf.query_device_programs(fd)
            assert len(ids) == 2 and len(set(ids)) == 2
            bpf.detach_device_program(fd, progs[1])
            assert len(bpf.query_device_programs(fd)) == 1
        finally:
            for prog in progs:
                os.close(prog)
        assert len(bpf.query_device_programs(fd)) == 1  # the attachment holds the program, not the fd
    finally:
        os.close(fd)


@root_only
def test_query_grows_its_buffer(v2_dir: Path) -> None:
    fd = os.open(v2_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # more than the first buffer's 16
            prog = bpf.load_device_program(bpf.device_filter(_tuples(ALLOW_ALL)))
            try:
                bpf.attach_device_program(fd, prog)
            finally:
                os.close(prog)
        assert len(set(bpf.query_device_programs(fd))) == 20
    finally:
        os.close(fd)


@root_only
def test_errors_carry_the_errno(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # not a cgroup
    prog = bpf.load_device_program(bpf.device_filter(_tuples(ALLOW_ALL)))
    try:
        with pytest.raises(OSError) as info:
            bpf.attach_device_program(fd, prog)
        assert info.value.errno == errno.EBADF
        assert "BPF_PROG_ATTACH" in str(info.value)
    finally:
        os.close(prog)
        os.close(fd)
