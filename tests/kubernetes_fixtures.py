"""Fixtures for the KUBERNETES trainer tests against the fake API server.

``kube`` is a fake cluster (namespaces ``default`` and ``ml``) whose pods run
as local processes; ``cluster_config(**overrides)`` is a manager config with
one KUBERNETES trainer ``cluster`` in namespace ``ml`` that mounts ``models``
(a directory under tmp_path, a hostPath volume: pods see the same
filesystem).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import pytest

from tests import waiting
from tests.kube_fake.fixtures import (
    fake_kube_factory,  # noqa: F401 - fixture used below
)

TRAINER = "cluster"
NAMESPACE = "ml"


wait_until = functools.partial(waiting.wait_until, timeout=20.0, interval=0.02)


@pytest.fixture
def kube(fake_kube_factory):  # noqa: F811 - the imported fixture
    return fake_kube_factory(namespaces=("default", NAMESPACE))


@pytest.fixture
def models_dir(tmp_path):
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def gate_dir(tmp_path):
    path = tmp_path / "gate"
    path.mkdir()
    return path


@pytest.fixture
def cluster_config(kube, models_dir):
    # Pods reach the fake API server (to publish progress) through the service
    # account the fake's kubelet mounts for them, as in a real cluster.
    def build(**overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "kubeconfig": kube.kubeconfig_path,
            "namespace": NAMESPACE,
            "image": "registry.example.com/trainerkit-test:1",
            "progress_interval": 0.05,
            "volumes": [{"name": "models", "hostPath": {"path": str(models_dir)}}],
            "volume_mounts": [{"name": "models", "mountPath": str(models_dir)}],
        }
        config.update(overrides)
        return {"model_management": {"trainers": {TRAINER: {"type": "KUBERNETES", "config": config}}}}

    return build


@pytest.fixture
def make_manager(cluster_config):
    """``make_manager(**config overrides)``: a TrainerManager for the fake cluster,
    closed at teardown before the cluster stops (its watches end quietly)."""
    import trainerkit

    managers = []

    def build(**overrides: Any) -> "trainerkit.TrainerManager":
        manager = trainerkit.TrainerManager.from_dict(cluster_config(**overrides))
        managers.append(manager)
        return manager

    yield build
    for manager in managers:
        manager.close(wait=False)


@pytest.fixture
def make_trainer(make_manager):
    """``make_trainer(**config overrides)``: the KUBERNETES trainer of a new manager."""
    return lambda **overrides: make_manager(**overrides).get_trainer(TRAINER)


@pytest.fixture
def trainer(make_trainer):
    return make_trainer()
