"""What train() refuses before anything reaches the cluster, what it creates,
and one clear error for each way the cluster can say no."""

from __future__ import annotations

import socket

import pytest

from trainerkit.errors import (
    ClusterError,
    ClusterPermissionError,
    ClusterUnreachableError,
    ConfigError,
    TrainingExistsError,
)
from trainerkit.info import TrainingStatus
from tests import kubernetes_modules as pods
from tests.kubernetes_fixtures import (  # noqa: F401 - fixtures
    NAMESPACE,
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
from tests.training_modules import Adder, JsonModel

TIMEOUT = 60


def assert_nothing_sent(kube):
    assert kube.jobs(NAMESPACE) == {} and kube.configmaps(NAMESPACE) == {}


# -- refused at train(), before any request --------------------------------------------------


def test_training_without_save_path_is_refused(trainer, kube):
    with pytest.raises(ValueError, match="runs in a pod, so its model comes back only through save_path"):
        trainer.train(JsonModel, 1)
    assert_nothing_sent(kube)


def test_save_path_outside_every_volume_mount_is_refused(trainer, kube, tmp_path):
    with pytest.raises(ValueError, match=r"is not under any writable volume mount.*deleted with it"):
        trainer.train(JsonModel, 1, save_path=tmp_path / "elsewhere")
    assert_nothing_sent(kube)


@pytest.mark.parametrize(
    "volume, why",
    [
        ({"emptyDir": {}}, r"\(emptyDir\), which is deleted with the pod"),
        ({"ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"],
          "resources": {"requests": {"storage": "1Gi"}}}}}}, r"\(ephemeral\), which is deleted with the pod"),
        ({"configMap": {"name": "settings"}}, r"\(configMap\), which the kubelet always mounts read-only"),
        ({"secret": {"secretName": "keys"}}, r"\(secret\), which the kubelet always mounts read-only"),
        ({"downwardAPI": {"items": []}}, r"\(downwardAPI\), which the kubelet always mounts read-only"),
        ({"projected": {"sources": []}}, r"\(projected\), which the kubelet always mounts read-only"),
        ({"persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
         r"\(persistentVolumeClaim\), whose persistentVolumeClaim sets readOnly: true"),
    ],
    ids=["emptyDir", "ephemeral", "configMap", "secret", "downwardAPI", "projected", "readOnly-claim"],
)
def test_save_path_on_a_volume_that_dies_with_the_pod_or_is_read_only_is_refused(make_trainer, kube, volume, why):
    trainer = make_trainer(volumes=[{"name": "scratch", **volume}],
                           volume_mounts=[{"name": "scratch", "mountPath": "/scratch"}])
    with pytest.raises(ValueError, match=r"save_path /scratch/run is under the volume mount /scratch of trainer "
                                         r"'cluster', volume 'scratch' " + why + r".*persistentVolumeClaim.*require_save_volume"):
        trainer.train(JsonModel, 1, save_path="/scratch/run")
    assert_nothing_sent(kube)


def test_save_path_on_a_read_only_mount_is_refused(make_trainer, kube, models_dir):
    trainer = make_trainer(volume_mounts=[{"name": "models", "mountPath": str(models_dir), "readOnly": True}])
    with pytest.raises(ValueError, match=r"volume 'models' \(hostPath\), which is mounted readOnly: true.*remove "
                                         r"readOnly from that entry of volume_mounts"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")
    assert_nothing_sent(kube)


def test_the_deepest_mount_that_holds_save_path_decides(make_trainer, kube, models_dir):
    trainer = make_trainer(
        volumes=[{"name": "models", "hostPath": {"path": str(models_dir)}}, {"name": "tmp", "emptyDir": {}}],
        volume_mounts=[{"name": "models", "mountPath": str(models_dir)},
                       {"name": "tmp", "mountPath": str(models_dir / "tmp")}],
    )
    with pytest.raises(ValueError, match=r"volume 'tmp' \(emptyDir\), which is deleted with the pod"):
        trainer.train(JsonModel, 1, save_path=models_dir / "tmp" / "x")
    assert trainer.train(JsonModel, 1, save_path=models_dir / "tmpx").result(timeout=TIMEOUT).value == 1


def test_argument_json_cannot_carry_is_named_at_train(trainer, kube, models_dir):
    with pytest.raises(TypeError, match=r"^argument a is a builtins.set, which is not JSON data"):
        trainer.train(Adder, {1, 2}, save_path=models_dir / "x")
    assert_nothing_sent(kube)


def test_class_defined_in_main_is_refused(trainer, kube, models_dir):
    namespace: dict = {"__name__": "__main__"}
    exec("import trainerkit\nclass Script(trainerkit.ModuleBase):\n    @classmethod\n    def train(cls):\n"
         "        return cls()\n", namespace)
    with pytest.raises(TypeError, match="is defined in __main__"):
        trainer.train(namespace["Script"], save_path=models_dir / "x")
    assert_nothing_sent(kube)


def test_missing_train_argument_is_refused_before_anything_starts(trainer, kube, models_dir):
    with pytest.raises(TypeError, match="missing a required argument: 'value'"):
        trainer.train(JsonModel, save_path=models_dir / "x")
    assert_nothing_sent(kube)


# -- what a training is in the cluster ---------------------------------------------------------


def test_the_job_owns_its_configmap(trainer, kube, models_dir):
    future = trainer.train(JsonModel, 1, save_path=models_dir / "x")
    job = kube.jobs(NAMESPACE)[future.id]
    (config_map,) = kube.configmaps(NAMESPACE).values()
    (owner,) = config_map["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", future.id, job["metadata"]["uid"])
    future.result(timeout=TIMEOUT)


def test_external_id_of_a_running_training_is_refused(trainer, kube, models_dir, gate_dir):
    first = trainer.train(pods.FileGated, str(gate_dir), save_path=models_dir / "a", external_training_id="nightly")
    with pytest.raises(TrainingExistsError, match=r"'cluster--nightly' already exists and is (QUEUED|RUNNING)"):
        trainer.train(JsonModel, 1, save_path=models_dir / "b", external_training_id="nightly")
    assert len(kube.configmaps(NAMESPACE)) == 1  # the refused one left nothing behind
    (gate_dir / pods.RELEASE).touch()
    first.result(timeout=TIMEOUT)


def test_external_id_of_a_finished_training_is_reused(trainer, kube, models_dir):
    trainer.train(JsonModel, 1, save_path=models_dir / "a", external_training_id="nightly").result(timeout=TIMEOUT)
    second = trainer.train(JsonModel, 2, save_path=models_dir / "b", external_training_id="nightly")
    assert second.result(timeout=TIMEOUT).value == 2
    assert list(kube.jobs(NAMESPACE)) == ["cluster--nightly"]


def test_a_job_of_that_name_made_by_someone_else_is_not_touched(trainer, kube, models_dir):
    from kubernetes import client

    batch = client.BatchV1Api(kube.api_client())
    batch.create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "cluster--theirs"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    })
    with pytest.raises(TrainingExistsError, match="already exists in namespace 'ml' and was not created by trainer"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x", external_training_id="theirs")
    assert "trainerkit.io/trainer" not in (kube.jobs(NAMESPACE)["cluster--theirs"]["metadata"].get("labels") or {})
    assert kube.configmaps(NAMESPACE) == {}


# -- the cluster says no ----------------------------------------------------------------------


def test_rbac_refusal_names_the_verb_and_resource_and_leaves_nothing(trainer, kube, models_dir):
    kube.forbid("create", "jobs")
    with pytest.raises(ClusterPermissionError) as caught:
        trainer.train(JsonModel, 1, save_path=models_dir / "x")
    error = caught.value
    assert (error.verb, error.resource, error.namespace) == ("create", "jobs.batch", NAMESPACE)
    assert "RBAC does not allow this trainer to create jobs.batch in namespace 'ml'" in str(error)
    assert "config/rbac-kubernetes-trainer.yaml" in str(error)
    assert_nothing_sent(kube)


def test_rbac_refusal_to_watch_pods_fails_the_first_train(trainer, kube, models_dir):
    kube.forbid("list", "pods")
    with pytest.raises(ClusterPermissionError, match="to list pods in namespace 'ml'"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")
    assert_nothing_sent(kube)


def test_rejected_credentials_say_to_refresh_them(make_trainer, kube, models_dir, tmp_path):
    bad = kube.write_kubeconfig(tmp_path / "bad-kubeconfig", token="expired")
    trainer = make_trainer(kubeconfig=bad)
    with pytest.raises(ClusterPermissionError, match=r"rejected the credentials \(401 Unauthorized\)"):
        trainer.list_trainings()


def test_missing_namespace_is_named_with_the_fix(make_trainer, models_dir):
    trainer = make_trainer(namespace="no-such-team")
    with pytest.raises(ClusterError, match=r"namespace 'no-such-team' does not exist.*kubectl create namespace"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")


def test_unreachable_api_server_is_named(make_trainer, kube, tmp_path, models_dir):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = kube.write_kubeconfig(tmp_path / "dead-kubeconfig")
    text = open(dead).read().replace(kube.url, f"http://127.0.0.1:{port}")
    open(dead, "w").write(text)
    trainer = make_trainer(kubeconfig=dead)
    with pytest.raises(ClusterUnreachableError, match=rf"cannot reach the Kubernetes API server at http://127.0.0.1:{port}"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")


def test_server_error_on_create_is_reported_after_bounded_retries_and_cleaned_up(make_trainer, kube, models_dir):
    trainer = make_trainer(request_retries=2)
    kube.inject_error("create", "jobs", code=500, times=None)
    with pytest.raises(ClusterError, match=r"failed to create jobs.batch .*\(500 InternalError: injected error 500\); "
                                           r"trainerkit sent it 3 times over .* s \(retried 2 times\)"):
        trainer.train(JsonModel, 1, save_path=models_dir / "x")
    assert kube.requests.count("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs") == 3
    assert_nothing_sent(kube)
    assert trainer.list_trainings() == []


def test_progress_still_arrives_at_the_end_when_pods_may_not_patch_themselves(trainer, kube, models_dir):
    kube.forbid("patch", "pods")
    from trainerkit.examples.iris import IrisClassifier

    future = trainer.train(IrisClassifier, epochs=5, save_path=models_dir / "iris")
    future.result(timeout=TIMEOUT)
    assert future.get_info().progress.step == 5  # from the termination message
    assert any("may not" in line or "refused to let this pod patch" in line for line in future.logs())


def test_nested_config_typo_fails_when_the_trainer_is_built(make_manager):
    manager = make_manager(tolerations=[{"key": "gpu", "operator": "Exists", "efect": "NoSchedule"}])
    with pytest.raises(ConfigError, match=r"tolerations\[0\]\.efect: unknown key"):
        manager.get_trainer("cluster")


def test_info_after_submission_is_queued_with_a_reason(trainer, models_dir):
    future = trainer.train(JsonModel, 1, save_path=models_dir / "x")
    info = future.get_info()
    assert info.status in (TrainingStatus.QUEUED, TrainingStatus.RUNNING, TrainingStatus.COMPLETED)
    if info.status is TrainingStatus.QUEUED:
        assert info.detail
    future.result(timeout=TIMEOUT)
