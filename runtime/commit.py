"""``pybuild commit``: a container's changes (its read-write layer) become a new image on top of its own."""

from __future__ import annotations

import contextlib

from pybuild import records
from pybuild.errors import PybuildError
from pybuild.store.images import now_iso
from pybuild.store.model import ContainerConfig as ImageRunConfig

from . import cgroups
from .containers import RUNNING

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pybuild.store import reference as _reference
    from pybuild.store.images import Image

    from .containers import ContainerConfig
    from .lifecycle import Runtime


def commit_container(runtime: Runtime, config: ContainerConfig, ref: _reference.Reference | None, *,
                     message: str = "", author: str = "", changes: ImageRunConfig | None = None,
                     pause: bool = True) -> Image:
    """The container's upper dir as a layer on its image; its run settings (and ``changes``) as the config.

    A running container is frozen meanwhile unless ``pause`` is false, as ``docker commit`` does.
    """
    from pybuild.store.compression import Compression
    from pybuild.store.layertar import write_layer
    from pybuild.store.model import OCI_LAYER_GZIP, Descriptor, HistoryEntry

    store = runtime.store
    state = runtime.refresh(config)
    base = store.images.get(config.manifest)
    rw = store.layers.get_rw(config.id)
    frozen = False
    if pause and state.status == RUNNING:
        with contextlib.suppress(PybuildError):
            cgroups.open_existing(config.cgroup_name).freeze()
            frozen = True
    try:
        with store.writing():
            with store.blobs.writer() as w:
                blob = write_layer(store.layers.overlay / rw.mount_id / "diff", w,  # type: ignore[arg-type]
                                   Compression.GZIP, live=state.status == RUNNING and not frozen,
                                   below=(store.layers.overlay, store.layers.lowers(rw.mount_id)))
                digest = w.commit()
            with store.blobs.open(digest) as f:
                layer = store.layers.register(f, base.top_chain_id, expected_diff_id=blob.diff_id)
            run_cfg = records.replace(base.config.config, env=config.env, cmd=config.cmd,
                                      entrypoint=config.entrypoint, working_dir=config.cwd, user=config.user)
            if changes is not None:
                run_cfg = _overlay_config(run_cfg, changes)
            created = now_iso()
            history = HistoryEntry(created=created, created_by=" ".join(config.args), comment=message,
                                   author=author or None)
            new_config = records.replace(base.config, config=run_cfg, created=created,
                                         author=author or base.config.author).with_layer(layer.diff_id, history)
            descs = [*base.manifest.layers, Descriptor(OCI_LAYER_GZIP, digest, blob.size)]
            image = store.images.create(new_config, descs)
            if ref is not None:
                store.images.tag(ref, image.manifest_digest)
            return image
    finally:
        if frozen:
            with contextlib.suppress(PybuildError):
                cgroups.open_existing(config.cgroup_name).thaw()


def _overlay_config(base: ImageRunConfig, changes: ImageRunConfig) -> ImageRunConfig:
    """``base`` with every field that ``changes`` sets (differs from the default)."""
    updates = {}
    default = ImageRunConfig()
    for f in records.fields(ImageRunConfig):
        value = getattr(changes, f.name)
        if value != getattr(default, f.name):
            updates[f.name] = value
    return records.replace(base, **updates)
