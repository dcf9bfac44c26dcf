"""The end of the interpreter and LOCAL trainings: a normal exit waits for them,
as concurrent.futures.ThreadPoolExecutor does, unless told not to."""

from __future__ import annotations

import json
import subprocess
import sys

import trainerkit
from trainerkit import TrainingStatus

SCRIPT = """
import json, sys, trainerkit
config = json.loads(sys.argv[1])
manager = trainerkit.TrainerManager.from_dict(
    {"model_management": {"trainers": {"default": {"type": "LOCAL", "config": config}}}}
)
from tests.training_modules import SlowEpochs
future = manager.get_trainer("default").train(SlowEpochs, epochs=5, delay=0.1)
print(future.id, flush=True)
# the script ends here, without waiting for the training
"""


def _run_script(config):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0], result.stderr


def _status_of(training_id):
    with trainerkit.TrainerManager() as manager:
        return manager.get_model_future(training_id).get_info()


def test_a_script_that_ends_without_waiting_still_completes_its_local_trainings():
    training_id, _ = _run_script({})
    info = _status_of(training_id)
    assert info.status is TrainingStatus.COMPLETED, info
    assert info.progress.step == 5  # it ran to its end


def test_wait_at_exit_false_lets_the_script_end_and_the_training_is_recorded_interrupted():
    training_id, _ = _run_script({"wait_at_exit": False})
    info = _status_of(training_id)
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0].type == "trainerkit.errors.TrainingInterruptedError"
