"""What a pull or push reports while it runs, as events (drawn by ``pybuild.cli.progress``).

Events are ``update(key, status, current, total)`` (``key`` is a layer's short
digest) and ``message(text)`` for lines that are not about one layer. They may
come from worker threads.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def message(self, text: str) -> None: ...

    def update(self, key: str, status: str, current: int | None = None, total: int | None = None) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    def message(self, text: str) -> None:
        pass

    def update(self, key: str, status: str, current: int | None = None, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass
