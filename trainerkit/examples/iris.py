"""An Iris classifier: a complete trainable module in plain Python.

:class:`IrisClassifier` is multinomial logistic regression (softmax) over the
four standardised measurements, trained by stochastic gradient descent. It uses
the standard library only, so it runs wherever trainerkit runs, and shows the
whole module contract: ``train`` reports progress each epoch (which also makes
it cancellable), ``save`` writes one JSON file and ``load`` reads it back.

Everything is deterministic for a given ``seed``: the stratified 80/20
train/test split and the order of the rows in every epoch.

The bundled data, ``data/iris.csv``, is Fisher's Iris data set: R. A. Fisher,
"The use of multiple measurements in taxonomic problems", Annals of Eugenics 7
(1936), as distributed by the UCI Machine Learning Repository
(https://archive.ics.uci.edu/dataset/53/iris, DOI 10.24432/C56C76) under the
Creative Commons Attribution 4.0 licence (CC BY 4.0). Rows 35 and 38 carry the
values of Fisher's paper, per the UCI errata note; see ``data/README.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import io
import json
import math
import os
import random
from typing import Any, Mapping, Optional, Sequence

import trainerkit
from trainerkit.errors import ModelLoadError

#: The measurement columns, in the order :meth:`IrisClassifier.predict` expects them.
FEATURES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
#: The label column.
LABEL = "species"
#: The file :meth:`IrisClassifier.save` writes inside the model directory.
MODEL_FILE = "iris-model.json"
#: Share of each class held out for testing.
TEST_FRACTION = 0.2
_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class IrisData:
    """Rows of measurements and their species, as read from a CSV file."""

    features: tuple[tuple[float, ...], ...]
    labels: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        """How many rows each species has, species sorted by name."""
        counts: dict[str, int] = {}
        for label in sorted(self.labels):
            counts[label] = counts.get(label, 0) + 1
        return counts


def bundled_data_text() -> str:
    """The text of the bundled ``data/iris.csv`` (read as package data)."""
    resource = importlib.resources.files(__package__).joinpath("data", "iris.csv")
    return resource.read_text(encoding="utf-8")


def load_iris_csv(data_path: str | os.PathLike[str] | None = None) -> IrisData:
    """Read an Iris CSV: the bundled one when ``data_path`` is None.

    The file needs a header naming the columns ``sepal_length``,
    ``sepal_width``, ``petal_length``, ``petal_width`` and ``species`` (in any
    order; other columns are ignored), and at least one row.

    Raises:
        FileNotFoundError: ``data_path`` does not exist.
        ValueError: the file is not such a CSV; the message names the file, the
            line and what was wrong.
    """
    if data_path is None:
        return _parse_csv(bundled_data_text(), "the bundled iris.csv")
    if not isinstance(data_path, (str, os.PathLike)):
        raise TypeError(f"data_path must be a path to a CSV file or None, got {data_path!r}")
    path = os.path.abspath(os.fspath(data_path))
    if os.path.isdir(path):
        raise ValueError(f"data_path {path} is a directory; pass the path of an Iris CSV file")
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"data_path {path} does not exist; pass the path of an Iris CSV file, or leave "
            "data_path out to use the bundled data"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"data_path {path} is not UTF-8 text ({exc}); is it a CSV file?") from None
    return _parse_csv(text, path)


def _parse_csv(text: str, source: str) -> IrisData:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{source} is empty; expected a header line and rows of Iris data")
    columns = [name.strip() for name in header]
    missing = [name for name in (*FEATURES, LABEL) if name not in columns]
    if missing:
        raise ValueError(
            f"{source}: the header line lacks the column(s) {', '.join(missing)}; an Iris CSV "
            f"needs the columns {', '.join((*FEATURES, LABEL))} (header found: {header})"
        )
    positions = [columns.index(name) for name in FEATURES]
    label_position = columns.index(LABEL)
    features: list[tuple[float, ...]] = []
    labels: list[str] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines, a trailing newline
        if len(row) != len(columns):
            raise ValueError(
                f"{source}, line {line}: {len(row)} fields, but the header has {len(columns)}"
            )
        values = []
        for name, position in zip(FEATURES, positions):
            cell = row[position].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(f"{source}, line {line}: {name} is {cell!r}, not a finite number")
            values.append(value)
        label = row[label_position].strip()
        if not label:
            raise ValueError(f"{source}, line {line}: the species is empty")
        features.append(tuple(values))
        labels.append(label)
    if not labels:
        raise ValueError(f"{source} has a header but no rows of data")
    return IrisData(tuple(features), tuple(labels), source)


def stratified_split(
    labels: Sequence[str], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indices ``(train, test)``: each class split in ``test_fraction``, shuffled by ``seed``.

    Every class keeps at least one row on each side, so every class needs two.
    """
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    train: list[int] = []
    test: list[int] = []
    for label in sorted(by_class):
        indices = by_class[label]
        if len(indices) < 2:
            raise ValueError(
                f"species {label!r} has {len(indices)} row; every species needs at least 2 so "
                "that both the training and the test split see it"
            )
        rng.shuffle(indices)
        n_test = min(len(indices) - 1, max(1, round(len(indices) * test_fraction)))
        test.extend(indices[:n_test])
        train.extend(indices[n_test:])
    return sorted(train), sorted(test)


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


class IrisClassifier(trainerkit.ModuleBase):
    """Softmax regression over standardised Iris measurements.

    Attributes:
        classes: the species, sorted by name; index ``k`` is row ``k`` of ``weights``.
        weights: one row of ``len(FEATURES)`` weights per class.
        biases: one bias per class.
        means, stds: the training split's per-feature mean and standard
            deviation, used to standardise every input.
        test_accuracy: the share of the held-out split classified correctly.
    """

    def __init__(
        self,
        classes: Sequence[str],
        weights: Sequence[Sequence[float]],
        biases: Sequence[float],
        means: Sequence[float],
        stds: Sequence[float],
        test_accuracy: float,
        training: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.classes = list(classes)
        self.weights = [list(row) for row in weights]
        self.biases = list(biases)
        self.means = list(means)
        self.stds = list(stds)
        self.test_accuracy = float(test_accuracy)
        #: How it was trained (epochs, learning rate, seed, split sizes); informative only.
        self.training = dict(training or {})

    def __repr__(self) -> str:
        return (
            f"<IrisClassifier classes={self.classes} test_accuracy={self.test_accuracy:.3f}>"
        )

    # -- training -----------------------------------------------------------------

    @classmethod
    def train(
        cls,
        data_path: Optional[str] = None,
        epochs: int = 200,
        learning_rate: float = 0.1,
        seed: int = 0,
    ) -> IrisClassifier:
        """Train on an Iris CSV (the bundled data when ``data_path`` is None).

        80 % of each species trains the model and 20 % is held out; the
        held-out accuracy is stored as ``test_accuracy``. Each epoch visits the
        training rows once, in an order shuffled by ``seed``, then reports
        ``step=epoch, total=epochs, loss=<mean cross-entropy>,
        accuracy=<training accuracy>`` with :func:`trainerkit.report_progress`,
        which also stops the training when it is canceled.

        Raises:
            FileNotFoundError, ValueError: the data cannot be read (see
                :func:`load_iris_csv`) or has fewer than two species.
            TypeError, ValueError: ``epochs``, ``learning_rate`` or ``seed`` is
                not a positive integer, a positive number, an integer.
        """
        epochs = _positive_int("epochs", epochs)
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
            raise TypeError(f"learning_rate must be a number, got {learning_rate!r}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")

        data = load_iris_csv(data_path)
        classes = sorted(set(data.labels))
        if len(classes) < 2:
            raise ValueError(
                f"{data.source} has only the species {classes}; a classifier needs at least two"
            )
        train_rows, test_rows = stratified_split(data.labels, TEST_FRACTION, seed)
        means, stds = _standardisation(data.features[i] for i in train_rows)
        class_index = {label: k for k, label in enumerate(classes)}
        samples = [
            (_standardise(data.features[i], means, stds), class_index[data.labels[i]])
            for i in train_rows
        ]

        n_features = len(FEATURES)
        weights = [[0.0] * n_features for _ in classes]
        biases = [0.0] * len(classes)
        rng = random.Random(seed)
        for epoch in range(1, epochs + 1):
            rng.shuffle(samples)
            loss_sum, correct = 0.0, 0
            for x, target in samples:
                scores = [
                    bias + sum(w * v for w, v in zip(row, x)) for row, bias in zip(weights, biases)
                ]
                probabilities = _softmax(scores)
                loss_sum -= math.log(max(probabilities[target], 1e-300))
                correct += max(range(len(probabilities)), key=probabilities.__getitem__) == target
                # Gradient of the cross-entropy w.r.t. class k's scores: p_k - [k == target].
                for k, probability in enumerate(probabilities):
                    step = learning_rate * (probability - (k == target))
                    if step:
                        row = weights[k]
                        for j in range(n_features):
                            row[j] -= step * x[j]
                        biases[k] -= step
            trainerkit.report_progress(
                step=epoch,
                total=epochs,
                loss=loss_sum / len(samples),
                accuracy=correct / len(samples),
            )

        model = cls(
            classes,
            weights,
            biases,
            means,
            stds,
            test_accuracy=0.0,
            training={
                "epochs": epochs,
                "learning_rate": float(learning_rate),
                "seed": seed,
                "train_rows": len(train_rows),
                "test_rows": len(test_rows),
                "data": data.source,
            },
        )
        predicted = model.predict([data.features[i] for i in test_rows])
        hits = sum(p == data.labels[i] for p, i in zip(predicted, test_rows))
        model.test_accuracy = hits / len(test_rows)
        return model

    # -- inference ------------------------------------------------------------------

    def predict(self, rows: Sequence[Sequence[float]]) -> list[str]:
        """The species of each row of measurements (in :data:`FEATURES` order, cm).

        Raises:
            ValueError: a row does not have exactly four finite numbers.
        """
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise TypeError(
                f"predict() takes a list of rows of {len(FEATURES)} measurements, got {rows!r}"
            )
        predictions = []
        for number, row in enumerate(rows):
            x = _standardise(_check_row(number, row), self.means, self.stds)
            scores = [
                bias + sum(w * v for w, v in zip(weights, x))
                for weights, bias in zip(self.weights, self.biases)
            ]
            predictions.append(self.classes[max(range(len(scores)), key=scores.__getitem__)])
        return predictions

    # -- persistence ------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write the model as JSON to ``path/iris-model.json``."""
        os.makedirs(path, exist_ok=True)
        document = {
            "format": _FORMAT,
            "features": list(FEATURES),
            "classes": self.classes,
            "weights": self.weights,
            "biases": self.biases,
            "means": self.means,
            "stds": self.stds,
            "test_accuracy": self.test_accuracy,
            "training": self.training,
        }
        with open(os.path.join(path, MODEL_FILE), "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")

    @classmethod
    def load(cls, path: str) -> IrisClassifier:
        """Read a model written by :meth:`save`.

        Raises:
            ModelLoadError: no model file in ``path``, or it is not a model this
                class wrote (the message says which part is wrong).
        """
        file = os.path.join(os.fspath(path), MODEL_FILE)
        try:
            with open(file, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            raise ModelLoadError(
                f"no Iris model at {path}: {MODEL_FILE} is missing (was it saved by "
                "IrisClassifier.save?)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the Iris model {file}: {exc}") from None
        problem = _document_problem(document)
        if problem:
            raise ModelLoadError(f"{file} is not a valid Iris model: {problem}")
        return cls(
            document["classes"],
            document["weights"],
            document["biases"],
            document["means"],
            document["stds"],
            document["test_accuracy"],
            document.get("training") or {},
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _standardisation(rows: Any) -> tuple[list[float], list[float]]:
    columns = list(zip(*rows))
    means = [sum(column) / len(column) for column in columns]
    stds = []
    for column, mean in zip(columns, means):
        std = math.sqrt(sum((value - mean) ** 2 for value in column) / len(column))
        stds.append(std if std > 0 else 1.0)  # a constant column: leave it centred, unscaled
    return means, stds


def _standardise(row: Sequence[float], means: Sequence[float], stds: Sequence[float]) -> list[float]:
    return [(value - mean) / std for value, mean, std in zip(row, means, stds)]


def _check_row(number: int, row: Any) -> Sequence[float]:
    ok = (
        isinstance(row, Sequence)
        and not isinstance(row, (str, bytes))
        and len(row) == len(FEATURES)
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in row
        )
    )
    if not ok:
        raise ValueError(
            f"row {number} is {row!r}; each row must be {len(FEATURES)} finite numbers: "
            + ", ".join(FEATURES)
        )
    return row


def _document_problem(document: Any) -> Optional[str]:
    """What is wrong with a loaded model document, or None."""
    if not isinstance(document, dict):
        return "the file does not hold a JSON object"
    if document.get("format") != _FORMAT:
        return f"format {document.get('format')!r} is not {_FORMAT}"
    if document.get("features") != list(FEATURES):
        return f"features {document.get('features')!r} are not {list(FEATURES)}"
    classes = document.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        return "classes must be a list of at least two species names"

    def numbers(value: Any, length: int) -> bool:
        return (
            isinstance(value, list)
            and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        )

    weights = document.get("weights")
    if not (isinstance(weights, list) and len(weights) == len(classes)
            and all(numbers(row, len(FEATURES)) for row in weights)):
        return f"weights must be {len(classes)} rows of {len(FEATURES)} numbers"
    for key, length in (("biases", len(classes)), ("means", len(FEATURES)), ("stds", len(FEATURES))):
        if not numbers(document.get(key), length):
            return f"{key} must be a list of {length} numbers"
    if any(std <= 0 for std in document["stds"]):
        return "stds must be positive"
    accuracy = document.get("test_accuracy")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
        return f"test_accuracy {accuracy!r} is not a number between 0 and 1"
    return None
