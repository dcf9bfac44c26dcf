"""SUBPROCESS trainings and the process that submitted them, with real separate
processes: detached trainings outlive it and are watched, canceled and loaded
from another process; attached ones stop when it dies and hold up its exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import trainerkit
from trainerkit import TrainingStatus
from trainerkit.owner import owner_is_alive, parse_owner, process_owner, signal_owner
from trainerkit.trainers.subprocess.rundir import RunDirectory
from tests.conftest import REPO_ROOT
from tests.subprocess_fixtures import GRACE, WAIT, gate, gone, pids_in, release, wait_until


def config(**values):
    values.setdefault("cancel_grace_period", GRACE)
    return {"model_management": {"trainers": {"iso": {"type": "SUBPROCESS", "config": values}}}}


def submitter(trainer_config, module, kwargs, save_path, mode):
    """Start ``python -m tests.subprocess_submitter``; return it and the training id."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.subprocess_submitter", json.dumps(trainer_config), module,
         json.dumps(kwargs), save_path, mode],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    training_id = process.stdout.readline().strip()
    assert training_id.startswith("iso--"), process.communicate()[1]
    return process, training_id


@pytest.fixture
def observer():
    """A manager of this process with the same config, as "any other process" would build it."""
    managers = []

    def make(trainer_config):
        manager = trainerkit.TrainerManager.from_dict(trainer_config)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        trainer = manager.get_trainer("iso")
        for info in trainer.list_trainings(status=["QUEUED", "RUNNING"]):
            trainer.get_model_future(info.id).cancel()
        manager.close()


def gated(tmp_path, **extra):
    pid_file, release_file = gate(tmp_path)
    return pid_file, release_file, {"pid_file": pid_file, "release_file": release_file, **extra}


def test_a_detached_training_outlives_its_submitter_and_another_process_watches_and_loads_it(
    tmp_path, observer
):
    pid_file, release_file, kwargs = gated(tmp_path, steps=3, value=42)
    process, training_id = submitter(config(detach=True), "tests.subprocess_modules:Gated", kwargs,
                                     str(tmp_path / "models"), "exit")
    assert process.wait(WAIT) == 0  # the submitter is gone...
    (child,) = pids_in(pid_file)
    assert not gone(child)  # ...and its training still runs
    future = observer(config(detach=True)).get_model_future(training_id)

    def reported():
        info = future.get_info()
        return info.status is TrainingStatus.RUNNING and info.progress and info.progress.step == 3

    wait_until(reported, "the detached training's progress")
    release(release_file)
    assert future.result(timeout=WAIT).value == 42
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED and info.start_time <= info.completion_time
    assert [line for line in future.logs() if "detached, it goes on" in line]  # the worker's note


def test_another_process_cancels_a_detached_training_after_its_submitter_exited(tmp_path, observer):
    pid_file = str(tmp_path / "sleeper.pids")
    process, training_id = submitter(config(detach=True), "tests.subprocess_modules:Sleeper",
                                     {"pid_file": pid_file}, str(tmp_path / "models"), "exit")
    assert process.wait(WAIT) == 0
    child, grandchild = pids_in(pid_file)
    future = observer(config(detach=True)).get_model_future(training_id)
    wait_until(lambda: future.get_info().status is TrainingStatus.RUNNING, "the training to run")
    assert future.cancel() is True
    assert future.wait(WAIT)
    assert future.get_info().status is TrainingStatus.CANCELED
    wait_until(lambda: gone(child) and gone(grandchild), "the training and its child to be gone")
    with pytest.raises(trainerkit.TrainingCanceledError):
        future.result()


def test_an_attached_training_stops_when_its_submitter_is_killed_and_is_recorded_interrupted(
    tmp_path, observer
):
    pid_file, release_file, kwargs = gated(tmp_path)
    process, training_id = submitter(config(), "tests.subprocess_modules:Gated", kwargs,
                                     str(tmp_path / "models"), "block")
    (child,) = pids_in(pid_file)
    process.kill()
    process.wait(WAIT)
    wait_until(lambda: gone(child), "the training to be stopped")
    future = observer(config()).get_model_future(training_id)
    assert future.wait(WAIT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0].type == "trainerkit.errors.TrainingInterruptedError"
    assert "detach: true" in info.errors[0].message


def test_the_normal_exit_of_a_submitter_waits_for_its_attached_training(tmp_path, observer):
    pid_file, release_file, kwargs = gated(tmp_path, value=7)
    process, training_id = submitter(config(), "tests.subprocess_modules:Gated", kwargs,
                                     str(tmp_path / "models"), "exit")
    pids_in(pid_file)
    wait_until(lambda: "waiting for the trainings" in process.stderr.readline(), "the exit to wait")
    assert process.poll() is None
    release(release_file)
    assert process.wait(WAIT) == 0
    future = observer(config()).get_model_future(training_id)
    assert future.get_info().status is TrainingStatus.COMPLETED
    assert future.result().value == 7


def test_shutdown_without_wait_lets_attached_trainings_outlive_the_process(tmp_path, observer):
    pid_file, release_file, kwargs = gated(tmp_path, value=9)
    process, training_id = submitter(config(), "tests.subprocess_modules:Gated", kwargs,
                                     str(tmp_path / "models"), "release")
    assert process.wait(WAIT) == 0
    (child,) = pids_in(pid_file)
    assert not gone(child)
    future = observer(config()).get_model_future(training_id)
    release(release_file)
    assert future.result(timeout=WAIT).value == 9


def test_cancel_never_signals_a_process_that_took_over_the_workers_pid(tmp_path, observer):
    pid_file, release_file, kwargs = gated(tmp_path)
    process, training_id = submitter(config(detach=True), "tests.subprocess_modules:Gated", kwargs,
                                     str(tmp_path / "models"), "exit")
    assert process.wait(WAIT) == 0
    (child,) = pids_in(pid_file)
    run_dir = RunDirectory(os.path.join(os.environ["TRAINERKIT_STATE_DIR"], "runs", training_id))
    record = run_dir.read_worker()
    host, supervisor_pid, started = parse_owner(record.supervisor)
    os.kill(supervisor_pid, signal.SIGKILL)  # the worker dies without a word...
    wait_until(lambda: gone(supervisor_pid) and gone(child), "the worker and its training to die")
    impostor = subprocess.Popen(["sleep", "60"])  # ...and a stranger gets "its" pid
    try:
        forged = record.to_dict() | {"supervisor": f"{host}|{impostor.pid}|{started}"}
        run_dir.write_worker(type(record).from_dict(forged))
        future = observer(config(detach=True)).get_model_future(training_id)
        assert future.cancel() is False
        assert impostor.poll() is None
        info = future.get_info()
        assert info.status is TrainingStatus.ERRORED
        assert info.errors[0].type == "trainerkit.errors.TrainingCrashedError"
        assert "ended without reporting an outcome" in info.errors[0].message
    finally:
        impostor.kill()
        impostor.wait()


def test_signal_owner_checks_the_start_time_of_the_process():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        owner = process_owner(sleeper.pid)
        host, pid, started = parse_owner(owner)
        assert signal_owner(f"{host}|{pid}|{int(started) + 1}", signal.SIGTERM) is False
        assert sleeper.poll() is None and owner_is_alive(owner) is True
        assert signal_owner(owner, signal.SIGTERM) is True
        assert sleeper.wait(WAIT) == -signal.SIGTERM
        assert signal_owner(owner, signal.SIGTERM) is False
    finally:
        sleeper.kill()
        sleeper.wait()


def _rank_pids(directory, ranks):
    return [pids_in(os.path.join(directory, f"rank{rank}.pid"))[0] for rank in range(ranks)]


def test_a_detached_multi_process_training_is_watched_read_and_canceled_from_another_process(tmp_path, observer):
    trainer_config = config(detach=True, default_resources={"procs_per_node": 2})
    process, training_id = submitter(trainer_config, "tests.subprocess_modules:RanksGated",
                                     {"directory": str(tmp_path)}, str(tmp_path / "models"), "exit")
    assert process.wait(WAIT) == 0
    pids = _rank_pids(str(tmp_path), 2)
    future = observer(trainer_config).get_model_future(training_id)
    assert future.get_info().status is TrainingStatus.RUNNING and future.get_info().ranks == 2
    assert future.cancel()
    assert future.wait(WAIT) and future.get_info().status is TrainingStatus.CANCELED
    assert all(gone(pid) for pid in pids)
    assert "[trainerkit] cancel requested" in "\n".join(future.logs())


def test_an_attached_multi_process_training_stops_every_rank_when_its_submitter_is_killed(tmp_path, observer):
    trainer_config = config(default_resources={"procs_per_node": 2})
    process, training_id = submitter(trainer_config, "tests.subprocess_modules:RanksGated",
                                     {"directory": str(tmp_path)}, str(tmp_path / "models"), "block")
    pids = _rank_pids(str(tmp_path), 2)
    process.kill()
    process.wait(WAIT)
    wait_until(lambda: all(gone(pid) for pid in pids), "every rank to be stopped")
    future = observer(trainer_config).get_model_future(training_id)
    assert future.wait(WAIT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0].type == "trainerkit.errors.TrainingInterruptedError"


def test_a_detached_training_whose_submitter_exited_keeps_its_start_time_and_devices(tmp_path, observer):
    # The submitter exits as soon as the training is handed over, before the worker's
    # "running" event reaches it: the run directory must still say when it started and
    # on which GPUs, for any process that records the outcome.
    trainer_config = config(detach=True, gpus=["3", "5"],
                            default_resources={"procs_per_node": 2, "gpus_per_proc": 1})
    process, training_id = submitter(trainer_config, "tests.subprocess_modules:Adder", {"a": 1},
                                     str(tmp_path / "models"), "exit")
    assert process.wait(WAIT) == 0
    future = observer(trainer_config).get_model_future(training_id)
    assert future.wait(WAIT)
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED, info.errors
    assert info.start_time is not None and info.submission_time <= info.start_time <= info.completion_time
    assert info.devices == ("3", "5") and info.ranks == 2


def test_a_submitter_that_got_its_result_exits_without_a_waiting_warning(tmp_path):
    # result() returns when the outcome is recorded; the worker's wrap-up after it is
    # no training to wait for, so the exit must not warn about one (3 tries: it is a race).
    trainer_config = config(default_resources={"procs_per_node": 2})
    for attempt in range(3):
        process, _ = submitter(trainer_config, "tests.subprocess_modules:Adder", {"a": attempt},
                               str(tmp_path / "models"), "result")
        _, stderr = process.communicate(timeout=WAIT)
        assert process.returncode == 0, stderr
        assert "waiting for the trainings" not in stderr
