"""Records survive the process: a new manager over the same state dir answers
for trainings that other (real, separate) processes ran, finished, or died in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import trainerkit
from trainerkit import TrainingStatus
from trainerkit.errors import ModelNotSavedError, TrainingInterruptedError
from tests.records_fixtures import WAIT, Child, local_config
from tests.training_modules import Boom, JsonModel


@pytest.fixture(scope="module")
def finished_elsewhere(tmp_path_factory):
    """Ids of trainings a child process ran to the end before exiting."""
    state_dir, workdir = tmp_path_factory.mktemp("state"), tmp_path_factory.mktemp("work")
    child = Child("finish", str(state_dir), str(workdir))
    try:
        ids = child.message()
        child.finish()
    finally:
        child.close()
    return str(state_dir), ids


@pytest.fixture(scope="module")
def killed_mid_training(tmp_path_factory):
    """Ids of a RUNNING and a QUEUED training of a child killed with SIGKILL."""
    state_dir, workdir = tmp_path_factory.mktemp("state"), tmp_path_factory.mktemp("work")
    child = Child("crash", str(state_dir), str(workdir))
    try:
        ids = child.message()
        # While the child lives, another process sees its training as running.
        with trainerkit.TrainerManager.from_dict(local_config(str(state_dir))) as manager:
            assert manager.get_model_future(ids["running"]).get_info().status is TrainingStatus.RUNNING
            assert manager.get_model_future(ids["queued"]).get_info().status is TrainingStatus.QUEUED
        child.kill()
    finally:
        child.close()
    return str(state_dir), ids


@pytest.fixture
def restarted(manager_factory):
    """A fresh manager (as after a restart) over a given state dir."""
    return lambda state_dir: manager_factory(local_config(state_dir))


def test_a_saved_model_of_an_exited_process_loads_after_restart(finished_elsewhere, restarted):
    state_dir, ids = finished_elsewhere
    future = restarted(state_dir).get_model_future(ids["saved"])
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED and info.tags == ("saved",)
    assert info.submission_time <= info.start_time <= info.completion_time
    model = future.result(timeout=WAIT)
    assert isinstance(model, JsonModel) and model.value == 41


def test_an_unsaved_model_of_an_exited_process_is_reported_as_not_saved(finished_elsewhere, restarted):
    state_dir, ids = finished_elsewhere
    future = restarted(state_dir).get_model_future(ids["unsaved"])
    assert future.get_info().status is TrainingStatus.COMPLETED
    with pytest.raises(ModelNotSavedError, match="without a save_path"):
        future.result(timeout=WAIT)


def test_an_error_of_an_exited_process_is_raised_with_its_own_type(finished_elsewhere, restarted):
    state_dir, ids = finished_elsewhere
    future = restarted(state_dir).get_model_future(ids["failed"])
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0].type == "tests.training_modules.Boom"
    assert "no rows in table 3" in info.errors[0].traceback
    with pytest.raises(Boom, match="no rows in table 3"):
        future.result(timeout=WAIT)


def test_trainings_of_an_exited_process_are_listed_newest_first(finished_elsewhere, restarted):
    state_dir, ids = finished_elsewhere
    trainer = restarted(state_dir).get_trainer("default")
    assert [info.id for info in trainer.list_trainings()] == [ids["failed"], ids["unsaved"], ids["saved"]]
    assert [info.id for info in trainer.list_trainings(tags="saved")] == [ids["saved"]]
    assert [info.id for info in trainer.list_trainings(status="errored")] == [ids["failed"]]


def test_a_training_running_in_a_killed_process_is_reported_interrupted(killed_mid_training, restarted):
    state_dir, ids = killed_mid_training
    future = restarted(state_dir).get_model_future(ids["running"])
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert info.completion_time is not None
    assert info.errors[0].type == "trainerkit.errors.TrainingInterruptedError"
    assert "interrupted" in info.errors[0].message and "RUNNING" in info.errors[0].message
    with pytest.raises(TrainingInterruptedError, match="interrupted"):
        future.result(timeout=WAIT)


def test_a_training_queued_in_a_killed_process_is_reported_interrupted(killed_mid_training, restarted):
    state_dir, ids = killed_mid_training
    info = restarted(state_dir).get_model_future(ids["queued"]).get_info()
    assert info.status is TrainingStatus.ERRORED
    assert "interrupted" in info.errors[0].message and "QUEUED" in info.errors[0].message


def test_listing_after_a_crash_shows_no_live_trainings(killed_mid_training, restarted):
    state_dir, ids = killed_mid_training
    trainer = restarted(state_dir).get_trainer("default")
    assert trainer.list_trainings(status=["queued", "running"]) == []
    errored = trainer.list_trainings(status="errored")
    assert sorted(info.id for info in errored) == sorted(ids.values())


def test_a_future_in_another_process_sees_a_live_training_finish(tmp_path, manager_factory):
    state_dir, workdir = str(tmp_path / "state"), tmp_path / "work"
    workdir.mkdir()
    child = Child("gated", state_dir, str(workdir))
    try:
        training_id = child.message()["id"]
        future = manager_factory(local_config(state_dir)).get_model_future(training_id)
        assert future.get_info().status is TrainingStatus.RUNNING
        assert not future.done()
        (workdir / "gate").touch()
        model = future.result(timeout=WAIT)
        assert model.value == 7
        assert future.get_info().status is TrainingStatus.COMPLETED
        assert child.message() == {"done": training_id}
        child.finish()
    finally:
        child.close()
    assert os.path.isdir(future.save_path)


def test_a_training_whose_model_was_saved_before_its_process_died_reads_completed(tmp_path, manager_factory):
    """The model is saved atomically with its training id before the final
    record change; if the process dies between the two, the model decides."""
    from trainerkit.info import TrainingInfo, utcnow
    from trainerkit.module import save_model
    from trainerkit.store.sqlite import SQLiteTrainingStore
    from tests.training_modules import JsonModel

    state = tmp_path / "state"
    store = SQLiteTrainingStore(state / "trainings.sqlite3")
    save_path = str(tmp_path / "model")
    info = TrainingInfo(
        id="default--lostupdate", trainer_name="default", status=trainerkit.TrainingStatus.RUNNING,
        module="tests.training_modules:JsonModel", submission_time=utcnow(), save_path=save_path,
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.add(info, owner=f"{socket.gethostname()}|{dead.pid}|1")  # an exited process
    store.close()
    save_model(JsonModel(9), save_path, training_id=info.id)
    manager = manager_factory({"model_management": {"trainers": {"default": {"config": {"state_dir": str(state)}}}}})
    future = manager.get_model_future(info.id)
    assert future.get_info().status is trainerkit.TrainingStatus.COMPLETED
    assert future.result(timeout=10).value == 9
