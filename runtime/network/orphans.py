"""Host network resources of stores that are gone.

Every bridge a store makes carries its owner as an interface alias
(``pybuild:<root>``, see :mod:`netlink`), and its NAT rules live in an
nftables table named after the root (:func:`nft.table_name`). A store thrown
away with ``rm -rf`` (CI's ``--root $(mktemp -d)``) takes neither with it,
and each leftover bridge holds a /24 of the pool. Every root command looks
for them (a directory listing and a small read per link in sysfs: no
netlink socket, no pyroute2 import, a few hundred microseconds) and removes
the ones whose root holds no store any more.

An alias that had to be hashed (a root path over 192 bytes) cannot name its
root, and such a bridge is left alone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pybuild.errors import PybuildError

SYSFS_NET = Path("/sys/class/net")
_TAG = "pybuild:"


def vanished_store_links(sysfs: Path = SYSFS_NET) -> list[tuple[str, Path]]:
    """(link name, store root) of pybuild bridges whose store root holds no store."""
    found = []
    try:
        names = os.listdir(sysfs)
    except OSError:
        return []
    for name in names:
        try:
            with open(sysfs / name / "ifalias", "rb") as f:
                alias = f.read(4096).decode(errors="replace").strip()
        except OSError:
            continue
        if not alias.startswith(_TAG + "/"):
            continue
        root = Path(alias[len(_TAG):])
        try:
            os.stat(root / "version")
        except (FileNotFoundError, NotADirectoryError):
            found.append((name, root))
        except OSError:
            continue  # unreadable (another user's, a dangling mount): not known to be gone

    return sorted(found)


def remove_vanished_store_links(sysfs: Path = SYSFS_NET) -> list[str]:
    """Delete the bridges and nftables tables of stores that are gone; what was removed, for a report.

    Only as root (an ordinary user can change neither); a failure is left
    for the next command, never raised: this is housekeeping of another store.
    """
    if os.geteuid() != 0:
        return []
    found = vanished_store_links(sysfs)
    if not found:
        return []
    from . import nft
    from .netlink import Netlink, owner_tag

    removed = []
    with contextlib.suppress(PybuildError), Netlink() as nl:
        for name, root in found:
            with contextlib.suppress(PybuildError):
                if nl.delete_owned(name, owner_tag(root)):
                    removed.append(f"bridge {name} of {root}")
    for root in sorted({root for _, root in found}):
        table = nft.table_name(root)
        with contextlib.suppress(PybuildError):
            nft.apply(nft.render(table, [], []))  # makes and deletes it: gone either way
            removed.append(f"nft table ip {table}")
    return removed
