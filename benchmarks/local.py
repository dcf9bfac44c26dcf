"""LOCAL: throughput of many trivial trainings, and the latency of one.

Throughput: N trivial trainings (``train`` returns at once, nothing saved)
submitted and awaited, with durable records, against a bare
``ThreadPoolExecutor`` running the same function and against caikit's
``LocalModelTrainer`` in thread mode. Every contender uses ``MAX_WORKERS``
threads, except caikit, whose LOCAL trainer has no bound (one thread per training).

Latency, on an idle trainer: from the ``train()`` call to the module's
``train`` being entered, and from the module's return to ``result()``
returning, against ``executor.submit`` / ``future.result()``.
"""

from __future__ import annotations

import concurrent.futures
import queue
import statistics
import threading
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
from .trivial_modules import LatencyProbe, Stamped, Trivial

NAME = "local"
MAX_WORKERS = 4

THROUGHPUT_VS_EXECUTOR = RowSpec(
    "local.throughput.vs_executor",
    "trivial LOCAL trainings per second (durable records) vs a bare ThreadPoolExecutor",
    "ThreadPoolExecutor",
    Goal("ratio", ">=", 1 / 3, ">= 0.33x"),
)
THROUGHPUT_VS_CAIKIT = RowSpec(
    "local.throughput.vs_caikit",
    "trivial LOCAL trainings per second (durable records) vs caikit LocalModelTrainer (threads)",
    "caikit threads",
    Goal("ratio", ">=", 2.0, ">= 2x"),
)
THROUGHPUT_MEMORY_RECORDS = RowSpec(
    "local.throughput.memory_records",
    "the same with state_dir ':memory:' (no durable records): what the durable commit costs",
    "ThreadPoolExecutor",
)
LATENCY_START = RowSpec(
    "local.latency.start",
    "idle trainer: train() called -> module's train entered",
    "executor submit",
    Goal("ratio", "<", 2.0, "< 2x"),
)
LATENCY_FINISH = RowSpec(
    "local.latency.finish",
    "idle trainer: module's train returned -> result() returned",
    "executor result",
    Goal("ratio", "<", 2.0, "< 2x"),
)
ROWS = (THROUGHPUT_VS_EXECUTOR, THROUGHPUT_VS_CAIKIT, THROUGHPUT_MEMORY_RECORDS, LATENCY_START, LATENCY_FINISH)


def run(settings: Settings) -> list[Row]:
    """Measure the wanted LOCAL rows."""
    rows = []
    throughput = (THROUGHPUT_VS_EXECUTOR, THROUGHPUT_VS_CAIKIT, THROUGHPUT_MEMORY_RECORDS)
    if settings.wants(*throughput):
        rows += guarded(throughput, lambda: throughput_rows(settings))
    latency = (LATENCY_START, LATENCY_FINISH)
    if settings.wants(*latency):
        rows += guarded(latency, lambda: latency_rows(settings))
    return rows


# -- throughput -----------------------------------------------------------------------


def throughput_rows(settings: Settings) -> list[Row]:
    count = settings.size(2000, 200)
    repeats = settings.size(5, 2)
    notes: set[str] = set()
    runners: dict[str, Callable[[], float]] = {
        "trainerkit": lambda: _trainerkit_throughput(count, notes),
        "executor": lambda: _executor_throughput(count),
        "memory_records": lambda: _trainerkit_throughput(count, set(), durable=False),
    }
    caikit_missing = subjects.caikit_missing()
    if caikit_missing is None:
        runners["caikit"] = lambda: _caikit_throughput(count)
    rates = alternate(repeats, runners)
    shared = [
        f"{count:,} trainings per round, {counted(repeats, 'round')}, max_workers={MAX_WORKERS}",
        *sorted(notes),
    ]
    ours = Figure(rates["trainerkit"], "/s")
    rows = [
        THROUGHPUT_VS_EXECUTOR.measured(
            ours,
            Figure(rates["executor"], "/s"),
            paired("ratio", rates["trainerkit"], rates["executor"]),
            notes=shared,
        )
    ]
    rows.append(
        THROUGHPUT_MEMORY_RECORDS.measured(
            Figure(rates["memory_records"], "/s"),
            Figure(rates["executor"], "/s"),
            paired("ratio", rates["memory_records"], rates["executor"]),
            notes=["records in a MemoryTrainingStore: everything else as above"],
        )
    )
    if caikit_missing is not None:
        rows.append(THROUGHPUT_VS_CAIKIT.cannot_run(caikit_missing))
    else:
        rows.append(
            THROUGHPUT_VS_CAIKIT.measured(
                ours,
                Figure(rates["caikit"], "/s"),
                paired("ratio", rates["trainerkit"], rates["caikit"]),
                notes=[
                    "caikit's LOCAL trainer has no max_workers: it starts one thread per training",
                    *subjects.caikit_notes(),
                ],
            )
        )
    return rows


def _trainerkit_throughput(count: int, notes: set[str], durable: bool = True) -> float:
    import trainerkit

    config: dict[str, Any] = {"max_workers": MAX_WORKERS}
    if not durable:
        config["state_dir"] = ":memory:"
    with subjects.trainerkit_trainer("LOCAL", local_records=durable, **config) as built:
        notes.update(built.notes)
        trainer = built.trainer
        with Stopwatch() as watch:
            futures = [trainer.train(Trivial, value) for value in range(count)]
            models = [future.result() for future in futures]
        check(
            [model.value for model in models] == list(range(count)),
            "trainerkit LOCAL returned the wrong models",
        )
        statuses = {future.get_info().status for future in futures}
        check(statuses == {trainerkit.TrainingStatus.COMPLETED}, f"trainerkit LOCAL statuses: {statuses}")
        recorded = trainer.list_trainings(status="COMPLETED")
        check(len(recorded) == count, f"{len(recorded)} COMPLETED records for {count} trainings")
    return count / watch.seconds


def _executor_throughput(count: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS) as executor:
        with Stopwatch() as watch:
            futures = [executor.submit(Trivial.train, value) for value in range(count)]
            models = [future.result() for future in futures]
    check([model.value for model in models] == list(range(count)), "the executor returned the wrong models")
    return count / watch.seconds


def _caikit_throughput(count: int) -> float:
    from caikit.core.data_model import JobStatus

    from .caikit_modules import CaikitTrivial

    trainer = subjects.caikit_trainer()
    with Stopwatch() as watch:
        futures = [trainer.train(CaikitTrivial, value) for value in range(count)]
        models = [future.load() for future in futures]
    check([model.value for model in models] == list(range(count)), "caikit returned the wrong models")
    statuses = {future.get_info().status for future in futures}
    check(statuses == {JobStatus.COMPLETED}, f"caikit statuses: {statuses}")
    return count / watch.seconds


# -- latency --------------------------------------------------------------------------


class _Releaser:
    """Opens a probe's gate once its training has started and the caller has
    had time to block in ``result()``.

    The short pause is what makes "return -> result() returned" measure the
    wake-up of a waiting caller, the case that matters, for both contenders alike.
    """

    PAUSE = 0.001

    def __init__(self) -> None:
        self._probes: "queue.Queue[LatencyProbe | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="bench-releaser", daemon=True)
        self._thread.start()

    def release_soon(self, probe: LatencyProbe) -> None:
        self._probes.put(probe)

    def close(self) -> None:
        self._probes.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            probe = self._probes.get()
            if probe is None:
                return
            probe.entered.wait()
            time.sleep(self.PAUSE)
            probe.release.set()


def latency_rows(settings: Settings) -> list[Row]:
    blocks = settings.size(10, 3)
    per_block = settings.size(30, 8)
    releaser = _Releaser()
    try:
        with (
            subjects.trainerkit_trainer("LOCAL", max_workers=MAX_WORKERS) as built,
            concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS) as executor,
        ):

            def via_trainerkit(probe: LatencyProbe) -> Any:
                return built.trainer.train(Stamped, probe)

            def via_executor(probe: LatencyProbe) -> Any:
                return executor.submit(Stamped.train, probe)

            for submit in (via_trainerkit, via_executor):  # warm both paths up
                _latency_block(submit, releaser, 3)
            measured = alternate(
                blocks,
                {
                    "trainerkit": lambda: _latency_block(via_trainerkit, releaser, per_block),
                    "executor": lambda: _latency_block(via_executor, releaser, per_block),
                },
            )
            notes = [
                f"{counted(blocks, 'block')} of {per_block} trainings, one at a time; ratio = median of "
                "per-block median ratios",
                *built.notes,
            ]
    finally:
        releaser.close()
    rows = []
    for index, spec in enumerate((LATENCY_START, LATENCY_FINISH)):
        ours = [block[index] for block in measured["trainerkit"]]
        theirs = [block[index] for block in measured["executor"]]
        rows.append(
            spec.measured(
                Figure([s for block in ours for s in block], "s"),
                Figure([s for block in theirs for s in block], "s"),
                paired("ratio", [statistics.median(b) for b in ours], [statistics.median(b) for b in theirs]),
                notes=notes if index == 0 else (),
            )
        )
    return rows


def _latency_block(
    submit: Callable[[LatencyProbe], Any], releaser: _Releaser, samples: int
) -> tuple[list[float], list[float]]:
    """``samples`` trainings one after another; (start latencies, finish latencies)."""
    starts, finishes = [], []
    for _ in range(samples):
        probe = LatencyProbe()
        called_at = time.perf_counter()
        future = submit(probe)
        releaser.release_soon(probe)
        model = future.result(timeout=30)
        returned_at = time.perf_counter()
        check(isinstance(model, Stamped), f"latency run returned {model!r}")
        starts.append(probe.entered_at - called_at)
        finishes.append(returned_at - probe.returned_at)
    return starts, finishes
