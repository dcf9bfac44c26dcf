"""The backend conformance suite (trainerkit.testing) run against every built-in
trainer type: LOCAL, SUBPROCESS, and KUBERNETES against the fake cluster."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any, Iterator

import pytest

from trainerkit.testing import BackendConformance
from tests.kubernetes_fixtures import (  # noqa: F401 - fixtures
    TRAINER,
    cluster_config,
    fake_kube_factory,
    kube,
    models_dir,
)


class TestLocalConformance(BackendConformance):
    @pytest.fixture
    def trainer_config(self, tmp_path) -> dict[str, Any]:
        return {"type": "LOCAL", "config": {"max_workers": 1, "state_dir": str(tmp_path / "state")}}


class TestSubprocessConformance(BackendConformance):
    needs_save_path = True

    @pytest.fixture
    def trainer_config(self, tmp_path) -> dict[str, Any]:
        return {
            "type": "SUBPROCESS",
            "config": {
                "max_workers": 1,
                "state_dir": str(tmp_path / "state"),
                "cancel_grace_period": "300ms",
                "max_retries": 1,  # so that the retries tests run too
            },
        }


class TestKubernetesConformance(BackendConformance):
    needs_save_path = True
    bounded_concurrency = False  # the cluster's scheduler decides; see hold_queue below

    @pytest.fixture
    def trainer_config(self, cluster_config, models_dir) -> dict[str, Any]:  # noqa: F811 - the fixture
        # Checkpoints on the models volume, so that the checkpoints tests run too.
        # ... and max_retries, so that the retries tests run too.
        config = cluster_config(checkpoint_dir=str(models_dir / "checkpoints"), max_retries=1)
        return config["model_management"]["trainers"][TRAINER]

    @pytest.fixture
    def save_dir(self, models_dir) -> str:  # noqa: F811 - the fixture
        return str(models_dir)  # mounted into the pods

    @pytest.fixture
    def storage_url(self, models_dir) -> str:  # noqa: F811 - the fixture
        return f"file://{models_dir}/remote"  # a file:// URL must be on a volume of the pods too

    @pytest.fixture
    def hold_queue(self, kube):  # noqa: F811 - the fixture
        @contextlib.contextmanager
        def hold(trainer) -> Iterator[None]:
            kube.set_unschedulable(True)  # pods stay Pending: the training is QUEUED
            try:
                yield
            finally:
                kube.set_unschedulable(False)

        return hold


def test_import_trainerkit_imports_neither_pytest_nor_the_suite(python_executable):
    # Workers and pods import trainerkit.testing.modules; their images need not have pytest.
    code = (
        "import sys, trainerkit, trainerkit.testing.modules\n"
        "loaded = sorted(n for n in ('pytest', 'trainerkit.testing.conformance') if n in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([python_executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
