"""Thread-safe record of the HTTP requests the fake apiserver received."""

from __future__ import annotations

import threading
import time
from typing import Iterator


class RequestLog:
    """List-like, thread-safe sequence of ``(method, path)`` tuples (path without query string).

    ``len(log)``, iteration, indexing, ``snapshot()``, ``count(method=, path_prefix=)``,
    ``clear()``, ``timed()`` and ``rate(seconds)`` (requests per second over the last ``seconds``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, str]] = []
        self._times: list[float] = []

    def append(self, item: tuple[str, str]) -> None:
        with self._lock:
            self._items.append(item)
            self._times.append(time.monotonic())

    def snapshot(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def timed(self) -> list[tuple[str, str, float]]:
        """``(method, path, time.monotonic() when received)`` of every request, oldest first."""
        with self._lock:
            return [(m, p, t) for (m, p), t in zip(self._items, self._times)]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._times.clear()

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p in self._items
                       if (method is None or m == method) and (path_prefix is None or p.startswith(path_prefix)))

    def rate(self, seconds: float = 1.0) -> float:
        now = time.monotonic()
        with self._lock:
            recent = sum(1 for t in self._times if now - t <= seconds)
        return recent / seconds if seconds > 0 else 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.snapshot())

    def __getitem__(self, index):
        with self._lock:
            return self._items[index]

    def __repr__(self) -> str:
        return f"RequestLog({len(self)} requests)"
