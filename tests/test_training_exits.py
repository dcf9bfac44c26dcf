"""How a training ends when train() leaves the interpreter or returns nothing:
the same for every trainer type that runs it (LOCAL in a thread, SUBPROCESS in
a process)."""

from __future__ import annotations

import pytest

import trainerkit
from trainerkit import TrainingError, TrainingStatus
from tests.training_modules import ExitsWith, ReturnsNone

TYPES = ["LOCAL", "SUBPROCESS"]


@pytest.fixture(params=TYPES)
def trainer(request, manager_factory):
    manager = manager_factory({"model_management": {"trainers": {"subject": {"type": request.param}}}})
    return manager.get_trainer("subject")


def _errored(trainer, tmp_path, module, **kwargs):
    future = trainer.train(module, save_path=str(tmp_path / "model"), **kwargs)
    with pytest.raises(TrainingError) as caught:  # never SystemExit or KeyboardInterrupt
        future.result(timeout=60)
    info = future.get_info()
    assert info.status is TrainingStatus.ERRORED
    return caught.value, info.errors[0]


def test_sys_exit_inside_train_is_an_errored_training_with_its_exit_code(trainer, tmp_path):
    error, detail = _errored(trainer, tmp_path, ExitsWith, code=3)
    assert detail.type == "SystemExit" and error.error_type == "SystemExit"
    assert "sys.exit(3)" in detail.message and "sys.exit(3)" in str(error)


def test_ctrl_c_inside_train_is_an_errored_training_not_an_interrupt_of_the_caller(trainer, tmp_path):
    error, detail = _errored(trainer, tmp_path, ExitsWith, code=None)
    assert detail.type == "KeyboardInterrupt"
    assert "KeyboardInterrupt" in str(error)


def test_a_train_that_returns_none_says_it_must_return_the_trained_instance(trainer, tmp_path):
    future = trainer.train(ReturnsNone, save_path=str(tmp_path / "model"))
    with pytest.raises(TypeError, match=r"train\(\) returned None.*must return the trained instance"):
        future.result(timeout=60)
    assert not (tmp_path / "model").exists()
    assert trainerkit.TrainingStatus.ERRORED is future.get_info().status
