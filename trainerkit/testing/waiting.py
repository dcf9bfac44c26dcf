"""Waiting in tests without sleeping as synchronisation.

:func:`wait_until` polls a condition with a deadline; :class:`FileGate` holds
a :class:`~trainerkit.testing.modules.Blocking` training inside ``train``
through files, which a training in another process or pod can see as well as
a thread can.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

from .modules import ENTERED, RELEASE

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    what: str = "the condition",
    *,
    timeout: float = 30.0,
    interval: float = 0.01,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises:
        AssertionError: naming ``what``, when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class FileGate:
    """A gate directory for one :class:`~trainerkit.testing.modules.Blocking` training.

    Pass :attr:`path` to ``Blocking`` as its ``gate`` argument; the training
    creates ``entered`` there once inside ``train`` and returns once
    :meth:`release` has created ``release``. The directory must be one that the
    training sees at the same path (the same machine, or a shared volume).
    """

    def __init__(self, path: "str | os.PathLike[str]") -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"FileGate({self.path!r})"

    @property
    def entered(self) -> bool:
        """True once the training is inside ``train``."""
        return os.path.exists(os.path.join(self.path, ENTERED))

    def wait_entered(self, timeout: float = 60.0) -> None:
        """Wait until the training is inside ``train``.

        Raises:
            AssertionError: when it is not there within ``timeout`` seconds.
        """
        wait_until(lambda: self.entered, f"the training to enter train() (gate {self.path})",
                   timeout=timeout)

    def release(self) -> None:
        """Let the training return from ``train`` (idempotent)."""
        with open(os.path.join(self.path, RELEASE), "a", encoding="utf-8"):
            pass
