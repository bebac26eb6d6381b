"""``--format``: docker's output conventions over the Go template engine (:mod:`gotemplate`).

Imported only when ``--format`` is given, so listing without it costs
nothing more than before. ``emit`` renders listing rows (``ps``, ``images``,
``volume ls``...): ``table`` with headers, ``json`` (one object per row) or
any template, a line per row. ``inspect`` renders one line per object of an
``inspect``-style command, whose data are plain JSON documents.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pybuild.cli import gotemplate


def emit(fmt: str, rows: Sequence[Any], headers: Mapping[str, str]) -> None:
    """Write ``rows`` as ``fmt`` says (docker's listing ``--format``)."""
    sys.stdout.write(gotemplate.render(fmt, list(rows), dict(headers)))
    sys.stdout.flush()


def inspect(fmt: str, docs: Sequence[Any]) -> None:
    """Write each of ``docs`` through the template ``fmt``, a line each (docker's ``inspect --format``)."""
    if fmt.strip() == "json":
        fmt = "{{json .}}"
    template = gotemplate.compile(fmt.replace("\\t", "\t").replace("\\n", "\n"))
    out = [template.execute(doc) + "\n" for doc in docs]
    sys.stdout.write("".join(out))
    sys.stdout.flush()
