"""How a training ended, as the process that ran it reports it (:class:`Outcome`),
and the atomic JSON write that every durable run file uses."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
from typing import Any, Mapping, Optional

from ..info import ErrorDetail, ProgressReport, TrainingStatus, _parse_time
from ..private_files import open_private


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a training ended, as its worker reports it.

    ``status`` is terminal; ``errors`` explain an ERRORED or CANCELED one;
    ``progress`` is the last report, so nothing sent just before the end is lost.
    """

    status: TrainingStatus
    time: datetime.datetime
    errors: tuple[ErrorDetail, ...] = ()
    progress: Optional[ProgressReport] = None

    def __post_init__(self) -> None:
        if not self.status.is_terminal:
            raise ValueError(f"an outcome is a terminal status, not {self.status.value}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "time": self.time.isoformat(),
            "errors": [error.to_dict() for error in self.errors],
            "progress": self.progress.to_dict() if self.progress else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Outcome":
        time = _parse_time(data.get("time"))
        if time is None:
            raise ValueError("outcome without time")
        progress = data.get("progress")
        return cls(
            status=TrainingStatus.parse(data["status"]),
            time=time,
            errors=tuple(ErrorDetail.from_dict(e) for e in data.get("errors") or ()),
            progress=ProgressReport.from_dict(progress) if progress else None,
        )


def write_json_atomically(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary sibling and a rename."""
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    try:
        with os.fdopen(open_private(tmp, os.O_WRONLY, exclusive=True), "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
