"""The errors trainerkit raises: one small hierarchy, one module.

Every message names the input, the problem and what to do about it. Errors
that a caller is likely to catch with a builtin type also derive from it
(``ConfigError`` is a ``ValueError``, ``TrainingNotFoundError`` a ``LookupError``,
``TrainingCanceledError`` a ``concurrent.futures.CancelledError``).

Where an error's type is recorded as text (``ErrorDetail.type``,
``TrainingError.error_type``), it is the qualified class name
(``trainerkit.errors.TrainingCrashedError``; builtins bare, ``ValueError``),
never a bare trainerkit name, so it can be imported and rebuilt.
"""

from __future__ import annotations

import concurrent.futures
from typing import Optional


class TrainerkitError(Exception):
    """Base class of every error raised by trainerkit itself."""


class ConfigError(TrainerkitError, ValueError):
    """A trainer configuration is invalid.

    ``problems`` lists every problem found (each already a full sentence that
    names the key path); ``str(error)`` joins them.
    """

    def __init__(self, problems: "list[str] | str") -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the trainer configuration:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems
            )
        super().__init__(message)


class InvalidTrainingIdError(TrainerkitError, ValueError):
    """A training id (or an external training id) breaks the id rules."""


class TrainingExistsError(TrainerkitError, ValueError):
    """A training with the requested id already exists and is not finished."""


class TrainingNotFoundError(TrainerkitError, LookupError):
    """No record of a training with the given id."""

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownTrainerError(TrainerkitError, LookupError):
    """No trainer with the given name in the configuration."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainingStateError(TrainerkitError, RuntimeError):
    """The operation does not fit the training's current status (for example
    deleting a training that is still running)."""


class ModelNotSavedError(TrainerkitError, RuntimeError):
    """The training finished but its model cannot be produced: it was not saved
    and the process that held it in memory is gone (or it was deleted)."""


class ModelLoadError(TrainerkitError, RuntimeError):
    """A saved model could not be loaded."""


class StorageError(TrainerkitError, OSError):
    """A model or checkpoint location (a path or an fsspec URL) cannot be used:
    unknown protocol, missing filesystem package, refused credentials, a failed
    upload or download. The message names the URL or path."""


class StoreError(TrainerkitError, RuntimeError):
    """The durable record store cannot be used (corrupt, unreadable, full...)."""


class ClusterError(TrainerkitError, RuntimeError):
    """A request to the Kubernetes API server failed.

    The message names the request (verb, resource, namespace), the server's
    answer and what to do about it.
    """


class ClusterUnreachableError(ClusterError, ConnectionError):
    """The Kubernetes API server could not be reached at all."""


class ClusterPermissionError(ClusterError, PermissionError):
    """The API server refused the credentials (401) or RBAC refused the request (403).

    ``verb``, ``resource`` and ``namespace`` name the refused request.
    """

    def __init__(self, message: str, *, verb: str = "", resource: str = "", namespace: str = "") -> None:
        super().__init__(message)
        self.verb = verb
        self.resource = resource
        self.namespace = namespace


class TrainingError(TrainerkitError):
    """A training failed and its own exception type could not be rebuilt here.

    Carries the remote ``error_type`` (its qualified class name, as in
    ``ErrorDetail.type``), ``message`` and ``remote_traceback`` text.
    """

    def __init__(
        self, message: str, *, error_type: str = "", remote_traceback: Optional[str] = None
    ) -> None:
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback
        text = f"{error_type}: {message}" if error_type else message
        super().__init__(text)


class TrainingInterruptedError(TrainingError):
    """The process that ran a training exited before the training finished."""


class TrainingCrashedError(TrainingError):
    """The process that ran a training ended without reporting an outcome: it
    exited with a non-zero code (``os._exit``), or was killed by a signal
    (SIGSEGV in native code, SIGKILL from a user or the out-of-memory killer).
    The message names the exit code or the signal."""


class TrainingCanceledError(TrainerkitError, concurrent.futures.CancelledError):
    """Raised by ``result()`` of a canceled training, and inside a training's
    thread when it is canceled."""


__all__ = [
    "ClusterError",
    "ClusterPermissionError",
    "ClusterUnreachableError",
    "ConfigError",
    "InvalidTrainingIdError",
    "ModelLoadError",
    "ModelNotSavedError",
    "StoreError",
    "TrainerkitError",
    "TrainingCanceledError",
    "TrainingCrashedError",
    "TrainingError",
    "TrainingExistsError",
    "TrainingInterruptedError",
    "TrainingNotFoundError",
    "TrainingStateError",
    "UnknownTrainerError",
]
