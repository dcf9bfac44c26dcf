"""A record store that cannot be used fails with one clear StoreError that
names the file and what to do: never a silent fallback, never a lost record."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3

import pytest

import trainerkit
from trainerkit import TrainingStatus
from trainerkit.errors import StoreError
from trainerkit.info import ErrorDetail, TrainingInfo, utcnow
from trainerkit.store.sqlite import SQLiteTrainingStore
from trainerkit.store.state_dir import DATABASE_FILE
from trainerkit.store import TrainingQuery
from trainerkit.trainers.local import LocalModelTrainer
from tests.records_fixtures import REPO_ROOT, WAIT, local_config
from tests.training_modules import Adder


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "state" / DATABASE_FILE)


def digest(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def new_info(unique: str) -> TrainingInfo:
    return TrainingInfo(
        id=f"default--{unique}",
        trainer_name="default",
        status=TrainingStatus.QUEUED,
        module="tests.training_modules:Adder",
        submission_time=utcnow(),
    )


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(db_path, manager_factory):
    os.makedirs(os.path.dirname(db_path))
    with open(db_path, "wb") as handle:
        handle.write(b"these are not the records you are looking for\n" * 100)
    before = digest(db_path)
    manager = manager_factory(local_config(os.path.dirname(db_path)))
    with pytest.raises(StoreError) as caught:
        manager.get_trainer("default")
    message = str(caught.value)
    assert db_path in message and "not a SQLite database" in message
    assert f"mv {db_path} {db_path}.corrupt" in message
    assert digest(db_path) == before


def test_a_database_with_damaged_pages_fails_with_a_store_error_naming_it(db_path):
    store = SQLiteTrainingStore(db_path)
    for n in range(20):
        store.add(new_info(f"r{n}"))
    store.close()  # the last connection folds the WAL into the database file
    with open(db_path, "r+b") as handle:
        page_size = 1024
        size = handle.seek(0, os.SEEK_END)
        handle.seek(page_size)  # keep the header page, wreck every table and index page
        handle.write(b"\xa5" * (size - page_size))
    with pytest.raises(StoreError, match=re.escape(db_path) + r".*corrupt.*move it aside"):
        SQLiteTrainingStore(db_path).list(TrainingQuery())


def test_a_schema_newer_than_this_trainerkit_is_refused_with_advice_to_upgrade(db_path):
    SQLiteTrainingStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 99.*knows versions up to 1\. Upgrade trainerkit"):
        SQLiteTrainingStore(db_path)


def test_a_database_of_another_program_is_refused_and_left_untouched(db_path):
    os.makedirs(os.path.dirname(db_path))
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    before = digest(db_path)
    with pytest.raises(StoreError, match=r"another program .*customers.*state_dir"):
        SQLiteTrainingStore(db_path)
    assert digest(db_path) == before


def test_a_state_dir_below_a_regular_file_is_refused(tmp_path):
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(StoreError, match=r"is a file, not a directory.*TRAINERKIT_STATE_DIR"):
        SQLiteTrainingStore(tmp_path / "plain-file" / "state" / DATABASE_FILE)


@pytest.mark.parametrize(
    "failure, advice",
    [
        (errno.EACCES, r"Permission denied; create it with write access for this user"),
        (errno.ENOSPC, r"the disk is full; free space there"),
    ],
    ids=["read-only", "disk-full"],
)
def test_a_state_dir_that_cannot_be_created_is_refused(tmp_path, monkeypatch, failure, advice):
    parent = tmp_path / "parent"
    parent.mkdir()
    if failure == errno.EACCES and os.geteuid() != 0:
        parent.chmod(0o500)  # the real thing; root ignores permission bits, so it gets the kernel's answer injected
    else:

        def refuse(path, *args, **kwargs):
            raise OSError(failure, os.strerror(failure), path)

        monkeypatch.setattr(os, "makedirs", refuse)
    try:
        with pytest.raises(StoreError, match=re.escape(str(parent / "state")) + r".*" + advice):
            SQLiteTrainingStore(parent / "state" / DATABASE_FILE)
    finally:
        parent.chmod(0o700)


_real_connect = sqlite3.connect


def _store_opened_with(connect, path):
    """A SQLiteTrainingStore whose connection ``connect`` opened in place of
    ``sqlite3.connect``: how these tests give a store storage that fails."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite3, "connect", connect)
        return SQLiteTrainingStore(path)  # connects now, and keeps that connection


def read_only_store(path):
    """Opens the file the way SQLite does when it may not write it."""

    def connect(database, **options):
        return _real_connect(f"file:{database}?mode=ro", uri=True, **options)

    return _store_opened_with(connect, path)


def test_a_read_only_database_is_refused_when_opened_not_at_the_first_training(db_path):
    SQLiteTrainingStore(db_path).close()
    with pytest.raises(StoreError, match=re.escape(db_path) + r" is read-only .*make it and its directory"):
        read_only_store(db_path)


def test_a_trainer_over_a_read_only_database_fails_to_build(db_path, manager_factory, monkeypatch):
    SQLiteTrainingStore(db_path).close()
    monkeypatch.setattr(LocalModelTrainer, "create_store", lambda self: read_only_store(db_path))
    manager = manager_factory(local_config(os.path.dirname(db_path)))
    with pytest.raises(StoreError, match="read-only"):
        manager.get_trainer("default")


def full_disk_store(path):
    """The database may not grow past its current size: SQLite's own
    "database or disk is full" (SQLITE_FULL) for any write that needs a page."""

    def connect(database, **options):
        conn = _real_connect(database, **options)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
        return conn

    return _store_opened_with(connect, path)


class _FailingWrites:
    """A connection whose writes fail like a full disk, with no SQLite error
    code attached (as an exception raised by other code would be)."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if sql.startswith(("INSERT", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def injected_full_store(path):
    return _store_opened_with(lambda database, **options: _FailingWrites(_real_connect(database, **options)), path)


@pytest.fixture(params=[full_disk_store, injected_full_store], ids=["sqlite-full", "injected-error"])
def open_full_store(request, db_path):
    """Opens a store on a disk that is full (once the schema exists)."""
    SQLiteTrainingStore(db_path).close()
    return request.param


def test_a_full_disk_fails_a_submission_cleanly_and_records_nothing(
    open_full_store, db_path, monkeypatch, manager_factory, tmp_path
):
    monkeypatch.setattr(LocalModelTrainer, "create_store", lambda self: open_full_store(db_path))
    trainer = manager_factory(local_config(os.path.dirname(db_path))).get_trainer("default")
    big_tag = "t" * 5000  # more than the free space of any page
    with pytest.raises(StoreError, match=re.escape(db_path) + r" is full .*nothing was changed. Free space"):
        trainer.train(Adder, 1, tags=[big_tag], save_path=str(tmp_path / "models"), save_with_id=True)
    assert SQLiteTrainingStore(db_path).list(TrainingQuery()) == []
    assert len(trainer._pinned) == 0 and len(trainer._futures) == 0
    assert not (tmp_path / "models").exists()


def _status_on_disk(db_path, training_id):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT status FROM trainings WHERE id = ?", (training_id,)).fetchone()[0]
    finally:
        conn.close()


def _free_space(store):
    """Make the store's connection write again, as if space had been freed."""
    conn = store._conn
    if isinstance(conn, _FailingWrites):
        store._conn = conn._conn
    else:
        conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_keeps_an_update_in_memory_reports_it_and_saves_it_once_space_is_freed(
    open_full_store, db_path
):
    info = new_info("keep-me")
    SQLiteTrainingStore(db_path).add(info)
    store = open_full_store(db_path)
    huge = ErrorDetail("builtins.MemoryError", "out of memory", "Traceback line\n" * 2000)
    updated = store.update(info.id, status=TrainingStatus.ERRORED, completion_time=utcnow(), errors=(huge,))
    assert store.get(info.id) == updated  # this process sees its own change at once
    with pytest.raises(StoreError, match=re.escape(db_path) + r" is full .*kept in memory and retried"):
        store.flush(timeout=WAIT)
    assert _status_on_disk(db_path, info.id) == "QUEUED"  # the previous record, whole
    _free_space(store)
    store.flush(timeout=WAIT)  # nothing was lost
    assert _status_on_disk(db_path, info.id) == "ERRORED"
    store.close()


class ReportsAHugeMetric(trainerkit.ModuleBase):
    @classmethod
    def train(cls):
        trainerkit.report_progress(step=1, total=1, note="x" * 5000)  # more than the disk has left
        return cls()


def test_a_full_disk_during_a_training_does_not_stop_it_and_loses_no_record(db_path, monkeypatch, manager_factory):
    SQLiteTrainingStore(db_path).close()
    monkeypatch.setattr(LocalModelTrainer, "create_store", lambda self: full_disk_store(db_path))
    trainer = manager_factory(local_config(os.path.dirname(db_path))).get_trainer("default")
    future = trainer.train(ReportsAHugeMetric)  # a small record still fits
    future.result(timeout=WAIT)
    assert future.get_info().status is TrainingStatus.COMPLETED
    with pytest.raises(StoreError, match=re.escape(db_path) + " is full"):
        trainer._store.flush(timeout=WAIT)
    assert _status_on_disk(db_path, future.id) in ("QUEUED", "RUNNING")  # the last change that fitted
    _free_space(trainer._store)
    trainer._store.flush(timeout=WAIT)
    assert _status_on_disk(db_path, future.id) == "COMPLETED"


def test_a_database_locked_by_another_connection_times_out_with_a_store_error(db_path):
    store = SQLiteTrainingStore(db_path, busy_timeout=0.05)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"stayed locked by another connection for more than 0\.05 s"):
            store.add(new_info("waits"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.add(new_info("waits"))
    assert store.get("default--waits") is not None
    store.close()


# docs/records.md quotes messages for this path.
DOC_DB_PATH = "/home/me/.local/state/trainerkit/trainings.sqlite3"


def _doc_path_message(error: StoreError, actual_path: str) -> str:
    return str(error).replace(actual_path, DOC_DB_PATH)


def _records_doc() -> str:
    with open(os.path.join(REPO_ROOT, "docs", "records.md"), encoding="utf-8") as handle:
        return handle.read()


def test_the_newer_schema_message_quoted_in_the_records_doc_is_real(db_path):
    SQLiteTrainingStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(StoreError) as caught:
        SQLiteTrainingStore(db_path)
    assert _doc_path_message(caught.value, db_path) in _records_doc()


def test_the_not_a_database_message_quoted_in_the_records_doc_is_real(db_path):
    os.makedirs(os.path.dirname(db_path))
    with open(db_path, "wb") as handle:
        handle.write(b"not a database, just text\n" * 100)
    with pytest.raises(StoreError) as caught:
        SQLiteTrainingStore(db_path)
    assert _doc_path_message(caught.value, db_path) in _records_doc()
