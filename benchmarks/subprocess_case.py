"""SUBPROCESS: the round trip of one trivial training in its own process.

trainerkit: ``train(Trivial, i, save_path=...)`` on an idle SUBPROCESS
trainer, then ``result()``: the training's process trains, saves and exits,
and the parent loads the model. Baselines: a bare ``multiprocessing`` spawn
start + join of a function that does nothing (no save, no load: the floor of
"a fresh Python process"), and caikit's ``LocalModelTrainer`` with
``use_subprocess: true`` (spawn), which also saves and loads.

The default ``start_method: prestarted`` keeps a worker interpreter ready, so
an idle trainer's round trip does not include an interpreter start; "idle"
here means each round begins ``SETTLE`` seconds after the previous training
ended, time for the replacement worker to come up. The cold path,
``start_method: exec`` (an interpreter started per training), is reported in
its own row.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import tempfile
import time
from typing import Any, Callable

from . import subjects
from .harness import (
    Figure,
    Goal,
    Row,
    RowSpec,
    Settings,
    Stopwatch,
    alternate,
    check,
    counted,
    guarded,
    paired,
)
from .trivial_modules import Trivial, do_nothing

NAME = "subprocess"

VS_SPAWN = RowSpec(
    "subprocess.round_trip.vs_spawn",
    "SUBPROCESS (default, prestarted) train + save + result() vs a bare spawn Process start + join",
    "spawn start+join",
    Goal("ratio", "<", 1.0, "< 1.0x"),
)
VS_CAIKIT = RowSpec(
    "subprocess.round_trip.vs_caikit",
    "SUBPROCESS (default, prestarted) round trip vs caikit LocalModelTrainer use_subprocess: true",
    "caikit subprocess",
    Goal("ratio", "<=", 0.5, "<= 0.5x (2x faster)"),
)
EXEC_VS_SPAWN = RowSpec(
    "subprocess.round_trip.exec.vs_spawn",
    "SUBPROCESS start_method: exec (an interpreter per training) round trip vs a bare spawn start + join",
    "spawn start+join",
)
ROWS = (VS_SPAWN, VS_CAIKIT, EXEC_VS_SPAWN)


def run(settings: Settings) -> list[Row]:
    return guarded(ROWS, lambda: _round_trip_rows(settings)) if settings.wants(*ROWS) else []


def _round_trip_rows(settings: Settings) -> list[Row]:
    repeats = settings.size(10, 2)
    settle = settings.size(1, 0.5)
    caikit_missing = subjects.caikit_missing()
    with contextlib.ExitStack() as stack:
        prestarted = stack.enter_context(subjects.trainerkit_trainer("SUBPROCESS", max_workers=1))
        cold = stack.enter_context(
            subjects.trainerkit_trainer("SUBPROCESS", max_workers=1, start_method="exec")
        )
        models = stack.enter_context(tempfile.TemporaryDirectory(prefix="trainerkit-bench-models-"))
        counter = itertools.count()

        def idle_round_trip() -> float:
            time.sleep(settle)  # idle: the replacement worker has had time to start
            return _trainerkit_round_trip(prestarted.trainer, models, next(counter))

        runners: dict[str, Callable[[], float]] = {
            "trainerkit": idle_round_trip,
            "exec": lambda: _trainerkit_round_trip(cold.trainer, models, next(counter)),
            "spawn": _spawn_round_trip,
        }
        if caikit_missing is None:
            caikit = subjects.caikit_trainer(use_subprocess=True, subprocess_start_method="spawn")
            runners["caikit"] = lambda: _caikit_round_trip(caikit, models, next(counter))
        times = alternate(repeats, runners, warm_up=not settings.quick)
        notes = [
            f"{counted(repeats, 'interleaved round')}, max_workers=1; each prestarted round starts "
            f"{settle} s after the previous training ended",
            *prestarted.notes,
        ]
    ours = Figure(times["trainerkit"], "s")
    spawn = Figure(times["spawn"], "s")
    rows = [
        VS_SPAWN.measured(ours, spawn, paired("ratio", times["trainerkit"], times["spawn"]), notes=notes),
        EXEC_VS_SPAWN.measured(
            Figure(times["exec"], "s"),
            spawn,
            paired("ratio", times["exec"], times["spawn"]),
            notes=cold.notes,
        ),
    ]
    if caikit_missing is None:
        rows.append(
            VS_CAIKIT.measured(
                ours,
                Figure(times["caikit"], "s"),
                paired("ratio", times["trainerkit"], times["caikit"]),
                notes=subjects.caikit_notes(),
            )
        )
    else:
        rows.append(VS_CAIKIT.cannot_run(caikit_missing))
    return rows


def _trainerkit_round_trip(trainer: Any, models: str, value: int) -> float:
    import trainerkit

    save_path = os.path.join(models, f"trainerkit-{value}")
    with Stopwatch() as watch:
        future = trainer.train(Trivial, value, save_path=save_path)
        model = future.result(timeout=120)
    check(isinstance(model, Trivial) and model.value == value, f"SUBPROCESS returned {model!r}")
    status = future.get_info().status
    check(status is trainerkit.TrainingStatus.COMPLETED, f"SUBPROCESS training ended {status}")
    check(os.path.isdir(save_path), f"SUBPROCESS saved nothing at {save_path}")
    return watch.seconds


def _spawn_round_trip() -> float:
    context = multiprocessing.get_context("spawn")
    with Stopwatch() as watch:
        process = context.Process(target=do_nothing)
        process.start()
        process.join()
    check(process.exitcode == 0, f"the spawned process exited with {process.exitcode}")
    return watch.seconds


def _caikit_round_trip(trainer: Any, models: str, value: int) -> float:
    from caikit.core.data_model import JobStatus

    from .caikit_modules import CaikitTrivial

    save_path = os.path.join(models, f"caikit-{value}")
    with Stopwatch() as watch:
        future = trainer.train(CaikitTrivial, value, save_path=save_path)
        model = future.load()
    check(model.value == value, f"caikit returned a model with value {model.value}, not {value}")
    status = future.get_info().status
    check(status is JobStatus.COMPLETED, f"caikit training ended {status}")
    return watch.seconds
