"""Where training records live, behind one small interface.

A record is a :class:`~trainerkit.TrainingInfo` plus the ``owner`` that runs
it (a process identity for LOCAL/SUBPROCESS; backends whose records live
elsewhere, such as the cluster for KUBERNETES, implement the interface over
their own source). The trainer base class talks to records only through
:class:`TrainingStore`.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import threading
from typing import Any, Iterable, Optional, Sequence

from .errors import TrainingExistsError, TrainingNotFoundError
from .info import TrainingInfo, TrainingStatus

#: Fields of TrainingInfo that ``update`` may change.
UPDATABLE_FIELDS = frozenset(
    {"status", "start_time", "completion_time", "errors", "progress", "detail", "save_path"}
)


@dataclasses.dataclass(frozen=True)
class TrainingQuery:
    """A ``list_trainings`` filter. ``tags``: every listed tag must be present."""

    trainer_name: Optional[str] = None
    status: Optional[frozenset[TrainingStatus]] = None
    since: Optional[datetime.datetime] = None
    tags: tuple[str, ...] = ()
    limit: Optional[int] = None

    def matches(self, info: TrainingInfo) -> bool:
        if self.trainer_name is not None and info.trainer_name != self.trainer_name:
            return False
        if self.status is not None and info.status not in self.status:
            return False
        if self.since is not None and info.submission_time < self.since:
            return False
        return all(tag in info.tags for tag in self.tags)


class TrainingStore(abc.ABC):
    """Durable (or not) records of trainings.

    Implementations must be safe to call from several threads at once.
    """

    @abc.abstractmethod
    def add(self, info: TrainingInfo, *, owner: str = "", replace_finished: bool = False) -> None:
        """Insert a new record.

        With ``replace_finished``, a finished record with the same id is
        replaced atomically; a live one always raises TrainingExistsError.
        """

    @abc.abstractmethod
    def update(self, training_id: str, **changes: Any) -> TrainingInfo:
        """Change fields of a record (see UPDATABLE_FIELDS); return the new info.

        A record that is already terminal is never changed (the first final
        status wins) and is returned unchanged. Raises TrainingNotFoundError.
        """

    @abc.abstractmethod
    def get(self, training_id: str) -> Optional[TrainingInfo]:
        """The record, or None."""

    def get_owner(self, training_id: str) -> Optional[str]:
        """The owner recorded by ``add``, or None when unknown."""
        return None

    @abc.abstractmethod
    def list(self, query: TrainingQuery) -> list[TrainingInfo]:
        """Matching records, newest submission first."""

    @abc.abstractmethod
    def delete(self, training_id: str) -> bool:
        """Remove a record; False when there was none."""

    @abc.abstractmethod
    def purge_finished(
        self, finished_before: datetime.datetime, trainer_name: Optional[str] = None
    ) -> list[TrainingInfo]:
        """Remove terminal records completed before the given time; return them."""

    def close(self) -> None:
        """Release resources (files, connections)."""


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


def normalize_statuses(
    status: "TrainingStatus | str | Iterable[TrainingStatus | str] | None",
) -> Optional[frozenset[TrainingStatus]]:
    """Accept one status, a name, or several, for ``list_trainings(status=...)``."""
    if status is None:
        return None
    if isinstance(status, (str, TrainingStatus)):
        return frozenset({TrainingStatus.parse(status)})
    return frozenset(TrainingStatus.parse(s) for s in status)


def normalize_tags(tags: "Sequence[str] | str | None") -> tuple[str, ...]:
    """Tags are non-empty strings; a single string is one tag."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = [tags]
    result = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"tags must be non-empty strings, got {tag!r}")
        if tag not in result:
            result.append(tag)
    return tuple(result)
