"""Showing a training's progress while the command follows it.

On a terminal it is a live bar (drawn with ``rich``, imported only then);
otherwise plain lines, one per new report but at most one per
``min_interval`` seconds, plus one per status change. Either way the display
writes to stderr, so stdout (and ``--json`` documents) stay clean.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any, Callable, Optional, Protocol, TextIO

from ..info import TrainingInfo, utcnow
from .render import format_duration, format_metrics, format_number, progress_line, eta_seconds

#: Seconds between two plain progress lines.
LINE_INTERVAL = 1.0
#: Seconds between two looks at the training while following it.
POLL_INTERVAL = 0.1


class ProgressDisplay(Protocol):
    """Receives every snapshot of the followed training, between ``start`` and ``close``."""

    def start(self) -> None:
        """Take over the screen (before the training is submitted: see BarDisplay)."""

    def update(self, info: TrainingInfo) -> None:
        """Show ``info`` (called about every POLL_INTERVAL)."""

    def close(self) -> None:
        """The following stopped: leave the screen tidy. Idempotent."""


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal that can redraw a bar."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return interactive and os.environ.get("TERM", "") != "dumb"


def open_display(stream: TextIO, *, json_mode: bool, stdout: TextIO) -> ProgressDisplay:
    """The display that suits ``stream``: a bar on a terminal, else plain lines
    (none at all in ``--json`` mode, where stderr is kept for errors).

    ``stdout`` is the command's real stdout: when it is the terminal too (or in
    ``--json`` mode, where this process's prints are sent to stderr), prints
    are routed above the bar rather than across it.
    """
    if is_terminal(stream) and importlib.util.find_spec("rich") is not None:
        return BarDisplay(stream, capture_stdout=json_mode or is_terminal(stdout))
    # Without the bar's library (pip install 'trainerkit[cli]'), plain lines.
    if json_mode:
        return NullDisplay()
    return LineDisplay(stream)


class NullDisplay:
    """Shows nothing."""

    def start(self) -> None:
        return None

    def update(self, info: TrainingInfo) -> None:
        return None

    def close(self) -> None:
        return None


class LineDisplay:
    """Plain lines: one per status change, one per new progress report, rate-limited.

    A report that arrives within ``min_interval`` of the previous line is held
    back and replaced by newer ones; the newest is always written by
    :meth:`close`, so the last step reached is never lost.
    """

    def __init__(
        self,
        stream: TextIO,
        min_interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._min_interval = min_interval
        self._clock = clock
        self._last_status: Optional[str] = None
        self._last_report: Any = None
        self._last_write = -float("inf")
        self._pending: Optional[TrainingInfo] = None

    def start(self) -> None:
        return None

    def update(self, info: TrainingInfo) -> None:
        report = info.progress
        new_report = report is not None and report != self._last_report
        if info.status.value != self._last_status:
            self._last_status = info.status.value
            if new_report:
                self._last_report = report
            self._write(info)
            return
        if not new_report:
            return
        self._last_report = report
        if self._clock() - self._last_write >= self._min_interval:
            self._write(info)
        else:
            self._pending = info

    def close(self) -> None:
        if self._pending is not None:
            self._write(self._pending)

    def _write(self, info: TrainingInfo) -> None:
        self._pending = None
        self._last_write = self._clock()
        self._stream.write(progress_line(info, utcnow()) + "\n")
        self._stream.flush()


class BarDisplay:
    """A live progress bar on a terminal: status, bar, steps, ETA, metrics.

    While it is shown, ``sys.stderr`` (and with ``capture_stdout``, ``sys.stdout``)
    print above the bar. Start it *before* submitting an in-process (LOCAL)
    training: the training's thread then wraps these streams to copy what it
    prints into its log file, and the copy keeps working. Started later, the
    bar would replace the training's wrapped streams and its log would miss
    what it prints under the bar.
    """

    def __init__(self, stream: TextIO, capture_stdout: bool) -> None:
        self._stream = stream
        self._capture_stdout = capture_stdout
        self._progress: Any = None
        self._task: Any = None
        self._closed = False

    def start(self) -> None:
        if self._progress is not None or self._closed:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        console = Console(file=self._stream)
        self._progress = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(),
            TextColumn("{task.fields[steps]}", table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[eta]}", table_column=Column(no_wrap=True)),
            TextColumn(
                "{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis")
            ),
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=self._capture_stdout,
            redirect_stderr=True,
        )
        self._progress.start()

    def update(self, info: TrainingInfo) -> None:
        if self._closed:
            return
        self.start()
        if self._task is None:
            self._task = self._progress.add_task("", total=None, steps="", eta="", metrics="")
        report = info.progress
        total = float(report.total) if report is not None and report.total else None
        completed = float(report.step) if report is not None and report.step is not None else 0.0
        if total is None and info.status.is_terminal:
            total, completed = 1.0, 1.0  # an unknown-length training that ended: a full bar
        steps = ""
        if report is not None and report.step is not None:
            steps = (
                f"{format_number(report.step)}/{format_number(report.total)}"
                if report.total
                else f"step {format_number(report.step)}"
            )
        eta = eta_seconds(info, utcnow())
        self._progress.update(
            self._task,
            description=f"{info.status.value:<9}",
            total=total,
            completed=min(completed, total) if total is not None else completed,
            steps=steps,
            eta=f"ETA {format_duration(eta)}" if eta is not None and not info.status.is_terminal else "",
            metrics=format_metrics(report.metrics) if report is not None else "",
        )
        self._progress.refresh()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._progress is not None:
            self._progress.stop()


def follow(
    future: Any, display: ProgressDisplay, poll_interval: float = POLL_INTERVAL
) -> TrainingInfo:
    """Show ``future``'s training on ``display`` until it ends; return its final info.

    The caller starts and closes ``display`` (so that it can keep showing the
    training while a Ctrl-C cancels it).
    """
    info = future.get_info()
    display.update(info)
    while not info.status.is_terminal:
        future.wait(poll_interval)
        info = future.get_info()
        display.update(info)
    return info
