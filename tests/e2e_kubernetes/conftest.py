"""The real-cluster suite: the KUBERNETES end-to-end cases against any cluster.

Skipped (with the reason in the report header and on every test) unless
``TRAINERKIT_E2E_KUBECONFIG`` names a kubeconfig. docs/kubernetes.md shows how
to run it on kind. Settings, all environment variables:

``TRAINERKIT_E2E_KUBECONFIG``   kubeconfig of the cluster (required)
``TRAINERKIT_E2E_CONTEXT``      its context (default: the current one)
``TRAINERKIT_E2E_NAMESPACE``    namespace of the test Jobs (default ``trainerkit-e2e``; must exist)
``TRAINERKIT_E2E_IMAGE``        an image with trainerkit and this repository's ``tests`` package
                               (default ``trainerkit-e2e:dev``)
``TRAINERKIT_E2E_PULL_POLICY``  its imagePullPolicy (default ``IfNotPresent``: ``kind load docker-image``)
``TRAINERKIT_E2E_SHARED_DIR``   a directory at the same path here and in the pods (required)
``TRAINERKIT_E2E_VOLUME``       JSON volume source that mounts it in the pods (default: a
                               hostPath of the same path, as a kind extraMount provides)
``TRAINERKIT_E2E_SERVICE_ACCOUNT``  service account of the training pods (progress needs
                               ``patch pods``; default: none, progress then shows at the end)
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

import trainerkit

KUBECONFIG_ENV = "TRAINERKIT_E2E_KUBECONFIG"
TRAINER = "e2e"


def _skip_reason() -> str | None:
    if not os.environ.get(KUBECONFIG_ENV):
        return f"{KUBECONFIG_ENV} is not set: no cluster to run the real-cluster suite against"
    if not os.environ.get("TRAINERKIT_E2E_SHARED_DIR"):
        return "TRAINERKIT_E2E_SHARED_DIR is not set: the pods need a directory this process can read"
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        return "the kubernetes client is not installed: pip install 'trainerkit[kubernetes]'"
    return None


def pytest_report_header(config):
    reason = _skip_reason()
    return [f"e2e_kubernetes: skipped, {reason}" if reason else
            f"e2e_kubernetes: cluster from {os.environ[KUBECONFIG_ENV]}"]


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e_kubernetes)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def shared_dir() -> str:
    """A fresh directory under TRAINERKIT_E2E_SHARED_DIR, for one test."""
    path = os.path.join(os.environ["TRAINERKIT_E2E_SHARED_DIR"], f"test-{uuid.uuid4().hex[:10]}")
    os.makedirs(path)
    os.chmod(path, 0o777)  # pods may run as another user
    return path


def e2e_config(**overrides: Any) -> dict[str, Any]:
    shared = os.environ["TRAINERKIT_E2E_SHARED_DIR"]
    volume = json.loads(os.environ.get("TRAINERKIT_E2E_VOLUME") or "null") or {
        "hostPath": {"path": shared, "type": "Directory"}
    }
    config: dict[str, Any] = {
        "kubeconfig": os.environ[KUBECONFIG_ENV],
        "namespace": os.environ.get("TRAINERKIT_E2E_NAMESPACE", "trainerkit-e2e"),
        "image": os.environ.get("TRAINERKIT_E2E_IMAGE", "trainerkit-e2e:dev"),
        "image_pull_policy": os.environ.get("TRAINERKIT_E2E_PULL_POLICY", "IfNotPresent"),
        "volumes": [{"name": "shared", **volume}],
        "volume_mounts": [{"name": "shared", "mountPath": shared}],
        "progress_interval": 0.5,
        "ttl_after_finished": "1h",
        "termination_grace_period": 5,
    }
    if os.environ.get("TRAINERKIT_E2E_CONTEXT"):
        config["context"] = os.environ["TRAINERKIT_E2E_CONTEXT"]
    if os.environ.get("TRAINERKIT_E2E_SERVICE_ACCOUNT"):
        config["service_account"] = os.environ["TRAINERKIT_E2E_SERVICE_ACCOUNT"]
    config.update(overrides)
    return {"model_management": {"trainers": {TRAINER: {"type": "KUBERNETES", "config": config}}}}


@pytest.fixture
def make_manager():
    """``make_manager(**config overrides)``; every training a test started is
    canceled and deleted at teardown, so the namespace stays clean."""
    managers: list[trainerkit.TrainerManager] = []

    def build(**overrides: Any) -> trainerkit.TrainerManager:
        manager = trainerkit.TrainerManager.from_dict(e2e_config(**overrides))
        managers.append(manager)
        return manager

    yield build
    for manager in managers:
        trainer = manager.get_trainer(TRAINER)
        for info in trainer.list_trainings():
            if info.id.startswith(f"{TRAINER}--t{_RUN}"):
                future = trainer.get_model_future(info.id)
                future.cancel()
                future.wait(60)
                trainer.delete_training(info.id)
        manager.close(wait=False)


#: Ids of this run's trainings start with e2e--t<run>: teardown removes only those.
_RUN = uuid.uuid4().hex[:6]
_COUNTER = iter(range(10**6))


def external_id() -> str:
    """An external training id unique to this test run (teardown recognises it)."""
    return f"t{_RUN}-{next(_COUNTER)}"


@pytest.fixture
def trainer(make_manager):
    return make_manager().get_trainer(TRAINER)
