"""The record store: the TrainingStore contract (checked against both the
SQLite and the in-memory store) and what only the SQLite store does."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from trainerkit.store import sqlite as sqlite_store
from trainerkit.errors import StoreError, TrainingExistsError, TrainingNotFoundError
from trainerkit.info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus
from trainerkit.store.sqlite import SQLiteTrainingStore, list_statement
from trainerkit.store import MemoryTrainingStore, TrainingQuery

T0 = datetime.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
LIVE = (TrainingStatus.QUEUED, TrainingStatus.RUNNING)


def minutes(n: float) -> datetime.timedelta:
    return datetime.timedelta(minutes=n)


def make_info(unique: str, *, trainer: str = "default", submitted: datetime.datetime = T0, **fields) -> TrainingInfo:
    return TrainingInfo(
        id=f"{trainer}--{unique}",
        trainer_name=trainer,
        status=fields.pop("status", TrainingStatus.QUEUED),
        module="tests.training_modules:Adder",
        submission_time=submitted,
        **fields,
    )


def finished(unique: str, *, completed: datetime.datetime, status=TrainingStatus.COMPLETED, **fields) -> TrainingInfo:
    return make_info(unique, status=status, completion_time=completed, submitted=completed - minutes(1), **fields)


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    made = SQLiteTrainingStore(tmp_path / "trainings.sqlite3") if request.param == "sqlite" else MemoryTrainingStore()
    yield made
    made.close()


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "state" / "trainings.sqlite3")


def ids(infos):
    return [info.id for info in infos]


# -- the TrainingStore contract ------------------------------------------------------


def test_a_record_reads_back_with_every_field(store):
    info = make_info(
        "full",
        status=TrainingStatus.ERRORED,
        save_path="/models/x",
        model_name="clf",
        tags=("nightly", "eu"),
        start_time=T0 + minutes(1),
        completion_time=T0 + minutes(2),
        errors=(ErrorDetail("tests.training_modules.Boom", "bad data", "Traceback...\nBoom: bad data\n"),),
        progress=ProgressReport(step=3, total=10, metrics={"loss": 0.25, "note": "ok", "done": False}, time=T0),
        detail="waiting for a worker",
    )
    store.add(info, owner="host|1|2")
    assert store.get(info.id) == info
    assert store.get_owner(info.id) == "host|1|2"


def test_an_unknown_id_has_no_record(store):
    assert store.get("default--nothing") is None
    assert store.get_owner("default--nothing") is None


def test_adding_an_id_that_is_live_is_refused(store):
    store.add(make_info("dup"))
    with pytest.raises(TrainingExistsError, match="QUEUED"):
        store.add(make_info("dup"), replace_finished=True)


def test_adding_an_id_that_finished_is_refused_unless_replacing(store):
    store.add(finished("dup", completed=T0))
    with pytest.raises(TrainingExistsError, match="already exists"):
        store.add(make_info("dup"))


def test_replacing_a_finished_record_replaces_it_with_its_tags(store):
    store.add(finished("again", completed=T0, tags=("old",)))
    fresh = make_info("again", submitted=T0 + minutes(5), tags=("new",))
    store.add(fresh, owner="me|1|1", replace_finished=True)
    assert store.get(fresh.id) == fresh
    assert store.list(TrainingQuery(tags=("old",))) == []
    assert ids(store.list(TrainingQuery(tags=("new",)))) == [fresh.id]


def test_update_changes_the_fields_and_returns_the_new_record(store):
    store.add(make_info("u"))
    progress = ProgressReport(step=1, total=2, metrics={"acc": 0.5}, time=T0)
    running = store.update("default--u", status=TrainingStatus.RUNNING, start_time=T0, progress=progress)
    assert running.status is TrainingStatus.RUNNING and running.progress == progress
    assert store.get("default--u") == running


def test_a_finished_record_never_changes_again(store):
    store.add(make_info("first-wins"))
    done = store.update("default--first-wins", status=TrainingStatus.COMPLETED, completion_time=T0)
    after = store.update(
        "default--first-wins", status=TrainingStatus.ERRORED, errors=(ErrorDetail("X", "late"),)
    )
    assert after == done and store.get(done.id) == done


def test_update_refuses_fields_that_are_not_updatable(store):
    store.add(make_info("f"))
    with pytest.raises(ValueError, match="trainer_name"):
        store.update("default--f", trainer_name="other")


def test_update_of_an_unknown_training_raises_not_found(store):
    with pytest.raises(TrainingNotFoundError, match="default--ghost"):
        store.update("default--ghost", status=TrainingStatus.RUNNING)


def test_list_is_newest_first_and_only_of_the_asked_trainer(store):
    for n in range(3):
        store.add(make_info(f"a{n}", submitted=T0 + minutes(n)))
    store.add(make_info("b0", trainer="other", submitted=T0 + minutes(10)))
    assert ids(store.list(TrainingQuery(trainer_name="default"))) == ["default--a2", "default--a1", "default--a0"]
    assert ids(store.list(TrainingQuery(trainer_name="other"))) == ["other--b0"]
    assert len(store.list(TrainingQuery())) == 4


def test_count_by_trainer_counts_every_trainers_records(store):
    assert store.count_by_trainer() == {}
    for n in range(3):
        store.add(make_info(f"a{n}", submitted=T0 + minutes(n)))
    store.add(make_info("b0", trainer="other", submitted=T0))
    store.delete("default--a0")
    assert store.count_by_trainer() == {"default": 2, "other": 1}


def test_list_filters_by_status(store):
    store.add(make_info("q", submitted=T0))
    store.add(make_info("r", status=TrainingStatus.RUNNING, submitted=T0 + minutes(1)))
    store.add(finished("c", completed=T0 + minutes(3)))
    query = TrainingQuery(trainer_name="default", status=frozenset(LIVE))
    assert ids(store.list(query)) == ["default--r", "default--q"]
    only_done = TrainingQuery(status=frozenset({TrainingStatus.COMPLETED}))
    assert ids(store.list(only_done)) == ["default--c"]


def test_list_filters_by_submission_time(store):
    for n in range(4):
        store.add(make_info(f"t{n}", submitted=T0 + minutes(n)))
    query = TrainingQuery(trainer_name="default", since=T0 + minutes(2))
    assert ids(store.list(query)) == ["default--t3", "default--t2"]


def test_list_by_tags_needs_every_tag(store):
    store.add(make_info("both", tags=("nightly", "eu"), submitted=T0))
    store.add(make_info("one", tags=("nightly",), submitted=T0 + minutes(1)))
    store.add(make_info("none", submitted=T0 + minutes(2)))
    assert ids(store.list(TrainingQuery(tags=("nightly",)))) == ["default--one", "default--both"]
    assert ids(store.list(TrainingQuery(tags=("eu", "nightly")))) == ["default--both"]
    assert store.list(TrainingQuery(tags=("eu", "missing"))) == []


def test_list_limit_keeps_the_newest(store):
    for n in range(5):
        store.add(make_info(f"l{n}", submitted=T0 + minutes(n)))
    assert ids(store.list(TrainingQuery(trainer_name="default", limit=2))) == ["default--l4", "default--l3"]


def test_delete_removes_the_record_and_says_whether_there_was_one(store):
    store.add(finished("gone", completed=T0, tags=("x",)))
    assert store.delete("default--gone") is True
    assert store.get("default--gone") is None
    assert store.list(TrainingQuery(tags=("x",))) == []
    assert store.delete("default--gone") is False


def test_purge_removes_only_finished_records_of_that_trainer_completed_before_the_cutoff(store):
    cutoff = T0 + minutes(10)
    old_done = finished("old-done", completed=cutoff - minutes(1))
    old_failed = finished("old-failed", completed=cutoff - minutes(2), status=TrainingStatus.ERRORED)
    recent = finished("recent", completed=cutoff + minutes(1))
    live = make_info("live", status=TrainingStatus.RUNNING, submitted=T0)
    other = dataclasses.replace(finished("x", completed=cutoff - minutes(1)), id="other--x", trainer_name="other")
    for info in (old_done, old_failed, recent, live, other):
        store.add(info)
    purged = store.purge_finished(cutoff, trainer_name="default")
    assert sorted(ids(purged)) == sorted([old_done.id, old_failed.id])
    assert old_done in purged
    assert sorted(ids(store.list(TrainingQuery()))) == sorted([recent.id, live.id, other.id])


# -- SQLite only ------------------------------------------------------------------------


def test_two_stores_on_one_file_see_each_others_records(db_path):
    first, second = SQLiteTrainingStore(db_path), SQLiteTrainingStore(db_path)
    first.add(make_info("shared"))
    second.update("default--shared", status=TrainingStatus.RUNNING, start_time=T0)
    assert first.get("default--shared").status is TrainingStatus.RUNNING
    first.close()
    second.close()


def test_records_survive_closing_and_reopening(db_path):
    info = make_info("durable", tags=("keep",))
    store = SQLiteTrainingStore(db_path)
    store.add(info, owner="h|9|9")
    store.close()
    reopened = SQLiteTrainingStore(db_path)
    assert reopened.get(info.id) == info and reopened.get_owner(info.id) == "h|9|9"
    reopened.close()


def test_every_field_of_an_updated_record_reads_back_from_the_file(db_path):
    from trainerkit.capabilities import SupportLevel

    info = make_info(
        "every-field",
        save_path="/models/x",
        model_name="clf",
        tags=("nightly",),
        capabilities={"logs": SupportLevel.NATIVE, "progress": None},
        parameters={"epochs": 3, "name": "ü"},
        parameters_by_repr=("name",),
        ranks=2,
    )
    store = SQLiteTrainingStore(db_path)
    store.add(info, owner="h|1|1")
    store.update(info.id, status=TrainingStatus.RUNNING, start_time=T0 + minutes(1), devices=("0", "1"), attempt=2)
    final = store.update(
        info.id,
        status=TrainingStatus.ERRORED,
        completion_time=T0 + minutes(2),
        errors=(ErrorDetail("Boom", "bad", "tb"),),
        progress=ProgressReport(step=1, total=2, metrics={"loss": 0.5}, time=T0),
        detail="done",
    )
    store.close()
    reopened = SQLiteTrainingStore(db_path)
    assert reopened.get(info.id) == final
    reopened.close()
    body = sqlite3.connect(db_path).execute("SELECT body FROM trainings").fetchone()[0]
    expected = final.to_dict()
    for column in ("id", "trainer_name", "status", "submission_time", "completion_time"):
        del expected[column]
    assert json.loads(body) == expected


def test_a_replacement_is_written_after_the_queued_last_change_of_the_training_it_replaces(db_path):
    store = SQLiteTrainingStore(db_path)
    old = make_info("again")
    store.add(old)
    # Write-behind: this final change may still be queued when the replacement comes.
    store.update(old.id, status=TrainingStatus.COMPLETED, completion_time=T0 + minutes(1))
    fresh = make_info("again", submitted=T0 + minutes(5), tags=("new",))
    store.add(fresh, replace_finished=True)
    store.close()
    reopened = SQLiteTrainingStore(db_path)
    assert reopened.get(fresh.id) == fresh
    reopened.close()


def test_submissions_are_on_disk_when_add_returns_while_status_changes_wait(db_path):
    store = SQLiteTrainingStore(db_path)
    first, second = make_info("first"), make_info("second")
    store.add(first)
    store.update(first.id, status=TrainingStatus.RUNNING, start_time=T0)
    store.add(second)
    on_disk = {row[0] for row in sqlite3.connect(db_path).execute("SELECT id FROM trainings")}
    assert {first.id, second.id} <= on_disk
    store.flush()
    status = sqlite3.connect(db_path).execute("SELECT status FROM trainings WHERE id = ?", (first.id,)).fetchone()
    assert status == ("RUNNING",)
    store.close()


def test_a_closed_store_reopens_its_connection_when_used_again(db_path):
    store = SQLiteTrainingStore(db_path)
    store.add(make_info("late"))
    store.close()
    assert store.update("default--late", status=TrainingStatus.RUNNING).status is TrainingStatus.RUNNING
    store.close()


def test_a_new_database_is_versioned_marked_and_in_wal_mode(db_path):
    SQLiteTrainingStore(db_path).close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == sqlite_store.APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_an_older_schema_is_migrated_in_place_keeping_its_records(db_path, monkeypatch):
    info = make_info("before-upgrade")
    store = SQLiteTrainingStore(db_path)
    store.add(info)
    store.close()
    step = ("ALTER TABLE trainings ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",)
    monkeypatch.setitem(sqlite_store.MIGRATIONS, 2, step)
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", 2)
    upgraded = SQLiteTrainingStore(db_path)
    assert upgraded.get(info.id) == info
    upgraded.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "priority" in [row[1] for row in conn.execute("PRAGMA table_info(trainings)")]
    conn.close()


def test_list_with_equal_submission_times_is_newest_added_first(db_path):
    store = SQLiteTrainingStore(db_path)
    for n in range(3):
        store.add(make_info(f"same{n}"))
    listed = ids(store.list(TrainingQuery(trainer_name="default")))
    store.close()
    assert listed == ["default--same2", "default--same1", "default--same0"]


@pytest.mark.parametrize(
    "query",
    [
        TrainingQuery(trainer_name="default"),
        TrainingQuery(trainer_name="default", limit=10),
        TrainingQuery(trainer_name="default", status=frozenset(LIVE), limit=10),
        TrainingQuery(trainer_name="default", since=T0, status=frozenset({TrainingStatus.ERRORED})),
        TrainingQuery(trainer_name="default", tags=("nightly", "eu"), limit=3),
    ],
    ids=["all", "limit", "status", "since-status", "tags"],
)
def test_listing_a_trainer_is_served_by_indexes_without_sorting(db_path, query):
    store = SQLiteTrainingStore(db_path)
    sql, params = list_statement(query)
    plan = " | ".join(row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    store.close()
    assert "USING INDEX trainings_by_trainer_time" in plan
    assert "SCAN trainings" not in plan and "TEMP B-TREE" not in plan, plan


def test_purge_deletes_in_batches_until_everything_old_is_gone(db_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_PURGE_BATCH", 3)
    store = SQLiteTrainingStore(db_path)
    for n in range(8):
        store.add(finished(f"p{n}", completed=T0, tags=("t",)))
    store.add(finished("keep", completed=T0 + minutes(5)))
    assert len(store.purge_finished(T0 + minutes(1))) == 8
    assert ids(store.list(TrainingQuery())) == ["default--keep"]
    store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM training_tags").fetchone()[0] == 0
    conn.close()


def test_a_forked_child_writes_through_its_own_connection(db_path):
    store = SQLiteTrainingStore(db_path)
    store.add(make_info("parent"))
    pid = os.fork()
    if pid == 0:  # the child: any failure shows as a non-zero exit status
        try:
            store.add(make_info("child"))
            store.update("default--parent", status=TrainingStatus.RUNNING)
            code = 0
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("default--child") is not None
    assert store.get("default--parent").status is TrainingStatus.RUNNING
    store.close()


def test_a_database_path_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "trainings.sqlite3").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteTrainingStore(tmp_path / "trainings.sqlite3")


def test_changes_still_queued_at_interpreter_exit_are_saved(db_path, tmp_path):
    script = f"""
import time
from tests.store.test_sqlite_store import make_info
from trainerkit.info import TrainingStatus
from trainerkit.store.sqlite import SQLiteTrainingStore

store = SQLiteTrainingStore({db_path!r})
store.add(make_info("late"))
commit = store._commit
store._commit = lambda entries: (time.sleep(0.5), commit(entries))[1]  # a slow disk
store.update("default--late", status=TrainingStatus.RUNNING)
# No close(), no flush(): the interpreter exits while the change is queued.
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert SQLiteTrainingStore(db_path).get("default--late").status is TrainingStatus.RUNNING
