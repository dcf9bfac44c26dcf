"""Multi-node KUBERNETES trainings on the fake cluster (issue 16): one Indexed Job
of N pods and a headless Service; the pods rendezvous through the cluster DNS
(simulated by the fake's kubelet), run a stdlib all-reduce and report as one
training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import json

import pytest

import trainerkit
from trainerkit.info import TrainingStatus
from trainerkit.trainers.kubernetes.manifest import ANNOTATION_COMPLETION_INDEX, LABEL_TRAINING_ID
from tests import multinode_modules as mn
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

TIMEOUT = 60


def _pods_by_index(kube, training_id):
    pods = [p for p in kube.pods(NAMESPACE).values() if p["metadata"]["labels"].get(LABEL_TRAINING_ID) == training_id]
    return {int(p["metadata"]["annotations"][ANNOTATION_COMPLETION_INDEX]): p for p in pods}


def _running_processes(kube, training_id):
    return [name for name, pod in kube.pods(NAMESPACE).items()
            if pod["metadata"]["labels"].get(LABEL_TRAINING_ID) == training_id and kube.pod_pid(NAMESPACE, name)]


def test_three_nodes_of_two_processes_all_reduce_and_rank0_saves_the_sum(trainer, kube, models_dir):
    future = trainer.train(mn.AllReduceSum, 5, save_path=models_dir / "sum",
                           resources=trainerkit.Resources(nodes=3, procs_per_node=2))
    model = future.result(timeout=TIMEOUT)
    assert (model.total, model.rank, model.world_size) == (105, 0, 6)  # 5 * (1 + ... + 6), from rank 0
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED and info.ranks == 6
    assert info.progress is not None and (info.progress.step, info.progress.total) == (1, 6)  # rank 0's report
    job = kube.jobs(NAMESPACE)[future.id]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3 and job["spec"]["backoffLimit"] == 0
    service = kube.services(NAMESPACE)[future.id]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert [ref["uid"] for ref in service["metadata"]["ownerReferences"]] == [job["metadata"]["uid"]]
    pods = _pods_by_index(kube, future.id)
    assert sorted(pods) == [0, 1, 2]
    assert {i: (p["spec"]["hostname"], p["spec"]["subdomain"]) for i, p in pods.items()} == {
        i: (f"{future.id}-{i}", future.id) for i in range(3)}

    # Each rank's own output; rank 0's by default.
    assert [line for line in future.logs() if line.startswith("rank ")] == [
        "rank 0 of 6 on node 0 contributes 5", "rank 0 total 105"]
    assert [line for line in future.logs(rank=3) if line.startswith("rank ")] == [
        "rank 3 of 6 on node 1 contributes 20", "rank 3 total 105"]
    assert not any("rank 2 " in line for line in future.logs(rank=3))
    with pytest.raises(ValueError, match="no rank 6"):
        list(future.logs(rank=6))
    # A fresh manager reads the world size from the cluster.
    # delete: the Job, its pods, its Service and its ConfigMap all go.
    trainer.delete_training(future.id)
    wait_until(lambda: not kube.jobs(NAMESPACE) and not kube.pods(NAMESPACE) and not kube.services(NAMESPACE)
               and not kube.configmaps(NAMESPACE), what="everything of the training to go")


def _wait_for_ranks(gate_dir, world_size):
    wait_until(lambda: all((gate_dir / mn.entered(rank)).exists() and (gate_dir / mn.entered(rank)).read_text()
                           for rank in range(world_size)), timeout=TIMEOUT, what="every rank to take part")
    return [int((gate_dir / mn.entered(rank)).read_text()) for rank in range(world_size)]


def test_killing_one_pods_process_fails_the_training_naming_its_node_and_stops_every_rank(
        trainer, kube, models_dir, gate_dir):
    future = trainer.train(mn.AllReduceSum, 1, str(gate_dir), save_path=models_dir / "killed",
                           resources={"nodes": 3, "procs_per_node": 2})
    pids = _wait_for_ranks(gate_dir, 6)
    assert future.get_info().status is TrainingStatus.RUNNING
    victim = _pods_by_index(kube, future.id)[1]["metadata"]["name"]
    os.killpg(kube.pod_pid(NAMESPACE, victim), signal.SIGKILL)  # the pod's main process: node 1 dies
    assert future.wait(TIMEOUT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0].message.startswith(f"node 1 (pod {victim}): ")
    assert "exited with code 137" in info.errors[0].message and "killed by signal 9" in info.errors[0].message
    assert "a node failed, so every node of the multi-node training was stopped" in info.errors[-1].message
    wait_until(lambda: not _running_processes(kube, future.id), what="no pod process to be left")
    wait_until(lambda: not any(mn.alive(pid) for pid in pids), what="every rank process to end")
    assert not (models_dir / "killed").exists()


def test_a_rank_killed_inside_a_pod_fails_its_node_naming_the_rank(trainer, kube, models_dir, gate_dir):
    future = trainer.train(mn.AllReduceSum, 1, str(gate_dir), save_path=models_dir / "rank-killed",
                           resources={"nodes": 2, "procs_per_node": 2})
    pids = _wait_for_ranks(gate_dir, 4)
    os.kill(pids[3], signal.SIGKILL)
    assert future.wait(TIMEOUT)
    first = future.get_info().errors[0]
    assert first.message.startswith("node 1 (pod ") and f"rank 3 (pid {pids[3]}) was killed by SIGKILL (9)" in first.message
    wait_until(lambda: not any(mn.alive(pid) for pid in pids), what="every rank process to end")


def test_a_failing_rank_fails_the_training_with_its_own_error_naming_its_node(trainer, kube, models_dir):
    future = trainer.train(mn.AllReduceSum, 1, fail_rank=1, save_path=models_dir / "bad", resources={"nodes": 2})
    with pytest.raises(ValueError, match=r"^node 1 \(pod [^)]*\): rank 1 has no data\n"):
        future.result(timeout=TIMEOUT)
    errors = future.get_info().errors
    assert errors[0].type == "ValueError" and "raise ValueError" in errors[0].traceback
    assert "PodFailurePolicy" in errors[-1].message
    wait_until(lambda: not _running_processes(kube, future.id), what="rank 0 to be stopped")


@pytest.mark.parametrize("retries", [0, 2], ids=["alone", "as-a-group"])
def test_cancel_stops_every_pod_and_rank(make_trainer, kube, models_dir, gate_dir, retries):
    trainer = make_trainer(max_retries=retries)
    future = trainer.train(mn.AllReduceSum, 1, str(gate_dir), save_path=models_dir / "canceled",
                           resources={"nodes": 3, "procs_per_node": 2})
    pids = _wait_for_ranks(gate_dir, 6)
    assert future.cancel() is True
    assert future.get_info().status is TrainingStatus.CANCELED
    wait_until(lambda: not _pods_by_index(kube, future.id), timeout=TIMEOUT, what="every pod to go")
    wait_until(lambda: not any(mn.alive(pid) for pid in pids), what="every rank process to end")
    assert not (models_dir / "canceled").exists()


def test_queued_while_not_every_pod_runs_then_a_fresh_process_reattaches_and_lists_it(
        trainer, kube, make_manager, models_dir, gate_dir, cluster_config, tmp_path):
    kube.set_unschedulable(True)
    future = trainer.train(mn.AllReduceSum, 2, str(gate_dir), save_path=models_dir / "later",
                           resources={"nodes": 2, "procs_per_node": 2})
    # The pod is Pending at first, then the scheduler says why: wait for the why.
    info = wait_until(lambda: "cannot be scheduled" in (i := future.get_info()).detail and i,
                      what="the queued detail")
    assert info.status is TrainingStatus.QUEUED and info.detail.startswith("0 of 2 pods running; node 0: pod ")
    kube.set_unschedulable(False)
    wait_until(lambda: future.get_info().status is TrainingStatus.RUNNING, timeout=TIMEOUT, what="RUNNING")

    again = make_manager().get_model_future(future.id)
    assert again.get_info().status is TrainingStatus.RUNNING and again.get_info().ranks == 4
    config_file = tmp_path / "trainerkit.yaml"
    config_file.write_text(json.dumps(cluster_config()))
    listing = subprocess.run(
        [sys.executable, "-c",
         "import sys, trainerkit\n"
         "manager = trainerkit.TrainerManager.from_yaml(sys.argv[1])\n"
         "for info in manager.get_trainer(sys.argv[2]).list_trainings():\n"
         "    print(info.id, info.status.value, info.ranks)\n"
         "manager.close(wait=False)\n",
         str(config_file), TRAINER],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == [future.id, "RUNNING", "4"]
    assert [line for line in again.logs(rank=1) if line.startswith("rank ")] == ["rank 1 of 4 on node 0 contributes 4"]
    (gate_dir / mn.RELEASE).touch()
    assert again.result(timeout=TIMEOUT).total == 2 * (1 + 2 + 3 + 4)


def test_slow_dns_shows_in_the_detail_and_the_ranks_wait_for_it(trainer, kube, models_dir):
    kube.set_dns_delay(600)
    future = trainer.train(mn.AllReduceSum, 1, save_path=models_dir / "slow", resources={"nodes": 2})
    info = wait_until(lambda: "does not resolve yet" in (i := future.get_info()).detail and i, timeout=TIMEOUT,
                      what="the rendezvous wait in the detail")
    assert info.status is TrainingStatus.RUNNING
    assert f"waiting for rank 0 at {future.id}-0.{future.id}:29500" in info.detail
    kube.set_dns_delay(0)
    assert future.result(timeout=TIMEOUT).total == 3
    assert future.get_info().detail == ""


def test_rendezvous_timeout_fails_the_training_saying_what_was_missing(make_trainer, kube, models_dir):
    kube.set_dns_delay(600)
    trainer = make_trainer(rendezvous_timeout="1s")
    future = trainer.train(mn.AllReduceSum, 1, save_path=models_dir / "never", resources={"nodes": 2})
    assert future.wait(TIMEOUT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    message = info.errors[0].message
    assert message.startswith("node ") and f"waited 1 s for rank 0 at {future.id}-0.{future.id}:29500" in message
    assert "its name does not resolve yet" in message and "rendezvous_timeout" in message


# -- retries: the whole group restarts ----------------------------------------------------


def _restarted(gate_dir, world_size, before):
    """Every rank has entered again, in new processes (the group restarted)."""
    def entered_anew():
        pids = []
        for rank in range(world_size):
            path = gate_dir / mn.entered(rank)
            text = path.read_text() if path.exists() else ""
            if not text or int(text) == before[rank]:
                return None
            pids.append(int(text))
        return pids
    return wait_until(entered_anew, timeout=TIMEOUT, what="every rank to start again")


def _kill_node(kube, training_id, index):
    victim = next(name for name, pod in kube.pods(NAMESPACE).items()
                  if pod["metadata"]["labels"].get(LABEL_TRAINING_ID) == training_id
                  and pod["metadata"]["annotations"][ANNOTATION_COMPLETION_INDEX] == str(index)
                  and kube.pod_pid(NAMESPACE, name))
    os.killpg(kube.pod_pid(NAMESPACE, victim), signal.SIGKILL)  # the pod's main process dies
    return victim


@pytest.mark.parametrize("node", [1, 0], ids=["a-member-node", "node-0"])
def test_with_retries_a_killed_node_restarts_every_rank_and_they_resume_from_the_checkpoint(
        make_trainer, kube, models_dir, gate_dir, node):
    trainer = make_trainer(max_retries=1, checkpoint_dir=str(models_dir / "ckpt"))
    assert trainer.capabilities()["retries"]
    future = trainer.train(mn.AllReduceSum, 1, str(gate_dir), checkpoint=True, save_path=models_dir / "sum",
                           resources={"nodes": 2, "procs_per_node": 2})
    first = _wait_for_ranks(gate_dir, 4)
    victim = _kill_node(kube, future.id, node)
    again = _restarted(gate_dir, 4, first)
    assert not any(mn.alive(pid) for pid in first), "a rank of the first attempt still runs"
    info = future.get_info()
    assert info.status is TrainingStatus.RUNNING and info.attempt == 2 and info.detail.startswith("attempt 2 of 2")
    (gate_dir / mn.RELEASE).write_text("")
    model = future.result(timeout=TIMEOUT)
    assert (model.total, model.rank, model.starts) == (10, 0, 2)  # resumed from the first start's checkpoint
    assert future.get_info().attempt == 2
    phases = {name: pod["status"]["phase"] for name, pod in kube.pods(NAMESPACE).items()
              if pod["metadata"]["labels"].get(LABEL_TRAINING_ID) == future.id}
    assert len(phases) == 3 and phases.pop(victim) == "Failed"  # the Job controller replaced it
    assert set(phases.values()) == {"Succeeded"}
    wait_until(lambda: not any(mn.alive(pid) for pid in again), what="every rank process to end")


def test_with_retries_a_rank_that_crashes_inside_a_pod_restarts_the_group(make_trainer, kube, models_dir):
    trainer = make_trainer(max_retries=1, checkpoint_dir=str(models_dir / "ckpt"))
    marker = models_dir / "crashed"
    future = trainer.train(mn.AllReduceSum, 2, checkpoint=True, crash_rank=3, crash_marker=str(marker),
                           save_path=models_dir / "sum", resources={"nodes": 2, "procs_per_node": 2})
    model = future.result(timeout=TIMEOUT)
    assert marker.exists() and (model.total, model.starts) == (20, 2)
    assert future.get_info().attempt == 2
    failed = [pod for pod in kube.pods(NAMESPACE).values()
              if pod["metadata"]["labels"].get(LABEL_TRAINING_ID) == future.id and pod["status"]["phase"] == "Failed"]
    assert len(failed) == 1  # node 1's pod, which the crash ended with exit code 5; node 0's was kept
    (status,) = failed[0]["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 5
    assert failed[0]["metadata"]["annotations"][ANNOTATION_COMPLETION_INDEX] == "1"


def test_with_retries_a_python_exception_still_fails_at_once(make_trainer, kube, models_dir):
    trainer = make_trainer(max_retries=2)
    future = trainer.train(mn.AllReduceSum, 1, fail_rank=3, save_path=models_dir / "bad",
                           resources={"nodes": 2, "procs_per_node": 2})
    with pytest.raises(ValueError, match=r"^node 1 \(pod [^)]*\): rank 3: rank 3 has no data\n"):
        future.result(timeout=TIMEOUT)
    info = future.get_info()
    assert info.attempt == 1 and "PodFailurePolicy" in info.errors[-1].message
    wait_until(lambda: not _running_processes(kube, future.id), what="every pod process to end")


def test_when_the_retries_are_used_up_the_training_fails_naming_the_last_node(make_trainer, kube, models_dir, gate_dir):
    trainer = make_trainer(max_retries=1)
    future = trainer.train(mn.AllReduceSum, 1, str(gate_dir), save_path=models_dir / "twice",
                           resources={"nodes": 2})
    first = _wait_for_ranks(gate_dir, 2)
    _kill_node(kube, future.id, 1)
    _restarted(gate_dir, 2, first)
    victim = _kill_node(kube, future.id, 1)
    assert future.wait(TIMEOUT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED and info.attempt == 2
    assert info.errors[0].message.startswith(f"node 1 (pod {victim}): ")
    assert "nodes failed 2 times, and max_retries (1) allows 1 restarts of the group" in info.errors[-1].message
    wait_until(lambda: not _running_processes(kube, future.id), what="no pod process to be left")
    assert not (models_dir / "twice").exists()


def test_one_node_of_three_processes_runs_in_one_pod(trainer, kube, models_dir):
    future = trainer.train(mn.AllReduceSum, 2, save_path=models_dir / "one-node",
                           resources={"procs_per_node": 3})
    assert future.result(timeout=TIMEOUT).total == 2 * (1 + 2 + 3)
    assert future.get_info().ranks == 3 and kube.services(NAMESPACE) == {}
    assert [line for line in future.logs(rank=2) if line.startswith("rank ")] == [
        "rank 2 of 3 on node 0 contributes 6", "rank 2 total 12"]


def test_the_shipped_role_allows_what_a_multi_node_training_does(trainer, kube, models_dir):
    import yaml

    from tests.conftest import REPO_ROOT
    from tests.trainers.kubernetes.test_kubernetes_lifecycle import _ROUTE, _VERBS

    future = trainer.train(mn.AllReduceSum, 1, save_path=models_dir / "rbac", resources={"nodes": 2})
    future.result(timeout=TIMEOUT)
    list(future.logs(rank=1))
    trainer.delete_training(future.id)
    with open(os.path.join(REPO_ROOT, "config", "rbac-kubernetes-trainer.yaml")) as handle:
        role = next(d for d in yaml.safe_load_all(handle) if d and d["kind"] == "Role"
                    and d["metadata"]["name"] == "trainerkit-trainer")
    allowed = {(verb, resource) for rule in role["rules"] for verb in rule["verbs"] for resource in rule["resources"]}
    used = set()
    for method, path in kube.requests.snapshot():
        match = _ROUTE.match(path)
        if match:
            resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
            used.add((_VERBS.get(method) or ("get" if match["name"] else "list"), resource))
    assert ("create", "services") in used
    assert used - {("patch", "pods")} <= allowed | {("watch", r) for _, r in allowed}, used - allowed


def test_an_external_id_without_room_for_the_pods_hostnames_is_refused_before_anything_exists(trainer, kube, models_dir):
    long_id = "x" * (63 - len("cluster--"))  # a whole 63-character id: fine for one node
    with pytest.raises(ValueError, match="choose an external_training_id 2 characters shorter"):
        trainer.train(mn.AllReduceSum, 1, save_path=models_dir / "long", external_training_id=long_id,
                      resources={"nodes": 2})
    assert trainer.list_trainings() == [] and kube.jobs(NAMESPACE) == {} and kube.configmaps(NAMESPACE) == {}


def test_a_foreign_service_with_the_trainings_name_is_refused_and_nothing_is_left(trainer, kube, models_dir):
    import kubernetes

    core = kubernetes.client.CoreV1Api(kube.api_client())
    core.create_namespaced_service(NAMESPACE, {"apiVersion": "v1", "kind": "Service",
                                               "metadata": {"name": "cluster--taken"},
                                               "spec": {"clusterIP": "None", "selector": {"app": "other"}}})
    with pytest.raises(trainerkit.TrainingExistsError, match="a Service named cluster--taken already exists"):
        trainer.train(mn.AllReduceSum, 1, save_path=models_dir / "taken", external_training_id="taken",
                      resources={"nodes": 2})
    wait_until(lambda: not kube.jobs(NAMESPACE) and not kube.configmaps(NAMESPACE), what="the submission undone")
    assert list(kube.services(NAMESPACE)) == ["cluster--taken"]  # not ours: left alone
    assert trainer.list_trainings() == []
