"""Resolving ``-u``/``USER`` against the container's own /etc/passwd and /etc/group.

The files are read as bounded text (never through NSS, pwd or grp: those
would consult the host) and interpreted like runc's ``user.GetExecUser``:

* ``""`` is uid 0, looked up so that root's home directory is found;
* ``name`` or ``uid`` selects the first passwd entry with that name or uid; a
  numeric uid with no entry is allowed (gid 0, home ``/``), an unknown name is
  an error;
* ``user:group`` takes the gid from the group file by name (or by gid when
  numeric); a numeric gid with no entry is allowed;
* without an explicit group, the supplementary groups are the gids of every
  group that lists the user's name as a member.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from pybuild.errors import ContainerError
from pybuild.records import record

from .rootfs import secure_join
from .spec import User

MAX_FILE_SIZE = 1 << 20
MAX_ID = 2**31 - 1
_NUMERIC = re.compile(r"[+-]?[0-9]+")


class UserNotFound(ContainerError):
    """The user or group named in ``-u``/USER does not exist in the container."""

    exit_code = 125  # the container did not start, as ``docker run`` reports it


@record(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@record(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@record(frozen=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str
    name: str = ""

    @property
    def user(self) -> User:
        return User(self.uid, self.gid, self.additional_gids)


def _lines(text: str) -> list[list[str]]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line.split(":"))
    return out


def _int_field(value: str) -> int | None:
    value = value.strip()
    if not value.isdigit():
        return None
    return int(value)


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for fields in _lines(text):
        fields += [""] * (7 - len(fields))
        uid, gid = _int_field(fields[2]), _int_field(fields[3])
        if uid is None:
            continue  # runc would read a malformed uid as 0: never make a broken line root
        entries.append(PasswdEntry(fields[0], uid, gid if gid is not None else 0, fields[5]))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for fields in _lines(text):
        fields += [""] * (4 - len(fields))
        gid = _int_field(fields[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip())
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def read_bounded(path: str, limit: int = MAX_FILE_SIZE) -> str | None:
    """A small regular file's text; None when it does not exist.

    Opened non-blocking and checked to be a regular file first, so a FIFO or
    a device planted at /etc/passwd cannot hang or flood the runtime.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise ContainerError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContainerError(f"cannot read {path}: not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ContainerError(f"cannot read {path}: larger than {limit} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _numeric(value: str, what: str) -> int | None:
    if not _NUMERIC.fullmatch(value):
        return None
    number = int(value)
    if not 0 <= number <= MAX_ID:
        raise ContainerError(f"invalid {what} {value!r}: uids and gids must be in range 0-{MAX_ID}")
    return number


def resolve(spec: str, passwd: str | None, group: str | None, extra_groups: tuple[str, ...] = ()) -> ExecUser:
    """Interpret ``spec`` against the text of passwd and group files (None: the file is missing).

    ``extra_groups`` (``--group-add``) are group names or gids added to the
    supplementary groups; a name must exist in the group file.
    """
    user_arg, _, group_arg = spec.strip().partition(":")
    if not user_arg:
        user_arg = "0"
    users = parse_passwd(passwd) if passwd is not None else []
    groups = parse_group(group) if group is not None else []

    uid_num = _numeric(user_arg, "user")
    match = next((u for u in users if u.name == user_arg or (uid_num is not None and u.uid == uid_num)), None)
    if match is not None:
        uid, gid, home, name = match.uid, match.gid, match.home or "/", match.name
    elif uid_num is not None:
        uid, gid, home, name = uid_num, 0, "/", ""
    else:
        raise UserNotFound(f"unable to find user {user_arg}: no matching entries in passwd file")

    sgids: tuple[int, ...] = ()
    if group_arg:
        gid_num = _numeric(group_arg, "group")
        if gid_num is not None:
            found = next((g for g in groups if g.gid == gid_num), None)
        else:
            found = next((g for g in groups if g.name == group_arg), None)
        if found is not None:
            gid = found.gid
        elif gid_num is not None:
            gid = gid_num
        else:
            raise UserNotFound(f"unable to find group {group_arg}: no matching entries in group file")
    elif name:
        sgids = tuple(g.gid for g in groups if name in g.members)
    for extra in extra_groups:
        gid_num = _numeric(extra, "group")
        if gid_num is None:
            found = next((g for g in groups if g.name == extra), None)
            if found is None:
                raise UserNotFound(f"unable to find group {extra}: no matching entries in group file")
            gid_num = found.gid
        if gid_num not in sgids:
            sgids += (gid_num,)
    return ExecUser(uid, gid, sgids, home, name)


def lookup(spec: str, root: str = "/", groups: tuple[str, ...] = ()) -> ExecUser:
    """Resolve ``spec`` against ``root``/etc/passwd and ``root``/etc/group.

    In the container (after pivot_root) ``root`` is ``/`` and the lookup is
    confined by construction; from the host, paths are resolved under
    ``root`` without following symlinks out of it.
    """
    if root in ("", "/"):
        passwd_path, group_path = "/etc/passwd", "/etc/group"
    else:
        passwd_path, group_path = secure_join(root, "/etc/passwd"), secure_join(root, "/etc/group")
    return resolve(spec, read_bounded(passwd_path), read_bounded(group_path), groups)


def home_env(env: tuple[str, ...], home: str) -> tuple[str, ...]:
    """``env`` with ``HOME=<home>`` added when it sets no HOME (as runc does)."""
    if any(e.startswith("HOME=") for e in env):
        return env
    return (*env, f"HOME={home}")
