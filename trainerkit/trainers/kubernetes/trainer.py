"""KUBERNETES: one ``batch/v1`` Job per training, through the official client.

* ``train()`` checks everything it can before anything is sent (the module
  importable by path, arguments that can travel, a save path the pod can
  reach, manifests the API server will accept), then creates the training's
  ConfigMap and Job and makes the Job own the ConfigMap.
* Status, progress and errors come from the Job and its pods
  (:mod:`.status`), all of them served from one shared pair of watches per
  trainer (:mod:`.watch`), which pushes every change to the futures.
* ``cancel()`` suspends the Job (its pods are stopped) and annotates it
  ``trainerkit.io/canceled``, so the cancellation outlives this process.
* Records are the Jobs (:mod:`.store`): a fresh process with the same config
  finds every training by label, including ones it never started.
* ``future.logs()`` reads the training's pod logs, following them while it runs.
* ``Resources(nodes=N, procs_per_node=P)`` with N > 1 makes one Indexed Job of N
  pods and a headless Service for their hostnames (:mod:`.manifest`); each pod
  launches its P ranks (:mod:`.pod_entry`); the status reads all pods
  (:mod:`.status`); ``future.logs(rank=k)`` reads rank k's lines of its node's pod.

Trainings keep running in the cluster when this process exits or the trainer
is shut down; cancel them to stop them.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Optional, Sequence

from ... import ids
from ...capabilities import SupportLevel
from ...errors import ClusterError, ConfigError, TrainingExistsError, TrainingNotFoundError
from ...resources import MAX_NODES
from ...future import ModelTrainerFutureBase
from ...info import ErrorDetail, TrainingInfo, TrainingStatus, utcnow
from ...trainer import ModelTrainerBase, TrainingRequest
from ...runner import check_importable_class
from ...storage import is_url, protocol_of
from .api_errors import AlreadyExistsError, ConflictError, NotFoundError
from .config import KubernetesTrainerConfig
from .manifest import (
    CONTAINER_NAME,
    LABEL_MANAGED_BY,
    LABEL_TRAINER,
    MANAGED_BY,
    TrainingManifests,
    build_manifests,
    cancel_patch,
    owned_by,
    owner_patch,
    rank_prefix,
    trainer_selector,
    training_selector,
)
from .status import node_count, owned_pods, parse_time, pod_index, pods_settled, procs_per_node, training_info
from .store import KubernetesTrainingStore
from .watch import ClusterCache

if TYPE_CHECKING:
    from .api import ClusterTarget, KubeApi

log = logging.getLogger("trainerkit")

_CANCEL_ATTEMPTS = 5
#: A ConfigMap of this trainer that no Job owns this long after it was made is
#: left over from a submission whose cleanup failed (a submission hands its
#: ConfigMap to its Job within seconds); train() deletes such ConfigMaps, at
#: most once per this period.
ORPHAN_CONFIGMAP_GRACE = datetime.timedelta(minutes=5)
#: How long a finished Job's pods may take to report their final status.
_SETTLE_SECONDS = 10.0


class KubernetesModelTrainer(ModelTrainerBase):
    """``type: KUBERNETES`` — one Job per training (see the module docstring)."""

    name: ClassVar[str] = "KUBERNETES"
    ConfigSchema = KubernetesTrainerConfig
    supports_detach: ClassVar[bool] = True
    #: A Job runs wherever the cluster puts it: cancel deletes its pod, progress
    #: travels as a pod annotation, logs are the pod's, and the caller may leave.
    CAPABILITIES: ClassVar[Mapping[str, SupportLevel]] = {
        "cancel": SupportLevel.NATIVE,
        "progress": SupportLevel.NATIVE,
        "logs": SupportLevel.NATIVE,
        "detach": SupportLevel.NATIVE,
        # Resources(gpus_per_proc=n) becomes an nvidia.com/gpu limit of n: the
        # scheduler gives the pod GPUs of its own (the cluster must have them).
        "gpus": SupportLevel.NATIVE,
        # save_path (and checkpoint_dir) may be an fsspec URL: the pod saves
        # there, no shared volume needed; credentials reach it through env/env_from.
        "remote_storage": SupportLevel.NATIVE,
        # Resources(procs_per_node=p): each pod launches p rank processes.
        "multi_process": SupportLevel.NATIVE,
        # Resources(nodes=n) becomes one Indexed Job of n pods and a headless Service.
        "multi_node": SupportLevel.NATIVE,
    }
    #: Room an id leaves for a multi-node pod's hostname suffix ``-<index>`` (``-4095``).
    HOSTNAME_SUFFIX_ROOM: ClassVar[int] = len(f"-{MAX_NODES - 1}")

    #: The pod saves the model (its volumes, not this machine's filesystem).
    saves_on_this_machine: ClassVar[bool] = False
    #: The shared watch pushes every change to this trainer's futures (_on_cluster_change).
    pushes_updates: ClassVar[bool] = True

    def capabilities(self) -> dict[str, SupportLevel]:
        """As :attr:`CAPABILITIES`, plus ``retries`` when ``backoff_limit`` is above 0
        and ``checkpoints`` when ``checkpoint_dir`` is set (a URL, or a path on a
        writable volume mount)."""
        levels = super().capabilities()
        if self.config.job_backoff_limit > 0:
            levels["retries"] = SupportLevel.NATIVE
        if self._checkpoint_problem() is None:
            levels["checkpoints"] = SupportLevel.NATIVE
        return levels

    def _checkpoint_problem(self) -> Optional[str]:
        """Why the pods cannot save checkpoints, or None."""
        location = self.config.checkpoint_dir
        if not location:
            return "the trainer has no checkpoint_dir"
        if not self.config.require_save_volume:
            return None
        if is_url(location):
            if protocol_of(location) not in ("file", "local"):
                return None  # a store: no volume needed
            location = location.split("://", 1)[1]
        return self.config.save_volume_problem(location, self.instance_name)

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """A KUBERNETES trainer's ids also name Services and pod hostnames: they must
        start with a letter (a Service name is a DNS-1035 label) and leave room for the
        hostname suffix ``-<index>`` of a multi-node training's pods."""
        prefix = ids.id_prefix(name)
        if not prefix[:1].isalpha():
            return (
                f"trainer name {name!r} would start its training ids with {prefix[:1]!r} "
                f"({prefix!r}), but a KUBERNETES training's id also names its headless Service, and "
                "Service names must start with a letter; choose a name that starts with a lowercase "
                "letter (for example 'k8s-" + prefix.rstrip("-") + "')"
            )
        longest_prefix = ids.MAX_ID_LENGTH - ids.UNIQUE_LENGTH - cls.HOSTNAME_SUFFIX_ROOM
        if len(prefix) > longest_prefix:
            separator = len(ids.separator_for(name))
            return (
                f"trainer name {name!r} is too long for a KUBERNETES trainer: it encodes to "
                f"{len(ids.encode_name(name))} characters ({ids.encode_name(name)!r}) but at most "
                f"{longest_prefix - separator} fit, because the pods of a multi-node training are named "
                f"<id>-<index>, which must fit in {ids.MAX_ID_LENGTH} characters with the "
                f"{ids.UNIQUE_LENGTH}-character unique part; choose a shorter name"
            )
        return None

    def __init__(self, config: KubernetesTrainerConfig, instance_name: str) -> None:
        super().__init__(config, instance_name)
        where = f"model_management.trainers.{instance_name}.config"
        # The kubernetes client is imported here, when a trainer is built, not
        # when a configuration that mentions KUBERNETES is loaded.
        from . import api as kube_api
        from .kube_shape import pod_field_problems

        problems = pod_field_problems(config, where)
        if problems:
            raise ConfigError(problems)
        self._api: "KubeApi" = kube_api.connect(
            kubeconfig=config.kubeconfig,
            context=config.context,
            namespace=config.namespace,
            request_timeout=config.request_timeout,
            request_retries=config.request_retries,
            where=where,
        )
        self._cache = ClusterCache(self._api, trainer_selector(instance_name), self._on_cluster_change)
        self._jobs = KubernetesTrainingStore(self._api, self._cache, instance_name)
        self._follow_lock = threading.Lock()  # guards _settling, _job_uids and _next_orphan_sweep
        self._settling: dict[str, float] = {}
        # The uid of the Job each followed training is: a Job that later takes
        # the same name (an external id reused) is another training.
        self._job_uids: dict[str, str] = {}
        self._next_orphan_sweep = 0.0  # time.monotonic() of the next look for unowned ConfigMaps
        log.debug("trainer %s uses namespace %s on %s", instance_name, self.namespace, self._api.target.describe())

    @property
    def namespace(self) -> str:
        """The namespace of this trainer's Jobs."""
        return self._api.namespace

    @property
    def cluster(self) -> "ClusterTarget":
        """The API server and namespace this trainer uses, and where that setting came from."""
        return self._api.target

    # -- the backend contract ---------------------------------------------------------------

    def create_store(self) -> KubernetesTrainingStore:
        return self._jobs

    def prepare_training(self, request: TrainingRequest) -> None:
        if request.save_path is None:
            raise ValueError(
                "a KUBERNETES training runs in a pod, so its model comes back only through "
                "save_path: pass save_path= a directory on a volume that both the pod (through the "
                "trainer's volume_mounts) and this process can reach"
            )
        check_importable_class(request.module_class)
        self._check_save_volume(request.save_path)
        # Builds (and so checks) the manifests: arguments that cannot travel and
        # names the API server would refuse fail here, before anything is sent.
        self._manifests(request, utcnow(), nonce="000000")

    def start_training(self, future: ModelTrainerFutureBase, request: TrainingRequest) -> None:
        self._start_watch()
        record = future.cached_info
        manifests = self._manifests(request, record.submission_time, nonce=secrets.token_hex(3), record=record)
        config_map_name = manifests.config_map["metadata"]["name"]
        self._api.create_configmap(manifests.config_map)
        try:
            job = self._create_job(manifests.job)
        except BaseException:
            self._quietly(self._api.delete_configmap, config_map_name)
            raise
        try:
            self._api.patch_configmap(config_map_name, owner_patch(job))
            if manifests.service is not None:
                self._create_service(owned_by(manifests.service, job))
        except BaseException:
            self._quietly(self._api.delete_job, job["metadata"]["name"], job["metadata"].get("uid"))
            self._quietly(self._api.delete_configmap, config_map_name)
            raise
        with self._follow_lock:
            self._job_uids[request.training_id] = job["metadata"]["uid"]
        self._jobs.confirm(request.training_id, job)
        self._report_state(future, self._jobs.info(job, self._cache.pods(request.training_id)))
        log.info("submitted training %s as Job %s/%s", request.training_id, self.namespace, request.training_id)
        self._sweep_orphaned_configmaps()

    def cancel_training(self, future: ModelTrainerFutureBase) -> bool:
        for _ in range(_CANCEL_ATTEMPTS):
            job = self._api.get_job(future.id)
            if job is None:
                raise TrainingNotFoundError(
                    f"cannot cancel training {future.id}: its Job no longer exists in namespace "
                    f"{self.namespace!r} (deleted, or removed by ttl_after_finished)"
                )
            info = self._jobs.info(job, self._pods_of(future.id))
            if info.status.is_terminal:
                self._report_state(future, info)
                return info.status is TrainingStatus.CANCELED
            patch = cancel_patch(job, utcnow(), f"canceled while {info.status.value.lower()}")
            try:
                job = self._api.patch_job(future.id, patch)
            except ConflictError:
                continue  # the Job changed since it was read: look again
            self._cache.remember_job(job)
            self._report_state(future, self._jobs.info(job, self._pods_of(future.id)))
            log.info("canceled training %s (Job suspended)", future.id)
            return True
        raise ClusterError(
            f"cannot cancel training {future.id}: its Job changed on each of {_CANCEL_ATTEMPTS} "
            "attempts; try again"
        )

    def observe_trainings(self, futures: Sequence[ModelTrainerFutureBase]) -> None:
        """Bring futures up to date from the shared watch (no request per future);
        from then on the watch pushes every change (see _on_cluster_change)."""
        self._start_watch()
        for future in futures:
            self._update(future)

    def training_logs(self, future: ModelTrainerFutureBase, follow: bool, rank: int = 0) -> Iterator[str]:
        """The output of the training's pods (of a multi-node training: rank ``rank``'s node only)."""
        if follow:
            self._start_watch()
        return self._log_lines(future.id, follow, rank)

    def shutdown(self, wait: bool = True) -> None:
        """Stop watching the cluster. Trainings keep running there (cancel them to stop them)."""
        self._cache.stop()
        super().shutdown(wait=wait)
        self._api.close()

    # -- internals ---------------------------------------------------------------------------

    def _manifests(
        self,
        request: TrainingRequest,
        submitted: datetime.datetime,
        nonce: str,
        record: Optional[TrainingInfo] = None,
    ) -> TrainingManifests:
        assert request.save_path is not None
        return build_manifests(
            self.config,
            namespace=self.namespace,
            instance_name=self.instance_name,
            training_id=request.training_id,
            module_class=request.module_class,
            args=request.args,
            kwargs=request.kwargs,
            save_path=request.save_path,
            model_name=request.model_name,
            tags=request.tags,
            submission_time=submitted,
            nonce=nonce,
            record=record,
            resources=request.resources,
            storage={
                "storage_options": self.storage_options or None,
                "checkpoint_dir": self.config.checkpoint_dir if self._checkpoint_problem() is None else None,
                "resume_from": request.resume_from,
            },
        )

    def _create_service(self, service: dict[str, Any]) -> None:
        """Create the training's headless Service; one left from a deleted Job of the same
        name (the garbage collector has not got to it yet) is replaced."""
        name = service["metadata"]["name"]
        deadline = time.monotonic() + self.config.request_timeout
        while True:
            if time.monotonic() > deadline:
                raise TrainingExistsError(f"the old Service {name} is still being deleted; try again shortly")
            try:
                self._api.create_service(service)
                return
            except AlreadyExistsError:
                existing = self._api.get_service(name)
                if existing is None:
                    continue  # deleted in between
                owners = {ref.get("uid") for ref in existing["metadata"].get("ownerReferences") or ()}
                if service["metadata"]["ownerReferences"][0]["uid"] in owners:
                    return  # ours: an earlier attempt of this very request was carried out
                if (existing["metadata"].get("labels") or {}).get(LABEL_TRAINER) != service["metadata"]["labels"][LABEL_TRAINER]:
                    raise TrainingExistsError(
                        f"a Service named {name} already exists in namespace {self.namespace!r} and was not "
                        f"created by trainer {self.instance_name!r}; a multi-node training needs that name for "
                        "its pods' hostnames: choose another external_training_id or delete that Service"
                    ) from None
                self._api.delete_service(name, uid=existing["metadata"].get("uid"))
                time.sleep(0.2)

    def _check_save_volume(self, save_path: str) -> None:
        if not self.config.require_save_volume:
            return
        if is_url(save_path):
            if protocol_of(save_path) not in ("file", "local"):
                return  # a store URL needs no shared volume: the pod uploads there
            save_path = save_path.split("://", 1)[1]  # file:// is a path in the pod
        problem = self.config.save_volume_problem(save_path, self.instance_name)
        if problem:
            raise ValueError(problem)

    def _create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        name = job["metadata"]["name"]
        try:
            return self._api.create_job(job)
        except AlreadyExistsError:
            existing = self._api.get_job(name)
            if existing is None:
                return self._api.create_job(job)  # deleted in between
        if (existing["metadata"].get("labels") or {}).get(LABEL_TRAINER) != job["metadata"]["labels"][LABEL_TRAINER]:
            raise TrainingExistsError(
                f"a Job named {name} already exists in namespace {self.namespace!r} and was not "
                f"created by trainer {self.instance_name!r}; choose another external_training_id "
                "or delete that Job"
            )
        info = training_info(existing, self._pods_of(name))
        if not (info.status.is_terminal and self._jobs.replaces_finished(name)):
            raise TrainingExistsError(
                f"a training with id {name!r} already exists and is {info.status.value}; choose "
                "another external_training_id"
                + ("" if info.status.is_terminal else ", or cancel that training first")
            )
        # A finished training with this external id is replaced, as with other types.
        self._api.delete_job(name, uid=existing["metadata"].get("uid"))
        self._cache.forget_job(name)
        deadline = time.monotonic() + self.config.request_timeout
        while True:
            try:
                return self._api.create_job(job)
            except AlreadyExistsError:
                # The old Job still has finalizers to run; it goes within moments.
                if time.monotonic() > deadline:
                    raise TrainingExistsError(
                        f"the finished Job {name} is still being deleted; try again shortly"
                    ) from None
                time.sleep(0.2)

    def _start_watch(self) -> None:
        self._cache.start(timeout=self.config.request_timeout + 5)

    def _pods_of(self, training_id: str) -> list[dict[str, Any]]:
        if self._cache.running:
            return self._cache.pods(training_id)
        return self._api.list_pods(training_selector(training_id)).get("items") or []

    def _report_state(self, future: ModelTrainerFutureBase, info: TrainingInfo) -> None:
        self.mark_observed(future, info)
        if info.status.is_terminal:
            with self._follow_lock:
                self._settling.pop(future.id, None)
                self._job_uids.pop(future.id, None)

    def _deleted(self, future: ModelTrainerFutureBase) -> TrainingInfo:
        return dataclasses.replace(
            future.cached_info,
            status=TrainingStatus.ERRORED,
            completion_time=utcnow(),
            errors=(
                ErrorDetail.of(
                    TrainingNotFoundError,
                    f"the Job of training {future.id} was deleted from namespace {self.namespace!r} "
                    "before it finished",
                ),
            ),
        )

    def _on_cluster_change(self, training_ids: set[str]) -> None:
        """Called by the watch with the trainings whose Job or pods changed."""
        for training_id in training_ids:
            future = self.find_future(training_id)
            if future is not None:
                self._update(future)

    def _update(self, future: ModelTrainerFutureBase) -> None:
        """Apply what the cluster says about ``future``'s training now."""
        if future.cached_info.status.is_terminal or self._jobs.is_pending(future.id):
            return  # a submission in progress applies its own first state
        job, pods = self._jobs.job_and_pods(future.id)
        if job is not None:
            uid = job["metadata"].get("uid")
            with self._follow_lock:
                expected = self._job_uids.setdefault(future.id, uid)
            if uid != expected:
                # Another Job under this name: the cache is behind a replacement
                # (an external id reused), or this training's Job was deleted.
                job = self._api.get_job(future.id)
                if job is not None and job["metadata"].get("uid") != expected:
                    job = None
                pods = self._pods_of(future.id)
        if job is None:
            self._report_state(future, self._deleted(future))
            return
        info = self._jobs.info(job, pods)
        if info.status.is_terminal and not pods_settled(job, pods) and not self._settle_expired(future.id):
            return  # the pod's final status (and its error) is on its way
        self._report_state(future, info)

    def _settle_expired(self, training_id: str) -> bool:
        """Whether a finished Job's pods have had long enough to report; the first
        call starts the clock and schedules one more look for when it runs out."""
        now = time.monotonic()
        with self._follow_lock:
            first = self._settling.get(training_id)
            if first is None:
                self._settling[training_id] = now
        if first is None:
            timer = threading.Timer(_SETTLE_SECONDS, self._on_cluster_change, args=({training_id},))
            timer.daemon = True
            timer.start()
            return False
        return now - first >= _SETTLE_SECONDS

    def _log_lines(self, training_id: str, follow: bool, rank: int = 0) -> Iterator[str]:
        shown: set[str] = set()
        generation = self._cache.generation if follow else 0
        several = False
        while True:
            job, pods = self._jobs.job_and_pods(training_id)
            if job is None:
                if not shown:
                    raise TrainingNotFoundError(
                        f"no Job for training {training_id} in namespace {self.namespace!r}"
                    )
                return
            pods = owned_pods(job, pods)
            nodes, procs = node_count(job), procs_per_node(job)
            if not 0 <= rank < nodes * procs:
                raise ValueError(
                    f"training {training_id} has {nodes * procs} processes (ranks 0 to {nodes * procs - 1}); "
                    f"there is no rank {rank}"
                )
            if nodes > 1:  # rank k runs in node k // procs_per_node's pod
                pods = [pod for pod in pods if pod_index(pod) == rank // procs]
            # A pod of several ranks prefixes each rank's lines; those of rank k are its own output.
            prefix = rank_prefix(rank) if procs > 1 else None
            several = several or len(pods) > 1
            ready = [pod for pod in pods if pod["metadata"]["name"] not in shown and _has_started(pod)]
            if ready:
                pod = ready[0]
                name = pod["metadata"]["name"]
                shown.add(name)
                if several:
                    yield f"==> pod {name} <=="
                try:
                    stream = self._api.pod_log(name, CONTAINER_NAME, follow=follow and _is_running(pod))
                except NotFoundError:
                    continue  # the pod went away meanwhile
                try:
                    if prefix is None:
                        yield from stream.lines(keep_empty=True)
                    else:
                        for line in stream.lines(keep_empty=True):
                            if line.startswith(prefix):
                                yield line[len(prefix):]
                finally:
                    stream.close()
                continue
            if not follow or training_info(job, pods).status.is_terminal:
                return
            generation = self._cache.wait_for_change(generation, timeout=1.0)

    def _sweep_orphaned_configmaps(self) -> None:
        """Delete this trainer's ConfigMaps that no Job owns, ORPHAN_CONFIGMAP_GRACE after
        they were made: left over from submissions whose cleanup failed (the process
        died, or the delete failed even when resent). At most once per grace period;
        a failure here is logged and never fails the training just submitted."""
        now = time.monotonic()
        with self._follow_lock:
            if now < self._next_orphan_sweep:
                return
            self._next_orphan_sweep = now + ORPHAN_CONFIGMAP_GRACE.total_seconds()
        selector = f"{trainer_selector(self.instance_name)},{LABEL_MANAGED_BY}={MANAGED_BY}"
        try:
            config_maps = self._api.list_configmaps(selector).get("items") or []
            for config_map in orphaned_configmaps(config_maps, utcnow(), ORPHAN_CONFIGMAP_GRACE):
                metadata = config_map["metadata"]
                try:
                    self._api.delete_configmap(metadata["name"], resource_version=metadata.get("resourceVersion"))
                except ConflictError:
                    continue  # changed since it was listed (handed to its Job after all?): keep it
                log.info("deleted ConfigMap %s/%s, left over from a failed submission", self.namespace, metadata["name"])
        except ClusterError as exc:
            log.warning("could not look for ConfigMaps left over from failed submissions: %s", exc)

    @staticmethod
    def _quietly(call: Any, *args: Any) -> None:
        """Undo a step of a failed submission; a failure here must not hide the first one."""
        try:
            call(*args)
        except Exception as exc:
            log.warning("could not clean up after a failed submission (%s): %s", getattr(call, "__name__", call), exc)


def orphaned_configmaps(
    config_maps: Sequence[dict[str, Any]], now: datetime.datetime, grace: datetime.timedelta
) -> list[dict[str, Any]]:
    """The ConfigMaps that no Job owns and that were made more than ``grace`` before ``now``."""
    orphans = []
    for config_map in config_maps:
        metadata = config_map.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            continue
        if any(ref.get("kind") == "Job" for ref in metadata.get("ownerReferences") or []):
            continue
        created = parse_time(metadata.get("creationTimestamp"))
        if created is not None and now - created > grace:
            orphans.append(config_map)
    return orphans


def _container(pod: dict[str, Any]) -> Optional[dict[str, Any]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return next((s for s in statuses if s.get("name") == CONTAINER_NAME), None)


def _has_started(pod: dict[str, Any]) -> bool:
    state = _container(pod)
    if not state:
        return False
    current = state.get("state") or {}
    return "running" in current or "terminated" in current


def _is_running(pod: dict[str, Any]) -> bool:
    state = _container(pod)
    return bool(state and "running" in (state.get("state") or {}))
