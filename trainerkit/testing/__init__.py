"""Testing aids for trainer types: the backend conformance suite.

``from trainerkit.testing import BackendConformance`` gives a pytest base
class whose tests prove that a trainer type honours the trainer contract
(see ``docs/testing.md``). The suite needs pytest; it is imported only when
``BackendConformance`` is first used, so the trainable modules in
:mod:`trainerkit.testing.modules` import without pytest (a worker process or
a pod image need not have it), and ``import trainerkit`` never imports this
package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .waiting import FileGate, wait_until

if TYPE_CHECKING:
    from .conformance import BackendConformance, QueueHolder

__all__ = ["BackendConformance", "FileGate", "QueueHolder", "wait_until"]


def __getattr__(name: str) -> Any:
    if name in ("BackendConformance", "QueueHolder"):
        from . import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
