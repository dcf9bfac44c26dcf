"""Deleting durable records: from any process that shares the state dir, only
finished trainings, and with ``delete_model`` only the model directory."""

from __future__ import annotations

import pytest

from trainerkit.errors import TrainingNotFoundError, TrainingStateError
from tests.records_fixtures import WAIT, Child, local_config
from tests.training_modules import JsonModel


def test_a_training_finished_before_a_restart_is_deleted_with_only_its_model(tmp_path, manager_factory):
    state_dir, models = str(tmp_path / "state"), tmp_path / "models"
    (models / "sibling").mkdir(parents=True)
    first = manager_factory(local_config(state_dir))
    future = first.get_trainer("default").train(JsonModel, 1, save_path=str(models), save_with_id=True)
    future.result(timeout=WAIT)
    first.close()

    restarted = manager_factory(local_config(state_dir)).get_trainer("default")
    restarted.delete_training(future.id, delete_model=True)
    assert not (models / future.id).exists()
    assert (models / "sibling").is_dir()
    with pytest.raises(TrainingNotFoundError):
        restarted.get_model_future(future.id)
    assert restarted.list_trainings() == []


def test_deleting_a_training_running_in_another_process_is_refused(tmp_path, manager_factory):
    state_dir, workdir = str(tmp_path / "state"), tmp_path / "work"
    workdir.mkdir()
    child = Child("gated", state_dir, str(workdir))
    try:
        training_id = child.message()["id"]
        trainer = manager_factory(local_config(state_dir)).get_trainer("default")
        with pytest.raises(TrainingStateError, match="is RUNNING; cancel it first"):
            trainer.delete_training(training_id, delete_model=True)
        (workdir / "gate").touch()
        child.message()
        child.finish()
    finally:
        child.close()
    assert trainer.get_model_future(training_id).result(timeout=WAIT).value == 7
