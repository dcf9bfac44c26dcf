"""The PyTorch DDP example (issue 15): an MLP on scikit-learn's digits trained
by two SUBPROCESS ranks over gloo reaches the accuracy band of one process, and
rank 0's model is what result() returns. Needs the ``torch`` extra, which the
README's test command does not install: skipped there (and in CI)."""

from __future__ import annotations

import importlib.util

import pytest

import trainerkit

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("sklearn") is None,
    reason="the DDP example needs the torch extra (pip install -e '.[torch]': torch, scikit-learn), "
    "which the README's test command and CI do not install",
)

EPOCHS = 15


def test_two_ranks_reach_the_accuracy_of_one_and_rank_0s_model_is_the_result(tmp_path):
    from sklearn.datasets import load_digits

    from trainerkit.examples.ddp_digits import DigitsMLP

    config = {"state_dir": str(tmp_path / "state"), "max_workers": 2}
    manager = trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"ddp": {"type": "SUBPROCESS", "config": config}}}}
    )
    with manager:
        trainer = manager.get_trainer("ddp")
        alone = trainer.train(DigitsMLP, epochs=EPOCHS, save_path=str(tmp_path / "m"), save_with_id=True)
        pair = trainer.train(DigitsMLP, epochs=EPOCHS, save_path=str(tmp_path / "m"), save_with_id=True,
                             resources=trainerkit.Resources(procs_per_node=2))
        one, two = alone.result(timeout=300), pair.result(timeout=300)
        assert (one.world_size, two.world_size) == (1, 2)
        assert one.test_accuracy >= 0.9 and two.test_accuracy >= 0.9
        assert abs(one.test_accuracy - two.test_accuracy) <= 0.05
        progress = pair.get_info().progress
        assert (progress.step, progress.total) == (EPOCHS, EPOCHS)
        assert progress.metrics["accuracy"] == pytest.approx(two.test_accuracy)
        digits = load_digits()
        predicted = two.predict(digits.data[:200].tolist())
        assert sum(p == t for p, t in zip(predicted, digits.target[:200])) >= 180
