"""The worker side: training specs, run_training, reporters, and the
``python -m trainerkit.runner --spec`` command line (the code path a
Kubernetes pod runs too)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import trainerkit
from trainerkit import TrainingStatus
from trainerkit.runner import (
    CancelSignal,
    FileReporter,
    SpecError,
    TrainingSpec,
    inline_arguments,
    load_arguments,
    pickle_arguments,
    Outcome,
    run_training,
)
from trainerkit.runner.__main__ import EXIT_COMPLETED, EXIT_ERRORED, EXIT_USAGE
from tests.conftest import REPO_ROOT
from tests.subprocess_modules import Adder, Point


class Recorder:
    """A reporter that keeps what it is told."""

    def __init__(self):
        self.events = []

    def progress(self, report):
        self.events.append(("progress", report))

    def finishing(self):
        self.events.append(("finishing", None))

    def outcome(self, outcome):
        self.events.append(("outcome", outcome))


class SelfCanceling(trainerkit.ModuleBase):
    @classmethod
    def train(cls):
        trainerkit.report_progress(step=1, total=2)
        os.kill(os.getpid(), signal.SIGTERM)  # as the supervisor's cancel would
        raise AssertionError("the cancel did not interrupt the training")


def spec_for(tmp_path, module="tests.subprocess_modules:Adder", args=(1,), kwargs=None, **extra):
    return TrainingSpec(
        training_id="iso--abcdefghijkl",
        module=module,
        arguments={"json": {"args": list(args), "kwargs": kwargs or {}}},
        save_path=str(tmp_path / "model"),
        **extra,
    )


def test_run_training_trains_saves_and_reports_completed(tmp_path):
    recorder = Recorder()
    outcome = run_training(spec_for(tmp_path, args=(2,), kwargs={"b": 5}), recorder, apply_settings=False)
    assert outcome.status is TrainingStatus.COMPLETED and outcome.errors == ()
    assert [kind for kind, _ in recorder.events] == ["finishing", "outcome"]
    assert trainerkit.load(str(tmp_path / "model")).total == 7


def test_run_training_names_the_module_path_it_cannot_import(tmp_path):
    outcome = run_training(spec_for(tmp_path, module="tests.no_such_module:Model"), Recorder())
    assert outcome.status is TrainingStatus.ERRORED
    (error,) = outcome.errors
    assert error.type == "ImportError"
    assert "cannot import the module class 'tests.no_such_module:Model'" in error.message
    assert not os.path.exists(tmp_path / "model")


def test_run_training_reports_the_trainings_exception_with_its_traceback(tmp_path):
    spec = spec_for(tmp_path, module="tests.subprocess_modules:Failing", args=("no rows",))
    outcome = run_training(spec, Recorder())
    (error,) = outcome.errors
    assert (error.type, error.message) == ("tests.subprocess_modules.Boom", "no rows")
    assert "raise Boom(message)" in error.traceback


def test_run_training_refuses_arguments_that_do_not_fit_the_signature(tmp_path):
    outcome = run_training(spec_for(tmp_path, args=(), kwargs={"c": 1}), Recorder())
    assert outcome.errors[0].type == "TypeError" and "Adder.train" in outcome.errors[0].message


def test_sigterm_while_training_makes_the_outcome_canceled_with_the_last_progress(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    cancel = CancelSignal().install()
    try:
        recorder = Recorder()
        outcome = run_training(spec_for(tmp_path, module="tests.runner.test_runner:SelfCanceling", args=()), recorder, cancel)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outcome.status is TrainingStatus.CANCELED
    assert outcome.progress.step == 1
    assert not os.path.exists(tmp_path / "model")


def test_pickled_arguments_round_trip_inline(tmp_path):
    payload = pickle_arguments(Adder, (Point(1, 2),), {"b": [3]})
    args, kwargs = load_arguments(inline_arguments(payload))
    assert (args[0].x, args[0].y, kwargs) == (1, 2, {"b": [3]})


def test_pickled_arguments_in_a_file_are_removed_after_loading_when_asked(tmp_path):
    path = tmp_path / "arguments.pkl"
    path.write_bytes(pickle_arguments(Adder, (1,), {}))
    assert load_arguments({"pickle_file": str(path), "remove_after_load": True}) == ((1,), {})
    assert not path.exists()


def test_a_spec_round_trips_through_json(tmp_path):
    spec = spec_for(tmp_path, sys_path=("/a", "/b"), environ={"X": "1"}, detach=True, cancel_grace_period=2.5)
    assert TrainingSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    ranks = spec_for(tmp_path, procs_per_node=2, rank_devices=(("0", "1"), ("2", "3")))
    assert TrainingSpec.from_dict(json.loads(json.dumps(ranks.to_dict()))) == ranks


TORCHRUN = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_only_rank_0_saves_the_model_and_reports_progress(tmp_path):
    for rank in ("1", "0"):
        recorder = Recorder()
        environ = {**os.environ, **TORCHRUN, "RANK": rank, "LOCAL_RANK": rank}
        spec = spec_for(tmp_path, module="tests.subprocess_modules:RanksGated", args=(str(tmp_path),), environ=environ)
        (tmp_path / "release").touch()
        outcome = run_training(spec, recorder, apply_settings=False)
        assert outcome.status is TrainingStatus.COMPLETED
        progress = [report for kind, report in recorder.events if kind == "progress"]
        if rank == "1":
            assert progress == [] and not (tmp_path / "model").exists()
        else:
            assert [report.step for report in progress] == [1] and trainerkit.load(str(tmp_path / "model")).rank == 0


def test_malformed_torchrun_variables_error_the_training_naming_the_variable(tmp_path):
    recorder = Recorder()
    environ = {**TORCHRUN, "RANK": "first"}
    outcome = run_training(spec_for(tmp_path, environ=environ), recorder, apply_settings=False)
    assert outcome.status is TrainingStatus.ERRORED
    assert "RANK='first' is not an integer" in outcome.errors[0].message
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"module": ""}, "spec key 'module' must be a non-empty string"),
        ({"arguments": {"yaml": "x"}}, "spec key 'arguments' must be"),
        ({"cancel_grace_period": -1}, "spec key 'cancel_grace_period' must be seconds >= 0"),
        ({"detach": "yes"}, "spec key 'detach' must be true or false"),
        ({"sys_path": "/a"}, "spec key 'sys_path' must be a list of strings"),
        ({"colour": "red"}, "unknown spec keys ['colour']"),
        ({"version": 99}, "spec version 99 is not supported"),
        ({"procs_per_node": 0}, "spec key 'procs_per_node' must be an integer >= 1"),
        ({"procs_per_node": 2, "rank_devices": [["0"]]}, "spec key 'rank_devices' must be a list of 2 lists"),
        ({"rank_devices": [[0]]}, "spec key 'rank_devices' must be a list of 1 lists"),
    ],
)
def test_a_malformed_spec_names_the_key(tmp_path, change, expected):
    data = spec_for(tmp_path).to_dict() | change
    with pytest.raises(SpecError) as raised:
        TrainingSpec.from_dict(data)
    assert expected in str(raised.value)


def test_the_file_reporter_shortens_the_outcome_to_fit_max_bytes(tmp_path):
    path = tmp_path / "termination-log"
    error = trainerkit.ErrorDetail("ValueError", "bad", "frame\n" * 5000)
    outcome = Outcome(TrainingStatus.ERRORED, trainerkit.info.utcnow(), (error,))
    FileReporter(str(path), max_bytes=4096).outcome(outcome)
    assert len(path.read_bytes()) <= 4096
    read_back = Outcome.from_dict(json.loads(path.read_text()))
    assert read_back.errors[0].message == "bad" and read_back.errors[0].traceback.endswith("frame\n")


def worker_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "trainerkit.runner", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def test_the_command_line_runs_one_training_from_a_spec_file(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec_for(tmp_path, args=(4,)).to_dict()))
    outcome_file, progress_file = tmp_path / "outcome.json", tmp_path / "progress.json"
    result = worker_cli("--spec", str(spec_file), "--outcome-file", str(outcome_file),
                        "--progress-file", str(progress_file))
    assert result.returncode == EXIT_COMPLETED, result.stderr
    assert Outcome.from_dict(json.loads(outcome_file.read_text())).status is TrainingStatus.COMPLETED
    assert trainerkit.load(str(tmp_path / "model")).total == 5


def test_the_command_line_exits_1_when_the_training_errors_and_2_for_a_bad_spec(tmp_path):
    outcome_file = tmp_path / "outcome.json"
    spec = spec_for(tmp_path, module="tests.subprocess_modules:Failing", args=())
    result = worker_cli("--spec", json.dumps(spec.to_dict()), "--outcome-file", str(outcome_file))
    assert result.returncode == EXIT_ERRORED
    assert "tests.subprocess_modules.Boom: bad data" in result.stderr
    assert json.loads(outcome_file.read_text())["errors"][0]["message"] == "bad data"
    bad = worker_cli("--spec", '{"module": "x"}')
    assert bad.returncode == EXIT_USAGE and "spec key 'arguments'" in bad.stderr
