"""The LOCAL trainer: threads, a real queue, cancel, errors, progress, retention."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import functools
import os
import time

import pytest

import trainerkit
from tests import waiting
from tests.training_modules import (
    Adder,
    BadSave,
    Blocking,
    Boom,
    Failing,
    Gate,
    JsonModel,
    PurePythonLoop,
)
from trainerkit import TrainingStatus
from trainerkit.errors import (
    InvalidTrainingIdError,
    ModelNotSavedError,
    TrainingCanceledError,
    TrainingError,
    TrainingExistsError,
    TrainingNotFoundError,
    TrainingStateError,
)
from trainerkit.future import ModelTrainerFutureBase, rebuild_exception

WAIT = 30  # generous upper bound for events; tests finish far sooner


def local(manager_factory, **config):
    manager = manager_factory({"model_management": {"trainers": {"default": {"config": config}}}})
    return manager.get_trainer("default")


wait_until = functools.partial(waiting.wait_until, timeout=WAIT, interval=0.005)


def test_result_is_the_trained_model(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Adder, 2, b=3)
    assert future.result(timeout=WAIT).total == 5
    assert future.id.startswith("default--")
    assert future.done() and future.get_info().status is TrainingStatus.COMPLETED


def test_a_saved_model_lands_at_save_path_id_model_name_and_loads(manager_factory, tmp_path):
    trainer = local(manager_factory)
    future = trainer.train(JsonModel, 7, save_path=str(tmp_path), save_with_id=True, model_name="clf")
    assert future.save_path == str(tmp_path / future.id / "clf")
    assert future.result(timeout=WAIT).value == 7
    assert trainerkit.load(future.save_path).value == 7
    info = future.get_info()
    assert info.save_path == future.save_path and info.model_name == "clf"
    assert info.module == "tests.training_modules:JsonModel"


def test_info_has_all_timestamps_in_order(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Adder, 1)
    future.wait(WAIT)
    info = future.get_info()
    assert info.submission_time <= info.start_time <= info.completion_time
    assert info.submission_time.tzinfo is not None
    assert info.trainer_name == "default" and info.errors == ()


def test_trainings_beyond_max_workers_are_really_queued(manager_factory):
    trainer = local(manager_factory, max_workers=1)
    gate = Gate()
    first = trainer.train(Blocking, gate)
    assert gate.entered.wait(WAIT)
    second = trainer.train(Adder, 1)
    info = second.get_info()
    assert info.status is TrainingStatus.QUEUED and info.start_time is None
    assert first.get_info().status is TrainingStatus.RUNNING
    gate.release.set()
    assert second.result(timeout=WAIT).total == 2
    assert first.get_info().completion_time <= second.get_info().start_time


def test_two_workers_run_two_trainings_at_once(manager_factory):
    trainer = local(manager_factory, max_workers=2)
    gates = [Gate(), Gate()]
    futures = [trainer.train(Blocking, gate) for gate in gates]
    assert all(gate.entered.wait(WAIT) for gate in gates)
    assert [f.get_info().status for f in futures] == [TrainingStatus.RUNNING] * 2
    for gate in gates:
        gate.release.set()
    concurrent.futures.wait(futures, timeout=WAIT)


def test_a_queued_training_that_is_canceled_never_starts(manager_factory):
    trainer = local(manager_factory, max_workers=1)
    gate, never = Gate(), Gate()
    blocker = trainer.train(Blocking, gate)
    assert gate.entered.wait(WAIT)
    queued = trainer.train(Blocking, never)
    assert queued.cancel() is True
    assert queued.get_info().status is TrainingStatus.CANCELED
    gate.release.set()
    blocker.result(timeout=WAIT)
    trainer.train(Adder, 1).result(timeout=WAIT)  # the worker moved past the canceled one
    assert not never.entered.is_set()
    assert queued.get_info().start_time is None


def test_cancel_of_a_running_training_that_checks_for_it(manager_factory):
    trainer = local(manager_factory, interrupt_on_cancel=False)
    gate = Gate()
    future = trainer.train(Blocking, gate)
    assert gate.entered.wait(WAIT)
    assert future.cancel() is True
    assert future.wait(WAIT)
    assert future.get_info().status is TrainingStatus.CANCELED
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()


def test_cancel_interrupts_a_pure_python_loop(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    future = trainer.train(PurePythonLoop, gate)
    assert gate.entered.wait(WAIT)
    assert future.cancel() is True
    assert future.wait(WAIT), "the loop was not interrupted"
    info = future.get_info()
    assert info.status is TrainingStatus.CANCELED
    with pytest.raises(TrainingCanceledError):
        future.result()
    # The worker thread survived the interrupt and keeps serving trainings.
    assert trainer.train(Adder, 1).result(timeout=WAIT).total == 2


def test_cancel_after_completion_returns_false_and_changes_nothing(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Adder, 1)
    future.result(timeout=WAIT)
    assert future.cancel() is False
    assert future.get_info().status is TrainingStatus.COMPLETED


def test_an_error_is_captured_with_type_message_and_traceback(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Failing, "row 17 is empty")
    with pytest.raises(Boom, match="row 17 is empty"):
        future.result(timeout=WAIT)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    (error,) = info.errors
    assert error.type == "tests.training_modules.Boom"
    assert error.message == "row 17 is empty"
    assert "raise Boom(message)" in error.traceback
    assert isinstance(future.exception(), Boom)


def test_a_failed_save_is_an_error_and_leaves_no_model(manager_factory, tmp_path):
    trainer = local(manager_factory)
    future = trainer.train(BadSave, save_path=str(tmp_path / "m"))
    with pytest.raises(OSError, match="disk full"):
        future.result(timeout=WAIT)
    assert not (tmp_path / "m").exists()
    assert os.listdir(tmp_path) == []


def test_progress_is_visible_while_the_training_runs(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    future = trainer.train(Blocking, gate, steps=3)
    assert gate.entered.wait(WAIT)
    wait_until(lambda: future.get_info().progress is not None and future.get_info().progress.step == 3)
    progress = future.get_info().progress
    assert progress.total == 3 and progress.metrics == {"loss": pytest.approx(1 / 3)}
    assert progress.fraction == 1.0
    gate.release.set()
    future.result(timeout=WAIT)


def test_report_progress_outside_a_training_does_nothing():
    assert trainerkit.report_progress(step=1, total=2, loss=0.5) is None


def test_report_progress_refuses_values_that_cannot_be_recorded(manager_factory):
    class BadMetric(trainerkit.ModuleBase):
        @classmethod
        def train(cls):
            trainerkit.report_progress(step=1, weights=[1, 2])
            return cls()

    future = local(manager_factory).train(BadMetric)
    with pytest.raises(TypeError, match="weights"):
        future.result(timeout=WAIT)


def test_wrong_arguments_fail_at_submission_and_leave_no_record(manager_factory):
    trainer = local(manager_factory)
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        trainer.train(Adder)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        trainer.train(Adder, 1, epochs=3)
    assert trainer.list_trainings() == []


def test_something_that_is_not_a_module_is_refused(manager_factory):
    trainer = local(manager_factory)
    with pytest.raises(TypeError, match="lacks save, load"):
        trainer.train(type("NoSave", (), {"train": classmethod(lambda cls: cls())}))
    with pytest.raises(TypeError, match="needs a module class"):
        trainer.train(Adder(1))


def test_model_name_path_traversal_is_refused_and_nothing_is_created(manager_factory, tmp_path):
    trainer = local(manager_factory)
    with pytest.raises(ValueError, match="not a safe directory name"):
        trainer.train(Adder, 1, save_path=str(tmp_path / "models"), model_name="../../etc")
    assert not (tmp_path / "models").exists()
    assert trainer.list_trainings() == []


def test_external_training_id_replaces_the_unique_part(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Adder, 1, external_training_id="nightly-2024-05-01")
    assert future.id == "default--nightly-2024-05-01"
    future.result(timeout=WAIT)


def test_external_id_in_use_by_a_live_training_is_refused(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    running = trainer.train(Blocking, gate, external_training_id="job1")
    assert gate.entered.wait(WAIT)
    with pytest.raises(TrainingExistsError, match="RUNNING"):
        trainer.train(Adder, 1, external_training_id="job1")
    gate.release.set()
    running.result(timeout=WAIT)
    again = trainer.train(Adder, 5, external_training_id="job1")  # finished: reusable
    assert again.result(timeout=WAIT).total == 6


def test_unsafe_external_id_is_refused(manager_factory):
    with pytest.raises(InvalidTrainingIdError, match="DNS-1123"):
        local(manager_factory).train(Adder, 1, external_training_id="../x")


def test_futures_work_with_concurrent_futures_wait_and_as_completed(manager_factory):
    trainer = local(manager_factory, max_workers=2)
    futures = [trainer.train(Adder, i) for i in range(6)]
    done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert len(done) == 6 and not not_done
    totals = sorted(f.result().total for f in concurrent.futures.as_completed(futures, timeout=WAIT))
    assert totals == [1, 2, 3, 4, 5, 6]


def test_as_completed_yields_canceled_and_errored_trainings_too(manager_factory):
    trainer = local(manager_factory, max_workers=1)
    gate = Gate()
    blocker = trainer.train(Blocking, gate)
    assert gate.entered.wait(WAIT)
    queued = trainer.train(Adder, 1)
    failing = trainer.train(Failing)
    queued.cancel()
    gate.release.set()
    finished = set(concurrent.futures.as_completed([blocker, queued, failing], timeout=WAIT))
    assert finished == {blocker, queued, failing}
    assert queued.cancelled() and isinstance(failing.exception(), Boom)


def test_done_callbacks_run_once_when_the_training_ends(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    seen = []
    future = trainer.train(Blocking, gate)
    future.add_done_callback(lambda f: seen.append(f.get_info().status))
    gate.release.set()
    future.wait(WAIT)
    wait_until(lambda: seen)
    assert seen == [TrainingStatus.COMPLETED]
    late = []
    future.add_done_callback(late.append)
    assert late == [future]


def test_result_with_a_timeout_raises_timeout_error(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    future = trainer.train(Blocking, gate)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    assert future.wait(0.01) is False
    gate.release.set()
    assert future.wait(WAIT) is True


def test_get_model_future_returns_the_live_future_and_the_manager_routes_by_id(manager_factory):
    manager = manager_factory(
        {"model_management": {"trainers": {"Other_Box": {"type": "LOCAL"}}}}
    )
    trainer = manager.get_trainer("Other_Box")
    future = trainer.train(Adder, 1)
    assert manager.get_model_future(future.id) is future
    assert trainer.get_model_future(future.id) is future
    with pytest.raises(TrainingNotFoundError, match="belongs to trainer 'Other_Box'"):
        manager.get_trainer("default").get_model_future(future.id)


def test_unknown_ids_are_not_found_and_foreign_trainer_names_are_explained(manager_factory):
    manager = manager_factory()
    with pytest.raises(TrainingNotFoundError, match="no training 'default--zzzzzzzzzzzz'"):
        manager.get_model_future("default--zzzzzzzzzzzz")
    with pytest.raises(TrainingNotFoundError, match="trainer 'elsewhere', which is not in this configuration"):
        manager.get_model_future("elsewhere--abcdefabcdef")
    with pytest.raises(InvalidTrainingIdError):
        manager.get_model_future("not an id")


def test_list_trainings_filters_by_status_tags_since_and_limit(manager_factory):
    trainer = local(manager_factory)
    ok = trainer.train(Adder, 1, tags=["nightly", "eu"])
    ok.result(timeout=WAIT)
    bad = trainer.train(Failing, tags=["nightly"])
    bad.wait(WAIT)
    third = trainer.train(Adder, 2)
    third.wait(WAIT)
    assert [i.id for i in trainer.list_trainings()] == [third.id, bad.id, ok.id]
    assert [i.id for i in trainer.list_trainings(status="errored")] == [bad.id]
    assert [i.id for i in trainer.list_trainings(status=[TrainingStatus.COMPLETED])] == [third.id, ok.id]
    assert [i.id for i in trainer.list_trainings(tags=["nightly"])] == [bad.id, ok.id]
    assert [i.id for i in trainer.list_trainings(tags="eu")] == [ok.id]
    assert [i.id for i in trainer.list_trainings(limit=1)] == [third.id]
    assert trainer.list_trainings(since=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)) == []
    assert len(trainer.list_trainings(since="1h")) == 3
    with pytest.raises(ValueError, match="not a training status"):
        trainer.list_trainings(status="DONE")
    with pytest.raises(ValueError, match="positive integer"):
        trainer.list_trainings(limit=0)


def test_delete_refuses_a_running_training(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    future = trainer.train(Blocking, gate)
    assert gate.entered.wait(WAIT)
    with pytest.raises(TrainingStateError, match="cancel it first"):
        trainer.delete_training(future.id)
    gate.release.set()
    future.wait(WAIT)


def test_delete_with_model_removes_only_the_model_directory(manager_factory, tmp_path):
    trainer = local(manager_factory)
    (tmp_path / "sibling").mkdir()
    future = trainer.train(JsonModel, 1, save_path=str(tmp_path), save_with_id=True)
    future.result(timeout=WAIT)
    trainer.delete_training(future.id, delete_model=True)
    assert not os.path.exists(future.save_path)
    assert (tmp_path / "sibling").is_dir() and tmp_path.is_dir()
    with pytest.raises(TrainingNotFoundError):
        trainer.get_model_future(future.id)


def test_delete_model_refuses_a_directory_that_is_not_this_trainings_model(manager_factory, tmp_path):
    trainer = local(manager_factory)
    future = trainer.train(JsonModel, 1, save_path=str(tmp_path / "m"))
    future.result(timeout=WAIT)
    (tmp_path / "m" / ".trainerkit-model.json").write_text('{"module": "x:Y", "training_id": "other"}')
    with pytest.raises(TrainingStateError, match="refusing to delete"):
        trainer.delete_training(future.id, delete_model=True)
    assert (tmp_path / "m").is_dir()


def test_retention_purges_finished_trainings_without_a_user_call(manager_factory):
    trainer = local(manager_factory, retention_duration="100ms")
    future = trainer.train(Adder, 1)
    future.result(timeout=WAIT)

    def purged():
        try:
            trainer.get_model_future(future.id)
        except TrainingNotFoundError:
            return True
        return False

    wait_until(purged)
    assert trainer.list_trainings() == []


def test_retention_keeps_running_trainings(manager_factory):
    trainer = local(manager_factory, retention_duration="10ms")
    gate = Gate()
    future = trainer.train(Blocking, gate)
    assert gate.entered.wait(WAIT)
    assert trainer.purge_finished() == []
    assert trainer.get_model_future(future.id) is future
    gate.release.set()
    future.wait(WAIT)


def test_a_record_without_a_saved_model_says_the_model_was_not_saved(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Adder, 1)
    future.result(timeout=WAIT)
    record_only = ModelTrainerFutureBase(trainer, future.get_info())
    with pytest.raises(ModelNotSavedError, match="without a save_path"):
        record_only.result()


def test_an_exception_type_from_a_loaded_module_is_rebuilt_with_its_traceback():
    rebuilt = rebuild_exception("tests.training_modules.Boom", "bad", "Traceback ...\nBoom: bad")
    assert isinstance(rebuilt, Boom) and str(rebuilt) == "bad"
    assert rebuilt.remote_traceback.endswith("Boom: bad")


def test_an_exception_type_that_cannot_be_rebuilt_becomes_a_training_error():
    rebuilt = rebuild_exception("not_loaded_anywhere.CustomError", "bad", "tb text")
    assert isinstance(rebuilt, TrainingError)
    assert rebuilt.error_type == "not_loaded_anywhere.CustomError"
    assert rebuilt.remote_traceback == "tb text"


def test_a_builtin_exception_type_is_rebuilt():
    rebuilt = rebuild_exception("ValueError", "bad value", "tb")
    assert type(rebuilt) is ValueError and str(rebuilt) == "bad value"


def test_a_shut_down_trainer_refuses_new_trainings(manager_factory):
    trainer = local(manager_factory)
    trainer.shutdown()
    with pytest.raises(TrainingStateError, match="shut down"):
        trainer.train(Adder, 1)


def test_info_round_trips_through_json_dicts(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Failing, tags=["x"])
    future.wait(WAIT)
    info = future.get_info()
    assert trainerkit.TrainingInfo.from_dict(info.to_dict()) == dataclasses.replace(info)


class Chatty(trainerkit.ModuleBase):
    @classmethod
    def train(cls, gate=None):
        import logging

        print("epoch 1 loss 0.5")
        logging.getLogger("chatty").warning("learning rate is high")
        if gate is not None:
            gate.entered.set()
            gate.release.wait(WAIT)
        print("done")
        return cls()


def test_logs_hold_what_the_training_thread_printed_and_logged(manager_factory):
    trainer = local(manager_factory)
    future = trainer.train(Chatty)
    future.result(timeout=WAIT)
    other = trainer.train(Adder, 1)
    other.result(timeout=WAIT)
    lines = list(future.logs())
    assert lines[0] == "epoch 1 loss 0.5"
    assert "WARNING chatty: learning rate is high" in lines[1]
    assert lines[-1] == "done"
    assert list(other.logs()) == []  # prints nothing: no log


def test_logs_follow_a_running_training_until_it_ends(manager_factory):
    trainer = local(manager_factory)
    gate = Gate()
    future = trainer.train(Chatty, gate)
    assert gate.entered.wait(WAIT)
    lines = future.logs(follow=True)
    assert next(lines) == "epoch 1 loss 0.5"
    gate.release.set()
    rest = list(lines)
    assert rest[-1] == "done" and future.done()


def test_retention_lets_go_of_a_model_but_a_future_still_held_keeps_it(manager_factory):
    trainer = local(manager_factory, retention_duration="1ms")
    future = trainer.train(Adder, 4)
    future.wait(WAIT)

    def purged():
        try:
            trainer.get_model_future(future.id)
        except TrainingNotFoundError:
            return True
        return False

    wait_until(purged)
    assert future.result().total == 5


def test_result_refuses_a_model_that_another_training_saved_at_its_path(manager_factory, tmp_path):
    import shutil

    first = local(manager_factory)
    path = str(tmp_path / "shared")
    a = first.train(JsonModel, 1, save_path=path)
    a.result(timeout=WAIT)
    shutil.rmtree(path)  # A's model is gone...
    b = first.train(JsonModel, 2, save_path=path)
    assert b.result(timeout=WAIT).value == 2  # ...and B saved to the same path
    # Another process (no model in memory) asks for A's result: not B's model under A's id.
    again = local(manager_factory).get_model_future(a.id)
    with pytest.raises(ModelNotSavedError, match=f"{a.id}.*saved by training {b.id}"):
        again.result(timeout=WAIT)


def test_a_save_path_that_cannot_be_written_is_refused_before_the_training_runs(manager_factory, tmp_path):
    trainer = local(manager_factory)
    with pytest.raises(PermissionError, match=r"cannot save to /proc/trainerkit-model: no directory can be created in /proc"):
        trainer.train(JsonModel, 1, save_path="/proc/trainerkit-model")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        trainer.train(JsonModel, 1, save_path=str(a_file / "model"))
    assert trainer.list_trainings() == []  # nothing recorded, nothing started


def test_a_live_training_reserves_its_save_path(manager_factory, tmp_path):
    trainer = local(manager_factory)
    gate = Gate()
    path = str(tmp_path / "model")
    first = trainer.train(Blocking, gate, save_path=path)
    with pytest.raises(FileExistsError, match=f"save_path {path} is reserved by training {first.id}"):
        trainer.train(JsonModel, 2, save_path=path)
    gate.release.set()
    first.result(timeout=WAIT)
    assert trainer.train(JsonModel, 2, save_path=str(tmp_path / "model-2")).result(timeout=WAIT).value == 2
