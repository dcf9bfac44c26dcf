"""What each ``trainerkit`` sub-command does.

Every command is a function ``(Session) -> ExitCode``. Expected failures are
raised as :class:`~trainerkit.cli.exit_codes.CommandError` (or one of
trainerkit's own errors) and reported by :func:`run_command` as one message and
an exit status; only a bug produces a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable, Mapping, Optional, TextIO

from ..capabilities import CAPABILITY_NAMES, SupportLevel, UnsupportedCapabilityError
from ..errors import ConfigError, TrainerkitError
from ..info import TrainingInfo, TrainingStatus, qualified_name, utcnow
from ..module import check_load_path, load as trainerkit_load
from ..storage import is_url, read_manifest
from .exit_codes import CommandError, ExitCode, exit_code_for
from .parser import CONFIG_ENV
from .progress_display import NullDisplay, follow, open_display
from .render import (
    LIST_HEADERS,
    capability_matrix,
    elapsed_seconds,
    format_duration,
    format_metrics,
    format_parameter,
    format_steps,
    status_lines,
    table,
    training_row,
)

#: Keyword arguments of ModelTrainerBase.train itself, set by options of `train`.
_TRAIN_OPTIONS = {
    "save_path": "--save-path",
    "save_with_id": "--save-with-id",
    "model_name": "--model-name",
    "tags": "--tag",
    "capabilities": "--capability NAME=LEVEL",
    "external_training_id": "--external-training-id",
}

_STATUS_EXIT = {
    TrainingStatus.COMPLETED: ExitCode.OK,
    TrainingStatus.ERRORED: ExitCode.TRAINING_ERRORED,
    TrainingStatus.CANCELED: ExitCode.TRAINING_CANCELED,
}


class Output:
    """Where a command's output goes.

    ``line`` is for people (stdout, silent in ``--json`` mode), ``document``
    for programs (one JSON document on the real stdout, ``--json`` mode only),
    ``note`` for remarks that must not mix with either (stderr, always).

    ``line`` and ``note`` write to the *current* ``sys.stdout``/``sys.stderr``,
    so that while a progress bar is shown they print above it.
    """

    def __init__(self, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json = json_mode
        self.stdout = stdout
        self.stderr = stderr

    def line(self, text: str = "") -> None:
        """One line for people on stdout (nothing in ``--json`` mode)."""
        if not self.json:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def lines(self, texts: "list[str]") -> None:
        """Several :meth:`line` calls."""
        for text in texts:
            self.line(text)

    def document(self, data: Any, *, indent: Optional[int] = 2) -> None:
        """``data`` as JSON on stdout (``--json`` mode only)."""
        if self.json:
            self.stdout.write(json.dumps(data, indent=indent) + "\n")
            self.stdout.flush()

    def note(self, text: str) -> None:
        """A remark on stderr, in every mode."""
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Session:
    """One run of the command: its arguments, its output, and the trainers
    (built from the configuration on first use)."""

    def __init__(self, args: argparse.Namespace, output: Output) -> None:
        self.args = args
        self.out = output
        self._manager: Any = None

    def config_path(self) -> tuple[Optional[str], str]:
        """``(path, where it was named)``; path None means the built-in defaults."""
        if self.args.config:
            return self.args.config, "--config"
        from_env = os.environ.get(CONFIG_ENV, "").strip()
        if from_env:
            return from_env, CONFIG_ENV
        return None, ""

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from ..manager import TrainerManager

            path, origin = self.config_path()
            try:
                self._manager = TrainerManager.from_yaml(path) if path else TrainerManager()
            except ConfigError as exc:
                hint = f"(the file was named by ${CONFIG_ENV})" if origin == CONFIG_ENV else ""
                raise CommandError(str(exc), ExitCode.USAGE, hint) from None
        return self._manager

    def trainer_type(self, trainer_name: str) -> str:
        try:
            return self.manager.trainer_spec(trainer_name).type
        except LookupError:
            return ""

    def close(self) -> None:
        if self._manager is not None:
            # Never wait: a detached training must outlive this command, and a
            # followed one has ended already.
            self._manager.close(wait=False)


# -- train ---------------------------------------------------------------------------


def _import_module_class(path: str) -> type:
    from ..module import check_module_class, import_object

    try:
        obj = import_object(path)
    except ImportError as exc:
        raise CommandError(
            str(exc),
            ExitCode.USAGE,
            "MODULE is package.module:Class, importable from the current directory or PYTHONPATH",
        ) from None
    except Exception as exc:  # the module's own code failed while importing
        module_name = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
        raise CommandError(
            f"importing {path} failed: {qualified_name(type(exc))}: {exc}",
            ExitCode.USAGE,
            f"see the traceback with: python -c 'import {module_name}'",
        ) from None
    try:
        check_module_class(obj)
    except TypeError as exc:
        raise CommandError(f"{path}: {exc}", ExitCode.USAGE) from None
    return obj


def _check_train_arguments(module_class: type, kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments ``train`` would reject, showing its signature."""
    from ..module import train_signature
    from ..schema import did_you_mean

    for key in kwargs:
        if key in _TRAIN_OPTIONS:
            raise CommandError(
                f"{key} is an option of trainerkit train itself, not an argument of "
                f"{module_class.__qualname__}.train; use {_TRAIN_OPTIONS[key]}",
                ExitCode.USAGE,
            )
    signature = train_signature(module_class)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        problem = str(exc)
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        if not accepts_any:
            names = [
                name
                for name, p in signature.parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            ]
            unknown = [key for key in kwargs if key not in signature.parameters]
            if unknown:
                problem = f"unknown argument {unknown[0]!r}" + did_you_mean(unknown[0], names)
        raise CommandError(
            f"{module_class.__qualname__}.train does not accept these arguments: {problem}",
            ExitCode.USAGE,
            f"signature: {module_class.__qualname__}.train{_readable_signature(module_class, signature)}\n"
            "pass each argument as --arg NAME=VALUE (or in --args-file)",
        ) from None


def _readable_signature(module_class: type, signature: Any) -> Any:
    """The signature with string annotations (``from __future__ import
    annotations``) evaluated, so it reads as written; as is when they cannot be."""
    try:
        return inspect.signature(module_class.train, eval_str=True)
    except Exception:  # an annotation that does not evaluate: show the strings
        return signature


def _resources_option(args: argparse.Namespace) -> Optional[dict[str, int]]:
    """``--nodes/--procs-per-node/--gpus-per-proc`` as train()'s resources (None: none given).

    The trainer's ``default_resources`` fill in what the options leave out."""
    given = {key: getattr(args, key) for key in ("nodes", "procs_per_node", "gpus_per_proc") if getattr(args, key) is not None}
    return given or None


def cmd_train(session: Session) -> ExitCode:
    from .arguments import parse_capability_options, training_arguments

    args, out = session.args, session.out
    module_class = _import_module_class(args.module)
    kwargs = training_arguments(args.args_file, args.arg)
    _check_train_arguments(module_class, kwargs)
    capabilities = parse_capability_options(args.capability)
    manager = session.manager
    if args.load and args.detach:
        raise CommandError(
            "--load waits for the model, --detach does not wait: use one of them",
            ExitCode.USAGE,
            "load a detached training's model later with: trainerkit result ID",
        )
    spec = manager.trainer_spec(args.trainer)
    if args.detach and not spec.trainer_class.supports_detach:
        raise CommandError(
            f"trainer {args.trainer!r} is of type {spec.type}, whose trainings run inside the "
            "submitting process and would stop when this command exits, so it cannot --detach",
            ExitCode.UNAVAILABLE,
            "follow the training (drop --detach), or use a SUBPROCESS or KUBERNETES trainer",
        )
    if (args.save_with_id or args.model_name) and not args.save_path:
        raise CommandError(
            "--save-with-id and --model-name shape the save path, so they need --save-path DIR",
            ExitCode.USAGE,
        )
    trainer = manager.get_trainer(args.trainer)
    # The display starts before the submission: see BarDisplay.
    display = NullDisplay() if args.detach else open_display(out.stderr, json_mode=out.json, stdout=out.stdout)
    display.start()
    try:
        try:
            future = trainer.train(
                module_class,
                save_path=args.save_path,
                save_with_id=args.save_with_id,
                model_name=args.model_name,
                external_training_id=args.external_training_id,
                tags=args.tag or None,
                capabilities=capabilities or None,
                resources=_resources_option(args),
                resume_from=args.resume_from,
                **kwargs,
            )
        except UnsupportedCapabilityError as exc:
            raise _unsupported_capabilities(args.trainer, spec.type, exc) from None
        except (TypeError, ValueError, FileExistsError) as exc:
            # The trainer's messages name train()'s keywords; say which option sets them here.
            hint = "on the command line: --save-path DIR [--save-with-id]" if "save_path" in str(exc) else ""
            raise CommandError(str(exc), ExitCode.USAGE, hint) from None
        out.line(f"Training {future.id} submitted to trainer {args.trainer!r} ({spec.type}).")
        out.line(f"Save path: {future.save_path}" if future.save_path else "Save path: none")
        if not future.save_path:
            out.note(
                "trainerkit: warning: no --save-path, so the trained model is kept only in the "
                "memory of the training process and is lost when it ends"
            )
        if args.detach:
            out.line(f"Detached. Follow it with: trainerkit status {future.id} --watch")
            out.document(future.get_info().to_dict())
            return ExitCode.OK
        try:
            info = follow(future, display)
            code = None
        except KeyboardInterrupt:
            info = _cancel_after_interrupt(out, future, display)
            code = ExitCode.INTERRUPTED
    finally:
        display.close()
    if code is None and args.load and info.status is TrainingStatus.COMPLETED:
        # Prove the model comes back: load it as any later process would.
        document, rows = _model_summary(future, info)
        out.document({**info.to_dict(), "model": document})
        _report_end(out, info, document=False)
        out.line("Loaded back:")
        out.lines([f"  {label + ':':<{max(len(l) for l, _ in rows) + 1}} {value}" for label, value in rows])
        return ExitCode.OK
    end_code = _report_end(out, info)
    return code if code is not None else end_code


def _unsupported_capabilities(trainer: str, trainer_type: str, exc: UnsupportedCapabilityError) -> CommandError:
    """Exit status 6 with every unmet request on its own line (and in ``--json``)."""
    count = len(exc.unsupported)
    needed_by = f" (needed by {exc.needed_by})" if exc.needed_by else ""
    lower = "ask for fewer --nodes/--procs-per-node/--gpus-per-proc" if exc.needed_by else "request the capability as optional"
    return CommandError(
        f"trainer {trainer!r} ({trainer_type}) cannot serve {count} requested "
        f"capabilit{'y' if count == 1 else 'ies'}{needed_by}; nothing was recorded or started",
        ExitCode.UNAVAILABLE,
        "\n".join(item.describe() for item in exc.unsupported)
        + f"\nsee what each trainer has with: trainerkit trainers (or {lower})"
        + (f"\n{exc.hint}" if exc.hint else ""),
        details={
            "unsupported": [
                {"name": item.name, "requested": item.requested.value, "supported": support_flags(item.supported)}
                for item in exc.unsupported
            ]
        },
    )


def _cancel_after_interrupt(out: Output, future: Any, display: Any) -> TrainingInfo:
    """Ctrl-C while following: cancel the training, keep showing it until it
    has stopped; a second Ctrl-C leaves at once (exit status 130)."""
    out.note(
        f"\nCtrl-C: canceling training {future.id} (press Ctrl-C again to stop waiting for it)"
    )
    try:
        future.cancel()
        return follow(future, display)
    except KeyboardInterrupt:
        display.close()
        out.note(
            f"Stopped waiting; training {future.id} may still be stopping. "
            f"Check with: trainerkit status {future.id}"
        )
        # Threads of an in-process (LOCAL) training would keep the interpreter
        # alive at exit; the user asked twice to leave now.
        for stream in (sys.stdout, sys.stderr, out.stdout):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(ExitCode.INTERRUPTED)


def _report_end(out: Output, info: TrainingInfo, *, document: bool = True) -> ExitCode:
    """Print how a followed training ended; its exit status."""
    if document:
        out.document(info.to_dict())
    took = format_duration(elapsed_seconds(info, utcnow()))
    status = info.status
    out.line(f"Training {info.id} {status.value}" + (f" after {took}." if took != "-" else "."))
    if info.progress is not None:
        progress = format_steps(info.progress)
        metrics = format_metrics(info.progress.metrics)
        out.line(f"Last progress: {progress}" + (f"  {metrics}" if metrics else ""))
    if status is TrainingStatus.COMPLETED and info.save_path:
        out.line(f"Model saved to {info.save_path}")
    for error in info.errors:
        out.line(f"{error.type}: {error.message}" if error.type else error.message)
        if status is TrainingStatus.ERRORED and error.traceback:
            out.line("Traceback of the training:")
            out.lines(["  " + line for line in error.traceback.rstrip().splitlines()])
    return _STATUS_EXIT.get(status, ExitCode.FAILURE)


# -- describe ----------------------------------------------------------------------------


def cmd_describe(session: Session) -> ExitCode:
    from ..module import PARAMETERS_HOOK, class_path, recordable_parameters, train_signature
    from .arguments import training_arguments

    args, out = session.args, session.out
    module_class = _import_module_class(args.module)
    kwargs = training_arguments(args.args_file, args.arg)
    signature = train_signature(module_class)
    declared = [_declared_parameter(parameter) for parameter in signature.parameters.values()]
    hook = f"{module_class.__qualname__}.{PARAMETERS_HOOK}" if getattr(module_class, PARAMETERS_HOOK, None) else None
    resolved = None
    if args.arg or args.args_file or args.trainer:
        _check_train_arguments(module_class, kwargs)
        trainer_name = args.trainer or "default"
        trainer = session.manager.get_trainer(trainer_name)
        try:
            params = trainer.training_parameters(module_class, **kwargs)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), ExitCode.USAGE) from None
        recorded, by_repr = recordable_parameters(params)
        resolved = {"trainer": trainer_name, "parameters": recorded, "parameters_by_repr": list(by_repr)}
    out.document(
        {
            "module": class_path(module_class),
            "signature": str(_readable_signature(module_class, signature)),
            "parameters": declared,
            "hook": hook,
            "resolved": resolved,
        }
    )
    out.line(f"Module: {class_path(module_class)}")
    out.line(f"Signature: {module_class.__qualname__}.train{_readable_signature(module_class, signature)}")
    out.lines(
        table(
            ("PARAMETER", "KIND", "ANNOTATION", "DEFAULT"),
            (
                [p["name"], getattr(inspect.Parameter, p["kind"].upper()).description, p["annotation"] or "-", _default_cell(p)]
                for p in declared
            ),
        )
    )
    if hook:
        out.line(f"Hook: {hook} adjusts the parameters before train receives them.")
    if resolved is not None:
        out.line()
        out.line(f"Parameters train would receive (trainer {resolved['trainer']!r}):")
        by_repr = set(resolved["parameters_by_repr"])
        out.lines(
            [f"  {format_parameter(name, value, by_repr=name in by_repr)}" for name, value in resolved["parameters"].items()]
        )
    return ExitCode.OK


def _declared_parameter(parameter: inspect.Parameter) -> dict[str, Any]:
    """One parameter of ``train`` as JSON: name, kind, annotation, default."""
    from ..module import recordable_parameters

    has_default = parameter.default is not inspect.Parameter.empty
    variadic = parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    default, by_repr = recordable_parameters({"default": parameter.default}) if has_default else ({}, ())
    return {
        "name": parameter.name,
        "kind": parameter.kind.name.lower(),
        "annotation": (
            inspect.formatannotation(parameter.annotation)
            if parameter.annotation is not inspect.Parameter.empty
            else None
        ),
        "required": not has_default and not variadic,
        "default": default.get("default"),
        "default_by_repr": bool(by_repr),
    }


def _default_cell(parameter: Mapping[str, Any]) -> str:
    if parameter["required"]:
        return "(required)"
    if parameter["kind"].startswith("var_"):
        return "-"
    return format_parameter("", parameter["default"], by_repr=parameter["default_by_repr"])[1:]


# -- status, list, logs -------------------------------------------------------------------


def cmd_status(session: Session) -> ExitCode:
    args, out = session.args, session.out
    future = session.manager.get_model_future(args.training_id)
    if not args.watch:
        info = future.get_info()
        out.document(info.to_dict())
        out.lines(status_lines(info, utcnow(), session.trainer_type(info.trainer_name)))
        return ExitCode.OK
    display = open_display(out.stderr, json_mode=out.json, stdout=out.stdout)
    display.start()
    try:
        info = follow(future, display)
    except KeyboardInterrupt:
        display.close()
        out.note(f"\nStopped watching; training {future.id} goes on.")
        return ExitCode.INTERRUPTED
    finally:
        display.close()
    out.document(info.to_dict())
    out.lines(status_lines(info, utcnow(), session.trainer_type(info.trainer_name)))
    return _STATUS_EXIT.get(info.status, ExitCode.FAILURE)


def cmd_list(session: Session) -> ExitCode:
    args, out = session.args, session.out
    manager = session.manager
    try:
        statuses = [TrainingStatus.parse(value) for value in args.status] or None
    except ValueError as exc:
        raise CommandError(f"--status: {exc}", ExitCode.USAGE) from None
    names = [args.trainer] if args.trainer else manager.trainer_names
    found: list[TrainingInfo] = []
    failed: list[str] = []
    for name in names:
        try:
            trainer = manager.get_trainer(name)
            found.extend(
                trainer.list_trainings(
                    status=statuses, since=args.since, tags=args.tag or None, limit=args.limit
                )
            )
        except TrainerkitError as exc:
            if args.trainer:
                raise
            # One unreachable trainer (a cluster that is down) must not hide the others.
            out.note(f"trainerkit: error: trainer {name!r}: cannot list its trainings: {exc}")
            failed.append(name)
        except ValueError as exc:
            raise CommandError(f"--since: {exc}" if args.since else str(exc), ExitCode.USAGE) from None
    found.sort(key=lambda info: info.submission_time, reverse=True)
    if args.limit is not None:
        found = found[: args.limit]
    out.document([info.to_dict() for info in found])
    if found:
        out.lines(table(LIST_HEADERS, (training_row(info, utcnow()) for info in found)))
    else:
        out.line("No trainings." if not failed else "No trainings in the other trainers.")
        if not args.trainer:
            _note_unnamed_trainers(session, [name for name in names if name not in failed])
    return ExitCode.FAILURE if failed else ExitCode.OK


def _note_unnamed_trainers(session: Session, names: list[str]) -> None:
    """Say so when the records hold trainings of trainers this configuration
    does not name: "No trainings." alone would read as if there were none."""
    others: dict[str, dict[str, int]] = {}  # where -> trainer name -> count
    for name in names:
        try:
            where, counts = session.manager.get_trainer(name).record_counts()
        except TrainerkitError:
            continue
        for trainer_name, count in counts.items():
            if trainer_name not in session.manager.trainer_names:
                others.setdefault(where, {})[trainer_name] = count
    path, origin = session.config_path()
    this_config = f"{path} (from {origin})" if path else "the built-in default configuration"
    for where, counts in others.items():
        total = sum(counts.values())
        listed = ", ".join(f"{name!r} ({count})" for name, count in sorted(counts.items()))
        session.out.note(
            f"trainerkit: the records{f' in {where}' if where else ''} hold {total} "
            f"training{'s' if total != 1 else ''} of trainers not named in {this_config}: {listed}; "
            f"to list them, pass --config (or set ${CONFIG_ENV}) to the file that declares those trainers"
        )


def cmd_logs(session: Session) -> ExitCode:
    args, out = session.args, session.out
    future = session.manager.get_model_future(args.training_id)
    try:
        lines = future.logs(follow=args.follow, rank=args.rank)
    except ValueError as exc:  # a rank the training does not have
        raise CommandError(str(exc), ExitCode.USAGE) from None
    except NotImplementedError as exc:  # a trainer type without per-training logs
        raise CommandError(str(exc), ExitCode.UNAVAILABLE) from None
    try:
        for line in lines:
            text = line.rstrip("\n")
            out.document({"line": text}, indent=None)
            out.line(text)
    except NotImplementedError as exc:  # a trainer type without per-training logs
        raise CommandError(str(exc), ExitCode.UNAVAILABLE) from None
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return ExitCode.OK


# -- cancel, delete, result --------------------------------------------------------------


def cmd_cancel(session: Session) -> ExitCode:
    args, out = session.args, session.out
    future = session.manager.get_model_future(args.training_id)
    info = future.get_info()
    if info.status.is_terminal:  # canceled before included: this command canceled nothing
        out.document(info.to_dict())
        raise CommandError(
            f"training {info.id} already ended {info.status.value}; there was nothing to cancel",
            ExitCode.UNAVAILABLE,
        )
    if future.cancel():
        if args.no_wait:
            out.line(f"Cancel of training {future.id} requested.")
            out.document(future.get_info().to_dict())
            return ExitCode.OK
        try:
            info = follow(future, NullDisplay())
        except KeyboardInterrupt:
            out.note(f"\nStopped waiting; training {future.id} is being canceled.")
            return ExitCode.INTERRUPTED
    else:
        info = future.get_info()
    out.document(info.to_dict())
    if info.status is TrainingStatus.CANCELED:
        out.line(f"Training {info.id} CANCELED.")
        return ExitCode.OK
    raise CommandError(
        f"training {info.id} already ended {info.status.value}; there was nothing to cancel",
        ExitCode.UNAVAILABLE,
    )


def cmd_delete(session: Session) -> ExitCode:
    args, out = session.args, session.out
    future = session.manager.get_model_future(args.training_id)
    info = future.get_info()
    # Only a model that is there is deleted (an errored training never saved one).
    if info.save_path and is_url(info.save_path):
        model_there = _saved_size(info.save_path, future.trainer.storage_options)[0] > 0
    else:
        model_there = bool(info.save_path and os.path.isdir(info.save_path))
    future.trainer.delete_training(info.id, delete_model=args.model, keep_checkpoints=args.keep_checkpoints)
    model_deleted = bool(args.model and model_there)
    out.document({"id": info.id, "deleted": True, "model_deleted": model_deleted, "save_path": info.save_path})
    out.line(f"Deleted training {info.id}" + (f" and its model at {info.save_path}." if model_deleted else "."))
    if args.model and not model_deleted:
        where = f" (nothing at {info.save_path})" if info.save_path else ""
        out.note(f"trainerkit: note: training {info.id} had no saved model to delete{where}")
    return ExitCode.OK


def cmd_result(session: Session) -> ExitCode:
    args, out = session.args, session.out
    future = session.manager.get_model_future(args.training_id)
    info = future.get_info()
    if not info.status.is_terminal:
        raise CommandError(
            f"training {info.id} is {info.status.value}, so it has no model yet",
            ExitCode.UNAVAILABLE,
            f"wait for it with: trainerkit status {info.id} --watch",
        )
    if info.status is not TrainingStatus.COMPLETED:
        error = info.errors[0] if info.errors else None
        reason = f": {error.type}: {error.message}" if error and error.type else ""
        raise CommandError(
            f"training {info.id} ended {info.status.value}, so it has no model{reason}",
            _STATUS_EXIT[info.status],
        )
    document, rows = _model_summary(future, info)
    out.document(document)
    width = max(len(label) for label, _ in rows) + 1
    out.lines([f"{label + ':':<{width}} {value}" for label, value in rows])
    return ExitCode.OK


def _model_summary(future: Any, info: TrainingInfo) -> "tuple[dict[str, Any], list[tuple[str, str]]]":
    """The loaded model of a COMPLETED training, as a JSON document and table rows."""
    model = future.load()
    model_class = f"{type(model).__module__}:{type(model).__qualname__}"
    text = repr(model)
    if len(text) > 2000:
        text = text[:2000] + "…"
    files, size = _saved_size(info.save_path, future.trainer.storage_options) if info.save_path else (0, 0)
    document = {
        "id": info.id,
        "class": model_class,
        "save_path": info.save_path,
        "files": files,
        "bytes": size,
        "repr": text,
        "metrics": dict(info.progress.metrics) if info.progress else {},
    }
    rows = [("training", info.id), ("class", model_class), ("save path", info.save_path or "-")]
    if info.save_path:
        rows.append(("on disk", f"{files} file{'s' if files != 1 else ''}, {_format_bytes(size)}"))
    if info.progress is not None and info.progress.metrics:
        rows.append(("metrics", format_metrics(info.progress.metrics)))
    rows.append(("model", text))
    return document, rows


def cmd_load(session: Session) -> ExitCode:
    args, out = session.args, session.out
    trainer = session.manager.get_trainer(args.trainer)
    config = trainer.config
    allowed = getattr(config, "load_allowed_modules", None)
    try:
        check_load_path(args.path)
    except ValueError as exc:
        raise CommandError(str(exc).replace("load() ", "trainerkit load ", 1), ExitCode.USAGE) from None
    model = trainerkit_load(
        args.path, allowed_modules=allowed, storage_options=trainer.storage_options,
        cache=not args.no_cache, cache_dir=trainer.cache_dir,
    )
    model_class = f"{type(model).__module__}:{type(model).__qualname__}"
    text = repr(model)
    if len(text) > 2000:
        text = text[:2000] + "…"
    files, size = _saved_size(args.path, trainer.storage_options)
    out.document({"path": args.path, "class": model_class, "files": files, "bytes": size, "repr": text})
    rows = [("path", args.path), ("class", model_class),
            ("files", f"{files} file{'s' if files != 1 else ''}, {_format_bytes(size)}"), ("model", text)]
    width = max(len(label) for label, _ in rows) + 1
    out.lines([f"{label + ':':<{width}} {value}" for label, value in rows])
    return ExitCode.OK


def _saved_size(path: str, storage_options: Any) -> tuple[int, int]:
    """Files and bytes of a saved model: a directory's, or a URL's manifest's."""
    if is_url(path):
        try:
            manifest = read_manifest(path, storage_options)
        except Exception:  # the summary is informative only
            return 0, 0
        items = manifest["files"] if manifest else []
        return len(items), sum(item["size"] for item in items)
    return _directory_size(path)


def _directory_size(path: str) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(os.path.expanduser(path)):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.path.getsize(os.path.join(root, name))
                files += 1
    return files, size


def _format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover - the loop always returns


# -- trainers, config check --------------------------------------------------------------


def cmd_trainers(session: Session) -> ExitCode:
    out = session.out
    manager = session.manager
    path, _ = session.config_path()
    rows = []
    matrix = []
    for name in manager.trainer_names:
        source = manager.type_source(name)
        levels = _trainer_capabilities(session, name)
        matrix.append((name, levels))
        rows.append(
            {
                "name": name,
                "type": manager.trainer_spec(name).type,
                "source": {"kind": source.kind, "detail": source.detail},
                "capabilities": (
                    {capability: support_flags(levels[capability]) for capability in CAPABILITY_NAMES}
                    if levels is not None
                    else None
                ),
            }
        )
    out.document({"config": path, "trainers": rows})
    out.line(f"Trainers from {path}:" if path else "Trainers (built-in defaults):")
    out.lines(table(("NAME", "TYPE", "SOURCE"), ([r["name"], r["type"], str(manager.type_source(r["name"]))] for r in rows)))
    out.line()
    out.line("Capabilities (see docs/capabilities.md; - is unsupported):")
    out.lines(capability_matrix(CAPABILITY_NAMES, matrix))
    return ExitCode.FAILURE if any(levels is None for _, levels in matrix) else ExitCode.OK


#: The flags of a SupportLevel, in the order JSON lists them.
_SUPPORT_FLAGS = (SupportLevel.NATIVE, SupportLevel.BEST_EFFORT, SupportLevel.CAN_DISABLE)


def support_flags(level: SupportLevel) -> list[str]:
    """A :class:`~trainerkit.SupportLevel` as JSON: its flag names
    (``["NATIVE", "CAN_DISABLE"]``), ``[]`` when unsupported."""
    return [str(flag.name) for flag in _SUPPORT_FLAGS if flag in level]


def _trainer_capabilities(session: Session, name: str) -> Optional[dict[str, SupportLevel]]:
    """Trainer ``name``'s ``capabilities()``, or None (said on stderr) when the
    trainer cannot be built: one unreachable cluster must not hide the others."""
    try:
        return session.manager.get_trainer(name).capabilities()
    except TrainerkitError as exc:
        session.out.note(f"trainerkit: error: trainer {name!r}: cannot tell its capabilities: {exc}")
        return None


def cmd_config_check(session: Session) -> ExitCode:
    from ..config import load_yaml_specs

    args, out = session.args, session.out
    path = args.file or session.config_path()[0]
    if not path:
        raise CommandError(
            "no file to check", ExitCode.USAGE, f"give FILE, --config FILE, or set ${CONFIG_ENV}"
        )
    try:
        specs = load_yaml_specs(path)
    except ConfigError as exc:
        problems = exc.problems
        out.document({"file": path, "valid": False, "problems": problems, "trainers": []})
        out.lines(problems)
        out.line(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {path}.")
        return ExitCode.USAGE
    trainers = [{"name": name, "type": spec.type} for name, spec in specs.items()]
    out.document({"file": path, "valid": True, "problems": [], "trainers": trainers})
    listed = ", ".join(f"{t['name']} ({t['type']})" for t in trainers)
    out.line(f"{path} is valid: {len(trainers)} trainer{'s' if len(trainers) != 1 else ''}: {listed}.")
    return ExitCode.OK


COMMANDS: dict[str, Callable[[Session], ExitCode]] = {
    "train": cmd_train,
    "describe": cmd_describe,
    "status": cmd_status,
    "list": cmd_list,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "result": cmd_result,
    "load": cmd_load,
    "trainers": cmd_trainers,
    "config check": cmd_config_check,
}


# -- running one command --------------------------------------------------------------


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, so log
    lines go through the progress bar's redirection instead of across it."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        return None  # StreamHandler.__init__ assigns one; the live sys.stderr wins


def _configure_logging(verbosity: int) -> None:
    if not verbosity:
        return
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("trainerkit")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


def _ensure_cwd_importable() -> None:
    # `python -m trainerkit` puts the current directory first on sys.path; the
    # console script does not. Do the same so MODULE resolves either way.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def run_command(name: str, args: argparse.Namespace) -> int:
    """Run sub-command ``name``; report any failure; return the exit status."""
    json_mode = bool(args.json)
    output = Output(json_mode, sys.stdout, sys.stderr)
    session = Session(args, output)
    _configure_logging(args.verbose)
    _ensure_cwd_importable()
    # In --json mode stdout carries one document; anything else printed in
    # this process (a LOCAL training's own prints) goes to stderr instead.
    redirect = contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()
    try:
        with redirect:
            return int(COMMANDS[name](session))
    except KeyboardInterrupt:
        output.note("\nInterrupted.")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader left (`trainerkit status ID | head -3`): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return int(ExitCode.FAILURE)
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            output.note(traceback.format_exc().rstrip())
            output.note(
                "trainerkit: internal error: this is a bug in trainerkit or a plugin; please "
                "report it with the traceback above"
            )
            code = ExitCode.FAILURE
            message, hint = f"{qualified_name(type(exc))}: {exc}", ""
        else:
            message = exc.message if isinstance(exc, CommandError) else str(exc)
            hint = exc.hint if isinstance(exc, CommandError) else ""
            output.note(f"trainerkit: error: {message}")
            if hint:
                output.note("\n".join("  " + line for line in hint.splitlines()))
        if json_mode:
            error = {"exit_code": int(code), "kind": code.name.lower(), "message": message}
            if hint:
                error["hint"] = hint
            if isinstance(exc, CommandError):
                error.update(exc.details)
            output.document({"error": error})
        return int(code)
    finally:
        with contextlib.suppress(Exception):
            session.close()
