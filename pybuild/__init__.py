"""pybuild: a daemonless Dockerfile engine."""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# The four parts live in top-level folders of the source tree (builder/,
# store/, runtime/, registry/) and install as pybuild.builder, pybuild.store...
# Run from a checkout (tests, `python3 -m pybuild`), this folder shadows any
# installed copy, so the package finds its parts beside it; an installed copy
# has them inside and never looks further.
_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "store")) and _os.path.isdir(_os.path.join(_here, "..", "store")):
    __path__.append(_os.path.dirname(_here))
