"""A second process for the records tests.

    python -m tests.records_child <scenario> <state_dir> <workdir> [extra...]

It trains with a LOCAL trainer over ``state_dir`` and reports what it did as
JSON lines on stdout. Scenarios:

* ``finish``: a saved model, an unsaved one and a failing training; report
  their ids once all ended, then exit.
* ``crash``: one training that never ends (RUNNING) and one behind it
  (QUEUED); report both ids, then wait to be killed.
* ``gated``: one training that runs until ``<workdir>/gate`` exists; report
  its id once it runs, and again once it ended.
* ``submit <trainer> <threads> <per_thread> <tag>``: submit trainings from
  several threads at once (every fifth one fails); report every id with the
  status it must end in.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import trainerkit
from tests.records_fixtures import WAIT, FileGated, Hangs, local_config, wait_until
from tests.training_modules import Adder, Failing, JsonModel


def emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


def finish(state_dir: str, workdir: str) -> None:
    with trainerkit.TrainerManager.from_dict(local_config(state_dir, max_workers=2)) as manager:
        trainer = manager.get_trainer("default")
        saved = trainer.train(
            JsonModel, 41, save_path=os.path.join(workdir, "models"), save_with_id=True, tags=["saved"]
        )
        unsaved = trainer.train(Adder, 1, b=2, tags=["unsaved"])
        failed = trainer.train(Failing, "no rows in table 3")
        for future in (saved, unsaved, failed):
            assert future.wait(WAIT)
        emit({"saved": saved.id, "unsaved": unsaved.id, "failed": failed.id})


def crash(state_dir: str, workdir: str) -> None:
    manager = trainerkit.TrainerManager.from_dict(local_config(state_dir, max_workers=1))
    trainer = manager.get_trainer("default")
    running = trainer.train(Hangs)
    queued = trainer.train(Adder, 1)
    wait_until(running.running, what="the first training running")
    trainer._store.flush()  # status changes are write-behind: on disk before the test looks
    emit({"running": running.id, "queued": queued.id})
    threading.Event().wait()  # until the test kills this process


def gated(state_dir: str, workdir: str) -> None:
    started, gate = os.path.join(workdir, "started"), os.path.join(workdir, "gate")
    with trainerkit.TrainerManager.from_dict(local_config(state_dir)) as manager:
        trainer = manager.get_trainer("default")
        future = trainer.train(
            FileGated, started, gate, value=7, save_path=os.path.join(workdir, "models"), save_with_id=True
        )
        wait_until(lambda: os.path.exists(started), what="the training started")
        trainer._store.flush()  # status changes are write-behind: on disk before the test looks
        emit({"id": future.id})
        future.result(timeout=WAIT)
        emit({"done": future.id})


def submit(state_dir: str, workdir: str, trainer_name: str, threads: str, per_thread: str, tag: str) -> None:
    config = local_config(state_dir, name=trainer_name, max_workers=3)
    submitted: list[tuple[str, str]] = []
    futures = []
    lock = threading.Lock()
    with trainerkit.TrainerManager.from_dict(config) as manager:
        trainer = manager.get_trainer(trainer_name)

        def submitter(index: int) -> None:
            for n in range(index * int(per_thread), (index + 1) * int(per_thread)):
                if n % 5 == 0:
                    future, expected = trainer.train(Failing, f"failure {n}", tags=[tag]), "ERRORED"
                else:
                    future, expected = trainer.train(Adder, n, tags=[tag]), "COMPLETED"
                with lock:
                    submitted.append((future.id, expected))
                    futures.append(future)

        workers = [threading.Thread(target=submitter, args=(i,)) for i in range(int(threads))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for future in futures:
            assert future.wait(WAIT)
    emit({"trainings": submitted})


SCENARIOS = {"finish": finish, "crash": crash, "gated": gated, "submit": submit}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
