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

from ...runner import CancelSignal, JsonLinesReporter, TrainingSpec, run_training
from .supervisor import _Supervisor, redirect_output


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
    try:
        code = _Supervisor(child, spec_w, news_r, events_fd).run()
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
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    news = os.fdopen(news_fd, "w", buffering=1, encoding="utf-8")
    reporter = JsonLinesReporter(news)
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    for name in preload:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # the training itself will report it if it matters
            sys.stderr.write(f"[trainerkit] preloading {name!r} failed: {type(exc).__name__}: {exc}\n")
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
