"""OCI distribution client: push, pull, auth.

The library API the builder and cache exporters use::

    pull_image(store, "alpine:3.19", platform=None, progress=None) -> Image
    push_image(store, "app:v1", "registry.example:5000/app:v1") -> manifest digest
    RegistryClient(domain).get_manifest / put_manifest / fetch_blob / push_blob
"""

from __future__ import annotations

from .client import BlobPushed, FetchedManifest, RegistryClient
from .pull import PullResult, pull, pull_image
from .push import PushResult, push, push_image, recompress
from .transport import RegistryOptions

__all__ = [
    "BlobPushed",
    "FetchedManifest",
    "PullResult",
    "PushResult",
    "RegistryClient",
    "RegistryOptions",
    "pull",
    "pull_image",
    "push",
    "push_image",
    "recompress",
]
