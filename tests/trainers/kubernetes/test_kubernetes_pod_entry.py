"""The pod's entry point on its own: exit status, termination message, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from trainerkit.info import TrainingStatus
from trainerkit.runner import Outcome
from trainerkit.runner import TrainingSpec
from tests import kubernetes_modules as pods
from tests.kubernetes_fixtures import wait_until

from tests.conftest import REPO_ROOT  # noqa: E402
ENTRY = [sys.executable, "-m", "trainerkit.trainers.kubernetes.pod_entry"]


@pytest.fixture
def run_pod(tmp_path):
    """Run the entry point like a pod would; return (process, termination message path)."""

    def start(module: str, *, args=(), kwargs=None, spec_override=None, wait=True):
        spec = TrainingSpec(
            training_id="cluster--pod-entry",
            module=module,
            arguments={"json": {"args": list(args), "kwargs": kwargs or {}}},
            save_path=str(tmp_path / "model"),
        ).to_dict()
        spec.update(spec_override or {})
        spec_file = tmp_path / "training.json"
        spec_file.write_text(json.dumps(spec))
        message = tmp_path / "termination-log"
        env = {**os.environ, "TRAINERKIT_TERMINATION_MESSAGE_PATH": str(message), "TRAINERKIT_IMAGE": "img:7"}
        for name in ("TRAINERKIT_POD_NAME", "TRAINERKIT_POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
            env.pop(name, None)
        process = subprocess.Popen(
            ENTRY + [str(spec_file)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        if wait:
            process.output = process.communicate(timeout=60)[0]
        return process, message

    return start


def outcome(message_path) -> Outcome:
    return Outcome.from_dict(json.loads(message_path.read_text()))


def test_completed_training_exits_0_and_reports_its_outcome(run_pod, tmp_path):
    process, message = run_pod("tests.training_modules:JsonModel", args=[7])
    assert process.returncode == 0, process.output
    assert outcome(message).status is TrainingStatus.COMPLETED
    assert json.loads((tmp_path / "model" / "value.json").read_text()) == {"value": 7}


def test_training_error_exits_4_with_the_traceback_in_the_message(run_pod):
    process, message = run_pod("tests.training_modules:Failing", kwargs={"message": "bad rows"})
    assert process.returncode == 4
    (error,) = outcome(message).errors
    assert (error.type, error.message) == ("tests.training_modules.Boom", "bad rows")
    assert "raise Boom(message)" in error.traceback
    assert "raise Boom(message)" in process.output  # kubectl logs shows it too


def test_long_traceback_is_shortened_to_fit_the_kubelets_limit(run_pod):
    process, message = run_pod("tests.training_modules:Failing", kwargs={"message": "x" * 10000})
    assert process.returncode == 4
    assert len(message.read_bytes()) <= 4096
    assert outcome(message).errors[0].type == "tests.training_modules.Boom"


def test_module_missing_from_the_image_names_the_image(run_pod):
    process, message = run_pod("no_such_package.models:Model")
    assert process.returncode == 4
    error = outcome(message).errors[0]
    assert error.type == "ImportError"
    assert "must be installed in img:7" in error.message


def test_unusable_spec_exits_2_and_says_which_key(run_pod):
    process, message = run_pod("tests.training_modules:JsonModel", spec_override={"module": ""})
    assert process.returncode == 2
    assert "spec key 'module' must be a non-empty string" in outcome(message).errors[0].message


def test_sigterm_stops_the_training_without_saving(run_pod, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    process, message = run_pod(f"{pods.__name__}:FileGated", args=[str(gate)], wait=False)
    try:
        wait_until(lambda: (gate / pods.ENTERED).exists(), what="train() to start")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143
    assert outcome(message).status is TrainingStatus.CANCELED
    assert not (tmp_path / "model").exists()
