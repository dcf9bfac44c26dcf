"""trainerkit_pool: trainer type POOL, trainings in a pool of long-lived worker processes (see README.md)."""

import collections, concurrent.futures as cf, contextlib, dataclasses, multiprocessing  # noqa: E401
import os, secrets, sys, tempfile, threading  # noqa: E401
from typing import Any, Literal, Optional

from trainerkit import ErrorDetail, ModelTrainerBase, SupportLevel, TrainingCrashedError, TrainingStateError, runner
from trainerkit.logfile import read_lines
from trainerkit.schema import option
from trainerkit.store.state_dir import MEMORY_STATE_DIR, open_record_store, resolve_state_dir
from trainerkit.trainer_config import MachineTrainerConfig


@dataclasses.dataclass
class _Run:
    """A training in a worker: run() runs it, fds 1 and 2 to its log file. Also its runner.Reporter (events via
    _Run.events, set by the pool's initializer) and CancelSignal (a flag file that check_canceled looks at)."""
    flag: str
    requested = property(lambda self: os.path.exists(self.flag))
    arm = disarm = finishing = outcome = lambda self, *_: None  # the outcome goes back as run()'s return value
    progress = lambda self, report: self.events.put((self.flag, report))  # noqa: E731

    def run(self, spec: runner.TrainingSpec) -> Optional[dict]:  # None: canceled before it started
        if self.requested:
            return None
        self.events.cancel_join_thread()  # this worker's exit must never wait on the queue (its lock may be stuck)
        saved, log_fd = (os.dup(1), os.dup(2)), os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            sys.stdout.flush(), sys.stderr.flush(), os.dup2(log_fd, 1), os.dup2(log_fd, 2)
            outcome = runner.run_training(spec, self, self)
        finally:
            sys.stdout.flush(), sys.stderr.flush(), os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            for fd in (*saved, log_fd):
                os.close(fd)
        return outcome.to_dict()


@dataclasses.dataclass(frozen=True)
class PoolConfig(MachineTrainerConfig):  # type: POOL's keys, and max_workers, state_dir, log_dir, retention
    max_tasks_per_child: Optional[int] = option(None, minimum=1, doc="replace a worker after this many trainings")
    start_method: Literal["spawn", "forkserver"] = option("spawn", doc="how workers start (never fork)")


class PoolTrainer(ModelTrainerBase):
    """type: POOL — trainings run in a pool of long-lived worker processes (README.md)."""
    name, ConfigSchema = "POOL", PoolConfig
    CAPABILITIES = {"cancel": SupportLevel.BEST_EFFORT, "progress": SupportLevel.NATIVE, "logs": SupportLevel.NATIVE}

    def __init__(self, config: PoolConfig, instance_name: str) -> None:
        super().__init__(config, instance_name)
        state = resolve_state_dir(config.state_dir)
        state = tempfile.mkdtemp(prefix="trainerkit-pool-") if state == MEMORY_STATE_DIR else state
        self._logs = os.path.abspath(os.path.expanduser(config.log_dir or os.path.join(state, "logs")))
        self._ctx, self._guard, self._closing, self._stopped = multiprocessing.get_context(config.start_method), \
            threading.RLock(), False, False
        # queued: (future, spec, flag) not handed to the pool yet; running: flag -> future, at most max_workers
        self._queued, self._running, self._pool = collections.deque(), {}, self._new_pool()
        self._reader = threading.Thread(target=self._read_events, name=f"trainerkit-pool-{instance_name}", daemon=True)
        self._reader.start()

    def create_store(self) -> Any:
        return open_record_store(self.config.state_dir)

    def prepare_training(self, request: Any) -> tuple:
        if request.save_path is None:
            raise ValueError(f"trainer {self.instance_name!r} (type POOL) trains in worker processes, so the model "
                             "comes back only through save_path: pass save_path='/some/dir' to train()")
        module = runner.check_importable_class(request.module_class)  # its class_path, importable elsewhere
        return module, runner.pickle_arguments(request.module_class, request.args, request.kwargs)

    def start_training(self, future: Any, request: Any) -> None:
        os.makedirs(self._logs, exist_ok=True)
        spec = runner.TrainingSpec(training_id=future.id, module=request.prepared[0], save_path=request.save_path,
                                   arguments=runner.inline_arguments(request.prepared[1]), cwd=os.getcwd(),
                                   sys_path=tuple(sys.path), log_path=os.path.join(self._logs, f"{future.id}.log"))
        with self._guard:  # the cancel flag file, unique to this run
            self._queued.append((future, spec, f"{spec.log_path}.{secrets.token_hex(6)}.cancel"))
        self._dispatch()

    def cancel_training(self, future: Any) -> bool:
        with self._guard:
            queued = [item for item in self._queued if item[0] is future]
            running = [flag for flag, run in self._running.items() if run is future]
            [self._queued.remove(item) for item in queued]
            [open(flag, "w").close() for flag in running]  # it stops at its next report_progress or check_canceled
        if not (queued or running or future.done()):
            raise TrainingStateError(f"training {future.id} runs in the worker pool of the process that "
                                     "submitted it (type POOL): cancel it from that process")
        return bool(running) or bool(queued and self.mark_canceled(future, "canceled while queued"))

    def training_logs(self, future: Any, follow: bool) -> Any:
        finished = lambda: future.get_info().status.is_terminal  # noqa: E731
        return read_lines(os.path.join(self._logs, f"{future.id}.log"), follow=follow, finished=finished)

    def shutdown(self, wait: bool = True) -> None:
        with self._guard:  # without wait, queued and running trainings run on; the last one stops the workers
            live = [item[0] for item in self._queued] + list(self._running.values())
            self._closing = bool(live) and not wait
        [future.wait() for future in live if wait]
        if not self._closing:  # every training has ended: stop the workers and the reader now
            self._stopped = True
            self._pool.shutdown(wait=True), self._reader.join()
        super().shutdown(wait)

    def _new_pool(self) -> cf.ProcessPoolExecutor:  # its initializer hands each worker a new queue of events
        self._events = self._ctx.Queue()  # new: a worker killed while it wrote to the old one may hold its lock
        return cf.ProcessPoolExecutor(self.config.max_workers, self._ctx, setattr, (_Run, "events", self._events),
                                      max_tasks_per_child=self.config.max_tasks_per_child)

    def _dispatch(self) -> None:  # hand queued trainings to the pool while it has a free worker, so no
        with self._guard:  # backlog waits in the executor, whose max_tasks_per_child can strand it (gh-115634)
            while self._queued and len(self._running) < self.config.max_workers:
                (future, spec, flag), pool = self._queued.popleft(), self._pool
                self.mark_running(future)  # a worker is free: the training starts now (before it enters train())
                self._running[flag] = future
                try:
                    done = pool.submit(_Run(flag).run, spec)
                except cf.BrokenExecutor:  # a worker died while idle
                    self._pool = pool = self._new_pool()
                    done = pool.submit(_Run(flag).run, spec)
                done.add_done_callback(lambda done, run=(future, flag, pool): self._done(*run, done))
            if self._closing and not self._queued and not self._running:
                self._pool.shutdown(wait=False)
                self._stopped = True  # the reader stops too

    def _read_events(self) -> None:  # one thread: the progress reports, in the order workers sent them
        while not self._stopped:
            with contextlib.suppress(Exception):  # queue.Empty; or a failed record update ended that training
                flag, report = self._events.get(timeout=0.2)  # (reading the current pool's queue)
                if (future := self._running.get(flag)) is not None:  # None: it has ended meanwhile
                    self.mark_progress(future, report)

    def _done(self, future: Any, flag: str, pool: cf.ProcessPoolExecutor, done: cf.Future) -> None:
        try:
            if (outcome := done.result()) is None:
                self.mark_canceled(future, "canceled before it started")
            else:
                self.mark_outcome(future, runner.Outcome.from_dict(outcome))
        except cf.BrokenExecutor:
            with self._guard:
                self._pool = self._new_pool() if self._pool is pool else self._pool
            self.mark_errored(future, ErrorDetail.of(TrainingCrashedError, f"a worker process of the pool ended "
                              f"abruptly (os._exit, a signal, out of memory) while training {future.id} ran in it"))
        except Exception as exc:  # raised outside the training (its log file could not be opened...)
            self.mark_errored(future, exc)
        finally:
            with self._guard, contextlib.suppress(FileNotFoundError):
                self._running.pop(flag, None)
                os.unlink(flag)
            self._dispatch()
