"""``--filter key=value``, with docker's matching rules (moby's filters.Args).

Values of one key are alternatives (any may match); different keys must all
match. ``match`` is docker's ``Match``: an exact match, or else the value as
a regular expression searched in the text (Go's RE2 and Python's ``re`` agree
on the patterns people write: anchors, classes, alternation); ``exact`` is
``ExactMatch``; ``labels`` is ``MatchKVList``: every ``label=KEY`` or
``label=KEY=VALUE`` must hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pybuild.errors import UsageError


class Filters:
    """The parsed ``--filter`` flags of one command, checked against the keys it accepts."""

    def __init__(self, specs: Iterable[str], accepted: Iterable[str]) -> None:
        allowed = set(accepted)
        self._values: dict[str, list[str]] = {}
        for spec in specs:
            key, sep, value = spec.partition("=")
            key = key.strip().lower()
            if not sep:
                raise UsageError(f"bad format of filter (expected name=value): {spec}")
            if key not in allowed:
                raise UsageError(f"invalid filter '{key}'", f"valid filters: {', '.join(sorted(allowed))}")
            self._values.setdefault(key, []).append(value)

    def __bool__(self) -> bool:
        return bool(self._values)

    def has(self, key: str) -> bool:
        return key in self._values

    def values(self, key: str) -> list[str]:
        return list(self._values.get(key, ()))

    def exact(self, key: str, text: str) -> bool:
        """True without values for ``key``; else whether one equals ``text``."""
        values = self._values.get(key)
        return not values or text in values

    def match(self, key: str, text: str) -> bool:
        """True without values for ``key``; else whether one equals ``text`` or, as a regex, is found in it."""
        values = self._values.get(key)
        if not values or text in values:
            return True
        for pattern in values:
            try:
                if re.search(pattern, text):
                    return True
            except re.error:
                continue
        return False

    def labels(self, labels: Mapping[str, str], key: str = "label") -> bool:
        """Every ``KEY`` (present) or ``KEY=VALUE`` (equal) filter holds for ``labels``."""
        for value in self._values.get(key, ()):
            name, sep, wanted = value.partition("=")
            if name not in labels or (sep and labels[name] != wanted):
                return False
        return True

    def boolean(self, key: str) -> bool | None:
        """A true/false filter (``dangling=true``): None when absent; conflicting values are an error."""
        values = {v.lower() for v in self._values.get(key, ())}
        if not values:
            return None
        if values <= {"true", "1"}:
            return True
        if values <= {"false", "0"}:
            return False
        raise UsageError(f"invalid filter '{key}={','.join(sorted(values))}'", "use true or false")
