"""Loading the trainers configuration.

The shape is caikit's::

    model_management:
      trainers:
        <name>:
          type: LOCAL | SUBPROCESS | KUBERNETES | <entry point type>
          import_class: package.module.Class   # optional
          config: {...}                        # validated by the type's schema

Loading goes in this order (see ``docs/configuration.md``):

1. the built-in defaults (a trainer ``default`` of type LOCAL);
2. the user's file or dict, merged over them (mappings merge key by key,
   anything else replaces);
3. environment variables, applied by aconfig (``alchemy-config``): a key at
   path ``a.b.c`` is overridden by ``A_B_C`` (upper case, ``.`` and ``-``
   become ``_``), for every key present after step 2 and every key a trainer
   type declares, so ``MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_MAX_WORKERS=4``
   works without the key in any file. Values are parsed as booleans, numbers
   or text. Lists cannot be overridden;
4. validation: every problem is collected, each with its full key path.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Mapping, Optional

from . import ids
from .errors import ConfigError
from .registry import register_import_class, resolve_type
from .schema import defaults_of, did_you_mean

ROOT_KEY = "model_management"
DEFAULT_CONFIG: dict[str, Any] = {
    ROOT_KEY: {
        "trainers": {
            "default": {"type": "LOCAL", "config": {}},
        }
    }
}
_TRAINER_KEYS = ("type", "config", "import_class")


@dataclasses.dataclass(frozen=True)
class TrainerSpec:
    """One validated trainer entry."""

    name: str
    type: str
    trainer_class: type
    config: Any
    import_class: Optional[str] = None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base``: mappings key by key, others replaced."""
    merged = {key: copy.deepcopy(value) for key, value in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: "str | os.PathLike[str]") -> Any:
    """Parse a YAML config file (YAML 1.2 core schema, as everywhere in
    trainerkit: see :mod:`trainerkit.yaml_core`), with clear errors for a
    missing or broken file."""
    import yaml  # imported when a file is read, to keep `import trainerkit` light

    from .yaml_core import load_yaml

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return load_yaml(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None


def _plain(value: Any) -> Any:
    """aconfig's attribute dicts back to plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _text_keys(tree: Mapping[Any, Any], where: str, problems: list[str]) -> bool:
    """Whether every key in ``tree`` (nested mappings included) is text; each
    other key is a problem (YAML reads ``123:``, ``~:`` or ``true:`` as a number,
    null or boolean)."""
    fine = True
    for key, value in tree.items():
        if not isinstance(key, str):
            kind = (
                "null (YAML reads ~ and null so)" if key is None
                else "a boolean" if isinstance(key, bool)
                else "a number" if isinstance(key, (int, float))
                else f"a {type(key).__name__}"
            )
            problems.append(
                f"{where}: the key {key!r} is {kind}, not text; a name must be text: quote it in "
                "YAML (for example '123': or '~':)"
            )
            fine = False
        elif isinstance(value, Mapping) and not _text_keys(value, f"{where}.{key}", problems):
            fine = False
    return fine


def _apply_env(tree: dict[str, Any]) -> dict[str, Any]:
    import aconfig

    return _plain(aconfig.Config(tree, override_env_vars=True))


def load_trainer_specs(user_config: Any, source: str = "config") -> dict[str, TrainerSpec]:
    """Validate a whole configuration; return the trainers by name.

    Raises:
        ConfigError: listing every problem found, each with its key path.
    """
    if user_config is None:
        user_config = {}
    if not isinstance(user_config, Mapping):
        raise ConfigError(
            f"{source}: the configuration must be a mapping with the key {ROOT_KEY!r}, got "
            f"{type(user_config).__name__}"
        )
    problems: list[str] = []
    for key in user_config:
        if key != ROOT_KEY:
            problems.append(
                f"{key}: unknown top-level key; the only accepted key is {ROOT_KEY!r}"
                + did_you_mean(str(key), [ROOT_KEY])
            )
    user_root = user_config.get(ROOT_KEY, {})
    if user_root is None:
        user_root = {}
    if not isinstance(user_root, Mapping):
        raise ConfigError(f"{ROOT_KEY}: expected a mapping with the key 'trainers', got {user_root!r}")
    for key in user_root:
        if key != "trainers":
            problems.append(
                f"{ROOT_KEY}.{key}: unknown key; accepted keys: trainers" + did_you_mean(str(key), ["trainers"])
            )
    user_trainers = user_root.get("trainers", {})
    if user_trainers is None:
        user_trainers = {}
    if not isinstance(user_trainers, Mapping):
        raise ConfigError(
            f"{ROOT_KEY}.trainers: expected a mapping of trainer names to {{type, config}}, got "
            f"{user_trainers!r}"
        )
    user_trainers = {name: entry for name, entry in user_trainers.items() if _text_keys(
        {name: entry}, f"{ROOT_KEY}.trainers", problems
    )}
    merged = deep_merge(DEFAULT_CONFIG, {ROOT_KEY: {"trainers": user_trainers}})
    merged = _apply_env(merged)
    trainers = merged[ROOT_KEY]["trainers"]

    resolved: dict[str, tuple[str, type, Optional[str]]] = {}
    for name, entry in trainers.items():
        where = f"{ROOT_KEY}.trainers.{name}"
        name_problem = ids.check_trainer_name(name)
        if name_problem:
            problems.append(f"{where}: {name_problem}")
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: expected a mapping with keys type and config, got {entry!r}")
            continue
        for key in entry:
            if key not in _TRAINER_KEYS:
                problems.append(
                    f"{where}.{key}: unknown key; accepted keys: " + ", ".join(_TRAINER_KEYS)
                    + did_you_mean(str(key), _TRAINER_KEYS)
                )
        type_name = entry.get("type")
        import_class = entry.get("import_class")
        try:
            imported: Optional[type] = None
            if import_class is not None:
                if not isinstance(import_class, str):
                    raise ConfigError(f"{where}.import_class: expected 'package.module.Class', got {import_class!r}")
                imported = register_import_class(import_class, f"{where}.import_class")
                if type_name is None:
                    type_name = imported.name
            if not isinstance(type_name, str) or not type_name:
                raise ConfigError(f"{where}.type: required, a trainer type name such as LOCAL, got {type_name!r}")
            if imported is not None and imported.name != type_name:
                raise ConfigError(
                    f"{where}: type {type_name!r} does not match import_class {import_class!r}, "
                    f"whose type name is {imported.name!r}; leave type out, or make them agree"
                )
            cls = resolve_type(type_name, f"{where}.type")
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        type_problem = cls.name_problem(name) if hasattr(cls, "name_problem") else None
        if type_problem:
            problems.append(f"{where}: {type_problem}")
            continue
        resolved[name] = (type_name, cls, import_class)

    # Expose every declared key to environment overrides, then apply them again.
    for name, (_, cls, _) in resolved.items():
        schema = getattr(cls, "ConfigSchema", None)
        entry = trainers[name]
        raw = entry.get("config")
        if raw is None:
            raw = {}
        if schema is not None and isinstance(raw, Mapping):
            entry["config"] = {**defaults_of(schema), **raw}
    trainers = _apply_env(merged)[ROOT_KEY]["trainers"]

    specs: dict[str, TrainerSpec] = {}
    for name, (type_name, cls, import_class) in resolved.items():
        where = f"{ROOT_KEY}.trainers.{name}.config"
        raw = trainers[name].get("config")
        config, config_problems = cls.validate_config(raw, where)
        if config_problems:
            problems.extend(config_problems)
            continue
        specs[name] = TrainerSpec(name, type_name, cls, config, import_class)
    if problems:
        raise ConfigError([f"{source}: {p}" if source else p for p in problems])
    return specs


def load_yaml_specs(path: "str | os.PathLike[str]") -> dict[str, TrainerSpec]:
    """Read and validate a YAML config file."""
    return load_trainer_specs(read_yaml(path), source=os.fspath(path))

