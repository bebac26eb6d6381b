"""Archive commands: save and load (docker-compatible image tars)."""

from __future__ import annotations

import contextlib
import os
import sys

from pybuild.cli import Settings, pass_settings
from pybuild.cli.cmdline import argument, command, echo, option
from pybuild.errors import ImageNotFound, InvalidReference, PybuildError, UsageError
from pybuild.store import reference as _reference
from pybuild.store.images import Image
from pybuild.store.root import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


def _images_for(store: Store, text: str) -> list[tuple[Image, list[_reference.Reference]]]:
    """What ``docker save TEXT`` saves: a tag, every tag of a bare repository name, or an ID (unnamed)."""
    ref: _reference.Reference | None = None
    with contextlib.suppress(InvalidReference):
        ref = _reference.parse(text, default_tag=False)
    refs = store.images.refs()
    if ref is not None and ref.tag is None and ref.digest is None:
        # A bare repository name: all its tags, as docker does.
        by_target: dict[str, list[_reference.Reference]] = {}
        for key, target in sorted(refs.items()):
            with contextlib.suppress(InvalidReference):
                other = _reference.parse(key)
                if other.name == ref.name and other.tag is not None:
                    by_target.setdefault(target, []).append(other)
        if by_target:
            return [(store.images.get(target), names) for target, names in by_target.items()]
    image = store.images.resolve(text)
    if ref is None:
        return [(image, [])]
    full = _reference.parse(text)
    if full.key in refs and refs[full.key] == image.manifest_digest:
        return [(image, [full])]
    if full.digest is not None and full.tag is None and full.digest == image.manifest_digest:
        return [(image, [full])]
    return [(image, [])]  # named by ID


@command("save")
@argument("names", nargs=-1, required=True)
@option("-o", "--output", metavar="FILE", help="Write to FILE instead of standard output.")
@pass_settings
def save_cmd(settings: Settings, names: tuple[str, ...], output: str | None) -> None:
    """Save images to a tar archive (OCI layout plus docker's manifest.json)."""
    from pybuild.store.archive import save

    if output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal", "use the -o flag or redirect")
    store = settings.store()
    images: list[tuple[Image, list[_reference.Reference]]] = []
    for name in names:
        images.extend(_images_for(store, name))
    if output is None:
        out = sys.stdout.buffer
        save(store, images, out)
        out.flush()
        return
    tmp = output + ".tmp"
    try:
        with open(tmp, "wb") as f:
            save(store, images, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PybuildError(f"cannot write {output}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@command("load")
@option("-i", "--input", "input_", metavar="FILE", help="Read from FILE instead of standard input.")
@option("-q", "--quiet", is_flag=True, help="Do not report the layers loaded.")
@pass_settings
def load_cmd(settings: Settings, input_: str | None, quiet: bool) -> None:
    """Load images from a tar archive (docker save, OCI layout, plain or compressed)."""
    from pybuild.store.archive import load

    store = settings.store()

    def progress(line: str) -> None:
        echo(line, err=True)

    with contextlib.ExitStack() as stack:
        stream: BinaryIO
        if input_ is None or input_ == "-":
            if sys.stdin.isatty():
                raise UsageError("requested load from stdin, but stdin is empty", "use -i FILE or redirect")
            stream = sys.stdin.buffer
        else:
            try:
                stream = stack.enter_context(open(input_, "rb"))
            except OSError as exc:
                raise PybuildError(f"cannot open {input_}: {exc.strerror}") from None
        loaded = load(store, stream, progress=None if quiet else progress)
    if not loaded:
        raise ImageNotFound("the archive holds no images")
    for item in loaded:
        for ref in item.refs:
            echo(f"Loaded image: {ref.familiar()}")
        if not item.refs:
            echo(f"Loaded image ID: {item.image.id}")
