"""The trainer type registry: ``type: NAME`` in config to a trainer class.

Three sources feed one registry, in the fsspec manner:

* built-in types, imported lazily from a dotted path (``KUBERNETES`` says
  which extra to install when its dependency is missing);
* third-party types, found through the entry point group
  ``trainerkit.trainers`` (entry point name = type name) and imported only when
  a config asks for that type;
* classes registered by code (:func:`register_trainer_type`) or named by
  ``import_class:`` in config.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Optional

from .errors import ConfigError
from .info import qualified_name
from .module import import_object

if TYPE_CHECKING:
    import importlib.metadata

    from .trainer import ModelTrainerBase

log = logging.getLogger("trainerkit")

ENTRY_POINT_GROUP = "trainerkit.trainers"


@dataclasses.dataclass(frozen=True)
class BuiltinType:
    target: str
    requires: tuple[str, ...] = ()
    install_hint: str = ""


BUILTIN_TYPES: dict[str, BuiltinType] = {
    "LOCAL": BuiltinType("trainerkit.trainers.local:LocalModelTrainer"),
    "SUBPROCESS": BuiltinType("trainerkit.trainers.subprocess.trainer:SubprocessModelTrainer"),
    "KUBERNETES": BuiltinType(
        "trainerkit.trainers.kubernetes:KubernetesModelTrainer",
        requires=("kubernetes",),
        install_hint="pip install 'trainerkit[kubernetes]'",
    ),
}


@dataclasses.dataclass(frozen=True)
class TypeSource:
    """Where a trainer type comes from (shown by ``trainerkit trainers``)."""

    kind: str  # "built-in", "entry point", "import_class" or "registered"
    detail: str  # dotted target, distribution name, ...

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


_lock = threading.RLock()
_registered: dict[str, tuple[type, TypeSource]] = {}


def _builtin_available(name: str) -> bool:
    spec = BUILTIN_TYPES.get(name)
    if spec is None:
        return False
    module_name = spec.target.partition(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def _entry_points() -> "dict[str, list[importlib.metadata.EntryPoint]]":
    import importlib.metadata  # scanning distributions is slow: only when a type is looked up

    found: "dict[str, list[importlib.metadata.EntryPoint]]" = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, []).append(entry_point)
    return found


def _distribution_of(entry_point: "importlib.metadata.EntryPoint") -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def available_types() -> dict[str, TypeSource]:
    """Every type name a config may use, with where it comes from. Imports nothing."""
    types: dict[str, TypeSource] = {}
    for name, spec in BUILTIN_TYPES.items():
        if _builtin_available(name):
            types[name] = TypeSource("built-in", spec.target)
    for name, entry_points in _entry_points().items():
        if name in types:
            continue
        types[name] = TypeSource("entry point", _distribution_of(entry_points[0]))
    with _lock:
        for name, (_, source) in _registered.items():
            types.setdefault(name, source)
    return dict(sorted(types.items()))


def _check_trainer_class(cls: object, where: str) -> "type[ModelTrainerBase]":
    from .trainer import ModelTrainerBase

    if not inspect.isclass(cls) or not issubclass(cls, ModelTrainerBase):
        raise ConfigError(
            f"{where} is {cls!r}, which is not a trainer class: a trainer type must subclass "
            "trainerkit.ModelTrainerBase"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{where}: trainer class {cls.__qualname__} must set the class attribute 'name' "
            "to its type name (for example name = 'ACME')"
        )
    return cls


def register_trainer_type(cls: "type[ModelTrainerBase]", *, source: Optional[TypeSource] = None) -> None:
    """Register a trainer class under its ``name`` attribute.

    Registering the same class twice is harmless; a different class under a
    name already taken (by a built-in, an entry point or code) raises ConfigError.
    """
    cls = _check_trainer_class(cls, f"register_trainer_type({cls!r})")
    name = cls.name
    source = source or TypeSource("registered", f"{cls.__module__}.{cls.__qualname__}")
    with _lock:
        existing = _registered.get(name)
        if existing is not None:
            if existing[0] is cls:
                return
            raise ConfigError(
                f"trainer type {name!r} is already registered to "
                f"{existing[0].__module__}.{existing[0].__qualname__} ({existing[1]}); "
                f"{cls.__module__}.{cls.__qualname__} cannot take the same name: rename one of "
                "them (the class attribute 'name')"
            )
        if name in BUILTIN_TYPES and BUILTIN_TYPES[name].target != f"{cls.__module__}:{cls.__qualname__}":
            raise ConfigError(
                f"trainer type {name!r} is a built-in type; {cls.__module__}.{cls.__qualname__} "
                "cannot replace it: give it another name"
            )
        _registered[name] = (cls, source)


def register_import_class(path: str, where: str) -> "type[ModelTrainerBase]":
    """Import ``path`` (``import_class:`` in config) and register it."""
    try:
        cls = import_object(path)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {path!r}: {exc}") from None
    cls = _check_trainer_class(cls, f"{where} ({path!r})")
    register_trainer_type(cls, source=TypeSource("import_class", path))
    return cls


def resolve_type(type_name: str, where: str) -> "type[ModelTrainerBase]":
    """The class for ``type_name``, importing only that type.

    Raises:
        ConfigError: unknown type (listing the available ones), a missing
            optional dependency (naming the extra to install), or two entry
            points claiming the same name.
    """
    with _lock:
        if type_name in _registered:
            return _registered[type_name][0]
    if type_name in BUILTIN_TYPES:
        spec = BUILTIN_TYPES[type_name]
        for requirement in spec.requires:
            if importlib.util.find_spec(requirement) is None:
                raise ConfigError(
                    f"{where}: trainer type {type_name} needs the {requirement!r} package, which "
                    f"is not installed: {spec.install_hint}"
                )
        if not _builtin_available(type_name):
            raise ConfigError(
                f"{where}: trainer type {type_name} is not available in this version of "
                f"trainerkit; available types: {', '.join(available_types())}"
            )
        cls = import_object(spec.target)
        return _check_trainer_class(cls, where)
    entry_points = _entry_points().get(type_name, [])
    if len(entry_points) > 1:
        owners = ", ".join(f"{ep.value} from {_distribution_of(ep)}" for ep in entry_points)
        raise ConfigError(
            f"{where}: trainer type {type_name!r} is claimed by more than one entry point "
            f"in group {ENTRY_POINT_GROUP!r}: {owners}; uninstall one of them"
        )
    if entry_points:
        entry_point = entry_points[0]
        try:
            cls = entry_point.load()
        except Exception as exc:  # a plugin's own import error: say whose it is
            raise ConfigError(
                f"{where}: trainer type {type_name!r} comes from entry point "
                f"{entry_point.value!r} of {_distribution_of(entry_point)}, which failed to "
                f"import: {qualified_name(type(exc))}: {exc}"
            ) from exc
        cls = _check_trainer_class(cls, f"{where} (entry point {entry_point.value!r})")
        if cls.name != type_name:
            raise ConfigError(
                f"{where}: entry point {type_name!r} of {_distribution_of(entry_point)} points "
                f"to a class whose name is {cls.name!r}; the two must match"
            )
        return cls
    from .schema import did_you_mean

    names = list(available_types())
    raise ConfigError(
        f"{where}: unknown trainer type {type_name!r}; available types: "
        + ", ".join(names)
        + did_you_mean(type_name, names)
        + " (a third-party type is found through the entry point group "
        f"{ENTRY_POINT_GROUP!r}, or named with import_class:)"
    )
