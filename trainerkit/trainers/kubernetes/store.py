"""Records of a KUBERNETES trainer, kept by the cluster: a record is a Job.

A training's record is its Job (found by the trainer's label) plus that
Job's pods; :func:`~trainerkit.trainers.kubernetes.status.training_info`
turns them into a TrainingInfo. Nothing needs to be stored anywhere else, so
any process with the same config (a restarted caller, the CLI on another
machine) sees the same trainings.

Two things live in this process's memory only:

* a submission in progress (between ``add`` and the Job's creation by the
  trainer), so that a failed submission can be undone without touching a Job
  that another process may have created under the same name;
* fields the trainer changed through :meth:`update`, overlaid on what the
  cluster says until the training ends. KUBERNETES trainers do not need
  it (status and progress come from the cluster), but the interface allows it.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from typing import TYPE_CHECKING, Any, Optional

from ... import ids
from ...errors import TrainingExistsError, TrainingNotFoundError
from ...info import TrainingInfo
from ...store import UPDATABLE_FIELDS, TrainingQuery, TrainingStore
from .manifest import LABEL_TRAINER, LABEL_TRAINING_ID, trainer_selector, training_selector
from .status import training_info
from .watch import ClusterCache

if TYPE_CHECKING:
    from .api import KubeApi


class KubernetesTrainingStore(TrainingStore):
    """The trainings of one KUBERNETES trainer, read from its Jobs and pods.

    Reads come from the trainer's :class:`ClusterCache` once its watches run,
    and from direct requests before that (a one-off ``get_model_future`` or
    ``list_trainings`` costs two requests and starts no watch).
    """

    def __init__(self, api: "KubeApi", cache: ClusterCache, instance_name: str) -> None:
        self._api = api
        self._cache = cache
        self._label_value = ids.encode_name(instance_name)
        self._selector = trainer_selector(instance_name)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[TrainingInfo, bool]] = {}
        self._overlay: dict[str, dict[str, Any]] = {}

    # -- submission ------------------------------------------------------------------------

    def add(self, info: TrainingInfo, *, owner: str = "", replace_finished: bool = False) -> None:
        """Note a submission in progress; the trainer then creates the Job.

        A caller-chosen id (``replace_finished``) is checked against the cluster
        now: a live training with that id raises TrainingExistsError. A clash of
        a generated id (60 random bits) is left to the Job's creation to detect.
        """
        if replace_finished:
            job, pods = self.job_and_pods(info.id)
            if job is not None:
                existing = self.info(job, pods)
                if not existing.status.is_terminal:
                    raise TrainingExistsError(
                        f"a training with id {info.id!r} already exists and is "
                        f"{existing.status.value}; choose another external_training_id, or cancel "
                        "that training first"
                    )
        with self._lock:
            if info.id in self._pending:
                raise TrainingExistsError(f"a training with id {info.id!r} is being submitted already")
            self._pending[info.id] = (info, replace_finished)

    def replaces_finished(self, training_id: str) -> bool:
        """Whether the pending submission may replace a finished training of the same id."""
        with self._lock:
            pending = self._pending.get(training_id)
        return bool(pending and pending[1])

    def is_pending(self, training_id: str) -> bool:
        """Whether the training is being submitted by this process right now."""
        with self._lock:
            return training_id in self._pending

    def confirm(self, training_id: str, job: dict[str, Any]) -> None:
        """The Job of a pending submission exists now: it is the record from here on."""
        self._cache.remember_job(job, created=True)
        with self._lock:
            self._pending.pop(training_id, None)

    # -- the TrainingStore interface ------------------------------------------------------------

    def update(self, training_id: str, **changes: Any) -> TrainingInfo:
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update record fields {sorted(unknown)}")
        info = self.get(training_id)
        if info is None:
            raise TrainingNotFoundError(f"no training with id {training_id!r}")
        if info.status.is_terminal:
            return info
        with self._lock:
            self._overlay.setdefault(training_id, {}).update(changes)
        return dataclasses.replace(info, **changes)

    def get(self, training_id: str) -> Optional[TrainingInfo]:
        job, pods = self.job_and_pods(training_id)
        if job is None:
            with self._lock:
                pending = self._pending.get(training_id)
            return pending[0] if pending else None
        return self.info(job, pods)

    def list(self, query: TrainingQuery) -> list[TrainingInfo]:
        if self._cache.running:
            jobs, pods = self._cache.jobs(), self._cache.pods()
        else:
            jobs = self._api.list_jobs(self._selector).get("items") or []
            pods = self._api.list_pods(self._selector).get("items") or []
        by_training: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            training_id = (pod.get("metadata", {}).get("labels") or {}).get(LABEL_TRAINING_ID)
            if training_id:
                by_training.setdefault(training_id, []).append(pod)
        infos = [self.info(job, by_training.get(job["metadata"]["name"], [])) for job in jobs]
        seen = {info.id for info in infos}
        with self._lock:
            infos += [info for training_id, (info, _) in self._pending.items() if training_id not in seen]
        infos = [info for info in infos if query.matches(info)]
        infos.sort(key=lambda info: info.submission_time, reverse=True)
        return infos[: query.limit] if query.limit is not None else infos

    def delete(self, training_id: str) -> bool:
        """Delete the training's Job (its pods and ConfigMap go with it).

        A submission still pending is only forgotten: its Job, if any, was
        never confirmed as this training's and is not touched.
        """
        with self._lock:
            if self._pending.pop(training_id, None) is not None:
                return True
            self._overlay.pop(training_id, None)
        job, _ = self.job_and_pods(training_id, with_pods=False)
        if job is None:
            return False
        removed = self._api.delete_job(training_id, uid=job["metadata"].get("uid"))
        self._cache.forget_job(training_id)
        return removed

    def purge_finished(
        self, finished_before: datetime.datetime, trainer_name: Optional[str] = None
    ) -> list[TrainingInfo]:
        doomed = [
            info
            for info in self.list(TrainingQuery(trainer_name=trainer_name))
            if info.status.is_terminal and info.completion_time is not None and info.completion_time < finished_before
        ]
        for info in doomed:
            self.delete(info.id)
        return doomed

    # -- reading the cluster ----------------------------------------------------------------

    def info(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> TrainingInfo:
        """The TrainingInfo of a Job (with this process's overlay while it is live)."""
        info = training_info(job, pods)
        if info.status.is_terminal:
            with self._lock:
                self._overlay.pop(info.id, None)
            return info
        with self._lock:
            changes = dict(self._overlay.get(info.id) or {})
        return dataclasses.replace(info, **changes) if changes else info

    def job_and_pods(
        self, training_id: str, with_pods: bool = True
    ) -> tuple[Optional[dict[str, Any]], list[dict[str, Any]]]:
        """The training's Job (None when absent or not this trainer's) and its pods."""
        if self._cache.running:
            job = self._cache.job(training_id)
            if job is not None:
                return job, self._cache.pods(training_id) if with_pods else []
            # Not seen by the watch (yet): created a moment ago by another process?
        job = self._api.get_job(training_id)
        if job is None or (job["metadata"].get("labels") or {}).get(LABEL_TRAINER) != self._label_value:
            return None, []
        if self._cache.running:
            return job, self._cache.pods(training_id) if with_pods else []
        if not with_pods:
            return job, []
        return job, self._api.list_pods(training_selector(training_id)).get("items") or []
