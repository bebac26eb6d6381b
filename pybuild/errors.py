"""The one exception hierarchy of pybuild.

Every error a user can cause or meet derives from :class:`PybuildError`. The
CLI is the only place that turns these into ``pybuild: error: <what> (<hint>)``
and an exit status; library callers catch them precisely (``ImageNotFound`` is
a ``NotFoundError`` is a ``PybuildError``).
"""

from __future__ import annotations


class PybuildError(Exception):
    """Base of every error pybuild reports to its user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(PybuildError):
    """The arguments are malformed: a bad flag value, reference or digest."""


class InvalidReference(UsageError):
    """An image reference that does not follow the reference grammar."""


class InvalidDigest(UsageError):
    """A digest that is not ``sha256:`` followed by 64 lowercase hex digits."""


class NotFoundError(PybuildError):
    """Something named does not exist."""


class ImageNotFound(NotFoundError):
    pass


class LayerNotFound(NotFoundError):
    pass


class BlobNotFound(NotFoundError):
    pass


class ContainerNotFound(NotFoundError):
    pass


class ConflictError(PybuildError):
    """The operation conflicts with the current state (in use, exists)."""


class RootlessError(PybuildError):
    """An ordinary user's pybuild cannot set up or use its user namespace, ids, network or cgroups."""


class StoreError(PybuildError):
    """The store root is unusable or inconsistent."""


class UnsupportedFilesystem(StoreError):
    """The store root cannot hold overlay upper directories."""


class MountError(StoreError):
    """A mount or unmount failed."""


class DigestMismatch(PybuildError):
    """Content did not hash to the digest it was announced with."""


class LayerError(PybuildError):
    """A layer cannot be created, read or applied."""


class UnsafeLayerError(LayerError):
    """A layer tar tried to write outside its target (hostile input)."""


class TooManyLayers(LayerError):
    """The layer chain is deeper than overlayfs can mount."""


class LayerTooLarge(LayerError):
    """A layer tar expands past the limit set for applying one (``PYBUILD_MAX_LAYER_SIZE``)."""


class ArchiveError(PybuildError):
    """An image archive (docker-save, OCI layout) is malformed."""


class DockerfileError(PybuildError):
    """A Dockerfile cannot be parsed; carries the file name and line."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        filename: str = "Dockerfile",
        line: int | None = None,
        source_line: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.filename = filename
        self.line = line
        self.source_line = source_line

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}: " if self.line is not None else f"{self.filename}: "
        text = where + super().__str__()
        if self.source_line is not None:
            shown = self.source_line if len(self.source_line) <= 160 else self.source_line[:160] + "..."
            text += f"\n  {self.line} | {shown}"
        return text


class BuildError(PybuildError):
    """A build step failed."""


class ContainerError(PybuildError):
    """A container could not be created, started or managed."""


class RegistryError(PybuildError):
    """A registry operation failed."""


class NetworkError(PybuildError):
    """A network cannot be created, used or removed: bridges, addresses, published ports.

    ``pybuild run``/``create``/``start`` report these with Docker's 125, the
    ``network`` commands with 1.
    """


class NetworkNotFound(NetworkError, NotFoundError):
    pass
