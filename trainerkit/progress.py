"""What a module calls from inside ``train``: progress reports and cancel checks.

The running trainer installs a :class:`TrainingContext` for the duration of
``train`` (a ``contextvars`` variable, so it follows the training's thread and
any ``contextvars.copy_context`` the module makes). Outside a training these
functions do nothing, so modules stay usable on their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Callable, Iterator, Optional

from .errors import TrainingCanceledError
from .info import ProgressReport, check_metric_value, utcnow

log = logging.getLogger("trainerkit")


class TrainingContext:
    """The link between a running ``train`` call and its trainer.

    ``on_progress`` receives every :class:`ProgressReport`; ``is_canceled``
    says whether a cancel was requested.
    """

    def __init__(
        self,
        training_id: str,
        on_progress: Callable[[ProgressReport], None],
        is_canceled: Callable[[], bool],
    ) -> None:
        self.training_id = training_id
        self.on_progress = on_progress
        self.is_canceled = is_canceled


_current: contextvars.ContextVar[Optional[TrainingContext]] = contextvars.ContextVar(
    "trainerkit_training", default=None
)


@contextlib.contextmanager
def training_context(context: TrainingContext) -> Iterator[TrainingContext]:
    """Install ``context`` as the current training while the block runs."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current_training_id() -> Optional[str]:
    """The id of the training whose ``train`` is running here, or None."""
    context = _current.get()
    return context.training_id if context else None


def report_progress(step: Optional[float] = None, total: Optional[float] = None, **metrics: Any) -> None:
    """Record the progress of the training running in this thread.

    Call it from inside a module's ``train`` (each epoch, say). ``get_info()``
    of the training's future shows the latest report, for every trainer type.
    Metric values must be JSON scalars (numbers, strings, booleans, None).

    It is also a cancellation point: when the training was canceled it raises
    :class:`~trainerkit.TrainingCanceledError`. Outside a training it does nothing.
    """
    context = _current.get()
    if context is None:
        log.debug("report_progress called outside a training; ignored")
        return
    for name, value in (("step", step), ("total", total)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"report_progress {name}={value!r} must be a number or None")
    clean = {name: check_metric_value(name, value) for name, value in metrics.items()}
    context.on_progress(ProgressReport(step=step, total=total, metrics=clean, time=utcnow()))
    if context.is_canceled():
        raise TrainingCanceledError(f"training {context.training_id} was canceled")


def cancel_requested() -> bool:
    """True when the training running in this thread has been asked to stop."""
    context = _current.get()
    return bool(context and context.is_canceled())


def check_canceled() -> None:
    """Raise :class:`~trainerkit.TrainingCanceledError` if this training was canceled.

    Long loops in C extensions that never run Python bytecode cannot be
    interrupted from outside a process; call this between steps.
    """
    context = _current.get()
    if context is not None and context.is_canceled():
        raise TrainingCanceledError(f"training {context.training_id} was canceled")
