"""The API server's rules that a JSON schema cannot express, checked before sending.

The OpenAPI schema says a name is a string; the API server also insists that
it is a DNS-1123 label or subdomain, that label values are at most 63
characters of a restricted alphabet, that quantities parse, that a Job's pods
restart ``Never`` or ``OnFailure``... A manifest that breaks one of these is
refused with a 422 after the round trip; trainerkit checks them first so that
the error names the config key or argument at fault instead.

Every ``check_*`` function returns a problem text, or None when the value is
fine; :func:`job_problems` applies them to a whole Job manifest.
"""

from __future__ import annotations

import decimal
import re
from typing import Any, Mapping, Optional

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
#: The API server refuses an object whose annotations total more than this.
ANNOTATIONS_TOTAL_MAX = 256 * 1024
#: The API server (etcd) refuses a ConfigMap whose data is larger than this.
CONFIGMAP_DATA_MAX = 1024 * 1024

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+\Z")
_ENV_VAR_NAME = re.compile(r"^[^=\s]+\Z")
# resource.Quantity: a signed decimal, then a binary (Ki..Ei) or decimal (n..E)
# suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIX_FACTORS: dict[str, decimal.Decimal] = {
    "": decimal.Decimal(1),
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "k": decimal.Decimal("1e3"),
    "M": decimal.Decimal("1e6"),
    "G": decimal.Decimal("1e9"),
    "T": decimal.Decimal("1e12"),
    "P": decimal.Decimal("1e15"),
    "E": decimal.Decimal("1e18"),
    "Ki": decimal.Decimal(2**10),
    "Mi": decimal.Decimal(2**20),
    "Gi": decimal.Decimal(2**30),
    "Ti": decimal.Decimal(2**40),
    "Pi": decimal.Decimal(2**50),
    "Ei": decimal.Decimal(2**60),
}
#: Resource names the kubelet knows without a domain prefix.
STANDARD_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})


def check_dns_label(value: Any, what: str = "name") -> Optional[str]:
    """A DNS-1123 label: namespaces, container names, volume names."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string, got {value!r}"
    if len(value) > DNS1123_LABEL_MAX:
        return f"{what} {value!r} is {len(value)} characters; at most {DNS1123_LABEL_MAX} are allowed"
    if not _DNS1123_LABEL.match(value):
        return (
            f"{what} {value!r} is not a DNS-1123 label: use lowercase letters a-z, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def check_dns_subdomain(value: Any, what: str = "name") -> Optional[str]:
    """A DNS-1123 subdomain: most object names (ConfigMaps, Secrets, service accounts...)."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string, got {value!r}"
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"{what} {value!r} is {len(value)} characters; at most {DNS1123_SUBDOMAIN_MAX} are allowed"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            f"{what} {value!r} is not a DNS-1123 subdomain: use lowercase letters a-z, digits, '-' "
            "and '.', starting and ending with a letter or digit"
        )
    return None


def check_qualified_name(value: Any, what: str = "key") -> Optional[str]:
    """A label/annotation key or resource name: ``[prefix/]name`` (prefix a DNS subdomain)."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string, got {value!r}"
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return f"{what} {value!r} has an empty prefix before '/'"
        problem = check_dns_subdomain(prefix, f"the prefix of {what} {value!r}")
        if problem:
            return problem
    if len(name) > QUALIFIED_NAME_MAX:
        return (
            f"{what} {value!r}: the name part {name!r} is {len(name)} characters; at most "
            f"{QUALIFIED_NAME_MAX} are allowed"
        )
    if not _QUALIFIED_NAME_PART.match(name):
        return (
            f"{what} {value!r} is not a qualified name: an optional DNS prefix and '/', then "
            "letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


def check_label_value(value: Any, what: str = "label value") -> Optional[str]:
    """A label value: at most 63 characters, alphanumerics with ``-_.`` inside (may be empty)."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {value!r}"
    if len(value) > LABEL_VALUE_MAX:
        return f"{what} {value!r} is {len(value)} characters; at most {LABEL_VALUE_MAX} are allowed"
    if not _LABEL_VALUE.match(value):
        return (
            f"{what} {value!r} is not a valid label value: letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def check_labels(labels: Mapping[str, Any], what: str = "labels") -> list[str]:
    """Every key a qualified name, every value a label value."""
    problems = []
    for key, value in labels.items():
        problem = check_qualified_name(key, f"{what} key") or check_label_value(
            value, f"{what}[{key!r}] value"
        )
        if problem:
            problems.append(problem)
    return problems


def check_annotations(annotations: Mapping[str, Any], what: str = "annotations") -> list[str]:
    """Keys qualified names, values strings, everything together at most 256 KiB."""
    problems = []
    total = 0
    for key, value in annotations.items():
        problem = check_qualified_name(key, f"{what} key")
        if problem:
            problems.append(problem)
        if not isinstance(value, str):
            problems.append(f"{what}[{key!r}] must be a string, got {value!r}")
            continue
        total += len(key.encode()) + len(value.encode())
    if total > ANNOTATIONS_TOTAL_MAX:
        problems.append(
            f"{what} total {total} bytes; the API server accepts at most {ANNOTATIONS_TOTAL_MAX}"
        )
    return problems


def check_env_var_name(value: Any) -> Optional[str]:
    """An environment variable name: printable, without ``=`` or whitespace."""
    if not isinstance(value, str) or not value or not _ENV_VAR_NAME.match(value) or not value.isprintable():
        return f"environment variable name {value!r} must be printable text without '=' or spaces"
    return None


def check_configmap_key(value: str) -> Optional[str]:
    """A ConfigMap data key: letters, digits, ``-._``."""
    if not _CONFIGMAP_KEY.match(value) or len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"ConfigMap key {value!r} may hold only letters, digits, '-', '_' and '.'"
    return None


def parse_quantity(value: Any) -> decimal.Decimal:
    """The numeric value of a Kubernetes quantity (``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824).

    Raises:
        ValueError: ``value`` is not a quantity.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a quantity")
    text = str(value)
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity: write a number with an optional suffix, "
            "like 2, 500m, 1.5, 4Gi, 512Mi or 1e3"
        )
    number = decimal.Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        return number * (decimal.Decimal(10) ** int(suffix[1:]))
    return number * _SUFFIX_FACTORS[suffix]


def check_resources(resources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The rules of a container's ``resources`` (``requests`` / ``limits``).

    Names are qualified names; names without a domain must be standard
    (``cpu``, ``memory``, ``ephemeral-storage``, ``hugepages-*``); quantities parse
    and are not negative; extended resources such as ``nvidia.com/gpu`` are whole
    numbers and, when both are given, request equals limit; no request exceeds its limit.
    """
    problems = []
    parsed: dict[str, dict[str, decimal.Decimal]] = {}
    for kind in ("requests", "limits"):
        parsed[kind] = {}
        for name, value in (resources.get(kind) or {}).items():
            where = f"{kind}.{name}"
            problem = check_qualified_name(name, "resource name")
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            if "/" not in name and name not in STANDARD_RESOURCES and not name.startswith("hugepages-"):
                problems.append(
                    f"{where}: {name!r} is not a standard resource (cpu, memory, ephemeral-storage, "
                    "hugepages-<size>); extended resources need a domain, like nvidia.com/gpu"
                )
                continue
            try:
                quantity = parse_quantity(value)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if quantity < 0:
                problems.append(f"{where}: {value!r} is negative")
                continue
            if "/" in name and not name.startswith("kubernetes.io/") and quantity != quantity.to_integral_value():
                problems.append(f"{where}: extended resource {name} must be a whole number, got {value!r}")
                continue
            parsed[kind][name] = quantity
    requests, limits = parsed["requests"], parsed["limits"]
    for name, request in requests.items():
        limit = limits.get(name)
        if limit is None:
            if "/" in name and not name.startswith("kubernetes.io/"):
                problems.append(
                    f"requests.{name}: extended resources must also be set in limits (with the "
                    "same value); setting limits alone is enough"
                )
            continue
        if "/" in name and not name.startswith("kubernetes.io/") and request != limit:
            problems.append(
                f"requests.{name}: an extended resource's request must equal its limit "
                f"({resources['requests'][name]!r} != {resources['limits'][name]!r})"
            )
        elif request > limit:
            problems.append(
                f"requests.{name}: {resources['requests'][name]!r} is more than the limit "
                f"{resources['limits'][name]!r}"
            )
    return problems


def _walk_names(manifest: Mapping[str, Any], kind: str) -> list[str]:
    problems = []
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name")
    problem = (check_dns_label if kind in ("Job", "Service") else check_dns_subdomain)(name, f"{kind} name")
    if problem:
        problems.append(problem)
    namespace = metadata.get("namespace")
    if namespace is not None:
        problem = check_dns_label(namespace, "namespace")
        if problem:
            problems.append(problem)
    problems.extend(check_labels(metadata.get("labels") or {}, f"{kind} labels"))
    problems.extend(check_annotations(metadata.get("annotations") or {}, f"{kind} annotations"))
    return problems


def configmap_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Server-side rules of a ConfigMap: names, keys, and the 1 MiB data limit."""
    problems = _walk_names(manifest, "ConfigMap")
    size = 0
    for section in ("data", "binaryData"):
        for key, value in (manifest.get(section) or {}).items():
            problem = check_configmap_key(key)
            if problem:
                problems.append(problem)
            size += len(key.encode()) + len(value.encode())
    if size > CONFIGMAP_DATA_MAX:
        problems.append(
            f"the ConfigMap's data is {size} bytes; the API server accepts at most {CONFIGMAP_DATA_MAX}"
        )
    return problems


def job_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Server-side rules of a batch/v1 Job that its JSON schema does not check.

    Job names are DNS-1123 labels here (stricter than the API server's
    subdomain) because the Job controller copies the name into the
    ``job-name`` label of its pods, whose values are at most 63 characters.
    """
    problems = _walk_names(manifest, "Job")
    spec = manifest.get("spec") or {}
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        value = spec.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"spec.{field} must be a non-negative integer, got {value!r}")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int) or deadline < 1):
        problems.append(f"spec.activeDeadlineSeconds must be a positive integer, got {deadline!r}")
    template = spec.get("template") or {}
    template_metadata = template.get("metadata") or {}
    problems.extend(check_labels(template_metadata.get("labels") or {}, "pod labels"))
    problems.extend(check_annotations(template_metadata.get("annotations") or {}, "pod annotations"))
    pod = template.get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(
            f"a Job's pods must have restartPolicy Never or OnFailure, got {pod.get('restartPolicy')!r}"
        )
    problems.extend(check_labels(pod.get("nodeSelector") or {}, "nodeSelector"))
    for field in ("serviceAccountName", "priorityClassName"):
        if pod.get(field) is not None:
            problem = check_dns_subdomain(pod[field], field)
            if problem:
                problems.append(problem)
    volume_names = []
    for volume in pod.get("volumes") or []:
        problem = check_dns_label(volume.get("name"), "volume name")
        if problem:
            problems.append(problem)
        volume_names.append(volume.get("name"))
    for duplicate in sorted({n for n in volume_names if volume_names.count(n) > 1}):
        problems.append(f"volume name {duplicate!r} is used more than once")
    containers = pod.get("containers") or []
    if not containers:
        problems.append("a Job's pod needs at least one container")
    for container in containers:
        problem = check_dns_label(container.get("name"), "container name")
        if problem:
            problems.append(problem)
        if not container.get("image"):
            problems.append(f"container {container.get('name')!r} has no image")
        for variable in container.get("env") or []:
            problem = check_env_var_name(variable.get("name"))
            if problem:
                problems.append(problem)
        mount_paths = []
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volume_names:
                problems.append(
                    f"volume mount {mount.get('mountPath')!r} names volume {mount.get('name')!r}, "
                    "which is not among the pod's volumes"
                )
            path = mount.get("mountPath")
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"mountPath {path!r} must be an absolute path")
            mount_paths.append(path)
        for duplicate in sorted({p for p in mount_paths if mount_paths.count(p) > 1}):
            problems.append(f"mountPath {duplicate!r} is used by more than one volume mount")
        problems.extend(check_resources(container.get("resources") or {}))
    return problems


_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")


def check_dns1035_label(value: Any, what: str = "name") -> Optional[str]:
    """A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter."""
    problem = check_dns_label(value, what)
    if problem:
        return problem
    if not _DNS1035_LABEL.match(value):
        return f"{what} {value!r} must start with a lowercase letter (a DNS-1035 label)"
    return None


def indexed_job_problems(manifest: Mapping[str, Any]) -> list[str]:
    """An Indexed Job's pods are named for their hostnames ``<job name>-<index>``,
    DNS-1123 labels of at most 63 characters (the Job controller sets them)."""
    spec = manifest.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return []
    name = (manifest.get("metadata") or {}).get("name") or ""
    completions = spec.get("completions")
    if not isinstance(completions, int) or isinstance(completions, bool) or completions < 1:
        return [f"an Indexed Job needs completions of at least 1, got {completions!r}"]
    hostname = f"{name}-{completions - 1}"
    if len(hostname) > DNS1123_LABEL_MAX:
        return [
            f"the last pod's hostname {hostname!r} would be {len(hostname)} characters, but hostnames are "
            f"DNS labels of at most {DNS1123_LABEL_MAX}: the id of a training of {completions} nodes may "
            f"take at most {DNS1123_LABEL_MAX - len(hostname) + len(name)} characters (choose an "
            f"external_training_id {len(hostname) - DNS1123_LABEL_MAX} characters shorter)"
        ]
    problem = check_dns_label(hostname, "pod hostname")
    return [problem] if problem else []


def service_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Server-side rules of a Service: a DNS-1035 name, labels, selector."""
    problems = _walk_names(manifest, "Service")
    name = (manifest.get("metadata") or {}).get("name")
    if not check_dns_label(name) and not _DNS1035_LABEL.match(name):
        problems.append(f"Service name {name!r} must start with a lowercase letter (a DNS-1035 label)")
    problems.extend(check_labels((manifest.get("spec") or {}).get("selector") or {}, "Service selector"))
    return problems
