"""Training arguments from the command line: ``--arg KEY=VALUE`` and ``--args-file``.

Values are read with the YAML 1.2 *core* schema, not PyYAML's YAML 1.1 rules:
``true``/``false`` are booleans but ``yes``, ``no``, ``on`` and ``off`` stay
text; ``1e-3`` is a float (YAML 1.1 makes it a string); ``010`` is ten, not
octal eight; ``1:30`` and ``2024-01-31`` stay text. A value that starts with
``[`` or ``{`` is a YAML flow list or mapping, one in quotes is a string, and
anything else that is not a number, boolean or null is taken verbatim.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping, Optional, Sequence

import yaml

from .exit_codes import CommandError, ExitCode

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

# The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1023-core-schema).
_CORE_PATTERNS: tuple[tuple[str, "re.Pattern[str]"], ...] = (
    (_NULL, re.compile(r"(?:~|null|Null|NULL|)\Z")),
    (_BOOL, re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")),
    (_INT, re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")),
    (
        _FLOAT,
        re.compile(
            r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
        ),
    ),
)


def _core_tag(text: str) -> Optional[str]:
    for tag, pattern in _CORE_PATTERNS:
        if pattern.match(text):
            return tag
    return None


def _convert(tag: str, text: str) -> Any:
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return text.lower() == "true"
    if tag == _INT:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)


def parse_scalar(text: str) -> Any:
    """A plain (unquoted) YAML 1.2 core scalar: None, bool, int, float, or ``text`` itself."""
    stripped = text.strip()
    tag = _core_tag(stripped)
    if tag is None or (tag == _NULL and stripped != text and text):
        return text
    return _convert(tag, stripped)


class CoreSchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's implicit types
    (no YAML 1.1 ``yes``/``no`` booleans, sexagesimals, octal ``0``-prefixes or
    timestamps)."""

    yaml_implicit_resolvers: dict = {}


for _tag, _pattern in _CORE_PATTERNS:
    CoreSchemaLoader.add_implicit_resolver(_tag, _pattern, None)
CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:merge", re.compile(r"<<\Z"), ["<"]
)


def _construct_core(loader: CoreSchemaLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node).strip()
    tag = _core_tag(text)
    if tag == node.tag or (node.tag == _FLOAT and tag == _INT):
        value = _convert(tag, text)
        return float(value) if node.tag == _FLOAT else value
    raise yaml.constructor.ConstructorError(
        None, None, f"{text!r} is not a valid {node.tag.rpartition(':')[2]}", node.start_mark
    )


for _tag in (_NULL, _BOOL, _INT, _FLOAT):
    CoreSchemaLoader.add_constructor(_tag, _construct_core)


def parse_value(text: str) -> Any:
    """The value of one ``--arg KEY=VALUE`` (see the module docstring).

    Raises:
        ValueError: a flow list/mapping or quoted string that is not valid YAML.
    """
    if text.lstrip()[:1] in ("[", "{", "'", '"'):
        try:
            return yaml.load(text, Loader=CoreSchemaLoader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {_yaml_problem(exc)}") from None
    return parse_scalar(text)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc).replace("\n", " ")


def parse_arg_options(options: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "rate=1e-3"]`` to ``{"epochs": 3, "rate": 0.001}``.

    Raises:
        CommandError (USAGE): no ``=``, a key that is not a Python identifier,
            the same key twice, or an unparsable value.
    """
    arguments: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        key = key.strip()
        if not sep:
            raise CommandError(
                f"--arg {option!r}: expected KEY=VALUE, for example --arg epochs=10",
                ExitCode.USAGE,
            )
        _check_key(key, f"--arg {option!r}")
        if key in arguments:
            raise CommandError(
                f"--arg {key}= is given twice; give each argument once", ExitCode.USAGE
            )
        try:
            arguments[key] = parse_value(raw)
        except ValueError as exc:
            raise CommandError(
                f"--arg {option!r}: the value is {exc}",
                ExitCode.USAGE,
                hint="quote a value that should be plain text: --arg 'msg=\"[not a list]\"'",
            ) from None
    return arguments


def load_args_file(path: str) -> dict[str, Any]:
    """The training arguments in a ``.json``, ``.yaml`` or ``.yml`` file: a
    mapping of argument names to values.

    Raises:
        CommandError (USAGE): unreadable, unparsable, or not such a mapping.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".json", ".yaml", ".yml"):
        raise CommandError(
            f"--args-file {path}: unknown file type {extension or '(no extension)'!r}; "
            "use a .json, .yaml or .yml file",
            ExitCode.USAGE,
        )
    try:
        with open(path, encoding="utf-8") as handle:
            if extension == ".json":
                data = json.load(handle)
            else:
                data = yaml.load(handle, Loader=CoreSchemaLoader)  # noqa: S506 - a safe loader
    except FileNotFoundError:
        raise CommandError(f"--args-file {path}: no such file", ExitCode.USAGE) from None
    except IsADirectoryError:
        raise CommandError(f"--args-file {path}: is a directory, not a file", ExitCode.USAGE) from None
    except OSError as exc:
        raise CommandError(
            f"--args-file {path}: cannot read it: {exc.strerror or exc}", ExitCode.USAGE
        ) from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"--args-file {path}: not UTF-8 text ({exc})", ExitCode.USAGE) from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"--args-file {path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            ExitCode.USAGE,
        ) from None
    except yaml.YAMLError as exc:
        raise CommandError(
            f"--args-file {path}: not valid YAML: {_yaml_problem(exc)}", ExitCode.USAGE
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise CommandError(
            f"--args-file {path}: expected a mapping of argument names to values, got a "
            f"{type(data).__name__}",
            ExitCode.USAGE,
        )
    for key in data:
        _check_key(key, f"--args-file {path}")
    return dict(data)


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not key.isidentifier():
        raise CommandError(
            f"{where}: {key!r} is not an argument name (a Python identifier such as epochs "
            "or learning_rate)",
            ExitCode.USAGE,
        )


def training_arguments(args_file: Optional[str], options: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments of ``train``: ``--args-file`` first, then each
    ``--arg`` (which overrides the file's value for the same key)."""
    arguments = load_args_file(args_file) if args_file else {}
    arguments.update(parse_arg_options(options))
    return arguments
