"""One training of this process (:class:`_Run`) and one worker process
(:class:`_Worker`), as the submitting side sees them."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from typing import Any, Optional

from ...future import ModelTrainerFutureBase
from ...runner import TrainingSpec
from .protocol import LineReader
from .rundir import RunDirectory

log = logging.getLogger("trainerkit")

STDERR_TAIL = 8192


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
        self.attempts = 0
        self.gpus_needed = 0  # Resources.gpus_per_proc of the training
        self.devices: tuple[str, ...] = ()  # the GPU ids it holds while handed to a worker
        self.waiting_for_gpus = False  # its QUEUED detail says so already


class _Worker:
    """One worker process (supervisor + training process) as seen from here."""

    def __init__(self, process: subprocess.Popen, events_fd: int) -> None:
        self.process = process
        self.events_fd = events_fd
        self.stderr_fd = process.stderr.fileno() if process.stderr else -1
        self.events = LineReader(events_fd)
        self.stderr_tail = bytearray()
        self.ready = False
        self.run: Optional[_Run] = None
        self.exited = False

    def exit_report(self, wait: float) -> "tuple[Optional[int], str]":
        """How a worker that refused its spec ended, and what it printed (its
        stderr is complete once it has exited; the dispatcher's thread reads it here)."""
        try:
            returncode: Optional[int] = self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            returncode = None
        while True:
            try:
                data = os.read(self.stderr_fd, 65536)
            except OSError:  # closed, or nothing more for now
                break
            if not data:
                break
            self.stderr_tail += data
        del self.stderr_tail[:-STDERR_TAIL]
        return returncode, self.stderr_text()

    @classmethod
    def start(cls, settings: dict[str, Any], env: dict[str, str], cwd: Optional[str]) -> "_Worker":
        """Start a worker process: exec'd, in a session of its own, events on a pipe."""
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                _worker_command(write_fd, settings),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own session: no terminal signals, and killable as a group
                cwd=cwd if cwd and os.path.isdir(cwd) else None,
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
        worker = cls(process, read_fd)
        if worker.stderr_fd >= 0:
            os.set_blocking(worker.stderr_fd, False)
        return worker

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


#: The module a worker runs; its command line names it, which is how a cancel
#: from another process tells a worker from another process with its pid.
WORKER_MODULE = "trainerkit.trainers.subprocess.worker"


def _worker_command(events_fd: int, settings: dict[str, Any]) -> list[str]:
    import trainerkit

    # The worker must import this very trainerkit, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(trainerkit.__file__)))
    bootstrap = (
        f"import sys; root = {root!r}\n"
        "if root not in sys.path: sys.path.insert(0, root)\n"
        f"from {WORKER_MODULE} import main; sys.exit(main(sys.argv[1:]))"
    )
    return [
        sys.executable,
        "-c",
        bootstrap,
        "--events-fd",
        str(events_fd),
        "--settings",
        json.dumps(settings),
    ]


def current_sys_path() -> list[str]:
    cwd = os.getcwd()
    return [os.path.abspath(entry) if entry else cwd for entry in sys.path if isinstance(entry, str)]
