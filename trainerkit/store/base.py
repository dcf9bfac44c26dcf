"""The record store interface: what every backend's records look like to the base class.

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
from typing import Any, Iterable, Optional, Sequence

from ..info import TrainingInfo, TrainingStatus

#: Fields of TrainingInfo that ``update`` may change.
UPDATABLE_FIELDS = frozenset(
    {"status", "start_time", "completion_time", "errors", "progress", "detail", "save_path", "devices", "attempt"}
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

    def count_by_trainer(self) -> dict[str, int]:
        """How many records each trainer name has here, this trainer's and any
        other's (several configurations may share one state directory)."""
        counts: dict[str, int] = {}
        for info in self.list(TrainingQuery()):
            counts[info.trainer_name] = counts.get(info.trainer_name, 0) + 1
        return counts

    def describe(self) -> str:
        """Where the records live, for messages (a path, a cluster); may be empty."""
        return ""

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
