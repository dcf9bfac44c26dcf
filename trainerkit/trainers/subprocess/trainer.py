"""SUBPROCESS: every training in an OS process of its own.

A segfault, an ``os._exit``, a memory blow-up or a stuck C extension in a
training cannot take the caller down, and a cancel always works:

* **Workers.** A training runs in a worker (see :mod:`trainerkit.supervisor`):
  a fresh interpreter started by exec (running ``trainerkit.worker --serve``) that
  supervises the one training process it forks at start. Workers are started
  ahead of need (``ready_workers``), so starting a training is handing a spec
  to a process that is already up; each serves exactly one training, then
  exits, and a replacement is started at once. Exec rather than fork from the
  caller: the caller's threads, locks, open connections and GPU contexts never
  leak into a training (fork after threads is unsafe), and exec rather than a
  multiprocessing spawn: the caller's ``__main__`` is never re-imported.
* **Queue.** ``max_workers`` trainings run at once; the rest wait, ``QUEUED``,
  in this process (no process is spent on a waiting training). A slot is free
  again when the previous training's process has exited, so its memory (GPU
  memory included) is back before the next one starts.
* **Results.** Models come back through ``save_path`` (required here);
  ``result()`` loads the saved model. Errors carry the exception's type,
  message and the child's traceback text; progress reports show in
  ``get_info()`` while the training runs.
* **Failures.** A training process that exits without an outcome (non-zero
  exit, ``os._exit``, SIGSEGV, SIGKILL, an out-of-memory kill) becomes ERRORED
  with :class:`~trainerkit.errors.TrainingCrashedError` naming the exit code or
  the signal; a module that cannot be imported there, with the ImportError.
* **Cancel.** SIGTERM to the training's whole process group (the training sees
  :class:`~trainerkit.TrainingCanceledError`, so ``finally`` blocks run), then
  SIGKILL after ``cancel_grace_period``; processes the training started go too.
* **Logs.** Each training's stdout and stderr go to ``<log_dir>/<id>.log``;
  ``future.logs()`` reads them, ``logs(follow=True)`` until the training ends.
* **Detach.** Records live in the SQLite store of the state directory and each
  training's worker writes its identity and outcome to a run directory beside
  it (:mod:`trainerkit.rundir`), so any process with the same config sees the
  status and progress, cancels (a pid reused by another process is never
  signalled) and loads results. Without ``detach``, trainings belong to the
  submitting process: its normal exit waits for them (like LOCAL), and if it
  dies they are stopped and recorded as interrupted. With ``detach: true``, or
  after ``shutdown(wait=False)``, they run on without it.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import glob
import logging
import os
import signal
import weakref
from typing import Any, Iterator, Optional, Sequence

from ...capabilities import RequestLevel, SupportLevel
from ...durations import parse_duration
from ...errors import ConfigError, TrainingCanceledError, TrainingCrashedError, TrainingStateError
from ...future import ModelTrainerFutureBase
from ...info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus, utcnow
from ...logfile import read_lines
from ...module import class_path
from ...owner import owner_is_alive, signal_owner
from ...private_files import make_private_dir, open_private
from ...runner import Outcome, TrainingSpec, check_importable_class, inline_arguments, pickle_arguments
from ...store import TrainingStore
from ...store.state_dir import MEMORY_STATE_DIR, STATE_DIR_ENV, open_record_store, resolve_state_dir
from ...trainer import ModelTrainerBase, TrainingRequest
from .config import SubprocessTrainerConfig, gpu_ids
from .dispatcher import _Dispatcher
from .exits import describe_exit, signal_hint
from .handles import WORKER_MODULE, _Run, _Worker, current_sys_path
from .rundir import ARGUMENTS_FILE, OUTCOME_FILE, PROGRESS_FILE, RunDirectory, WorkerRecord, rank_log_path

log = logging.getLogger("trainerkit")

#: Arguments pickled larger than this travel in a file of the run directory, not inline.
INLINE_ARGUMENTS_LIMIT = 32 * 1024


class SubprocessModelTrainer(ModelTrainerBase):
    """``type: SUBPROCESS`` — one OS process per training (see the module docstring)."""

    name = "SUBPROCESS"
    ConfigSchema = SubprocessTrainerConfig
    supports_detach = True
    CAPABILITIES = {
        "cancel": SupportLevel.NATIVE,  # the process group, signalled
        "progress": SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
        "logs": SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
        # Any training may outlive its submitter: a native or best-effort
        # request detaches it whatever the config says, a disable keeps it tied.
        "detach": SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
        # save_path, checkpoint_dir and load take any fsspec URL; the worker
        # gets storage_options through its spec, credentials through its env.
        "remote_storage": SupportLevel.NATIVE,
        # checkpoint_dir, else <state dir>/checkpoints.
        "checkpoints": SupportLevel.NATIVE,
        # Resources(procs_per_node=P): P rank processes with the torchrun variables.
        "multi_process": SupportLevel.NATIVE,
    }

    def capabilities(self) -> dict[str, SupportLevel]:
        """As :attr:`CAPABILITIES`, plus ``gpus`` when the config gives it GPUs."""
        levels = super().capabilities()
        if self._gpus:
            levels["gpus"] = SupportLevel.NATIVE
        if self.config.max_retries > 0:
            levels["retries"] = SupportLevel.NATIVE
        return levels

    def _capability_hint(self, unsupported: Sequence[str]) -> str:
        """As the base; a refusal for lack of ``gpus`` also says how to give this trainer some."""
        hint = super()._capability_hint(unsupported)
        if self._gpus or "gpus" not in unsupported:
            return hint
        found = "its gpus: auto found none (nvidia-smi -L lists none and CUDA_VISIBLE_DEVICES names none)" \
            if self.config.gpus == "auto" else "it has no gpus config"
        mine = (f"trainer {self.instance_name!r} hands out GPUs only from its gpus config, and {found}: "
                "set gpus (auto, or a list of device ids such as [0, 1]) in its config (docs/subprocess.md)")
        return f"{hint}; {mine}" if hint else mine

    def __init__(self, config: SubprocessTrainerConfig, instance_name: str) -> None:
        super().__init__(config, instance_name)
        self._state_dir = resolve_state_dir(config.state_dir)
        self._runs_root = os.path.join(self._state_dir, "runs")
        self._log_dir = os.path.abspath(os.path.expanduser(config.log_dir)) if config.log_dir else os.path.join(
            self._state_dir, "logs"
        )
        self._grace = parse_duration(config.cancel_grace_period).total_seconds()
        self._cwd = os.path.abspath(os.path.expanduser(config.cwd)) if config.cwd else None
        self._gpus = gpu_ids(config.gpus)  # handed out one training at a time by the dispatcher
        self._dispatcher = _Dispatcher(self)
        atexit.register(_wait_at_exit, weakref.ref(self))
        # Idle workers must not outlive a trainer that is dropped without shutdown.
        weakref.finalize(self, self._dispatcher.close).atexit = False

    # -- the backend contract

    def create_store(self) -> TrainingStore:
        if resolve_state_dir(self.config.state_dir) == MEMORY_STATE_DIR:
            raise ConfigError(
                f"trainer {self.instance_name!r} (type SUBPROCESS) needs a state directory, but "
                f"${STATE_DIR_ENV} is {MEMORY_STATE_DIR!r}: trainings run in other processes, "
                "which record into it; set state_dir in the trainer's config to a directory"
            )
        return open_record_store(self.config.state_dir)

    def default_checkpoint_dir(self) -> str:
        """``<state dir>/checkpoints``."""
        return os.path.join(self._state_dir, "checkpoints")

    def prepare_training(self, request: TrainingRequest) -> bytes:
        """Refuse what cannot run in another process; return the pickled arguments."""
        resources = request.resources
        wanted = resources.gpus_per_proc * resources.procs_per_node
        if wanted > len(self._gpus):
            each = f" ({resources.procs_per_node} processes x {resources.gpus_per_proc})" if resources.procs_per_node > 1 else ""
            raise ValueError(
                f"the training asks for {wanted} GPUs{each}, but trainer {self.instance_name!r} hands out "
                f"{len(self._gpus)} ({', '.join(self._gpus)}); ask for at most {len(self._gpus)} in all, or "
                "give the trainer more in its gpus config"
            )
        if request.save_path is None:
            raise ValueError(
                f"trainer {self.instance_name!r} (type SUBPROCESS) trains in another process, so "
                "the model comes back only through save_path: pass save_path='/some/dir' to "
                "train() (with save_with_id=True for one directory per training)"
            )
        check_importable_class(request.module_class)
        if self._cwd and not os.path.isdir(self._cwd):
            raise FileNotFoundError(
                f"the working directory of trainer {self.instance_name!r} (cwd: "
                f"{self._cwd}) does not exist; create it or change the config"
            )
        return pickle_arguments(request.module_class, request.args, request.kwargs)

    def start_training(self, future: ModelTrainerFutureBase, request: TrainingRequest) -> None:
        payload: bytes = request.prepared
        run_dir = self._run_dir(request.training_id)
        run_dir.remove()  # a finished training replaced under the same external id
        make_private_dir(self._log_dir, what="the log directory", setting="log_dir")
        make_private_dir(self._runs_root, what="the run directory", setting="state_dir")
        try:
            run_dir.create()
            if len(payload) > INLINE_ARGUMENTS_LIMIT:
                path = run_dir.file(ARGUMENTS_FILE)
                with os.fdopen(open_private(path, os.O_WRONLY, exclusive=True), "wb") as handle:
                    handle.write(payload)
                # A retried attempt reads the arguments again: they stay until the run
                # directory goes (with the training's record).
                arguments: dict[str, Any] = {
                    "pickle_file": path, "remove_after_load": self.config.max_retries == 0,
                }
            else:
                arguments = inline_arguments(payload)
        except OSError as exc:
            run_dir.remove()
            raise OSError(
                f"cannot prepare training {request.training_id} in {self._state_dir} "
                f"(log dir {self._log_dir}): {exc.strerror or exc}; make it writable or set "
                "state_dir/log_dir in the trainer's config"
            ) from exc
        assert request.save_path is not None
        spec = TrainingSpec(
            training_id=request.training_id,
            module=class_path(request.module_class),
            arguments=arguments,
            save_path=request.save_path,
            sys_path=tuple(current_sys_path()),
            cwd=self._cwd or os.getcwd(),
            environ={**os.environ, **self.config.env},
            log_path=os.devnull if "logs" in request.disabled else self._log_path(request.training_id),
            run_dir=run_dir.path,
            cancel_grace_period=self._grace,
            detach=_detaches(self.config.detach, request),
            submitter=self.owner,
            progress="progress" not in request.disabled,
            storage_options=self.storage_options or None,
            checkpoint_dir=self.checkpoint_dir(),
            resume_from=request.resume_from,
            cache_dir=self.cache_dir,
            procs_per_node=request.resources.procs_per_node,
        )
        run = _Run(future, spec, run_dir)
        run.gpus_needed = request.resources.gpus_per_proc * request.resources.procs_per_node
        try:
            self._dispatcher.submit(run)
        except BaseException:
            run_dir.remove()
            raise

    def cancel_training(self, future: ModelTrainerFutureBase) -> bool:
        run = self._dispatcher.find(future.id)
        if run is None:
            return self._cancel_elsewhere(future)
        result = self._dispatcher.cancel(run)
        if result == "queued":
            self.mark_canceled(future, "canceled while queued")
            return True
        if result == "signaled":
            log.info("cancel requested for training %s", future.id)
        return result == "signaled"

    def training_logs(self, future: ModelTrainerFutureBase, follow: bool, rank: int = 0) -> Iterator[str]:
        return read_lines(
            rank_log_path(self._log_path(future.id), rank),
            follow=follow,
            finished=lambda: future.get_info().status.is_terminal,
        )

    def recover_training(self, info: TrainingInfo) -> Optional[dict[str, Any]]:
        """A live record whose submitting process is gone: the run directory says the rest."""
        run_dir = self._run_dir(info.id)
        record = run_dir.read_worker()
        # The submitter may have gone before the worker's "running" event reached it.
        started = _started_changes(info, record)
        outcome = run_dir.read_outcome()
        if outcome is not None:
            return {**started, **_outcome_changes(outcome)}
        if record is None:
            return None  # never reached a worker: interrupted while queued
        if owner_is_alive(record.supervisor) is False:
            outcome = run_dir.read_outcome()  # written just before the worker exited?
            if outcome is not None:
                return {**started, **_outcome_changes(outcome)}
            return dict(
                started,
                status=TrainingStatus.ERRORED,
                completion_time=utcnow(),
                errors=(
                    ErrorDetail.of(
                        TrainingCrashedError,
                        f"the worker process of the training ({record.supervisor}) ended without "
                        "reporting an outcome: it was killed (SIGKILL by a user or the "
                        "out-of-memory killer) or the machine restarted",
                    ),
                ),
            )
        changes: dict[str, Any] = dict(started)
        if info.status is TrainingStatus.QUEUED:
            changes.update(status=TrainingStatus.RUNNING)
        progress = run_dir.read_progress()
        if progress is not None and _newer(progress, info.progress):
            changes["progress"] = progress
        return changes

    # -- public extras

    def shutdown(self, wait: bool = True) -> None:
        """Take no more trainings.

        With ``wait``, wait until queued and running trainings have finished.
        Without, return at once and let them run on without this process (as
        with ``detach: true``): this process's exit then waits only until its
        queued trainings have started.
        """
        self._closed = True
        if not wait:
            self._dispatcher.release()
        self._dispatcher.close()
        if wait:
            self._dispatcher.wait_idle()
        super().shutdown(wait=wait)

    def delete_training(self, training_id: str, delete_model: bool = False, keep_checkpoints: bool = False) -> None:
        """As :meth:`ModelTrainerBase.delete_training`; also removes the log and run files."""
        super().delete_training(training_id, delete_model=delete_model, keep_checkpoints=keep_checkpoints)
        self._remove_files(training_id)

    def purge_finished(self, older_than: Optional[datetime.timedelta] = None) -> list[str]:
        """As :meth:`ModelTrainerBase.purge_finished`; also removes logs and run files."""
        purged = super().purge_finished(older_than)
        for training_id in purged:
            self._remove_files(training_id)
        return purged

    def log_path(self, training_id: str, rank: int = 0) -> str:
        """The log file of a training (stdout and stderr of its process; of
        rank ``rank``'s process in a multi-process training)."""
        return rank_log_path(self._log_path(training_id), rank)

    # -- reports from the dispatcher (its thread)

    def _on_running(self, run: _Run, record: WorkerRecord) -> None:
        if run.spec.attempt > 1:  # a retry: the training has been RUNNING since its first attempt
            info = self.mark_attempt(
                run.future, run.spec.attempt, f"attempt {run.spec.attempt} of {self.config.max_retries + 1}"
            )
        else:
            info = self.mark_running(run.future, start_time=record.start_time, devices=run.devices)
        if info.status is TrainingStatus.CANCELED and not run.cancel_requested:
            # Canceled from another process while it was being handed over: stop it.
            self._dispatcher.cancel(run)

    def _on_progress(self, run: _Run, report: ProgressReport) -> None:
        self.mark_progress(run.future, report)

    def _on_outcome(self, run: _Run, outcome: Outcome) -> None:
        if self._retry(run, outcome):
            return
        self.mark_outcome(run.future, outcome)
        level = logging.DEBUG if outcome.status is TrainingStatus.COMPLETED else logging.INFO
        log.log(level, "training %s %s", run.future.id, outcome.status.value)

    def _on_worker_lost(self, run: _Run, worker: _Worker, returncode: Optional[int]) -> None:
        outcome = run.run_dir.read_outcome()  # written before the worker exited, if it could
        if outcome is None:
            if run.cancel_requested:
                outcome = Outcome(
                    TrainingStatus.CANCELED, utcnow(), (ErrorDetail.of(TrainingCanceledError, "canceled"),)
                )
            else:
                message = (
                    f"the worker process (pid {worker.pid}) of training {run.future.id} "
                    f"{describe_exit(returncode)} before reporting an outcome{signal_hint(returncode)}"
                )
                error = ErrorDetail.of(TrainingCrashedError, message, worker.stderr_text())
                outcome = Outcome(TrainingStatus.ERRORED, utcnow(), (error,))
        self._on_outcome(run, outcome)

    def _retry(self, run: _Run, outcome: Outcome) -> bool:
        """Start the next attempt of a training whose attempt crashed (or raised,
        with ``retry_on_error``), while ``max_retries`` allows; True if started.

        The retry loop around "start a worker, wait for its outcome": the new
        attempt is a new run of the same id and spec (``attempt`` + 1), queued
        like any training; the log file keeps every attempt's output.
        """
        attempt, limit = run.spec.attempt, self.config.max_retries
        if outcome.status is not TrainingStatus.ERRORED or run.cancel_requested or attempt > limit:
            return False
        error = outcome.errors[0] if outcome.errors else None
        kind = (error.type if error is not None else "").rsplit(".", 1)[-1]
        if kind in ("TrainingInterruptedError", "SpecError"):
            return False  # its submitter is gone, or it cannot run at all: no point retrying
        if kind != "TrainingCrashedError" and not self.config.retry_on_error:
            return False
        reason = error.message if error is not None else "it failed"
        detail = f"attempt {attempt + 1} of {limit + 1}: attempt {attempt} failed: {reason}"
        info = self.mark_attempt(run.future, attempt + 1, detail[:500])
        if info.status.is_terminal:  # canceled meanwhile
            return True
        for name in (OUTCOME_FILE, PROGRESS_FILE):  # the next attempt writes its own
            try:
                os.unlink(run.run_dir.file(name))
            except OSError:
                pass
        if run.spec.log_path and run.spec.log_path != os.devnull:
            try:
                with open(run.spec.log_path, "a", encoding="utf-8") as handle:
                    handle.write(f"[trainerkit] {detail}\n")
            except OSError as exc:
                log.warning("cannot note the retry in the log of %s: %s", run.future.id, exc)
        log.warning("training %s: %s", run.future.id, detail)
        retry = _Run(run.future, dataclasses.replace(run.spec, attempt=attempt + 1), run.run_dir)
        retry.gpus_needed = run.gpus_needed
        self._dispatcher.submit(retry)
        return True

    def _on_start_failed(self, run: _Run, why: str, detail: str = "") -> None:
        error = ErrorDetail.of(TrainingCrashedError, why, detail)
        self._on_outcome(run, Outcome(TrainingStatus.ERRORED, utcnow(), (error,)))

    def _on_gone_while_queued(self, run: _Run, info: TrainingInfo) -> None:
        self.mark_observed(run.future, info)
        run.run_dir.remove()

    def _finished_since(self, since: datetime.datetime) -> list[TrainingInfo]:
        return self.list_trainings(status=_FINISHED, since=since)

    # -- internals

    def _cancel_elsewhere(self, future: ModelTrainerFutureBase) -> bool:
        """Cancel a training that another process submitted."""
        info = self._load_info(future.id)
        if info is None:
            return False
        self.mark_observed(future, info)
        if info.status.is_terminal:
            return False
        record = self._run_dir(future.id).read_worker()
        if record is None:
            # Still in its submitter's queue: the record's first final status wins, and
            # that process drops it (or stops it, if it was just being handed over).
            info = self.mark_canceled(future, "canceled while queued")
            return info.status is TrainingStatus.CANCELED
        try:
            delivered = signal_owner(record.supervisor, signal.SIGTERM, command_marker=WORKER_MODULE)
        except ValueError:
            raise TrainingStateError(
                f"training {future.id} runs on another host ({record.supervisor}); cancel it "
                "from a process on that host"
            ) from None
        except PermissionError:
            raise TrainingStateError(
                f"training {future.id} runs as another user ({record.supervisor}); cancel it as "
                "that user"
            ) from None
        if not delivered:  # its worker is gone: the record catches up
            self.mark_observed(future, self._load_info(future.id) or info)
            return False
        log.info("cancel requested for training %s (worker %s)", future.id, record.supervisor)
        return True

    def _run_dir(self, training_id: str) -> RunDirectory:
        return RunDirectory(os.path.join(self._runs_root, training_id))

    def _log_path(self, training_id: str) -> str:
        return os.path.join(self._log_dir, f"{training_id}.log")

    def _remove_files(self, training_id: str) -> None:
        self._run_dir(training_id).remove()
        path = self._log_path(training_id)
        # Rank k's log is <id>.rank<k>.log (a multi-process training).
        rank_logs = glob.glob(glob.escape(rank_log_path(path, 1)).replace(".rank1.", ".rank*."))
        for name in [path, *rank_logs]:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the log %s of training %s: %s", name, training_id, exc)

    def _wait_at_exit(self) -> None:
        if not self._dispatcher.must_wait_at_exit():
            return
        # Only handing detached trainings over (milliseconds) is not worth a warning.
        level = logging.WARNING if self._dispatcher.waits_for_trainings() else logging.DEBUG
        log.log(
            level,
            "waiting for the trainings of SUBPROCESS trainer %r before exiting (detach: true, "
            "or shutdown(wait=False), lets started ones run on without this process)",
            self.instance_name,
        )
        self._dispatcher.wait_for_exit()


def _wait_at_exit(ref: "weakref.ReferenceType[SubprocessModelTrainer]") -> None:
    trainer = ref()
    if trainer is not None:
        trainer._wait_at_exit()


def _newer(report: ProgressReport, than: Optional[ProgressReport]) -> bool:
    if than is None:
        return True
    if report.time is None or than.time is None:
        return report != than
    return report.time > than.time


_FINISHED = tuple(status for status in TrainingStatus if status.is_terminal)


def _started_changes(info: TrainingInfo, record: Optional[WorkerRecord]) -> dict[str, Any]:
    """The start time and devices of the worker record that ``info`` does not have yet."""
    changes: dict[str, Any] = {}
    if record is not None and info.start_time is None:
        changes["start_time"] = record.start_time
    if record is not None and record.devices and not info.devices:
        changes["devices"] = record.devices
    return changes


def _outcome_changes(outcome: Outcome) -> dict[str, Any]:
    changes: dict[str, Any] = dict(status=outcome.status, completion_time=outcome.time, errors=outcome.errors)
    if outcome.progress is not None:
        changes["progress"] = outcome.progress
    return changes


def _detaches(configured: bool, request: TrainingRequest) -> bool:
    """Whether a training outlives its submitter: the config's ``detach``,
    unless the training asked for it (native, best-effort) or turned it off."""
    if "detach" in request.disabled:
        return False
    wanted = request.requested.get("detach")
    return configured or wanted in (RequestLevel.NATIVE, RequestLevel.BEST_EFFORT)
