"""The training future: one state machine, one Condition, every trainer type.

:class:`ModelTrainerFutureBase` *is* a ``concurrent.futures.Future``, so
``concurrent.futures.wait`` and ``as_completed`` accept it as is. Its status is
the :class:`~trainerkit.TrainingInfo` it holds; trainers change it only through
their ``mark_*`` reporters, which persist a new info and hand it to
:meth:`ModelTrainerFutureBase._apply`, the single place where transitions
happen (first terminal status wins). The ``concurrent.futures`` side is driven
through that class's public methods only (``set_result``, ``set_exception``,
``cancel``, ``set_running_or_notify_cancel``) when the training ends.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import (
    ModelNotSavedError,
    TrainingCanceledError,
    TrainingError,
    TrainingStateError,
)
from .info import TrainingInfo, TrainingStatus
from .module import load as load_model
from .module import read_metadata
from .storage import is_url, read_manifest
from .trainer_config import TrainerConfig

if TYPE_CHECKING:
    from .checkpoints import CheckpointInfo
    from .trainer import ModelTrainerBase


class _NoModel:
    def __repr__(self) -> str:
        return "NO_MODEL"


#: Marker: "no in-memory model" (None is a legitimate model value).
NO_MODEL: Any = _NoModel()


class ModelTrainerFutureBase(concurrent.futures.Future):
    """A handle on one training.

    Obtain one from ``trainer.train(...)`` or ``get_model_future(id)``; any
    number of handles may exist for one training, in any process.
    """

    def __init__(self, trainer: "ModelTrainerBase", info: TrainingInfo) -> None:
        super().__init__()
        self._trainer = trainer
        self._info = info
        self._model: Any = NO_MODEL
        self._exception_obj: Optional[BaseException] = None
        if info.status.is_terminal:
            self._settle_cf(info.status)

    # -- identity ---------------------------------------------------------------

    @property
    def id(self) -> str:
        """The training id."""
        return self._info.id

    @property
    def save_path(self) -> Optional[str]:
        """Where the model is saved (None when it is kept in memory only)."""
        return self._info.save_path

    @property
    def cached_info(self) -> TrainingInfo:
        """The latest :class:`TrainingInfo` this handle holds, without asking the
        trainer (``get_info()`` refreshes it first, for trainings run elsewhere)."""
        return self._info

    @property
    def trainer(self) -> "ModelTrainerBase":
        """The trainer that runs (or ran) this training."""
        return self._trainer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} status={self._info.status.value}>"

    # -- observing --------------------------------------------------------------

    def get_info(self) -> TrainingInfo:
        """A fresh :class:`TrainingInfo` snapshot of the training."""
        return self._trainer._fresh_info(self)

    @property
    def status(self) -> TrainingStatus:
        """The current status (shortcut for ``get_info().status``)."""
        return self.get_info().status

    def done(self) -> bool:
        """True once the training is COMPLETED, ERRORED or CANCELED."""
        return self.get_info().status.is_terminal

    def cancelled(self) -> bool:
        """True when the training was canceled."""
        return self.get_info().status is TrainingStatus.CANCELED

    def running(self) -> bool:
        """True while the training runs."""
        return self.get_info().status is TrainingStatus.RUNNING

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the training ends or ``timeout`` seconds pass.

        Returns True when it ended, False on timeout (like ``threading.Event.wait``).
        """
        if self._info.status.is_terminal:  # the common case of result() after the end
            return True
        self._trainer._ensure_observed(self)
        with self._condition:
            return self._condition.wait_for(lambda: self._info.status.is_terminal, timeout)

    def logs(self, follow: bool = False, rank: int = 0) -> Any:
        """The training's output, as an iterator of text lines.

        With ``follow=True`` it keeps yielding lines until the training ends.
        ``rank`` picks one process of a multi-process training (0, the
        default, is rank 0's output; a training of one process has rank 0 only).

        Raises:
            TypeError: ``rank`` is not an integer.
            ValueError: the training has no such rank (``info.ranks`` says how many it has).
        """
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an integer, got {rank!r}")
        if rank == 0:
            return self._trainer.training_logs(self, follow=follow)
        ranks = self.cached_info.ranks
        if not 0 <= rank < ranks:
            has = "one process (rank 0)" if ranks == 1 else f"{ranks} processes (ranks 0 to {ranks - 1})"
            raise ValueError(f"training {self.id} has {has}; there is no rank {rank}")
        return self._trainer.training_logs(self, follow=follow, rank=rank)

    # -- controlling ------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the training to stop.

        Returns True when the training is (or will end) CANCELED; False when
        it had already finished.
        """
        if self._info.status.is_terminal:
            return False
        return self._trainer._cancel(self)

    # -- results ----------------------------------------------------------------

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait for the training and return the trained model, loaded.

        Raises:
            TimeoutError: ``timeout`` passed first.
            The training's own exception (or :class:`TrainingError`) when it errored.
            :class:`TrainingCanceledError` (a ``concurrent.futures.CancelledError``)
                when it was canceled.
            :class:`ModelNotSavedError` when the model was neither saved nor is
                held by this process.
        """
        if not self.wait(timeout):
            raise TimeoutError(f"training {self.id} did not finish within {timeout} s")
        status = self._info.status
        if status is TrainingStatus.COMPLETED:
            return self.load()
        if status is TrainingStatus.CANCELED:
            raise self._canceled_error()
        raise self._training_exception()

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """The training's exception (None if it completed), like concurrent.futures."""
        if not self.wait(timeout):
            raise TimeoutError(f"training {self.id} did not finish within {timeout} s")
        status = self._info.status
        if status is TrainingStatus.CANCELED:
            raise self._canceled_error()
        if status is TrainingStatus.ERRORED:
            return self._training_exception()
        return None

    def load(self) -> Any:
        """The trained model: the in-memory one when this process trained it,
        else loaded from ``save_path``."""
        info = self._info
        if info.status is not TrainingStatus.COMPLETED:
            raise TrainingStateError(
                f"training {self.id} is {info.status.value}, so it has no model to load"
                + (": wait for it first (future.wait() or future.result())" if not info.status.is_terminal else "")
            )
        if self._model is not NO_MODEL:
            return self._model
        config = self._trainer.config
        if info.save_path and is_url(info.save_path):
            trainer = self._trainer
            manifest = read_manifest(info.save_path, trainer.storage_options)
            if manifest is None:
                raise ModelNotSavedError(
                    f"training {self.id} completed, but there is no complete model at "
                    f"{info.save_path} (deleted, or its upload did not finish)"
                )
            saved_by = manifest.get("training_id")
            if saved_by is not None and saved_by != self.id:
                raise ModelNotSavedError(
                    f"training {self.id} completed, but the model now at {info.save_path} was "
                    f"saved by training {saved_by}: its own model was deleted, and another "
                    "training saved to the same URL since"
                )
            allowed = config.load_allowed_modules if isinstance(config, TrainerConfig) else None
            return load_model(
                info.save_path, allowed_modules=allowed, storage_options=trainer.storage_options,
                cache_dir=trainer.cache_dir,
            )
        if info.save_path and os.path.isdir(info.save_path):
            saved_by = (read_metadata(info.save_path) or {}).get("training_id")
            if saved_by is not None and saved_by != self.id:
                raise ModelNotSavedError(
                    f"training {self.id} completed, but the model now at {info.save_path} was "
                    f"saved by training {saved_by}: its own model was deleted or moved, and "
                    "another training saved to the same path since"
                )
            allowed = config.load_allowed_modules if isinstance(config, TrainerConfig) else None
            return load_model(info.save_path, allowed_modules=allowed)
        if info.save_path:
            raise ModelNotSavedError(
                f"training {self.id} completed, but its model directory {info.save_path} no "
                "longer exists (deleted or moved)"
            )
        raise ModelNotSavedError(
            f"training {self.id} completed without a save_path, so its model lived only in the "
            "memory of the process that trained it, which no longer holds it; pass save_path= "
            "to train() to keep models"
        )

    def checkpoints(self) -> "list[CheckpointInfo]":
        """The training's checkpoints (``trainerkit.save_checkpoint`` inside
        ``train``), oldest first, as :class:`~trainerkit.CheckpointInfo`
        (``name``, ``path``, ``time``); ``trainerkit.load(info.path)`` loads one.
        [] when there are none, or the trainer has no ``checkpoint_dir``."""
        return self._trainer.list_checkpoints(self.id)

    # -- for trainer implementations -------------------------------------------------

    def _apply(
        self,
        info: TrainingInfo,
        *,
        model: Any = NO_MODEL,
        exception: Optional[BaseException] = None,
    ) -> None:
        """Take ``info`` (already recorded) as the training's new state.

        A terminal future never changes again; ``model`` / ``exception`` are the
        in-process results of a training this process ran.
        """
        with self._condition:
            if self._info.status.is_terminal:
                return
            self._info = info
            if model is not NO_MODEL:
                self._model = model
            if exception is not None:
                self._exception_obj = exception
            if not info.status.is_terminal:
                return  # nobody waits for a change short of the end (wait()'s predicate)
        # Ending the concurrent.futures side wakes every waiter (on the same
        # Condition), outside the lock as its done callbacks must run.
        self._settle_cf(info.status)

    def _settle_cf(self, status: TrainingStatus) -> None:
        # The concurrent.futures side stays PENDING until the training ends, then
        # ends the same way, so that its wait() and as_completed() see the end;
        # results themselves stay ours (result() loads the model). Both
        # set_result and set_exception take a PENDING future (no
        # set_running_or_notify_cancel first: one Condition round less).
        if status is TrainingStatus.CANCELED:
            concurrent.futures.Future.cancel(self)
            concurrent.futures.Future.set_running_or_notify_cancel(self)
            return
        try:
            if status is TrainingStatus.COMPLETED:
                concurrent.futures.Future.set_result(self, None)
            else:
                concurrent.futures.Future.set_exception(self, self._training_exception())
        except concurrent.futures.InvalidStateError:  # settled already: still wake every waiter
            with self._condition:
                self._condition.notify_all()

    def set_result(self, result: Any) -> None:  # pragma: no cover - guard
        raise RuntimeError("a training future's result is set by its trainer")

    def set_exception(self, exception: Optional[BaseException]) -> None:  # pragma: no cover
        raise RuntimeError("a training future's exception is set by its trainer")

    def add_done_callback(self, fn: Callable[["ModelTrainerFutureBase"], Any]) -> None:
        """Call ``fn(future)`` when the training ends (at once if it has)."""
        self._trainer._ensure_observed(self)
        super().add_done_callback(fn)

    def _canceled_error(self) -> TrainingCanceledError:
        reason = "; ".join(e.message for e in self._info.errors if e.message)
        return TrainingCanceledError(
            f"training {self.id} was canceled" + (f": {reason}" if reason else "")
        )

    def _training_exception(self) -> BaseException:
        if self._exception_obj is not None:
            return self._exception_obj
        if not self._info.errors:
            rebuilt: BaseException = TrainingError(f"training {self.id} errored without an error report")
        else:
            first = self._info.errors[0]
            rebuilt = rebuild_exception(first.type, first.message, first.traceback)
        self._exception_obj = rebuilt
        return rebuilt


def rebuild_exception(error_type: str, message: str, traceback_text: str) -> BaseException:
    """The training's own exception type when it can be rebuilt here, else a TrainingError.

    Only types from modules this process has already imported are rebuilt
    (records never trigger imports); the remote traceback travels as
    ``remote_traceback`` and as an exception note.
    """
    exc_class: Any = None
    parts = error_type.split(".")
    if len(parts) == 1:
        exc_class = getattr(builtins, error_type, None)
    else:
        # The longest dotted prefix that is a module; the rest is a (nested) class's qualname.
        for split in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:split])
            module = sys.modules.get(module_name)
            if module is None and module_name in sys.builtin_module_names:
                module = importlib.import_module(module_name)
            if module is None:
                continue
            obj: Any = module
            for part in parts[split:]:
                obj = getattr(obj, part, None) if obj is not None else None
            exc_class = obj
            break
    rebuilt: Optional[BaseException] = None
    if isinstance(exc_class, type) and issubclass(exc_class, Exception):
        try:
            rebuilt = exc_class(message)
        except Exception:
            rebuilt = None
    if rebuilt is None:
        rebuilt = TrainingError(message, error_type=error_type, remote_traceback=traceback_text)
    else:
        rebuilt.remote_traceback = traceback_text  # type: ignore[attr-defined]
        if traceback_text:
            rebuilt.add_note("Traceback of the training:\n" + traceback_text.rstrip())
    return rebuilt
