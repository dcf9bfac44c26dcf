"""Running one training outside the submitting process.

:mod:`.spec` (what travels: :class:`TrainingSpec`), :mod:`.run` (the one
train -> save -> outcome path, :func:`run_training`, and its reporters),
:mod:`.outcome` (how a training ended), :mod:`.ranks` (the rank processes
of a multi-process training: started, watched, stopped together) and ``python -m trainerkit.runner``
(the same from a shell). SUBPROCESS workers and Kubernetes pods both run
:func:`run_training`; LOCAL runs the same steps in a thread of the caller.
"""

from .outcome import Outcome, write_json_atomically
from .run import (
    CancelSignal,
    FileReporter,
    JsonLinesReporter,
    Reporter,
    ReporterGroup,
    apply_process_settings,
    load_module_class,
    run_training,
    training_rank,
)
from .spec import (
    SpecError,
    TrainingSpec,
    check_importable_class,
    inline_arguments,
    load_arguments,
    pickle_arguments,
    read_spec,
)

__all__ = [
    "CancelSignal",
    "FileReporter",
    "JsonLinesReporter",
    "Outcome",
    "Reporter",
    "ReporterGroup",
    "SpecError",
    "TrainingSpec",
    "apply_process_settings",
    "check_importable_class",
    "inline_arguments",
    "load_arguments",
    "load_module_class",
    "pickle_arguments",
    "read_spec",
    "run_training",
    "training_rank",
    "write_json_atomically",
]
