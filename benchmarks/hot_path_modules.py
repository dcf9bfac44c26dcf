"""Modules whose ``train`` times a tight loop and returns the cost of one call.

The loop runs inside a training, so what is timed is the call as a
training's own code makes it (in the training's thread for LOCAL, in the
training's process for SUBPROCESS). The model's ``value`` is the measured
seconds per call; it travels through save and load like
:class:`~benchmarks.trivial_modules.Trivial`'s, so SUBPROCESS brings it back.

trainerkit and tqdm are imported inside ``train``, only by the loops that call them.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any, Optional

from .trivial_modules import Trivial

#: What ``ProgressLoop`` calls each step.
REPORTERS = ("report_progress", "noop", "tqdm")


def no_progress(step: Optional[float] = None, total: Optional[float] = None, **metrics: Any) -> None:
    """The baseline of ``report_progress``: the same signature, doing nothing."""


def loss_at(step: int) -> float:
    """The metric every loop reports, so a check can tell the last value arrived."""
    return step * 0.001


class ProgressLoop(Trivial):
    """``calls`` progress reports in a tight loop; ``value``: seconds per report."""

    @classmethod
    def train(cls, calls: int, reporter: str) -> "ProgressLoop":  # type: ignore[override]
        if reporter == "tqdm":
            return cls(_tqdm_loop(calls))
        if reporter == "report_progress":
            from trainerkit import report_progress as report
        elif reporter == "noop":
            report = no_progress
        else:
            raise ValueError(f"reporter must be one of {', '.join(REPORTERS)}, not {reporter!r}")
        started = time.perf_counter()
        for step in range(calls):
            report(step, calls, loss=step * 0.001)  # loss_at(step), inlined on both sides
        return cls((time.perf_counter() - started) / calls)


def _tqdm_loop(calls: int) -> float:
    """tqdm's per-step metric update, ``set_postfix(loss=..., refresh=False)``.

    The bar writes to a ``StringIO``: it is enabled and does all its work
    (formatting the postfix), only the terminal is missing.
    """
    from tqdm import tqdm

    bar = tqdm(total=calls, file=io.StringIO(), disable=False)
    try:
        set_postfix = bar.set_postfix
        started = time.perf_counter()
        for step in range(calls):
            set_postfix(loss=step * 0.001, refresh=False)
        seconds = time.perf_counter() - started
        if not str(bar.postfix).startswith("loss="):  # the benchmark must not time a bar doing nothing
            raise AssertionError(f"tqdm's postfix is {bar.postfix!r}, not the loss")
    finally:
        bar.close()
    return seconds / calls


def printed_line(index: int) -> str:
    """The text of the ``index``-th line a :class:`PrintLoop` prints."""
    return f"line {index}"


class PrintLoop(Trivial):
    """``lines`` short lines printed in a tight loop; ``value``: seconds per line.

    Without ``path`` they go to ``sys.stdout``, the training's output; with
    it, to that file, opened (default buffering) and closed inside the timing.
    """

    @classmethod
    def train(cls, lines: int, path: Optional[str] = None) -> "PrintLoop":  # type: ignore[override]
        if path is None:
            started = time.perf_counter()
            for index in range(lines):
                print("line", index)
            sys.stdout.flush()
            seconds = time.perf_counter() - started
        else:
            started = time.perf_counter()
            with open(path, "w", encoding="utf-8") as handle:
                for index in range(lines):
                    print("line", index, file=handle)
            seconds = time.perf_counter() - started
        return cls(seconds / lines)
