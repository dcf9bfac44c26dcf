"""A SUBPROCESS pool worker process: it forks its training process at once, then
supervises it (:class:`~.supervisor._Supervisor`); see :mod:`.supervisor` for
the protocol. Started by the trainer as
``python -m trainerkit.trainers.subprocess --events-fd N --settings JSON``, never by hand.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import signal
import sys
import traceback
from typing import Any, Mapping, Optional, Sequence

from ...info import TrainingStatus
from ...runner import CancelSignal, FileReporter, JsonLinesReporter, TrainingSpec, run_training
from .supervisor import _Supervisor, redirect_output

#: Exit status of a rank process other than rank 0, by how its training ended (as ``python -m trainerkit.runner``).
RANK_EXIT_CODES = {TrainingStatus.COMPLETED: 0, TrainingStatus.CANCELED: 3}
RANK_EXIT_ERRORED = 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the worker's command line and serve one training."""
    parser = argparse.ArgumentParser(prog="python -m trainerkit.trainers.subprocess")
    parser.add_argument("--events-fd", type=int, required=True)
    parser.add_argument("--settings", default="{}")
    options = parser.parse_args(argv)
    try:
        settings = json.loads(options.settings)
    except ValueError:
        parser.error("--settings must be JSON")
    return serve(options.events_fd, settings)


def serve(events_fd: int, settings: Mapping[str, Any]) -> int:
    """Run one pool worker (the supervisor; the training process returns from here too)."""
    preload = [str(name) for name in settings.get("preload") or ()]
    sys_path = [str(entry) for entry in settings.get("sys_path") or ()]
    spec_r, spec_w = os.pipe()
    news_r, news_w = os.pipe()
    supervisor_pid = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(spec_w)
        os.close(news_r)
        os.close(events_fd)
        return _training_process(spec_r, news_w, preload, sys_path, supervisor_pid)
    os.close(spec_r)
    os.close(news_w)
    try:
        os.setpgid(child, child)  # also done by the child: whichever runs first wins the race
    except OSError:
        pass

    def fork_rank(spec: TrainingSpec, outcome_path: Optional[str]) -> int:
        return _fork_rank(spec, outcome_path, preload, sys_path, supervisor_pid)

    try:
        code = _Supervisor(child, spec_w, news_r, events_fd, fork_rank).run()
    except BaseException:  # a bug here: leave its trace where someone will look
        traceback.print_exc()
        code = 70
    # The supervisor runs no user code: nothing to finalize, and the sooner it is
    # gone, the sooner its training's slot is free.
    os._exit(code)


# -- the training process -------------------------------------------------------------


def _training_process(
    spec_fd: int, news_fd: int, preload: list[str], sys_path: list[str], supervisor_pid: int
) -> int:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _die_with(supervisor_pid)
    _stdin_from_devnull()
    news = os.fdopen(news_fd, "w", buffering=1, encoding="utf-8")
    reporter = JsonLinesReporter(news)
    _preload(sys_path, preload)
    reporter.send("ready")
    line = _read_line(spec_fd)
    os.close(spec_fd)
    if not line:
        return 0  # the worker was stopped before it got a training
    spec = TrainingSpec.from_dict(json.loads(line))
    if spec.log_path:
        redirect_output(spec.log_path, buffered=True)
    faulthandler.enable()
    cancel = CancelSignal().install()
    run_training(spec, reporter, cancel)
    return 0


def _fork_rank(
    spec: TrainingSpec, outcome_path: Optional[str], preload: list[str], sys_path: list[str], supervisor_pid: int
) -> int:
    """Start one more rank of a multi-process training (ranks 1 and up; rank 0
    is the training process): a fork of the supervisor, which runs no user code
    and no thread, so the rank starts as clean as the training process did and
    without an interpreter start. It leads a process group of its own, dies with
    the supervisor, runs ``spec`` (its torchrun variables are in the spec's
    environment) and writes its outcome to ``outcome_path``. Returns its pid."""
    pid = os.fork()
    if pid:
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first wins the race
        except OSError:
            pass
        return pid
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.setpgid(0, 0)
        _die_with(supervisor_pid)
        _stdin_from_devnull()
        os.closerange(3, 1 << 16)  # the supervisor's pipes and selector are not the rank's
        if spec.log_path:
            redirect_output(spec.log_path, buffered=True)
        _preload(sys_path, preload)
        faulthandler.enable()
        cancel = CancelSignal().install()
        outcome = run_training(spec, FileReporter(outcome_path), cancel)
        code = RANK_EXIT_CODES.get(outcome.status, RANK_EXIT_ERRORED)
    except BaseException:  # a bug here: leave its trace in the rank's log
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _stdin_from_devnull() -> None:
    """A training reads nothing from the pool's stdin."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _preload(sys_path: list[str], preload: list[str]) -> None:
    """Put the caller's sys.path entries first and import the preload modules."""
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    for name in preload:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # the training itself will report it if it matters
            sys.stderr.write(f"[trainerkit] preloading {name!r} failed: {type(exc).__name__}: {exc}\n")


def _die_with(supervisor_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:  # it died before the request took effect
        os._exit(1)


def _read_line(fd: int) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return bytes(data).strip()
