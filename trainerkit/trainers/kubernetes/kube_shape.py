"""Checks the Kubernetes-shaped config keys against the official client's models.

``volumes``, ``volume_mounts``, ``tolerations``, ``affinity``, ``env_from``
and the ``valueFrom`` entries of ``env`` are written as in a Pod spec. The API
server would drop an unknown field (``efect:``) with only a warning, or refuse
the Job at the first ``train()``; here every such mistake becomes a config
error with its full key path when the trainer is built. The ``kubernetes``
client's models (pydantic, ``extra="forbid"``) know every field, its JSON
name, its type and whether it is required.
"""

from __future__ import annotations

import typing
from typing import Any, Mapping, Optional

import pydantic
from kubernetes.client import models

from ...schema import did_you_mean
from .config import KubernetesTrainerConfig

#: config key -> (client model of one entry, whether the key holds a list of them)
_SHAPES: dict[str, tuple[type, bool]] = {
    "volumes": (models.V1Volume, True),
    "volume_mounts": (models.V1VolumeMount, True),
    "tolerations": (models.V1Toleration, True),
    "env_from": (models.V1EnvFromSource, True),
    "affinity": (models.V1Affinity, False),
}


def pod_field_problems(config: KubernetesTrainerConfig, where: str) -> list[str]:
    """Every problem in the Kubernetes-shaped keys of ``config``, each with its key path."""
    problems: list[str] = []
    for key, (model, is_list) in _SHAPES.items():
        value = getattr(config, key)
        if value is None:
            continue
        items = list(enumerate(value)) if is_list else [(None, value)]
        for index, item in items:
            path = f"{where}.{key}" + (f"[{index}]" if index is not None else "")
            problems.extend(check_object(item, model, path))
    for name, value in config.env.items():
        if isinstance(value, Mapping):
            problems.extend(check_object(value, models.V1EnvVarSource, f"{where}.env.{name}"))
    return problems


def check_object(value: Any, model: type, path: str) -> list[str]:
    """Problems of ``value`` as a ``model`` object: unknown or snake_case keys
    first (with "did you mean"), then missing required keys and wrong types."""
    problems: list[str] = []
    _check_keys(value, model, path, problems)
    if problems:
        return problems
    try:
        model.model_validate(value)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            location = _location(path, error.get("loc", ()))
            if error.get("type") == "missing":
                problems.append(f"{location}: required key is missing")
            else:
                problems.append(f"{location}: {error.get('msg')}, got {error.get('input')!r}")
    return problems


def _location(path: str, loc: tuple[Any, ...]) -> str:
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _json_name(name: str, field: Any) -> str:
    return field.serialization_alias or field.alias or name


def _model_of(annotation: Any) -> Optional[type]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None


def _check_keys(value: Any, annotation: Any, path: str, problems: list[str]) -> None:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Union and len(args) == 1:
        _check_keys(value, args[0], path, problems)
        return
    if origin in (list, typing.List) and args and isinstance(value, list):
        for index, item in enumerate(value):
            _check_keys(item, args[0], f"{path}[{index}]", problems)
        return
    if origin in (dict, typing.Dict) and len(args) == 2 and isinstance(value, Mapping):
        for key, item in value.items():
            _check_keys(item, args[1], f"{path}.{key}", problems)
        return
    model = _model_of(annotation)
    if model is None:
        return
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a mapping ({model.__name__[2:]}), got {value!r}")
        return
    fields = {_json_name(name, field): (name, field) for name, field in model.model_fields.items()}
    python_names = {name: json_name for json_name, (name, _) in fields.items()}
    for key, item in value.items():
        entry = fields.get(key)
        if entry is None:
            if key in python_names:
                problems.append(f"{path}.{key}: write it as {python_names[key]!r}, as in a Pod spec")
            else:
                problems.append(
                    f"{path}.{key}: unknown key; accepted keys: "
                    + ", ".join(sorted(fields))
                    + did_you_mean(str(key), list(fields))
                )
            continue
        _check_keys(item, entry[1].annotation, f"{path}.{key}", problems)
