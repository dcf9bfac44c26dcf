"""SUBPROCESS: every training in an OS process of its own.

The package, file by file: :mod:`.config` (the config keys), :mod:`.trainer`
(the backend: start, cancel, observe, reconcile), :mod:`.dispatcher` (the queue
and the worker pool, one thread), :mod:`.handles` (a training and a worker as
the submitting side sees them), :mod:`.worker` and :mod:`.supervisor` (the
worker process and the training process it forks), :mod:`.rundir` (the files
that let a training outlive its submitter). The classes load lazily, so a
worker process imports only what it runs.
"""

from typing import Any

__all__ = ["SubprocessModelTrainer", "SubprocessTrainerConfig"]


def __getattr__(name: str) -> Any:
    if name == "SubprocessModelTrainer":
        from .trainer import SubprocessModelTrainer

        return SubprocessModelTrainer
    if name == "SubprocessTrainerConfig":
        from .config import SubprocessTrainerConfig

        return SubprocessTrainerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
