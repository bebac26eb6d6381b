"""Cache keys of build steps, and why a step missed.

A key is ``sha256`` over a canonical JSON document: the parent state's key,
the step as text with its variables expanded, its flags, and what else the
step's result depends on (for RUN the build args in effect; for ADD/COPY
the checksum of every source). Timestamps never enter a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pybuild.store.buildcache import SlotInputs

KEY_VERSION = "pybuild.buildcache.v1"


def step_key(parent: str, kind: str, **material: Any) -> str:
    doc = {"v": KEY_VERSION, "parent": parent, "kind": kind, **material}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def base_key(kind: str, ident: str) -> str:
    """The key of a stage's starting state: scratch, or an image by its manifest digest."""
    return step_key("", "FROM", base=kind, ident=ident)


def slot_id(dockerfile_id: str, stage: int) -> str:
    """One stage of a Dockerfile (which file, which stage): where its steps' last inputs are kept."""
    return step_key("", "slot", dockerfile=dockerfile_id, stage=stage)


def _changed_files(old: Mapping[str, str], new: Mapping[str, str], limit: int = 5) -> str:
    changed = sorted(p for p in new if p in old and old[p] != new[p])
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    parts = []
    for label, items in (("changed", changed), ("added", added), ("removed", removed)):
        if items:
            shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def own_change(previous: SlotInputs, current: SlotInputs) -> str | None:
    """What changed in the step itself since the last build (not in the steps before it), or None."""
    if previous.text != current.text:
        if previous.text.startswith("FROM ") and current.text.startswith("FROM "):
            return f"the base image changed (was: {previous.text[5:]})"
        return f"the instruction changed (was: {previous.text})"
    arg_changes = []
    for name in sorted(set(previous.args) | set(current.args)):
        old, new = previous.args.get(name), current.args.get(name)
        if old != new:
            shown_old = old if old is not None else "unset"
            shown_new = new if new is not None else "unset"
            arg_changes.append(f"{name} ({shown_old} -> {shown_new})")
    if arg_changes:
        return "build arg changed: " + ", ".join(arg_changes)
    if previous.files != current.files:
        detail = _changed_files(previous.files, current.files)
        return "source files " + (detail if detail else "changed")
    return None


def explain_miss(previous: SlotInputs | None, current: SlotInputs, upstream: str | None = None) -> str:
    """One line saying why ``current`` had no cache hit, by comparison with the last build there.

    ``upstream`` is the first change found in the steps before this one (a
    changed build arg, an edited instruction, another base image): when this
    step missed only because what it builds on changed, that is the reason
    given, not "the step before it changed".
    """
    if previous is None:
        return "no earlier build of this step"
    if previous.parent != current.parent:
        return upstream or "the step before it changed"
    own = own_change(previous, current)
    if own is not None:
        return own
    if previous.key == current.key:
        return "its cache record was removed (pruned)"
    return "its inputs changed"
