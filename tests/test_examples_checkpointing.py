"""The checkpointing example (trainerkit/examples/checkpointing.py): it
checkpoints every epoch, survives a crash through a retry, and resumes."""

from __future__ import annotations

import pytest

import trainerkit
from trainerkit.examples.checkpointing import LineFit


def _trainer(manager_factory, tmp_path, trainer_type, **config):
    config = {"state_dir": str(tmp_path / "state"), **config}
    return manager_factory(
        {"model_management": {"trainers": {"t": {"type": trainer_type, "config": config}}}}
    ).get_trainer("t")


def test_it_fits_the_line_and_checkpoints_every_epoch(manager_factory, tmp_path):
    trainer = _trainer(manager_factory, tmp_path, "LOCAL")
    future = trainer.train(LineFit, epochs=30, save_path=str(tmp_path / "models"), save_with_id=True)
    model = future.result(timeout=60)
    assert (model.epoch, model.resumed_from) == (30, 0)
    assert model.w == pytest.approx(3.0, abs=0.2) and model.b == pytest.approx(1.0, abs=0.1)
    assert [info.name for info in future.checkpoints()] == [f"checkpoint-{n:06d}" for n in range(1, 31)]
    assert trainerkit.load(future.checkpoints()[9].path).epoch == 10
    more = trainer.train(LineFit, epochs=35, save_path=str(tmp_path / "models"), save_with_id=True,
                         resume_from=future.id)
    resumed = more.result(timeout=60)
    assert (resumed.epoch, resumed.resumed_from) == (35, 30)


def test_killed_after_an_epoch_it_is_retried_and_resumes_there(manager_factory, tmp_path):
    trainer = _trainer(manager_factory, tmp_path, "SUBPROCESS", max_retries=1, cancel_grace_period="300ms")
    future = trainer.train(LineFit, epochs=6, crash_after_epoch=4, save_path=str(tmp_path / "m"), save_with_id=True)
    model = future.result(timeout=60)
    assert (model.epoch, model.resumed_from) == (6, 4)
    assert future.get_info().attempt == 2
    assert "resumed_from=4" in repr(trainerkit.load(future.save_path))


def test_bad_epochs_is_refused_clearly():
    with pytest.raises(ValueError, match="epochs must be 1 or more"):
        LineFit.train(epochs=0)
