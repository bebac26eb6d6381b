"""``build --output``: where the result goes besides the store.

``type=oci,dest=FILE`` and ``type=docker,dest=FILE`` write the image as an
archive (the same file serves both: OCI layout plus Docker's manifest.json,
as ``pybuild save`` writes it; ``dest=-`` is stdout); ``type=local,dest=DIR``
copies the image's filesystem into a directory and ``type=tar,dest=FILE``
writes it as a tar, as BuildKit's exporters of those names do.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pybuild.errors import UsageError
from pybuild.records import record
from pybuild.store import reference as _reference
from pybuild.store.images import Image
from pybuild.store.root import Store

from .snapshots import chain_lowers

OUTPUT_TYPES = ("oci", "docker", "local", "tar")


@record(frozen=True)
class OutputSpec:
    type: str
    dest: str


def parse_output(text: str) -> OutputSpec:
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            if len(text.split(",")) == 1:
                return OutputSpec("local", text)  # docker: -o DIR means type=local,dest=DIR
            raise UsageError(f"invalid --output {text!r}", "use type=TYPE,dest=PATH")
        fields[key.strip()] = value
    kind = fields.pop("type", "local")
    dest = fields.pop("dest", "")
    fields.pop("name", None)
    if kind not in OUTPUT_TYPES:
        raise UsageError(f"unsupported output type {kind!r}", "use oci, docker, local or tar")
    if fields:
        raise UsageError(f"unknown --output key(s): {', '.join(sorted(fields))}")
    if not dest:
        raise UsageError(f"--output type={kind} needs dest=PATH")
    return OutputSpec(kind, dest)


@contextlib.contextmanager
def _open_dest(dest: str) -> Iterator[BinaryIO]:
    if dest == "-":
        yield sys.stdout.buffer
        return
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_output(store: Store, image: Image, spec: OutputSpec, tags: list[_reference.Reference]) -> None:
    from pybuild.runtime.privatemount import copy_tree_from_view, export_rootfs

    lowers = chain_lowers(store.layers, image.top_chain_id)
    if spec.type in ("oci", "docker"):
        from pybuild.store.archive import save

        with _open_dest(spec.dest) as out:
            save(store, [(image, tags)], out)
    elif spec.type == "tar":
        with _open_dest(spec.dest) as out:
            if lowers:
                export_rootfs(out, overlay_root=store.layers.overlay, lowers=lowers)
            else:
                out.write(b"\0" * 1024)  # an empty image: an empty tar
    else:
        dest = Path(spec.dest)
        dest.mkdir(parents=True, exist_ok=True)
        if lowers:
            copy_tree_from_view(store.layers.overlay, lowers, "/", dest)
