"""Declared configuration and the one validator every trainer shares.

A trainer declares its config once, as a dataclass whose fields use
:func:`option`. :func:`validate` turns a raw mapping (from YAML, a dict or
environment overrides) into an instance of that dataclass, or into a list of
problems, each naming the full key path, what was given and what is accepted,
with a "did you mean" for near-miss keys. Nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import typing
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from .durations import format_duration, parse_duration

T = TypeVar("T")

# Booleans in YAML 1.1 (PyYAML's safe_load), text in YAML 1.2: worth a hint.
_YAML_1_1_BOOLEAN_WORDS = frozenset({"yes", "no", "on", "off", "y", "n"})


def option(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    default_factory: Any = dataclasses.MISSING,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    choices: Optional[Sequence[Any]] = None,
    check: Optional[Callable[[Any], Optional[str]]] = None,
) -> Any:
    """A config field: its default, its documentation and its constraints.

    ``check`` receives the converted value and returns a problem text or None.
    """
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices, "check": check}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ""."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not matches and isinstance(word, str):
        lowered = {c.lower(): c for c in candidates}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return f"; did you mean {matches[0]!r}?" if matches else ""


def describe_type(annotation: Any) -> str:
    """A short English name for a type annotation, used in messages."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return "any value"
    if origin is Union:
        inner = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(inner)
        return f"{text} or null" if type(None) in args else text
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, Sequence, tuple):
        return f"a list of {describe_type(args[0]) if args else 'values'}"
    if origin in (dict, Mapping):
        return f"a mapping of {describe_type(args[0])} to {describe_type(args[1])}" if args else "a mapping"
    if annotation is bool:
        return "a boolean (true/false)"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if annotation is datetime.timedelta:
        return "a duration like '7d12h', '90m' or a number of seconds"
    if dataclasses.is_dataclass(annotation):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _given(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def validate(schema: type[T], raw: Any, key_path: str) -> tuple[Optional[T], list[str]]:
    """Convert ``raw`` into a ``schema`` instance, collecting every problem.

    Returns ``(instance, [])`` on success and ``(None, problems)`` otherwise.
    """
    problems: list[str] = []
    result = _convert_dataclass(schema, {} if raw is None else raw, key_path, problems)
    return (result if not problems else None), problems


def validate_with_schema(schema: Optional[type], raw: Any, key_path: str) -> tuple[Any, list[str]]:
    """A trainer type's default config validation (``ModelTrainerBase.validate_config``).

    With a ``schema``, as :func:`validate`. Without one, ``raw`` must be a
    mapping (or null) and comes back as an ``aconfig.Config`` for the trainer
    to check itself.

    Returns:
        ``(config, [])`` on success, ``(None, problems)`` otherwise.
    """
    if schema is not None:
        return validate(schema, raw, key_path)
    import aconfig  # only for trainer types without a schema

    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return None, [f"{key_path}: expected a mapping, got {raw!r}"]
    return aconfig.Config(dict(raw), override_env_vars=False), []


def _convert_dataclass(schema: type, raw: Any, key_path: str, problems: list[str]) -> Any:
    if not isinstance(raw, Mapping):
        problems.append(f"{key_path}: expected {describe_type(schema)}, got {_given(raw)}")
        return None
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    accepted = sorted(fields)
    for key in raw:
        if key not in fields:
            problems.append(
                f"{key_path}.{key}: unknown key (given {_given(raw[key])}); accepted keys: "
                + ", ".join(accepted)
                + did_you_mean(str(key), accepted)
            )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        path = f"{key_path}.{name}"
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                problems.append(f"{path}: required key is missing ({field.metadata.get('doc', '')})")
            continue
        before = len(problems)
        value = _convert(hints[name], raw[name], path, problems)
        if len(problems) == before:
            _check_constraints(field, value, path, problems)
        values[name] = value
    if problems:
        return None
    try:
        instance = schema(**values)
    except (TypeError, ValueError) as exc:
        problems.append(f"{key_path}: {exc}")
        return None
    post = getattr(instance, "validate", None)
    if callable(post):
        for problem in post() or ():
            problems.append(f"{key_path}.{problem}" if not problem.startswith(key_path) else problem)
    return instance


def _check_constraints(field: dataclasses.Field, value: Any, path: str, problems: list[str]) -> None:
    meta = field.metadata
    if value is None:
        return
    minimum, maximum, choices, check = meta.get("minimum"), meta.get("maximum"), meta.get("choices"), meta.get("check")
    if minimum is not None and isinstance(value, (int, float)) and value < minimum:
        problems.append(f"{path}: must be >= {minimum}, got {value!r}")
    if maximum is not None and isinstance(value, (int, float)) and value > maximum:
        problems.append(f"{path}: must be <= {maximum}, got {value!r}")
    if choices is not None and value not in choices:
        problems.append(
            f"{path}: {value!r} is not accepted; use one of "
            + ", ".join(repr(c) for c in choices)
            + did_you_mean(str(value), [str(c) for c in choices])
        )
    if check is not None:
        problem = check(value)
        if problem:
            problems.append(f"{path}: {problem}")


def _convert(annotation: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is Union:
        if value is None:
            if type(None) in args:
                return None
            problems.append(f"{path}: expected {describe_type(annotation)}, got null")
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, path, problems)
        for candidate in options:
            attempt: list[str] = []
            converted = _convert(candidate, value, path, attempt)
            if not attempt:
                return converted
        problems.append(f"{path}: expected {describe_type(annotation)}, got {_given(value)}")
        return None
    if value is None:
        problems.append(f"{path}: expected {describe_type(annotation)}, got null")
        return None
    if origin is typing.Literal:
        if value not in args:
            problems.append(
                f"{path}: {value!r} is not accepted; use one of "
                + ", ".join(repr(a) for a in args)
                + did_you_mean(str(value), [str(a) for a in args])
            )
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected {describe_type(annotation)}, got {_given(value)}")
            return None
        item_type = args[0] if args else Any
        return [_convert(item_type, item, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected {describe_type(annotation)}, got {_given(value)}")
            return None
        key_type, value_type = args if args else (Any, Any)
        result = {}
        for key, item in value.items():
            converted_key = _convert(key_type, key, f"{path} key {key!r}", problems)
            result[converted_key] = _convert(value_type, item, f"{path}.{key}", problems)
        return result
    if dataclasses.is_dataclass(annotation):
        return _convert_dataclass(annotation, value, path, problems)
    if annotation is datetime.timedelta:
        try:
            return parse_duration(value)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            return None
    if annotation is bool:
        if not isinstance(value, bool):
            hint = ""
            if isinstance(value, str) and value.strip().lower() in _YAML_1_1_BOOLEAN_WORDS:
                hint = "; write true or false (trainerkit reads YAML 1.2, where yes/no/on/off are text)"
            problems.append(f"{path}: expected a boolean (true/false), got {_given(value)}{hint}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{path}: expected an integer, got {_given(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {_given(value)}")
            return value
        return float(value)
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(f"{path}: expected a string, got {_given(value)}")
            return value
        # Environment overrides arrive parsed ("8080" -> 8080): a scalar is text here.
        return value if isinstance(value, str) else str(value)
    if isinstance(annotation, type):
        if not isinstance(value, annotation):
            problems.append(f"{path}: expected {describe_type(annotation)}, got {_given(value)}")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} at {path}")


def defaults_of(schema: type) -> dict[str, Any]:
    """The scalar defaults of ``schema`` as raw config values (for env overrides)."""
    result: dict[str, Any] = {}
    for field in dataclasses.fields(schema):
        if not field.init or field.default is dataclasses.MISSING:
            continue
        default = field.default
        if default is None or isinstance(default, (bool, int, float, str)):
            result[field.name] = default
    return result


def describe_schema(schema: type) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, doc)`` rows for documentation and ``--help``: the
    keys the schema class declares first, then those it inherits (shared keys
    such as ``max_workers`` and ``retention_duration``), nearest class first."""
    hints = typing.get_type_hints(schema)
    rank = {}
    for depth, klass in enumerate(schema.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            rank.setdefault(name, depth)
    fields = sorted(dataclasses.fields(schema), key=lambda field: rank.get(field.name, 0))
    rows = []
    for field in fields:
        if not field.init:
            continue
        if isinstance(field.default, datetime.timedelta):
            default = repr(format_duration(field.default))  # '10m', as a config file would say it
        elif field.default is not dataclasses.MISSING:
            default = repr(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = repr(field.default_factory())
        else:
            default = "(required)"
        rows.append((field.name, describe_type(hints[field.name]), default, field.metadata.get("doc", "")))
    return rows
