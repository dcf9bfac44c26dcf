"""Manifests are data: (trainer config, training request) -> the Job and its ConfigMap.

Pure functions, no I/O: the trainer sends what :func:`build_manifests`
returns, and tests validate it against the Kubernetes schema with no cluster.

One training is

* a ``batch/v1`` Job named by the training id, labelled with the trainer
  (:data:`LABEL_TRAINER`, the id-encoded trainer name, DNS-safe) and the id
  (:data:`LABEL_TRAINING_ID`), and annotated with the rest of its record
  (module, save path, model name, tags, submission time), so that the
  cluster alone is the record of the training;
* a ConfigMap ``<id>-<nonce>`` with the training spec (a
  :class:`trainerkit.worker.TrainingSpec`: module import path, arguments, save
  path), mounted read-only at ``/etc/trainerkit`` in the pod and owned by the
  Job once it exists, so the cluster deletes both together.

The pod runs ``python -m trainerkit.trainers.kubernetes.pod_entry
/etc/trainerkit/training.json``.

A multi-node training (``Resources(nodes=N)``, N > 1) is one Job too, with
``completionMode: Indexed`` and ``completions = parallelism = N``: the Job
controller makes one pod per index, whose hostname is ``<id>-<index>``. A
headless Service named by the id (``clusterIP: None``,
``publishNotReadyAddresses: true``, owned by the Job) is the pods'
``subdomain``, so rank 0 is reachable as ``<id>-0.<id>`` as soon as its pod
has an address. Each pod gets the node's share of the torchrun environment
(``NODE_RANK`` is its completion index, ``MASTER_ADDR`` rank 0's hostname,
``WORLD_SIZE`` nodes x procs_per_node); the pod entry point adds ``RANK`` and
``LOCAL_RANK``. Without retries the Job has ``backoffLimit: 0``: the first
failed pod fails the training and the Job controller stops the others. With
retries (``max_retries``/``backoff_limit`` above 0) the Job's ``backoffLimit``
is that, and the pods get ``TRAINERKIT_GROUP_PORT`` (``master_port + 1``) and
their own address: their launchers form a group (:mod:`.group`) that stops
and restarts every rank together when a pod is replaced, so a replaced pod
never rejoins a rendezvous whose other members are gone.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import reprlib
from typing import Any, Mapping, Optional, Sequence

from ... import ids
from ...capabilities import levels_to_json
from ...info import TrainingInfo
from ...module import bind_train_arguments, class_path
from ...runner import TrainingSpec, inline_arguments, pickle_arguments
from .config import (
    ENV_GROUP_PORT,
    ENV_IMAGE,
    ENV_NODES,
    ENV_POD_IP,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_PROCS_PER_NODE,
    ENV_PROGRESS_INTERVAL,
    ENV_RENDEZVOUS_TIMEOUT,
    ENV_SERVICE_ACCOUNT_DIR,
    ENV_TERMINATION_MESSAGE_PATH,
    ENV_TRAINING_ID,
    MOUNT_DIR,
    SERVICE_ACCOUNT_DIR,
    SPEC_VOLUME,
    TERMINATION_MESSAGE_PATH,
    KubernetesTrainerConfig,
    whole_seconds,
)
from ...resources import ONE_PROCESS, Resources
from .group import group_port
from .validation import configmap_problems, indexed_job_problems, job_problems, service_problems

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "trainerkit"
LABEL_TRAINER = "trainerkit.io/trainer"
LABEL_TRAINING_ID = "trainerkit.io/training-id"

ANNOTATION_TRAINER_NAME = "trainerkit.io/trainer-name"
ANNOTATION_MODULE = "trainerkit.io/module"
ANNOTATION_SAVE_PATH = "trainerkit.io/save-path"
ANNOTATION_MODEL_NAME = "trainerkit.io/model-name"
ANNOTATION_TAGS = "trainerkit.io/tags"
ANNOTATION_SUBMITTED = "trainerkit.io/submission-time"
#: Set (with a JSON ``{"time", "reason"}``) on a canceled Job; see :func:`cancel_patch`.
ANNOTATION_CANCELED = "trainerkit.io/canceled"
#: Set by the pod entry point on its own pod: the latest ProgressReport as JSON.
ANNOTATION_PROGRESS = "trainerkit.io/progress"
#: The extended resource a training's ``gpus_per_proc`` becomes (NVIDIA's device plugin).
GPU_RESOURCE = "nvidia.com/gpu"
#: The Job controller's annotation (and label) of an Indexed Job's pods: the completion index.
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: Set by the pod entry point of a multi-node training on its own pod while it
#: waits for rank 0 (JSON ``{"waiting": text, "since": time}``; removed when done).
ANNOTATION_RENDEZVOUS = "trainerkit.io/rendezvous"
#: JSON: the capabilities the training requested and how they were served.
ANNOTATION_CAPABILITIES = "trainerkit.io/capabilities"
#: JSON: {"values": {name: value}, "by_repr": [names recorded by repr]}.
ANNOTATION_PARAMETERS = "trainerkit.io/parameters"
#: Recorded parameters larger than this (as JSON) keep only a short repr of
#: their large values: annotations share a 256 KiB budget per object.
MAX_PARAMETERS_BYTES = 32 * 1024

CONTAINER_NAME = "trainer"
POD_ENTRY_MODULE = "trainerkit.trainers.kubernetes.pod_entry"
SPEC_FILE = "training.json"
#: The pod entry point exits with this code when train() or the save raised:
#: the Job fails at once (podFailurePolicy) instead of retrying a deterministic
#: error. (Python itself uses 1 for an uncaught exception and 2 for usage.)
EXIT_TRAINING_FAILED = 4



@dataclasses.dataclass(frozen=True)
class TrainingManifests:
    """What one training sends to the cluster: the ConfigMap first, then the Job."""

    config_map: dict[str, Any]
    job: dict[str, Any]
    #: The headless Service of a multi-node training (None for one node); sent
    #: after the Job, owned by it (see :func:`owned_by`).
    service: Optional[dict[str, Any]] = None


def rank_prefix(rank: int) -> str:
    """What starts each line of rank ``rank`` in the log of a pod that runs several
    ranks (the pod entry point writes it, the trainer's logs(rank=k) strips it)."""
    return f"[rank {rank}] "


def master_addr(training_id: str) -> str:
    """Rank 0's stable hostname in a multi-node training: ``<id>-0.<id>`` (its pod's
    hostname under the training's headless Service, resolved in the pods' namespace)."""
    return f"{training_id}-0.{training_id}"


def record_annotations(record: TrainingInfo) -> dict[str, str]:
    """The annotations that keep a training's capabilities and parameters on its Job."""
    annotations: dict[str, str] = {}
    if record.capabilities:
        annotations[ANNOTATION_CAPABILITIES] = json.dumps(levels_to_json(record.capabilities), sort_keys=True)
    if record.parameters:
        values, by_repr = dict(record.parameters), list(record.parameters_by_repr)
        text = json.dumps({"values": values, "by_repr": by_repr}, sort_keys=True)
        if len(text.encode("utf-8")) > MAX_PARAMETERS_BYTES:
            for name, value in values.items():
                if len(json.dumps(value)) > 1024:
                    values[name] = reprlib.repr(value)
                    if name not in by_repr:
                        by_repr.append(name)
            text = json.dumps({"values": values, "by_repr": by_repr}, sort_keys=True)
        annotations[ANNOTATION_PARAMETERS] = text
    return annotations


def trainer_selector(instance_name: str) -> str:
    """The label selector of every Job and pod of trainer ``instance_name``."""
    return f"{LABEL_TRAINER}={ids.encode_name(instance_name)}"


def training_selector(training_id: str) -> str:
    """The label selector of one training's Job and pods."""
    return f"{LABEL_TRAINING_ID}={training_id}"


def build_manifests(
    config: KubernetesTrainerConfig,
    *,
    namespace: str,
    instance_name: str,
    training_id: str,
    module_class: type,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    save_path: str,
    model_name: Optional[str],
    tags: Sequence[str],
    submission_time: datetime.datetime,
    nonce: str,
    record: Optional[TrainingInfo] = None,
    resources: Resources = ONE_PROCESS,
    storage: Optional[Mapping[str, Any]] = None,
) -> TrainingManifests:
    """The ConfigMap and Job of one training (and its Service when it spans nodes).

    Raises:
        TypeError: an argument cannot travel in ``config.argument_format``
            (the message names the argument).
        ValueError: the manifests break a rule the API server enforces (the
            message lists them); nothing is sent then.
    """
    module = class_path(module_class)
    labels = {
        **config.labels,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TRAINER: ids.encode_name(instance_name),
        LABEL_TRAINING_ID: training_id,
    }
    config_map_name = f"{training_id}-{nonce}"
    if config.argument_format == "json":
        arguments = {"json": json_arguments(module_class, args, kwargs)}
    else:
        arguments = inline_arguments(pickle_arguments(module_class, args, kwargs))
    spec = TrainingSpec(
        training_id=training_id, module=module, arguments=arguments, save_path=save_path,
        **{key: value for key, value in (storage or {}).items() if value is not None},
    ).to_dict()
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name, "namespace": namespace, "labels": dict(labels)},
        "data": {SPEC_FILE: json.dumps(spec, sort_keys=True)},
    }

    annotations = {
        **config.annotations,
        ANNOTATION_TRAINER_NAME: instance_name,
        ANNOTATION_MODULE: module,
        ANNOTATION_SAVE_PATH: save_path,
        ANNOTATION_SUBMITTED: submission_time.astimezone(datetime.timezone.utc).isoformat(),
    }
    if model_name is not None:
        annotations[ANNOTATION_MODEL_NAME] = model_name
    if tags:
        annotations[ANNOTATION_TAGS] = json.dumps(list(tags))
    if record is not None:
        annotations.update(record_annotations(record))

    multi_node = resources.nodes > 1
    job_spec: dict[str, Any] = {
        # A multi-node training is retried only as a group (see .group), which its
        # pods form when the Job may replace one.
        "backoffLimit": config.job_backoff_limit,
        # A training error is deterministic: fail the Job at once rather than
        # spend backoff_limit retries on it; evictions and preemptions do not
        # count as failures at all. Retries are kept for crashes (OOM, node loss).
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [EXIT_TRAINING_FAILED],
                    },
                },
            ]
            # One node's pod evicted or preempted: without retries it fails a multi-node
            # training like any failure (a replacement alone would rejoin a broken
            # rendezvous); with them the group restarts around its replacement.
            + ([] if multi_node and config.job_backoff_limit == 0
               else [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}])
        },
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": _pod_spec(config, training_id, config_map_name, resources),
        },
    }
    if multi_node:
        job_spec.update(completionMode="Indexed", completions=resources.nodes, parallelism=resources.nodes)
        job_spec["template"]["spec"]["subdomain"] = training_id
    if config.annotations:
        job_spec["template"]["metadata"]["annotations"] = dict(config.annotations)
    if config.active_deadline is not None:
        job_spec["activeDeadlineSeconds"] = whole_seconds(config.active_deadline)
    if config.ttl_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = whole_seconds(config.ttl_after_finished)
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": training_id,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }
    service: Optional[dict[str, Any]] = None
    if multi_node:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": training_id, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "clusterIP": "None",
                # The pods' DNS records exist as soon as they have addresses, not once
                # they are Ready (they have no readiness probe, and rank 0 must be
                # reachable before the training makes progress).
                "publishNotReadyAddresses": True,
                "selector": {LABEL_TRAINING_ID: training_id},
            },
        }
    problems = configmap_problems(config_map) + job_problems(job) + indexed_job_problems(job)
    if service is not None:
        problems += service_problems(service)
    if problems:
        raise ValueError(
            f"the Kubernetes manifests of training {training_id} break rules the API server "
            "enforces, so nothing was sent: " + "; ".join(problems)
        )
    return TrainingManifests(config_map=config_map, job=job, service=service)


def _pod_spec(
    config: KubernetesTrainerConfig, training_id: str, config_map_name: str, resources: Resources
) -> dict[str, Any]:
    env: list[dict[str, Any]] = []
    for name, value in config.env.items():
        if isinstance(value, Mapping):
            env.append({"name": name, "valueFrom": copy.deepcopy(dict(value))})
        else:
            env.append({"name": name, "value": str(value)})
    env += [
        {"name": ENV_TRAINING_ID, "value": training_id},
        {"name": ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ENV_POD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ENV_PROGRESS_INTERVAL, "value": repr(config.progress_interval.total_seconds())},
        {"name": ENV_IMAGE, "value": config.image},
        # Where to write the outcome and where the kubelet mounted the service account:
        # the pod entry point reads them here rather than from constants of its own, so
        # that the paths are the manifest's (and a simulated kubelet can relocate them).
        {"name": ENV_TERMINATION_MESSAGE_PATH, "value": TERMINATION_MESSAGE_PATH},
        {"name": ENV_SERVICE_ACCOUNT_DIR, "value": SERVICE_ACCOUNT_DIR},
    ]
    if resources.world_size > 1:
        # The node's share of the torchrun environment; the pod entry point adds RANK and
        # LOCAL_RANK for each of its processes (RANK = NODE_RANK * procs_per_node + LOCAL_RANK).
        # On one node the ranks meet at the pod's own address.
        multi_node = resources.nodes > 1
        env += [
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{ANNOTATION_COMPLETION_INDEX}']"}}}
            if multi_node else {"name": "NODE_RANK", "value": "0"},
            {"name": "WORLD_SIZE", "value": str(resources.world_size)},
            {"name": "LOCAL_WORLD_SIZE", "value": str(resources.procs_per_node)},
            {"name": "MASTER_ADDR", "value": master_addr(training_id)} if multi_node
            else {"name": "MASTER_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MASTER_PORT", "value": str(config.master_port)},
            {"name": ENV_RENDEZVOUS_TIMEOUT, "value": repr(config.rendezvous_timeout.total_seconds())},
        ]
        if multi_node and config.job_backoff_limit > 0:  # retries restart the group (see .group)
            env += [
                {"name": ENV_GROUP_PORT, "value": str(group_port(config.master_port))},
                {"name": ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ]
    # The layout, always: the pod entry point reads it (and the trainer, procs_per_node).
    env += [
        {"name": ENV_NODES, "value": str(resources.nodes)},
        {"name": ENV_PROCS_PER_NODE, "value": str(resources.procs_per_node)},
    ]
    if "PYTHONUNBUFFERED" not in config.env:
        # Without it Python buffers stdout in a pod (no TTY) and logs arrive in lumps.
        env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "command": [config.python, "-m", POD_ENTRY_MODULE, f"{MOUNT_DIR}/{SPEC_FILE}"],
        "env": env,
        "volumeMounts": copy.deepcopy(list(config.volume_mounts))
        + [{"name": SPEC_VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}],
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # The entry point writes its outcome there; when it never got that far
        # (no trainerkit in the image, a crash) the log tail says why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    if config.env_from:
        container["envFrom"] = copy.deepcopy(list(config.env_from))
    gpus = resources.procs_per_node * resources.gpus_per_proc
    limits = config.resources.to_manifest()
    if gpus:  # every process of the pod gets gpus_per_proc of its own, over the config's limits
        limits.setdefault("limits", {})[GPU_RESOURCE] = str(gpus)
    if limits:
        container["resources"] = limits
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": copy.deepcopy(list(config.volumes))
        + [{"name": SPEC_VOLUME, "configMap": {"name": config_map_name}}],
    }
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    if config.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    if config.node_selector:
        pod["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        pod["tolerations"] = copy.deepcopy(list(config.tolerations))
    if config.affinity:
        pod["affinity"] = copy.deepcopy(dict(config.affinity))
    if config.priority_class:
        pod["priorityClassName"] = config.priority_class
    if config.termination_grace_period is not None:
        pod["terminationGracePeriodSeconds"] = whole_seconds(config.termination_grace_period)
    return pod


def owned_by(manifest: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` (the Service) with the created Job as its owner: the cluster deletes it with the Job."""
    owned = copy.deepcopy(dict(manifest))
    owned["metadata"].update(owner_patch(job)["metadata"])
    return owned


def owner_patch(job: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that makes the Job the owner of its ConfigMap (deleted with it)."""
    return {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                    # True would need 'update jobs/finalizers' (admission checks it), and
                    # nothing is gained: the ConfigMap is useless without its Job.
                    "blockOwnerDeletion": False,
                }
            ]
        }
    }


def cancel_patch(job: Mapping[str, Any], time: datetime.datetime, reason: str) -> dict[str, Any]:
    """The merge patch that cancels a Job: suspend it (its pods are stopped) and
    record the cancellation, so that it stays visible in the cluster.

    It carries the Job's resourceVersion: the API server applies it only if the
    Job has not changed since it was read (so a Job that has just finished is
    never marked canceled).
    """
    return {
        "metadata": {
            "resourceVersion": job["metadata"]["resourceVersion"],
            "annotations": {
                ANNOTATION_CANCELED: json.dumps(
                    {"time": time.astimezone(datetime.timezone.utc).isoformat(), "reason": reason}
                )
            },
        },
        "spec": {"suspend": True},
    }


# -- arguments -------------------------------------------------------------------------


def _argument_names(module_class: type, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(name, value)`` of every argument as ``train`` binds it (``*args`` items as name[i])."""
    bound = bind_train_arguments(module_class, args, kwargs)
    named: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is kind.VAR_POSITIONAL:
            named += [(f"{name}[{i}]", item) for i, item in enumerate(value)]
        elif kind is kind.VAR_KEYWORD:
            named += [(key, item) for key, item in value.items()]
        else:
            named.append((name, value))
    return named


def json_arguments(module_class: type, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"args": [...], "kwargs": {...}}`` when every argument is JSON data.

    Tuples arrive as lists. Raises TypeError naming the first argument (and
    the place inside it) that JSON cannot carry faithfully.
    """
    for name, value in _argument_names(module_class, args, kwargs):
        problem = _json_problem(value, name)
        if problem:
            raise TypeError(
                f"argument {problem} so it cannot travel to the Kubernetes pod as JSON; pass JSON "
                "data (strings, numbers, booleans, None, lists and dicts with string keys) or a "
                "path the pod can read, or set argument_format: pickle in the trainer's config "
                "(only when you trust the image)"
            )
    return {"args": list(args), "kwargs": dict(kwargs)}


def _json_problem(value: Any, where: str) -> Optional[str]:
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON has no value for,"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r} ({type(key).__name__}), but JSON keys are strings,"
            problem = _json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON data,"
