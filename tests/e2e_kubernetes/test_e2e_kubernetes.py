"""The KUBERNETES end-to-end cases against a real cluster (see conftest.py)."""

from __future__ import annotations

import functools
import os

import pytest

from tests import kubernetes_modules as pods
from tests import waiting
from tests.e2e_kubernetes.conftest import TRAINER, external_id
from tests.training_modules import Boom, Failing, JsonModel
from trainerkit.errors import TrainingCanceledError
from trainerkit.info import TrainingStatus

TIMEOUT = 300  # pulling an image or scheduling a pod on a real cluster takes a while
pytestmark = pytest.mark.timeout(2 * TIMEOUT)


wait_until = functools.partial(waiting.wait_until, timeout=TIMEOUT, interval=0.5)


def test_train_and_load(trainer, shared_dir):
    future = trainer.train(JsonModel, 42, save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id())
    assert future.result(timeout=TIMEOUT).value == 42
    assert future.get_info().status is TrainingStatus.COMPLETED


def test_iris_example(trainer, shared_dir):
    from trainerkit.examples.iris import IrisClassifier

    future = trainer.train(IrisClassifier, epochs=50, save_path=shared_dir, save_with_id=True,
                           external_training_id=external_id())
    assert isinstance(future.result(timeout=TIMEOUT), IrisClassifier)
    assert future.get_info().progress.step == 50


def test_training_error_brings_back_the_traceback(trainer, shared_dir):
    future = trainer.train(Failing, "bad rows", save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id())
    with pytest.raises(Boom, match="bad rows") as caught:
        future.result(timeout=TIMEOUT)
    assert "raise Boom(message)" in caught.value.remote_traceback


def test_cancel_is_visible_to_a_restarted_caller(trainer, make_manager, shared_dir):
    future = trainer.train(pods.FileGated, shared_dir, save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id())
    wait_until(lambda: os.path.exists(os.path.join(shared_dir, pods.ENTERED)), what="the pod to start training")
    assert future.cancel()
    with pytest.raises(TrainingCanceledError):
        future.result(timeout=5)
    assert make_manager().get_model_future(future.id).get_info().status is TrainingStatus.CANCELED


def test_reattach_and_list_from_a_fresh_manager(trainer, make_manager, shared_dir):
    future = trainer.train(pods.FileGated, shared_dir, steps=2, save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id(), tags=["e2e"])
    wait_until(lambda: os.path.exists(os.path.join(shared_dir, pods.ENTERED)), what="the pod to start training")
    fresh = make_manager().get_trainer(TRAINER)
    assert future.id in [info.id for info in fresh.list_trainings(tags="e2e")]
    reattached = fresh.get_model_future(future.id)
    assert reattached.get_info().status is TrainingStatus.RUNNING
    open(os.path.join(shared_dir, pods.RELEASE), "w").close()
    assert isinstance(reattached.result(timeout=TIMEOUT), pods.FileGated)


def test_logs(trainer, shared_dir):
    future = trainer.train(pods.Chatty, lines=3, save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id())
    lines = list(future.logs(follow=True))
    assert [line for line in lines if line.startswith("epoch ")] == ["epoch 0", "epoch 1", "epoch 2"]
    assert future.wait(TIMEOUT)


def test_unschedulable_training_says_why(make_manager, shared_dir):
    trainer = make_manager(node_selector={"trainerkit.io/e2e-no-such-node": "true"}).get_trainer(TRAINER)
    future = trainer.train(JsonModel, 1, save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id())
    detail = wait_until(lambda: "cannot be scheduled" in future.get_info().detail and future.get_info().detail,
                        what="the scheduler's verdict")
    assert future.get_info().status is TrainingStatus.QUEUED and "node" in detail
    assert future.cancel()


def test_missing_image_says_why(make_manager, shared_dir):
    trainer = make_manager(image="registry.invalid/trainerkit-does-not-exist:0", image_pull_policy="Always") \
        .get_trainer(TRAINER)
    future = trainer.train(JsonModel, 1, save_path=os.path.join(shared_dir, "model"),
                           external_training_id=external_id())
    wait_until(lambda: any(reason in future.get_info().detail for reason in ("ErrImagePull", "ImagePullBackOff")),
               what="the image pull error")
    assert future.cancel()


def test_two_nodes_of_two_processes_all_reduce(trainer, shared_dir):
    # Issue 16: one Indexed Job of 2 pods and a headless Service; the ranks meet through
    # the cluster DNS name of rank 0's pod and rank 0 saves the sum.
    import trainerkit
    from tests import multinode_modules as mn

    future = trainer.train(mn.AllReduceSum, 3, save_path=os.path.join(shared_dir, "sum"),
                           external_training_id=external_id(),
                           resources=trainerkit.Resources(nodes=2, procs_per_node=2))
    model = future.result(timeout=TIMEOUT)
    assert (model.total, model.rank, model.world_size) == (3 * (1 + 2 + 3 + 4), 0, 4)
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED and info.ranks == 4
    assert "rank 3 total 30" in list(future.logs(rank=3))


def test_two_nodes_with_retries_restart_together_after_a_rank_crashes(make_manager, shared_dir):
    # Issue 16: rank 1 (node 1) kills itself once; node 1's pod is replaced, both nodes'
    # ranks start again together, and rank 0 resumes from its checkpoint.
    from tests import multinode_modules as mn

    trainer = make_manager(max_retries=1, checkpoint_dir=os.path.join(shared_dir, "ckpt")).get_trainer(TRAINER)
    future = trainer.train(mn.AllReduceSum, 1, checkpoint=True, crash_rank=1,
                           crash_marker=os.path.join(shared_dir, "crashed"),
                           save_path=os.path.join(shared_dir, "sum"), external_training_id=external_id(),
                           resources={"nodes": 2})
    model = future.result(timeout=TIMEOUT)
    assert (model.total, model.starts) == (3, 2)
    assert future.get_info().attempt == 2
