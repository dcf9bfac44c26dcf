"""What a module calls from inside ``train``: progress reports and cancel checks.

The running trainer installs a :class:`TrainingContext` for the duration of
``train`` (a ``contextvars`` variable, so it follows the training's thread and
any ``contextvars.copy_context`` the module makes). Outside a training these
functions do nothing, so modules stay usable on their own.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from time import monotonic as _monotonic
from typing import Any, Callable, Optional

from .deferred import background
from .errors import TrainingCanceledError
from .info import ProgressReport, check_metric_value, utcnow

log = logging.getLogger("trainerkit")


#: ``report_progress`` hands a report to the trainer at most this often, in
#: seconds (like tqdm's ``mininterval``); calls in between only keep their
#: values, and the last ones are handed over when ``train`` returns.
PUBLISH_INTERVAL = 0.05

_NUMBERS = (int, float, type(None))
_PLAIN = (int, float, str, bool, type(None))


class TrainingContext:
    """The link between a running ``train`` call and its trainer.

    ``on_progress`` receives the :class:`ProgressReport` s: the first at once,
    then at most one per ``publish_interval`` seconds, each with the latest
    values (a background thread hands over values that no later call
    publishes), and the last values when ``train`` ends. ``is_canceled`` says
    whether a cancel was requested.
    """

    __slots__ = (
        "training_id", "on_progress", "is_canceled", "publish_interval",
        "_next_publish", "_latest", "_published", "_scheduled", "_closed", "_lock",
    )

    def __init__(
        self,
        training_id: str,
        on_progress: Callable[[ProgressReport], None],
        is_canceled: Callable[[], bool],
        publish_interval: float = PUBLISH_INTERVAL,
    ) -> None:
        self.training_id = training_id
        self.on_progress = on_progress
        self.is_canceled = is_canceled
        self.publish_interval = publish_interval
        self._next_publish = 0.0  # the first report goes out at once
        self._latest: Optional[tuple[Any, Any, dict[str, Any]]] = None  # written by the training's thread only
        self._published: Optional[tuple[Any, Any, dict[str, Any]]] = None
        self._scheduled = False  # a background publish is due
        self._closed = False
        self._lock = threading.Lock()  # one publisher at a time, in order

    def publish(self) -> None:
        """Hand the latest values to the trainer unless they were already."""
        with self._lock:
            self._scheduled = False
            latest = self._latest
            if latest is None or latest is self._published:
                return
            self._published = latest
            if self._closed:  # the final flush: a bad value is logged, not raised
                try:
                    report = _make_report(*latest)
                except TypeError as exc:
                    log.error("training %s: the last progress report is dropped: %s", self.training_id, exc)
                    return
            else:
                report = _make_report(*latest)
            self.on_progress(report)

    def flush(self) -> None:
        """The training ended: hand over its last values; publish nothing after."""
        self._closed = True
        self.publish()




def _check_step(step: Any, total: Any) -> None:
    for name, value in (("step", step), ("total", total)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"report_progress {name}={value!r} must be a number or None")


def _make_report(step: Any, total: Any, metrics: dict[str, Any]) -> ProgressReport:
    _check_step(step, total)
    clean = metrics
    for value in metrics.values():
        if type(value) not in _PLAIN or (type(value) is float and not math.isfinite(value)):
            clean = {name: check_metric_value(name, value) for name, value in metrics.items()}
            break
    return ProgressReport(step=step, total=total, metrics=clean, time=utcnow())


_current: contextvars.ContextVar[Optional[TrainingContext]] = contextvars.ContextVar(
    "trainerkit_training", default=None
)


class training_context:  # noqa: N801 - used as a function: with training_context(context)
    """Install ``context`` as the current training while the block runs.

    A class rather than a generator context manager: every training enters
    one, and a generator's frame and wrapper cost more than the work."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: TrainingContext) -> None:
        self._context = context

    def __enter__(self) -> TrainingContext:
        self._token = _current.set(self._context)
        return self._context

    def __exit__(self, *exc_info: Any) -> None:
        try:
            _current.reset(self._token)
        finally:
            self._context.flush()


def current_training_id() -> Optional[str]:
    """The id of the training whose ``train`` is running here, or None."""
    context = _current.get()
    return context.training_id if context else None


def report_progress(step: Optional[float] = None, total: Optional[float] = None, **metrics: Any) -> None:
    """Record the progress of the training running in this thread.

    Call it from inside a module's ``train``, each epoch or each step: it is
    cheap enough for a tight loop. ``get_info()`` of the training's future
    shows the latest report, for every trainer type. A report reaches the
    trainer at most every :data:`PUBLISH_INTERVAL` seconds (the first at
    once); calls in between only keep their values, and the last values are
    handed over when ``train`` ends, so nothing but intermediate states is
    skipped. Metric values must be JSON scalars (numbers, strings, booleans,
    None; numpy and torch scalars are converted), checked when the report is
    handed over; ``step`` and ``total`` are checked at every call.

    It is also a cancellation point: when the training was canceled it raises
    :class:`~trainerkit.TrainingCanceledError`. Outside a training it does nothing.
    """
    context = _current.get()
    if context is None:
        log.debug("report_progress called outside a training; ignored")
        return
    # Kept lean (no further call unless a report is due): this runs every step of tight loops.
    if type(step) not in _NUMBERS or type(total) not in _NUMBERS:
        _check_step(step, total)
    context._latest = (step, total, metrics)
    now = _monotonic()
    if now >= context._next_publish:
        context._next_publish = now + context.publish_interval
        context.publish()
    elif not context._scheduled:
        context._scheduled = True
        background.schedule(context.publish, context._next_publish)
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
