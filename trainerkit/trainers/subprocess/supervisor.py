"""The supervisor of a SUBPROCESS pool worker, and the training process it forks.

The SUBPROCESS trainer starts each worker as a fresh interpreter running
:func:`trainerkit.trainers.subprocess.worker.main` (what ``python -m
trainerkit.trainers.subprocess`` runs), in a session of its own, ahead of need.
A worker serves exactly one training, then exits:

1. At start the supervisor forks the training process before anything else
   runs, so that process begins as a clean interpreter with trainerkit
   imported and no threads (forking is safe here, unlike in the caller). The
   training process makes its own process group, asks the kernel to kill it if
   the supervisor dies (Linux), imports the ``preload`` modules and waits.
2. The trainer writes the training's spec (one JSON line) to the supervisor's
   stdin. The supervisor records who runs the training (``worker.json`` in the
   run directory) and passes the spec on; the training process sends its
   stdout and stderr to the training's log file and runs
   :func:`trainerkit.runner.run_training`.
3. The supervisor relays progress and the outcome to the trainer (JSON lines
   on ``--events-fd``) and writes the outcome (and, for detached trainings,
   the progress) to the run directory, so they outlive the trainer.
4. SIGTERM to the supervisor is a cancel: SIGTERM to the training's whole
   process group, SIGKILL after the grace period. A training process that ends
   without reporting an outcome (a non-zero exit, a signal, an out-of-memory
   kill) becomes ERRORED, naming the exit code or the signal. Whatever is left
   of the process group when the training process ends is killed.
5. End of stdin means the trainer's process is gone: without ``detach`` the
   training is stopped as for a cancel and recorded as interrupted; with
   ``detach`` it goes on.
6. A multi-process training (``procs_per_node`` > 1 in the spec): the training
   process is rank 0, and the supervisor forks ranks 1 and up from itself when
   the spec arrives (:func:`.worker._fork_rank`), each with the torchrun
   variables (a free port on 127.0.0.1 as ``MASTER_PORT``), its own
   ``CUDA_VISIBLE_DEVICES`` and log, watched by
   :class:`trainerkit.runner.ranks.LocalRanks`. Rank 0's progress and model are
   the training's. Rank 0's outcome is held until every other rank has
   exited: a rank that fails first (an exception, a non-zero exit, a signal)
   stops the others (SIGTERM, SIGKILL after the grace period) and its failure,
   naming the rank, is the training's outcome. A cancel stops every rank.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import selectors
import signal
import sys
import time
from typing import Any, Callable, Mapping, Optional

from ...errors import TrainingCanceledError, TrainingCrashedError, TrainingInterruptedError
from ...info import ErrorDetail, ProgressReport, TrainingStatus, utcnow
from ...deferred import background
from ...logfile import FLUSH_INTERVAL
from ...owner import process_owner
from ...private_files import open_private
from ...runner import Outcome, SpecError, TrainingSpec, inline_arguments
from ...runner.ranks import LocalRanks, RankExit, RankLayout, free_port
from .exits import describe_exit, ended, errored, signal_hint
from .protocol import LineReader
from .rundir import RunDirectory, WorkerRecord, rank_log_path, rank_outcome_file

#: Starts rank k of a multi-process training from its spec, writing its outcome to the path; returns its pid.
RankForker = Callable[[TrainingSpec, Optional[str]], int]

#: Progress goes to the trainer (and the run directory) at most this often, in seconds.
PROGRESS_INTERVAL = 0.1
#: How long the supervisor tries to deliver its last events to a trainer that does not read.
FLUSH_TIMEOUT = 5.0
_LOG_TAIL_LINES = 40

def redirect_output(path: str, *, buffered: bool = False) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``.

    With ``buffered`` (the training process), ``sys.stdout`` is block
    buffered and flushed every :data:`~trainerkit.logfile.FLUSH_INTERVAL`
    seconds by a background thread: a system call per line would cost more
    than the print. ``sys.stderr`` shares its buffer and flushes it at every
    line, so the file keeps the order of the lines, and an error's last
    words are never held back.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return
    if buffered:
        # Both streams over one buffer of the log file, so the file keeps the
        # order in which lines were written: stdout fills it (write_through:
        # no second buffer in the text layer), stderr's every line flushes it.
        # Standard streams of their own, since under PYTHONUNBUFFERED
        # (inherited from the caller) Python's would make a system call per write.
        shared = io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16)
        encoding, errors = sys.stdout.encoding, sys.stdout.errors
        sys.stdout = io.TextIOWrapper(shared, encoding=encoding, errors=errors, write_through=True)
        sys.stderr = io.TextIOWrapper(shared, encoding=encoding, errors="backslashreplace", line_buffering=True)
        # A child the training forks (a data loader worker) must not write the
        # parent's buffered lines again.
        os.register_at_fork(before=_flush_stdout)
        _flush_stdout_now_and_then()


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the blocking ``fd``.

    One ``os.write`` of more than a pipe's capacity returns early when a signal
    arrives after some bytes went (PEP 475 retries only a write that wrote
    nothing); the supervisor gets SIGCHLD whenever a rank it forked exits, so a
    long spec line could reach the training process cut short.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _flush_stdout() -> bool:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return False  # closed: nothing more to flush
    return True


def _flush_stdout_now_and_then() -> None:
    if _flush_stdout():
        background.schedule(_flush_stdout_now_and_then, time.monotonic() + FLUSH_INTERVAL)


# -- the supervisor ---------------------------------------------------------------------


class _Supervisor:
    """The supervisor's event loop (see the module docstring)."""

    def __init__(
        self, child: int, spec_w: int, news_r: int, events_fd: int, fork_rank: Optional[RankForker] = None
    ) -> None:
        self.child = child
        self.fork_rank = fork_rank
        self.ranks: Optional[LocalRanks] = None  # ranks 1 and up of a multi-process training
        self.rank_specs: dict[int, TrainingSpec] = {}
        self.held: Optional[Outcome] = None  # rank 0's outcome, until every other rank has exited
        self.rank_failure: Optional[Outcome] = None  # the first other rank that failed
        self.spec_w: Optional[int] = spec_w
        self.news_r = news_r
        self.events_fd = events_fd
        self.spec: Optional[TrainingSpec] = None
        self.started = False  # a spec line arrived (even an unusable one)
        self.run_dir: Optional[RunDirectory] = None
        self.cancel_requested = False
        self.interrupted = False
        self.trainer_gone = False
        self.killed = False
        self.kill_deadline: Optional[float] = None
        self.final: Optional[Outcome] = None
        self.final_at = 0.0
        self.child_status: Optional[int] = None
        self.latest: Optional[ProgressReport] = None
        self.progress_pending = False
        self.progress_sent_at = 0.0
        self.out = bytearray()
        self.stdin_buffer = bytearray()
        self.news = LineReader(news_r)
        self.terms = 0
        self.terms_seen = 0
        os.set_blocking(events_fd, False)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the loop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.selector = selectors.DefaultSelector()
        self.selector.register(0, selectors.EVENT_READ, "stdin")
        self.selector.register(news_r, selectors.EVENT_READ, "news")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.writing = False

    def _on_term(self, signum: int, frame: Any) -> None:
        self.terms += 1

    # -- the loop

    def run(self) -> int:
        while True:
            if self.terms != self.terms_seen:
                self.terms_seen = self.terms
                self._cancel()
            self._check_child()
            self._check_ranks()
            now = time.monotonic()
            self._flush_progress(now)
            self._escalate(now)
            self._drain_out()
            if self._finished(now):
                return 0
            self._watch_writes(bool(self.out) and not self.trainer_gone)
            for key, _ in self.selector.select(self._timeout(now)):
                if key.data == "stdin":
                    self._read_stdin()
                elif key.data == "news":
                    self._read_news()
                elif key.data == "wake":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass

    def _finished(self, now: float) -> bool:
        if self.child_status is None:
            return False
        if self.ranks is not None and not self.ranks.all_exited:
            return False
        if self.started and self.final is None:
            return False
        return not self.out or self.trainer_gone or now - self.final_at > FLUSH_TIMEOUT

    def _timeout(self, now: float) -> float:
        deadlines = [now + 0.5]  # a slow poll besides SIGCHLD, in case a signal is coalesced
        if self.progress_pending:
            deadlines.append(self.progress_sent_at + PROGRESS_INTERVAL)
        if self.kill_deadline is not None:
            deadlines.append(self.kill_deadline)
        if self.ranks is not None and self.ranks.kill_deadline is not None and not self.ranks.all_exited:
            deadlines.append(self.ranks.kill_deadline)
        return max(0.0, min(deadlines) - now)

    def _watch_writes(self, wanted: bool) -> None:
        if wanted and not self.writing:
            self.selector.register(self.events_fd, selectors.EVENT_WRITE, "events")
        elif not wanted and self.writing:
            self.selector.unregister(self.events_fd)
        self.writing = wanted

    # -- input

    def _read_stdin(self) -> None:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(0)
            self._on_trainer_gone("its stdin closed")
            return
        self.stdin_buffer += data
        while b"\n" in self.stdin_buffer:
            line, _, rest = bytes(self.stdin_buffer).partition(b"\n")
            self.stdin_buffer = bytearray(rest)
            if not self.started:
                self._start(line)
            else:
                self._on_message(line)

    def _on_message(self, line: bytes) -> None:
        """A message from the trainer after the spec: ``{"detach": true}`` lets the
        training outlive the trainer's process (its ``shutdown(wait=False)``)."""
        try:
            message = json.loads(line)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("detach") is True and self.spec is not None:
            if not self.spec.detach:
                self.spec = dataclasses.replace(self.spec, detach=True)
                self._note("released by the submitting process: the training outlives it")

    def _read_news(self) -> None:
        lines = self.news.read()
        if lines is None:
            self.selector.unregister(self.news_r)
            return
        for line in lines:
            self._on_news_line(line)

    def _on_news_line(self, line: bytes) -> None:
        try:
            self._on_news(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:  # never let one bad line end the worker
            self._note(f"ignored an unreadable message from the training process: {exc}")

    def _on_news(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            self._send("ready")
        elif kind == "progress":
            self.latest = ProgressReport.from_dict(event.get("report") or {})
            self.progress_pending = True
        elif kind == "finishing":
            self._send("finishing")
        elif kind == "outcome":
            outcome = Outcome.from_dict(event.get("outcome") or {})
            if outcome.status is TrainingStatus.CANCELED and self.interrupted and not self.cancel_requested:
                outcome = self._interrupted_outcome()  # it stopped because its submitter is gone
            self._rank0_outcome(outcome)

    # -- the training's life

    def _start(self, line: bytes) -> None:
        self.started = True
        try:
            spec = TrainingSpec.from_dict(json.loads(line))
        except (ValueError, SpecError) as exc:
            self._close_spec()
            self._finish(errored(SpecError, f"the worker got an unusable spec: {exc}"))
            return
        self.spec = spec
        if spec.log_path:
            try:
                redirect_output(spec.log_path)
            except OSError as exc:
                self._close_spec()
                self._finish(errored(OSError, f"cannot open the training's log file {spec.log_path}: {exc}"))
                return
        record = WorkerRecord(
            supervisor=process_owner(),
            training_process=process_owner(self.child),
            start_time=utcnow(),
            detach=spec.detach,
            devices=tuple(device for ids in spec.rank_devices or () for device in ids),
        )
        if spec.run_dir:
            self.run_dir = RunDirectory(spec.run_dir)
            try:
                self.run_dir.create()
                self.run_dir.write_worker(record)
            except OSError as exc:
                self._close_spec()
                self._finish(errored(OSError, f"cannot write the run directory {spec.run_dir}: {exc}"))
                return
        if spec.procs_per_node > 1:
            try:
                line = self._start_ranks(spec)
            except (OSError, SpecError) as exc:
                if self.ranks is not None:
                    self.ranks.kill()  # those already started: reaped by the loop before the worker exits
                self._close_spec()
                self._finish(errored(OSError, f"cannot start the training's rank processes: {exc}"))
                return
        try:
            assert self.spec_w is not None
            write_all(self.spec_w, line + b"\n")  # blocking: the training process is waiting for it
        except OSError:
            pass  # it died while waiting; its exit status tells the rest
        self._close_spec()
        self._send("running", worker=record.to_dict())

    def _start_ranks(self, spec: TrainingSpec) -> bytes:
        """Fork ranks 1 and up; return rank 0's spec line for the training process."""
        if self.fork_rank is None:
            raise SpecError("this worker cannot start rank processes")
        arguments = spec.arguments
        if "pickle_file" in arguments:  # every rank reads them: inline, so none removes them under another
            path = str(arguments["pickle_file"])
            with open(path, "rb") as handle:
                arguments = inline_arguments(handle.read())
            if spec.arguments.get("remove_after_load"):
                os.unlink(path)
        layout = RankLayout(procs_per_node=spec.procs_per_node, master_port=free_port())
        base = dict(spec.environ if spec.environ is not None else os.environ)
        # As torchrun does: ranks that each start a thread per core oversubscribe the
        # machine P times over; one thread each unless the user chose (env: OMP_NUM_THREADS).
        base.setdefault("OMP_NUM_THREADS", "1")
        self.ranks = LocalRanks(layout, spec.cancel_grace_period)
        for rank in range(spec.procs_per_node):
            environ = {**base, **layout.environ(rank)}
            if spec.rank_devices is not None:
                environ["CUDA_VISIBLE_DEVICES"] = ",".join(spec.rank_devices[rank])
            log_path = rank_log_path(spec.log_path, rank) if spec.log_path else None
            self.rank_specs[rank] = dataclasses.replace(
                spec, arguments=arguments, environ=environ, log_path=log_path, procs_per_node=1, rank_devices=None
            )
        for rank in range(1, spec.procs_per_node):
            outcome_path = self.run_dir.file(rank_outcome_file(rank)) if self.run_dir is not None else None
            self.ranks.adopt(rank, self.fork_rank(self.rank_specs[rank], outcome_path))
        self._note(
            f"{spec.procs_per_node} ranks on 127.0.0.1:{layout.master_port}, pids "
            + ", ".join([str(self.child)] + [str(pid) for _, pid in sorted(self.ranks.pids.items())])
        )
        return json.dumps(self.rank_specs[0].to_dict()).encode("utf-8")

    def _check_ranks(self) -> None:
        if self.ranks is None:
            return
        self.ranks.poll()
        failure = self.ranks.failure
        rank0_failed = self.held is not None and self.held.status is not TrainingStatus.COMPLETED
        if failure is not None and self.rank_failure is None and not rank0_failed:
            self.rank_failure = self._rank_failure_outcome(failure)
            self._note(f"{failure.describe()}: stopping the other ranks" + self._kill_after())
            self._stop_training()
        self._conclude()

    def _rank0_outcome(self, outcome: Outcome) -> None:
        """Rank 0 (the training process) ended with ``outcome`` (reported, or from its exit)."""
        if self.ranks is None:
            self._finish(outcome)
            return
        if self.held is not None:
            return
        self.held = outcome
        if outcome.status is not TrainingStatus.COMPLETED and not self.ranks.stopping:
            self._note(f"rank 0 ended {outcome.status.value}: stopping the other ranks" + self._kill_after())
            self.ranks.stop()
        if self.child_status is None and self.kill_deadline is None:
            # It reported; give it the grace period to exit on its own (as _finish does for one process).
            self.kill_deadline = time.monotonic() + (self.spec.cancel_grace_period if self.spec else 0.0)
        self._conclude()

    def _conclude(self) -> None:
        """The training's outcome, once rank 0 and every other rank have ended."""
        if self.final is not None or self.ranks is None or not self.ranks.all_exited:
            return
        if self.child_status is None:
            return  # rank 0 still runs: the training has ended once no process of it is left
        outcome = self.rank_failure or self.held
        if outcome is None:  # rank 0 exited without a word: its exit status says how
            assert self.child_status is not None
            outcome = self._outcome_from_exit(self.child_status)
        self._finish(outcome)

    def _rank_failure_outcome(self, failure: RankExit) -> Outcome:
        """The training's outcome when rank ``failure.rank`` (not 0) failed first."""
        reported = None
        if self.run_dir is not None:
            reported = self.run_dir.read_outcome(rank_outcome_file(failure.local_rank))
        if reported is not None and reported.status is TrainingStatus.ERRORED and reported.errors:
            return ended(
                TrainingStatus.ERRORED,
                *(dataclasses.replace(error, message=f"rank {failure.rank}: {error.message}") for error in reported.errors),
            )
        if reported is not None and reported.status is TrainingStatus.CANCELED:
            message = (
                f"rank {failure.rank} (pid {failure.pid}) stopped on a SIGTERM sent to that rank alone "
                "(a cancel of the training goes to the worker: future.cancel(), trainerkit cancel ID)"
            )
        else:
            message = failure.describe() + (
                failure.hint() if failure.returncode < 0 else " before reporting an outcome (os._exit() or "
                "sys.exit() outside train(), or a crash)"
            )
        spec = self.rank_specs.get(failure.local_rank)
        return errored(TrainingCrashedError, message, self._log_tail(spec.log_path if spec else None))

    def _close_spec(self) -> None:
        if self.spec_w is not None:
            os.close(self.spec_w)
            self.spec_w = None

    def _cancel(self) -> None:
        if not self.started:
            self._close_spec()  # an idle worker asked to stop: let its training process exit
            return
        if self.final is not None or self.cancel_requested:
            return
        self.cancel_requested = True
        self._note(
            "cancel requested: SIGTERM to the training's process group"
            + self._kill_after()
        )
        self._stop_training()

    def _on_trainer_gone(self, why: str) -> None:
        if self.trainer_gone:
            return
        self.trainer_gone = True
        self.out.clear()
        if not self.started:
            self._close_spec()
            return
        if self.final is not None or self.spec is None:
            return
        if self.spec.detach:
            self._note(f"the process that submitted the training is gone ({why}); detached, it goes on")
            return
        self.interrupted = True
        self._note(
            f"the process that submitted the training is gone ({why}): stopping the training"
            + self._kill_after()
        )
        self._stop_training()

    def _kill_after(self) -> str:
        grace = self.spec.cancel_grace_period if self.spec else 0.0
        return f", SIGKILL in {grace:g} s if it is still running"

    def _stop_training(self) -> None:
        if self.ranks is not None and not self.ranks.stopping:
            self.ranks.stop()
        if self.child_status is not None or self.kill_deadline is not None:
            return
        self._signal_group(signal.SIGTERM)
        grace = self.spec.cancel_grace_period if self.spec else 0.0
        self.kill_deadline = time.monotonic() + grace

    def _escalate(self, now: float) -> None:
        if self.ranks is not None and self.ranks.escalate(now):
            self._note("ranks " + ", ".join(str(self.ranks.layout.rank(k)) for k in sorted(self.ranks.pids))
                       + " did not stop within the grace period: SIGKILL")
            self.ranks.kill_deadline = None
        if self.kill_deadline is None or now < self.kill_deadline or self.child_status is not None:
            return
        self.kill_deadline = None
        self.killed = True
        if self.final is None:
            self._note("the training did not stop within the grace period: SIGKILL")
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        # The training process is not reaped yet, so its pid (= its group id) cannot be reused.
        if self.child_status is not None:
            return
        try:
            os.killpg(self.child, signum)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.child, signum)
            except OSError:
                pass

    def _check_child(self) -> None:
        if self.child_status is not None:
            return
        if hasattr(os, "waitid"):
            try:
                exited = os.waitid(os.P_PID, self.child, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                exited = True
            if exited is None:
                return
            # Exited but not reaped: its pid, the group's id, cannot be reused yet, so
            # this reaches only what is left of the training's process group.
            self._kill_leftovers()
            try:
                _, status = os.waitpid(self.child, 0)
            except ChildProcessError:
                status = 0
        else:
            try:
                pid, status = os.waitpid(self.child, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.child, 0
            if pid == 0:
                return
            self._kill_leftovers()
        self.child_status = status
        self._read_news_now()
        if self.rank_failure is not None:
            self._conclude()  # rank 0 was stopped because another rank failed
        elif self.final is None and self.started and self.held is None:
            self._rank0_outcome(self._outcome_from_exit(status))
        elif self.ranks is not None:
            self._conclude()

    def _kill_leftovers(self) -> None:
        try:
            os.killpg(self.child, signal.SIGKILL)
        except OSError:
            pass

    def _read_news_now(self) -> None:
        # An outcome sent just before the exit may still sit in the pipe.
        for line in self.news.drain():
            self._on_news_line(line)

    def _outcome_from_exit(self, status: int) -> Outcome:
        if self.cancel_requested:
            how = "killed after the grace period" if self.killed else "stopped"
            return ended(TrainingStatus.CANCELED, ErrorDetail.of(TrainingCanceledError, f"canceled while training ({how})"))
        if self.interrupted:
            return self._interrupted_outcome()
        code = os.waitstatus_to_exitcode(status)
        who = "rank 0, the training process" if self.ranks is not None else "the training process"
        message = f"{who} (pid {self.child}) {describe_exit(code)}" + (
            signal_hint(code) if code < 0 else " before reporting an outcome (os._exit() or "
            "sys.exit() outside train(), or a crash)"
        )
        self._note(message)
        return errored(TrainingCrashedError, message, self._log_tail())

    def _interrupted_outcome(self) -> Outcome:
        submitter = self.spec.submitter if self.spec else ""
        return errored(
            TrainingInterruptedError,
            f"the training was stopped because the process that submitted it "
            f"({submitter or 'unknown'}) exited; set detach: true in the trainer's config "
            "for trainings that outlive their caller",
        )

    def _finish(self, outcome: Outcome) -> None:
        if self.final is not None:
            return
        if outcome.progress is None and self.latest is not None:
            outcome = dataclasses.replace(outcome, progress=self.latest)
        self.final = outcome
        self.final_at = time.monotonic()
        self.progress_pending = False
        if self.run_dir is not None:
            try:
                self.run_dir.write_outcome(outcome)
            except OSError as exc:
                self._note(f"cannot write the outcome to {self.run_dir.path}: {exc}")
        self._send("outcome", outcome=outcome.to_dict())
        if self.child_status is None and self.kill_deadline is None:
            # The training process reported; give it the grace period to exit on its own.
            grace = self.spec.cancel_grace_period if self.spec else 0.0
            self.kill_deadline = time.monotonic() + grace

    # -- output

    def _flush_progress(self, now: float) -> None:
        if not self.progress_pending or now - self.progress_sent_at < PROGRESS_INTERVAL:
            return
        self.progress_pending = False
        self.progress_sent_at = now
        assert self.latest is not None
        self._send("progress", report=self.latest.to_dict())
        if self.run_dir is not None and self.spec is not None and self.spec.detach:
            try:
                self.run_dir.write_progress(self.latest)
            except OSError as exc:
                self._note(f"cannot write progress to {self.run_dir.path}: {exc}")

    def _send(self, event: str, **data: Any) -> None:
        if self.trainer_gone:
            return
        self.out += (json.dumps({"event": event, **data}) + "\n").encode("utf-8")
        self._drain_out()

    def _drain_out(self) -> None:
        while self.out and not self.trainer_gone:
            try:
                written = os.write(self.events_fd, self.out)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_trainer_gone("its event pipe closed")
                return
            del self.out[:written]

    def _note(self, text: str) -> None:
        try:
            os.write(2, f"[trainerkit] {text}\n".encode("utf-8", "replace"))
        except OSError:
            pass

    def _log_tail(self, path: Optional[str] = None) -> str:
        path = path or (self.spec.log_path if self.spec else None)
        if not path:
            return ""
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 16384))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        return "Last lines of the training's log:\n" + "\n".join(lines) + "\n" if lines else ""
