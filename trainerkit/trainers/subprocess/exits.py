"""How a worker or training process ended, in words and as an Outcome: one
wording for the supervisor (which waits for the training process) and the
trainer (which waits for the worker)."""

from __future__ import annotations

from ...info import ErrorDetail, TrainingStatus, utcnow
from ...runner import Outcome
from ...runner.exits import describe_exit, signal_hint

__all__ = ["describe_exit", "ended", "errored", "signal_hint"]


def ended(status: TrainingStatus, *errors: ErrorDetail) -> Outcome:
    """An outcome of ``status`` as of now."""
    return Outcome(status=status, time=utcnow(), errors=errors)


def errored(exc_type: type, message: str, traceback_text: str = "") -> Outcome:
    """An ERRORED outcome, as of now, with one error of ``exc_type``."""
    return ended(TrainingStatus.ERRORED, ErrorDetail.of(exc_type, message, traceback_text))
