"""KUBERNETES trainings end to end through the fake API server: real HTTP, the
official client, a Job controller and pods that run the trainerkit pod entry
point as local processes."""

from __future__ import annotations

import json

import pytest

import trainerkit
from trainerkit.errors import TrainingError
from trainerkit.info import TrainingStatus
from trainerkit.module import METADATA_FILE
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
from tests.training_modules import Boom, Failing, JsonModel

TIMEOUT = 60


def test_train_runs_a_job_whose_pod_saves_the_model(trainer, models_dir, kube):
    future = trainer.train(JsonModel, 41, save_path=models_dir / "answer")
    model = future.result(timeout=TIMEOUT)
    assert model.value == 41
    saved = json.loads((models_dir / "answer" / METADATA_FILE).read_text())
    assert saved["training_id"] == future.id and saved["module"] == "tests.training_modules:JsonModel"
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED
    assert info.start_time is not None and info.completion_time is not None
    assert list(kube.jobs(NAMESPACE)) == [future.id]


def test_iris_example_trains_in_a_pod(trainer, models_dir):
    from trainerkit.examples.iris import IrisClassifier

    future = trainer.train(IrisClassifier, epochs=30, save_path=models_dir, save_with_id=True, model_name="iris")
    model = future.result(timeout=TIMEOUT)
    assert isinstance(model, IrisClassifier)
    assert future.save_path == str(models_dir / future.id / "iris")
    progress = future.get_info().progress
    assert progress is not None and progress.step == 30 and progress.total == 30
    assert trainerkit.load(future.save_path).predict([[5.1, 3.5, 1.4, 0.2]]) == ["setosa"]


def test_progress_reported_in_the_pod_is_visible_while_it_runs(trainer, models_dir, gate_dir):
    future = trainer.train(pods.FileGated, str(gate_dir), steps=3, save_path=models_dir / "gated")
    wait_until(lambda: (gate_dir / pods.ENTERED).exists(), what="the pod to enter train()")
    report = wait_until(
        lambda: (p := future.get_info().progress) is not None and p.step == 3 and p,
        what="the third progress report",
    )
    assert report.total == 3 and report.metrics == {"loss": pytest.approx(1 / 3)}
    assert future.get_info().status is TrainingStatus.RUNNING
    (gate_dir / pods.RELEASE).touch()
    assert isinstance(future.result(timeout=TIMEOUT), pods.FileGated)


def test_pods_publish_progress_like_in_cluster_clients_over_tls(trainer, kube, models_dir, gate_dir):
    # The fake's kubelet provides what a real one does (KUBERNETES_SERVICE_HOST/PORT of an
    # HTTPS endpoint, the service account's token and ca.crt) and nothing of its own.
    future = trainer.train(pods.FileGated, str(gate_dir), steps=3, save_path=models_dir / "gated")
    wait_until(lambda: (p := future.get_info().progress) is not None and p.step == 3, what="the third report")
    pod_patches = f"/api/v1/namespaces/{NAMESPACE}/pods/"
    assert kube.in_cluster_requests.count("PATCH", pod_patches) >= 1
    assert kube.requests.count("PATCH", pod_patches) == kube.in_cluster_requests.count("PATCH", pod_patches)
    (gate_dir / pods.RELEASE).touch()
    assert future.result(timeout=TIMEOUT)


def test_training_error_carries_its_type_and_the_pod_traceback(trainer, models_dir):
    future = trainer.train(Failing, "no rows", save_path=models_dir / "failing")
    with pytest.raises(Boom, match="no rows") as caught:
        future.result(timeout=TIMEOUT)
    assert 'in train\n    raise Boom(message)' in caught.value.remote_traceback
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0].type == "tests.training_modules.Boom"
    assert "PodFailurePolicy" in info.errors[1].message  # failed at once, no retry
    assert not (models_dir / "failing").exists()


def test_module_missing_from_the_image_says_so(trainer, models_dir, tmp_path, monkeypatch):
    local_only = tmp_path / "local_only"
    local_only.mkdir()
    (local_only / "notinimage.py").write_text(
        "import trainerkit\n\nclass Local(trainerkit.ModuleBase):\n"
        "    @classmethod\n    def train(cls):\n        return cls()\n"
    )
    monkeypatch.syspath_prepend(str(local_only))  # importable here, not in the pod
    from notinimage import Local

    future = trainer.train(Local, save_path=models_dir / "local")
    with pytest.raises(ImportError) as caught:
        future.result(timeout=TIMEOUT)
    assert "the training pod cannot import the module class 'notinimage:Local'" in str(caught.value)
    assert "must be installed in registry.example.com/trainerkit-test:1" in str(caught.value)


def test_pickle_format_carries_arguments_json_cannot(make_trainer, models_dir):
    trainer = make_trainer(argument_format="pickle")
    future = trainer.train(pods.SetModel, {3, 1, 2}, save_path=models_dir / "set")
    assert future.result(timeout=TIMEOUT).values == [1, 2, 3]


def test_logs_of_a_finished_training(trainer, models_dir):
    future = trainer.train(pods.Chatty, lines=3, save_path=models_dir / "chatty")
    future.wait(TIMEOUT)
    lines = list(future.logs())
    assert [line for line in lines if line.startswith("epoch ")] == ["epoch 0", "epoch 1", "epoch 2"]
    assert "done on stderr" in lines


def test_followed_logs_stream_while_the_training_runs_and_end_with_it(trainer, models_dir, gate_dir):
    future = trainer.train(pods.FileGated, str(gate_dir), lines=2, save_path=models_dir / "follow")
    lines = future.logs(follow=True)
    seen = []
    for line in lines:
        seen.append(line)
        if line == "line 1":
            break
    assert future.get_info().status is TrainingStatus.RUNNING
    (gate_dir / pods.RELEASE).touch()
    rest = list(lines)  # ends by itself when the container exits
    assert "line 0" in seen and any("training COMPLETED" in line for line in rest)
    assert future.wait(TIMEOUT)


def test_deadline_fails_the_job_with_the_reason(make_trainer, models_dir):
    trainer = make_trainer(active_deadline=1)
    future = trainer.train(pods.Sleeper, 60, save_path=models_dir / "slow")
    with pytest.raises(TrainingError) as caught:
        future.result(timeout=TIMEOUT)
    assert "DeadlineExceeded" in str(caught.value)
    assert "active_deadline (1 s)" in str(caught.value)


def test_a_crash_is_retried_up_to_the_backoff_limit(make_trainer, models_dir, kube):
    trainer = make_trainer(backoff_limit=1)
    future = trainer.train(pods.SelfKilled, save_path=models_dir / "killed")
    assert future.wait(TIMEOUT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert "exited with code 137" in info.errors[0].message
    assert "BackoffLimitExceeded" in info.errors[1].message
    assert len(kube.pods(NAMESPACE)) == 2  # the first attempt and one retry


def test_unschedulable_training_is_queued_with_the_reason_until_it_fits(trainer, models_dir, kube):
    kube.set_unschedulable(True)
    future = trainer.train(JsonModel, 1, save_path=models_dir / "pending")
    detail = wait_until(lambda: "cannot be scheduled" in future.get_info().detail and future.get_info().detail,
                        what="the scheduler's verdict")
    assert future.get_info().status is TrainingStatus.QUEUED
    assert "Unschedulable" in detail
    kube.set_unschedulable(False)
    assert future.result(timeout=TIMEOUT).value == 1


def test_missing_image_is_queued_with_the_pull_error(make_trainer, models_dir):
    trainer = make_trainer(image="registry.example.com/does-not-exist:1")
    future = trainer.train(JsonModel, 1, save_path=models_dir / "noimage")
    detail = wait_until(
        lambda: ("ImagePullBackOff" in (d := future.get_info().detail) or "ErrImagePull" in d) and d,
        what="the image pull error",
    )
    assert future.get_info().status is TrainingStatus.QUEUED
    assert "does-not-exist" in detail
    assert future.cancel()


def test_env_and_env_from_reach_the_pod_from_secrets_and_configmaps(make_trainer, kube, models_dir):
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "hf"}, "stringData": {"token": "s3cr3t"}})
    core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "defaults"}, "data": {"LEVEL": "debug"}})
    trainer = make_trainer(
        env={"PLAIN": 4, "HF_TOKEN": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        env_from=[{"configMapRef": {"name": "defaults"}, "prefix": "DEF_"}],
    )
    future = trainer.train(pods.EnvEcho, ["PLAIN", "HF_TOKEN", "DEF_LEVEL"], save_path=models_dir / "env")
    assert future.result(timeout=TIMEOUT).values == {"PLAIN": "4", "HF_TOKEN": "s3cr3t", "DEF_LEVEL": "debug"}


# -- capabilities and parameters on the cluster (issue 17) ------------------------------


def test_retries_are_a_capability_only_when_the_config_gives_them_and_gpus_always(make_trainer):
    plain = make_trainer().capabilities()
    assert not plain["retries"] and plain["gpus"] == trainerkit.SupportLevel.NATIVE
    assert plain["cancel"] == plain["detach"] == trainerkit.SupportLevel.NATIVE
    assert make_trainer(backoff_limit=2).capabilities()["retries"] == trainerkit.SupportLevel.NATIVE


def test_gpus_per_proc_becomes_the_pods_gpu_limit(make_trainer, models_dir, kube):
    trainer = make_trainer(resources={"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})
    future = trainer.train(JsonModel, 1, save_path=models_dir / "g", resources=trainerkit.Resources(gpus_per_proc=2))
    container = kube.jobs(NAMESPACE)[future.id]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"memory": "1Gi", "nvidia.com/gpu": "2"}
    future.cancel()
    # Every process of the pod gets gpus_per_proc of its own.
    future = trainer.train(JsonModel, 1, save_path=models_dir / "r", resources={"procs_per_node": 3, "gpus_per_proc": 2})
    container = kube.jobs(NAMESPACE)[future.id]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"memory": "1Gi", "nvidia.com/gpu": "6"}
    future.cancel()


def test_parameters_and_capabilities_live_on_the_job_and_survive_a_new_manager(make_trainer, models_dir, kube):
    trainer = make_trainer()
    future = trainer.train(
        JsonModel, 5, save_path=models_dir / "p", capabilities={"cancel": "native", "gpus": "optional"}
    )
    future.result(timeout=TIMEOUT)
    annotations = kube.jobs(NAMESPACE)[future.id]["metadata"]["annotations"]
    assert json.loads(annotations["trainerkit.io/parameters"]) == {"values": {"value": 5}, "by_repr": []}
    again = make_trainer().get_model_future(future.id).get_info()
    assert again.parameters == {"value": 5} and again.parameters_by_repr == ()
    assert again.capabilities == {"cancel": trainerkit.SupportLevel.NATIVE, "gpus": trainerkit.SupportLevel.NATIVE}


def test_large_parameters_keep_a_short_repr_on_the_job(make_trainer, models_dir, kube):
    big = list(range(20_000))
    future = make_trainer().train(JsonModel, big, save_path=models_dir / "big")
    future.result(timeout=TIMEOUT)
    annotations = kube.jobs(NAMESPACE)[future.id]["metadata"]["annotations"]
    recorded = json.loads(annotations["trainerkit.io/parameters"])
    assert recorded["by_repr"] == ["value"] and recorded["values"]["value"].startswith("[0, 1, 2")
    assert len(annotations["trainerkit.io/parameters"]) < 2048
