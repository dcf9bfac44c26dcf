"""One training, run in this process from a spec: the worker side of trainings
that run in other processes (SUBPROCESS here, Kubernetes pods later).

A **training spec** (:class:`TrainingSpec`) is a JSON-able dict: the module's
import path, the arguments (pickled, inline or in a file, or plain JSON), the
save path and the training id, plus optional process settings (``sys_path``,
``cwd``, ``environ``). :func:`run_training` is the one code path that every
worker runs: import the module by its path, rebuild and bind the arguments,
install a :class:`~trainerkit.progress.TrainingContext` whose progress reports go
to a :class:`Reporter`, train, save atomically with
:func:`trainerkit.module.save_model`, and report the :class:`Outcome` (errors
carry the exception's type, message and traceback text).

Reporting is pluggable: :class:`JsonLinesReporter` writes events to a pipe (a
SUBPROCESS training process talks to its supervisor this way);
:class:`FileReporter` writes the outcome (and progress) to files, such as a
Kubernetes termination message.

Command line::

    python -m trainerkit.worker --spec FILE_OR_JSON [--outcome-file PATH] [--progress-file PATH]

runs one training in this process. SIGTERM cancels it (the training sees
:class:`~trainerkit.TrainingCanceledError`). Exit status: 0 completed,
1 errored, 2 unusable command line or spec, 3 canceled.
``python -m trainerkit.worker --serve ...`` is the SUBPROCESS trainer's pool
worker (see :mod:`trainerkit.supervisor`); it is started by the trainer, not by hand.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import logging
import math
import os
import pickle
import signal
import sys
import types
from typing import Any, Mapping, Optional, Protocol, Sequence, TextIO

from .errors import TrainingCanceledError
from .info import ErrorDetail, ProgressReport, TrainingStatus, utcnow
from .module import bind_train_arguments, check_module_class, class_path, import_object, save_model
from .progress import TrainingContext, training_context
from .rundir import Outcome, write_json_atomically

log = logging.getLogger("trainerkit")

SPEC_VERSION = 1

EXIT_COMPLETED, EXIT_ERRORED, EXIT_USAGE, EXIT_CANCELED = 0, 1, 2, 3


class SpecError(ValueError):
    """A training spec is malformed; the message names the key."""


# -- the spec ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """Everything a worker needs to run one training (JSON via to_dict/from_dict).

    Attributes:
        training_id: the training's id.
        module: the module class as ``package.module:QualName``.
        arguments: how ``train``'s arguments travel, one of
            ``{"pickle": <base64 text>}``,
            ``{"pickle_file": <path>, "remove_after_load": <bool>}`` or
            ``{"json": {"args": [...], "kwargs": {...}}}``.
        save_path: the directory the trained model is saved to (required: a
            worker's model only comes back through it).
        sys_path: entries put first on ``sys.path`` before the import (the
            submitting process's path, so the same modules resolve).
        cwd: the working directory to train in.
        environ: the complete environment to train with (None: keep this
            process's).
        log_path: the file that the training's stdout and stderr go to
            (pool workers only).
        run_dir: the training's :class:`~trainerkit.rundir.RunDirectory`
            (pool workers only).
        cancel_grace_period: seconds between SIGTERM and SIGKILL on cancel.
        detach: whether the training outlives the process that submitted it.
        submitter: owner identity of the submitting process (for messages).
    """

    training_id: str
    module: str
    arguments: Mapping[str, Any]
    save_path: str
    sys_path: Optional[tuple[str, ...]] = None
    cwd: Optional[str] = None
    environ: Optional[Mapping[str, str]] = None
    log_path: Optional[str] = None
    run_dir: Optional[str] = None
    cancel_grace_period: float = 10.0
    detach: bool = False
    submitter: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": SPEC_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            data[field.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "TrainingSpec":
        """Validate and build a spec; SpecError names the offending key."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a training spec is a JSON object, got {type(data).__name__}")
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(
                f"spec version {version!r} is not supported by this trainerkit (it reads version "
                f"{SPEC_VERSION}); run the same trainerkit version on both sides"
            )
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"version"})
        if unknown:
            raise SpecError(f"unknown spec keys {unknown}; accepted keys: {sorted(names)}")

        def text(key: str, required: bool = False) -> Optional[str]:
            value = data.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                raise SpecError(f"spec key {key!r} must be a non-empty string, got {value!r}")
            return value

        arguments = data.get("arguments")
        if not isinstance(arguments, Mapping) or len(arguments) < 1 or not (
            {"pickle", "pickle_file", "json"} & set(arguments)
        ):
            raise SpecError(
                "spec key 'arguments' must be {'pickle': base64}, {'pickle_file': path} or "
                f"{{'json': {{'args': [...], 'kwargs': {{...}}}}}}, got {arguments!r}"
            )
        sys_path = data.get("sys_path")
        if sys_path is not None and (
            not isinstance(sys_path, (list, tuple)) or not all(isinstance(p, str) for p in sys_path)
        ):
            raise SpecError(f"spec key 'sys_path' must be a list of strings, got {sys_path!r}")
        environ = data.get("environ")
        if environ is not None and (
            not isinstance(environ, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in environ.items())
        ):
            raise SpecError("spec key 'environ' must map strings to strings")
        grace = data.get("cancel_grace_period", 10.0)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not (
            math.isfinite(grace) and grace >= 0
        ):
            raise SpecError(f"spec key 'cancel_grace_period' must be seconds >= 0, got {grace!r}")
        detach = data.get("detach", False)
        if not isinstance(detach, bool):
            raise SpecError(f"spec key 'detach' must be true or false, got {detach!r}")
        return cls(
            training_id=text("training_id", required=True) or "",
            module=text("module", required=True) or "",
            arguments=dict(arguments),
            save_path=text("save_path", required=True) or "",
            sys_path=tuple(sys_path) if sys_path is not None else None,
            cwd=text("cwd"),
            environ=dict(environ) if environ is not None else None,
            log_path=text("log_path"),
            run_dir=text("run_dir"),
            cancel_grace_period=float(grace),
            detach=detach,
            submitter=str(data.get("submitter") or ""),
        )


def read_spec(source: str) -> TrainingSpec:
    """A spec from JSON text (starts with ``{``), a file path, or ``-`` for stdin."""
    text = source.strip()
    if text == "-":
        text = sys.stdin.read()
    elif not text.startswith("{"):
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise SpecError(f"cannot read the spec file {source}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"the spec is not valid JSON: {exc}") from None
    return TrainingSpec.from_dict(data)


# -- crossing the process boundary --------------------------------------------------


def check_importable_class(module_class: type) -> str:
    """Make sure another process can import ``module_class``; return its path.

    Raises:
        TypeError: the class lives in ``__main__`` or inside a function, or its
            import path does not lead back to it.
    """
    module = getattr(module_class, "__module__", None) or ""
    qualname = module_class.__qualname__
    if module == "__main__":
        raise TypeError(
            f"{qualname} is defined in __main__ (the script, notebook or interactive session "
            "being run), which a training process cannot import: move the class into a module "
            "file (for example models.py beside your script) and import it from there"
        )
    if "<locals>" in qualname:
        raise TypeError(
            f"{module}.{qualname} is defined inside a function, so no other process can import "
            "it: define the class at module level"
        )
    path = class_path(module_class)
    try:
        found = import_object(path)
    except ImportError as exc:
        raise TypeError(f"{qualname} cannot be imported by a training process as {path!r}: {exc}") from None
    if found is not module_class:
        raise TypeError(
            f"importing {path!r} gives {found!r}, not the class passed to train() (was it redefined "
            "or its module reloaded?); a training process imports the class by that path"
        )
    return path


class _MainReference(Exception):
    def __init__(self, obj: Any) -> None:
        self.obj = obj


class _BoundaryPickler(pickle.Pickler):
    """A pickler that refuses references to ``__main__``, which another process
    cannot import (it would fail there, not here)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            if getattr(obj, "__module__", None) == "__main__":
                raise _MainReference(obj)
        return NotImplemented


def _dumps(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    # Only a payload that mentions __main__ can refer to it: check those closely.
    if b"__main__" in payload:
        buffer = io.BytesIO()
        _BoundaryPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return payload


def _why_not(value: Any) -> Optional[str]:
    try:
        _dumps(value)
    except _MainReference as ref:
        name = getattr(ref.obj, "__qualname__", repr(ref.obj))
        return (
            f"it refers to {name}, defined in __main__ (the script or session being run), which "
            "a training process cannot import; define it in a module file instead"
        )
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError...
        return f"{type(exc).__name__}: {exc}"
    return None


def pickle_arguments(module_class: type, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """Pickle ``(args, kwargs)`` for another process.

    Raises:
        TypeError: naming the argument that cannot cross a process boundary (a
            lambda, a socket, a lock, something defined in ``__main__``...).
    """
    try:
        return _dumps((tuple(args), dict(kwargs)))
    except Exception:
        pass  # find out which argument, and say so
    bound = bind_train_arguments(module_class, args, kwargs)
    signature = bound.signature
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is kind.VAR_POSITIONAL:
            labelled = [(f"*{name}[{index}]", item) for index, item in enumerate(value)]
        elif kind is kind.VAR_KEYWORD:
            labelled = [(str(key), item) for key, item in value.items()]
        else:
            labelled = [(name, value)]
        for label, item in labelled:
            problem = _why_not(item)
            if problem:
                raise TypeError(
                    f"argument {label!r} of {module_class.__qualname__}.train ({type(item).__name__}) "
                    f"cannot be sent to the training's process: {problem}. Pass data the "
                    "other process can rebuild (numbers, strings, paths, picklable objects, "
                    "module-level functions and classes)"
                )
    problem = _why_not((tuple(args), dict(kwargs)))
    raise TypeError(
        f"the arguments of {module_class.__qualname__}.train cannot be sent to the training's "
        f"process: {problem}"
    )


def inline_arguments(payload: bytes) -> dict[str, Any]:
    """The ``arguments`` spec entry that carries ``payload`` inline."""
    return {"pickle": base64.b64encode(payload).decode("ascii")}


def load_arguments(arguments: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rebuild ``(args, kwargs)`` from a spec's ``arguments`` entry."""
    if "json" in arguments:
        data = arguments["json"]
        if not isinstance(data, Mapping):
            raise SpecError("arguments.json must be {'args': [...], 'kwargs': {...}}")
        args, kwargs = data.get("args") or [], data.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, Mapping):
            raise SpecError("arguments.json must be {'args': [...], 'kwargs': {...}}")
        return tuple(args), dict(kwargs)
    if "pickle" in arguments:
        payload = base64.b64decode(arguments["pickle"])
    else:
        path = arguments["pickle_file"]
        with open(path, "rb") as handle:
            payload = handle.read()
        if arguments.get("remove_after_load"):
            try:
                os.unlink(path)
            except OSError:
                pass
    try:
        args, kwargs = pickle.loads(payload)
    except ImportError as exc:
        raise ImportError(
            f"the training process cannot import what the training's arguments need: {exc}"
        ) from exc
    except Exception as exc:
        raise pickle.UnpicklingError(
            f"the training process cannot unpickle the training's arguments: {type(exc).__name__}: {exc}"
        ) from exc
    return tuple(args), dict(kwargs)


# -- reporting --------------------------------------------------------------------


class Reporter(Protocol):
    """Where a running training's news goes. Methods must not raise."""

    def progress(self, report: ProgressReport) -> None:
        """A ``report_progress`` call."""

    def finishing(self) -> None:
        """``train`` returned; the model is being saved (a cancel no longer stops it)."""

    def outcome(self, outcome: Outcome) -> None:
        """The end of the training."""


class JsonLinesReporter:
    """Events as JSON lines on a text stream (a pipe to the supervisor)::

        {"event": "progress", "report": {...}}
        {"event": "finishing"}
        {"event": "outcome", "outcome": {...}}
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def send(self, event: str, **data: Any) -> None:
        """Write one event line; a reader that has gone away is not an error."""
        try:
            self._stream.write(json.dumps({"event": event, **data}) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            log.debug("event %s not delivered: the reader is gone", event)

    def progress(self, report: ProgressReport) -> None:
        self.send("progress", report=report.to_dict())

    def finishing(self) -> None:
        self.send("finishing")

    def outcome(self, outcome: Outcome) -> None:
        self.send("outcome", outcome=outcome.to_dict())


class FileReporter:
    """The outcome and the latest progress as JSON files (either may be None).

    ``max_bytes`` bounds the outcome file (a Kubernetes termination message
    holds 4096 bytes): tracebacks are shortened from the top to fit.
    """

    def __init__(
        self,
        outcome_path: Optional[str],
        progress_path: Optional[str] = None,
        max_bytes: Optional[int] = None,
    ) -> None:
        self.outcome_path = outcome_path
        self.progress_path = progress_path
        self.max_bytes = max_bytes

    def progress(self, report: ProgressReport) -> None:
        if self.progress_path:
            try:
                write_json_atomically(self.progress_path, report.to_dict())
            except OSError as exc:
                log.warning("cannot write progress to %s: %s", self.progress_path, exc)

    def finishing(self) -> None:
        pass  # files record only what lasts: progress and the outcome

    def outcome(self, outcome: Outcome) -> None:
        if not self.outcome_path:
            return
        data = outcome.to_dict()
        if self.max_bytes is not None:
            data = _fit(data, self.max_bytes)
        try:
            if self.outcome_path.startswith("/dev/"):  # a device (termination log): no rename
                with open(self.outcome_path, "w", encoding="utf-8") as handle:
                    json.dump(data, handle)
            else:
                write_json_atomically(self.outcome_path, data)
        except OSError as exc:
            log.error("cannot write the outcome to %s: %s", self.outcome_path, exc)


def _fit(data: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    while len(json.dumps(data).encode("utf-8")) > max_bytes:
        errors = data.get("errors") or []
        longest = max(errors, key=lambda e: len(e.get("traceback", "")), default=None)
        if longest is None or len(longest.get("traceback", "")) < 64:
            for error in errors:
                error["message"] = error.get("message", "")[: max(64, max_bytes // 4)]
            data["progress"] = None
            break
        text = longest["traceback"]
        longest["traceback"] = "...\n" + text[len(text) // 2 :]
    return data


# -- cancel -----------------------------------------------------------------------


class CancelSignal:
    """SIGTERM as a cancel of the training running in this process's main thread.

    While armed, the first SIGTERM raises :class:`~trainerkit.TrainingCanceledError`
    where the main thread is (a ``time.sleep`` included), so ``finally`` blocks
    run; later ones only record the request. Disarmed (while the model is
    saved), it only records it.
    """

    def __init__(self) -> None:
        self.requested = False
        self._armed = False

    def install(self) -> "CancelSignal":
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def arm(self) -> None:
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = not self.requested
        self.requested = True
        if self._armed and first:
            raise TrainingCanceledError("the training was canceled (SIGTERM)")


# -- running a training -----------------------------------------------------------


def apply_process_settings(spec: TrainingSpec) -> None:
    """Make this process look like the submitter's: environment, cwd, sys.path."""
    if spec.environ is not None:
        for key in [k for k in os.environ if k not in spec.environ]:
            del os.environ[key]
        for key, value in spec.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
    if spec.cwd:
        try:
            os.chdir(spec.cwd)
        except OSError as exc:
            raise FileNotFoundError(
                f"cannot train in the working directory {spec.cwd}: {exc.strerror or exc}"
            ) from None
    if spec.sys_path is not None:
        first = list(dict.fromkeys(spec.sys_path))
        rest = [entry for entry in sys.path if entry not in set(first)]
        sys.path[:] = first + rest
        import importlib

        importlib.invalidate_caches()


def load_module_class(path: str) -> type:
    """Import the module class named by ``path``; ImportError names the path."""
    try:
        module_class = import_object(path)
    except ImportError as exc:
        raise ImportError(f"the training process cannot import the module class {path!r}: {exc}") from exc
    check_module_class(module_class)
    return module_class


def run_training(
    spec: TrainingSpec,
    reporter: Reporter,
    cancel: Optional[CancelSignal] = None,
    *,
    apply_settings: bool = True,
) -> Outcome:
    """Run the training ``spec`` describes in this process and report how it ended.

    Never raises for the training's own failures: they become an ERRORED
    outcome (type, message, traceback text). A cancel (``cancel.requested``)
    makes it CANCELED; once ``train`` has returned, a cancel no longer stops
    the save.
    """
    cancel = cancel or CancelSignal()
    latest: list[Optional[ProgressReport]] = [None]

    def on_progress(report: ProgressReport) -> None:
        latest[0] = report
        reporter.progress(report)

    status, errors = TrainingStatus.ERRORED, ()
    try:
        try:
            cancel.arm()
            if apply_settings:
                apply_process_settings(spec)
            module_class = load_module_class(spec.module)
            args, kwargs = load_arguments(spec.arguments)
            bind_train_arguments(module_class, args, kwargs)
            context = TrainingContext(
                spec.training_id, on_progress=on_progress, is_canceled=lambda: cancel.requested
            )
            with training_context(context):
                model = module_class.train(*args, **kwargs)
        finally:
            cancel.disarm()
        if cancel.requested:
            status, errors = TrainingStatus.CANCELED, _canceled("canceled while training")
        else:
            reporter.finishing()
            save_model(model, spec.save_path, training_id=spec.training_id)
            status = TrainingStatus.COMPLETED
    except BaseException as exc:  # the training's own failure, whatever it is
        if cancel.requested:
            status, errors = TrainingStatus.CANCELED, _canceled("canceled while training")
        else:
            log.debug("training %s errored", spec.training_id, exc_info=True)
            status, errors = TrainingStatus.ERRORED, (ErrorDetail.from_exception(exc),)
    outcome = Outcome(status=status, time=utcnow(), errors=tuple(errors), progress=latest[0])
    reporter.outcome(outcome)
    return outcome


def _canceled(reason: str) -> tuple[ErrorDetail, ...]:
    return (ErrorDetail("TrainingCanceledError", reason),)


# -- command line -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainerkit.worker",
        description="Run one trainerkit training in this process from a training spec.",
    )
    parser.add_argument("--spec", help="the training spec: JSON text, a file path, or - for stdin")
    parser.add_argument("--outcome-file", help="write the outcome JSON here (e.g. /dev/termination-log)")
    parser.add_argument("--outcome-max-bytes", type=int, default=None, help="shorten the outcome to fit")
    parser.add_argument("--progress-file", help="keep the latest progress report here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line entry point; returns the exit status."""
    parser = _parser()
    options = parser.parse_args(argv)
    if options.serve:
        if options.events_fd is None:
            parser.error("--serve needs --events-fd")
        from .supervisor import serve

        try:
            settings = json.loads(options.settings)
        except ValueError:
            parser.error("--settings must be JSON")
        return serve(options.events_fd, settings)
    if not options.spec:
        parser.error("--spec is required")
    logging.basicConfig(level=logging.INFO, format="[trainerkit] %(message)s")
    try:
        spec = read_spec(options.spec)
    except SpecError as exc:
        sys.stderr.write(f"trainerkit.worker: {exc}\n")
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


class ReporterGroup:
    """Several reporters as one (None entries are left out)."""

    def __init__(self, *reporters: "Optional[Reporter]") -> None:
        self._reporters = [reporter for reporter in reporters if reporter is not None]

    def progress(self, report: ProgressReport) -> None:
        for reporter in self._reporters:
            reporter.progress(report)

    def finishing(self) -> None:
        for reporter in self._reporters:
            reporter.finishing()

    def outcome(self, outcome: Outcome) -> None:
        for reporter in self._reporters:
            reporter.outcome(outcome)


if __name__ == "__main__":
    sys.exit(main())
