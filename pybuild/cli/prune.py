"""docker's prune family: ``container``, ``image``, ``volume``, ``network``, ``builder`` and ``system prune``.

Each asks docker's ``[y/N]`` question unless ``-f`` is given, lists what it
removed under docker's headings and ends with ``Total reclaimed space:``
(docker's 4-digit human size); ``network prune`` has no space to report.
"""

from __future__ import annotations

import sys

from pybuild.cli import Settings, pass_settings, ui
from pybuild.cli.cmdline import command, echo, group, option
from pybuild.cli.filters import Filters
from pybuild.errors import PybuildError, UsageError
from pybuild.linux.fsutil import tree_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.runtime.lifecycle import Runtime
    from pybuild.store.root import Store

PRUNE_FILTERS = ("until", "label")


def _runtime(settings: Settings) -> Runtime:
    from pybuild.runtime.lifecycle import Runtime

    return Runtime(settings.store())


def _until(filters: Filters) -> str | None:
    """``until=`` as the time text records are stamped with (they compare as text)."""
    values = filters.values("until")
    if not values:
        return None
    from pybuild.runtime.logs import log_time

    return log_time(values[-1])


def prune_containers(rt: Runtime, filters: Filters) -> tuple[list[str], int]:
    """Remove stopped containers (``until``/``label`` filters); their ids and the bytes their layers held."""
    until = _until(filters)
    removed, freed = [], 0
    for config in list(rt.containers.walk()):
        state = rt.refresh(config)
        if state.running or (until is not None and config.created >= until) or not filters.labels(config.labels):
            continue
        try:
            rw = rt.store.layers.get_rw(config.id)
            size = tree_size(rt.store.layers.overlay / rw.mount_id / "diff")
        except PybuildError:
            size = 0
        try:
            rt.remove(config.id)
        except PybuildError as exc:
            echo(f"[Warning] cannot remove container {config.name}: {exc}", err=True)
            continue
        removed.append(config.id)
        freed += size
    return removed, freed


def prune_images(store: Store, in_use: set[str], all_: bool, filters: Filters) -> tuple[list[str], int]:
    """Forget dangling images (with ``all_``: every image no container uses), then free what only they held.

    Returns docker's ``untagged:``/``deleted:`` lines and the bytes freed.
    """
    until = _until(filters)
    refs = store.images.refs()
    tagged: dict[str, list[str]] = {}
    for key, target in refs.items():
        tagged.setdefault(target, []).append(key)
    lines = []
    for image in list(store.images.walk()):
        names = tagged.get(image.manifest_digest, [])
        if image.manifest_digest in in_use or (names and not all_):
            continue
        if until is not None and (image.config.created or "") >= until:
            continue
        if not filters.labels(image.config.config.labels):
            continue
        from pybuild.store import reference as _reference

        for key in sorted(store.images.drop_refs_to(image.manifest_digest)):
            lines.append(f"untagged: {_reference.parse(key).familiar()}")
        store.images.forget(image.manifest_digest)
        lines.append(f"deleted: {image.id}")
    report = store.gc()
    return lines, report.bytes_freed if report else 0


def prune_volumes(rt: Runtime, all_: bool, filters: Filters) -> tuple[list[str], int]:
    """Remove anonymous volumes no container uses (with ``all_``: named ones too), as docker 23+ does."""
    used = {m.source for c in rt.containers.walk() for m in c.mounts if m.kind == "volume"}
    removed, freed = [], 0
    for volume in list(rt.volumes.walk()):
        if volume.name in used or not (all_ or volume.anonymous) or not filters.labels({}):
            continue
        size = tree_size(volume.mountpoint)
        try:
            rt.volumes.remove(volume.name)
        except (PybuildError, OSError) as exc:
            echo(f"[Warning] cannot remove volume {volume.name}: {exc}", err=True)
            continue
        removed.append(volume.name)
        freed += size
    return removed, freed


def prune_networks(rt: Runtime, filters: Filters) -> list[str]:
    """Remove user-defined networks no container is configured on."""
    until = _until(filters)
    used = {c.network for c in rt.containers.walk()}
    removed = []
    for net in rt.networks.list_networks():
        if net.builtin or net.name in used or (until is not None and net.created >= until):
            continue
        if not filters.labels({}):
            continue
        try:
            rt.networks.remove_network(net.name, [])
        except PybuildError as exc:
            echo(f"[Warning] cannot remove network {net.name}: {exc}", err=True)
            continue
        removed.append(net.name)
    return removed


def clear_build_cache(store: Store, older: int | None) -> tuple[int, int]:
    """Remove build cache records (all, or those unused for ``older`` seconds; all: the cache mounts and
    the checksum memo too) and free what only they held; (records removed, bytes really freed)."""
    from pybuild.builder.checksum import ChecksumCache
    from pybuild.cli.images import abandoned_build_cgroups, remove_build_cgroups
    from pybuild.linux.fsutil import remove_tree

    remove_build_cgroups(abandoned_build_cgroups(store))  # RUN cgroups of killed builds
    mounts_freed = 0
    with store.writing():
        removed = store.build_cache.prune(older)
        if older is None:
            mounts = store.build_cache.root / "mounts"
            mounts_freed = tree_size(mounts)
            remove_tree(mounts)  # what RUN steps wrote: any depth
            with ChecksumCache.for_store(store.root) as memo:
                memo.prune(keep=0)
    report = store.gc()
    return removed, mounts_freed + (report.bytes_freed if report else 0)


def _report(heading: str, names: list[str]) -> None:
    if names:
        echo(heading)
        for name in names:
            echo(name)
        echo("")


def _total(freed: int) -> None:
    echo(f"Total reclaimed space: {ui.human_size(freed, precision=4)}")


def _confirmed(force: bool, warning: str) -> bool:
    return force or ui.confirm(warning)


@command("prune")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Filter: until, label.")
@pass_settings
def container_prune_cmd(settings: Settings, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers."""
    wanted = Filters(filters, PRUNE_FILTERS)
    if not _confirmed(force, "WARNING! This will remove all stopped containers."):
        return
    removed, freed = prune_containers(_runtime(settings), wanted)
    _report("Deleted Containers:", removed)
    _total(freed)


@command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Filter: until, label.")
@pass_settings
def image_prune_cmd(settings: Settings, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused images."""
    wanted = Filters(filters, PRUNE_FILTERS)
    warning = ("WARNING! This will remove all images without at least one container associated to them."
               if all_ else "WARNING! This will remove all dangling images.")
    if not _confirmed(force, warning):
        return
    rt = _runtime(settings)
    lines, freed = prune_images(rt.store, rt.images_in_use(), all_, wanted)
    _report("Deleted Images:", lines)
    _total(freed)


@command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just anonymous ones.")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Filter: label.")
@pass_settings
def volume_prune_cmd(settings: Settings, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused local volumes (anonymous ones unless -a)."""
    wanted = Filters(filters, ("label",))
    warning = ("WARNING! This will remove all local volumes not used by at least one container." if all_
               else "WARNING! This will remove anonymous local volumes not used by at least one container.")
    if not _confirmed(force, warning):
        return
    removed, freed = prune_volumes(_runtime(settings), all_, wanted)
    _report("Deleted Volumes:", removed)
    _total(freed)


@command("prune")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Filter: until, label.")
@pass_settings
def network_prune_cmd(settings: Settings, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused networks."""
    wanted = Filters(filters, PRUNE_FILTERS)
    if not _confirmed(force, "WARNING! This will remove all custom networks not used by at least one container."):
        return
    _report("Deleted Networks:", prune_networks(_runtime(settings), wanted))


@command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@option("--volumes", is_flag=True, help="Prune anonymous volumes too.")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Filter: until, label.")
@pass_settings
def system_prune_cmd(settings: Settings, all_: bool, volumes: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused data: stopped containers, unused networks, dangling (-a: unused) images, build cache."""
    wanted = Filters(filters, PRUNE_FILTERS)
    items = ["all stopped containers", "all networks not used by at least one container"]
    if volumes:
        items.append("all anonymous volumes not used by at least one container")
    items += (["all images without at least one container associated to them", "all build cache"] if all_
              else ["all dangling images"])
    warning = "WARNING! This will remove:\n" + "".join(f"  - {item}\n" for item in items)
    if not _confirmed(force, warning):
        return
    rt = _runtime(settings)
    containers, freed = prune_containers(rt, wanted)
    _report("Deleted Containers:", containers)
    _report("Deleted Networks:", prune_networks(rt, wanted))
    if volumes:
        names, size = prune_volumes(rt, False, wanted)
        _report("Deleted Volumes:", names)
        freed += size
    lines, size = prune_images(rt.store, rt.images_in_use(), all_, wanted)
    _report("Deleted Images:", lines)
    freed += size
    if all_:
        records, size = clear_build_cache(rt.store, None)
        if records:
            echo(f"Deleted build cache objects: {records}")
            echo("")
        freed += size
    _total(freed)
    sys.stdout.flush()


@group("builder")
def builder_group() -> None:
    """Manage the build cache."""


def _build_cache_age(filters: Filters, keep: str | None) -> int | None:
    """Seconds of use that keep a record (``--filter until=``, or pybuild's older ``--keep-duration``)."""
    import time

    from pybuild.runtime.logs import log_time

    if keep is not None:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        if not keep or keep[-1] not in units or not keep[:-1].isdigit():
            raise UsageError(f"invalid duration {keep!r}", "use a number with s, m, h or d: 24h")
        return int(keep[:-1]) * units[keep[-1]]
    values = filters.values("until")
    if not values:
        return None
    when = ui.parse_time(log_time(values[-1]))
    assert when is not None
    return max(0, int(time.time() - when.timestamp()))


@builder_group.command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Remove all build cache (pybuild keeps no other kind).")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
        help="Filter: until=DURATION|TIME (keep records used since).")
@option("--keep-duration", "keep", default=None, help="Keep records used within this duration (e.g. 24h, 7d).")
@pass_settings
def builder_prune_cmd(settings: Settings, all_: bool, force: bool, filters: tuple[str, ...],
                      keep: str | None) -> None:
    """Remove the build cache (step records, cache mounts, checksum memo) and free what only it used."""
    wanted = Filters(filters, ("until",))
    older = _build_cache_age(wanted, keep)
    if not _confirmed(force, "WARNING! This will remove all build cache." if all_ or older is None
                      else "WARNING! This will remove build cache not used recently."):
        return
    removed, freed = clear_build_cache(settings.store(), older)
    echo(f"Deleted build cache objects: {removed}")
    _total(freed)
