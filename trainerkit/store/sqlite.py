"""Training records in a SQLite file: they survive restarts and are shared.

:class:`SQLiteTrainingStore` implements :class:`~trainerkit.store.TrainingStore`
over one SQLite database (``<state dir>/trainings.sqlite3``, see
:mod:`trainerkit.store.state_dir`). Any number of trainers (told apart by
``trainer_name``), threads and processes may use the same file at once.

Layout (schema version 1):

* ``trainings``: one row per training. The fields that queries filter or sort
  on are columns (``trainer_name``, ``status``, ``submitted_us``,
  ``completed_us``, in microseconds since the epoch) beside ``owner``, the
  process that runs it; every other :class:`~trainerkit.TrainingInfo` field is
  JSON in ``body``. One index, ``(trainer_name, submitted_us, seq, status)``,
  serves listing newest first (``seq``, the row number, orders ties), the
  ``since`` and ``status`` filters and retention.
* ``training_tags``: ``(tag, training_seq)`` pairs, so a tag filter is an
  index lookup checked against the time index's entries without reading rows.
  Tags never change after ``add``; they are also kept in ``body``.

Versioning: ``PRAGMA user_version`` is the schema version and
``PRAGMA application_id`` marks the file as trainerkit's. Opening an older
file runs the missing steps of :data:`MIGRATIONS` in one transaction; a newer
one is refused with a message to upgrade trainerkit.

Costs: WAL journal with ``synchronous=NORMAL`` (a commit writes to the log
without waiting for the disk; the log is synced at checkpoints, and the
database stays consistent after a power loss) and statements prepared once per
connection.

``add`` commits before it returns: a submission that was accepted is on
disk, and one that fails (a full disk, a taken id) leaves nothing. The
submitting thread commits itself (no hand-off to another thread, which costs
more than the commit when other threads hold the GIL), with any other
submission queued by then, as one autocommit ``INSERT`` when it is alone.
Updates of records this process added (status changes, progress) are
write-behind: the change is visible to this process at once, and 2 ms after
the first change it sees, one writer thread commits everything queued in one
transaction (a submission takes them along only when they belong to the
finished training its record replaces, so that they are written first). Within a transaction only each
training's latest state is written: a training that starts and ends between
two commits costs one row write, not three. A commit costs
75-120 us on a typical disk, more than a whole trivial training, so a commit
per change would cap throughput far below a thread pool's. The price: a
process that is killed loses the status changes of its last few milliseconds
(those trainings died with it and read as interrupted; a saved model still
marks its training completed, see ``ModelTrainerBase._reconcile``).
:meth:`SQLiteTrainingStore.flush` waits until everything is on disk; it runs
at interpreter exit (registered when the first store opens) and on ``close()``. If the writer cannot commit (a full
disk), it keeps the changes and retries; ``flush`` raises that StoreError.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import logging
import os
import sqlite3
import stat
import threading
import weakref
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import StoreError, TrainingExistsError, TrainingNotFoundError
from ..capabilities import levels_to_json
from ..info import TrainingInfo, TrainingStatus
from ..private_files import make_private_dir, open_private
from .base import UPDATABLE_FIELDS, TrainingQuery, TrainingStore

log = logging.getLogger("trainerkit")

#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of trainerkit record databases (ASCII "tktr").
APPLICATION_ID = 0x746B7472
#: How long an operation waits for another connection's write lock, in seconds.
DEFAULT_BUSY_TIMEOUT = 30.0
# Every commit writes each page it changed, whole, to the WAL; a record change
# touches two or three pages, so small pages keep each of a training's ~3
# writes small. Only applies when the file is created.
_PAGE_SIZE = 1024
# Retention deletes in batches so that no transaction holds the write lock long.
_PURGE_BATCH = 500
# The writer retries a failed commit after these delays (doubling), in seconds.
_RETRY_FIRST, _RETRY_MAX = 0.05, 5.0
#: How long the writer lets changes gather before it commits them (flush() cuts it short).
_GROUP_COMMIT_WINDOW = 0.002
# How long close() and interpreter exit wait for pending changes, in seconds.
_CLOSE_FLUSH_TIMEOUT = 10.0

#: Statements that bring a database from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # seq: a stable row number (an INTEGER PRIMARY KEY survives VACUUM),
        # present in every index entry, so tag and tie-break checks need no row.
        """CREATE TABLE trainings (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            trainer_name TEXT NOT NULL,
            status TEXT NOT NULL,
            submitted_us INTEGER NOT NULL,
            completed_us INTEGER,
            owner TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        # status is last so that a status change rewrites the entry in place
        # (same leaf page) and a status filter is checked on the index alone.
        "CREATE INDEX trainings_by_trainer_time ON trainings (trainer_name, submitted_us, seq, status)",
        """CREATE TABLE training_tags (
            tag TEXT NOT NULL,
            training_seq INTEGER NOT NULL,
            PRIMARY KEY (tag, training_seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX training_tags_by_training ON training_tags (training_seq)",
    ),
}

_COLUMNS = "id, trainer_name, status, submitted_us, completed_us, body"
_TERMINAL_VALUES = tuple(sorted(s.value for s in TrainingStatus if s.is_terminal))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MICROSECOND = datetime.timedelta(microseconds=1)

# Primary SQLite result codes used to explain failures.
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26
_CODES_BY_MESSAGE = (  # for errors that carry no code (raised by Python code, or Python < 3.11)
    ("disk is full", _SQLITE_FULL),
    ("not a database", _SQLITE_NOTADB),
    ("malformed", _SQLITE_CORRUPT),
    ("readonly", _SQLITE_READONLY),
    ("read-only", _SQLITE_READONLY),
    ("unable to open", _SQLITE_CANTOPEN),
    ("is locked", _SQLITE_BUSY),
    ("disk i/o error", _SQLITE_IOERR),
)


class _Waiter:
    """A submission waiting for its record to be committed (or refused).

    Set only under the commit lock, which the submitter takes after queueing
    its record: once it holds that lock, its record was either committed by
    whoever held it before (``done``) or is still queued for it to commit.
    """

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: Optional[BaseException] = None


class _WriteBehind:
    """Changes of one process to one database file, waiting for the writer."""

    def __init__(self) -> None:
        # One lock, two conditions: flush() waits on queue_lock (notified at
        # every commit); the writer thread waits on writer_wake, notified only
        # when it has something to do, so commits do not wake it for nothing.
        # ``lock`` is taken directly where nobody waits or is notified: a
        # Condition's __enter__ and __exit__ are Python calls, on every change.
        self.lock = lock = threading.Lock()
        self.queue_lock = threading.Condition(lock)
        self.writer_wake = threading.Condition(lock)
        self.writer_idle = False  # the writer waits for a first change (set under lock)
        self.flush_waiters = 0  # threads in flush(), waiting on queue_lock for commits
        self.queue: list[tuple[Any, ...]] = []
        self.enqueued = 0  # operations handed to the writer so far
        self.committed = 0  # of those, operations committed (or dropped as invalid)
        self.failure: Optional[StoreError] = None
        self.failed_attempts = 0  # commits that failed (the writer retries them)
        self.retry_now = False  # flush() asks a writer waiting to retry not to wait
        # Records this process added and has not yet seen committed in a final
        # state: reads of them are answered here, and updates need no read.
        self.live: dict[str, tuple[TrainingInfo, str]] = {}
        self.pending: dict[str, int] = {}  # training id -> queued operations
        self.writer: Optional[threading.Thread] = None
        self.writer_pid = 0
        # Held while a batch is committed, by the writer thread or by a
        # submitter that commits the queue itself (so one commits at a time).
        self.commit_lock = threading.Lock()


_shared_lock = threading.Lock()
_shared: dict[tuple[str, int], _WriteBehind] = {}


class SQLiteTrainingStore(TrainingStore):
    """Training records in the SQLite file ``path`` (see the module docstring).

    The database (and its directory) is created on first use. Opening checks
    cheaply that the file is a trainerkit database of a known version that
    this process can write; every failure raises :class:`~trainerkit.StoreError`
    naming the file and what to do. Records are never silently kept elsewhere.

    One connection per store, used under a lock, so an instance is safe to
    share between threads; other processes open their own. ``close()``
    releases the connection; a later call opens it again (so late updates of
    trainings still finishing after ``shutdown(wait=False)`` are not lost).
    """

    def __init__(self, path: "str | os.PathLike[str]", *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = 0
        # Connections inherited through fork(): never used or closed in the child.
        self._inherited: list[sqlite3.Connection] = []
        self._reset_writer()
        _register_process_hooks()
        _open_stores.add(self)
        with self._lock:
            self._connection()

    def _reset_writer(self) -> None:
        """Attach to this process's write-behind state for :attr:`path`: every
        store object on one file in one process shares it, so each sees the
        others' changes at once (at creation, and again in a forked child)."""
        with _shared_lock:
            shared = _shared.get((self.path, os.getpid()))
            if shared is None:
                shared = _shared[(self.path, os.getpid())] = _WriteBehind()
        self._w = shared

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    # -- TrainingStore ------------------------------------------------------------

    def add(self, info: TrainingInfo, *, owner: str = "", replace_finished: bool = False) -> None:
        # Synchronous: an accepted submission is on disk when this returns, and
        # a refused one (a full disk, a taken id) leaves nothing. The writer
        # commits it together with whatever else is queued (group commit).
        with self._w.lock:
            live = self._w.live.get(info.id)
            if live is not None and (not live[0].status.is_terminal or not replace_finished):
                raise TrainingExistsError(_exists_message(info.id, live[0].status, replace_finished))
        if replace_finished and live is None:
            # A caller-chosen id may belong to a record on disk: refuse it now.
            with self._read(f"adding training {info.id}") as conn:
                existing = conn.execute("SELECT status FROM trainings WHERE id = ?", (info.id,)).fetchone()
            if existing is not None and not TrainingStatus(existing[0]).is_terminal:
                raise TrainingExistsError(_exists_message(info.id, TrainingStatus(existing[0]), True))
        waiter = _Waiter()
        fixed = _fixed_body(info)
        w = self._w
        with w.lock:
            # Changes of a finished training with this id still queued must be
            # written before this record replaces it: then take the whole queue.
            after_changes = info.id in w.pending
            self._enqueue_locked(("add", info, owner, replace_finished, fixed), info, owner, fixed, waiter)
        # The submitter commits its record itself (with any other submissions
        # queued meanwhile: group commit): handing it to the writer thread and
        # waiting to be woken costs more than the commit when other threads
        # hold the GIL. Status changes stay queued for the writer, which
        # commits all of them together every few milliseconds: taking them
        # along here would cost this submission a BEGIN, an UPDATE and a
        # COMMIT (each gives up the GIL) instead of one autocommit INSERT. If
        # another thread is committing meanwhile, this one goes next (or finds
        # its record taken along already).
        with w.commit_lock:
            if not waiter.done:
                with w.lock:
                    if after_changes:
                        batch, w.queue = w.queue, []
                    else:
                        batch = _take_submissions(w.queue, w.pending)
                self._commit_batch(batch)  # holds this submission: only commit-lock holders take from the queue
        if waiter.error is not None:
            raise waiter.error

    def update(self, training_id: str, **changes: Any) -> TrainingInfo:
        if not UPDATABLE_FIELDS.issuperset(changes):
            raise ValueError(f"cannot update record fields {sorted(changes.keys() - UPDATABLE_FIELDS)}")
        with self._w.lock:
            live = self._w.live.get(training_id)
            if live is not None:
                info, owner, fixed = live
                if info.status.is_terminal:  # the first final status wins
                    return info
                info = info.evolve(**changes)
                self._enqueue_locked(("update", info, fixed), info, owner, fixed)
                return info
        # A record this process did not add (another process runs it): read, change, write.
        with self._write(f"updating training {training_id}") as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM trainings WHERE id = ?", (training_id,)).fetchone()
            if row is None:
                raise TrainingNotFoundError(f"no training with id {training_id!r}")
            info = self._row_to_info(row)
            if info.status.is_terminal:  # the first final status wins
                return info
            info = info.evolve(**changes)
            conn.execute(
                "UPDATE trainings SET status = ?, completed_us = ?, body = ? WHERE id = ?",
                (info.status.value, _to_us(info.completion_time), _body(info), training_id),
            )
        return info

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every change made so far is committed to the file.

        Raises:
            StoreError: the writer cannot commit (the error names the file and
                what to do), or ``timeout`` seconds passed first.
        """
        with self._w.lock:
            target = self._w.enqueued
            failed_attempts = self._w.failed_attempts
            self._w.retry_now = True  # a writer waiting to retry tries again at once
            self._w.writer_idle = False
            self._w.writer_wake.notify_all()
            self._w.flush_waiters += 1
            try:
                done = self._w.queue_lock.wait_for(
                    lambda: self._w.committed >= target or self._w.failed_attempts > failed_attempts,
                    timeout,
                )
            finally:
                self._w.flush_waiters -= 1
            if self._w.committed >= target:
                return
            self._raise_failure()
            if not done:
                raise StoreError(
                    f"the training record database {self.path} did not take "
                    f"{target - self._w.committed} changes within {timeout:g} s"
                )

    # -- the writer ---------------------------------------------------------------------

    def _enqueue_locked(
        self,
        operation: tuple[Any, ...],
        info: TrainingInfo,
        owner: str,
        fixed: str,
        waiter: "Optional[_Waiter]" = None,
    ) -> None:
        """Queue ``operation``; a submission (``waiter``) commits it itself,
        other changes are the writer's. Queue lock held."""
        w = self._w
        training_id = info.id
        w.live[training_id] = (info, owner, fixed)
        w.pending[training_id] = w.pending.get(training_id, 0) + 1
        w.queue.append((self, operation, waiter))
        w.enqueued += 1
        # A forked child gets a fresh _WriteBehind (see _after_fork_in_child),
        # so a writer, once started, is this process's.
        if w.writer is None:
            w.writer_pid = os.getpid()
            w.writer = threading.Thread(
                target=self._write_loop, name=f"trainerkit-records-{os.path.basename(self.path)}", daemon=True
            )
            w.writer.start()
        if waiter is None and w.writer_idle:
            # Only an idle writer is woken, once: one waiting out its window
            # is left alone (each wake-up is a thread switch under the GIL).
            w.writer_idle = False
            w.writer_wake.notify()

    def _write_loop(self) -> None:
        delay = _RETRY_FIRST
        w = self._w
        while True:
            with w.lock:
                while not w.queue:
                    w.writer_idle = True
                    w.writer_wake.wait()
                w.writer_idle = False
                # Group commit: changes of the next moments join this batch (a
                # submission arriving meanwhile takes them along in its own
                # commit), and the writer does not contend for the GIL with the
                # caller being woken by the change it is about to commit. Only
                # flush() (retry_now) cuts the window short.
                if not w.retry_now:
                    w.writer_wake.wait(_GROUP_COMMIT_WINDOW)
                w.retry_now = False
            with w.commit_lock:
                with w.lock:
                    batch, w.queue = w.queue, []
                failed = bool(batch) and not self._commit_batch(batch)
            if not failed:
                delay = _RETRY_FIRST
                continue
            with w.lock:
                if w.queue:
                    w.writer_wake.wait_for(lambda: w.retry_now, delay)
            delay = min(delay * 2, _RETRY_MAX)

    def _commit_batch(self, batch: list[tuple[Any, ...]]) -> bool:
        """Commit ``batch`` (taken off the queue) and book the result; False
        when the commit failed (its submissions are refused, its updates put
        back at the head of the queue for the writer to retry). Commit lock held."""
        try:
            # Each change is written through the connection of the store
            # object that made it (they differ only in how they connect).
            store = batch[0][0]
            if all(entry[0] is store for entry in batch):
                refused = store._commit(batch)
            else:
                by_store: dict[int, tuple[SQLiteTrainingStore, list[tuple[Any, ...]]]] = {}
                for entry in batch:
                    by_store.setdefault(id(entry[0]), (entry[0], []))[1].append(entry)
                refused = {}
                for store, entries in by_store.values():
                    refused.update(store._commit(entries))
        except StoreError as exc:
            with self._w.lock:
                # A submission waiting for its commit is refused now (and
                # leaves nothing); later changes are kept, in order, for the retry.
                kept = [entry for entry in batch if entry[2] is None]
                for entry in batch:
                    if entry[2] is not None:
                        self._drop(entry, exc)
                self._w.committed += len(batch) - len(kept)
                self._w.queue[:0] = kept
                first = self._w.failure is None
                self._w.failure = exc
                self._w.failed_attempts += 1
                self._w.retry_now = False
                self._w.queue_lock.notify_all()
                if kept and self._w.writer_idle:  # a submitter's failed commit: the writer retries the rest
                    self._w.writer_idle = False
                    self._w.writer_wake.notify()
                if first:
                    log.error("training records are not being saved: %s", exc)
            return False
        with self._w.lock:
            if self._w.failure is not None:
                log.warning("training records are being saved again to %s", self.path)
            if refused:
                for entry in batch:
                    if id(entry) in refused:
                        self._drop(entry, refused[id(entry)])
                batch = [entry for entry in batch if id(entry) not in refused]
            self._settle(batch, dropped=len(refused))
            for entry in batch:
                if entry[2] is not None:
                    entry[2].done = True
        return True

    def _drop(self, entry: tuple[Any, ...], error: BaseException) -> None:
        """Forget a change that will never be written; tell its waiter. Queue lock held."""
        operation, waiter = entry[1], entry[2]
        training_id = operation[1].id
        left = self._w.pending[training_id] - 1
        if left:
            self._w.pending[training_id] = left
        else:
            del self._w.pending[training_id]
            if operation[0] == "add":
                self._w.live.pop(training_id, None)
        if waiter is not None:
            waiter.error = error
            waiter.done = True

    def _settle(self, batch: Sequence[tuple[Any, ...]], dropped: int = 0) -> None:
        """Book ``batch`` as committed (and ``dropped`` more as done). Queue lock held."""
        self._w.failure = None
        self._w.committed += len(batch) + dropped
        for entry in batch:
            training_id = entry[1][1].id
            left = self._w.pending[training_id] - 1
            if left:
                self._w.pending[training_id] = left
                continue
            del self._w.pending[training_id]
            if self._w.live[training_id][0].status.is_terminal:
                del self._w.live[training_id]  # on disk for good; read it there
        if self._w.flush_waiters:  # notify_all is Python code: skip it when nobody waits
            self._w.queue_lock.notify_all()

    def _commit(self, entries: Sequence[tuple[Any, ...]]) -> dict[int, BaseException]:
        """Write ``entries`` in one transaction; return the ones refused as
        invalid (by ``id(entry)``: an id taken meanwhile by another process)."""
        operations = _coalesce(entries)
        # The hot path of every training (no context managers: they cost more
        # than the statements' Python side). Runs as _write does.
        with self._lock:
            conn = self._connection()
            try:
                if len(operations) == 1 and _one_statement(operations[0]):
                    # One statement is its own transaction (autocommit): no BEGIN
                    # and COMMIT round trips, each of which gives up the GIL.
                    _apply_operation(conn, operations[0])
                    return {}
                conn.execute("BEGIN IMMEDIATE")
                for operation in operations:
                    _apply_operation(conn, operation)
                conn.execute("COMMIT")
                return {}
            except sqlite3.IntegrityError:
                _rollback(conn)
            except sqlite3.Error as exc:
                _rollback(conn)
                raise self._error(exc, f"saving {len(entries)} record changes") from exc
            except BaseException:
                _rollback(conn)
                raise
        # One invalid change must not hold back the others: apply them one by one.
        refused: dict[int, BaseException] = {}
        for entry in entries:
            try:
                with self._write("saving a record change") as conn:
                    _apply_operation(conn, entry[1])
            except StoreError as single:
                if not isinstance(single.__cause__, sqlite3.IntegrityError):
                    raise
                training_id = entry[1][1].id
                log.error("refused a change of training %s: %s", training_id, single)
                refused[id(entry)] = TrainingExistsError(f"a training with id {training_id!r} already exists")
        return refused

    def _raise_failure(self) -> None:
        if self._w.failure is not None:
            raise StoreError(
                f"{self._w.failure} ({len(self._w.queue)} record changes are kept in memory and "
                "retried; they are saved once the problem is fixed)"
            ) from self._w.failure

    def get(self, training_id: str) -> Optional[TrainingInfo]:
        with self._w.lock:
            # Changes not yet on disk are read here; otherwise the file is the
            # truth (another process may have changed the record since).
            live = self._w.live.get(training_id) if self._w.pending.get(training_id) else None
        if live is not None:
            return live[0]
        with self._read(f"reading training {training_id}") as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM trainings WHERE id = ?", (training_id,)).fetchone()
        return self._row_to_info(row) if row is not None else None

    def get_owner(self, training_id: str) -> Optional[str]:
        with self._w.lock:
            live = self._w.live.get(training_id)
        if live is not None:
            return live[1]
        with self._read(f"reading training {training_id}") as conn:
            row = conn.execute("SELECT owner FROM trainings WHERE id = ?", (training_id,)).fetchone()
        return row[0] if row is not None else None

    def list(self, query: TrainingQuery) -> list[TrainingInfo]:
        sql, params = list_statement(query)
        self.flush()
        with self._read("listing trainings") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [self._row_to_info(row) for row in rows]

    def count_by_trainer(self) -> dict[str, int]:
        self.flush()
        with self._read("counting trainings") as conn:
            rows = conn.execute("SELECT trainer_name, COUNT(*) FROM trainings GROUP BY trainer_name").fetchall()
        return {name: count for name, count in rows}

    def describe(self) -> str:
        return self.path

    def delete(self, training_id: str) -> bool:
        self.flush()
        with self._write(f"deleting training {training_id}") as conn:
            deleted = _delete_rows(conn, (training_id,)) > 0
        with self._w.lock:
            if not self._w.pending.get(training_id):
                self._w.live.pop(training_id, None)
        return deleted

    def purge_finished(
        self, finished_before: datetime.datetime, trainer_name: Optional[str] = None
    ) -> list[TrainingInfo]:
        cutoff = _to_us(finished_before)
        # A training completed before the cutoff was also submitted before it,
        # so the time index bounds the rows looked at.
        where = "submitted_us < ? AND completed_us < ? AND status IN (?, ?, ?)"
        params: list[Any] = [cutoff, cutoff, *_TERMINAL_VALUES]
        if trainer_name is not None:
            where = "trainer_name = ? AND " + where
            params.insert(0, trainer_name)
        sql = f"SELECT {_COLUMNS} FROM trainings WHERE {where} LIMIT {_PURGE_BATCH}"
        purged: list[TrainingInfo] = []
        self.flush()
        while True:
            with self._write("purging finished trainings") as conn:
                rows = conn.execute(sql, params).fetchall()
                infos = [self._row_to_info(row) for row in rows]
                _delete_rows(conn, [info.id for info in infos])
            with self._w.lock:
                for info in infos:
                    if not self._w.pending.get(info.id):
                        self._w.live.pop(info.id, None)
            purged.extend(infos)
            if len(rows) < _PURGE_BATCH:
                return purged

    def close(self) -> None:
        """Save pending changes and close the connection (a later call on this
        store opens a new one)."""
        if self._w.writer_pid == os.getpid():
            try:
                self.flush(timeout=_CLOSE_FLUSH_TIMEOUT)
            except StoreError as exc:
                log.error("closing %s with unsaved record changes: %s", self.path, exc)
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    # -- connections ----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened (and checked) when needed. Lock held."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # forked: SQLite connections must not cross fork()
            self._inherited.append(self._conn)
            self._conn = None
        self._conn = self._open()
        self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self._make_directory()
        if os.path.isdir(self.path):
            raise StoreError(
                f"the training record database {self.path} is a directory; move it away or "
                "point state_dir (or TRAINERKIT_STATE_DIR) at another directory"
            )
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "opening the record store") from exc
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, "opening the record store") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _make_directory(self) -> None:
        """The state directory, private to this user, and the database file in
        it, created 0600 (SQLite gives its -wal and -shm files the same mode)."""
        make_private_dir(
            os.path.dirname(self.path), what="the state directory", setting="state_dir (or TRAINERKIT_STATE_DIR)"
        )
        try:
            os.close(open_private(self.path, os.O_RDWR, exclusive=True))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(
                f"cannot create the training record database {self.path}: {exc.strerror or exc}; "
                "make the state directory writable by this user, or set state_dir (or "
                "TRAINERKIT_STATE_DIR) to a writable directory"
            ) from exc
        info = os.lstat(self.path)
        if stat.S_ISLNK(info.st_mode):
            raise StoreError(
                f"the training record database {self.path} is a symbolic link; trainerkit does not "
                "follow one in its state directory: replace it with the file it points to, or set "
                "state_dir (or TRAINERKIT_STATE_DIR) to another directory"
            )
        if info.st_uid != os.geteuid():
            raise StoreError(
                f"the training record database {self.path} belongs to another user (uid "
                f"{info.st_uid}; this process runs as uid {os.geteuid()}); use a state directory "
                "of your own (state_dir or TRAINERKIT_STATE_DIR)"
            )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is ours and current, switch to WAL, migrate, and make
        sure it is writable, all before the first record operation."""
        app_id, version = _identity(conn)
        self._check_identity(conn, app_id, version)
        if version == 0:
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # a no-op unless the file is new
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the training record database {self.path} cannot use SQLite's WAL mode "
                    f"(it stays in {mode!r} mode); keep the state directory on a local file "
                    "system (not a network share), or set state_dir to one"
                )
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Under the write lock: another process may have just migrated it.
            app_id, version = _identity(conn)
            self._check_identity(conn, app_id, version)
            if version < SCHEMA_VERSION:
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target]:
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
                log.info(
                    "training record database %s %s (schema version %d)",
                    self.path,
                    "created" if version == 0 else f"migrated from version {version}",
                    SCHEMA_VERSION,
                )
            else:
                # Rewriting the header page (then rolling back) fails now, not
                # at the first train(), when the file or its directory is read-only.
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("ROLLBACK")
        finally:
            _rollback(conn)

    def _check_identity(self, conn: sqlite3.Connection, app_id: int, version: int) -> None:
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version != 0 or _user_tables(conn))):
            tables = ", ".join(_user_tables(conn)) or "none"
            raise StoreError(
                f"{self.path} is a SQLite database of another program (application id {app_id}, "
                f"tables: {tables}), not a trainerkit record database; trainerkit leaves it "
                "untouched: set state_dir (or TRAINERKIT_STATE_DIR) to a directory of its own"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the training record database {self.path} has schema version {version}, written "
                f"by a newer trainerkit; this one knows versions up to {SCHEMA_VERSION}. Upgrade "
                "trainerkit (pip install -U trainerkit), or set state_dir to another directory"
            )

    # -- transactions -----------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(exc, action) from exc

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed when the block ends,
        rolled back (nothing changed) when it raises."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise self._error(exc, action) from exc
            except BaseException:
                _rollback(conn)
                raise

    # -- errors ----------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, action: str) -> StoreError:
        """A StoreError that names the file, what failed and what to do."""
        code = _primary_code(exc)
        path, directory = self.path, os.path.dirname(self.path)
        name = os.path.basename(path)
        if code == _SQLITE_FULL:
            return StoreError(
                f"{action} failed: the disk holding the training record database {path} is full "
                f"(SQLite: {exc}); nothing was changed. Free space on that file system, or set "
                "state_dir (or TRAINERKIT_STATE_DIR) to a directory on another one, and retry"
            )
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StoreError(
                f"{action} failed: the training record database {path} is corrupt or not a "
                f"SQLite database (SQLite: {exc}). trainerkit does not repair or overwrite it: "
                f"move it aside (mv {path} {path}.corrupt, with any {name}-wal and {name}-shm "
                "beside it) to start an empty record store, or restore it from a backup"
            )
        if code in (_SQLITE_READONLY, _SQLITE_PERM):
            return StoreError(
                f"{action} failed: the training record database {path} is read-only "
                f"(SQLite: {exc}); make it and its directory {directory} writable by this user, "
                "or set state_dir (or TRAINERKIT_STATE_DIR) to a writable directory"
            )
        if code == _SQLITE_CANTOPEN:
            return StoreError(
                f"{action} failed: cannot open the training record database {path} (SQLite: "
                f"{exc}); the directory {directory} must be readable and writable by this user "
                f"(SQLite creates {name}-wal and {name}-shm beside the database), or set "
                "state_dir (or TRAINERKIT_STATE_DIR) to a directory that is"
            )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreError(
                f"{action} failed: the training record database {path} stayed locked by another "
                f"connection for more than {self.busy_timeout:g} s (SQLite: {exc}); a process "
                f"may be stuck in a write transaction (find it with: fuser {path}); retry"
            )
        if code == _SQLITE_IOERR:
            return StoreError(
                f"{action} failed: I/O error on the training record database {path} (SQLite: "
                f"{exc}); check the disk and the file system of {directory}"
            )
        return StoreError(f"{action} failed on the training record database {path}: {exc}")

    def _row_to_info(self, row: Sequence[Any]) -> TrainingInfo:
        training_id, trainer_name, status, submitted_us, completed_us, body = row
        try:
            data = json.loads(body)
            data.update(
                id=training_id,
                trainer_name=trainer_name,
                status=status,
                submission_time=_from_us(submitted_us),
                completion_time=_from_us(completed_us),
            )
            return TrainingInfo.from_dict(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreError(
                f"the record of training {training_id} in {self.path} is damaged ({exc}); "
                "move the database aside to start afresh, or restore it from a backup"
            ) from exc


def list_statement(query: TrainingQuery) -> tuple[str, list[Any]]:
    """The SQL (and its parameters) that answers ``query``, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if query.trainer_name is not None:
        where.append("trainer_name = ?")
        params.append(query.trainer_name)
    if query.since is not None:
        where.append("submitted_us >= ?")
        params.append(_to_us(query.since))
    if query.status is not None:
        values = sorted(status.value for status in query.status)
        where.append(f"status IN ({', '.join('?' * len(values))})")
        params.extend(values)
    for tag in query.tags:
        where.append("seq IN (SELECT training_seq FROM training_tags WHERE tag = ?)")
        params.append(tag)
    sql = f"SELECT {_COLUMNS} FROM trainings"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY submitted_us DESC, seq DESC"
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(query.limit)
    return sql, params


def _exists_message(training_id: str, status: TrainingStatus, replace_finished: bool) -> str:
    if not status.is_terminal:
        return (
            f"a training with id {training_id!r} already exists and is {status.value}; "
            "choose another external_training_id"
        )
    return f"a training with id {training_id!r} already exists"


def _take_submissions(queue: list[tuple[Any, ...]], pending: dict[str, int]) -> list[tuple[Any, ...]]:
    """Remove from ``queue`` and return its submissions (``add`` entries, which
    a submitter waits for) that can be written ahead of the rest: those of a
    training with no other queued change. Queue lock held."""
    taken = [entry for entry in queue if entry[2] is not None and pending[entry[1][1].id] == 1]
    if len(taken) == len(queue):
        queue.clear()
    elif taken:
        queue[:] = [entry for entry in queue if entry[2] is None or pending[entry[1][1].id] != 1]
    return taken


def _coalesce(entries: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The operations of ``entries``, one per training: its latest state, an
    insert when the batch holds its ``add`` (written in one transaction, the
    states in between need not reach the file, and a training that starts and
    ends within one batch costs one row write instead of three)."""
    merged: dict[str, tuple[Any, ...]] = {}
    for entry in entries:
        operation = entry[1]
        training_id = operation[1].id
        earlier = merged.get(training_id)
        if earlier is None or operation[0] == "add":
            merged[training_id] = operation
        else:  # an update: the newest info, written as the earlier operation would
            merged[training_id] = (earlier[0], operation[1], *earlier[2:])
    return list(merged.values())


def _one_statement(operation: tuple[Any, ...]) -> bool:
    """Whether ``operation`` is written by a single SQL statement."""
    return operation[0] != "add" or (not operation[3] and not operation[1].tags)


def _apply_operation(conn: sqlite3.Connection, operation: tuple[Any, ...]) -> None:
    kind, info = operation[0], operation[1]
    if kind == "add":
        owner, replace_finished = operation[2], operation[3]
        if replace_finished:
            existing = conn.execute(
                f"SELECT id FROM trainings WHERE id = ? AND status IN ({', '.join('?' * len(_TERMINAL_VALUES))})",
                (info.id, *_TERMINAL_VALUES),
            ).fetchone()
            if existing is not None:
                _delete_rows(conn, (info.id,))
        seq = conn.execute(
            _INSERT,
            (
                info.id,
                info.trainer_name,
                info.status.value,
                _to_us(info.submission_time),
                _to_us(info.completion_time),
                owner,
                _body(info, operation[4]),
            ),
        ).lastrowid
        if info.tags:
            conn.executemany(
                "INSERT INTO training_tags (tag, training_seq) VALUES (?, ?)",
                [(tag, seq) for tag in info.tags],
            )
        return
    # An update; a final status already on disk (set by another process) wins.
    conn.execute(_UPDATE_LIVE, (info.status.value, _to_us(info.completion_time), _body(info, operation[2]), info.id))


# The statements of the write path, made once (and prepared once per connection:
# sqlite3 caches a statement by its text).
_INSERT = (
    "INSERT INTO trainings (id, trainer_name, status, submitted_us, completed_us, owner, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_LIVE = (
    "UPDATE trainings SET status = ?, completed_us = ?, body = ? WHERE id = ? AND status NOT IN ("
    + ", ".join(f"'{value}'" for value in _TERMINAL_VALUES)
    + ")"
)


def _delete_rows(conn: sqlite3.Connection, training_ids: Sequence[str]) -> int:
    keys = [(training_id,) for training_id in training_ids]
    conn.executemany(
        "DELETE FROM training_tags WHERE training_seq = (SELECT seq FROM trainings WHERE id = ?)", keys
    )
    return conn.executemany("DELETE FROM trainings WHERE id = ?", keys).rowcount


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # the original error is what the caller needs to see
            log.debug("rollback failed", exc_info=True)


def _identity(conn: sqlite3.Connection) -> tuple[int, int]:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(app_id), int(version)


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [row[0] for row in rows]


def _primary_code(exc: sqlite3.Error) -> Optional[int]:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()
    for fragment, mapped in _CODES_BY_MESSAGE:
        if fragment in text:
            return mapped
    return None


def _make_encode() -> Callable[[Any], str]:
    """One compact JSON encoder for every body, made once.

    ``json.dumps`` builds a new ``JSONEncoder`` per call, and even a kept
    encoder's ``encode`` makes a new C encoder per call (in ``iterencode``):
    three bodies per training make that the store's largest Python cost. The
    C encoder ``json`` itself uses is made once here, with the settings
    ``JSONEncoder(separators=(",", ":"))`` gives it; without the C
    accelerator (another Python implementation) the kept encoder is used.
    """
    encoder = json.JSONEncoder(separators=(",", ":"))
    make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_c_encoder is None:
        return encoder.encode
    c_encoder = make_c_encoder(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )  # no markers: a body is never circular, and one shared dict would not be thread-safe
    join = "".join
    return lambda value: join(c_encoder(value, 0))


_encode = _make_encode()


def _fixed_body(info: TrainingInfo) -> str:
    """The JSON of the body fields that no update changes, as the start of an
    object (``{"module":...,"ranks":1``): made once at ``add``, it saves
    re-serialising the parameters and capabilities at every status change."""
    return _encode(
        {
            "module": info.module,
            "model_name": info.model_name,
            "tags": list(info.tags),
            "capabilities": levels_to_json(info.capabilities),
            "parameters": dict(info.parameters),
            "parameters_by_repr": list(info.parameters_by_repr),
            "ranks": info.ranks,
        }
    )[:-1]


def _body(info: TrainingInfo, fixed: Optional[str] = None) -> str:
    """The ``body`` column: every field of ``info`` that has no column of its
    own (as ``TrainingInfo.to_dict``), ``fixed`` being ``_fixed_body(info)``."""
    changing = _encode(
        {
            "save_path": info.save_path,
            "start_time": info.start_time.isoformat() if info.start_time is not None else None,
            "errors": [error.to_dict() for error in info.errors],
            "progress": info.progress.to_dict() if info.progress is not None else None,
            "detail": info.detail,
            "devices": list(info.devices),
            "attempt": info.attempt,
        }
    )
    return (fixed if fixed is not None else _fixed_body(info)) + "," + changing[1:]


def _to_us(value: Optional[datetime.datetime]) -> Optional[int]:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone()  # naive: local time, as list_trainings(since=) takes it
    return (value - _EPOCH) // _MICROSECOND


def _from_us(value: Optional[int]) -> Optional[datetime.datetime]:
    return None if value is None else _EPOCH + datetime.timedelta(microseconds=value)


# A lock held by another thread at fork() time would stay held forever in the
# child: give every store a fresh one there (its connection is replaced too).
_open_stores: "weakref.WeakSet[SQLiteTrainingStore]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared.clear()
    for store in list(_open_stores):
        store._lock = threading.Lock()
        store._reset_writer()  # the parent's writer thread and queue stay the parent's


def _flush_at_exit() -> None:
    for store in list(_open_stores):
        if store._w.writer_pid == os.getpid():
            try:
                store.flush(timeout=_CLOSE_FLUSH_TIMEOUT)
            except StoreError as exc:
                log.error("exiting with unsaved training record changes: %s", exc)


_process_hooks_registered = False


def _register_process_hooks() -> None:
    """At the first store of the process (not at import): reset locks and
    write-behind state in forked children, and flush pending changes at exit.
    A race of two first stores registers both hooks twice, which is harmless:
    each is idempotent."""
    global _process_hooks_registered
    if _process_hooks_registered:
        return
    _process_hooks_registered = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_flush_at_exit)
