"""Output: what one ``print()`` of a training costs, its output being kept.

A module's ``train`` prints N short lines in a tight loop and times the loop
itself (:class:`~benchmarks.hot_path_modules.PrintLoop`): to ``sys.stdout``,
which trainerkit captures into the training's log (LOCAL: ``capture_output``,
on by default, tees the training thread's output to its log file;
SUBPROCESS: the process's stdout is the log file), against the same loop
printing to an ordinary file it opens itself (``print(..., file=f)``), run
as a training on the same trainer in the same round. Afterwards the
training's log (``future.logs()``) and the file must hold exactly the lines
printed.

While the LOCAL rows run, this process's own ``sys.stdout`` is ``/dev/null``:
the tee passes each line on to it, and the benchmark's output is the table.
"""

from __future__ import annotations

import contextlib
import itertools
import os
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
from .hot_path_modules import PrintLoop, printed_line

NAME = "output"

LOCAL = RowSpec(
    "output.print_per_line.local",
    "print() per line in a LOCAL training (output captured to its log, the default) vs "
    "print(..., file=f) to an ordinary file",
    "print to a file",
    Goal("ratio", "<=", 3.0, "<= 3x"),
)
SUBPROCESS = RowSpec(
    "output.print_per_line.subprocess",
    "print() per line in a SUBPROCESS training (stdout is its log) vs print(..., file=f) to an ordinary file",
    "print to a file",
    Goal("ratio", "<=", 3.0, "<= 3x"),
)
ROWS = (LOCAL, SUBPROCESS)


def run(settings: Settings) -> list[Row]:
    rows = []
    if settings.wants(LOCAL):
        rows += guarded((LOCAL,), lambda: _rows(settings, LOCAL, "LOCAL"))
    if settings.wants(SUBPROCESS):
        rows += guarded((SUBPROCESS,), lambda: _rows(settings, SUBPROCESS, "SUBPROCESS"))
    return rows


def _rows(settings: Settings, spec: RowSpec, type_name: str) -> list[Row]:
    lines = settings.size(50_000, 5_000)
    repeats = settings.size(5, 2)
    settle = settings.size(1, 0.5) if type_name == "SUBPROCESS" else 0
    with contextlib.ExitStack() as stack:
        if type_name == "LOCAL":
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        built = stack.enter_context(subjects.trainerkit_trainer(type_name, max_workers=1))
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="trainerkit-bench-output-"))
        counter = itertools.count()

        def one_training(to_file: bool) -> Callable[[], float]:
            def measure() -> float:
                time.sleep(settle)  # SUBPROCESS: the replacement worker has started
                number = next(counter)
                path = os.path.join(scratch, f"printed-{number}.txt") if to_file else None
                options: dict[str, Any] = {}
                if type_name == "SUBPROCESS":
                    options["save_path"] = os.path.join(scratch, f"model-{number}")
                future = built.trainer.train(PrintLoop, lines, path, **options)
                return _per_line(future, lines, path)

            return measure

        if not settings.quick:  # the first loops warm caches up: not measured
            one_training(False)()
            one_training(True)()
        seconds = alternate(repeats, {"trainerkit": one_training(False), "file": one_training(True)})
        notes = [
            f"{lines:,} lines per training, timed inside the module's train; {counted(repeats, 'round')}, "
            "max_workers=1; the baseline loop runs as a training on the same trainer",
            *built.notes,
        ]
    return [
        spec.measured(
            Figure(seconds["trainerkit"], "s"),
            Figure(seconds["file"], "s"),
            paired("ratio", seconds["trainerkit"], seconds["file"]),
            notes=notes,
        )
    ]


def _per_line(future: Any, lines: int, path: Optional[str]) -> float:
    """The seconds per line a finished PrintLoop training measured, once its output is checked."""
    import trainerkit

    model = future.result(timeout=300)
    check(isinstance(model, PrintLoop) and model.value > 0, f"the print loop returned {model!r}")
    status = future.get_info().status
    check(status is trainerkit.TrainingStatus.COMPLETED, f"the print training ended {status}")
    expected = [printed_line(index) for index in range(lines)]
    logged = [line for line in future.logs() if line.startswith("line ")]
    if path is None:
        check(logged == expected, f"the log holds {len(logged):,} of {lines:,} lines, or out of order")
    else:
        with open(path, encoding="utf-8") as handle:
            written = handle.read().splitlines()
        check(written == expected, f"the file holds {len(written):,} of {lines:,} lines, or out of order")
        check(not logged, f"{len(logged):,} lines printed to a file reached the training's log")
    return float(model.value)
