"""Many writers and readers on one record database lose nothing: every
submitted training ends with exactly one record in the right final state."""

from __future__ import annotations

import collections
import sqlite3
import threading

from trainerkit import TrainingStatus
from trainerkit.errors import TrainingNotFoundError
from trainerkit.store.state_dir import DATABASE_FILE
from tests.records_fixtures import WAIT, Child, local_config
from tests.training_modules import Adder, Failing


def records_by_id(state_dir: str) -> dict[str, list[tuple[str, str]]]:
    """Every row of the database, read with plain sqlite3: id -> [(trainer, status)]."""
    conn = sqlite3.connect(f"{state_dir}/{DATABASE_FILE}")
    try:
        rows = conn.execute("SELECT id, trainer_name, status FROM trainings").fetchall()
    finally:
        conn.close()
    found: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for training_id, trainer_name, status in rows:
        found[training_id].append((trainer_name, status))
    return found


class Readers:
    """Threads that keep listing and looking up trainings until stopped,
    collecting any unexpected exception."""

    def __init__(self, trainers: list, known_ids: list[str], lock: threading.Lock, count: int = 2) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.rounds = 0
        self._trainers, self._known, self._lock = trainers, known_ids, lock
        self._threads = [threading.Thread(target=self._run) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for trainer in self._trainers:
                    listed = trainer.list_trainings(limit=20)
                    assert all(info.trainer_name == trainer.instance_name for info in listed)
                    trainer.list_trainings(status="running", tags="batch")
                with self._lock:
                    sample = self._known[-5:]
                for training_id in sample:
                    try:
                        self._trainers[0].get_model_future(training_id).get_info()
                    except TrainingNotFoundError:
                        pass  # an id of the other trainer
                self.rounds += 1
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=WAIT)
        assert not self.errors, self.errors
        assert self.rounds > 0


def test_parallel_submitters_and_readers_in_one_process_lose_nothing(tmp_path, manager_factory):
    state_dir = str(tmp_path / "state")
    trainer = manager_factory(local_config(state_dir, max_workers=4)).get_trainer("default")
    # A second manager on the same file reads what the first one writes.
    reader = manager_factory(local_config(state_dir)).get_trainer("default")
    submitted: list[tuple[str, str]] = []
    known: list[str] = []
    lock = threading.Lock()
    readers = Readers([reader], known, lock)

    def submit(index: int) -> None:
        for n in range(index * 25, (index + 1) * 25):
            if n % 5 == 0:
                future, expected = trainer.train(Failing, f"failure {n}", tags=["batch"]), "ERRORED"
            else:
                future, expected = trainer.train(Adder, n, tags=["batch"]), "COMPLETED"
            with lock:
                submitted.append((future.id, expected))
                known.append(future.id)

    submitters = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(timeout=WAIT)
    for training_id, _ in submitted:
        assert trainer.get_model_future(training_id).wait(WAIT)
    readers.join()

    records = records_by_id(state_dir)
    assert len(submitted) == 100 and len(records) == 100
    for training_id, expected in submitted:
        assert records[training_id] == [("default", expected)]
    assert len(reader.list_trainings(tags="batch")) == 100


def test_parallel_processes_sharing_one_new_database_lose_nothing(tmp_path, manager_factory):
    state_dir, workdir = str(tmp_path / "state"), str(tmp_path)
    # Three processes start at once on a state dir that does not exist yet, so
    # they also race to create the schema; two of them share a trainer name.
    plan = [("alpha", "p0"), ("beta", "p1"), ("alpha", "p2")]
    children = [Child("submit", state_dir, workdir, name, "3", "10", tag) for name, tag in plan]
    try:
        alpha = manager_factory(local_config(state_dir, name="alpha")).get_trainer("alpha")
        beta = manager_factory(local_config(state_dir, name="beta")).get_trainer("beta")
        readers = Readers([alpha, beta], [], threading.Lock())
        reports = [child.message()["trainings"] for child in children]
        for child in children:
            child.finish()
        readers.join()
    finally:
        for child in children:
            child.close()

    records = records_by_id(state_dir)
    assert len(records) == 90
    for (name, _), report in zip(plan, reports):
        assert len(report) == 30
        for training_id, expected in report:
            assert records[training_id] == [(name, expected)]
    assert len(alpha.list_trainings()) == 60 and len(beta.list_trainings()) == 30
    assert len(alpha.list_trainings(tags="p2")) == 30
    assert len(alpha.list_trainings(status=TrainingStatus.ERRORED, tags="p0")) == 6
