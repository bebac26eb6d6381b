"""``build --provenance`` and ``--sbom``: buildx's attestation flags, accepted and read, never acted on.

pybuild makes no attestation (no SLSA provenance, no SBOM): the image is
its manifest, config and layers only. A CI script that turns them off
(``--provenance=false``, ``--sbom=false``, buildx's way to get a plain
image manifest) gets just that. One that asks for them (``true``,
``mode=min|max``, ``generator=IMAGE``...) gets the build all the same and a
warning saying that no attestation was made, never a silent pretence.

Values are read as buildx reads them: a Go boolean, or ``key=value`` pairs
(comma-separated) where ``disabled=true`` turns the attestation off.
"""

from __future__ import annotations

from pybuild.errors import UsageError

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_KEYS = {"provenance": ("mode", "builder-id", "disabled", "inline-only", "filename", "reproducible", "version"),
         "sbom": ("generator", "disabled", "scan-context", "scan-stage")}
_MODES = ("min", "max")


def requested(kind: str, value: str | None) -> bool:
    """Whether ``--<kind>=value`` asks for an attestation (``kind``: provenance or sbom); bad values are errors."""
    if value is None:
        return False
    text = value.strip()
    if text in _TRUE or text == "":
        return True
    if text in _FALSE:
        return False
    wanted = True
    for part in text.split(","):
        key, eq, val = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in _KEYS[kind]:
            raise UsageError(f"invalid --{kind} value {value!r}",
                             f"use true, false or KEY=VALUE pairs ({', '.join(_KEYS[kind])})")
        if key == "mode" and val not in _MODES:
            raise UsageError(f"invalid --{kind} mode {val!r}", "use mode=min or mode=max")
        if key == "disabled":
            if val not in (*_TRUE, *_FALSE):
                raise UsageError(f"invalid --{kind} value {value!r}: disabled={val} is not a boolean")
            wanted = val in _FALSE
    return wanted


def warning(kind: str) -> str:
    """The line said when an attestation was asked for."""
    what = "provenance attestation" if kind == "provenance" else "SBOM attestation"
    return f"--{kind}: pybuild does not make a {what}: the image has none"
