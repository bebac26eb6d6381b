"""``pybuild export``: a container's filesystem as a tar, live while it runs."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from .containers import ContainerConfig
    from .lifecycle import Runtime


def export_container(runtime: Runtime, config: ContainerConfig, out: BinaryIO) -> None:
    """Write the container's root filesystem to ``out``: seen from inside it while it runs, else its layers."""
    from .privatemount import export_rootfs

    state = runtime.refresh(config)
    layers = runtime.store.layers
    rw = layers.get_rw(config.id)
    if state.has_process:
        export_rootfs(out, running_pid=state.pid)
    else:
        lowers = [f"{rw.mount_id}/diff", *layers.lowers(rw.mount_id)]
        export_rootfs(out, overlay_root=layers.overlay, lowers=lowers)
