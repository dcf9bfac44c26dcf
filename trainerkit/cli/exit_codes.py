"""The exit statuses of the ``trainerkit`` command, and which error gives which.

Each outcome a script may want to branch on has its own number (documented
in ``docs/cli.md``). 1 keeps Python's meaning, "something failed that has no
more specific code", and 2 keeps argparse's, "the command line is wrong".
"""

from __future__ import annotations

import enum
from typing import Any, Mapping, Optional


class ExitCode(enum.IntEnum):
    """Exit statuses of ``trainerkit``."""

    #: The command did what was asked (a followed training COMPLETED).
    OK = 0
    #: trainerkit itself failed: records unreadable, cluster unreachable, a bug.
    FAILURE = 1
    #: Bad input: command line, training arguments, module, config file.
    USAGE = 2
    #: No training with that id (or its trainer is not in the configuration).
    NOT_FOUND = 3
    #: The training ended ERRORED.
    TRAINING_ERRORED = 4
    #: The training ended CANCELED (by someone else: see INTERRUPTED).
    TRAINING_CANCELED = 5
    #: The training or its trainer type cannot do that now: still running,
    #: already finished, keeps no logs, cannot detach, lacks a requested
    #: capability (UnsupportedCapabilityError), model not saved.
    UNAVAILABLE = 6
    #: Ctrl-C. A training this command was following was canceled first.
    INTERRUPTED = 130


class CommandError(Exception):
    """An expected failure of a command: one message, one exit status.

    ``hint`` is an optional second line telling the user what to do;
    ``details`` are extra keys of the ``--json`` error document.
    """

    def __init__(
        self, message: str, code: ExitCode, hint: str = "", details: Optional[Mapping[str, Any]] = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint
        self.details = dict(details or {})


def exit_code_for(exc: BaseException) -> Optional[ExitCode]:
    """The exit status of an expected trainerkit error, or None for anything
    else (an unexpected error: a bug, reported with its traceback)."""
    from ..capabilities import UnsupportedCapabilityError
    from ..errors import (
        ConfigError,
        InvalidTrainingIdError,
        ModelLoadError,
        ModelNotSavedError,
        TrainerkitError,
        TrainingExistsError,
        TrainingNotFoundError,
        TrainingStateError,
        UnknownTrainerError,
    )

    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, (ConfigError, UnknownTrainerError, InvalidTrainingIdError, TrainingExistsError)):
        return ExitCode.USAGE
    if isinstance(exc, UnsupportedCapabilityError):  # a ValueError, but no bad input: the trainer lacks it
        return ExitCode.UNAVAILABLE
    if isinstance(exc, TrainingNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, (TrainingStateError, ModelNotSavedError, ModelLoadError)):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, TrainerkitError):
        return ExitCode.FAILURE
    return None
