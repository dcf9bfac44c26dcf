"""Checks the Kubernetes-shaped config keys against the official client's models.

``volumes``, ``volume_mounts``, ``tolerations``, ``affinity``, ``env_from``
and the ``valueFrom`` entries of ``env`` are written as in a Pod spec. The API
server would drop an unknown field (``efect:``) with only a warning, or refuse
the Job at the first ``train()``; here every such mistake becomes a config
error with its full key path when the trainer is built. The ``kubernetes``
client's models know every field, its JSON name, its type and whether it is
required.

Two generations of those models are in use, and both are read here:
``kubernetes`` 37 and newer generate pydantic models (``model_fields``, strict
types), ``kubernetes`` 36 and older the classic OpenAPI-generator classes
(``openapi_types``, ``attribute_map``, setters that refuse ``None`` for a
required field). Both are turned into one small description of a field (its
JSON name, whether it is required, and its kind: a nested model, a list or
map of something, or a scalar), so the checks and the messages are the same
whichever client is installed. Both matter: ``kubernetes`` 37.0.2 and newer
need ``python-dateutil`` 3, which botocore (under s3fs) refuses, so an
environment with trainerkit's ``s3`` extra holds an older client, 37.0.1 or 36.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from typing import Any, Mapping, Optional

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
    first (with "did you mean"); when there are none, missing required keys and
    wrong types."""
    kind = _Kind("model", model=model)
    problems: list[str] = []
    _check(value, kind, path, problems, keys_only=True)
    if not problems:
        _check(value, kind, path, problems, keys_only=False)
    return problems


# -- one description of a field, whichever generation of models ---------------------


@dataclasses.dataclass(frozen=True)
class _Kind:
    """What a value must be: ``model`` (a mapping shaped as ``model``), ``list``
    or ``map`` (of ``item``), ``str``, ``int``, ``bool``, ``number``, or ``any``."""

    name: str
    model: Optional[type] = None
    item: Optional["_Kind"] = None


@dataclasses.dataclass(frozen=True)
class _Field:
    python_name: str
    required: bool
    kind: _Kind


_ANY = _Kind("any")
_SCALARS = {"str": "str", "int": "int", "bool": "bool", "float": "number", "datetime": "str", "object": "any"}
_EXPECTED = {"str": "a string", "int": "an integer", "bool": "true or false", "number": "a number"}


@functools.lru_cache(maxsize=None)
def _fields(model: type) -> dict[str, _Field]:
    """The fields of a client model by JSON name."""
    if hasattr(model, "model_fields"):  # kubernetes >= 37: pydantic
        return {
            (field.serialization_alias or field.alias or name): _Field(
                name, field.is_required(), _kind_of_annotation(field.annotation)
            )
            for name, field in model.model_fields.items()
        }
    # kubernetes <= 36: openapi_types / attribute_map, required fields' setters refuse None
    return {
        model.attribute_map[name]: _Field(name, _setter_refuses_none(model, name), _kind_of_type_name(type_name))
        for name, type_name in model.openapi_types.items()
    }


def _setter_refuses_none(model: type, name: str) -> bool:
    prop = getattr(model, name, None)
    setter = getattr(prop, "fset", None)
    if setter is None:
        return False
    try:
        source = inspect.getsource(setter)
    except (OSError, TypeError):
        return False
    return "must not be `None`" in source


def _kind_of_type_name(type_name: str) -> _Kind:
    """``'list[V1KeyToPath]'``, ``'dict[str, str]'``, ``'dict(str, str)'``, ``'int'``..."""
    type_name = type_name.strip()
    match = re.fullmatch(r"list\[(.+)\]", type_name)
    if match:
        return _Kind("list", item=_kind_of_type_name(match.group(1)))
    match = re.fullmatch(r"dict[\[(]\s*str\s*,\s*(.+)[\])]", type_name)
    if match:
        return _Kind("map", item=_kind_of_type_name(match.group(1)))
    if type_name in _SCALARS:
        return _Kind(_SCALARS[type_name])
    model = getattr(models, type_name, None)
    return _Kind("model", model=model) if isinstance(model, type) else _ANY


def _kind_of_annotation(annotation: Any) -> _Kind:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _kind_of_annotation(args[0])
    if origin is typing.Union:
        kinds = {_kind_of_annotation(arg) for arg in args}
        if len(kinds) == 1:
            return kinds.pop()
        if kinds <= {_Kind("int"), _Kind("number")}:
            return _Kind("number")
        return _ANY
    if origin in (list, typing.List) and args:
        return _Kind("list", item=_kind_of_annotation(args[0]))
    if origin in (dict, typing.Dict) and len(args) == 2:
        return _Kind("map", item=_kind_of_annotation(args[1]))
    if isinstance(annotation, type):
        if hasattr(annotation, "model_fields"):
            return _Kind("model", model=annotation)
        if annotation.__name__ in _SCALARS:
            return _Kind(_SCALARS[annotation.__name__])
    return _ANY


# -- the checks ----------------------------------------------------------------------


def _check(value: Any, kind: _Kind, path: str, problems: list[str], *, keys_only: bool) -> None:
    if kind.name == "any" or value is None:
        return
    if kind.name in ("list", "map"):
        assert kind.item is not None
        if kind.name == "list" and isinstance(value, list):
            for index, item in enumerate(value):
                _check(item, kind.item, f"{path}[{index}]", problems, keys_only=keys_only)
        elif kind.name == "map" and isinstance(value, Mapping):
            for key, item in value.items():
                _check(item, kind.item, f"{path}.{key}", problems, keys_only=keys_only)
        elif not keys_only:
            expected = "a list" if kind.name == "list" else "a mapping"
            problems.append(f"{path}: expected {expected}, got {value!r}")
        return
    if kind.name == "model":
        assert kind.model is not None
        _check_model(value, kind.model, path, problems, keys_only=keys_only)
        return
    if not keys_only and not _is_scalar(value, kind.name):
        problems.append(f"{path}: expected {_EXPECTED[kind.name]}, got {value!r}")


def _is_scalar(value: Any, name: str) -> bool:
    if name == "str":
        return isinstance(value, str)
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model(value: Any, model: type, path: str, problems: list[str], *, keys_only: bool) -> None:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a mapping ({model.__name__[2:]}), got {value!r}")
        return
    fields = _fields(model)
    if keys_only:
        python_names = {field.python_name: json_name for json_name, field in fields.items()}
        for key in value:
            if key in fields:
                continue
            if key in python_names:
                problems.append(f"{path}.{key}: write it as {python_names[key]!r}, as in a Pod spec")
            else:
                problems.append(
                    f"{path}.{key}: unknown key; accepted keys: "
                    + ", ".join(sorted(fields))
                    + did_you_mean(str(key), list(fields))
                )
    else:
        for json_name, field in fields.items():
            if field.required and value.get(json_name) is None:
                problems.append(f"{path}.{json_name}: required key is missing")
    for key, item in value.items():
        field = fields.get(key)
        if field is not None:
            _check(item, field.kind, f"{path}.{key}", problems, keys_only=keys_only)
