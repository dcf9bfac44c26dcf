"""LOCAL: trainings run on a bounded pool of threads in this process.

``max_workers`` trainings run at once; the rest wait, really ``QUEUED``. A queued
training that is canceled never starts. A running one is canceled two ways:
cooperatively (``report_progress`` and ``check_canceled`` raise
:class:`~trainerkit.TrainingCanceledError`) and, unless ``interrupt_on_cancel``
is off, by raising that exception asynchronously in the training's thread,
which stops pure-Python loops between two bytecodes. Code blocked inside a C
call (a long ``time.sleep``, a BLAS kernel) only sees it when the call returns;
use SUBPROCESS for trainings that must die at once.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import queue
import tempfile
import threading
import weakref
from typing import Any, Callable, Iterator, Optional

from .. import checkpoints
from ..capabilities import SupportLevel
from ..errors import TrainingCanceledError, TrainingStateError
from ..future import ModelTrainerFutureBase
from ..info import ProgressReport, TrainingStatus
from ..progress import TrainingContext, training_context
from ..runner.run import train_and_save
from ..schema import option
from ..logfile import capture_thread_output, read_lines
from ..private_files import make_private_dir
from ..store.state_dir import MEMORY_STATE_DIR, open_record_store, resolve_state_dir
from ..store import TrainingStore
from ..trainer import ModelTrainerBase, TrainingRequest
from ..trainer_config import MachineTrainerConfig

log = logging.getLogger("trainerkit")


@dataclasses.dataclass(frozen=True)
class LocalTrainerConfig(MachineTrainerConfig):
    """Config keys of ``type: LOCAL`` (and the shared ones of MachineTrainerConfig)."""

    interrupt_on_cancel: bool = option(
        True,
        doc="cancel() also raises TrainingCanceledError inside the running training's thread, "
        "which stops pure-Python loops; false leaves cancel cooperative only",
    )
    wait_at_exit: bool = option(
        True,
        doc="a normal exit of the interpreter waits for queued and running trainings, as "
        "concurrent.futures.ThreadPoolExecutor does; false: the interpreter exits without "
        "them, and they are recorded ERRORED (interrupted)",
    )
    capture_output: bool = option(
        True,
        doc="what a training's thread prints and logs goes to its own log file (future.logs()) "
        "as well as to the terminal; false leaves sys.stdout, sys.stderr and logging untouched "
        "(future.logs() then has nothing to show)",
    )


class _RunState:
    """One training's cancel handshake between cancel() and its thread."""

    QUEUED, TRAINING, FINISHING = "queued", "training", "finishing"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = self.QUEUED
        self.canceled = False
        self.thread_id: Optional[int] = None
        self.injected = False

    @property
    def requested(self) -> bool:
        """A cancel was asked for (the :class:`trainerkit.runner.run.Cancel` protocol)."""
        return self.canceled

    def arm(self) -> None:
        """The thread is already interruptible (see ``_run``): nothing to do."""

    def disarm(self) -> None:
        """Leave the interruptible phase; drop an interrupt not yet delivered."""
        while True:
            try:
                with self.lock:
                    self.phase = self.FINISHING
                    if self.injected and self.thread_id is not None:
                        _set_async_exception(self.thread_id, None)
                        self.injected = False
                return
            except TrainingCanceledError:
                continue  # the interrupt landed here; the flag already says canceled


def _set_async_exception(thread_id: int, exc_type: Optional[type]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


class _ThreadPool:
    """At most ``max_workers`` threads taking jobs from one queue, started as needed.

    ``concurrent.futures.ThreadPoolExecutor`` minus its per-job Future: the
    training future already tracks each job, so a second one is pure overhead.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._queue: "queue.SimpleQueue[Optional[tuple[Callable[..., None], tuple[Any, ...]]]]" = (
            queue.SimpleQueue()
        )
        # One token per idle thread: deque appends and pops are atomic, so
        # handing a job to an idle thread takes no Python-level lock (a
        # threading.Semaphore is a Condition and a lock per job).
        self._idle: "collections.deque[None]" = collections.deque()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        self._queue.put((function, args))
        if self._idle:
            try:
                self._idle.pop()  # an idle thread takes the job
                return
            except IndexError:  # another submitter took the last one meanwhile
                pass
        with self._lock:
            if len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            function, args = job
            try:
                function(*args)
            except BaseException:  # a job reports its own failures; keep the thread alive
                log.exception("a %s job failed", self._name)
            del job, function, args
            self._idle.append(None)

    def shutdown(self, wait: bool) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)  # after every queued job: they still run
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


def _ignore(report: ProgressReport) -> None:
    """The progress of a training that turned the progress capability off."""


class LocalModelTrainer(ModelTrainerBase):
    """``type: LOCAL`` — threads in this process (see the module docstring)."""

    name = "LOCAL"
    ConfigSchema = LocalTrainerConfig
    CAPABILITIES = {
        # A thread cannot be stopped from outside: cancel lands at the training's
        # next Python-level check (or report_progress/check_canceled).
        "cancel": SupportLevel.BEST_EFFORT,
        "progress": SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
        "logs": SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
        # save_path, checkpoint_dir and load take any fsspec URL (docs/storage.md).
        "remote_storage": SupportLevel.NATIVE,
        # checkpoint_dir, else <state dir>/checkpoints (a temporary one with ':memory:').
        "checkpoints": SupportLevel.NATIVE,
    }

    def capabilities(self) -> dict[str, SupportLevel]:
        """As :attr:`CAPABILITIES`; no ``logs`` with ``capture_output: false``."""
        levels = super().capabilities()
        if not self.config.capture_output:
            levels["logs"] = SupportLevel(0)
        return levels

    def __init__(self, config: LocalTrainerConfig, instance_name: str) -> None:
        super().__init__(config, instance_name)
        self._executor = _ThreadPool(config.max_workers, f"trainerkit-{instance_name}")
        # None: records in memory and no log_dir, so a private temporary
        # directory (never a predictable name in /tmp) made at the first use.
        self._log_dir: Optional[str] = None
        if config.log_dir:
            self._log_dir = os.path.abspath(os.path.expanduser(config.log_dir))
        elif resolve_state_dir(config.state_dir) != MEMORY_STATE_DIR:
            self._log_dir = os.path.join(resolve_state_dir(config.state_dir), "logs")
        self._memory_checkpoints: Optional[str] = None
        self._abandoned = False  # shutdown(wait=False): exit does not wait
        self._runs: dict[str, _RunState] = {}
        self._runs_lock = threading.Lock()
        # One hook per trainer (a partial is equal only to itself), dropped at shutdown.
        self._exit_hook = functools.partial(_wait_at_exit, weakref.ref(self))
        if config.wait_at_exit:
            atexit.register(self._exit_hook)

    def create_store(self) -> TrainingStore:
        # Durable by default: records outlive this process (docs/records.md).
        store = open_record_store(self.config.state_dir)
        if self.config.log_dir:  # checked now, not at a training's first print
            make_private_dir(self._log_dir, what="the log directory", setting="log_dir")
        return store

    #: Trainings are threads of this process (memory:// URLs work).
    trains_in_this_process = True

    def default_checkpoint_dir(self) -> str:
        """``<state dir>/checkpoints``; with state_dir ':memory:' a private
        temporary directory made at the first use (like the logs)."""
        state_dir = resolve_state_dir(self.config.state_dir)
        if state_dir != MEMORY_STATE_DIR:
            return os.path.join(state_dir, "checkpoints")
        with self._runs_lock:
            if self._memory_checkpoints is None:
                self._memory_checkpoints = tempfile.mkdtemp(prefix="trainerkit-checkpoints-")
            return self._memory_checkpoints

    def _log_path(self, training_id: str) -> str:
        if self._log_dir is None:
            with self._runs_lock:
                if self._log_dir is None:
                    self._log_dir = tempfile.mkdtemp(prefix="trainerkit-logs-")
        return f"{self._log_dir}{os.sep}{training_id}.log"  # os.path.join costs more, per training

    def training_logs(self, future: ModelTrainerFutureBase, follow: bool) -> Iterator[str]:
        """What the training's thread printed and logged (see trainerkit.logfile)."""
        return read_lines(
            self._log_path(future.id),
            follow=follow,
            finished=lambda: future.get_info().status.is_terminal,
        )

    def start_training(self, future: ModelTrainerFutureBase, request: TrainingRequest) -> None:
        state = _RunState()
        with self._runs_lock:
            self._runs[request.training_id] = state
        try:
            self._executor.submit(self._run, future, request, state)
        except BaseException:
            with self._runs_lock:
                self._runs.pop(request.training_id, None)
            raise

    def cancel_training(self, future: ModelTrainerFutureBase) -> bool:
        with self._runs_lock:
            state = self._runs.get(future.id)
        if state is None:
            return self._cancel_foreign(future)
        with state.lock:
            if state.phase == _RunState.FINISHING:
                return False
            state.canceled = True
            if state.phase == _RunState.QUEUED:
                queued = True
            else:
                queued = False
                if self.config.interrupt_on_cancel and state.thread_id is not None and not state.injected:
                    _set_async_exception(state.thread_id, TrainingCanceledError)
                    state.injected = True
        if queued:
            # It never starts: its thread sees the flag and returns at once.
            self.mark_canceled(future, "canceled while queued")
        log.info("cancel requested for training %s", future.id)
        return True

    def _cancel_foreign(self, future: ModelTrainerFutureBase) -> bool:
        raise TrainingStateError(
            f"training {future.id} runs in another process ({self._store.get_owner(future.id)}); "
            "a LOCAL training can only be canceled by the process that runs it (the SUBPROCESS "
            "trainer type supports canceling from any process)"
        )

    def _run(self, future: ModelTrainerFutureBase, request: TrainingRequest, state: _RunState) -> None:
        try:
            with state.lock:
                if state.canceled:
                    return
            self.mark_running(future)
            with state.lock:
                if state.canceled:  # canceled while being marked running: already recorded
                    return
                state.phase = _RunState.TRAINING
                state.thread_id = threading.get_ident()
            self._train_and_report(future, request, state)
        finally:
            with self._runs_lock:
                self._runs.pop(request.training_id, None)

    def _train_and_report(
        self, future: ModelTrainerFutureBase, request: TrainingRequest, state: _RunState
    ) -> None:
        def train() -> Any:
            if "progress" in request.disabled:
                on_progress: Callable[[ProgressReport], Any] = _ignore
            else:
                on_progress = lambda report: self.mark_progress(future, report)  # noqa: E731
            context = TrainingContext(request.training_id, on_progress=on_progress, is_canceled=lambda: state.canceled)
            capture = contextlib.nullcontext() if "logs" in request.disabled else self._output_capture(future.id)
            token = checkpoints.install(checkpoints.CheckpointContext(
                request.training_id, self.checkpoint_store(), resume_from=request.resume_from,
                cache_dir=self.cache_dir,
            ))
            try:
                with training_context(context), capture:
                    return request.module_class.train(*request.args, **request.kwargs)
            finally:
                checkpoints.uninstall(token)

        attempt = train_and_save(
            train, save_path=request.save_path, training_id=request.training_id, cancel=state,
            storage_options=self.storage_options,
        )
        if attempt.status is TrainingStatus.CANCELED:
            self.mark_canceled(future, "canceled while running")
        elif attempt.status is TrainingStatus.ERRORED:
            error = attempt.error
            log.info("training %s errored: %s: %s", future.id, type(error).__name__, error)
            # An exception is handed to result() as raised; leaving the interpreter from
            # inside train() (sys.exit, Ctrl-C) must not leave the caller's: it is recorded.
            self.mark_errored(future, error if isinstance(error, Exception) else attempt.error_detail())
        else:
            self.mark_completed(future, attempt.model)

    def _output_capture(self, training_id: str) -> Any:
        if not self.config.capture_output:
            return contextlib.nullcontext()
        return capture_thread_output(self._log_path(training_id))

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking trainings; with ``wait``, let queued and running ones finish.

        Without, return at once: trainings still running stop when the
        interpreter exits (and are then recorded interrupted).
        """
        self._closed = True
        self._abandoned = not wait
        atexit.unregister(self._exit_hook)
        self._executor.shutdown(wait=wait)
        super().shutdown(wait=wait)

    def _wait_at_exit(self) -> None:
        if self._abandoned:
            return
        with self._runs_lock:
            pending = len(self._runs)
        if pending:
            log.warning(
                "waiting for %d training(s) of LOCAL trainer %r before exiting (wait_at_exit: "
                "false, or shutdown(wait=False), lets the interpreter exit without them)",
                pending, self.instance_name,
            )
        self.shutdown(wait=True)  # also writes the last record changes


def _wait_at_exit(ref: "weakref.ReferenceType[LocalModelTrainer]") -> None:
    trainer = ref()
    if trainer is not None:
        trainer._wait_at_exit()
