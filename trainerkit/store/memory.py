"""Records in this process's memory only (``state_dir: ':memory:'``)."""

from __future__ import annotations

import datetime
import threading
from typing import Any, Optional

from ..errors import TrainingExistsError, TrainingNotFoundError
from ..info import TrainingInfo
from .base import UPDATABLE_FIELDS, TrainingQuery, TrainingStore


class MemoryTrainingStore(TrainingStore):
    """Records in this process's memory only: gone when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, tuple[TrainingInfo, str]] = {}

    def add(self, info: TrainingInfo, *, owner: str = "", replace_finished: bool = False) -> None:
        with self._lock:
            existing = self._records.get(info.id)
            if existing is not None:
                if not replace_finished or not existing[0].status.is_terminal:
                    raise TrainingExistsError(
                        f"a training with id {info.id!r} already exists and is "
                        f"{existing[0].status.value}; choose another external_training_id"
                        if not existing[0].status.is_terminal
                        else f"a training with id {info.id!r} already exists"
                    )
                del self._records[info.id]
            self._records[info.id] = (info, owner)

    def update(self, training_id: str, **changes: Any) -> TrainingInfo:
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update record fields {sorted(unknown)}")
        with self._lock:
            try:
                info, owner = self._records[training_id]
            except KeyError:
                raise TrainingNotFoundError(f"no training with id {training_id!r}") from None
            if info.status.is_terminal:
                return info
            info = info.evolve(**changes)
            self._records[training_id] = (info, owner)
            return info

    def get(self, training_id: str) -> Optional[TrainingInfo]:
        with self._lock:
            record = self._records.get(training_id)
        return record[0] if record else None

    def get_owner(self, training_id: str) -> Optional[str]:
        with self._lock:
            record = self._records.get(training_id)
        return record[1] if record else None

    def list(self, query: TrainingQuery) -> list[TrainingInfo]:
        with self._lock:
            # dicts keep insertion order: reversed, ties list the newest first, as SQLite does
            infos = [info for info, _ in reversed(self._records.values()) if query.matches(info)]
        infos.sort(key=lambda info: info.submission_time, reverse=True)  # stable
        return infos[: query.limit] if query.limit is not None else infos

    def delete(self, training_id: str) -> bool:
        with self._lock:
            return self._records.pop(training_id, None) is not None

    def purge_finished(
        self, finished_before: datetime.datetime, trainer_name: Optional[str] = None
    ) -> list[TrainingInfo]:
        with self._lock:
            doomed = [
                info
                for info, _ in self._records.values()
                if info.status.is_terminal
                and info.completion_time is not None
                and info.completion_time < finished_before
                and (trainer_name is None or info.trainer_name == trainer_name)
            ]
            for info in doomed:
                del self._records[info.id]
        return doomed
