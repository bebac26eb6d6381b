"""``build --metadata-file FILE``: the build result as buildx writes it, for CI steps that read it.

buildx decodes BuildKit's exporter response into a JSON object
(``commands/build.go``: ``writeMetadataFile``, indented by two spaces, keys
in Go's map order, that is sorted). The image exporter's keys
(``exporter/containerimage/exptypes``) are the ones written here:

* ``containerimage.digest``: the image manifest's digest, what a registry
  serves for the tag (pybuild pushes the manifest's stored bytes as they
  are, so a ``build --push`` lands under this very digest);
* ``containerimage.config.digest``: the config digest (the image ID);
* ``containerimage.descriptor``: the manifest's OCI descriptor
  (``mediaType``, ``digest``, ``size``);
* ``image.name``: the ``-t`` names joined by commas, as given (buildx
  passes ``reference.Parse(tag).String()``, which keeps them as written);
  absent without ``-t``.

Not written: buildx's own ``buildx.build.ref`` (the builder/node/ref of its
build history, which pybuild does not keep) and attestation keys (no
attestation is made).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pybuild.errors import UsageError
from pybuild.linux.fsutil import atomic_write
from pybuild.store.images import Image
from pybuild.store.root import Store


def build_metadata(store: Store, image: Image, tags: Sequence[str]) -> dict[str, Any]:
    """The metadata document of a built ``image`` named ``tags``."""
    size = len(store.blobs.read(image.manifest_digest, verify=False))
    doc: dict[str, Any] = {
        "containerimage.config.digest": image.config_digest,
        "containerimage.descriptor": {"mediaType": image.manifest.media_type, "digest": image.manifest_digest,
                                      "size": size},
        "containerimage.digest": image.manifest_digest,
    }
    if tags:
        doc["image.name"] = ",".join(tags)
    return dict(sorted(doc.items()))


def check_destination(path: str) -> None:
    """Fail before the build when the file cannot be written (its directory must exist, as buildx's)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--metadata-file {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--metadata-file {path}: is a directory")


def write_metadata(path: str, doc: dict[str, Any]) -> None:
    try:
        atomic_write(path, json.dumps(doc, indent=2).encode(), 0o644, durable=False)
    except OSError as exc:
        raise UsageError(f"cannot write --metadata-file {path}: {exc.strerror}") from None
