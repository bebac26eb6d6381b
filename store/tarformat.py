"""The tar format of layers: header blocks written and read, PAX records, entries.

Only what OCI layers use: ustar headers with PAX extended headers for long or
non-ASCII names, large ids, sizes and times, and ``SCHILY.xattr.*``; GNU long
names when reading. Names stay bytes (no encoding round trips); anything
malformed is a :class:`~pybuild.errors.LayerError`. :mod:`.tarstream` moves
the bytes, :mod:`.layertar` uses both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pybuild.errors import LayerError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)


class HeaderSource(Protocol):
    """What :func:`read_entries` reads from (a :class:`~pybuild.store.tarstream.TarReader`)."""

    def read_header(self) -> bytes | None: ...

    def read_exact(self, size: int) -> bytes: ...

    def skip(self, size: int) -> None: ...


_PAX_NAME = b"././@PaxHeader"
_MAX_OCTAL_7 = 0o7777777
_MAX_OCTAL_11 = 0o77777777777
_MAX_META_SIZE = 16 << 20  # PAX / GNU long-name data kept in memory
_MAX_LONGNAME = 1 << 20

REGTYPE = b"0"
_AREGTYPE = b"\0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
_CONTTYPE = b"7"
_PAX_TYPE = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"
_HEADER_ONLY = frozenset((LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE))


def show_name(name: bytes | str) -> str:
    if isinstance(name, str):
        return name
    return name.decode("utf-8", "backslashreplace")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def _ustar(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """One ustar header block; every value must already fit its field."""
    head = b"".join((
        name.ljust(100, b"\0"),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime),
        b"        ",
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(64),
        b"%07o\0%07o\0" % (devmajor, devminor),
        bytes(167),
    ))
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


def _is_pax_safe(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def entry_header(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """The header block(s) of one entry: a PAX extended header first when needed."""
    records: dict[bytes, bytes] = {}
    if len(name) > 100 or not name.isascii():
        records[b"path"] = name
        name = name[:100]
    if len(linkname) > 100 or not linkname.isascii():
        records[b"linkpath"] = linkname
        linkname = linkname[:100]
    if uid > _MAX_OCTAL_7:
        records[b"uid"] = b"%d" % uid
        uid = 0
    if gid > _MAX_OCTAL_7:
        records[b"gid"] = b"%d" % gid
        gid = 0
    if size > _MAX_OCTAL_11:
        records[b"size"] = b"%d" % size
        size = 0
    if mtime < 0 or mtime > _MAX_OCTAL_11:
        records[b"mtime"] = b"%d" % mtime
        mtime = 0
    if devmajor > _MAX_OCTAL_7 or devminor > _MAX_OCTAL_7:
        raise LayerError(f"device number {devmajor}:{devminor} does not fit a tar header")
    if xattrs:
        for key, value in xattrs:
            records[b"SCHILY.xattr." + key] = value
    head = _ustar(name, mode, uid, gid, size, mtime, typeflag, linkname, devmajor, devminor)
    if not records:
        return head
    if not all(_is_pax_safe(v) for k, v in records.items() if k in (b"path", b"linkpath")):
        records[b"hdrcharset"] = b"BINARY"
    data = b"".join(_pax_record(k, records[k]) for k in sorted(records))
    pad = -len(data) % BLOCK
    return _ustar(_PAX_NAME, 0o644, 0, 0, len(data), 0, _PAX_TYPE) + data + bytes(pad) + head


class TarEntry:
    __slots__ = ("name", "typeflag", "mode", "uid", "gid", "size", "mtime_ns", "linkname",
                 "devmajor", "devminor", "xattrs")

    name: bytes
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: list[tuple[bytes, bytes]]

    def __init__(self) -> None:
        self.xattrs = []
        self.devmajor = self.devminor = 0


def checksum_ok(block: bytes) -> bool:
    """Whether ``block``'s checksum field holds its checksum, summed unsigned or (as old tars did) signed."""
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip(b" ") or b"-1", 8)
    except ValueError:
        return False
    field = block[148:156]  # summed as if it held eight spaces
    unsigned = sum(block) - sum(field) + 8 * 32
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block) - sum(b - 256 if b > 127 else b for b in field) + 8 * 32
    return stored == signed


def _parse_number(field: bytes, what: str) -> int:
    if field[-1:] in (b"\0", b" ") and field[:1].isdigit():
        try:  # fast path: "0000644\0"
            return int(field[:-1], 8)
        except ValueError:
            pass
    if field and field[0] & 0x80:
        # GNU base-256: big-endian two's complement, first byte 0x80 (+) or 0xff (-)
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        elif field[0] != 0x80:
            raise LayerError(f"invalid {what} field in tar header")
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(f"invalid {what} field in tar header") from None


def _parse_pax(data: bytes, into: dict[bytes, bytes]) -> None:
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # NUL padding some writers leave
            break
        sp = data.find(b" ", pos, min(end, pos + 20))
        if sp < 0:
            raise LayerError("invalid PAX header in layer tar")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError("invalid PAX header in layer tar") from None
        stop = pos + length
        if length <= sp - pos + 1 or stop > end or data[stop - 1] != 0x0A:
            raise LayerError("invalid PAX header in layer tar")
        record = data[sp + 1:stop - 1]
        key, eq, value = record.partition(b"=")
        if not eq or not key:
            raise LayerError("invalid PAX header in layer tar")
        into[key] = value
        pos = stop


def _pax_int(value: bytes, what: str) -> int:
    if not value.isdigit() or len(value) > 30:
        raise LayerError(f"invalid PAX {what} in layer tar")
    return int(value)


def _pax_time_ns(value: bytes) -> int:
    sec, _, frac = value.partition(b".")
    neg = sec.startswith(b"-")
    digits = sec[1:] if neg else sec
    if not digits.isdigit() or len(digits) > 20 or (frac and not frac.isdigit()):
        raise LayerError("invalid PAX mtime in layer tar")
    ns = int(digits) * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0"))
    return -ns if neg else ns


def read_entries(rd: HeaderSource) -> Iterator[tuple[TarEntry, int]]:
    """Yield (entry, data size) per tar member; the caller consumes the data."""
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        block = rd.read_header()
        if block is None or block == ZERO_BLOCK:
            return  # end of archive (the rest is drained by the caller)
        if len(block) != BLOCK or not checksum_ok(block):
            raise LayerError("invalid tar header in layer (bad checksum)")
        typeflag = block[156:157]
        size = _parse_number(block[124:136], "size")
        if size < 0:
            raise LayerError("invalid tar header in layer (negative size)")
        padding = -size % BLOCK

        if typeflag in (_PAX_TYPE, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
            limit = _MAX_META_SIZE if typeflag in (_PAX_TYPE, _PAX_GLOBAL) else _MAX_LONGNAME
            if size > limit:
                raise LayerError("layer tar has an oversized extended header")
            data = rd.read_exact(size)
            rd.skip(padding)
            if typeflag == _PAX_TYPE:
                _parse_pax(data, pax)
            elif typeflag == _GNU_LONGNAME:
                long_name = data.split(b"\0", 1)[0]
            elif typeflag == _GNU_LONGLINK:
                long_link = data.split(b"\0", 1)[0]
            # PAX global headers are ignored, as Docker does.
            continue

        e = TarEntry()
        magic = block[257:265]
        name = block[0:100].split(b"\0", 1)[0]
        if magic[:6] == b"ustar\0":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        linkname = block[157:257].split(b"\0", 1)[0]
        if long_link is not None:
            linkname = long_link
        uid = _parse_number(block[108:116], "uid")
        gid = _parse_number(block[116:124], "gid")
        mtime_ns = _parse_number(block[136:148], "mtime") * 1_000_000_000
        if pax:
            for key, value in pax.items():
                if key == b"path":
                    if value:
                        name = value
                elif key == b"linkpath":
                    if value:
                        linkname = value
                elif key == b"size":
                    size = _pax_int(value, "size")
                    padding = -size % BLOCK
                elif key == b"uid":
                    uid = _pax_int(value, "uid")
                elif key == b"gid":
                    gid = _pax_int(value, "gid")
                elif key == b"mtime":
                    mtime_ns = _pax_time_ns(value)
                elif key.startswith(b"SCHILY.xattr."):
                    e.xattrs.append((key[13:], value))
                elif key.startswith(b"GNU.sparse."):
                    raise LayerError(
                        f'layer entry "{show_name(name)}": sparse files are not supported')
            pax = {}
        long_name = long_link = None

        if typeflag == _AREGTYPE and name.endswith(b"/"):
            typeflag = DIRTYPE
        elif typeflag in (_AREGTYPE, _CONTTYPE):
            typeflag = REGTYPE
        if typeflag in _HEADER_ONLY:
            size = padding = 0
        if uid < 0 or gid < 0:
            raise LayerError(f'layer entry "{show_name(name)}": negative uid/gid')
        e.name = name
        e.typeflag = typeflag
        e.mode = _parse_number(block[100:108], "mode") & 0o7777
        e.uid = uid
        e.gid = gid
        e.size = size
        e.mtime_ns = mtime_ns
        e.linkname = linkname
        if typeflag in (CHRTYPE, BLKTYPE):
            e.devmajor = _parse_number(block[329:337], "devmajor")
            e.devminor = _parse_number(block[337:345], "devminor")
            if not (0 <= e.devmajor < 1 << 32 and 0 <= e.devminor < 1 << 32):
                raise LayerError(f'layer entry "{show_name(name)}": invalid device number')
        yield e, size
        # The consumer has read the data (or not): skip what is left + padding.
        rd.skip(padding)


