"""One daemon thread that runs small jobs a little later.

``report_progress`` hands over values no later call publishes, and a LOCAL
training's buffered log file is flushed, a moment after the fact; both need a
timer that costs nothing on the hot path. :data:`background` is that timer:
one thread per process, started at the first job, sleeping when there is none.
(``threading.Timer`` would start a thread per job; ``sched`` has no thread.)
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from time import monotonic
from typing import Callable, Optional

log = logging.getLogger("trainerkit")


class Deferred:
    """Runs each scheduled callable once, at (or just after) its time, in order."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._count = 0
        self._thread: Optional[threading.Thread] = None
        self._forks_handled = False

    def schedule(self, job: Callable[[], None], when: float) -> None:
        """Run ``job()`` at ``when`` (a ``time.monotonic()`` value) in the background thread."""
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (when, self._count, job))
            if self._thread is None:
                if not self._forks_handled:
                    self._forks_handled = True
                    os.register_at_fork(after_in_child=self._forget)
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _forget(self) -> None:
        """In a forked child: the parent's jobs and thread are the parent's."""
        self._cond = threading.Condition(threading.Lock())
        self._due = []
        self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > monotonic():
                    self._cond.wait(self._due[0][0] - monotonic() if self._due else None)
                _, _, job = heapq.heappop(self._due)
            try:
                job()
            except Exception:  # a job's failure is its own to report; the timer goes on
                log.debug("background job %r failed", job, exc_info=True)


#: The process's background timer.
background = Deferred("trainerkit-background")
