"""bpf(2) for cgroup v2 device filters: assemble, load, attach, query.

cgroup v2 has no ``devices`` controller: the kernel asks a
``BPF_PROG_TYPE_CGROUP_DEVICE`` program attached to the cgroup (and to its
ancestors) whether a process may mknod, read or write a device node. runc
builds that program from the container's device rules
(``devices/devicefilter.go``); this module does the same.

Why a small assembler here instead of a library: no Python eBPF package is
well kept for this (bcc needs LLVM and kernel headers, the pure-Python
ones are unmaintained), and a device filter needs nine opcodes: a 32-bit
load from the context, 32-bit ``and``/``rsh``/``mov`` (immediate and
register), ``jne`` (immediate and register) and ``jeq`` jumps, and ``exit``. :func:`device_filter` emits them as 8-byte
``struct bpf_insn`` records (opcode, dst/src register nibbles, 16-bit jump
offset, 32-bit immediate) in the host's byte order; the kernel's verifier
checks the result when it is loaded.

The program reads ``struct bpf_cgroup_dev_ctx`` (``u32 access_type``: the
device type in the low 16 bits, BPF_DEVCG_DEV_BLOCK = 1 or CHAR = 2, and the
access in the high 16 bits, MKNOD = 1, READ = 2, WRITE = 4; ``u32 major``;
``u32 minor``) and checks the rules from the last to the first: the first
one that matches returns its verdict (1 allow, 0 deny); none matching denies.
An allow rule matches when the requested access is a subset of its own, a
deny rule when the request asks for any of its access (so ``deny c 1:3 w``
also refuses an ``O_RDWR`` open): the outcome the cgroup v1 controller and
runc's filter give. Rules are plain tuples ``(allow, type, major, minor,
access)``, type ``"a"``/``"c"``/``"b"``, ``None`` for a wildcard number, so
this layer knows nothing of the runtime's records.

Errors are :class:`OSError` with the kernel's errno, as in :mod:`syscalls`;
a program the verifier refuses raises :class:`VerifierError`, an OSError
that carries the verifier's log.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from collections.abc import Sequence

from .libc import libc as _libc

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}

# commands
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # attach type
BPF_F_ALLOW_MULTI = 2

BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4

LICENSE = b"Apache"
PROG_NAME = b"pybuild_devices"  # at most 15 bytes: BPF_OBJ_NAME_LEN is 16 with the NUL
LOG_SIZE = 1 << 18
LOG_LINES_SHOWN = 8  # of the verifier's log, in a VerifierError's message (``log`` has all of it)

_ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
_ALL_ACCESS = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE
_TYPES = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}

Rule = tuple[bool, str, int | None, int | None, str]


class VerifierError(OSError):
    """BPF_PROG_LOAD refused the program; ``log`` is what the verifier said."""

    def __init__(self, err: int, message: str, log: str) -> None:
        super().__init__(err, message)
        self.log = log


# ---- the assembler ------------------------------------------------------------------

# opcode = class | operation | source; the few a device filter uses.
_LDX_MEM_W = 0x61    # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: w_dst &= imm
_ALU32_RSH_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K: w_dst >>= imm
_ALU32_MOV_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K: w_dst = imm
_ALU32_MOV_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X: w_dst = w_src
_JNE_K = 0x55        # BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto +off
_JNE_X = 0x5D        # BPF_JMP | BPF_JNE | BPF_X: if dst != src goto +off
_JEQ_K = 0x15        # BPF_JMP | BPF_JEQ | BPF_K: if dst == imm goto +off
_EXIT = 0x95         # BPF_JMP | BPF_EXIT: return r0

R0, R1, R2, R3, R4, R5 = range(6)

_LITTLE = sys.byteorder == "little"


def encode(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: the register nibbles are ordered as the host's bitfields are."""
    regs = (src << 4 | dst) if _LITTLE else (dst << 4 | src)
    return struct.pack("=BBhi", opcode, regs, off, imm)


class _Program:
    """Instructions as (opcode, dst, src, off, imm); a rule's "no match" jumps go to the next rule."""

    def __init__(self) -> None:
        self.insns: list[tuple[int, int, int, int, int]] = []
        self.pending: list[int] = []  # jumps of the current rule, their offsets not yet known

    def emit(self, opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.insns.append((opcode, dst, src, off, imm))

    def jump_to_next(self, opcode: int, dst: int = 0, src: int = 0, imm: int = 0) -> None:
        self.pending.append(len(self.insns))
        self.emit(opcode, dst, src, 0, imm)

    def end_block(self) -> None:
        """Point the rule's pending jumps at the instruction emitted next."""
        target = len(self.insns)
        for at in self.pending:
            opcode, dst, src, _, imm = self.insns[at]
            offset = target - at - 1  # relative to the instruction after the jump
            if offset > 0x7FFF:
                raise ValueError("too many device rules for one eBPF program (jump out of range)")
            self.insns[at] = (opcode, dst, src, offset, imm)
        self.pending.clear()

    def assemble(self) -> bytes:
        assert not self.pending, "unresolved jumps"
        return b"".join(encode(*insn) for insn in self.insns)


def _access_mask(access: str) -> int:
    if not access or any(c not in _ACCESS_BITS for c in access):
        raise ValueError(f"invalid device access {access!r}: use a non-empty subset of rwm")
    mask = 0
    for c in access:
        mask |= _ACCESS_BITS[c]
    return mask


def _number(value: int | None, what: str) -> int | None:
    if value is not None and not 0 <= value <= 0x7FFFFFFF:
        raise ValueError(f"invalid device {what} {value}")
    return value


def device_filter(rules: Sequence[Rule]) -> bytes:
    """The BPF_PROG_TYPE_CGROUP_DEVICE program for ``rules`` (last match wins, default deny).

    One block per rule, the last rule first; a failed test jumps to the next
    block. Each block loads the context fields it tests itself (r1 keeps the
    context pointer throughout, r0 is the scratch register): so no register
    but r1 is live where blocks meet, the verifier's states there are all
    alike and it checks a long list in linear time. (Loading the fields once
    up front, as runc does, leaves known constants in the registers on every
    fall-through path; the verifier then cannot merge them and gives up near
    1,500 rules.) What bounds the list now is the verifier's stack of
    branches still to explore (8,192): each test of a rule but the last
    leaves one there until the next block, so about 2,700 rules of four
    tests fit (measured on 6.18), far more than ``--device`` lists make.
    A rule that matches everything (type "a", no numbers,
    access rwm) ends the program: the rules before it could never be
    reached, and the verifier refuses unreachable instructions.
    """
    p = _Program()
    for allow, kind, major, minor, access in reversed(rules):
        mask = _access_mask(access)
        major, minor = _number(major, "major"), _number(minor, "minor")
        if kind != "a":
            if kind not in _TYPES:
                raise ValueError(f"invalid device type {kind!r}: use a, c or b")
            p.emit(_LDX_MEM_W, R2, R1, 0)          # w2 = ctx->access_type
            p.emit(_ALU32_AND_K, R2, imm=0xFFFF)   # w2 &= 0xffff: the device type
            p.jump_to_next(_JNE_K, R2, imm=_TYPES[kind])
        if mask != _ALL_ACCESS:
            p.emit(_LDX_MEM_W, R3, R1, 0)          # w3 = ctx->access_type
            p.emit(_ALU32_RSH_K, R3, imm=16)       # w3 >>= 16: the access asked for
            p.emit(_ALU32_MOV_X, R0, R3)           # w0 = w3
            p.emit(_ALU32_AND_K, R0, imm=mask)     # w0 &= the rule's access
            if allow:                              # the request must be a subset: (access & mask) == access
                p.jump_to_next(_JNE_X, R0, R3)
            else:                                  # any overlap denies: (access & mask) != 0
                p.jump_to_next(_JEQ_K, R0, imm=0)
        if major is not None:
            p.emit(_LDX_MEM_W, R4, R1, 4)          # w4 = ctx->major
            p.jump_to_next(_JNE_K, R4, imm=major)
        if minor is not None:
            p.emit(_LDX_MEM_W, R5, R1, 8)          # w5 = ctx->minor
            p.jump_to_next(_JNE_K, R5, imm=minor)
        unconditional = not p.pending
        p.emit(_ALU32_MOV_K, R0, imm=1 if allow else 0)
        p.emit(_EXIT)
        p.end_block()
        if unconditional:
            return p.assemble()
    p.emit(_ALU32_MOV_K, R0, imm=0)
    p.emit(_EXIT)
    return p.assemble()


# ---- the syscall --------------------------------------------------------------------

def _sys_bpf() -> int:
    machine = os.uname().machine
    nr = _SYS_BPF.get(machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf: unknown syscall number on {machine}")
    return nr


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    """bpf(cmd, attr, sizeof attr); -1 becomes an OSError naming ``what``."""
    result = int(_libc.syscall(ctypes.c_long(_sys_bpf()), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({what}): {os.strerror(err)}")
    return result


def _address(buffer: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buffer is None else ctypes.addressof(buffer)


def _load_attr(insns: ctypes.Array[ctypes.c_char], license_buf: ctypes.Array[ctypes.c_char],
               log: ctypes.Array[ctypes.c_char] | None) -> ctypes.Array[ctypes.c_char]:
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size,
    # log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type.
    attr = ctypes.create_string_buffer(72)
    struct.pack_into("=IIQQIIQII16sII", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_buf),
                     1 if log is not None else 0, len(log) if log is not None else 0, _address(log),
                     0, 0, PROG_NAME, 0, 0)
    return attr


def load_device_program(insns: bytes) -> int:
    """BPF_PROG_LOAD a device filter; returns the program's fd (close-on-exec).

    The first try asks for no verifier log (the kernel skips the work); if it
    fails, a second try with a log buffer says why, in a :class:`VerifierError`.
    """
    if not insns or len(insns) % 8:
        raise ValueError("eBPF instructions come in 8-byte records")
    code = ctypes.create_string_buffer(insns, len(insns))
    license_buf = ctypes.create_string_buffer(LICENSE)
    try:
        return bpf(BPF_PROG_LOAD, _load_attr(code, license_buf, None), "BPF_PROG_LOAD")
    except OSError as first:
        log = ctypes.create_string_buffer(LOG_SIZE)
        try:
            fd = bpf(BPF_PROG_LOAD, _load_attr(code, license_buf, log), "BPF_PROG_LOAD")
        except OSError as second:
            text = log.value.decode(errors="replace").strip()
            message = f"bpf(BPF_PROG_LOAD) of a cgroup device filter: {os.strerror(second.errno or 0)}"
            if text:  # the verifier says why at the end; a refused long program logs every instruction
                message += "; verifier log: " + "\n".join(text.splitlines()[-LOG_LINES_SHOWN:])
            raise VerifierError(second.errno or first.errno or 0, message, text) from None
        return fd  # the failure did not repeat (a transient one, e.g. EAGAIN)


def attach_device_program(cgroup_fd: int, prog_fd: int) -> None:
    """BPF_PROG_ATTACH ``prog_fd`` to the cgroup v2 directory ``cgroup_fd`` (BPF_F_ALLOW_MULTI).

    The attachment holds the program: the caller may close ``prog_fd``; the
    program is released with the cgroup.
    """
    # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd
    attr = ctypes.create_string_buffer(struct.pack("=IIIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE,
                                                   BPF_F_ALLOW_MULTI, 0), 20)
    bpf(BPF_PROG_ATTACH, attr, "BPF_PROG_ATTACH")


def detach_device_program(cgroup_fd: int, prog_fd: int) -> None:
    """BPF_PROG_DETACH one program attached with :func:`attach_device_program`."""
    attr = ctypes.create_string_buffer(struct.pack("=IIIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, 0, 0), 20)
    bpf(BPF_PROG_DETACH, attr, "BPF_PROG_DETACH")


def query_device_programs(cgroup_fd: int) -> list[int]:
    """The ids of the device programs attached to the cgroup itself (not inherited ones)."""
    count = 16
    while True:
        ids = (ctypes.c_uint32 * count)()
        # target_fd, attach_type, query_flags, attach_flags (out), prog_ids, prog_cnt (in/out), pad
        attr = ctypes.create_string_buffer(struct.pack("=IIIIQII", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                                                       ctypes.addressof(ids), count, 0), 32)
        try:
            bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
        except OSError as e:
            if e.errno == errno.ENOSPC:  # more programs than room: prog_cnt says how many
                count = max(struct.unpack_from("=I", attr, 24)[0], count * 2)
                continue
            raise
        found = struct.unpack_from("=I", attr, 24)[0]
        return [int(ids[i]) for i in range(min(found, count))]
