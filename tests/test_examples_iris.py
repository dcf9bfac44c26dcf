"""The bundled example: the Iris data, IrisClassifier and ``python -m trainerkit.examples``."""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import os
import re
import subprocess
import sys

import pytest

import trainerkit
from trainerkit.examples.iris import (
    FEATURES,
    MODEL_FILE,
    IrisClassifier,
    load_iris_csv,
    stratified_split,
)
from trainerkit.progress import TrainingContext, training_context

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "sepal_length,sepal_width,petal_length,petal_width,species"


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    # Records are durable: keep this module's trainings out of any shared state dir.
    state = tmp_path / "state"
    monkeypatch.setenv("TRAINERKIT_STATE_DIR", str(state))
    return state


@pytest.fixture(scope="module")
def trained() -> IrisClassifier:
    """One model with the default arguments, shared by the read-only tests."""
    return IrisClassifier.train()


def _record_progress(reports, canceled=lambda: False) -> TrainingContext:
    # publish_interval 0: every report is handed over, as the tests count them
    return TrainingContext("test--iris", on_progress=reports.append, is_canceled=canceled, publish_interval=0)


def _write_csv(path, rows, header=HEADER):
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return str(path)


# -- the data -------------------------------------------------------------------------


def test_bundled_csv_is_the_150_row_fisher_data():
    text = importlib.resources.files("trainerkit.examples").joinpath("data", "iris.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert ",".join(rows[0]) == HEADER
    assert len(rows) == 151
    assert rows[1] == ["5.1", "3.5", "1.4", "0.2", "setosa"]
    assert rows[150] == ["5.9", "3.0", "5.1", "1.8", "virginica"]
    # Fisher's values where UCI's iris.data has its two documented errata.
    assert rows[35] == ["4.9", "3.1", "1.5", "0.2", "setosa"]
    assert rows[38] == ["4.9", "3.6", "1.4", "0.1", "setosa"]


def test_bundled_data_has_three_species_of_fifty():
    data = load_iris_csv()
    assert len(data) == 150
    assert data.class_counts() == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert all(len(row) == len(FEATURES) for row in data.features)


def test_split_holds_out_a_fifth_of_each_species_deterministically():
    labels = load_iris_csv().labels
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + test) == list(range(150))
    assert {s: [labels[i] for i in test].count(s) for s in set(labels)} == {
        "setosa": 10,
        "versicolor": 10,
        "virginica": 10,
    }
    assert stratified_split(labels, 0.2, seed=0) == (train, test)
    assert stratified_split(labels, 0.2, seed=1) != (train, test)


# -- training -------------------------------------------------------------------------


def test_training_scores_above_ninety_percent_on_the_held_out_split(trained):
    assert trained.test_accuracy > 0.9
    assert trained.training["train_rows"] == 120
    assert trained.training["test_rows"] == 30
    assert trained.classes == ["setosa", "versicolor", "virginica"]


def test_training_is_deterministic_for_a_seed(trained):
    again = IrisClassifier.train()
    assert again.weights == trained.weights
    assert again.biases == trained.biases
    assert again.test_accuracy == trained.test_accuracy


def test_progress_is_reported_every_epoch_with_loss_and_accuracy():
    reports = []
    with training_context(_record_progress(reports)):
        IrisClassifier.train(epochs=12)
    assert [r.step for r in reports] == list(range(1, 13))
    assert {r.total for r in reports} == {12}
    assert all(set(r.metrics) == {"loss", "accuracy"} for r in reports)
    assert reports[-1].metrics["loss"] < reports[0].metrics["loss"]
    assert 0.0 <= reports[-1].metrics["accuracy"] <= 1.0


def test_cancel_stops_training_at_the_next_epoch():
    reports = []
    with training_context(_record_progress(reports, canceled=lambda: len(reports) >= 3)):
        with pytest.raises(trainerkit.TrainingCanceledError):
            IrisClassifier.train(epochs=200)
    assert len(reports) == 3


def test_training_on_a_user_csv_uses_its_rows_and_species(tmp_path):
    data = load_iris_csv()
    rows = [
        (*features, label)
        for features, label in zip(data.features, data.labels)
        if label != "versicolor"
    ]
    path = _write_csv(tmp_path / "two.csv", rows)
    model = IrisClassifier.train(data_path=path, epochs=20)
    assert model.classes == ["setosa", "virginica"]
    assert model.training["train_rows"] + model.training["test_rows"] == 100
    assert model.test_accuracy == 1.0  # setosa and virginica are linearly separable


# -- bad input ------------------------------------------------------------------------


def test_missing_data_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=r"nope\.csv does not exist.*bundled data"):
        IrisClassifier.train(data_path=str(missing))


def test_data_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        IrisClassifier.train(data_path=str(tmp_path))


def test_non_numeric_measurement_names_file_line_and_column(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [(5.1, 3.5, 1.4, 0.2, "setosa"), (4.9, 3.0, "abc", 0.2, "setosa")])
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: petal_length is 'abc', not a finite number"):
        IrisClassifier.train(data_path=path)


def test_csv_without_the_iris_columns_names_the_missing_ones(tmp_path):
    path = _write_csv(tmp_path / "cols.csv", [(1, 2, 3)], header="a,b,species")
    with pytest.raises(ValueError, match="lacks the column.*sepal_length, sepal_width, petal_length, petal_width"):
        IrisClassifier.train(data_path=path)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        IrisClassifier.train(epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        IrisClassifier.train(learning_rate=-1.0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        IrisClassifier.train(seed="zero")


def test_predict_rejects_a_row_that_is_not_four_numbers(trained):
    with pytest.raises(ValueError, match=r"row 1 is \[1\.0, 2\.0\]; each row must be 4 finite numbers"):
        trained.predict([[5.1, 3.5, 1.4, 0.2], [1.0, 2.0]])


# -- saving and loading ---------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    trained.save(str(tmp_path / "model"))
    loaded = IrisClassifier.load(str(tmp_path / "model"))
    rows = list(load_iris_csv().features)
    assert loaded.predict(rows) == trained.predict(rows)
    assert loaded.test_accuracy == trained.test_accuracy
    document = json.loads((tmp_path / "model" / MODEL_FILE).read_text())
    assert {"weights", "means", "stds", "classes", "test_accuracy"} <= set(document)


def test_load_refuses_a_corrupt_model_file(tmp_path):
    (tmp_path / MODEL_FILE).write_text(json.dumps({"format": 1, "features": list(FEATURES)}))
    with pytest.raises(trainerkit.ModelLoadError, match="not a valid Iris model: classes"):
        IrisClassifier.load(str(tmp_path))


# -- through a trainer ----------------------------------------------------------------


def test_progress_is_visible_in_get_info_through_the_default_trainer(manager_factory, tmp_path):
    trainer = manager_factory().get_trainer("default")
    future = trainer.train(
        IrisClassifier, epochs=7, save_path=str(tmp_path / "models"), save_with_id=True, model_name="iris"
    )
    model = future.result(timeout=60)
    info = future.get_info()
    assert info.status is trainerkit.TrainingStatus.COMPLETED
    assert (info.progress.step, info.progress.total) == (7, 7)
    assert set(info.progress.metrics) == {"loss", "accuracy"}
    assert future.save_path == str(tmp_path / "models" / future.id / "iris")
    assert trainerkit.load(future.save_path).predict([[6.3, 3.3, 6.0, 2.5]]) == model.predict(
        [[6.3, 3.3, 6.0, 2.5]]
    )


def test_missing_data_path_errors_the_training_with_the_same_message(manager_factory, tmp_path):
    future = manager_factory().get_trainer("default").train(
        IrisClassifier, data_path=str(tmp_path / "nope.csv")
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        future.result(timeout=60)
    assert future.get_info().status is trainerkit.TrainingStatus.ERRORED


# -- python -m trainerkit.examples ----------------------------------------------------


def _run_example(*args, state_dir):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TRAINERKIT_STATE_DIR=str(state_dir))
    return subprocess.run(
        [sys.executable, "-m", "trainerkit.examples", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_example_command_trains_saves_and_reloads(tmp_path, _state_dir):
    save_root = tmp_path / "models"
    done = _run_example("--save-path", str(save_root), state_dir=_state_dir)
    assert done.returncode == 0, done.stderr
    training_id = re.search(r"^training id: (\S+)$", done.stdout, re.M).group(1)
    save_path = re.search(r"^saved to: (.+)$", done.stdout, re.M).group(1)
    assert training_id.startswith("default--")
    assert save_path == str(save_root / training_id / "iris")
    model = trainerkit.load(save_path)
    assert isinstance(model, IrisClassifier)
    assert f"test accuracy: {model.test_accuracy:.3f}" in done.stdout
    assert "-> virginica (labelled virginica)" in done.stdout


def test_example_command_fails_clearly_for_an_unknown_trainer(tmp_path, _state_dir):
    done = _run_example("--save-path", str(tmp_path / "models"), "--trainer", "gpu", state_dir=_state_dir)
    assert done.returncode == 1
    assert "error: UnknownTrainerError: no trainer named 'gpu'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "models").exists()


def test_example_command_runs_on_an_encoded_trainer_name_from_config(tmp_path, _state_dir):
    done = _run_example(
        "--config", os.path.join(REPO_ROOT, "config", "multi.yaml"), "--trainer", "GPU_Box",
        "--save-path", str(tmp_path / "models"), "--epochs", "5", state_dir=_state_dir,
    )
    assert done.returncode == 0, done.stderr
    training_id = re.search(r"^training id: (\S+)$", done.stdout, re.M).group(1)
    assert trainerkit.ModelTrainerBase.get_trainer_name(training_id) == "GPU_Box"
    assert (tmp_path / "models" / training_id / "iris").is_dir()
