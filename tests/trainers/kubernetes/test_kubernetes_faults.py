"""A flaky API server: transient errors (429, 5xx) and dropped connections are
resent with bounded backoff, and a create whose answer was lost is recognised
as ours on the resend, so every training converges."""

from __future__ import annotations

import pytest

from trainerkit.errors import ClusterError
from trainerkit.info import TrainingStatus
from trainerkit.trainers.kubernetes import api
from trainerkit.trainers.kubernetes.api_errors import AlreadyExistsError
from tests.kubernetes_fixtures import (  # noqa: F401 - fixtures
    NAMESPACE,
    cluster_config,
    fake_kube_factory,
    kube,
    make_manager,
    make_trainer,
    models_dir,
    trainer,
)
from tests.training_modules import JsonModel

TIMEOUT = 60
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"


def assert_one_owned_configmap_per_job(kube):
    jobs = kube.jobs(NAMESPACE)
    owners = [
        [(ref["kind"], ref["name"], ref["uid"]) for ref in cm["metadata"].get("ownerReferences") or []]
        for cm in kube.configmaps(NAMESPACE).values()
    ]
    assert sorted(owners) == sorted([[("Job", name, job["metadata"]["uid"])] for name, job in jobs.items()])


def test_backoff_doubles_is_capped_and_honours_retry_after_up_to_a_cap():
    assert 0.05 <= api.retry_delay(1) <= 0.1
    assert 0.1 <= api.retry_delay(2) <= 0.2
    assert api.retry_delay(30) <= api.RETRY_BACKOFF_MAX
    assert api.retry_delay(1, retry_after=3) == 3
    assert api.retry_delay(1, retry_after=3600) == api.RETRY_AFTER_MAX


def test_one_transient_failure_of_each_request_does_not_fail_train(trainer, kube, models_dir):
    kube.inject_error("create", "configmaps", code=500)
    kube.inject_error("create", "jobs", code=503, retry_after=0)
    kube.inject_error("patch", "configmaps", code=429, retry_after=0)
    kube.inject_reset("list", "pods")
    future = trainer.train(JsonModel, 1, save_path=models_dir / "x")
    assert future.result(timeout=TIMEOUT).value == 1
    assert sorted(f.kind for f in kube.served_faults) == ["429", "500", "503", "reset"]
    assert_one_owned_configmap_per_job(kube)


@pytest.mark.parametrize("fault", ["500-after", "reset-after"])
def test_a_create_carried_out_whose_answer_was_lost_is_taken_as_ours(trainer, kube, models_dir, fault):
    for resource in ("configmaps", "jobs"):
        if fault == "500-after":
            kube.inject_error("create", resource, code=500, after=True)
        else:
            kube.inject_reset("create", resource, after=True)
    future = trainer.train(JsonModel, 2, save_path=models_dir / "x")
    assert future.result(timeout=TIMEOUT).value == 2
    assert [f.kind for f in kube.served_faults] == [fault, fault]
    assert list(kube.jobs(NAMESPACE)) == [future.id]
    assert_one_owned_configmap_per_job(kube)


def test_a_resent_create_that_meets_an_object_it_did_not_make_is_a_conflict(trainer, kube):
    from kubernetes import client

    client.CoreV1Api(kube.api_client()).create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": "taken"}, "data": {"training.json": "theirs"}}
    )
    kube.inject_error("create", "configmaps", code=500)  # not carried out; the resend meets theirs
    with pytest.raises(AlreadyExistsError, match="configmaps 'taken' already exists"):
        trainer._api.create_configmap({"metadata": {"name": "taken"}, "data": {"training.json": "ours"}})
    assert kube.configmaps(NAMESPACE)["taken"]["data"] == {"training.json": "theirs"}


def test_retry_after_of_a_429_is_waited_for(trainer, kube, models_dir):
    kube.inject_error("create", "jobs", code=429, retry_after=1)
    trainer.train(JsonModel, 1, save_path=models_dir / "x").result(timeout=TIMEOUT)
    first, second = [t for method, path, t in kube.requests.timed() if (method, path) == ("POST", JOBS)]
    assert second - first >= 1.0


def test_a_persistent_429_gives_up_after_request_retries(make_trainer, kube, models_dir):
    trainer = make_trainer(request_retries=1)
    kube.inject_error("create", "configmaps", code=429, times=None, retry_after=0)
    with pytest.raises(ClusterError, match=r"failed to create configmaps .*\(429 TooManyRequests: .*\); trainerkit "
                                           r"sent it 2 times .*\(retried 1 times\); try again"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")
    assert kube.configmaps(NAMESPACE) == {} and trainer.list_trainings() == []


def test_many_trainings_converge_when_a_fifth_of_all_requests_fail(trainer, kube, models_dir):
    kube.inject_faults(0.2, retry_after=0, seed=12)
    futures = [trainer.train(JsonModel, i, save_path=models_dir / f"m{i}") for i in range(20)]
    for i, future in enumerate(futures):
        assert future.wait(TIMEOUT), future.id
        assert future.get_info().status is TrainingStatus.COMPLETED, future.get_info().errors
    assert len(kube.served_faults) >= 5, kube.served_faults  # (about 20 of some 100 requests)
    kube.clear_injected_errors()
    assert [future.result(timeout=TIMEOUT).value for future in futures] == list(range(20))
    assert len(kube.jobs(NAMESPACE)) == 20
    assert_one_owned_configmap_per_job(kube)


# -- what a failed submission leaves behind -------------------------------------------------------


def test_a_failed_submission_resends_the_delete_of_its_configmap(make_trainer, kube, models_dir):
    trainer = make_trainer(request_retries=1)
    kube.inject_error("create", "jobs", code=500, times=None)
    kube.inject_error("delete", "configmaps", code=500)
    with pytest.raises(ClusterError, match="failed to create jobs.batch"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")
    assert [f.verb for f in kube.served_faults if f.resource == "configmaps"] == ["delete"]
    assert kube.configmaps(NAMESPACE) == {}


def leftover(kube, name, *, trainer="cluster", age=600.0, owner=None):
    from kubernetes import client

    labels = {"app.kubernetes.io/managed-by": "trainerkit", "trainerkit.io/trainer": trainer}
    metadata = {"name": name, "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": owner["metadata"]["name"],
                                        "uid": owner["metadata"]["uid"]}]
    client.CoreV1Api(kube.api_client()).create_namespaced_config_map(NAMESPACE, {"metadata": metadata})
    kube.backdate("configmaps", NAMESPACE, name, age)


def test_train_deletes_configmaps_a_failed_cleanup_left_unowned_for_five_minutes(make_trainer, kube, models_dir):
    from trainerkit.trainers.kubernetes.trainer import ORPHAN_CONFIGMAP_GRACE

    assert ORPHAN_CONFIGMAP_GRACE.total_seconds() == 300
    done = make_trainer().train(JsonModel, 1, save_path=models_dir / "a")  # a Job to own a ConfigMap
    done.result(timeout=TIMEOUT)
    leftover(kube, "cluster--old-abc123")                  # unowned, 10 minutes old: deleted
    leftover(kube, "cluster--young-abc123", age=60)        # unowned, a minute old: maybe a submission in flight
    leftover(kube, "cluster--owned-abc123", owner=kube.jobs(NAMESPACE)[done.id])  # the cluster's to delete
    leftover(kube, "other--old-abc123", trainer="other")   # another trainer's
    before = set(kube.configmaps(NAMESPACE))

    trainer = make_trainer()  # as in a fresh process: its first train() looks for leftovers
    future = trainer.train(JsonModel, 2, save_path=models_dir / "b")
    future.result(timeout=TIMEOUT)
    after = set(kube.configmaps(NAMESPACE))
    assert before - after == {"cluster--old-abc123"}
    assert len(after - before) == 1  # the new training's own ConfigMap
