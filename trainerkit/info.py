"""Training status and the information a future reports about its training.

Everything here is plain data that crosses process and machine boundaries as
JSON (``to_dict`` / ``from_dict``), so a record written by one process (or a
pod) reads the same in any other.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from typing import Any, Mapping, Optional

from .capabilities import levels_from_json, levels_to_json


class TrainingStatus(str, enum.Enum):
    """Where a training is in its life. ``QUEUED`` and ``RUNNING`` are live;
    the other three are terminal and never change again."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ERRORED = "ERRORED"
    CANCELED = "CANCELED"

    #: True for COMPLETED, ERRORED and CANCELED.
    is_terminal: bool

    def __init__(self, value: str) -> None:
        # A plain attribute, not a property: it is read a dozen times per training.
        self.is_terminal = value in ("COMPLETED", "ERRORED", "CANCELED")

    @classmethod
    def parse(cls, value: "str | TrainingStatus") -> "TrainingStatus":
        """Accept a status or its name in any case; a clear ValueError otherwise."""
        if isinstance(value, TrainingStatus):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        raise ValueError(
            f"{value!r} is not a training status; use one of "
            + ", ".join(status.value for status in cls)
        )

    def __str__(self) -> str:
        return self.value


def qualified_name(exc_type: type) -> str:
    """``module.QualName`` of a class (bare for builtins): how error types are recorded."""
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


@dataclasses.dataclass(frozen=True)
class ErrorDetail:
    """One error of a training: the exception's dotted type name, its message
    and the traceback text as the process that raised it printed it."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorDetail":
        """Describe ``exc`` (with its traceback text)."""
        import traceback as traceback_module

        exc_type = type(exc)
        text = "".join(traceback_module.format_exception(exc_type, exc, exc.__traceback__))
        return cls(type=qualified_name(exc_type), message=str(exc), traceback=text)

    @classmethod
    def of(cls, exc_type: type, message: str, traceback: str = "") -> "ErrorDetail":
        """An error of type ``exc_type`` that was not raised as such (a crash, a
        cancel), recorded under the type's qualified name."""
        return cls(type=qualified_name(exc_type), message=message, traceback=traceback)

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ErrorDetail":
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )


@dataclasses.dataclass(frozen=True)
class ProgressReport:
    """The latest ``report_progress`` call of a training."""

    step: Optional[float] = None
    total: Optional[float] = None
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    time: Optional[datetime.datetime] = None

    @property
    def fraction(self) -> Optional[float]:
        """``step / total`` clamped to [0, 1], or None when either is unknown."""
        if self.step is None or not self.total:
            return None
        return max(0.0, min(1.0, float(self.step) / float(self.total)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total": self.total,
            "metrics": dict(self.metrics),
            "time": _iso(self.time),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProgressReport":
        return cls(
            step=data.get("step"),
            total=data.get("total"),
            metrics=dict(data.get("metrics") or {}),
            time=_parse_time(data.get("time")),
        )


@dataclasses.dataclass(frozen=True)
class TrainingInfo:
    """A snapshot of one training, as ``future.get_info()`` returns it.

    Attributes:
        id: the training id (a DNS-1123 label that starts with the trainer name).
        trainer_name: the name of the trainer in the configuration.
        status: a :class:`TrainingStatus`.
        module: the trained class as ``package.module:QualName``.
        save_path: where the model is (or will be) saved, or None.
        model_name: the ``model_name`` given to ``train``, or None.
        tags: the tags given to ``train``.
        submission_time / start_time / completion_time: aware UTC datetimes
            (None until the event happened).
        errors: :class:`ErrorDetail` of an ERRORED training (and the reason of
            a CANCELED one when there is one).
        progress: the latest :class:`ProgressReport`, or None.
        detail: a short human-readable note on the current state (for example
            why a training is still queued), or "".
        capabilities: each capability the training requested and the
            :class:`~trainerkit.SupportLevel` it was served at (None: not
            served, or turned off); empty when none were requested.
        parameters: the arguments ``train`` received, by parameter name
            (defaults filled in, after the module's ``training_parameters``
            hook); values that are not JSON are recorded by ``repr``.
        parameters_by_repr: the names in ``parameters`` recorded by ``repr``.
        devices: the GPU ids the training was given (rank 0's first), or ().
        attempt: which attempt is running (or ran last), counting from 1: a
            crashed attempt retried (``max_retries``) runs again with the same id.
        ranks: the training's processes (``Resources.world_size``: 1 unless
            it asked for several); ``future.logs(rank=k)`` reads rank ``k``'s output.
    """

    id: str
    trainer_name: str
    status: TrainingStatus
    module: str
    submission_time: datetime.datetime
    save_path: Optional[str] = None
    model_name: Optional[str] = None
    tags: tuple[str, ...] = ()
    start_time: Optional[datetime.datetime] = None
    completion_time: Optional[datetime.datetime] = None
    errors: tuple[ErrorDetail, ...] = ()
    progress: Optional[ProgressReport] = None
    detail: str = ""
    capabilities: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    parameters_by_repr: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    attempt: int = 1
    ranks: int = 1

    def evolve(self, **changes: Any) -> "TrainingInfo":
        """A copy with ``changes`` applied (``dataclasses.replace`` without its
        per-call introspection: records change several times per training)."""
        if not _INFO_FIELDS.issuperset(changes):
            raise TypeError(f"TrainingInfo has no fields {sorted(changes.keys() - _INFO_FIELDS)}")
        new = object.__new__(TrainingInfo)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        return {
            "id": self.id,
            "trainer_name": self.trainer_name,
            "status": self.status.value,
            "module": self.module,
            "save_path": self.save_path,
            "model_name": self.model_name,
            "tags": list(self.tags),
            "submission_time": _iso(self.submission_time),
            "start_time": _iso(self.start_time),
            "completion_time": _iso(self.completion_time),
            "errors": [error.to_dict() for error in self.errors],
            "progress": self.progress.to_dict() if self.progress else None,
            "detail": self.detail,
            "capabilities": levels_to_json(self.capabilities),
            "parameters": dict(self.parameters),
            "parameters_by_repr": list(self.parameters_by_repr),
            "devices": list(self.devices),
            "attempt": self.attempt,
            "ranks": self.ranks,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingInfo":
        """The inverse of :meth:`to_dict`."""
        progress = data.get("progress")
        submission = _parse_time(data.get("submission_time"))
        return cls(
            id=data["id"],
            trainer_name=data["trainer_name"],
            status=TrainingStatus.parse(data["status"]),
            module=data.get("module", ""),
            save_path=data.get("save_path"),
            model_name=data.get("model_name"),
            tags=tuple(data.get("tags") or ()),
            submission_time=submission or utcnow(),
            start_time=_parse_time(data.get("start_time")),
            completion_time=_parse_time(data.get("completion_time")),
            errors=tuple(ErrorDetail.from_dict(e) for e in data.get("errors") or ()),
            progress=ProgressReport.from_dict(progress) if progress else None,
            detail=data.get("detail") or "",
            capabilities=levels_from_json(data.get("capabilities")),
            parameters=dict(data.get("parameters") or {}),
            parameters_by_repr=tuple(data.get("parameters_by_repr") or ()),
            devices=tuple(str(device) for device in data.get("devices") or ()),
            attempt=_attempt(data.get("attempt")),
            ranks=int(data.get("ranks") or 1),
        )


def _attempt(value: Any) -> int:
    """A recorded attempt number; records written before attempts existed say 1."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


_INFO_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainingInfo))


def utcnow() -> datetime.datetime:
    """The current time as an aware UTC datetime."""
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(value: Optional[datetime.datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> Optional[datetime.datetime]:
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def check_metric_value(name: str, value: Any) -> Any:
    """Metrics travel as JSON: accept numbers, strings, booleans and None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:  # numpy scalars and the like
        converted = value.item()
    except AttributeError:
        converted = value
    if isinstance(converted, (bool, int, float, str)):
        return converted
    raise TypeError(
        f"report_progress metric {name}={value!r} is a {type(value).__name__}; metrics must be "
        "numbers, strings, booleans or None (convert it, e.g. float(x))"
    )
