"""The SUBPROCESS trainer: each training in its own OS process, results through
save_path, crashes that become ERRORED, cancel by signal, per-training logs,
and arguments checked at the process boundary."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import sys

import pytest

import trainerkit
from trainerkit import TrainingStatus
from trainerkit.errors import (
    ConfigError,
    TrainingCanceledError,
    TrainingCrashedError,
    TrainingStateError,
)
from trainerkit.trainers.subprocess.rundir import ARGUMENTS_FILE
from tests.conftest import REPO_ROOT
from tests.subprocess_fixtures import GRACE, WAIT, gate, gone, pids_in, release, wait_until
from tests.subprocess_modules import (
    Adder,
    Boom,
    Chatty,
    CleansUp,
    Crasher,
    Echo,
    Failing,
    Gated,
    Imported,
    SavesSlowly,
    Sleeper,
)


@pytest.fixture
def build():
    """Build SUBPROCESS trainers named "iso"; cancel what is left and shut them down after."""
    managers = []

    def make(**config):
        config.setdefault("cancel_grace_period", GRACE)
        manager = trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"iso": {"type": "SUBPROCESS", "config": config}}}}
        )
        managers.append(manager)
        return manager.get_trainer("iso")

    yield make
    for manager in managers:
        trainer = manager.get_trainer("iso")
        for info in trainer.list_trainings(status=["QUEUED", "RUNNING"]):
            trainer.get_model_future(info.id).cancel()
        manager.close(wait=True)


@pytest.fixture
def models(tmp_path):
    return str(tmp_path / "models")


# -- results ---------------------------------------------------------------------------------


def test_result_is_the_model_saved_by_the_child_and_loaded_here(build, models):
    trainer = build()
    future = trainer.train(Adder, 2, b=3, save_path=models, save_with_id=True, model_name="sum")
    model = future.result(timeout=WAIT)
    assert isinstance(model, Adder) and model.total == 5
    assert future.save_path == os.path.join(models, future.id, "sum")
    assert trainerkit.load(future.save_path).total == 5
    info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED
    assert info.submission_time <= info.start_time <= info.completion_time
    assert info.module == "tests.subprocess_modules:Adder"


def test_train_without_save_path_is_refused_at_once_and_leaves_no_record(build):
    trainer = build()
    with pytest.raises(ValueError, match="save_path") as raised:
        trainer.train(Adder, 1)
    assert "SUBPROCESS" in str(raised.value) and "another process" in str(raised.value)
    assert trainer.list_trainings() == []


def test_the_childs_exception_comes_back_with_its_type_message_and_traceback(build, models):
    trainer = build()
    future = trainer.train(Failing, "labels are missing", save_path=models, save_with_id=True)
    with pytest.raises(Boom, match="labels are missing") as raised:
        future.result(timeout=WAIT)
    assert 'raise Boom(message)' in raised.value.remote_traceback
    error = future.get_info().errors[0]
    assert error.type == "tests.subprocess_modules.Boom"
    assert error.message == "labels are missing"
    assert "subprocess_modules.py" in error.traceback
    assert not os.path.exists(future.save_path)


def test_progress_reported_in_the_child_shows_in_get_info_while_it_runs(build, models, tmp_path):
    trainer = build()
    pid_file, release_file = gate(tmp_path)
    future = trainer.train(Gated, pid_file, release_file, steps=3, save_path=models, save_with_id=True)

    def third_step():
        progress = future.get_info().progress
        return progress is not None and progress.step == 3

    wait_until(third_step, "the third progress report")
    info = future.get_info()
    assert info.status is TrainingStatus.RUNNING
    assert info.progress.total == 3 and info.progress.metrics == {"loss": pytest.approx(1 / 3)}
    assert info.progress.fraction == 1.0
    release(release_file)
    future.result(timeout=WAIT)
    assert future.get_info().progress.step == 3


def test_each_training_runs_in_a_fresh_process_of_its_own(build, models, tmp_path):
    trainer = build(max_workers=2)
    pids = []
    for name in ("one", "two"):
        pid_file, release_file = gate(tmp_path, name)
        release(release_file)
        trainer.train(Gated, pid_file, release_file, save_path=models, save_with_id=True).result(timeout=WAIT)
        pids.extend(pids_in(pid_file))
    assert len(set(pids)) == 2 and os.getpid() not in pids


# -- failures ----------------------------------------------------------------------------------


def crash(build, models, how):
    trainer = build()
    future = trainer.train(Crasher, how, save_path=models, save_with_id=True)
    with pytest.raises(Exception) as raised:
        future.result(timeout=WAIT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    return raised.value, info


def test_os_exit_in_the_child_becomes_errored_naming_the_exit_code(build, models):
    error, info = crash(build, models, "exit3")
    assert isinstance(error, TrainingCrashedError)
    assert "exited with code 3" in str(error)
    assert info.errors[0].type == "trainerkit.errors.TrainingCrashedError"


def test_a_child_killed_by_sigkill_becomes_errored_naming_the_signal_and_the_oom_killer(build, models):
    error, _ = crash(build, models, "sigkill")
    assert isinstance(error, TrainingCrashedError)
    assert "SIGKILL (9)" in str(error) and "out-of-memory" in str(error)


def test_a_segfault_becomes_errored_naming_sigsegv_with_the_fault_report(build, models):
    error, _ = crash(build, models, "sigsegv")
    assert isinstance(error, TrainingCrashedError)
    assert "SIGSEGV (11)" in str(error)
    assert "about to crash" in error.remote_traceback  # the end of the training's log
    assert "Segmentation fault" in error.remote_traceback  # faulthandler's report


def test_a_memory_blow_up_ends_errored_and_the_caller_carries_on(build, models):
    error, info = crash(build, models, "memory")
    assert isinstance(error, MemoryError)
    assert info.errors[0].type == "MemoryError"
    assert build().train(Adder, 1, save_path=models, save_with_id=True).result(timeout=WAIT).total == 2


def test_a_module_the_child_cannot_import_becomes_errored_with_the_import_error(
    build, models, tmp_path, monkeypatch
):
    package = tmp_path / "vanishing"
    package.mkdir()
    (package / "vanishing_models.py").write_text(
        "import trainerkit\n\nclass Model(trainerkit.ModuleBase):\n"
        "    @classmethod\n    def train(cls):\n        return cls()\n"
    )
    monkeypatch.syspath_prepend(str(package))
    from vanishing_models import Model  # type: ignore[import-not-found]

    shutil.rmtree(package)  # gone before the training process imports it
    trainer = build()
    try:
        future = trainer.train(Model, save_path=models, save_with_id=True)
    finally:
        del sys.modules["vanishing_models"]
    with pytest.raises(ImportError, match="cannot import the module class 'vanishing_models:Model'"):
        future.result(timeout=WAIT)
    assert future.get_info().errors[0].type == "ImportError"


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_stops_a_training_asleep_in_a_c_call_and_its_grandchildren(build, models, tmp_path):
    trainer = build()
    pid_file = str(tmp_path / "sleeper.pids")
    future = trainer.train(Sleeper, pid_file, save_path=models, save_with_id=True)
    child, grandchild = pids_in(pid_file)
    assert future.cancel() is True
    with pytest.raises(TrainingCanceledError):
        future.result(timeout=WAIT)
    assert future.get_info().status is TrainingStatus.CANCELED
    wait_until(lambda: gone(child) and gone(grandchild), "the training and its child to be gone")
    assert not os.path.exists(future.save_path)


def test_cancel_kills_a_training_that_ignores_sigterm_once_the_grace_period_is_over(build, models, tmp_path):
    trainer = build()
    pid_file = str(tmp_path / "stubborn.pids")
    future = trainer.train(Sleeper, pid_file, ignore_term=True, save_path=models, save_with_id=True)
    child, grandchild = pids_in(pid_file)
    assert future.cancel() is True
    assert future.wait(WAIT)
    info = future.get_info()
    assert info.status is TrainingStatus.CANCELED
    assert "killed after the grace period" in info.errors[0].message
    wait_until(lambda: gone(child) and gone(grandchild), "the training and its child to be gone")


def test_cancel_lets_the_training_run_its_finally_blocks(build, models, tmp_path):
    trainer = build(cancel_grace_period="30s")
    pid_file, cleanup_file = str(tmp_path / "cleans.pid"), str(tmp_path / "cleaned")
    future = trainer.train(CleansUp, pid_file, cleanup_file, save_path=models, save_with_id=True)
    (child,) = pids_in(pid_file)
    future.cancel()
    assert future.wait(WAIT)
    assert future.get_info().status is TrainingStatus.CANCELED
    with open(cleanup_file) as handle:
        assert handle.read() == "cleaned up"
    wait_until(lambda: gone(child), "the training process to be gone")


def test_a_cancel_while_the_model_is_being_saved_comes_too_late(build, models, tmp_path):
    trainer = build(cancel_grace_period="30s")
    pid_file, release_file = gate(tmp_path)
    future = trainer.train(SavesSlowly, pid_file, release_file, save_path=models, save_with_id=True)
    pids_in(pid_file)  # train() has returned and save() has begun
    future.cancel()
    release(release_file)
    model = future.result(timeout=WAIT)
    assert isinstance(model, SavesSlowly)
    assert future.get_info().status is TrainingStatus.COMPLETED


def test_trainings_beyond_max_workers_wait_queued_and_a_canceled_one_never_starts(build, models, tmp_path):
    trainer = build(max_workers=1)
    pid_file, release_file = gate(tmp_path)
    first = trainer.train(Gated, pid_file, release_file, save_path=models, save_with_id=True)
    pids_in(pid_file)
    second = trainer.train(Adder, 1, save_path=models, save_with_id=True)
    third = trainer.train(Adder, 2, save_path=models, save_with_id=True)
    assert second.get_info().status is TrainingStatus.QUEUED
    assert third.get_info().status is TrainingStatus.QUEUED
    assert second.cancel() is True
    assert second.get_info().status is TrainingStatus.CANCELED
    release(release_file)
    assert third.result(timeout=WAIT).total == 3
    first.result(timeout=WAIT)
    info = second.get_info()
    assert info.status is TrainingStatus.CANCELED and info.start_time is None
    assert list(second.logs()) == []
    assert not os.path.exists(second.save_path)


def test_a_queued_training_canceled_through_another_trainer_never_starts(build, models, tmp_path):
    trainer = build(max_workers=1)
    pid_file, release_file = gate(tmp_path)
    first = trainer.train(Gated, pid_file, release_file, save_path=models, save_with_id=True)
    pids_in(pid_file)
    queued = trainer.train(Adder, 1, save_path=models, save_with_id=True)
    elsewhere = build()  # another trainer object on the same records, as another process has
    assert elsewhere.get_model_future(queued.id).cancel() is True
    assert queued.wait(WAIT)  # the submitting trainer drops it from its queue
    release(release_file)
    first.result(timeout=WAIT)
    info = queued.get_info()
    assert info.status is TrainingStatus.CANCELED and info.start_time is None
    assert not os.path.exists(queued.save_path)


def test_cancel_of_a_finished_training_returns_false(build, models):
    trainer = build()
    future = trainer.train(Adder, 1, save_path=models, save_with_id=True)
    future.result(timeout=WAIT)
    assert future.cancel() is False
    assert future.get_info().status is TrainingStatus.COMPLETED


# -- logs --------------------------------------------------------------------------------------


def test_logs_hold_the_stdout_and_stderr_of_each_training_in_its_own_file(build, models):
    trainer = build(max_workers=2)
    first = trainer.train(Chatty, 2, save_path=models, save_with_id=True)
    second = trainer.train(Chatty, 1, save_path=models, save_with_id=True)
    first.result(timeout=WAIT)
    second.result(timeout=WAIT)
    assert list(first.logs()) == ["out 1", "err 1", "out 2", "err 2"]
    assert list(second.logs()) == ["out 1", "err 1"]
    assert os.path.basename(trainer.log_path(first.id)) == f"{first.id}.log"


def test_logs_follow_streams_lines_until_the_training_ends(build, models):
    trainer = build()
    future = trainer.train(Chatty, 5, delay=0.05, save_path=models, save_with_id=True)
    lines = list(future.logs(follow=True))
    assert [line for line in lines if line.startswith("out")] == [f"out {n}" for n in range(1, 6)]
    assert future.done()


def test_logs_of_a_crash_end_with_the_supervisors_note(build, models):
    trainer = build()
    future = trainer.train(Crasher, "exit3", save_path=models, save_with_id=True)
    future.wait(WAIT)
    lines = list(future.logs())
    assert lines[0] == "about to crash"
    assert "exited with code 3" in lines[-1] and lines[-1].startswith("[trainerkit]")


# -- what crosses the process boundary ------------------------------------------------------------


def test_a_lambda_argument_is_refused_at_submission_naming_the_argument(build, models):
    trainer = build()
    with pytest.raises(TypeError, match=r"argument 'value' of Echo.train \(function\)") as raised:
        trainer.train(Echo, value=lambda: 1, save_path=models, save_with_id=True)
    assert "training's process" in str(raised.value)
    assert trainer.list_trainings() == []


def test_a_socket_argument_is_refused_at_submission_naming_the_argument(build, models):
    trainer = build()
    with socket.socket() as sock:
        with pytest.raises(TypeError, match=r"argument 'b' of Adder.train \(socket\).*cannot pickle"):
            trainer.train(Adder, 1, sock, save_path=models, save_with_id=True)
    assert trainer.list_trainings() == []


def test_a_module_class_defined_in_main_or_in_a_function_is_refused(build, models):
    trainer = build()

    class Local(trainerkit.ModuleBase):
        @classmethod
        def train(cls):
            return cls()

    with pytest.raises(TypeError, match="inside a function"):
        trainer.train(Local, save_path=models, save_with_id=True)
    from_main = type("FromMain", (Local,), {"__module__": "__main__"})
    with pytest.raises(TypeError, match="FromMain is defined in __main__"):
        trainer.train(from_main, save_path=models, save_with_id=True)
    assert trainer.list_trainings() == []


def test_an_argument_referring_to_main_is_refused_at_submission(build, models, monkeypatch):
    trainer = build()

    def helper():
        return 1

    monkeypatch.setattr(helper, "__module__", "__main__")
    monkeypatch.setattr(helper, "__qualname__", "helper")
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "helper", helper, raising=False)
    with pytest.raises(TypeError, match="argument 'value'.*defined in __main__"):
        trainer.train(Echo, value=[helper], save_path=models, save_with_id=True)


def test_large_arguments_travel_through_a_file_that_is_removed_once_read(build, models):
    trainer = build()
    payload = os.urandom(200_000)
    future = trainer.train(Echo, value=payload, save_path=models, save_with_id=True)
    assert future.result(timeout=WAIT).value == payload
    run_dir = os.path.join(os.environ["TRAINERKIT_STATE_DIR"], "runs", future.id)
    assert os.path.isdir(run_dir) and not os.path.exists(os.path.join(run_dir, ARGUMENTS_FILE))


def test_the_child_trains_in_the_configured_cwd_with_the_callers_and_the_configs_environment(
    build, models, tmp_path, monkeypatch
):
    workdir = tmp_path / "work"
    workdir.mkdir()
    trainer = build(cwd=str(workdir), env={"TRAINERKIT_TEST_VALUE": "from config"})
    trainer.train(Adder, 0, save_path=models, save_with_id=True).result(timeout=WAIT)  # warm workers up
    monkeypatch.setenv("TRAINERKIT_TEST_LATE", "set after the workers started")
    model = trainer.train(Echo, value=3, save_path=models, save_with_id=True).result(timeout=WAIT)
    assert model.cwd == str(workdir) and model.env_value == "from config"
    late = trainer.train(Echo, env_name="TRAINERKIT_TEST_LATE", save_path=models, save_with_id=True)
    assert late.result(timeout=WAIT).env_value == "set after the workers started"


def test_preload_modules_are_imported_before_the_training(build, models):
    trainer = build(preload=["wave"])
    future = trainer.train(Imported, ["wave", "sndhdr"], save_path=models, save_with_id=True)
    assert future.result(timeout=WAIT).imported == ["wave"]


def test_a_preload_module_that_does_not_exist_is_a_config_error_not_silently_skipped():
    with pytest.raises(trainerkit.ConfigError, match=r"config\.preload: no module named 'no_such_module_for_trainerkit_tests'"):
        trainerkit.TrainerManager.from_dict({"model_management": {"trainers": {"iso": {
            "type": "SUBPROCESS", "config": {"preload": ["wave", "no_such_module_for_trainerkit_tests"]}}}}})


def test_the_exec_start_method_trains_the_same_way(build, models):
    trainer = build(start_method="exec")
    future = trainer.train(Adder, 4, save_path=models, save_with_id=True)
    assert future.result(timeout=WAIT).total == 5


def test_futures_work_with_concurrent_futures_wait(build, models):
    trainer = build(max_workers=2)
    futures = [trainer.train(Adder, n, save_path=models, save_with_id=True) for n in range(3)]
    done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not not_done and {f.result().total for f in done} == {1, 2, 3}


# -- records and files -----------------------------------------------------------------------------


def test_delete_training_removes_its_log_and_run_files(build, models):
    trainer = build()
    future = trainer.train(Chatty, 1, save_path=models, save_with_id=True)
    future.result(timeout=WAIT)
    log_path = trainer.log_path(future.id)
    run_dir = os.path.join(os.environ["TRAINERKIT_STATE_DIR"], "runs", future.id)
    assert os.path.exists(log_path) and os.path.isdir(run_dir)
    trainer.delete_training(future.id, delete_model=True)
    assert not os.path.exists(log_path) and not os.path.exists(run_dir)
    assert not os.path.exists(future.save_path)


def test_a_running_training_cannot_be_deleted(build, models, tmp_path):
    trainer = build()
    pid_file, release_file = gate(tmp_path)
    future = trainer.train(Gated, pid_file, release_file, save_path=models, save_with_id=True)
    pids_in(pid_file)
    with pytest.raises(TrainingStateError, match="cancel it first"):
        trainer.delete_training(future.id)
    release(release_file)
    future.result(timeout=WAIT)


def test_records_live_in_the_state_dirs_sqlite_file(build, models):
    trainer = build()
    future = trainer.train(Adder, 1, save_path=models, save_with_id=True)
    future.result(timeout=WAIT)
    database = os.path.join(os.environ["TRAINERKIT_STATE_DIR"], "trainings.sqlite3")
    assert os.path.exists(database)
    other = trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"iso": {"type": "SUBPROCESS"}}}}
    )
    try:
        seen = other.get_model_future(future.id).get_info()
        assert seen.status is TrainingStatus.COMPLETED and seen.save_path == future.save_path
    finally:
        other.close()


def test_shutdown_waits_for_queued_and_running_trainings(build, models):
    trainer = build(max_workers=1)
    futures = [trainer.train(Adder, n, save_path=models, save_with_id=True) for n in range(3)]
    trainer.shutdown(wait=True)
    assert all(f.get_info().status is TrainingStatus.COMPLETED for f in futures)


# -- config -----------------------------------------------------------------------------------------


def config_error(config):
    with pytest.raises(ConfigError) as raised:
        trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"iso": {"type": "SUBPROCESS", "config": config}}}}
        )
    return str(raised.value)


def test_an_unknown_config_key_names_its_path_and_the_close_match():
    message = config_error({"max_worker": 2})
    assert "model_management.trainers.iso.config.max_worker" in message
    assert "did you mean 'max_workers'" in message


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"start_method": "fork"}, "config.start_method: 'fork' is not accepted; use one of 'prestarted', 'exec'"),
        ({"max_workers": 0}, "config.max_workers: must be >= 1"),
        ({"ready_workers": "two"}, "config.ready_workers: expected an integer"),
        ({"env": {"A=B": "x"}}, "config.env: ['A=B'] are not environment variable names"),
        ({"env": ["A"]}, "config.env: expected a mapping"),
        ({"preload": ["torch nn"]}, "config.preload: ['torch nn'] are not module names"),
        ({"cancel_grace_period": "soon"}, "config.cancel_grace_period: 'soon' is not a duration"),
        ({"detach": "yes"}, "config.detach: expected a boolean"),
        ({"state_dir": ":memory:"}, "':memory:' cannot hold SUBPROCESS records"),
        ({"cwd": ""}, "config.cwd: '' is not a usable directory path"),
    ],
)
def test_bad_config_values_name_the_key_and_what_is_accepted(config, expected):
    assert expected in config_error(config)


def test_a_state_dir_in_memory_from_the_environment_is_refused_when_the_trainer_is_built(monkeypatch):
    monkeypatch.setenv("TRAINERKIT_STATE_DIR", ":memory:")
    manager = trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"iso": {"type": "SUBPROCESS"}}}}
    )
    with pytest.raises(ConfigError, match=r"needs a state directory, but \$TRAINERKIT_STATE_DIR is ':memory:'"):
        manager.get_trainer("iso")


def test_a_missing_cwd_is_refused_at_train_time(build, models, tmp_path):
    trainer = build(cwd=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        trainer.train(Adder, 1, save_path=models, save_with_id=True)
    assert trainer.list_trainings() == []


def test_a_worker_that_cannot_start_makes_the_training_errored_with_its_reason(build, models):
    trainer = build(env={"PYTHONHOME": "/nonexistent"})  # no interpreter can start with this
    future = trainer.train(Adder, 1, save_path=models, save_with_id=True)
    with pytest.raises(TrainingCrashedError) as raised:
        future.result(timeout=WAIT)
    assert "exited with code 1 before reporting an outcome" in str(raised.value)
    assert "Fatal Python error" in raised.value.remote_traceback


def subprocess_keys_table():
    from trainerkit.schema import describe_schema
    from trainerkit.trainers.subprocess import SubprocessTrainerConfig

    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {t} | `{d}` | {doc} |" for k, t, d, doc in describe_schema(SubprocessTrainerConfig)]
    return "\n".join(rows) + "\n"


def test_the_config_keys_table_in_the_docs_matches_the_code():
    path = os.path.join(REPO_ROOT, "docs", "subprocess.md")
    with open(path, encoding="utf-8") as handle:
        doc = handle.read()
    begin, end = "<!-- BEGIN generated: SUBPROCESS keys -->\n", "<!-- END generated: SUBPROCESS keys -->"
    table = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert table == subprocess_keys_table(), (
        "docs/subprocess.md is out of date: paste tests.trainers.subprocess.test_subprocess_trainer.subprocess_keys_table() into it"
    )


def test_a_reattached_future_completes_by_itself_for_concurrent_futures_wait(build, models, tmp_path):
    trainer = build()
    pid_file, release_file = gate(tmp_path)
    future = trainer.train(Gated, pid_file, release_file, value=5, save_path=models, save_with_id=True)
    pids_in(pid_file)  # it runs
    # Another process's view of it: nobody calls wait(), result() or get_info() on it.
    reattached = build().get_model_future(future.id)
    assert reattached is not future
    release(release_file)
    done, _ = concurrent.futures.wait([reattached], timeout=WAIT)
    assert reattached in done
    assert next(concurrent.futures.as_completed([reattached], timeout=WAIT)) is reattached
    assert reattached.result(timeout=WAIT) is not None


def test_a_child_the_training_forks_never_writes_its_buffered_lines_again(build, models):
    from tests.subprocess_modules import Forks

    future = build().train(Forks, save_path=models, save_with_id=True)
    future.result(timeout=WAIT)
    assert list(future.logs()) == ["before fork", "in the child", "after fork"]
