"""Records: listing from a large SQLite store, its size on disk, and memory
per training while retention purges finished ones.

* ``list_trainings(status=COMPLETED, tags=[team, experiment], limit=50)`` on a
  LOCAL trainer whose store holds N records (filled through the store API, not
  by training N times), p50 and p99, against a bare ``sqlite3`` query of the
  same rows from the simplest sensible schema (one table, a tag table, one
  index), decoded from JSON.
* Bytes on disk per record: the trainer's whole state directory against the
  bare database file.
* RSS per training: batches of trivial trainings pass through a LOCAL trainer
  with ``retention_duration`` set; after each batch (once retention has
  purged it) the process's RSS is read. The figure is the growth per
  training, per batch; a flat line means nothing is kept per training.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import gc
import importlib.util
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from typing import Any, Callable, Iterator, Sequence

from . import subjects
from .harness import (
    CannotRun,
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
    percentile,
    slope,
)
from .trivial_modules import Trivial

NAME = "records"

LIST_P50 = RowSpec(
    "records.list.p50",
    "list_trainings(status, 2 tags, limit=50) over the stored records, median",
    "bare sqlite3",
)
LIST_P99 = RowSpec(
    "records.list.p99",
    "list_trainings(status, 2 tags, limit=50) over the stored records, 99th percentile",
    "bare sqlite3",
)
BYTES_PER_RECORD = RowSpec(
    "records.bytes_per_record",
    "bytes on disk per stored record (the whole state directory)",
    "bare sqlite3 file",
)
RSS_PER_TRAINING = RowSpec(
    "records.rss_per_training",
    "RSS growth per training while trainings pass through with retention applying",
    "bare executor",
    Goal("value", "<", 1024, "< 1 KB (flat)"),
)
RSS_VS_CAIKIT = RowSpec(
    "records.rss_per_training.vs_caikit",
    "RSS growth per training, trainerkit LOCAL vs caikit LocalModelTrainer (same retention)",
    "caikit threads",
)
ROWS = (LIST_P50, LIST_P99, BYTES_PER_RECORD, RSS_PER_TRAINING, RSS_VS_CAIKIT)

TEAMS = ("team-a", "team-b", "team-c", "team-d")
#: One experiment tag per this many records, so a query matches ~200 records at any size.
RECORDS_PER_EXPERIMENT = 1000
RETENTION = "200ms"
RETENTION_SECONDS = 0.2
MAX_WORKERS = 4


def run(settings: Settings) -> list[Row]:
    reason = _store_missing()
    if reason:
        return [spec.cannot_run(reason) for spec in ROWS]
    rows = []
    # Memory first, while the process is small and before the large store's caches exist.
    memory = (RSS_PER_TRAINING, RSS_VS_CAIKIT)
    if settings.wants(*memory):
        rows += guarded(memory, lambda: rss_rows(settings))
    listing = (LIST_P50, LIST_P99, BYTES_PER_RECORD)
    if settings.wants(*listing):
        rows += guarded(listing, lambda: listing_rows(settings))
    return rows


def _store_missing() -> str | None:
    if importlib.util.find_spec("trainerkit.store.sqlite") is None:
        return "trainerkit/store/sqlite.py does not exist (the SQLite records store is not written)"
    return None


def _require_durable(built: subjects.BuiltTrainer) -> None:
    if not built.durable:
        raise CannotRun(
            "LOCAL does not keep its records in SQLite yet (no state_dir key, or the store is not "
            "wired in): " + "; ".join(built.notes)
        )


# -- listing and size ------------------------------------------------------------------


def listing_rows(settings: Settings) -> list[Row]:
    count = settings.size(100_000, 5_000)
    blocks = settings.size(10, 3)
    per_block = settings.size(50, 10)
    experiments = max(1, count // RECORDS_PER_EXPERIMENT)
    with (
        subjects.trainerkit_trainer("LOCAL", max_workers=MAX_WORKERS) as built,
        tempfile.TemporaryDirectory(prefix="trainerkit-bench-sqlite-") as bare_dir,
    ):
        _require_durable(built)
        trainer = built.trainer
        infos = list(_records(trainer.instance_name, count, experiments))
        with Stopwatch() as fill:
            for info in infos:
                trainer._store.add(info, owner=trainer._owner)
        listed = len(trainer.list_trainings())
        check(listed == count, f"the store lists {listed} records after adding {count}")
        bare = _bare_database(os.path.join(bare_dir, "bare.sqlite"), infos)
        try:
            queries = _queries(experiments)

            def ours(team: str, experiment: str) -> list[str]:
                return [info.id for info in _trainerkit_query(trainer, team, experiment)]

            def theirs(team: str, experiment: str) -> list[str]:
                return [record["id"] for record in _bare_query(bare, trainer.instance_name, team, experiment)]

            _check_same_rows(ours, theirs, queries[:20])
            blocks_of = {
                "trainerkit": lambda: _time_queries(ours, queries, per_block),
                "bare": lambda: _time_queries(theirs, queries, per_block),
            }
            for block in blocks_of.values():  # warm both caches
                block()
            latencies = alternate(blocks, blocks_of)
        finally:
            bare.close()
        store_bytes = _directory_bytes(built.state_dir)
        bare_bytes = _directory_bytes(bare_dir)
        notes = [
            f"{count:,} records ({count / fill.seconds:,.0f} adds/s through the store API), "
            f"{counted(blocks, 'block')} of {per_block} queries",
            *built.notes,
        ]
    all_ours = [s for block in latencies["trainerkit"] for s in block]
    all_theirs = [s for block in latencies["bare"] for s in block]
    p99_ours, p99_theirs = percentile(all_ours, 0.99), percentile(all_theirs, 0.99)
    return [
        LIST_P50.measured(
            Figure(all_ours, "s"),
            Figure(all_theirs, "s"),
            paired(
                "ratio",
                [statistics.median(b) for b in latencies["trainerkit"]],
                [statistics.median(b) for b in latencies["bare"]],
            ),
            notes=notes,
        ),
        LIST_P99.measured(
            Figure([p99_ours], "s"), Figure([p99_theirs], "s"), Figure([p99_ours / p99_theirs], "x")
        ),
        BYTES_PER_RECORD.measured(
            Figure([store_bytes / count], "B/record"),
            Figure([bare_bytes / count], "B/record"),
            Figure([store_bytes / bare_bytes], "x"),
        ),
    ]


def _check_same_rows(
    ours: Callable[[str, str], list[str]],
    theirs: Callable[[str, str], list[str]],
    queries: Sequence[tuple[str, str]],
) -> None:
    """trainerkit and the bare query return the same 50 ids, in the same order."""
    for team, experiment in queries:
        a, b = ours(team, experiment), theirs(team, experiment)
        check(
            len(a) == 50 and a == b,
            f"listing {team}/{experiment}: trainerkit gave {len(a)} records, sqlite3 {len(b)}, "
            + ("the same ones" if a == b else "not the same ones in the same order"),
        )


def _records(trainer_name: str, count: int, experiments: int) -> Iterator[Any]:
    """``count`` realistic records: mostly finished, with tags, errors and progress."""
    from trainerkit import ids
    from trainerkit.info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus

    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    # Tags drawn independently of the status (which cycles with the index), from
    # a fixed seed: every (team, experiment) pair occurs, about equally often.
    draw = random.Random(8)
    for index in range(count):
        # A caller-chosen unique part, as external_training_id gives: valid, and
        # cheap to make 100,000 of.
        training_id = ids.external_training_id(trainer_name, f"rec-{index:06d}")
        bucket = index % 100
        status = (
            TrainingStatus.COMPLETED
            if bucket < 80
            else TrainingStatus.ERRORED
            if bucket < 92
            else TrainingStatus.CANCELED
            if bucket < 98
            else TrainingStatus.RUNNING
            if bucket < 99
            else TrainingStatus.QUEUED
        )
        submitted = base + datetime.timedelta(seconds=index)
        started = submitted + datetime.timedelta(seconds=1) if status is not TrainingStatus.QUEUED else None
        finished = submitted + datetime.timedelta(seconds=30) if status.is_terminal else None
        errors: tuple[Any, ...] = ()
        if status is TrainingStatus.ERRORED:
            errors = (
                ErrorDetail(
                    "ValueError",
                    "column 'label' has 3 missing values",
                    'Traceback (most recent call last):\n  File "train.py", line 12, in train\n'
                    "ValueError: column 'label' has 3 missing values\n",
                ),
            )
        yield TrainingInfo(
            id=training_id,
            trainer_name=trainer_name,
            status=status,
            module="benchmarks.trivial_modules:Trivial",
            submission_time=submitted,
            save_path=f"/models/runs/{training_id}",
            model_name="classifier",
            tags=(draw.choice(TEAMS), f"exp-{draw.randrange(experiments)}"),
            start_time=started,
            completion_time=finished,
            errors=errors,
            progress=ProgressReport(
                step=10, total=10, metrics={"loss": 0.125, "accuracy": 0.94}, time=finished
            )
            if status is TrainingStatus.COMPLETED
            else None,
        )


def _queries(experiments: int) -> list[tuple[str, str]]:
    """(team, experiment) pairs; each matches about 1/(4 * experiments) of the records."""
    return [
        (TEAMS[i % len(TEAMS)], f"exp-{(i * 37) % experiments}") for i in range(max(experiments, len(TEAMS)))
    ]


def _time_queries(
    query: Callable[[str, str], list[Any]], queries: Sequence[tuple[str, str]], count: int
) -> list[float]:
    latencies = []
    for index in range(count):
        team, experiment = queries[index % len(queries)]
        started = time.perf_counter()
        result = query(team, experiment)
        latencies.append(time.perf_counter() - started)
        check(len(result) == 50, f"a listing returned {len(result)} rows, not 50")
    return latencies


def _trainerkit_query(trainer: Any, team: str, experiment: str) -> list[Any]:
    return trainer.list_trainings(status="COMPLETED", tags=[team, experiment], limit=50)


_BARE_SCHEMA = """
CREATE TABLE trainings (
    id TEXT PRIMARY KEY, trainer TEXT NOT NULL, status TEXT NOT NULL,
    submitted TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE tags (tag TEXT NOT NULL, training_id TEXT NOT NULL, PRIMARY KEY (tag, training_id)) WITHOUT ROWID;
CREATE INDEX trainings_by_status ON trainings (trainer, status, submitted);
"""
_BARE_QUERY = """
SELECT info FROM trainings
WHERE trainer = ? AND status = ?
  AND id IN (SELECT training_id FROM tags WHERE tag = ?)
  AND id IN (SELECT training_id FROM tags WHERE tag = ?)
ORDER BY submitted DESC LIMIT 50
"""


def _bare_database(path: str, infos: Sequence[Any]) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.executescript(_BARE_SCHEMA)
    with connection:
        connection.executemany(
            "INSERT INTO trainings VALUES (?, ?, ?, ?, ?)",
            (
                (
                    info.id,
                    info.trainer_name,
                    info.status.value,
                    info.submission_time.isoformat(),
                    json.dumps(info.to_dict()),
                )
                for info in infos
            ),
        )
        connection.executemany(
            "INSERT INTO tags VALUES (?, ?)", ((tag, info.id) for info in infos for tag in info.tags)
        )
    return connection


def _bare_query(
    connection: sqlite3.Connection, trainer_name: str, team: str, experiment: str
) -> list[dict[str, Any]]:
    rows = connection.execute(_BARE_QUERY, (trainer_name, "COMPLETED", team, experiment)).fetchall()
    return [json.loads(row[0]) for row in rows]


def _directory_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(folder, name))
    return total


# -- memory ---------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_rows(settings: Settings) -> list[Row]:
    if not os.path.exists("/proc/self/statm"):
        reason = "RSS is read from /proc/self/statm, which this system lacks"
        return [RSS_PER_TRAINING.cannot_run(reason), RSS_VS_CAIKIT.cannot_run(reason)]
    rounds = settings.size(3, 1)
    batch = settings.size(1000, 200)
    batches = settings.size(10, 5)
    warmup = settings.size(2, 1)
    notes: set[str] = set()

    def trainerkit_round() -> float:
        with subjects.trainerkit_trainer(
            "LOCAL", max_workers=MAX_WORKERS, retention_duration=RETENTION
        ) as built:
            _require_durable(built)
            notes.update(built.notes)
            return _rss_slope(
                lambda n, offset: _trainerkit_batch(built.trainer, n, offset), batch, batches, warmup
            )

    def executor_round() -> float:
        with concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS) as executor:
            return _rss_slope(lambda n, offset: _executor_batch(executor, n, offset), batch, batches, warmup)

    runners: dict[str, Callable[[], float]] = {"trainerkit": trainerkit_round, "executor": executor_round}
    caikit_missing = subjects.caikit_missing()
    if caikit_missing is None:

        def caikit_round() -> float:
            trainer = subjects.caikit_trainer(retention_duration=f"{RETENTION_SECONDS}s")
            return _rss_slope(lambda n, offset: _caikit_batch(trainer, n, offset), batch, batches, warmup)

        runners["caikit"] = caikit_round
    slopes = alternate(rounds, runners)
    ours = Figure(slopes["trainerkit"], "B/training")
    rows = [
        RSS_PER_TRAINING.measured(
            ours,
            Figure(slopes["executor"], "B/training"),
            notes=[
                f"{counted(rounds, 'round')} of {batches} batches of {batch:,} trainings (after "
                f"{counted(warmup, 'warm-up batch', 'warm-up batches')}), retention {RETENTION}; "
                "RSS read once each batch has been purged; the figure is the least-squares slope "
                "of RSS over trainings done",
                *sorted(notes),
            ],
        )
    ]
    if caikit_missing is not None:
        rows.append(RSS_VS_CAIKIT.cannot_run(caikit_missing))
    else:
        rows.append(
            RSS_VS_CAIKIT.measured(
                ours,
                Figure(slopes["caikit"], "B/training"),
                notes=["caikit purges expired trainings when train() is called", *subjects.caikit_notes()],
            )
        )
    return rows


def _rss_slope(run_batch: Callable[[int, int], None], batch: int, batches: int, warmup: int) -> float:
    """RSS growth per training: the least-squares slope over the measured batches."""
    done, trainings, rss = 0, [], []
    for index in range(warmup + batches):
        run_batch(batch, done)
        done += batch
        gc.collect()
        if index >= warmup - 1:
            trainings.append(done)
            rss.append(_rss())
    return slope(trainings, rss)


def _trainerkit_batch(trainer: Any, count: int, offset: int) -> None:
    # Models are read as each training ends: retention may purge a finished
    # training (and its in-memory model) before a later result() call would run.
    values: list[int] = []
    futures = []
    for i in range(count):
        future = trainer.train(Trivial, offset + i)
        future.add_done_callback(lambda done: values.append(done.result().value))
        futures.append(future)
    concurrent.futures.wait(futures, timeout=60)
    check(sorted(values) == list(range(offset, offset + count)), "trainerkit LOCAL returned the wrong models")
    del futures
    _wait_until(lambda: not trainer.list_trainings(), "retention never purged the batch")


def _executor_batch(executor: concurrent.futures.Executor, count: int, offset: int) -> None:
    futures = [executor.submit(Trivial.train, offset + i) for i in range(count)]
    values = [future.result(timeout=60).value for future in futures]
    check(values == list(range(offset, offset + count)), "the executor returned the wrong models")


def _caikit_batch(trainer: Any, count: int, offset: int) -> None:
    from .caikit_modules import CaikitTrivial

    futures = [trainer.train(CaikitTrivial, offset + i) for i in range(count)]
    values = [future.load().value for future in futures]
    check(values == list(range(offset, offset + count)), "caikit returned the wrong models")
    del futures
    # Let the batch expire, so the next batch's first train() purges it, as caikit does.
    time.sleep(RETENTION_SECONDS)


def _wait_until(condition: Callable[[], bool], message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)
