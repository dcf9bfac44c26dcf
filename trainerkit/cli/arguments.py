"""Training arguments from the command line: ``--arg KEY=VALUE`` and ``--args-file``.

Values are read as YAML with the 1.2 core schema, the same rules as config
files (:mod:`trainerkit.yaml_core`): ``true``/``false`` are booleans, ``yes``,
``no``, ``on`` and ``off`` are text. A value that starts with ``[`` or ``{`` is
a YAML flow list or mapping, one in quotes is a string, and anything else that
is not a number, boolean or null is taken verbatim.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence

import yaml

from ..capabilities import RequestLevel, normalize_requests
from ..yaml_core import describe_error, load_yaml, parse_plain_scalar
from .exit_codes import CommandError, ExitCode


def parse_value(text: str) -> Any:
    """The value of one ``--arg KEY=VALUE`` (see the module docstring).

    Raises:
        ValueError: a flow list/mapping or quoted string that is not valid YAML.
    """
    if text.lstrip()[:1] in ("[", "{", "'", '"'):
        try:
            return load_yaml(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {describe_error(exc)}") from None
    return parse_plain_scalar(text)


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
                data = load_yaml(handle)
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
            f"--args-file {path}: not valid YAML: {describe_error(exc)}", ExitCode.USAGE
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


def parse_capability_options(options: Sequence[str]) -> dict[str, RequestLevel]:
    """``["cancel=native", "logs=disable"]`` to ``{"cancel": RequestLevel.NATIVE, ...}``.

    Raises:
        CommandError (USAGE): no ``=``, an unknown capability (the message lists
            the known ones) or level, or the same name twice.
    """
    requests: dict[str, RequestLevel] = {}
    for option in options:
        name, sep, level = option.partition("=")
        name = name.strip()
        if not sep:
            raise CommandError(
                f"--capability {option!r}: expected NAME=LEVEL, for example --capability cancel=native",
                ExitCode.USAGE,
            )
        if name in requests:
            raise CommandError(
                f"--capability {name}= is given twice; give each capability once", ExitCode.USAGE
            )
        try:
            requests.update(normalize_requests({name: level}, what=f"--capability {option!r}"))
        except ValueError as exc:
            raise CommandError(str(exc), ExitCode.USAGE) from None
    return requests


def training_arguments(args_file: Optional[str], options: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments of ``train``: ``--args-file`` first, then each
    ``--arg`` (which overrides the file's value for the same key)."""
    arguments = load_args_file(args_file) if args_file else {}
    arguments.update(parse_arg_options(options))
    return arguments
