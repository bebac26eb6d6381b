"""Image commands: import, images, tag, rmi, inspect, history, mount, umount, prune, system, info."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from pybuild.cli import Settings, pass_settings, ui
from pybuild.cli.cmdline import Choice, argument, command, echo, group, option
from pybuild.errors import ConflictError, PybuildError, UsageError
from pybuild.store import reference as _reference
from pybuild.store.images import Image
from pybuild.store.root import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any


@command("import")
@argument("source")
@argument("reference", required=False)
@option("-m", "--message", default="", help="Commit message for the imported layer.")
@option("-c", "--change", "changes", multiple=True,
        help="Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
             "ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR) to the image config.")
@option("--compression", type=Choice(["gzip", "zstd"]), default="gzip", show_default=True)
@pass_settings
def import_cmd(settings: Settings, source: str, reference: str | None, message: str,
               changes: tuple[str, ...], compression: str) -> None:
    """Import a rootfs tarball (plain, gzip, zstd; FILE or - for stdin) as a one-layer image."""
    ref = _reference.parse(reference) if reference else None
    if ref is not None and ref.digest is not None:
        raise UsageError(f"cannot import as {reference}", "name the image with a tag, not a digest")
    config = None
    if changes:
        from pybuild.cli.build import config_from_changes

        config = config_from_changes(changes)
    store = settings.store()
    stream: IO[bytes]
    if source == "-":
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below, stdin is not
        except OSError as exc:
            raise PybuildError(f"cannot open {source}: {exc.strerror}") from None
    with contextlib.closing(stream) if source != "-" else contextlib.nullcontext():
        image = store.import_tar(stream, ref, message=message, changes=config,
                                 compression=compression, source=source)
    echo(image.id)


@command("images")
@argument("repository", required=False)
@option("-a", "--all", "all_", is_flag=True, help="Show all images (pybuild keeps no intermediate ones).")
@option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@option("--digests", is_flag=True, help="Show digests.")
@option("--no-trunc", is_flag=True, help="Don't truncate output.")
@option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
        help="Filter: reference, dangling, label, before, since.")
@option("--format", "fmt", help="Go template (table, json, or {{.ID}} ...).")
@pass_settings
def images_cmd(settings: Settings, repository: str | None, all_: bool, quiet: bool, digests: bool, no_trunc: bool,
               filters: tuple[str, ...], fmt: str | None) -> None:
    """List images."""
    from pybuild.cli import imagelist
    from pybuild.cli.filters import Filters

    store = settings.store()
    rows = imagelist.select(store, repository=repository, filters=Filters(filters, imagelist.IMAGE_FILTERS),
                            trunc=not no_trunc)
    if quiet:
        for image_id in dict.fromkeys(r.ID for r in rows):
            echo(image_id)
        return
    if fmt:
        from pybuild.cli import formatting

        formatting.emit(fmt, rows, imagelist.HEADERS)
        return
    if digests:
        ui.table(("REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"),
                 [(r.Repository, r.Tag, r.Digest, r.ID, r.CreatedSince, r.Size) for r in rows])
    else:
        ui.table(("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
                 [(r.Repository, r.Tag, r.ID, r.CreatedSince, r.Size) for r in rows])


@command("tag")
@argument("source")
@argument("target")
@pass_settings
def tag_cmd(settings: Settings, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    store = settings.store()
    image = store.images.resolve(source)
    ref = _reference.parse(target)
    if ref.digest is not None:
        raise UsageError(f"refusing to create a tag with a digest reference: {target}")
    store.images.tag(ref, image.manifest_digest)


@command("rmi")
@argument("images", nargs=-1, required=True)
@option("-f", "--force", is_flag=True, help="Remove the image even if it has several tags.")
@option("--no-prune", is_flag=True, help="Do not delete unused layers.")
@pass_settings
def rmi_cmd(settings: Settings, images: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    store = settings.store()
    ok = ui.each(images, lambda name: _remove_image(store, name, force))
    if not no_prune:
        store.gc(wait=False)  # frees layers now unless a build is writing; prune finishes it later
    if not ok:
        sys.exit(1)


def _remove_image(store: Store, name: str, force: bool) -> None:
    image = store.images.resolve(name)
    names = store.images.names_of(image.manifest_digest)
    by_id = _reference.is_image_id_prefix(name) and not any(
        str(n) == str(_safe_parse(name)) for n in names)
    if by_id:
        if len(names) > 1 and not force:
            raise ConflictError(f"unable to delete {image.short_id}: image is referenced in multiple repositories",
                                "use -f to remove it with all its tags")
        for n in store.images.drop_refs_to(image.manifest_digest):
            echo(f"Untagged: {_reference.parse(n).familiar()}")
    else:
        ref = _reference.parse(name)
        if ref.key not in store.images.refs() and ref.digest:
            for n in store.images.drop_refs_to(image.manifest_digest):
                echo(f"Untagged: {_reference.parse(n).familiar()}")
        else:
            store.images.untag(ref)
            echo(f"Untagged: {ref.familiar()}")
        if store.images.names_of(image.manifest_digest):
            return
    store.images.forget(image.manifest_digest)
    echo(f"Deleted: {image.id}")


def _safe_parse(name: str) -> _reference.Reference | None:
    try:
        return _reference.parse(name)
    except PybuildError:
        return None


def image_inspect_doc(store: Store, image: Image) -> dict[str, Any]:
    names = store.images.names_of(image.manifest_digest)
    cfg = image.config
    doc: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": [n.familiar() for n in names if n.tag],
        "RepoDigests": [f"{n.familiar_name}@{image.manifest_digest}" for n in names],
        "Manifest": {"digest": image.manifest_digest, "mediaType": image.manifest.media_type},
        "Created": cfg.created,
        "Author": cfg.author or "",
        "Config": cfg.config.to_json(),
        "Architecture": cfg.platform.architecture,
        "Os": cfg.platform.os,
        "Size": image.size,
        "RootFS": {"Type": "layers", "Layers": list(cfg.diff_ids)},
        "History": [h.to_json() for h in cfg.history],
    }
    if cfg.platform.variant:
        doc["Variant"] = cfg.platform.variant
    top = image.top_chain_id
    if top is not None and store.layers.exists(top):
        layer = store.layers.get(top)
        overlay = store.layers.overlay
        lowers = [str((overlay / p).resolve()) for p in store.layers.lowers(layer.cache_id)]
        path = overlay / layer.cache_id
        data = {"MergedDir": str(path / "merged"), "UpperDir": str(path / "diff"), "WorkDir": str(path / "work")}
        if lowers:
            data["LowerDir"] = ":".join(lowers)
        doc["GraphDriver"] = {"Name": "overlay2", "Data": data}
    return doc


@command("inspect")
@argument("names", nargs=-1, required=True)
@option("-f", "--format", "fmt", help="Go template applied to each object ({{.State.Status}}, {{json .Config}}...).")
@option("--type", "kind", help="Only this kind of object: container or image.")
@option("-s", "--size", is_flag=True, help="Accepted for docker compatibility (sizes are always shown).")
@pass_settings
def inspect_cmd(settings: Settings, names: tuple[str, ...], fmt: str | None, kind: str | None, size: bool) -> None:
    """Show low-level information on containers and images as JSON."""
    from pybuild.cli.containers import container_inspect_doc
    from pybuild.errors import ContainerNotFound, NotFoundError
    from pybuild.runtime.lifecycle import Runtime

    if kind not in (None, "container", "image"):
        raise UsageError(f'"{kind}" is not a valid value for --type', "use container or image")
    store = settings.store()
    runtime = Runtime(store)
    docs = []
    missing = []
    for name in names:
        try:
            if kind != "image":
                try:
                    docs.append(container_inspect_doc(runtime, runtime.containers.resolve(name)))
                    continue
                except ContainerNotFound:
                    if kind == "container":
                        raise
            docs.append(image_inspect_doc(store, store.images.resolve(name)))
        except NotFoundError:
            missing.append(name)
    if fmt:
        from pybuild.cli import formatting

        formatting.inspect(fmt, docs)
    else:
        ui.print_json(docs)
    if missing:  # as docker: what was found is printed, then each missing name is an error (exit 1)
        for name in missing[:-1]:
            echo(f"pybuild: error: No such {kind or 'object'}: {name}", err=True)
        raise NotFoundError(f"No such {kind or 'object'}: {missing[-1]}")


@command("history")
@argument("name")
@option("--no-trunc", is_flag=True)
@option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@option("-H", "--human", is_flag=True, default=True, help="Sizes and dates in human readable format (default true).")
@option("--format", "fmt", help="Go template (table, json, or {{.ID}} ...).")
@pass_settings
def history_cmd(settings: Settings, name: str, no_trunc: bool, quiet: bool, human: bool, fmt: str | None) -> None:
    """Show the history of an image."""
    from pybuild.cli.pslist import go_time

    store = settings.store()
    image = store.images.resolve(name)
    layer_sizes = [_layer_size(store, c) for c in image.chain_ids]
    rows = []
    layer_index = len(layer_sizes) - 1
    entries = list(image.config.history)
    for pos, entry in enumerate(reversed(entries)):
        size = 0
        if not entry.empty_layer and layer_index >= 0:
            size = layer_sizes[layer_index]
            layer_index -= 1
        ident = (image.id if no_trunc else image.short_id) if pos == 0 else "<missing>"
        created_by = entry.created_by or ""
        if not no_trunc:
            created_by = ui.truncate(created_by, 45)
        rows.append({"ID": ident, "CreatedSince": ui.ago(entry.created) if human else (entry.created or ""),
                     "CreatedAt": go_time(entry.created or "") if human else (entry.created or ""),
                     "CreatedBy": created_by, "Size": ui.human_size(size) if human else str(size),
                     "Comment": entry.comment or ""})
    if quiet:
        for row in rows:
            echo(row["ID"])
        return
    if fmt:
        from pybuild.cli import formatting

        formatting.emit(fmt, rows, {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                                    "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"})
        return
    ui.table(("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"),
             [(r["ID"], r["CreatedSince"], r["CreatedBy"], r["Size"], r["Comment"]) for r in rows])


def _layer_size(store: Store, chain_id: str) -> int:
    try:
        return int(store.layers.get(chain_id).size)
    except PybuildError:
        return 0


@command("mount")
@argument("name")
@pass_settings
def mount_cmd(settings: Settings, name: str) -> None:
    """Mount an image's root filesystem read-only and print the path."""
    store = settings.store()
    image = store.images.resolve(name)
    top = image.top_chain_id
    if top is None:
        raise UsageError(f"image {name} has no layers to mount")
    echo(str(store.layers.mount_view(top)))


@command("umount")
@argument("name")
@pass_settings
def umount_cmd(settings: Settings, name: str) -> None:
    """Unmount an image mounted with 'pybuild mount'."""
    store = settings.store()
    image = store.images.resolve(name)
    top = image.top_chain_id
    if top is None or not store.layers.unmount_view(top):
        raise UsageError(f"image {name} is not mounted")


@command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Also remove untagged images.")
@option("-f", "--force", is_flag=True, help="Do not prompt (accepted for docker compatibility).")
@pass_settings
def prune_cmd(settings: Settings, all_: bool, force: bool) -> None:
    """Remove leftovers of interrupted operations and unused layers and blobs."""
    store = settings.store()
    if all_:
        tagged = set(store.images.refs().values())
        for image in list(store.images.walk()):
            if image.manifest_digest not in tagged:
                store.images.forget(image.manifest_digest)
                echo(f"Deleted Images: {image.id}")
    from pybuild.runtime.lifecycle import Runtime

    # Before the GC (which waits for running builds): cgroups of killed builds.
    cgroup_leftovers = remove_build_cgroups(abandoned_build_cgroups(store))
    # Containers first: dead --rm containers, ownerless network endpoints, leases without a container.
    runtime_leftovers = Runtime(store).prune_containers()
    report = store.gc(wait=True)
    assert report is not None
    echo(f"Deleted: {report.layers} layers, {report.blobs} blobs, "
         f"{report.dirs + report.leftovers + runtime_leftovers + cgroup_leftovers} leftovers")
    echo(f"Total reclaimed space: {ui.human_size(report.bytes_freed)}")


def abandoned_build_cgroups(store: Store) -> list[str]:
    """RUN cgroups (``pybuild/build-<store tag>-<snapshot>``) of this store's killed builds.

    A RUN's cgroup lives while its build owns the step's snapshot (a locked
    owner file, made before the cgroup and released after it is removed):
    one whose snapshot nobody owns any more is abandoned. Containers' cgroups
    and other stores' builds never match.
    """
    from pybuild.builder.runstep import build_cgroup_prefix
    from pybuild.runtime import cgroups

    prefix = build_cgroup_prefix(store.root)
    return [name for name in cgroups.children("pybuild", prefix)
            if not store.snapshot_in_progress(name.rpartition("/")[2][len(prefix):])]


def remove_build_cgroups(names: list[str]) -> int:
    """Remove abandoned cgroups in every hierarchy (killing what is left in them); returns how many went."""
    from pybuild.runtime import cgroups

    removed = 0
    for name in names:
        try:
            cgroups.remove_everywhere(name)
            removed += 1
        except PybuildError as exc:
            echo(f"[Warning] cannot remove cgroup {name}: {exc}", err=True)
    return removed


@group("system")
def system_group() -> None:
    """Manage the store."""


system_group.add_lazy("prune", "pybuild.cli.prune:system_prune_cmd")
system_group.add_lazy("events", "pybuild.cli.events:events_cmd")


@system_group.command("reset")
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_settings
def system_reset_cmd(settings: Settings, force: bool) -> None:
    """Remove every container, image, volume, network and cache of the store, and the store (podman's)."""
    root = settings.root
    if not force and not ui.confirm(
            "WARNING! This will remove:\n"
            "        - all containers\n"
            "        - all images\n"
            "        - all networks\n"
            "        - all build cache\n"
            "        - all volumes\n"
            f"        - the store directory: \"{root}\""):
        return
    from pybuild.builder.runstep import build_cgroup_prefix
    from pybuild.runtime.reset import reset_store

    store = settings.store()
    problems = reset_store(store, build_cgroup_prefix(store.root))
    if problems:
        raise PybuildError(f"store {store.root} not removed: {problems[0]}"
                           + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                           "run pybuild system reset again once that is fixed")


@system_group.command("df")
@pass_settings
def system_df_cmd(settings: Settings) -> None:
    """Show disk usage of the store."""
    store = settings.store()
    usage = store.disk_usage()
    rows = []
    for kind, (count, size, reclaimable) in usage.items():
        pct = f" ({100 * reclaimable // size}%)" if size else ""
        rows.append((kind, str(count), ui.human_size(size), ui.human_size(reclaimable) + pct))
    ui.table(("TYPE", "TOTAL", "SIZE", "RECLAIMABLE"), rows)


@system_group.command("check")
@option("--repair", is_flag=True, help="Fix what can be fixed.")
@pass_settings
def system_check_cmd(settings: Settings, repair: bool) -> None:
    """Check the store for inconsistencies (missing links, blobs, layers, leftovers)."""

    # opened without the usual cleanup of what killed processes left, so that it is reported
    store = settings.store(clean=False)
    report = store.check(repair=repair)
    for name in abandoned_build_cgroups(store):
        report.add(f"cgroup of a killed build: {name}", repair and remove_build_cgroups([name]) == 1)
    for problem in report.problems:
        echo(("repaired: " if problem.repaired else "problem: ") + problem.what)
    if report.ok:
        echo("store is consistent" if not report.problems else "store repaired")
        return
    raise PybuildError(f"{sum(not p.repaired for p in report.problems)} problem(s) found",
                       None if repair else "run 'pybuild system check --repair'")


def info_doc(settings: Settings) -> dict[str, Any]:
    """``docker info``'s data, under docker's JSON names (``info --format '{{json .}}'``), for what pybuild has
    (no daemon: the "server" is this store and host); pybuild's rootless details under ``Rootless``."""
    import platform

    from pybuild import __version__
    from pybuild.linux import fuseoverlay, userns
    from pybuild.runtime import cgroups
    from pybuild.runtime.lifecycle import Runtime

    store = settings.store()
    runtime = Runtime(store)
    states = [runtime.refresh(c) for c in runtime.containers.walk()]
    running = sum(s.status == "running" for s in states)
    paused = sum(s.status == "paused" for s in states)
    rootless = userns.rootless()
    mount_program = fuseoverlay.program()
    try:
        cgroup_version = cgroups.version().lstrip("v")
    except PybuildError:
        cgroup_version = "none"
    driver_status = [["Backing Filesystem", _backing_filesystem(store.root)], ["Supports d_type", "true"],
                     ["Using metacopy", "false"], ["Native Overlay Diff", "false" if mount_program else "true"],
                     ["userxattr", "true" if rootless and not mount_program else "false"]]
    if mount_program:
        driver_status.append(["Mount Program", mount_program])
    doc: dict[str, Any] = {
        "Containers": len(states), "ContainersRunning": running, "ContainersPaused": paused,
        "ContainersStopped": len(states) - running - paused, "Images": len(list(store.images.walk())),
        "Driver": "overlay2", "DriverStatus": driver_status,
        "CgroupDriver": "none" if rootless else "cgroupfs", "CgroupVersion": cgroup_version,
        "SecurityOptions": ["name=seccomp,profile=builtin", *(["name=rootless"] if rootless else [])],
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(), "OSType": "linux",
        "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1,
        "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "Name": platform.node(), "DockerRootDir": str(store.root), "ServerVersion": __version__,
        "ClientInfo": {"Version": __version__},
        "Rootless": None,
    }
    if rootless:
        uids = userns.read_map(Path("/proc/self/uid_map"))
        gids = userns.read_map(Path("/proc/self/gid_map"))
        doc["Rootless"] = {
            "UIDMap": ", ".join(f"{r.inside}:{r.outside}:{r.size}" for r in uids),
            "GIDMap": ", ".join(f"{r.inside}:{r.outside}:{r.size}" for r in gids),
            "Network": "slirp4netns",
            "Overlay": "fuse-overlayfs" if mount_program else "native overlayfs (userxattr)"}
    return doc


def _info_lines(doc: dict[str, Any]) -> list[str]:
    """``docker info``'s text from :func:`info_doc`."""
    lines = [
        "Client:",
        f" Version:    {doc['ClientInfo']['Version']}",
        "",
        "Server:",
        f" Containers: {doc['Containers']}",
        f"  Running: {doc['ContainersRunning']}",
        f"  Paused: {doc['ContainersPaused']}",
        f"  Stopped: {doc['ContainersStopped']}",
        f" Images: {doc['Images']}",
        f" Server Version: {doc['ServerVersion']}",
        f" Storage Driver: {doc['Driver']}",
        *(f"  {key}: {value}" for key, value in doc["DriverStatus"]),
        f" Cgroup Driver: {doc['CgroupDriver']}",
        f" Cgroup Version: {doc['CgroupVersion']}",
        " Security Options:",
        "  seccomp",
        "   Profile: builtin",
        *(["  rootless"] if doc["Rootless"] else []),
        f" Kernel Version: {doc['KernelVersion']}",
        f" Operating System: {doc['OperatingSystem']}",
        f" OSType: {doc['OSType']}",
        f" Architecture: {doc['Architecture']}",
        f" CPUs: {doc['NCPU']}",
        f" Total Memory: {ui.binary_size(doc['MemTotal'])}",
        f" Name: {doc['Name']}",
        f" Docker Root Dir: {doc['DockerRootDir']}",
        f" Rootless: {'true' if doc['Rootless'] else 'false'}",
    ]
    if doc["Rootless"]:
        extra = doc["Rootless"]
        lines += [f"  UID Map: {extra['UIDMap']}", f"  GID Map: {extra['GIDMap']}",
                  f"  Network: {extra['Network']}", f"  Overlay: {extra['Overlay']}"]
    return lines


def _backing_filesystem(root: Path) -> str:
    names = {0xEF53: "extfs", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs"}
    from pybuild.store.root import _statfs_type

    kind = _statfs_type(root)
    return names.get(kind, hex(kind))


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    except OSError:
        pass
    return "unknown"


@command("info")
@option("-f", "--format", "fmt", help="Go template ({{.Driver}}, {{json .}}...).")
@pass_settings
def info_cmd(settings: Settings, fmt: str | None) -> None:
    """Display system-wide information: the store, the host, rootless or not."""
    _show_info(settings, fmt)


@system_group.command("info")
@option("-f", "--format", "fmt", help="Go template ({{.Driver}}, {{json .}}...).")
@pass_settings
def system_info_cmd(settings: Settings, fmt: str | None) -> None:
    """Display system-wide information (as 'pybuild info')."""
    _show_info(settings, fmt)


def _show_info(settings: Settings, fmt: str | None) -> None:
    doc = info_doc(settings)
    if fmt:
        from pybuild.cli import formatting

        formatting.inspect(fmt, [doc])
        return
    for line in _info_lines(doc):
        echo(line)
