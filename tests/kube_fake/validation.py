"""Object validation producing ``details.causes`` like the real apiserver (422 Invalid).

Only the rules that matter for a trainer talking to the API are implemented:
names, labels, annotations keys, Job spec numbers and immutability, pod template
restartPolicy, containers (name/image/uniqueness/env/volumeMounts), volumes and
ConfigMap / Secret keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from . import errors as E
from .resources import CONFIGMAPS, JOBS, NAMESPACES, PODS, SECRETS, SERVICES, ResourceType
from .selectors import DNS1123_SUBDOMAIN_MSG, validate_label_key, validate_label_value

_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+\Z")

DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                     "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
                  "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
ENV_NAME_MSG = "a valid environment variable name must consist only of printable ASCII characters other than '='"

JOB_RESTART_POLICIES = ["OnFailure", "Never"]
POD_RESTART_POLICIES = ["Always", "OnFailure", "Never"]


def dns1123_subdomain_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(DNS1123_SUBDOMAIN_MSG)
    return errs


def dns1123_label_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL_RE.match(value):
        errs.append(DNS1123_LABEL_MSG)
    return errs


def _labels(labels: Any, path: str, causes: list[dict]) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        causes.append(E.cause_invalid(path, str(labels), "must be a map of string keys to string values"))
        return
    for key, value in labels.items():
        for err in validate_label_key(str(key)):
            causes.append(E.cause_invalid(path, key, err))
        if not isinstance(value, str):
            causes.append(E.cause_invalid(f"{path}", str(value), "label values must be strings"))
            continue
        for err in validate_label_value(value):
            causes.append(E.cause_invalid(path, value, err))


def _metadata(rt: ResourceType, obj: dict, causes: list[dict]) -> None:
    md = obj.get("metadata") or {}
    name = md.get("name")
    if not name:
        causes.append(E.cause_required("metadata.name", "name or generateName is required"))
    else:
        errs = dns1123_label_errors(name) if rt in (NAMESPACES, SERVICES) else dns1123_subdomain_errors(name)
        for err in errs:
            causes.append(E.cause_invalid("metadata.name", name, err))
    _labels(md.get("labels"), "metadata.labels", causes)
    for key in (md.get("annotations") or {}):
        for err in validate_label_key(str(key)):
            causes.append(E.cause_invalid("metadata.annotations", key, err))
    for i, ref in enumerate(md.get("ownerReferences") or []):
        for fld in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(fld):
                causes.append(E.cause_required(f"metadata.ownerReferences[{i}].{fld}"))


def _env(env: Any, path: str, causes: list[dict]) -> None:
    for i, var in enumerate(env or []):
        name = var.get("name")
        if not name:
            causes.append(E.cause_required(f"{path}[{i}].name"))
        elif "=" in name or not all(32 <= ord(ch) < 127 for ch in name):
            causes.append(E.cause_invalid(f"{path}[{i}].name", name, ENV_NAME_MSG))
        source = var.get("valueFrom")
        if source is not None:
            if var.get("value"):
                causes.append(E.cause_invalid(f"{path}[{i}].valueFrom", "",
                                              "may not be specified when `value` is not empty"))
            kinds = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef",
                                 "fileKeyRef") if source.get(k)]
            if len(kinds) != 1:
                causes.append(E.cause_invalid(f"{path}[{i}].valueFrom", "",
                                              "may not have more than one field specified at a time"
                                              if kinds else "must specify one of: `fieldRef`, "
                                              "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
            for k in ("configMapKeyRef", "secretKeyRef"):
                ref = source.get(k)
                if ref is not None:
                    if not ref.get("key"):
                        causes.append(E.cause_required(f"{path}[{i}].valueFrom.{k}.key"))
                    if not ref.get("name"):
                        causes.append(E.cause_required(f"{path}[{i}].valueFrom.{k}.name"))


def _containers(containers: Any, path: str, volume_names: set[str], seen: set[str], causes: list[dict],
                *, required: bool) -> None:
    if not containers:
        if required:
            causes.append(E.cause_required(path))
        return
    for i, c in enumerate(containers):
        cpath = f"{path}[{i}]"
        name = c.get("name")
        if not name:
            causes.append(E.cause_required(f"{cpath}.name"))
        else:
            for err in dns1123_label_errors(name):
                causes.append(E.cause_invalid(f"{cpath}.name", name, err))
            if name in seen:
                causes.append(E.cause_duplicate(f"{cpath}.name", name))
            seen.add(name)
        if not c.get("image"):
            causes.append(E.cause_required(f"{cpath}.image"))
        for fld in ("command", "args"):
            val = c.get(fld)
            if val is not None and (not isinstance(val, list) or not all(isinstance(v, str) for v in val)):
                causes.append(E.cause_invalid(f"{cpath}.{fld}", json.dumps(val), "must be a list of strings"))
        _env(c.get("env"), f"{cpath}.env", causes)
        for j, mount in enumerate(c.get("volumeMounts") or []):
            mpath = f"{cpath}.volumeMounts[{j}]"
            if not mount.get("name"):
                causes.append(E.cause_required(f"{mpath}.name"))
            elif mount["name"] not in volume_names:
                causes.append(E.field_cause("FieldValueNotFound", f"{mpath}.name",
                                            f'Not found: "{mount["name"]}"'))
            if not mount.get("mountPath"):
                causes.append(E.cause_required(f"{mpath}.mountPath"))
        policy = c.get("terminationMessagePolicy")
        if policy is not None and policy not in ("File", "FallbackToLogsOnError"):
            causes.append(E.cause_not_supported(f"{cpath}.terminationMessagePolicy", policy,
                                                ["File", "FallbackToLogsOnError"]))


def _pod_spec(spec: Any, path: str, causes: list[dict], *, restart_policies: list[str]) -> None:
    if not isinstance(spec, dict):
        causes.append(E.cause_required(path))
        return
    volume_names: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        vname = vol.get("name")
        if not vname:
            causes.append(E.cause_required(f"{path}.volumes[{i}].name"))
            continue
        for err in dns1123_label_errors(vname):
            causes.append(E.cause_invalid(f"{path}.volumes[{i}].name", vname, err))
        if vname in volume_names:
            causes.append(E.cause_duplicate(f"{path}.volumes[{i}].name", vname))
        volume_names.add(vname)
    seen: set[str] = set()
    _containers(spec.get("initContainers"), f"{path}.initContainers", volume_names, seen, causes, required=False)
    _containers(spec.get("containers"), f"{path}.containers", volume_names, seen, causes, required=True)
    policy = spec.get("restartPolicy")
    if not policy:
        quoted = ", ".join(f'"{p}"' for p in restart_policies)
        causes.append(E.cause_required(f"{path}.restartPolicy", f"valid values: {quoted}"))
    elif policy not in restart_policies:
        causes.append(E.cause_not_supported(f"{path}.restartPolicy", policy, restart_policies))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace < 0):
        causes.append(E.cause_invalid(f"{path}.terminationGracePeriodSeconds", grace,
                                      "must be greater than or equal to 0"))


def _non_negative(spec: dict, fld: str, causes: list[dict], *, positive: bool = False) -> None:
    value = spec.get(fld)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        causes.append(E.cause_invalid(f"spec.{fld}", value,
                                      "must be greater than zero" if positive
                                      else "must be greater than or equal to 0"))


def _job(obj: dict, causes: list[dict]) -> None:
    name = (obj.get("metadata") or {}).get("name") or ""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(E.cause_required("spec"))
        return
    for fld in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished", "backoffLimitPerIndex",
                "maxFailedIndexes"):
        _non_negative(spec, fld, causes)
    _non_negative(spec, "activeDeadlineSeconds", causes, positive=True)
    mode = spec.get("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        causes.append(E.cause_not_supported("spec.completionMode", mode, ["NonIndexed", "Indexed"]))
    elif mode == "Indexed" and spec.get("completions") is None:
        causes.append(E.cause_required("spec.completions", "when completion mode is Indexed"))
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(E.cause_required("spec.template"))
        return
    tlabels = (template.get("metadata") or {}).get("labels")
    _labels(tlabels, "spec.template.metadata.labels", causes)
    # The job name ends up as a label value (job-name), so it must fit in 63 characters.
    if len(name) > 63:
        causes.append(E.cause_invalid("spec.template.labels", name, "must be no more than 63 characters"))
    _pod_spec(template.get("spec"), "spec.template.spec", causes, restart_policies=JOB_RESTART_POLICIES)
    pfp = spec.get("podFailurePolicy")
    if pfp and (template.get("spec") or {}).get("restartPolicy") != "Never":
        causes.append(E.cause_invalid("spec.template.spec.restartPolicy",
                                      (template.get("spec") or {}).get("restartPolicy", ""),
                                      "only \"Never\" is supported when podFailurePolicy is specified"))


_DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                     "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                     "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def _service(obj: dict, causes: list[dict]) -> None:
    name = (obj.get("metadata") or {}).get("name") or ""
    if name and not _DNS1035_LABEL_RE.match(name):
        causes.append(E.cause_invalid("metadata.name", name, DNS1035_LABEL_MSG))
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(E.cause_required("spec"))
        return
    _labels(spec.get("selector"), "spec.selector", causes)
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and spec.get("type", "ClusterIP") != "ExternalName":
        causes.append(E.cause_required("spec.ports"))
    for i, port in enumerate(ports):
        number = port.get("port") if isinstance(port, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            causes.append(E.cause_invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"))
        if len(ports) > 1 and not (isinstance(port, dict) and port.get("name")):
            causes.append(E.cause_required(f"spec.ports[{i}].name"))


def _config_keys(data: Any, path: str, causes: list[dict]) -> None:
    for key in (data or {}):
        if len(key) > 253 or not _CONFIG_KEY_RE.match(key):
            causes.append(E.cause_invalid(path, key, CONFIG_KEY_MSG))


def validate(rt: ResourceType, obj: dict) -> list[dict]:
    """Validation causes for a create (empty list: valid)."""
    causes: list[dict] = []
    _metadata(rt, obj, causes)
    if rt is JOBS:
        _job(obj, causes)
    elif rt is PODS:
        _pod_spec(obj.get("spec"), "spec", causes, restart_policies=POD_RESTART_POLICIES)
    elif rt is SERVICES:
        _service(obj, causes)
    elif rt is CONFIGMAPS:
        _config_keys(obj.get("data"), "data", causes)
        _config_keys(obj.get("binaryData"), "binaryData", causes)
        for key, value in (obj.get("data") or {}).items():
            if not isinstance(value, str):
                causes.append(E.cause_invalid(f"data[{key}]", str(value), "must be a string"))
        dup = set(obj.get("data") or {}) & set(obj.get("binaryData") or {})
        for key in sorted(dup):
            causes.append(E.cause_invalid("data", key, "duplicate of key present in binaryData"))
    elif rt is SECRETS:
        _config_keys(obj.get("data"), "data", causes)
        for key, value in (obj.get("data") or {}).items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                causes.append(E.cause_invalid(f"data[{key}]", "<secret contents redacted>",
                                              "illegal base64 data"))
    return causes


_JOB_MUTABLE_SPEC = {"parallelism", "suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                     "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy",
                     "successPolicy", "managedBy", "podReplacementPolicy", "manualSelector"}


def validate_update(rt: ResourceType, old: dict, new: dict) -> list[dict]:
    """Validation causes for an update (create rules plus immutability)."""
    causes = validate(rt, new)
    if rt is JOBS:
        ospec, nspec = old.get("spec") or {}, new.get("spec") or {}
        for fld in sorted(set(ospec) | set(nspec)):
            if fld in _JOB_MUTABLE_SPEC or ospec.get(fld) == nspec.get(fld):
                continue
            if fld == "template":
                causes.append(E.cause_invalid("spec.template", "core.PodTemplateSpec{...}", "field is immutable"))
            else:
                causes.append(E.cause_invalid(f"spec.{fld}", json.dumps(nspec.get(fld)), "field is immutable"))
    elif rt is SERVICES:
        oip, nip = (old.get("spec") or {}).get("clusterIP"), (new.get("spec") or {}).get("clusterIP")
        if oip != nip:
            causes.append(E.cause_invalid("spec.clusterIPs[0]", str(nip), "may not change once set"))
    elif rt is PODS:
        def strip(spec: dict) -> dict:
            spec = json.loads(json.dumps(spec or {}))
            for key in ("containers", "initContainers"):
                for c in spec.get(key) or []:
                    c.pop("image", None)
            for key in ("activeDeadlineSeconds", "tolerations", "nodeName"):
                spec.pop(key, None)
            return spec
        if strip(old.get("spec")) != strip(new.get("spec")):
            causes.append(E.cause_forbidden("spec", "pod updates may not change fields other than "
                                            "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                                            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                                            "to existing tolerations),`spec.terminationGracePeriodSeconds` "
                                            "(allow it to be set to 1 if it was previously negative)"))
    return causes
