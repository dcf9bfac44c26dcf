"""The SUBPROCESS dispatcher: the queue, the worker pool and every pipe of one
trainer, driven by one thread (see :class:`_Dispatcher`)."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Optional

from ...info import ProgressReport
from ...runner import Outcome
from .exits import describe_exit
from .handles import STDERR_TAIL, _Run, _Worker, _report, current_sys_path
from .rundir import WorkerRecord

if TYPE_CHECKING:
    from .trainer import SubprocessModelTrainer

log = logging.getLogger("trainerkit")

#: A worker that dies this many times in a row before it is ready stops the pre-starting.
_MAX_START_FAILURES = 3
# How long to wait for a worker that refused its spec to finish exiting, in seconds.
_EXIT_REPORT_WAIT = 2.0
#: How often queued trainings are checked for a cancel made by another process, in seconds.
_QUEUED_CHECK_INTERVAL = 1.0


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
        # GPU ids not held by an active run; None: this trainer hands out no GPUs.
        self.free_gpus: Optional[list[str]] = list(trainer._gpus) if trainer._gpus else None
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
            if run is None or run.phase == _Run.DONE:  # a retry may be queued behind a finished attempt
                run = next((r for r in self.queue if r.future.id == training_id), None) or run
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
        """True when exiting waits for queued trainings or ones that stop with this process
        (not for one whose outcome is in: only its worker's wrap-up is left)."""
        with self.lock:
            return bool(self.queue) or any(
                not run.detached and run.phase != _Run.DONE for run in self.active.values()
            )

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
            detail = ""  # set when a training starts waiting for GPUs
            with self.lock:
                if not self.queue or len(self.active) >= self.max_workers:
                    return
                run = self.queue[0]
                blocked = self.free_gpus is not None and run.gpus_needed > len(self.free_gpus)
                if not blocked:
                    self.queue.popleft()
                    run.phase = _Run.HANDED
                    self.active[run.future.id] = run
                    self._assign_gpus(run)
                    self.lock.notify_all()
                elif not run.waiting_for_gpus:
                    run.waiting_for_gpus = True
                    free = len(self.free_gpus or ())
                    detail = (
                        f"waiting for {run.gpus_needed} GPU{'s' if run.gpus_needed != 1 else ''} "
                        f"({free} of {free + self._gpus_in_use()} free)"
                    )
            if blocked:  # first come, first served: later trainings wait behind it
                trainer = self._trainer_ref()
                if trainer is not None and detail:
                    _report(lambda _run, text: trainer.mark_waiting(_run.future, text), run, detail)
                return
            self._hand_off(run)

    def _gpus_in_use(self) -> int:
        return sum(len(run.devices) for run in self.active.values())

    def _assign_gpus(self, run: _Run) -> None:
        """Give ``run`` its GPUs (and hide the others from it). Lock held."""
        if self.free_gpus is None:
            return
        run.devices = tuple(self.free_gpus[: run.gpus_needed])
        del self.free_gpus[: run.gpus_needed]
        environ = dict(run.spec.environ or {})
        environ["CUDA_VISIBLE_DEVICES"] = ",".join(run.devices)
        procs = run.spec.procs_per_node
        each = len(run.devices) // procs
        # Rank k gets the k-th run of gpus_per_proc devices (rank 0's first, as info.devices lists them);
        # the worker records them for processes that see only the run directory (detach).
        rank_devices = tuple(run.devices[k * each : (k + 1) * each] for k in range(procs))
        run.spec = dataclasses.replace(run.spec, environ=environ, rank_devices=rank_devices)

    def _retire(self, run: _Run) -> None:
        """``run`` left the worker it was handed to: its GPUs are free again. Lock held."""
        if self.active.get(run.future.id) is run:  # not a later attempt of the same training
            del self.active[run.future.id]
        if self.free_gpus is not None and run.devices:
            self.free_gpus.extend(device for device in run.devices if device not in self.free_gpus)

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
                    self.lock.notify_all()
                    if run.cancel_requested:  # canceled while waiting for a worker
                        self._signal(worker, signal.SIGTERM)
                    return
                worker.run = None
                run.worker = None
            refused = worker
        with self.lock:
            self._retire(run)
            run.phase = _Run.DONE
            self.lock.notify_all()
        if trainer is not None:
            why, detail = "no worker process could be started (see the log)", ""
            if refused is not None:
                returncode, detail = refused.exit_report(_EXIT_REPORT_WAIT)
                why = (
                    f"no worker process could take training {run.future.id}: the last one (pid "
                    f"{refused.pid}) {describe_exit(returncode)} before reporting an outcome"
                )
            _report(trainer._on_start_failed, run, why, detail)

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
        settings = {"preload": self.preload, "sys_path": current_sys_path()}
        worker = _Worker.start(settings, {**os.environ, **self.env}, self.cwd)
        self.workers[worker.events_fd] = worker
        self.selector.register(worker.events_fd, selectors.EVENT_READ, (worker, "events"))
        if worker.stderr_fd >= 0:
            self.selector.register(worker.stderr_fd, selectors.EVENT_READ, (worker, "stderr"))
        log.debug("started SUBPROCESS worker %d for %s", worker.pid, self.name)
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
        since = min(run.future.cached_info.submission_time for run in queued.values())
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
        del worker.stderr_tail[:-STDERR_TAIL]
        log.debug("SUBPROCESS worker %d: %s", worker.pid, data.decode("utf-8", "replace").rstrip())

    def _read_events(self, worker: _Worker) -> None:
        lines = worker.events.read()
        if lines is None:
            self._worker_exited(worker)
            return
        for line in lines:
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
                self._retire(run)
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
            for run in list(self.active.values()):
                self._retire(run)
            self.lock.notify_all()
        for run in runs:
            if trainer is not None and run.phase != _Run.DONE:
                _report(trainer._on_start_failed, run, "the SUBPROCESS dispatcher failed (see the log)")
