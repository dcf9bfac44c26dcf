"""Cancel, reattach after a restart, list, delete and scale: the cluster is the record."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re

import pytest
import yaml

from trainerkit.errors import TrainingCanceledError, TrainingNotFoundError
from trainerkit.info import TrainingStatus
from trainerkit.trainers.kubernetes.manifest import ANNOTATION_CANCELED
from tests import kubernetes_modules as pods
from tests.kubernetes_fixtures import (  # noqa: F401 - fixtures
    NAMESPACE,
    TRAINER,
    cluster_config,
    fake_kube_factory,
    gate_dir,
    kube,
    make_manager,
    make_trainer,
    models_dir,
    trainer,
    wait_until,
)
from tests.training_modules import JsonModel

TIMEOUT = 60
from tests.conftest import REPO_ROOT  # noqa: E402


def start_gated(trainer, gate_dir, models_dir, name="gated", **kwargs):
    future = trainer.train(pods.FileGated, str(gate_dir), save_path=models_dir / name, **kwargs)
    wait_until(lambda: (gate_dir / pods.ENTERED).exists(), what="the pod to enter train()")
    return future


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_stops_the_pod_and_stays_visible_in_the_cluster(trainer, kube, gate_dir, models_dir):
    future = start_gated(trainer, gate_dir, models_dir)
    assert future.cancel() is True
    assert future.get_info().status is TrainingStatus.CANCELED
    with pytest.raises(TrainingCanceledError, match="canceled while running"):
        future.result(timeout=1)
    kube.wait_for(lambda c: not c.pods(NAMESPACE), timeout=10, description="the pod to be stopped")
    job = kube.jobs(NAMESPACE)[future.id]
    assert job["spec"]["suspend"] is True
    assert json.loads(job["metadata"]["annotations"][ANNOTATION_CANCELED])["reason"] == "canceled while running"
    assert not (models_dir / "gated").exists()


def test_a_restarted_caller_still_sees_canceled(trainer, make_manager, gate_dir, models_dir):
    future = start_gated(trainer, gate_dir, models_dir)
    future.cancel()
    again = make_manager().get_model_future(future.id)
    info = again.get_info()
    assert info.status is TrainingStatus.CANCELED
    assert info.errors[0].message == "canceled while running"


def test_cancel_while_queued(trainer, kube, models_dir):
    kube.set_unschedulable(True)
    future = trainer.train(JsonModel, 1, save_path=models_dir / "queued")
    assert future.get_info().status is TrainingStatus.QUEUED
    assert future.cancel() is True
    assert future.get_info().status is TrainingStatus.CANCELED
    kube.set_unschedulable(False)
    kube.wait_for(lambda c: not c.pods(NAMESPACE), timeout=10, description="the pending pod to go")
    assert future.get_info().status is TrainingStatus.CANCELED


def test_cancel_from_another_process_reaches_the_original_future(trainer, make_manager, gate_dir, models_dir):
    future = start_gated(trainer, gate_dir, models_dir)
    assert make_manager().get_model_future(future.id).cancel() is True
    assert future.wait(TIMEOUT)
    assert future.get_info().status is TrainingStatus.CANCELED


def test_cancel_of_a_finished_training_returns_false(trainer, models_dir):
    future = trainer.train(JsonModel, 1, save_path=models_dir / "done")
    future.result(timeout=TIMEOUT)
    assert future.cancel() is False
    assert future.get_info().status is TrainingStatus.COMPLETED


# -- reattach --------------------------------------------------------------------------------


def test_a_fresh_manager_follows_a_training_it_never_started(trainer, make_manager, gate_dir, models_dir):
    future = start_gated(trainer, gate_dir, models_dir, tags=["nightly"])
    trainer.shutdown()  # the submitting process "restarts"
    reattached = make_manager().get_model_future(future.id)
    assert reattached.get_info().status is TrainingStatus.RUNNING
    assert reattached.get_info().tags == ("nightly",)
    (gate_dir / pods.RELEASE).touch()
    assert isinstance(reattached.result(timeout=TIMEOUT), pods.FileGated)
    assert reattached.get_info().status is TrainingStatus.COMPLETED


def test_list_trainings_comes_from_the_cluster_alone(trainer, make_manager, models_dir):
    first = trainer.train(JsonModel, 1, save_path=models_dir / "a", tags=["x"])
    second = trainer.train(JsonModel, 2, save_path=models_dir / "b", tags=["x", "y"])
    first.result(timeout=TIMEOUT)
    second.result(timeout=TIMEOUT)
    fresh = make_manager().get_trainer(TRAINER)
    listed = fresh.list_trainings()
    assert [info.id for info in listed] == [second.id, first.id]  # newest first
    assert [info.id for info in fresh.list_trainings(tags="y")] == [second.id]
    assert [info.id for info in fresh.list_trainings(status="COMPLETED", limit=1)] == [second.id]
    assert fresh.list_trainings(status="RUNNING") == []
    assert fresh.list_trainings(since=datetime.timedelta(hours=1))[0].module == "tests.training_modules:JsonModel"


def test_trainers_do_not_see_each_others_trainings(make_manager, cluster_config, models_dir):
    import trainerkit

    config = cluster_config()
    other = dict(config["model_management"]["trainers"][TRAINER])
    config["model_management"]["trainers"]["other"] = other
    manager = trainerkit.TrainerManager.from_dict(config)
    try:
        mine = manager.get_trainer(TRAINER).train(JsonModel, 1, save_path=models_dir / "mine")
        mine.result(timeout=TIMEOUT)
        assert manager.get_trainer("other").list_trainings() == []
        with pytest.raises(TrainingNotFoundError):
            manager.get_trainer("other").get_model_future(mine.id)
        assert manager.get_model_future(mine.id).get_info().status is TrainingStatus.COMPLETED
    finally:
        manager.close(wait=False)


def test_unknown_training_is_not_found(trainer):
    with pytest.raises(TrainingNotFoundError, match="no training 'cluster--nosuchrun' in trainer 'cluster'"):
        trainer.get_model_future("cluster--nosuchrun")


# -- delete and retention -----------------------------------------------------------------------


def test_delete_removes_the_job_and_its_configmap(trainer, kube, models_dir):
    future = trainer.train(JsonModel, 1, save_path=models_dir / "a")
    future.result(timeout=TIMEOUT)
    trainer.delete_training(future.id, delete_model=True)
    assert future.id not in kube.jobs(NAMESPACE)
    kube.wait_for(lambda c: not c.configmaps(NAMESPACE), timeout=10, description="the ConfigMap to be collected")
    assert not (models_dir / "a").exists()
    with pytest.raises(TrainingNotFoundError):
        trainer.get_model_future(future.id)


def test_purge_deletes_finished_jobs(trainer, kube, models_dir):
    future = trainer.train(JsonModel, 1, save_path=models_dir / "a")
    future.result(timeout=TIMEOUT)
    assert trainer.purge_finished(older_than=datetime.timedelta(0)) == [future.id]
    assert kube.jobs(NAMESPACE) == {}


def test_a_job_deleted_behind_our_back_ends_the_future(trainer, kube, gate_dir, models_dir):
    from kubernetes import client

    future = start_gated(trainer, gate_dir, models_dir)
    client.BatchV1Api(kube.api_client()).delete_namespaced_job(future.id, NAMESPACE, propagation_policy="Background")
    assert future.wait(TIMEOUT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert "was deleted" in info.errors[0].message


# -- scale: one shared watch, not one request per future per poll ---------------------------------


def test_status_of_many_trainings_costs_no_request_per_poll(trainer, make_manager, kube, models_dir):
    kube.set_unschedulable(True)  # keep them all in flight, cheaply
    submitted = [trainer.train(JsonModel, n, save_path=models_dir / f"m{n}") for n in range(12)]
    watcher = make_manager().get_trainer(TRAINER)
    followed = [watcher.get_model_future(future.id) for future in submitted]
    followed[0].get_info()  # starts the shared watch
    before = kube.request_count()
    for _ in range(20):
        for future in followed + submitted:
            assert future.get_info().status is TrainingStatus.QUEUED
    assert kube.request_count() == before
    kube.set_unschedulable(False)
    for future in followed:
        assert future.wait(TIMEOUT)
    assert all(future.get_info().status is TrainingStatus.COMPLETED for future in followed)


def test_watch_recovers_after_its_history_expires(trainer, kube, gate_dir, models_dir, monkeypatch, caplog):
    from trainerkit.trainers.kubernetes import watch

    caplog.set_level(logging.DEBUG, logger="trainerkit")
    monkeypatch.setattr(watch, "WATCH_SECONDS", 1)  # the server ends each watch after a second
    monkeypatch.setattr(kube.api, "bookmark_interval", 3600)  # no bookmark refreshes the version
    future = start_gated(trainer, gate_dir, models_dir)
    kube.create_namespace("unrelated")  # the cluster moves on past the last version the watch saw
    kube.compact()  # so the next watch from that version gets 410 Gone and must list again
    wait_until(lambda: "watch expired; listing again" in caplog.text, what="the watch to get 410 Gone")
    (gate_dir / pods.RELEASE).touch()
    assert future.wait(TIMEOUT)
    assert future.get_info().status is TrainingStatus.COMPLETED


def test_shutdown_stops_the_watch_threads(trainer, models_dir):
    import threading

    trainer.train(JsonModel, 1, save_path=models_dir / "a").result(timeout=TIMEOUT)
    assert any(t.name.startswith("trainerkit-watch-") for t in threading.enumerate())
    trainer.shutdown()
    wait_until(lambda: not any(t.name.startswith("trainerkit-watch-") for t in threading.enumerate()),
               timeout=10, what="the watch threads to end")


# -- RBAC: the shipped Role allows everything a trainer does -----------------------------------------

_ROUTE = re.compile(r"^/(?:api/v1|apis/batch/v1)/namespaces/[^/]+/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$")
_VERBS = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


def test_the_shipped_role_allows_every_request_of_a_full_lifecycle(trainer, kube, gate_dir, models_dir):
    done = trainer.train(JsonModel, 1, save_path=models_dir / "a")
    done.result(timeout=TIMEOUT)
    list(done.logs())
    canceled = start_gated(trainer, gate_dir, models_dir, name="b")
    canceled.cancel()
    trainer.list_trainings()
    trainer.delete_training(done.id)
    with open(os.path.join(REPO_ROOT, "config", "rbac-kubernetes-trainer.yaml")) as handle:
        role = next(d for d in yaml.safe_load_all(handle) if d and d["kind"] == "Role"
                    and d["metadata"]["name"] == "trainerkit-trainer")
    allowed = {(verb, resource) for rule in role["rules"] for verb in rule["verbs"] for resource in rule["resources"]}
    pod_side = {"pods"}  # pods patch their own annotations with the training service account
    used = set()
    for method, path in kube.requests.snapshot():
        match = _ROUTE.match(path)
        if not match:
            continue
        resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
        verb = _VERBS.get(method) or ("get" if match["name"] else "list")
        if method == "PATCH" and resource in pod_side:
            continue
        used.add((verb, resource))
    assert used, "no requests seen"
    assert used <= allowed | {("watch", r) for _, r in allowed}, used - allowed


def test_retention_deletes_finished_jobs_and_optionally_their_models(make_trainer, kube, models_dir):
    trainer = make_trainer(retention_duration="50ms", retention_delete_models=True)
    future = trainer.train(JsonModel, 1, save_path=models_dir / "old")
    assert future.wait(TIMEOUT) and future.get_info().status is TrainingStatus.COMPLETED
    wait_until(lambda: not kube.jobs(NAMESPACE), what="retention to delete the finished Job")
    wait_until(lambda: not (models_dir / "old").exists(), what="retention to delete the model")
