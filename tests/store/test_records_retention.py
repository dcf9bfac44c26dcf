"""Retention over durable records: finished trainings are purged without a
user call, and with ``retention_delete_models`` their saved models go too."""

from __future__ import annotations

import datetime
import logging
import os

import trainerkit
from trainerkit.errors import TrainingNotFoundError
from tests.records_fixtures import WAIT, local_config, wait_until
from tests.training_modules import JsonModel


def purged(trainer, training_id: str) -> bool:
    try:
        trainer.get_model_future(training_id)
    except TrainingNotFoundError:
        return True
    return False


def test_retention_deletes_saved_models_when_configured(tmp_path, manager_factory):
    config = local_config(str(tmp_path / "state"), retention_duration="50ms", retention_delete_models=True)
    trainer = manager_factory(config).get_trainer("default")
    models = tmp_path / "models"
    (models / "sibling").mkdir(parents=True)
    future = trainer.train(JsonModel, 3, save_path=str(models), save_with_id=True)
    future.result(timeout=WAIT)
    wait_until(lambda: not os.path.exists(future.save_path), what="the model deleted by retention")
    assert purged(trainer, future.id)
    assert (models / "sibling").is_dir() and models.is_dir()


def test_retention_keeps_saved_models_unless_configured(tmp_path, manager_factory):
    trainer = manager_factory(local_config(str(tmp_path / "state"), retention_duration="50ms")).get_trainer("default")
    future = trainer.train(JsonModel, 4, save_path=str(tmp_path / "models"), save_with_id=True)
    future.result(timeout=WAIT)
    wait_until(lambda: purged(trainer, future.id), what="the record purged by retention")
    assert trainerkit.load(future.save_path).value == 4


def test_retention_keeps_a_directory_that_no_longer_holds_this_trainings_model(tmp_path, manager_factory, caplog):
    config = local_config(str(tmp_path / "state"), retention_delete_models=True)
    trainer = manager_factory(config).get_trainer("default")
    future = trainer.train(JsonModel, 5, save_path=str(tmp_path / "model"))
    future.result(timeout=WAIT)
    # Someone saved another model over it since: retention must not take it.
    (tmp_path / "model" / ".trainerkit-model.json").write_text('{"module": "x:Y", "training_id": "other"}')
    with caplog.at_level(logging.WARNING, logger="trainerkit"):
        assert trainer.purge_finished(older_than=datetime.timedelta(0)) == [future.id]
    assert (tmp_path / "model" / "value.json").is_file()
    assert "retention kept the model of training " + future.id in caplog.text


def test_retention_purges_records_of_finished_trainings_from_the_shared_file(tmp_path, manager_factory):
    state_dir = str(tmp_path / "state")
    trainer = manager_factory(local_config(state_dir, retention_duration="50ms")).get_trainer("default")
    future = trainer.train(JsonModel, 6)
    future.result(timeout=WAIT)
    wait_until(lambda: purged(trainer, future.id), what="the record purged by retention")
    # Another manager on the same file (as after a restart) finds nothing either.
    with trainerkit.TrainerManager.from_dict(local_config(state_dir)) as other:
        assert other.get_trainer("default").list_trainings() == []
