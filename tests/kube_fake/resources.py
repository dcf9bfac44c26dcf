"""Registry of the resource types the fake API server serves."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResourceType:
    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    subresources: frozenset = field(default_factory=frozenset)
    # Field selectors the real apiserver accepts for this type (besides
    # metadata.name / metadata.namespace which every type supports).
    field_labels: frozenset = field(default_factory=frozenset)
    has_status: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``jobs.batch`` / ``pods`` - the spelling used in Status messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Job.batch`` / ``Pod`` - the spelling used in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def supports_field(self, name: str) -> bool:
        if name in ("metadata.name", "metadata.namespace"):
            return True
        return name in self.field_labels


NAMESPACES = ResourceType(
    "namespaces", "Namespace", namespaced=False, subresources=frozenset({"status"}),
    field_labels=frozenset({"status.phase"}), has_status=True,
)
PODS = ResourceType(
    "pods", "Pod", subresources=frozenset({"status", "log"}), has_status=True,
    field_labels=frozenset({
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
    }),
)
CONFIGMAPS = ResourceType("configmaps", "ConfigMap")
SECRETS = ResourceType("secrets", "Secret", field_labels=frozenset({"type"}))
EVENTS = ResourceType(
    "events", "Event",
    field_labels=frozenset({
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    }),
)
SERVICEACCOUNTS = ResourceType("serviceaccounts", "ServiceAccount")
SERVICES = ResourceType("services", "Service", subresources=frozenset({"status"}), has_status=True)
PVCS = ResourceType(
    "persistentvolumeclaims", "PersistentVolumeClaim", subresources=frozenset({"status"}), has_status=True,
)
JOBS = ResourceType(
    "jobs", "Job", group="batch", subresources=frozenset({"status"}), has_status=True,
    field_labels=frozenset({"status.successful"}),
)

ALL_TYPES = (NAMESPACES, PODS, CONFIGMAPS, SECRETS, EVENTS, SERVICEACCOUNTS, SERVICES, PVCS, JOBS)

_BY_GVR = {(rt.group, rt.version, rt.plural): rt for rt in ALL_TYPES}
_BY_PLURAL = {rt.plural: rt for rt in ALL_TYPES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_GVR.get((group, version, plural))


def by_plural(plural: str) -> ResourceType:
    return _BY_PLURAL[plural]


def group_versions() -> dict[str, list[ResourceType]]:
    out: dict[str, list[ResourceType]] = {}
    for rt in ALL_TYPES:
        out.setdefault(rt.api_version, []).append(rt)
    return out
