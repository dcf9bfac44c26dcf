"""``python -m trainerkit.examples``: train, save and reload the Iris classifier.

The whole trainerkit round trip in one command: build the configured trainers
(the built-in defaults, or ``--config FILE``), submit
:class:`~trainerkit.examples.iris.IrisClassifier` to one of them (``--trainer``,
default ``default``) with ``save_path``, ``save_with_id=True`` and
``model_name="iris"``, wait for it, then load the saved model with
:func:`trainerkit.load` as any later process would.

Exit status: 0 on success, 1 when the training or the configuration fails,
2 for bad command-line arguments (argparse), 130 when interrupted (the
training is canceled first).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import trainerkit
from trainerkit.examples.iris import FEATURES, IrisClassifier, load_iris_csv

DEFAULT_SAVE_PATH = "./trainerkit-models"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m trainerkit.examples``."""
    parser = argparse.ArgumentParser(
        prog="python -m trainerkit.examples",
        description="Train the bundled Iris classifier through a trainerkit trainer, save it "
        "under SAVE_PATH/<training id>/iris, and load it back.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="trainers YAML file (model_management.trainers...); default: the built-in "
        "defaults, one LOCAL trainer named 'default'",
    )
    parser.add_argument(
        "--trainer", default="default", metavar="NAME", help="trainer to use (default: %(default)s)"
    )
    parser.add_argument(
        "--save-path",
        default=DEFAULT_SAVE_PATH,
        metavar="DIR",
        help="models are saved under DIR/<training id>/iris (default: %(default)s)",
    )
    parser.add_argument(
        "--data-path", metavar="CSV", help="an Iris CSV file (default: the bundled Fisher data)"
    )
    parser.add_argument("--epochs", type=int, default=200, help="default: %(default)s")
    parser.add_argument(
        "--learning-rate", type=float, default=0.1, metavar="RATE", help="default: %(default)s"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up waiting after this long (the training is canceled); default: wait",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Train, save and reload; print what happened. Returns the exit status."""
    if args.config:
        manager = trainerkit.TrainerManager.from_yaml(args.config)
    else:
        manager = trainerkit.TrainerManager()
    with manager:
        trainer = manager.get_trainer(args.trainer)
        future = trainer.train(
            IrisClassifier,
            data_path=args.data_path,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            seed=args.seed,
            save_path=args.save_path,
            save_with_id=True,
            model_name="iris",
        )
        print(f"training id: {future.id}", flush=True)
        try:
            if not future.wait(args.timeout):
                future.cancel()
                print(
                    f"error: training {future.id} did not finish within {args.timeout} s; "
                    "it was canceled",
                    file=sys.stderr,
                )
                return 1
        except KeyboardInterrupt:
            future.cancel()
            print(f"interrupted: training {future.id} canceled", file=sys.stderr)
            return 130
        future.result()  # raises the training's own error when it failed
        print(f"saved to: {future.save_path}", flush=True)

    model = trainerkit.load(future.save_path)
    sample = load_iris_csv(args.data_path)
    row, species = sample.features[-1], sample.labels[-1]
    print(f"test accuracy: {model.test_accuracy:.3f}")
    print(
        "sample prediction: "
        + ", ".join(f"{name}={value}" for name, value in zip(FEATURES, row))
        + f" -> {model.predict([row])[0]} (labelled {species})"
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (trainerkit.TrainerkitError, OSError, ValueError, TypeError) as exc:
        # Expected mistakes (a bad config, trainer name, data file or argument)
        # get one line, not a traceback.
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
