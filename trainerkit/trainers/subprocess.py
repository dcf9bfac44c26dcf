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
import collections
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Iterator, Literal, Optional

from ..durations import parse_duration
from ..errors import ConfigError, TrainingStateError
from ..future import ModelTrainerFutureBase
from ..info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus, utcnow
from ..logfile import read_lines
from ..module import class_path
from ..owner import owner_is_alive, signal_owner
from ..rundir import ARGUMENTS_FILE, Outcome, RunDirectory, WorkerRecord
from ..schema import option
from ..state_dir import (
    MEMORY_STATE_DIR,
    STATE_DIR_ENV,
    check_state_dir,
    open_record_store,
    resolve_state_dir,
)
from ..store import TrainingQuery, TrainingStore
from ..trainer import ModelTrainerBase, TrainingRequest
from ..worker import TrainingSpec, check_importable_class, inline_arguments, pickle_arguments

log = logging.getLogger("trainerkit")

#: Arguments pickled larger than this travel in a file of the run directory, not inline.
INLINE_ARGUMENTS_LIMIT = 32 * 1024
#: A worker that dies this many times in a row before it is ready stops the pre-starting.
_MAX_START_FAILURES = 3
# How long to wait for a worker that refused its spec to finish exiting, in seconds.
_EXIT_REPORT_WAIT = 2.0
#: How often queued trainings are checked for a cancel made by another process, in seconds.
_QUEUED_CHECK_INTERVAL = 1.0
_STDERR_TAIL = 8192
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ENV_NAME = re.compile(r"^[^=\0]+\Z")


def _check_preload(modules: list) -> Optional[str]:
    bad = [name for name in modules if not _MODULE_NAME.match(name)]
    return f"{bad} are not module names (like 'numpy' or 'torch.nn')" if bad else None


def _check_env(env: dict) -> Optional[str]:
    bad = [name for name in env if not _ENV_NAME.match(name)]
    if bad:
        return f"{bad} are not environment variable names (non-empty, without '=' or NUL)"
    if any("\0" in value for value in env.values()):
        return "values must not contain NUL characters"
    return None


def _check_path(value: str) -> Optional[str]:
    if not value.strip() or "\0" in value:
        return f"{value!r} is not a usable directory path"
    return None


@dataclasses.dataclass(frozen=True)
class SubprocessTrainerConfig:
    """Config keys of ``type: SUBPROCESS``."""

    max_workers: int = option(
        1,
        minimum=1,
        doc="trainings that run at once; the others wait QUEUED. Default 1, as for LOCAL: a "
        "training usually takes the whole machine (all cores, or the GPU's memory); raise it "
        "for light trainings",
    )
    start_method: Literal["prestarted", "exec"] = option(
        "prestarted",
        doc="'prestarted': ready_workers worker processes are started ahead of need, so a "
        "training starts by handing its spec to a process that is already up; 'exec': a "
        "worker is started when a training starts (it pays an interpreter start and "
        "trainerkit's import), and no process waits idle. Either way each training gets a "
        "fresh interpreter of its own, started by exec, never a fork of the caller",
    )
    ready_workers: int = option(
        1,
        minimum=1,
        maximum=64,
        doc="with start_method 'prestarted': how many idle workers are kept ready (each an "
        "interpreter with trainerkit and the preload modules imported); one is replaced as "
        "soon as it takes a training",
    )
    preload: list[str] = option(
        default_factory=list,
        check=_check_preload,
        doc="modules ready workers import before they get a training, so trainings skip "
        "their import time: list heavy, stable dependencies (torch, transformers). Your own "
        "module is always imported fresh, so edits to it take effect",
    )
    env: dict[str, str] = option(
        default_factory=dict,
        check=_check_env,
        doc="environment variables added to (or replacing) the submitting process's "
        "environment in the training's process",
    )
    cwd: Optional[str] = option(
        None,
        check=_check_path,
        doc="working directory of trainings; null: the submitting process's working "
        "directory at train() time",
    )
    log_dir: Optional[str] = option(
        None,
        check=_check_path,
        doc="directory of the per-training log files (<training id>.log, stdout and stderr "
        "together); null: <state dir>/logs",
    )
    cancel_grace_period: datetime.timedelta = option(
        "10s",
        doc="time between SIGTERM and SIGKILL when a training is canceled (or its process "
        "must stop): the training sees TrainingCanceledError at once and may clean up in "
        "'finally' blocks. Default 10 s, as docker stop: enough to close files and write a "
        "checkpoint, short enough that a stuck training frees the machine soon",
    )
    detach: bool = option(
        False,
        doc="trainings keep running when the submitting process exits; its normal exit "
        "then waits only until its queued trainings have started. false: its normal exit waits "
        "for them, and if it is killed they are stopped (recorded as interrupted)",
    )
    retention_duration: Optional[datetime.timedelta] = option(
        None,
        doc="finished trainings are forgotten this long after they end (caikit syntax: "
        "'7d12h', '90m'); null keeps them until deleted",
    )
    retention_delete_models: bool = option(
        False,
        doc="when retention_duration purges a finished training, also delete its saved model "
        "directory (only a directory trainerkit saved for that very training)",
    )
    state_dir: Optional[str] = option(
        None,
        check=check_state_dir,
        doc="directory of the durable training records (trainings.sqlite3, shared with LOCAL "
        "trainers and other processes) and of the trainings' run directories; null: "
        "$TRAINERKIT_STATE_DIR, else $XDG_STATE_HOME/trainerkit, else "
        "~/.local/state/trainerkit. ':memory:' is refused: trainings in other processes need "
        "durable records",
    )

    def validate(self) -> list[str]:
        if self.state_dir == MEMORY_STATE_DIR:
            return [
                "state_dir: ':memory:' cannot hold SUBPROCESS records: trainings run in other "
                "processes, which record into the state directory; give a directory path (or "
                "leave it null for the default)"
            ]
        return []


# -- the submitting side of one training and one worker --------------------------------


class _Run:
    """One training of this process, from submission to outcome."""

    QUEUED, HANDED, RUNNING, FINISHING, DONE = "queued", "handed", "running", "finishing", "done"

    def __init__(self, future: ModelTrainerFutureBase, spec: TrainingSpec, run_dir: RunDirectory) -> None:
        self.future = future
        self.spec = spec
        self.run_dir = run_dir
        self.phase = self.QUEUED
        self.worker: Optional[_Worker] = None
        self.cancel_requested = False
        self.detached = spec.detach
        self.spec_sent = False  # the worker has the spec: it can run on without this process
        self.attempts = 0


class _Worker:
    """One worker process (supervisor + training process) as seen from here."""

    def __init__(self, process: subprocess.Popen, events_fd: int) -> None:
        self.process = process
        self.events_fd = events_fd
        self.stderr_fd = process.stderr.fileno() if process.stderr else -1
        self.buffer = bytearray()
        self.stderr_tail = bytearray()
        self.ready = False
        self.run: Optional[_Run] = None
        self.exited = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        return self.stderr_tail.decode("utf-8", "replace").strip()


def _report(method: Any, run: _Run, *args: Any) -> None:
    """Call a trainer's report method; a failure (a locked store...) is logged, and
    the dispatcher carries on with the other trainings."""
    try:
        method(run, *args)
    except Exception:
        log.exception("recording the end of training %s failed", run.future.id)


def _worker_command(events_fd: int, settings: dict[str, Any]) -> list[str]:
    import trainerkit

    # The worker must import this very trainerkit, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(trainerkit.__file__)))
    bootstrap = (
        f"import sys; root = {root!r}\n"
        "if root not in sys.path: sys.path.insert(0, root)\n"
        "from trainerkit.worker import main; sys.exit(main(sys.argv[1:]))"
    )
    return [
        sys.executable,
        "-c",
        bootstrap,
        "--serve",
        "--events-fd",
        str(events_fd),
        "--settings",
        json.dumps(settings),
    ]


def _current_sys_path() -> list[str]:
    cwd = os.getcwd()
    return [os.path.abspath(entry) if entry else cwd for entry in sys.path if isinstance(entry, str)]


class _Dispatcher:
    """Workers, the queue and the runs of one trainer, driven by one thread.

    The thread owns the selector and reads every pipe. Other threads queue
    work (:meth:`submit`), signal workers (:meth:`cancel`), tell running
    workers they are released (:meth:`release`) and wake it; the shared state
    is guarded by ``lock``, a Condition that waiters use too.
    """

    def __init__(self, trainer: "SubprocessModelTrainer") -> None:
        self._trainer_ref = weakref.ref(trainer)
        config = trainer.config
        self.name = trainer.instance_name
        self.max_workers: int = config.max_workers
        self.prestart = config.start_method == "prestarted"
        self.ready_workers: int = config.ready_workers
        self.preload: list[str] = list(config.preload)
        self.env: dict[str, str] = dict(config.env)
        self.cwd: Optional[str] = trainer._cwd
        self.lock = threading.Condition()
        self.queue: "collections.deque[_Run]" = collections.deque()
        self.active: dict[str, _Run] = {}  # handed to a worker, until that worker exits
        self.idle: list[_Worker] = []
        self.workers: dict[int, _Worker] = {}  # by events fd
        self.start_failures = 0
        self.closing = False
        self.release_all = False
        self.thread: Optional[threading.Thread] = None
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.last_queued_check = 0.0

    # -- called from any thread

    def submit(self, run: _Run) -> None:
        with self.lock:
            if self.release_all:
                run.detached = True
                run.spec = dataclasses.replace(run.spec, detach=True)
            self.queue.append(run)
            self._ensure_thread()
        self.wake()

    def find(self, training_id: str) -> Optional[_Run]:
        with self.lock:
            run = self.active.get(training_id)
            if run is None:
                run = next((r for r in self.queue if r.future.id == training_id), None)
            return run

    def cancel(self, run: _Run) -> str:
        """'queued' (removed from the queue), 'signaled', or 'late' (it is finishing)."""
        with self.lock:
            if run.phase == _Run.QUEUED and run in self.queue:
                self.queue.remove(run)
                run.phase = _Run.DONE
                self.lock.notify_all()
                return "queued"
            if run.phase in (_Run.FINISHING, _Run.DONE):
                return "late"
            run.cancel_requested = True
            worker = run.worker
        if worker is not None:
            self._signal(worker, signal.SIGTERM)
        return "signaled"

    def release(self) -> None:
        """Let every training of this trainer outlive this process."""
        with self.lock:
            self.release_all = True
            runs = list(self.active.values()) + list(self.queue)
            for run in runs:
                if run.detached:
                    continue
                run.detached = True
                run.spec = dataclasses.replace(run.spec, detach=True)
                if run.worker is not None:
                    self._write(run.worker, {"detach": True})
        self.wake()

    def close(self) -> None:
        """Take no more trainings; idle workers exit; the thread ends once all runs have."""
        with self.lock:
            self.closing = True
            if self.thread is None or not self.thread.is_alive():
                self._stop_idle_workers()  # no thread, no runs: nothing else touches them
        self.wake()

    def wait_idle(self) -> None:
        """Wait until nothing is queued and nothing runs."""
        with self.lock:
            self.lock.wait_for(lambda: not self.queue and not self.active)

    def _may_exit(self) -> bool:
        # A detached training may be left once its worker has said it runs: then
        # its worker record is on disk, so other processes never mistake it for
        # a training that died with this process.
        return not self.queue and all(
            run.detached and run.phase in (_Run.RUNNING, _Run.FINISHING, _Run.DONE)
            for run in self.active.values()
        )

    def waits_for_trainings(self) -> bool:
        """True when exiting waits for queued trainings or ones that stop with this process."""
        with self.lock:
            return bool(self.queue) or any(not run.detached for run in self.active.values())

    def must_wait_at_exit(self) -> bool:
        """True while this process has trainings to start, or trainings that stop with it."""
        with self.lock:
            return not self._may_exit()

    def wait_for_exit(self) -> None:
        """Wait until every queued training has started and every one that would stop
        with this process has ended."""
        with self.lock:
            self.lock.wait_for(self._may_exit)

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (the pipe is full), or closed

    def _ensure_thread(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=self._loop, name=f"trainerkit-subprocess-{self.name}", daemon=True
            )
            self.thread.start()

    def _signal(self, worker: _Worker, signum: int) -> None:
        # Our own child, and not reaped: _worker_exited marks it exited (under the
        # lock) before reaping it, so its pid cannot belong to another process here.
        with self.lock:
            if worker.exited:
                return
            try:
                worker.process.send_signal(signum)
            except OSError:
                pass

    def _write(self, worker: _Worker, message: dict[str, Any]) -> bool:
        stdin = worker.process.stdin
        if stdin is None or stdin.closed:
            return False
        try:
            stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    # -- the thread

    def _loop(self) -> None:
        try:
            while True:
                with self.lock:
                    if self.closing and not self.queue and not self.active:
                        self._stop_idle_workers()
                        self.lock.notify_all()
                        if not self.workers:
                            return
                self._dispatch()
                self._replenish()
                self._check_queued()
                timeout = _QUEUED_CHECK_INTERVAL if self.queue else None
                if self.closing:
                    timeout = 0.5
                for key, _ in self.selector.select(timeout):
                    if key.fd not in self.selector.get_map():
                        continue  # closed while handling an earlier event of this round
                    if key.data is None:
                        self._drain_wake()
                    else:
                        worker, stream = key.data
                        if stream == "events":
                            self._read_events(worker)
                        else:
                            self._read_stderr(worker)
        except Exception:  # never leave futures hanging silently
            log.exception("the SUBPROCESS dispatcher of %s failed", self.name)
            self._fail_everything()
            raise
        finally:
            with self.lock:
                self.thread = None
                self.lock.notify_all()

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _dispatch(self) -> None:
        while True:
            with self.lock:
                if not self.queue or len(self.active) >= self.max_workers:
                    return
                run = self.queue.popleft()
                run.phase = _Run.HANDED
                self.active[run.future.id] = run
                self.lock.notify_all()
            self._hand_off(run)

    def _hand_off(self, run: _Run) -> None:
        trainer = self._trainer_ref()
        refused: Optional[_Worker] = None
        while run.attempts < _MAX_START_FAILURES:
            run.attempts += 1
            worker = self._take_worker()
            if worker is None:
                break
            # Under the lock: cancel() and release() then see the spec sent, or not the worker.
            with self.lock:
                worker.run = run
                run.worker = worker
                if self._write(worker, run.spec.to_dict()):
                    run.spec_sent = True
                    self.lock.notify_all()
                    if run.cancel_requested:  # canceled while waiting for a worker
                        self._signal(worker, signal.SIGTERM)
                    return
                worker.run = None
                run.worker = None
            refused = worker
        with self.lock:
            self.active.pop(run.future.id, None)
            run.phase = _Run.DONE
            self.lock.notify_all()
        if trainer is not None:
            why, detail = "no worker process could be started (see the log)", ""
            if refused is not None:
                returncode, detail = self._exit_report(refused)
                why = (
                    f"no worker process could take training {run.future.id}: the last one (pid "
                    f"{refused.pid}) {_describe_exit(returncode)} before reporting an outcome"
                )
            _report(trainer._on_start_failed, run, why, detail)

    def _exit_report(self, worker: _Worker) -> "tuple[Optional[int], str]":
        """How a worker that refused its spec ended, and what it printed (its
        stderr is complete once it has exited; this thread reads it here)."""
        try:
            returncode: Optional[int] = worker.process.wait(timeout=_EXIT_REPORT_WAIT)
        except subprocess.TimeoutExpired:
            returncode = None
        while True:
            try:
                data = os.read(worker.stderr_fd, 65536)
            except OSError:  # closed, or nothing more for now
                break
            if not data:
                break
            worker.stderr_tail += data
        del worker.stderr_tail[:-_STDERR_TAIL]
        return returncode, worker.stderr_text()

    def _take_worker(self) -> Optional[_Worker]:
        self.idle.sort(key=lambda worker: not worker.ready)  # ready ones first
        while self.idle:
            worker = self.idle.pop(0)
            if not worker.exited:
                return worker
        try:
            return self._start_worker()
        except OSError as exc:
            log.error("cannot start a SUBPROCESS worker for %s: %s", self.name, exc)
            return None

    def _replenish(self) -> None:
        if not self.prestart or self.closing or self.start_failures >= _MAX_START_FAILURES:
            return
        while len(self.idle) < self.ready_workers:
            try:
                self.idle.append(self._start_worker())
            except OSError as exc:
                self.start_failures += 1
                log.error("cannot start a SUBPROCESS worker for %s: %s", self.name, exc)
                return

    def _start_worker(self) -> _Worker:
        read_fd, write_fd = os.pipe()
        settings = {"preload": self.preload, "sys_path": _current_sys_path()}
        env = {**os.environ, **self.env}
        try:
            process = subprocess.Popen(
                _worker_command(write_fd, settings),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own session: no terminal signals, and killable as a group
                cwd=self.cwd if self.cwd and os.path.isdir(self.cwd) else None,
                env=env,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        if process.stdin is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            try:  # room for a whole spec, so handing it over never waits for the worker
                fcntl.fcntl(process.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
        worker = _Worker(process, read_fd)
        self.workers[read_fd] = worker
        self.selector.register(read_fd, selectors.EVENT_READ, (worker, "events"))
        if worker.stderr_fd >= 0:
            os.set_blocking(worker.stderr_fd, False)
            self.selector.register(worker.stderr_fd, selectors.EVENT_READ, (worker, "stderr"))
        log.debug("started SUBPROCESS worker %d for %s", process.pid, self.name)
        return worker

    def _stop_idle_workers(self) -> None:
        for worker in self.idle:
            stdin = worker.process.stdin
            if stdin is not None and not stdin.closed:
                try:
                    stdin.close()  # end of input: the worker exits
                except OSError:
                    pass
        self.idle.clear()

    def _check_queued(self) -> None:
        now = time.monotonic()
        if not self.queue or now - self.last_queued_check < _QUEUED_CHECK_INTERVAL:
            return
        self.last_queued_check = now
        trainer = self._trainer_ref()
        if trainer is None:
            return
        with self.lock:
            queued = {run.future.id: run for run in self.queue}
        if not queued:
            return
        since = min(run.future._info.submission_time for run in queued.values())
        for info in trainer._finished_since(since):
            run = queued.get(info.id)
            if run is None:
                continue
            with self.lock:
                if run not in self.queue:
                    continue
                self.queue.remove(run)
                run.phase = _Run.DONE
                self.lock.notify_all()
            _report(trainer._on_gone_while_queued, run, info)

    def _read_stderr(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(worker.stderr_fd)
            return
        worker.stderr_tail += data
        del worker.stderr_tail[:-_STDERR_TAIL]
        log.debug("SUBPROCESS worker %d: %s", worker.pid, data.decode("utf-8", "replace").rstrip())

    def _read_events(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.events_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._worker_exited(worker)
            return
        worker.buffer += data
        while b"\n" in worker.buffer:
            line, _, rest = bytes(worker.buffer).partition(b"\n")
            worker.buffer = bytearray(rest)
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("SUBPROCESS worker %d sent an unreadable event: %r", worker.pid, line[:200])
                continue
            self._on_event(worker, event)

    def _on_event(self, worker: _Worker, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            worker.ready = True
            self.start_failures = 0
            return
        run = worker.run
        trainer = self._trainer_ref()
        if run is None or trainer is None:
            return
        try:
            if kind == "running":
                with self.lock:
                    run.phase = _Run.RUNNING
                    self.lock.notify_all()
                trainer._on_running(run, WorkerRecord.from_dict(event.get("worker") or {}))
            elif kind == "progress":
                trainer._on_progress(run, ProgressReport.from_dict(event.get("report") or {}))
            elif kind == "finishing":
                with self.lock:
                    if run.phase == _Run.RUNNING:
                        run.phase = _Run.FINISHING
            elif kind == "outcome":
                with self.lock:
                    run.phase = _Run.DONE
                trainer._on_outcome(run, Outcome.from_dict(event.get("outcome") or {}))
        except Exception:
            log.exception("recording event %r of training %s failed", kind, run.future.id)

    def _worker_exited(self, worker: _Worker) -> None:
        with self.lock:
            worker.exited = True
        self.selector.unregister(worker.events_fd)
        os.close(worker.events_fd)
        self.workers.pop(worker.events_fd, None)
        if worker.stderr_fd >= 0:
            try:
                self._read_stderr(worker)
                self.selector.unregister(worker.stderr_fd)
            except (KeyError, ValueError, OSError):
                pass
        try:
            returncode = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            returncode = None
            log.warning("SUBPROCESS worker %d closed its events but has not exited", worker.pid)
        for stream in (worker.process.stdin, worker.process.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if worker in self.idle:
            self.idle.remove(worker)
        run = worker.run
        if run is None:
            if not worker.ready and not self.closing:
                self.start_failures += 1
                log.warning(
                    "SUBPROCESS worker %d of %s exited (code %s) before it was ready: %s",
                    worker.pid, self.name, returncode, worker.stderr_text() or "no output",
                )
            return
        trainer = self._trainer_ref()
        with self.lock:
            started = run.phase != _Run.HANDED
            finished = run.phase == _Run.DONE
            retry = not started and not run.cancel_requested and run.attempts < _MAX_START_FAILURES
            if retry:
                run.worker = None
            else:
                self.active.pop(run.future.id, None)
                run.phase = _Run.DONE
                self.lock.notify_all()
        if retry:
            log.warning(
                "SUBPROCESS worker %d exited before taking training %s; trying another",
                worker.pid, run.future.id,
            )
            self._hand_off(run)
            return
        if not finished and trainer is not None:
            _report(trainer._on_worker_lost, run, worker, returncode)

    def _fail_everything(self) -> None:
        trainer = self._trainer_ref()
        with self.lock:
            runs = list(self.queue) + list(self.active.values())
            self.queue.clear()
            self.active.clear()
            self.lock.notify_all()
        for run in runs:
            if trainer is not None and run.phase != _Run.DONE:
                _report(trainer._on_start_failed, run, "the SUBPROCESS dispatcher failed (see the log)")


# -- the trainer ------------------------------------------------------------------------------


class SubprocessModelTrainer(ModelTrainerBase):
    """``type: SUBPROCESS`` — one OS process per training (see the module docstring)."""

    name = "SUBPROCESS"
    ConfigSchema = SubprocessTrainerConfig
    supports_detach = True

    def __init__(self, config: SubprocessTrainerConfig, instance_name: str) -> None:
        super().__init__(config, instance_name)
        self._state_dir = resolve_state_dir(config.state_dir)
        self._runs_root = os.path.join(self._state_dir, "runs")
        self._log_dir = os.path.abspath(os.path.expanduser(config.log_dir)) if config.log_dir else os.path.join(
            self._state_dir, "logs"
        )
        self._grace = parse_duration(config.cancel_grace_period).total_seconds()
        self._cwd = os.path.abspath(os.path.expanduser(config.cwd)) if config.cwd else None
        self._dispatcher = _Dispatcher(self)
        self._pending = threading.local()  # arguments pickled by _check_request, for _submit
        atexit.register(_wait_at_exit, weakref.ref(self))
        # Idle workers must not outlive a trainer that is dropped without shutdown.
        weakref.finalize(self, self._dispatcher.close).atexit = False

    # -- hooks of the base class

    def _create_store(self) -> TrainingStore:
        if resolve_state_dir(self.config.state_dir) == MEMORY_STATE_DIR:
            raise ConfigError(
                f"trainer {self.instance_name!r} (type SUBPROCESS) needs a state directory, but "
                f"${STATE_DIR_ENV} is {MEMORY_STATE_DIR!r}: trainings run in other processes, "
                "which record into it; set state_dir in the trainer's config to a directory"
            )
        return open_record_store(self.config.state_dir)

    def _check_request(self, request: TrainingRequest) -> None:
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
        self._pending.payload = (
            request.training_id,
            pickle_arguments(request.module_class, request.args, request.kwargs),
        )

    def _submit(self, future: ModelTrainerFutureBase, request: TrainingRequest) -> None:
        pending = getattr(self._pending, "payload", None)
        self._pending.payload = None
        if pending is not None and pending[0] == request.training_id:
            payload = pending[1]
        else:
            payload = pickle_arguments(request.module_class, request.args, request.kwargs)
        run_dir = self._run_dir(request.training_id)
        run_dir.remove()  # a finished training replaced under the same external id
        try:
            os.makedirs(self._log_dir, exist_ok=True)
            run_dir.create()
            if len(payload) > INLINE_ARGUMENTS_LIMIT:
                path = run_dir.file(ARGUMENTS_FILE)
                with open(path, "wb") as handle:
                    handle.write(payload)
                arguments: dict[str, Any] = {"pickle_file": path, "remove_after_load": True}
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
            sys_path=tuple(_current_sys_path()),
            cwd=self._cwd or os.getcwd(),
            environ={**os.environ, **self.config.env},
            log_path=self._log_path(request.training_id),
            run_dir=run_dir.path,
            cancel_grace_period=self._grace,
            detach=self.config.detach,
            submitter=self._owner,
        )
        try:
            self._dispatcher.submit(_Run(future, spec, run_dir))
        except BaseException:
            run_dir.remove()
            raise

    def _cancel_running(self, future: ModelTrainerFutureBase) -> bool:
        run = self._dispatcher.find(future.id)
        if run is None:
            return self._cancel_elsewhere(future)
        result = self._dispatcher.cancel(run)
        if result == "queued":
            self._mark_canceled(future, "canceled while queued")
            return True
        if result == "signaled":
            log.info("cancel requested for training %s", future.id)
        return result == "signaled"

    def _training_logs(self, future: ModelTrainerFutureBase, follow: bool) -> Iterator[str]:
        return read_lines(
            self._log_path(future.id),
            follow=follow,
            finished=lambda: future.get_info().status.is_terminal,
        )

    def _reconcile(self, info: TrainingInfo) -> TrainingInfo:
        """A live record whose submitting process is gone: the run directory says the rest."""
        if info.status.is_terminal:
            return info
        owner = self._store.get_owner(info.id)
        if not owner or owner == self._owner or owner_is_alive(owner) is not False:
            return info  # its submitting process is alive and keeps the record current
        run_dir = self._run_dir(info.id)
        outcome = run_dir.read_outcome()
        if outcome is not None:
            return self._store_outcome(info.id, outcome)
        record = run_dir.read_worker()
        if record is None:
            return super()._reconcile(info)  # never reached a worker: interrupted while queued
        alive = owner_is_alive(record.supervisor)
        if alive is False:
            outcome = run_dir.read_outcome()  # written just before the worker exited?
            if outcome is not None:
                return self._store_outcome(info.id, outcome)
            return self._store.update(
                info.id,
                status=TrainingStatus.ERRORED,
                completion_time=utcnow(),
                errors=(
                    ErrorDetail(
                        "trainerkit.errors.TrainingCrashedError",
                        f"the worker process of the training ({record.supervisor}) ended without "
                        "reporting an outcome: it was killed (SIGKILL by a user or the "
                        "out-of-memory killer) or the machine restarted",
                    ),
                ),
            )
        changes: dict[str, Any] = {}
        if info.status is TrainingStatus.QUEUED:
            changes.update(status=TrainingStatus.RUNNING, start_time=record.start_time)
        progress = run_dir.read_progress()
        if progress is not None and _newer(progress, info.progress):
            changes["progress"] = progress
        return self._store.update(info.id, **changes) if changes else info

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

    def delete_training(self, training_id: str, delete_model: bool = False) -> None:
        """As :meth:`ModelTrainerBase.delete_training`; also removes the log and run files."""
        super().delete_training(training_id, delete_model=delete_model)
        self._remove_files(training_id)

    def purge_finished(self, older_than: Optional[datetime.timedelta] = None) -> list[str]:
        """As :meth:`ModelTrainerBase.purge_finished`; also removes logs and run files."""
        purged = super().purge_finished(older_than)
        for training_id in purged:
            self._remove_files(training_id)
        return purged

    def log_path(self, training_id: str) -> str:
        """The log file of a training (stdout and stderr of its process)."""
        return self._log_path(training_id)

    # -- reports from the dispatcher (its thread)

    def _on_running(self, run: _Run, record: WorkerRecord) -> None:
        info = self._store.update(run.future.id, status=TrainingStatus.RUNNING, start_time=record.start_time)
        run.future._apply(info)
        if info.status is TrainingStatus.CANCELED and not run.cancel_requested:
            # Canceled from another process while it was being handed over: stop it.
            self._dispatcher.cancel(run)

    def _on_progress(self, run: _Run, report: ProgressReport) -> None:
        self._mark_progress(run.future, report)

    def _on_outcome(self, run: _Run, outcome: Outcome) -> None:
        info = self._store_outcome(run.future.id, outcome)
        run.future._apply(info)
        self._after_terminal(run.future, info)
        level = logging.DEBUG if outcome.status is TrainingStatus.COMPLETED else logging.INFO
        log.log(level, "training %s %s", run.future.id, outcome.status.value)

    def _on_worker_lost(self, run: _Run, worker: _Worker, returncode: Optional[int]) -> None:
        outcome = run.run_dir.read_outcome()  # written before the worker exited, if it could
        if outcome is None:
            if run.cancel_requested:
                outcome = Outcome(
                    TrainingStatus.CANCELED, utcnow(), (ErrorDetail("TrainingCanceledError", "canceled"),)
                )
            else:
                detail = worker.stderr_text()
                outcome = Outcome(
                    TrainingStatus.ERRORED,
                    utcnow(),
                    (
                        ErrorDetail(
                            "trainerkit.errors.TrainingCrashedError",
                            f"the worker process (pid {worker.pid}) of training {run.future.id} "
                            f"{_describe_exit(returncode)} before reporting an outcome",
                            detail,
                        ),
                    ),
                )
        self._on_outcome(run, outcome)

    def _on_start_failed(self, run: _Run, why: str, detail: str = "") -> None:
        error = ErrorDetail("trainerkit.errors.TrainingCrashedError", why, detail)
        self._on_outcome(run, Outcome(TrainingStatus.ERRORED, utcnow(), (error,)))

    def _on_gone_while_queued(self, run: _Run, info: TrainingInfo) -> None:
        run.future._apply(info)
        self._after_terminal(run.future, info)
        run.run_dir.remove()

    def _finished_since(self, since: datetime.datetime) -> list[TrainingInfo]:
        return self._store.list(
            TrainingQuery(
                trainer_name=self.instance_name,
                status=frozenset(s for s in TrainingStatus if s.is_terminal),
                since=since,
            )
        )

    # -- internals

    def _store_outcome(self, training_id: str, outcome: Outcome) -> TrainingInfo:
        changes: dict[str, Any] = dict(
            status=outcome.status, completion_time=outcome.time, errors=outcome.errors
        )
        if outcome.progress is not None:
            changes["progress"] = outcome.progress
        return self._store.update(training_id, **changes)

    def _cancel_elsewhere(self, future: ModelTrainerFutureBase) -> bool:
        """Cancel a training that another process submitted."""
        info = self._load_info(future.id)
        if info is None:
            return False
        future._apply(info)
        if info.status.is_terminal:
            return False
        record = self._run_dir(future.id).read_worker()
        if record is None:
            # Still in its submitter's queue: the record's first final status wins, and
            # that process drops it (or stops it, if it was just being handed over).
            info = self._store.update(
                future.id,
                status=TrainingStatus.CANCELED,
                completion_time=utcnow(),
                errors=(ErrorDetail("TrainingCanceledError", "canceled while queued"),),
            )
            future._apply(info)
            return info.status is TrainingStatus.CANCELED
        try:
            delivered = signal_owner(record.supervisor, signal.SIGTERM)
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
            future._apply(self._load_info(future.id) or info)
            return False
        log.info("cancel requested for training %s (worker %s)", future.id, record.supervisor)
        return True

    def _run_dir(self, training_id: str) -> RunDirectory:
        return RunDirectory(os.path.join(self._runs_root, training_id))

    def _log_path(self, training_id: str) -> str:
        return os.path.join(self._log_dir, f"{training_id}.log")

    def _remove_files(self, training_id: str) -> None:
        self._run_dir(training_id).remove()
        try:
            os.unlink(self._log_path(training_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the log of training %s: %s", training_id, exc)

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


def _describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} ({-returncode})"
    return f"exited with code {returncode}"
