"""``pybuild system reset``: a store torn down completely, as ``podman system reset`` does.

Everything the store made outside its directory goes first, then the
directory: its containers (killed, with their cgroups, network endpoints and
published ports), its bridges and nftables table, its build cgroups, every
mount below the root (``pybuild mount`` views), and last the tree itself,
walked through descriptors whatever its depth.
"""

from __future__ import annotations

import contextlib
import os

from pybuild.errors import PybuildError
from pybuild.linux import mount as _mount
from pybuild.linux.fsutil import remove_tree

from . import cgroups

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.store.root import Store


def reset_store(store: Store, build_cgroup_prefix: str) -> list[str]:
    """Remove everything of ``store``; returns what could not be removed (empty: all went).

    ``build_cgroup_prefix``: the names of this store's RUN cgroups (the
    builder's, passed in so the runtime does not reach up into the builder).
    """
    from .lifecycle import Runtime

    problems: list[str] = []
    runtime = Runtime(store)
    for config in list(runtime.containers.walk()):
        try:
            runtime.remove(config.id, force=True, volumes=True)
        except PybuildError as exc:
            problems.append(f"container {config.name}: {exc}")
    if (store.root / "network").exists():
        try:
            runtime.networks.reclaim(set())  # with no container left: every bridge and the table
        except PybuildError as exc:
            problems.append(f"network: {exc}")
    for name in cgroups.children("pybuild", build_cgroup_prefix):
        try:
            cgroups.remove_everywhere(name)
        except PybuildError as exc:
            problems.append(f"cgroup {name}: {exc}")
    for target in _mount.mounts_under(store.root):
        try:
            _mount.umount(target, _mount.MNT_DETACH)
        except PybuildError as exc:
            problems.append(f"mount {target}: {exc}")
    if problems:
        return problems  # the tree stays: it is how the next reset finds what is left
    try:
        remove_tree(store.root)
    except OSError as exc:
        problems.append(f"{store.root}: {exc.strerror or exc}")
    with contextlib.suppress(OSError):
        os.rmdir(store.root)
    return problems
