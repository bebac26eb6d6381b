"""Whiteouts: how a layer says a file was deleted, in a tar and in an overlay upper dir.

In a layer tar (OCI image-spec, as Docker writes it) a deleted ``name`` is an
empty file ``.wh.name`` and an opaque directory (one whose lower contents are
hidden) holds ``.wh..wh..opq``; other ``.wh..wh.`` names are AUFS metadata,
ignored. In an overlay upper dir the same are a 0/0 character device and the
``trusted.overlay.opaque=y`` xattr (``user.overlay.opaque`` for a rootless
store, whose overlay mounts take ``userxattr``). fuse-overlayfs, where a rootless
store uses it, reads all of those, and marks an opaque directory with its own
``user.fuseoverlayfs.opaque`` or, failing xattrs, a ``.wh..wh..opq`` file.
This module converts between the two.
"""

from __future__ import annotations

import os
import stat

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
ROOTLESS_OPAQUE_XATTR = "user.overlay.opaque"
FUSE_OPAQUE_XATTR = "user.fuseoverlayfs.opaque"
# the overlays' own xattrs: never taken from a tar, never written into one (but opaque, as the marker)
OVERLAY_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.", b"user.fuseoverlayfs.")

OPAQUE, META, WHITEOUT = "opaque", "meta", "whiteout"


def is_overlay_whiteout(st: os.stat_result) -> bool:
    """Whether ``st`` is overlayfs's mark of a deleted file (a 0/0 character device)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def tar_name(dir_prefix: bytes, name: bytes) -> bytes:
    """The tar name that deletes ``name`` in the directory ``dir_prefix`` (``a/b/`` or empty)."""
    return dir_prefix + WHITEOUT_PREFIX + name


def classify(leaf: bytes) -> tuple[str | None, bytes]:
    """What a tar entry's last component means: (OPAQUE|META|WHITEOUT, deleted name) or (None, b"")."""
    if not leaf.startswith(WHITEOUT_PREFIX):
        return None, b""
    if leaf == WHITEOUT_OPAQUE:
        return OPAQUE, b""
    if leaf.startswith(WHITEOUT_META_PREFIX):
        return META, b""
    return WHITEOUT, leaf[len(WHITEOUT_PREFIX):]


def make_overlay_whiteout(parent_fd: int, name: bytes) -> None:
    """Mark ``name`` in ``parent_fd`` deleted, as overlayfs does (needs CAP_MKNOD)."""
    os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)


def opaque_xattr() -> str:
    """The xattr overlay reads as "opaque" here: trusted.* as root, user.* in a user namespace."""
    from pybuild.linux import userns

    return ROOTLESS_OPAQUE_XATTR if userns.rootless() else OVERLAY_OPAQUE_XATTR


def fuse_overlay() -> bool:
    """Whether this store's overlays are fuse-overlayfs's (which read more marks than the kernel)."""
    from pybuild.linux import fuseoverlay

    return fuseoverlay.program() is not None


def opaque_xattrs() -> tuple[str, ...]:
    """The xattrs the overlay in use reads as "opaque" in an upper dir (only those: what the container saw)."""
    if fuse_overlay():
        return (OVERLAY_OPAQUE_XATTR, ROOTLESS_OPAQUE_XATTR, FUSE_OPAQUE_XATTR)
    return (opaque_xattr(),)


def mark_opaque(dir_fd: int) -> None:
    """Hide what lower layers hold in this directory (trusted.* needs CAP_SYS_ADMIN; rootless, user.*)."""
    os.setxattr(dir_fd, opaque_xattr(), b"y")
