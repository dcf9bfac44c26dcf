"""KUBERNETES with models and checkpoints at an S3 URL (issue 14): the pods of
the fake cluster reach the local moto S3 server through the trainer's ``env``
(as a real cluster's would through env/env_from and a Secret), with no shared
volume at all."""

from __future__ import annotations

import os

import pytest

import trainerkit
from trainerkit import storage
from tests.kubernetes_fixtures import (  # noqa: F401 - fixtures
    TRAINER,
    cluster_config,
    fake_kube_factory,
    kube,
    make_manager,
    models_dir,
)
from tests.storage_fixtures import s3_bucket, s3_endpoint, s3_env, s3_files  # noqa: F401 - fixtures
from tests.storage_modules import Epochs

WAIT = 60


@pytest.fixture
def s3_trainer(make_manager, s3_env):  # noqa: F811 - the fixture
    def build(**overrides):
        # No volumes: the model and the checkpoints go to S3; credentials through env.
        config = dict(volumes=[], volume_mounts=[], env=dict(s3_env))
        config.update(overrides)
        return make_manager(**config).get_trainer(TRAINER)

    return build


def test_a_pod_saves_to_s3_without_a_shared_volume_and_the_caller_loads_it(s3_trainer, s3_bucket, s3_env):
    trainer = s3_trainer(checkpoint_dir=f"{s3_bucket}/ckpt")
    assert trainer.capabilities()["remote_storage"] and trainer.capabilities()["checkpoints"]
    future = trainer.train(Epochs, 2, save_path=f"{s3_bucket}/models", save_with_id=True)
    model = future.result(timeout=WAIT)
    assert (model.started_at, model.epoch) == (0, 2)
    assert storage.read_manifest(future.save_path)["training_id"] == future.id
    assert trainerkit.load(future.save_path, cache=False).epoch == 2
    assert [info.name for info in future.checkpoints()] == ["checkpoint-000001", "checkpoint-000002"]
    trainer.delete_training(future.id, delete_model=True)
    assert s3_files(f"{s3_bucket}/ckpt/{future.id}", s3_env["AWS_ENDPOINT_URL_S3"]) == []
    assert s3_files(future.save_path, s3_env["AWS_ENDPOINT_URL_S3"]) == []


def test_max_retries_replaces_a_killed_pod_and_it_resumes_from_the_last_checkpoint(
    s3_trainer, s3_bucket, models_dir  # noqa: F811 - the fixture
):
    trainer = s3_trainer(checkpoint_dir=f"{s3_bucket}/ckpt", max_retries=1)
    assert trainer.capabilities()["retries"]
    marker = str(models_dir / "killed")  # the fake's pods are local processes: they see tmp_path
    future = trainer.train(Epochs, 4, kill_after=3, marker=marker, save_path=f"{s3_bucket}/m", save_with_id=True)
    model = future.result(timeout=WAIT)
    assert os.path.exists(marker)
    assert (model.started_at, model.epoch) == (3, 4)
    assert future.get_info().attempt == 2


def test_a_python_exception_is_still_not_retried(s3_trainer, s3_bucket):
    from tests.training_modules import Failing

    trainer = s3_trainer(max_retries=2)
    future = trainer.train(Failing, save_path=f"{s3_bucket}/m", save_with_id=True)
    assert future.wait(WAIT)
    assert future.get_info().status is trainerkit.TrainingStatus.ERRORED


def test_max_retries_and_backoff_limit_cannot_disagree(cluster_config):  # noqa: F811 - the fixture
    with pytest.raises(trainerkit.ConfigError, match="max_retries .* backoff_limit"):
        trainerkit.TrainerManager.from_dict(cluster_config(max_retries=1, backoff_limit=3))


def test_a_file_url_must_be_on_a_volume_of_the_pods_like_a_path(make_manager, tmp_path, models_dir):  # noqa: F811
    trainer = make_manager().get_trainer(TRAINER)
    with pytest.raises(ValueError, match="not under any writable volume mount"):
        trainer.train(Epochs, 1, save_path=f"file://{tmp_path}/elsewhere")
    assert not make_manager(checkpoint_dir=f"file://{tmp_path}/ckpt").get_trainer(TRAINER).capabilities()["checkpoints"]
    assert make_manager(checkpoint_dir=f"file://{models_dir}/ckpt").get_trainer(TRAINER).capabilities()["checkpoints"]
    assert trainer.list_trainings() == []
