"""The config keys of ``type: KUBERNETES``, declared once.

trainerkit's own keys are snake_case and strict: an unknown key, a wrong type
or a bad value fails at load with its full key path. Keys that hold
Kubernetes objects (``volumes``, ``volume_mounts``, ``tolerations``,
``affinity``, ``env_from`` and ``valueFrom`` entries of ``env``) are written
exactly as in a Pod spec (camelCase); their shape is checked against the
official client's models when the trainer is built
(:mod:`~trainerkit.trainers.kubernetes.kube_shape`), so that this module
imports nothing from the ``kubernetes`` package.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import posixpath
import re
from typing import Any, Literal, Mapping, Optional

from ...schema import option
from ...trainer_config import TrainerConfig
from . import validation as rules

#: Label and annotation prefix that trainerkit reserves for its own keys.
RESERVED_PREFIX = "trainerkit.io/"
#: Where the pod finds its training spec (a ConfigMap volume).
MOUNT_DIR = "/etc/trainerkit"
#: Name of that volume in the pod.
SPEC_VOLUME = "trainerkit-spec"
#: Environment variables trainerkit sets in the pod (for its pod entry point).
ENV_TRAINING_ID = "TRAINERKIT_TRAINING_ID"
ENV_POD_NAME = "TRAINERKIT_POD_NAME"
ENV_POD_NAMESPACE = "TRAINERKIT_POD_NAMESPACE"
ENV_PROGRESS_INTERVAL = "TRAINERKIT_PROGRESS_INTERVAL"
ENV_IMAGE = "TRAINERKIT_IMAGE"
#: The container's terminationMessagePath, passed to the pod entry point as well
#: (a container cannot read its own terminationMessagePath).
ENV_TERMINATION_MESSAGE_PATH = "TRAINERKIT_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: Where the kubelet mounts the pod's service account token, CA and namespace.
ENV_SERVICE_ACCOUNT_DIR = "TRAINERKIT_SERVICE_ACCOUNT_DIR"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Multi-node trainings: how many nodes, processes per node, and how long a node
#: waits for rank 0's address to resolve and accept connections.
ENV_NODES = "TRAINERKIT_NODES"
ENV_PROCS_PER_NODE = "TRAINERKIT_PROCS_PER_NODE"
ENV_RENDEZVOUS_TIMEOUT = "TRAINERKIT_RENDEZVOUS_TIMEOUT"
#: Multi-node trainings with retries: the port node 0's launcher listens on for the
#: group (trainerkit.trainers.kubernetes.group), and the pod's own address to listen on.
ENV_GROUP_PORT = "TRAINERKIT_GROUP_PORT"
ENV_POD_IP = "TRAINERKIT_POD_IP"
#: The torchrun variables of a multi-node training (set by trainerkit, not the config).
TORCHRUN_ENV = frozenset({
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
})
#: Volume kinds under which a pod's save outlives the pod: persistent volumes,
#: network and node filesystems. An inline ``csi`` volume counts: its drivers
#: (NFS, SMB, object stores) mostly mount storage that outlives the pod.
PERSISTENT_VOLUME_KINDS = frozenset({
    "persistentVolumeClaim", "hostPath", "nfs", "csi", "cephfs", "glusterfs", "azureFile",
    "azureDisk", "awsElasticBlockStore", "gcePersistentDisk", "cinder", "rbd", "iscsi", "fc",
    "flexVolume", "flocker", "portworxVolume", "quobyte", "scaleIO", "storageos",
    "vsphereVolume", "photonPersistentDisk",
})
#: Volume kinds the kubelet deletes with the pod.
POD_LIFETIME_VOLUME_KINDS = frozenset({"emptyDir", "ephemeral", "gitRepo"})
#: Volume kinds the kubelet always mounts read-only.
READ_ONLY_VOLUME_KINDS = frozenset({"configMap", "secret", "downwardAPI", "projected", "image"})
SAVE_VOLUME_EXAMPLES = ("a persistentVolumeClaim", "nfs", "hostPath", "csi")
RESERVED_ENV = frozenset({
    ENV_TRAINING_ID, ENV_POD_NAME, ENV_POD_NAMESPACE, ENV_PROGRESS_INTERVAL, ENV_IMAGE,
    ENV_TERMINATION_MESSAGE_PATH, ENV_SERVICE_ACCOUNT_DIR, ENV_NODES, ENV_PROCS_PER_NODE,
    ENV_RENDEZVOUS_TIMEOUT, ENV_GROUP_PORT, ENV_POD_IP,
}) | TORCHRUN_ENV


def _check_namespace(value: Optional[str]) -> Optional[str]:
    return rules.check_dns_label(value, "namespace") if value is not None else None


def _check_subdomain(what: str):
    def check(value: Optional[str]) -> Optional[str]:
        return rules.check_dns_subdomain(value, what) if value is not None else None

    return check


def _check_image(value: str) -> Optional[str]:
    if not value.strip() or re.search(r"\s", value) or value != value.strip():
        return f"image {value!r} must be an image reference without spaces, like registry.example.com/ml-train:1.4"
    return None


def _check_user_keys(what: str, labels: bool, reserved_prefix: bool = True):
    def check(value: Mapping[str, str]) -> Optional[str]:
        problems = rules.check_labels(value, what) if labels else rules.check_annotations(value, what)
        reserved = [key for key in value if reserved_prefix and key.startswith(RESERVED_PREFIX)]
        if reserved:
            problems.append(
                f"keys starting with {RESERVED_PREFIX!r} are reserved for trainerkit: "
                + ", ".join(repr(key) for key in reserved)
            )
        return "; ".join(problems) or None

    return check


def _check_pull_secrets(value: list[str]) -> Optional[str]:
    problems = [rules.check_dns_subdomain(name, "image pull secret name") for name in value]
    return "; ".join(p for p in problems if p) or None


def _check_python(value: str) -> Optional[str]:
    if not value.strip() or value != value.strip():
        return f"python must name the interpreter in the image (like python or /opt/venv/bin/python), got {value!r}"
    return None


def _check_positive_duration(value: Optional[datetime.timedelta]) -> Optional[str]:
    if value is not None and value.total_seconds() < 1:
        return f"must be at least 1 second, got {value}"
    return None


def _check_interval(value: datetime.timedelta) -> Optional[str]:
    if value.total_seconds() < 0.05:
        return f"must be at least 50ms, got {value}"
    return None


def whole_seconds(value: datetime.timedelta) -> int:
    """A duration as the whole seconds Kubernetes fields take (rounded up)."""
    return int(math.ceil(value.total_seconds()))


@dataclasses.dataclass(frozen=True)
class ResourcesConfig:
    """``resources``: compute resources of the training container."""

    requests: dict[str, str] = option(
        default_factory=dict,
        doc="resources the scheduler reserves, e.g. {cpu: 2, memory: 8Gi}",
    )
    limits: dict[str, str] = option(
        default_factory=dict,
        doc="upper bounds, e.g. {memory: 16Gi, nvidia.com/gpu: 1} (GPUs go in limits)",
    )

    def validate(self) -> list[str]:
        return rules.check_resources(dataclasses.asdict(self))

    def to_manifest(self) -> dict[str, dict[str, str]]:
        """The container's ``resources`` field (empty sections left out)."""
        return {kind: dict(values) for kind, values in (("requests", self.requests), ("limits", self.limits)) if values}


@dataclasses.dataclass(frozen=True)
class KubernetesTrainerConfig(TrainerConfig):
    """Config keys of ``type: KUBERNETES`` (one batch/v1 Job per training)."""

    image: str = option(
        doc="container image that runs the training; it must contain Python, trainerkit and "
        "the module being trained (see docs/kubernetes.md for a Dockerfile)",
        check=_check_image,
    )
    namespace: Optional[str] = option(
        None,
        doc="namespace of the Jobs; default: the kubeconfig context's namespace, in a pod its own "
        "namespace, else 'default'",
        check=_check_namespace,
    )
    kubeconfig: Optional[str] = option(
        None,
        doc="path of the kubeconfig file; default: $KUBECONFIG or ~/.kube/config, or the pod's "
        "service account when running inside a cluster",
    )
    context: Optional[str] = option(None, doc="kubeconfig context to use; default: its current-context")
    image_pull_policy: Optional[Literal["Always", "IfNotPresent", "Never"]] = option(
        None, doc="when the kubelet pulls the image; default: the cluster's (Always for :latest)"
    )
    image_pull_secrets: list[str] = option(
        default_factory=list,
        doc="names of docker-registry Secrets for pulling the image",
        check=_check_pull_secrets,
    )
    service_account: Optional[str] = option(
        None,
        doc="service account of the training pods; it needs 'patch pods' in the namespace for "
        "progress reports (config/rbac-kubernetes-trainer.yaml)",
        check=_check_subdomain("service account name"),
    )
    resources: ResourcesConfig = option(
        default_factory=ResourcesConfig,
        doc="requests and limits of the training container, e.g. {limits: {nvidia.com/gpu: 1}}",
    )
    env: dict[str, Any] = option(
        default_factory=dict,
        doc="environment variables: NAME: value, or NAME: {secretKeyRef: {name, key}} / "
        "{configMapKeyRef: ...} / {fieldRef: ...} (a Kubernetes valueFrom)",
    )
    env_from: list[dict[str, Any]] = option(
        default_factory=list,
        doc="whole Secrets/ConfigMaps as environment, Kubernetes envFrom entries: "
        "[{secretRef: {name: s}}, {configMapRef: {name: c}, prefix: P_}]",
    )
    volumes: list[dict[str, Any]] = option(
        default_factory=list,
        doc="pod volumes, as in a Pod spec (persistentVolumeClaim, hostPath, nfs, secret...)",
    )
    volume_mounts: list[dict[str, Any]] = option(
        default_factory=list,
        doc="mounts of those volumes in the training container, as in a Pod spec; save_path "
        "must lie under one of them",
    )
    node_selector: dict[str, str] = option(
        default_factory=dict,
        doc="node labels the pod requires, e.g. {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}",
        check=_check_user_keys("node_selector", labels=True, reserved_prefix=False),
    )
    tolerations: list[dict[str, Any]] = option(
        default_factory=list, doc="pod tolerations, as in a Pod spec"
    )
    affinity: Optional[dict[str, Any]] = option(None, doc="pod affinity, as in a Pod spec")
    priority_class: Optional[str] = option(
        None, doc="priorityClassName of the pods", check=_check_subdomain("priority class name")
    )
    labels: dict[str, str] = option(
        default_factory=dict,
        doc="extra labels on the Job and its pods",
        check=_check_user_keys("labels", labels=True),
    )
    annotations: dict[str, str] = option(
        default_factory=dict,
        doc="extra annotations on the Job and its pods",
        check=_check_user_keys("annotations", labels=False),
    )
    backoff_limit: int = option(
        0,
        minimum=0,
        doc="pod retries before the Job fails; default 0: a training that failed once usually "
        "fails again, and a retry costs a whole training's compute. A multi-node training "
        "(nodes > 1) is retried as a group: every rank restarts together (docs/distributed.md)",
    )
    max_retries: Optional[int] = option(
        None,
        minimum=0,
        doc="as SUBPROCESS's max_retries: a pod that crashes (killed, out of memory) is replaced "
        "at most this many times, with the same training id (an evicted or preempted pod is "
        "replaced without counting); it is the Job's "
        "backoffLimit (so set this or backoff_limit, not both), and a Python exception in train "
        "still fails the Job at once (its pod failure policy). Each new pod sees the earlier "
        "pods' checkpoints when checkpoint_dir is a URL or a volume. In a multi-node training "
        "(nodes > 1) a failed node's pod is replaced and every other node restarts its ranks "
        "with it: the whole group restarts, from the last checkpoint (docs/distributed.md)",
    )
    active_deadline: Optional[datetime.timedelta] = option(
        None,
        doc="the Job fails (ERRORED, DeadlineExceeded) after running this long, e.g. '12h'",
        check=_check_positive_duration,
    )
    ttl_after_finished: Optional[datetime.timedelta] = option(
        None,
        doc="the cluster deletes a finished Job (and so its record) this long after it ends; "
        "null keeps it until deleted",
    )
    termination_grace_period: Optional[datetime.timedelta] = option(
        None,
        doc="time between SIGTERM and SIGKILL when a pod is stopped (cancel, deadline); "
        "default: the cluster's (30s)",
    )
    python: str = option(
        "python",
        doc="the Python interpreter in the image that runs the trainerkit pod entry point",
        check=_check_python,
    )
    argument_format: Literal["json", "pickle"] = option(
        "json",
        doc="how train() arguments travel to the pod: json (safe; values must be JSON data) or "
        "pickle (any picklable object; the pod unpickles what this process sends, so use it only "
        "when you trust the image and its users)",
    )
    progress_interval: datetime.timedelta = option(
        datetime.timedelta(seconds=2),
        doc="a pod publishes report_progress at most this often (an annotation on its pod)",
        check=_check_interval,
    )
    master_port: int = option(
        29500,
        minimum=1,
        maximum=65535,
        doc="MASTER_PORT of multi-node trainings: the port rank 0 listens on for the others "
        "(torch.distributed's TCPStore); with retries, node 0's pod also listens on the next "
        "port (master_port + 1) for the other pods, which restart their ranks together",
    )
    rendezvous_timeout: datetime.timedelta = option(
        datetime.timedelta(minutes=10),
        doc="multi-node trainings: how long a node waits for rank 0's hostname (MASTER_ADDR) to "
        "resolve and accept connections before the training fails (with retries, also how long "
        "the group waits for a replaced pod to join); the wait shows in the status detail",
        check=_check_positive_duration,
    )
    require_save_volume: bool = option(
        True,
        doc="refuse a save_path that is not under a writable volume mount that outlives the pod "
        "(persistentVolumeClaim, nfs, hostPath, csi...; not emptyDir, configMap, secret, a "
        "readOnly mount); false when the image reaches save_path some other way",
    )
    request_timeout: float = option(
        30.0, minimum=1.0, doc="seconds before an API request without an answer fails"
    )
    request_retries: int = option(
        8,
        minimum=0,
        doc="how often an API request is resent after a transient failure (429, a 5xx, a dropped "
        "connection), after a backoff from 0.1 s doubling up to 5 s, or the server's Retry-After "
        "(at most 30 s); 0 reports the first failure",
    )

    @property
    def job_backoff_limit(self) -> int:
        """The Job's backoffLimit: ``max_retries`` when set, else ``backoff_limit``."""
        return self.max_retries if self.max_retries is not None else self.backoff_limit

    def validate(self) -> list[str]:
        problems = []
        if self.max_retries is not None and self.backoff_limit not in (0, self.max_retries):
            problems.append(
                f"max_retries ({self.max_retries}) and backoff_limit ({self.backoff_limit}) both set "
                "the Job's backoffLimit: keep one of them"
            )
        for name, value in self.env.items():
            problem = rules.check_env_var_name(name)
            if problem:
                problems.append(f"env.{name}: {problem}")
            elif name in RESERVED_ENV:
                problems.append(f"env.{name}: trainerkit sets this variable itself")
            elif isinstance(value, bool) or not isinstance(value, (str, int, float, Mapping)):
                problems.append(
                    f"env.{name}: expected a string or a valueFrom mapping (like {{secretKeyRef: "
                    f"{{name: s, key: k}}}}), got {value!r}"
                )
        mount_paths = [mount.get("mountPath") for mount in self.volume_mounts if isinstance(mount, Mapping)]
        volume_names = [volume.get("name") for volume in self.volumes if isinstance(volume, Mapping)]
        for index, mount in enumerate(self.volume_mounts):
            if isinstance(mount, Mapping) and mount.get("name") not in volume_names:
                problems.append(
                    f"volume_mounts[{index}].name: {mount.get('name')!r} is not the name of any "
                    "entry of volumes" + (f" ({', '.join(map(repr, volume_names))})" if volume_names else "")
                )
            path = mount.get("mountPath") if isinstance(mount, Mapping) else None
            if isinstance(path, str) and path.rstrip("/") == MOUNT_DIR:
                problems.append(
                    f"volume_mounts[{index}].mountPath: {MOUNT_DIR} is where trainerkit mounts its own files"
                )
        for index, volume in enumerate(self.volumes):
            name = volume.get("name") if isinstance(volume, Mapping) else None
            if name == SPEC_VOLUME:
                problems.append(f"volumes[{index}].name: {SPEC_VOLUME!r} is reserved for trainerkit's own volume")
            elif name is not None:
                problem = rules.check_dns_label(name, "volume name")
                if problem:
                    problems.append(f"volumes[{index}].name: {problem}")
        for path in sorted({p for p in mount_paths if isinstance(p, str) and mount_paths.count(p) > 1}):
            problems.append(f"volume_mounts: mountPath {path!r} is used more than once")
        return problems

    def save_volume_problem(self, save_path: str, trainer: str) -> Optional[str]:
        """Why a pod of this config could not save a model at ``save_path`` that
        outlives it, or None when it can (see :data:`PERSISTENT_VOLUME_KINDS`).

        The deepest ``volume_mounts`` entry that holds ``save_path`` decides.
        """
        volumes = {v.get("name"): v for v in self.volumes if isinstance(v, Mapping)}
        mounts = sorted(
            (
                (posixpath.normpath(mount["mountPath"]), mount)
                for mount in self.volume_mounts
                if isinstance(mount, Mapping) and isinstance(mount.get("mountPath"), str)
            ),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        path = posixpath.normpath(save_path)
        holder = next(
            ((mount_path, mount) for mount_path, mount in mounts
             if mount_path == "/" or path == mount_path or path.startswith(mount_path + "/")),
            None,
        )
        fix = (
            "save under the mountPath of a volume that outlives the pod and that this process can "
            f"read too ({', '.join(SAVE_VOLUME_EXAMPLES)}; see docs/kubernetes.md), or set "
            "require_save_volume: false if the image reaches that path some other way"
        )
        if holder is None:
            paths = ", ".join(mount_path for mount_path, _ in reversed(mounts)) or "it has no volume_mounts"
            return (
                f"save_path {save_path} is not under any writable volume mount of trainer {trainer!r} "
                f"({paths}): the pod would save the model into its own filesystem, which is deleted "
                f"with it; {fix}"
            )
        mount_path, mount = holder
        volume = volumes.get(mount.get("name")) or {}
        kind = volume_kind(volume)
        where = (
            f"save_path {save_path} is under the volume mount {mount_path} of trainer {trainer!r}, "
            f"volume {mount.get('name')!r} ({kind})"
        )
        if kind in POD_LIFETIME_VOLUME_KINDS:
            return f"{where}, which is deleted with the pod, and the model with it; {fix}"
        if kind in READ_ONLY_VOLUME_KINDS:
            return f"{where}, which the kubelet always mounts read-only, so the pod cannot save there; {fix}"
        if kind not in PERSISTENT_VOLUME_KINDS:
            return f"{where}, a kind of volume trainerkit does not know to outlive the pod; {fix}"
        if mount.get("readOnly"):
            return (
                f"{where}, which is mounted readOnly: true, so the pod cannot save there; remove "
                f"readOnly from that entry of volume_mounts, or {fix}"
            )
        source = volume.get(kind)
        if isinstance(source, Mapping) and source.get("readOnly"):
            return (
                f"{where}, whose {kind} sets readOnly: true, so the pod cannot save there; remove "
                f"readOnly from volumes entry {mount.get('name')!r}, or {fix}"
            )
        return None


def volume_kind(volume: Mapping[str, Any]) -> str:
    """The kind of a Pod spec volume: its one key besides ``name`` (``emptyDir``, ``nfs``...)."""
    kinds = [key for key in volume if key != "name"]
    return kinds[0] if len(kinds) == 1 else "no volume source" if not kinds else "+".join(sorted(kinds))
