"""Run one training in this process from a spec: the one train -> save -> outcome
path of every training that runs outside the submitting process.

:func:`run_training` imports the module by its path, rebuilds and binds the
arguments, installs a :class:`~trainerkit.progress.TrainingContext` whose
progress reports go to a :class:`Reporter`, trains, saves atomically with
:func:`trainerkit.module.save_model` and reports the :class:`Outcome` (errors
carry the exception's qualified type, message and traceback text).

Reporting is pluggable: :class:`JsonLinesReporter` writes events to a pipe (a
SUBPROCESS training process talks to its supervisor this way);
:class:`FileReporter` writes the outcome (and progress) to files, such as a
Kubernetes termination message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Optional, Protocol, TextIO

from ..errors import TrainingCanceledError
from ..info import ErrorDetail, ProgressReport, TrainingStatus, utcnow
from ..module import bind_train_arguments, check_module_class, import_object, save_model_to
from .. import checkpoints
from ..progress import TrainingContext, training_context
from ..resources import distributed_env
from .outcome import Outcome, write_json_atomically
from .spec import TrainingSpec, load_arguments

log = logging.getLogger("trainerkit")


# -- reporting --------------------------------------------------------------------


class Reporter(Protocol):
    """Where a running training's news goes. Methods must not raise."""

    def progress(self, report: ProgressReport) -> None:
        """A ``report_progress`` call."""

    def finishing(self) -> None:
        """``train`` returned; the model is being saved (a cancel no longer stops it)."""

    def outcome(self, outcome: Outcome) -> None:
        """The end of the training."""


class JsonLinesReporter:
    """Events as JSON lines on a text stream (a pipe to the supervisor)::

        {"event": "progress", "report": {...}}
        {"event": "finishing"}
        {"event": "outcome", "outcome": {...}}
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # progress may come from report_progress's background thread

    def send(self, event: str, **data: Any) -> None:
        """Write one event line; a reader that has gone away is not an error."""
        line = json.dumps({"event": event, **data}) + "\n"
        try:
            with self._lock:
                self._stream.write(line)
                self._stream.flush()
        except (OSError, ValueError):
            log.debug("event %s not delivered: the reader is gone", event)

    def progress(self, report: ProgressReport) -> None:
        self.send("progress", report=report.to_dict())

    def finishing(self) -> None:
        self.send("finishing")

    def outcome(self, outcome: Outcome) -> None:
        self.send("outcome", outcome=outcome.to_dict())


class FileReporter:
    """The outcome and the latest progress as JSON files (either may be None).

    ``max_bytes`` bounds the outcome file (a Kubernetes termination message
    holds 4096 bytes): tracebacks are shortened from the top to fit.
    """

    def __init__(
        self,
        outcome_path: Optional[str],
        progress_path: Optional[str] = None,
        max_bytes: Optional[int] = None,
    ) -> None:
        self.outcome_path = outcome_path
        self.progress_path = progress_path
        self.max_bytes = max_bytes

    def progress(self, report: ProgressReport) -> None:
        if self.progress_path:
            try:
                write_json_atomically(self.progress_path, report.to_dict())
            except OSError as exc:
                log.warning("cannot write progress to %s: %s", self.progress_path, exc)

    def finishing(self) -> None:
        pass  # files record only what lasts: progress and the outcome

    def outcome(self, outcome: Outcome) -> None:
        if not self.outcome_path:
            return
        data = outcome.to_dict()
        if self.max_bytes is not None:
            data = _fit(data, self.max_bytes)
        try:
            if self.outcome_path.startswith("/dev/"):  # a device (termination log): no rename
                with open(self.outcome_path, "w", encoding="utf-8") as handle:
                    json.dump(data, handle)
            else:
                write_json_atomically(self.outcome_path, data)
        except OSError as exc:
            log.error("cannot write the outcome to %s: %s", self.outcome_path, exc)


def _fit(data: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    while len(json.dumps(data).encode("utf-8")) > max_bytes:
        errors = data.get("errors") or []
        longest = max(errors, key=lambda e: len(e.get("traceback", "")), default=None)
        if longest is None or len(longest.get("traceback", "")) < 64:
            for error in errors:
                error["message"] = error.get("message", "")[: max(64, max_bytes // 4)]
            data["progress"] = None
            break
        text = longest["traceback"]
        longest["traceback"] = "...\n" + text[len(text) // 2 :]
    return data


# -- cancel -----------------------------------------------------------------------


class CancelSignal:
    """SIGTERM as a cancel of the training running in this process's main thread.

    While armed, the first SIGTERM raises :class:`~trainerkit.TrainingCanceledError`
    where the main thread is (a ``time.sleep`` included), so ``finally`` blocks
    run; later ones only record the request. Disarmed (while the model is
    saved), it only records it.
    """

    def __init__(self) -> None:
        self.requested = False
        self._armed = False

    def install(self) -> "CancelSignal":
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def arm(self) -> None:
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = not self.requested
        self.requested = True
        if self._armed and first:
            raise TrainingCanceledError("the training was canceled (SIGTERM)")


# -- running a training -----------------------------------------------------------


def apply_process_settings(spec: TrainingSpec) -> None:
    """Make this process look like the submitter's: environment, cwd, sys.path."""
    if spec.environ is not None:
        for key in [k for k in os.environ if k not in spec.environ]:
            del os.environ[key]
        for key, value in spec.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
    if spec.cwd:
        try:
            os.chdir(spec.cwd)
        except OSError as exc:
            raise FileNotFoundError(
                f"cannot train in the working directory {spec.cwd}: {exc.strerror or exc}"
            ) from None
    if spec.sys_path is not None:
        first = list(dict.fromkeys(spec.sys_path))
        rest = [entry for entry in sys.path if entry not in set(first)]
        sys.path[:] = first + rest
        import importlib

        importlib.invalidate_caches()


def load_module_class(path: str) -> type:
    """Import the module class named by ``path``; ImportError names the path."""
    try:
        module_class = import_object(path)
    except ImportError as exc:
        raise ImportError(f"the training process cannot import the module class {path!r}: {exc}") from exc
    check_module_class(module_class)
    return module_class


class Cancel(Protocol):
    """What :func:`train_and_save` needs of a cancel: a flag, and a window in
    which the backend may interrupt the training (see :class:`CancelSignal`)."""

    @property
    def requested(self) -> bool:
        """True once a cancel was asked for."""

    def arm(self) -> None:
        """``train`` starts: a cancel may now interrupt it."""

    def disarm(self) -> None:
        """``train`` returned (or raised): from here on a cancel is only recorded."""


@dataclasses.dataclass(frozen=True)
class Attempt:
    """How one :func:`train_and_save` ended: COMPLETED with ``model``, CANCELED,
    or ERRORED with ``error`` (the exception as raised)."""

    status: TrainingStatus
    model: Any = None
    error: Optional[BaseException] = None

    def error_detail(self) -> ErrorDetail:
        """The error as recorded. Leaving the interpreter from inside ``train``
        (``sys.exit``, Ctrl-C) is a failure of the training, said in words."""
        error = self.error
        assert error is not None
        detail = ErrorDetail.from_exception(error)
        if isinstance(error, SystemExit):
            return dataclasses.replace(detail, message=f"train() called sys.exit({error.code!r})")
        if isinstance(error, KeyboardInterrupt):
            return dataclasses.replace(detail, message="train() was interrupted (KeyboardInterrupt)")
        return detail


def train_and_save(
    train: Callable[[], Any],
    *,
    save_path: Optional[str],
    training_id: str,
    cancel: Cancel,
    finishing: Callable[[], None] = lambda: None,
    storage_options: Any = None,
) -> Attempt:
    """The one train -> save path of every trainer type.

    Calls ``train()`` (which imports, binds and trains: any failure there is
    the training's), checks that it returned the trained instance, calls
    ``finishing()`` and saves the model atomically to ``save_path`` (when
    given). Never raises for the training's own failures. A cancel
    (``cancel.requested``) makes it CANCELED; once ``train`` has returned, a
    cancel no longer stops the save.
    """
    try:
        try:
            cancel.arm()
            model = train()
        finally:
            cancel.disarm()
        if cancel.requested:
            return Attempt(TrainingStatus.CANCELED)
        if model is None:
            raise TypeError(
                "train() returned None: a module's train classmethod must return the trained "
                "instance (end it with 'return cls(...)' or 'return model')"
            )
        finishing()
        if save_path is not None:
            save_model_to(model, save_path, training_id=training_id, storage_options=storage_options)
        return Attempt(TrainingStatus.COMPLETED, model=model)
    except BaseException as exc:  # the training's own failure, whatever it is
        if cancel.requested:
            return Attempt(TrainingStatus.CANCELED)
        log.debug("training %s errored", training_id, exc_info=True)
        return Attempt(TrainingStatus.ERRORED, error=exc)


def run_training(
    spec: TrainingSpec,
    reporter: Reporter,
    cancel: Optional[CancelSignal] = None,
    *,
    apply_settings: bool = True,
) -> Outcome:
    """Run the training ``spec`` describes in this process and report how it ended.

    Never raises for the training's own failures: they become an ERRORED
    outcome (type, message, traceback text); see :func:`train_and_save`. In a
    multi-process training (the torchrun variables in the spec's environment)
    only rank 0 saves the model and reports progress (:func:`training_rank`).
    """
    cancel = cancel or CancelSignal()
    latest: list[Optional[ProgressReport]] = [None]
    try:
        rank = training_rank(spec)
    except ValueError as exc:
        outcome = Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=(ErrorDetail.from_exception(exc),))
        reporter.outcome(outcome)
        return outcome

    def on_progress(report: ProgressReport) -> None:
        if spec.progress and rank == 0:  # False: progress turned off, or another rank's
            latest[0] = report
            reporter.progress(report)

    def train() -> Any:
        if apply_settings:
            apply_process_settings(spec)
        module_class = load_module_class(spec.module)
        args, kwargs = load_arguments(spec.arguments)
        bind_train_arguments(module_class, args, kwargs)
        context = TrainingContext(spec.training_id, on_progress=on_progress, is_canceled=lambda: cancel.requested)
        token = checkpoints.install(checkpoints.CheckpointContext(
            spec.training_id,
            checkpoints.checkpoint_store(spec.checkpoint_dir, spec.storage_options),
            resume_from=spec.resume_from,
            cache_dir=spec.cache_dir,
            missing="its trainer has no checkpoint_dir",
            rank=rank,
        ))
        try:
            with training_context(context):
                return module_class.train(*args, **kwargs)
        finally:
            checkpoints.uninstall(token)

    attempt = train_and_save(
        train, save_path=spec.save_path if rank == 0 else None, training_id=spec.training_id, cancel=cancel,
        finishing=reporter.finishing, storage_options=spec.storage_options,
    )
    errors: tuple[ErrorDetail, ...] = ()
    if attempt.status is TrainingStatus.CANCELED:
        errors = _canceled("canceled while training")
    elif attempt.status is TrainingStatus.ERRORED:
        errors = (attempt.error_detail(),)
    outcome = Outcome(status=attempt.status, time=utcnow(), errors=errors, progress=latest[0])
    # What the training printed is in its log before anyone hears that it
    # ended (its stdout may be block buffered): a reader of logs() after
    # result() sees every line.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    reporter.outcome(outcome)
    return outcome


def training_rank(spec: TrainingSpec) -> int:
    """The global rank this process trains as: ``RANK`` of the spec's
    environment (of this process's, when the spec keeps it), 0 for a training of
    one process. Only rank 0 saves the model and reports progress; every rank
    reports its outcome.

    Raises:
        ValueError: the torchrun variables are malformed (names the variable).
    """
    env = distributed_env(spec.environ if spec.environ is not None else os.environ)
    return env.rank if env is not None else 0


def _canceled(reason: str) -> tuple[ErrorDetail, ...]:
    return (ErrorDetail.of(TrainingCanceledError, reason),)


class ReporterGroup:
    """Several reporters as one (None entries are left out)."""

    def __init__(self, *reporters: "Optional[Reporter]") -> None:
        self._reporters = [reporter for reporter in reporters if reporter is not None]

    def progress(self, report: ProgressReport) -> None:
        for reporter in self._reporters:
            reporter.progress(report)

    def finishing(self) -> None:
        for reporter in self._reporters:
            reporter.finishing()

    def outcome(self, outcome: Outcome) -> None:
        for reporter in self._reporters:
            reporter.outcome(outcome)
