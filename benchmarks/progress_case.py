"""Progress: what one ``report_progress(step, total, loss=x)`` call costs a training.

A module's ``train`` calls it in a tight loop and times the loop itself
(:class:`~benchmarks.hot_path_modules.ProgressLoop`); each round runs one
training per contender, on the same trainer, so every contender is called
the same way from the same place:

* a no-op function with the same signature: the row is the difference per
  call, whose goal is absolute (a report must cost a training at most 1 µs
  more than a call that does nothing);
* tqdm's per-step metric update, ``bar.set_postfix(loss=x, refresh=False)``,
  on an enabled bar writing to a ``StringIO``: ``report_progress`` should
  cost no more.

The same against the no-op inside a SUBPROCESS training, where a report
travels to the parent over a pipe.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Optional

from . import subjects
from .harness import (
    Figure,
    Goal,
    Row,
    RowSpec,
    Settings,
    alternate,
    check,
    counted,
    guarded,
    paired,
)
from .hot_path_modules import ProgressLoop, loss_at

NAME = "progress"

VS_NOOP = RowSpec(
    "progress.per_call.vs_noop",
    "report_progress(step, total, loss=x) per call in a LOCAL training's tight loop, minus a no-op "
    "function with the same signature called the same way",
    "no-op call",
    Goal("difference", "<=", 1e-6, "<= +1 µs"),
)
VS_TQDM = RowSpec(
    "progress.per_call.vs_tqdm",
    "report_progress per call in a LOCAL training vs tqdm's set_postfix(loss=x, refresh=False)",
    "tqdm set_postfix",
    Goal("ratio", "<=", 1.0, "<= 1.0x"),
)
SUBPROCESS_VS_NOOP = RowSpec(
    "progress.per_call.subprocess.vs_noop",
    "report_progress per call in a SUBPROCESS training's tight loop, minus the no-op call there",
    "no-op call",
    Goal("difference", "<=", 1e-6, "<= +1 µs"),
)
LOCAL_ROWS = (VS_NOOP, VS_TQDM)
SUBPROCESS_ROWS = (SUBPROCESS_VS_NOOP,)
ROWS = LOCAL_ROWS + SUBPROCESS_ROWS


def run(settings: Settings) -> list[Row]:
    rows = []
    if settings.wants(*LOCAL_ROWS):
        rows += guarded(LOCAL_ROWS, lambda: _local_rows(settings))
    if settings.wants(*SUBPROCESS_ROWS):
        rows += guarded(SUBPROCESS_ROWS, lambda: _subprocess_rows(settings))
    return rows


def tqdm_missing() -> Optional[str]:
    """Why the tqdm baseline cannot run here, or None."""
    if importlib.util.find_spec("tqdm") is None:
        return "tqdm is not installed: pip install tqdm (the optional bench extra)"
    return None


def _local_rows(settings: Settings) -> list[Row]:
    calls = settings.size(200_000, 20_000)
    repeats = settings.size(5, 2)
    with subjects.trainerkit_trainer("LOCAL", max_workers=1) as built:

        def one_training(reporter: str) -> Callable[[], float]:
            return lambda: _per_call(built.trainer.train(ProgressLoop, calls, reporter), calls, reporter)

        reporters = ["report_progress", "noop"]
        missing = tqdm_missing()
        if missing is None:
            reporters.append("tqdm")
        runners = {reporter: one_training(reporter) for reporter in reporters}
        if not settings.quick:  # the first loops warm caches up: not measured
            for runner in runners.values():
                runner()
        seconds = alternate(repeats, runners)
        notes = [
            f"{calls:,} calls per training, timed inside the module's train; {counted(repeats, 'round')} "
            "of one training per contender on one LOCAL trainer (max_workers=1)",
            *built.notes,
        ]
    rows = [_vs_noop_row(VS_NOOP, seconds, notes)]
    if missing is not None:
        rows.append(VS_TQDM.cannot_run(missing))
    else:
        rows.append(
            VS_TQDM.measured(
                Figure(seconds["report_progress"], "s"),
                Figure(seconds["tqdm"], "s"),
                paired("ratio", seconds["report_progress"], seconds["tqdm"]),
                notes=["tqdm: an enabled bar (total=calls) writing to a StringIO, one set_postfix per call"],
            )
        )
    return rows


def _subprocess_rows(settings: Settings) -> list[Row]:
    calls = settings.size(200_000, 20_000)
    repeats = settings.size(5, 2)
    settle = settings.size(1, 0.5)
    with contextlib.ExitStack() as stack:
        built = stack.enter_context(subjects.trainerkit_trainer("SUBPROCESS", max_workers=1))
        models = stack.enter_context(tempfile.TemporaryDirectory(prefix="trainerkit-bench-models-"))
        counter = itertools.count()

        def one_training(reporter: str) -> Callable[[], float]:
            def measure() -> float:
                time.sleep(settle)  # the replacement worker has started: it competes for no CPU
                save_path = os.path.join(models, f"progress-{next(counter)}")
                future = built.trainer.train(ProgressLoop, calls, reporter, save_path=save_path)
                return _per_call(future, calls, reporter)

            return measure

        runners = {reporter: one_training(reporter) for reporter in ("report_progress", "noop")}
        seconds = alternate(repeats, runners)
        notes = [
            f"{calls:,} calls per training, timed inside the module's train (in the training's process); "
            f"{counted(repeats, 'round')}, max_workers=1, each training starting {settle} s after the last",
            *built.notes,
        ]
    return [_vs_noop_row(SUBPROCESS_VS_NOOP, seconds, notes)]


def _per_call(future: Any, calls: int, reporter: str) -> float:
    """The seconds per call a finished ProgressLoop training measured, once its result is checked."""
    import trainerkit

    model = future.result(timeout=300)
    check(isinstance(model, ProgressLoop), f"the {reporter} loop returned {model!r}")
    check(model.value > 0, f"the {reporter} loop measured {model.value!r} s per call")
    info = future.get_info()
    check(info.status is trainerkit.TrainingStatus.COMPLETED, f"the {reporter} training ended {info.status}")
    if reporter == "report_progress":
        progress = info.progress
        check(progress is not None, "report_progress was called, but the training shows no progress")
        last = (progress.step, progress.total, dict(progress.metrics))
        expected = (calls - 1, calls, {"loss": loss_at(calls - 1)})
        check(last == expected, f"the training's last progress is {last}, not {expected}")
    return float(model.value)


def _vs_noop_row(spec: RowSpec, seconds: dict[str, list[float]], notes: list[str]) -> Row:
    ratio = statistics.median(a / b for a, b in zip(seconds["report_progress"], seconds["noop"]))
    return spec.measured(
        Figure(seconds["report_progress"], "s"),
        Figure(seconds["noop"], "s"),
        paired("difference", seconds["report_progress"], seconds["noop"]),
        notes=[*notes, f"per round, report_progress took {ratio:.1f}x the no-op call (median)"],
    )
