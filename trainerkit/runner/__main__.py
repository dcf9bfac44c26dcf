"""``python -m trainerkit.runner --spec FILE_OR_JSON [--outcome-file PATH] [--progress-file PATH]``

Runs one training in this process. SIGTERM cancels it (the training sees
:class:`~trainerkit.TrainingCanceledError`). Exit status: 0 completed,
1 errored, 2 unusable command line or spec, 3 canceled.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..info import ProgressReport, TrainingStatus
from .outcome import Outcome
from .run import CancelSignal, FileReporter, ReporterGroup, run_training
from .spec import SpecError, read_spec

log = logging.getLogger("trainerkit")

EXIT_COMPLETED, EXIT_ERRORED, EXIT_USAGE, EXIT_CANCELED = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainerkit.runner",
        description="Run one trainerkit training in this process from a training spec.",
    )
    parser.add_argument("--spec", help="the training spec: JSON text, a file path, or - for stdin")
    parser.add_argument("--outcome-file", help="write the outcome JSON here (e.g. /dev/termination-log)")
    parser.add_argument("--outcome-max-bytes", type=int, default=None, help="shorten the outcome to fit")
    parser.add_argument("--progress-file", help="keep the latest progress report here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line entry point; returns the exit status."""
    parser = _parser()
    options = parser.parse_args(argv)
    if not options.spec:
        parser.error("--spec is required")
    logging.basicConfig(level=logging.INFO, format="[trainerkit] %(message)s")
    try:
        spec = read_spec(options.spec)
    except SpecError as exc:
        sys.stderr.write(f"trainerkit.runner: {exc}\n")
        return EXIT_USAGE
    reporter = ReporterGroup(
        _LogReporter(),
        FileReporter(options.outcome_file, options.progress_file, options.outcome_max_bytes),
    )
    cancel = CancelSignal().install()
    outcome = run_training(spec, reporter, cancel)
    return {
        TrainingStatus.COMPLETED: EXIT_COMPLETED,
        TrainingStatus.CANCELED: EXIT_CANCELED,
    }.get(outcome.status, EXIT_ERRORED)


class _LogReporter:
    """Command-line default: the outcome (and errors) on stderr."""

    def progress(self, report: ProgressReport) -> None:
        """Not shown: the command line reports the outcome only (progress goes to
        the spec's progress file when it names one)."""

    def finishing(self) -> None:
        """Nothing to say between the training's return and its outcome."""

    def outcome(self, outcome: Outcome) -> None:
        log.info("training %s", outcome.status.value)
        for error in outcome.errors:
            sys.stderr.write((error.traceback or f"{error.type}: {error.message}").rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
