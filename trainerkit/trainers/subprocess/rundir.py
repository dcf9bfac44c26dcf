"""A SUBPROCESS training's durable files: who runs it, how far it got, how it ended.

Each training handed to a worker process gets a directory (under the state
directory, named by the training id) that the worker writes and any process
reads, so a training outlives the process that started it (``detach``) and is
still observable, cancellable and loadable from elsewhere:

* ``worker.json`` — the identities (``host|pid|start``, see
  :mod:`trainerkit.owner`) of the supervising worker and of the training
  process, written when the training starts;
* ``progress.json`` — the latest progress report (detached trainings only);
* ``outcome.json`` — the final status and errors, written before the worker
  exits;
* ``arguments.pkl`` — pickled arguments too large to travel inline (removed
  once the training process has read them);
* ``rank<k>.outcome.json`` — how rank ``k`` of a multi-process training ended
  (its error, when it failed), for ranks other than 0.

Every file is written whole and renamed into place, so a reader never sees
half of one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
from typing import Any, Mapping, Optional

from ...info import ProgressReport, _parse_time
from ...private_files import PRIVATE_DIR_MODE, open_private
from ...runner.outcome import Outcome, write_json_atomically

log = logging.getLogger("trainerkit")

WORKER_FILE = "worker.json"
PROGRESS_FILE = "progress.json"
OUTCOME_FILE = "outcome.json"
ARGUMENTS_FILE = "arguments.pkl"


def rank_outcome_file(rank: int) -> str:
    """The run directory file of rank ``rank``'s outcome (ranks other than 0)."""
    return f"rank{rank}.outcome.json"


def rank_log_path(log_path: str, rank: int) -> str:
    """The log file of rank ``rank`` of a training whose log is ``log_path``:
    rank 0 writes ``log_path`` itself, rank k ``<training id>.rank<k>.log``
    beside it (``os.devnull`` when the training's logs are off)."""
    if rank == 0 or log_path == os.devnull:
        return log_path
    root, ext = os.path.splitext(log_path)
    return f"{root}.rank{rank}{ext}"


@dataclasses.dataclass(frozen=True)
class WorkerRecord:
    """Who runs a training: written by the worker when the training starts.

    Attributes:
        supervisor: owner identity of the worker process that supervises the
            training (the one to signal for a cancel).
        training_process: owner identity of the process that runs ``train``;
            its process group holds every process the training started.
        start_time: when the training process received the training.
        detach: whether the training outlives the process that submitted it.
        devices: the GPU ids the training was given (rank 0's first), so a
            process that records a detached training's outcome knows them.
    """

    supervisor: str
    training_process: str
    start_time: datetime.datetime
    detach: bool = False
    devices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "supervisor": self.supervisor,
            "training_process": self.training_process,
            "start_time": self.start_time.isoformat(),
            "detach": self.detach,
            "devices": list(self.devices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorkerRecord":
        start = _parse_time(data.get("start_time"))
        if start is None:
            raise ValueError("worker record without start_time")
        return cls(
            supervisor=str(data["supervisor"]),
            training_process=str(data["training_process"]),
            start_time=start,
            detach=bool(data.get("detach", False)),
            devices=tuple(str(device) for device in data.get("devices") or ()),
        )


def _read_json(path: str) -> Optional[dict[str, Any]]:
    try:
        with os.fdopen(open_private(path, os.O_RDONLY), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable run file %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


class RunDirectory:
    """The files of one training (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"RunDirectory({self.path!r})"

    def create(self) -> None:
        """Create the directory, private to this user (its parent must exist)."""
        try:
            os.mkdir(self.path, PRIVATE_DIR_MODE)
        except FileExistsError:
            if os.path.islink(self.path) or not os.path.isdir(self.path):
                raise

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write_worker(self, record: WorkerRecord) -> None:
        write_json_atomically(self.file(WORKER_FILE), record.to_dict())

    def read_worker(self) -> Optional[WorkerRecord]:
        data = _read_json(self.file(WORKER_FILE))
        if data is None:
            return None
        try:
            return WorkerRecord.from_dict(data)
        except (KeyError, ValueError) as exc:
            log.warning("ignoring malformed %s: %s", self.file(WORKER_FILE), exc)
            return None

    def write_progress(self, report: ProgressReport) -> None:
        write_json_atomically(self.file(PROGRESS_FILE), report.to_dict())

    def read_progress(self) -> Optional[ProgressReport]:
        data = _read_json(self.file(PROGRESS_FILE))
        return ProgressReport.from_dict(data) if data is not None else None

    def write_outcome(self, outcome: Outcome) -> None:
        write_json_atomically(self.file(OUTCOME_FILE), outcome.to_dict())

    def read_outcome(self, name: str = OUTCOME_FILE) -> Optional[Outcome]:
        """The training's outcome (or, by ``name``, one rank's: :func:`rank_outcome_file`)."""
        data = _read_json(self.file(name))
        if data is None:
            return None
        try:
            return Outcome.from_dict(data)
        except (KeyError, ValueError) as exc:
            log.warning("ignoring malformed %s: %s", self.file(name), exc)
            return None

    def remove(self) -> None:
        """Delete the directory and everything in it (missing is fine)."""
        shutil.rmtree(self.path, ignore_errors=True)
