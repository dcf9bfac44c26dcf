"""The training spec: everything a process needs to run one training, as JSON.

A :class:`TrainingSpec` names the module class by import path and carries the
arguments pickled (inline or in a file) or as plain JSON, the save path and the
training id, plus optional process settings (``sys_path``, ``cwd``,
``environ``). The pickling here refuses, at submission, anything that could
not be rebuilt on the other side (objects of ``__main__``, lambdas, open files).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import pickle
import sys
import types
from typing import Any, Mapping, Optional, Sequence

from ..module import bind_train_arguments, class_path, import_object
from ..private_files import open_private

SPEC_VERSION = 1


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
        progress: False when the training turned the ``progress`` capability
            off: its ``report_progress`` calls are then not reported.
        storage_options: ``{protocol: {option: value}}`` for URL save paths
            and checkpoint directories (the trainer's ``storage_options``).
        checkpoint_dir: where ``save_checkpoint`` saves (None: nowhere).
        resume_from: the training whose checkpoints ``latest_checkpoint``
            falls back to.
        cache_dir: the cache of models loaded from URLs (None: the default).
        attempt: which attempt of the training this is (1 for the first).
        procs_per_node: rank processes the worker starts for this training (1:
            the training process alone); each gets the torchrun variables, rank
            0 is the training process (pool workers only).
        rank_devices: the GPU ids of each local rank, in rank order (its
            ``CUDA_VISIBLE_DEVICES``); None leaves the environment's.
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
    progress: bool = True
    storage_options: Optional[Mapping[str, Any]] = None
    checkpoint_dir: Optional[str] = None
    resume_from: Optional[str] = None
    cache_dir: Optional[str] = None
    attempt: int = 1
    procs_per_node: int = 1
    rank_devices: Optional[tuple[tuple[str, ...], ...]] = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": SPEC_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = [list(item) if isinstance(item, tuple) else item for item in value]
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
        detach, progress = data.get("detach", False), data.get("progress", True)
        for key, flag in (("detach", detach), ("progress", progress)):
            if not isinstance(flag, bool):
                raise SpecError(f"spec key {key!r} must be true or false, got {flag!r}")
        storage_options = data.get("storage_options")
        if storage_options is not None:
            from ..storage import check_storage_options

            try:
                storage_options = check_storage_options(storage_options, "spec key 'storage_options'")
            except TypeError as exc:
                raise SpecError(str(exc)) from None
        attempt = data.get("attempt", 1)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise SpecError(f"spec key 'attempt' must be a whole number >= 1, got {attempt!r}")
        procs = data.get("procs_per_node", 1)
        if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
            raise SpecError(f"spec key 'procs_per_node' must be an integer >= 1, got {procs!r}")
        rank_devices = data.get("rank_devices")
        if rank_devices is not None and (
            not isinstance(rank_devices, (list, tuple))
            or len(rank_devices) != procs
            or not all(
                isinstance(ids, (list, tuple)) and all(isinstance(i, str) for i in ids) for ids in rank_devices
            )
        ):
            raise SpecError(
                f"spec key 'rank_devices' must be a list of {procs} lists of device ids (one per rank), "
                f"got {rank_devices!r}"
            )
        return cls(
            storage_options=storage_options,
            checkpoint_dir=text("checkpoint_dir"),
            resume_from=text("resume_from"),
            cache_dir=text("cache_dir"),
            attempt=attempt,
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
            progress=progress,
            procs_per_node=procs,
            rank_devices=tuple(tuple(ids) for ids in rank_devices) if rank_devices is not None else None,
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
        # A file trainerkit wrote into a run directory (removed after loading)
        # is never read through a symbolic link someone planted there.
        opened = os.fdopen(open_private(path, os.O_RDONLY), "rb") if arguments.get("remove_after_load") else open(path, "rb")
        with opened as handle:
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
