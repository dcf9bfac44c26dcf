"""The things under test: trainerkit trainers built for a benchmark, and caikit's
trainer when it is importable.

trainerkit trainers are built through the public config path
(``TrainerManager.from_dict``), asking for durable records in a temporary
state directory. Config keys a trainer type does not declare (yet) are left
out and said in the row's notes, never passed silently or faked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import tempfile
from typing import Any, Iterator, Optional

from .harness import CannotRun

CAIKIT_VERSION = "0.29.1"
TRAINER_NAME = "bench"


@dataclasses.dataclass
class BuiltTrainer:
    """A trainerkit trainer made for one benchmark run, and what to say about it."""

    trainer: Any
    manager: Any
    state_dir: str
    notes: list[str]
    durable: bool


def trainer_type_missing(type_name: str) -> Optional[str]:
    """Why trainerkit's ``type_name`` trainer cannot be built here, or None."""
    from trainerkit.errors import ConfigError
    from trainerkit.registry import BUILTIN_TYPES, resolve_type

    builtin = BUILTIN_TYPES.get(type_name)
    if builtin is not None:
        module_name = builtin.target.partition(":")[0]
        if importlib.util.find_spec(module_name) is None:
            path = module_name.replace(".", "/")
            return f"{path}.py does not exist yet (the {type_name} trainer is not written)"
    try:
        resolve_type(type_name, f"trainer type {type_name}")
    except ConfigError as exc:
        return str(exc)
    except (ImportError, AttributeError) as exc:  # a trainer still being written
        return f"the {type_name} trainer cannot be imported yet ({exc})"
    return None


@contextlib.contextmanager
def trainerkit_trainer(
    type_name: str, *, local_records: bool = True, **config: Any
) -> Iterator[BuiltTrainer]:
    """A fresh trainer of ``type_name`` built from ``config``; shut down
    (waiting) afterwards.

    With ``local_records`` (LOCAL, SUBPROCESS) it asks for durable records in
    a new temporary state directory, removed afterwards; types whose records
    live elsewhere (KUBERNETES: the cluster) pass False.

    Raises:
        CannotRun: the type is not available in this checkout.
    """
    missing = trainer_type_missing(type_name)
    if missing:
        raise CannotRun(missing)
    import trainerkit
    from trainerkit.registry import resolve_type
    from trainerkit.store import MemoryTrainingStore

    trainer_class = resolve_type(type_name, f"trainer type {type_name}")
    declared = (
        {field.name for field in dataclasses.fields(trainer_class.ConfigSchema)}
        if trainer_class.ConfigSchema is not None
        else set()
    )
    with tempfile.TemporaryDirectory(prefix="trainerkit-bench-state-") as state_dir:
        wanted = dict(config, state_dir=state_dir) if local_records else dict(config)
        notes = [
            f"{type_name} has no config key {key!r} yet, so it ran without it"
            for key in wanted
            if key not in declared
        ]
        accepted = {key: value for key, value in wanted.items() if key in declared}
        manager = trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {TRAINER_NAME: {"type": type_name, "config": accepted}}}}
        )
        try:
            trainer = manager.get_trainer(TRAINER_NAME)
            durable = not isinstance(trainer._store, MemoryTrainingStore)
            if local_records and durable:
                notes.append(f"records: {type(trainer._store).__name__} in a temporary state directory")
            elif local_records:
                notes.append(
                    "records were in memory, not durable (no SQLite store wired into "
                    f"{type_name} yet): the goal assumes durable records, so the verdict is provisional"
                )
            yield BuiltTrainer(trainer, manager, state_dir, notes, durable)
        finally:
            manager.close(wait=True)


def caikit_missing() -> Optional[str]:
    """Why caikit's trainer cannot be measured here, or None."""
    if importlib.util.find_spec("caikit") is None:
        return f"caikit is not installed (pip install caikit=={CAIKIT_VERSION}: the optional bench extra)"
    return None


def caikit_notes() -> list[str]:
    version = importlib.metadata.version("caikit")
    if version != CAIKIT_VERSION:
        return [f"caikit {version} installed; the baseline is specified against {CAIKIT_VERSION}"]
    return []


def caikit_trainer(**config: Any) -> Any:
    """caikit's LocalModelTrainer with ``config`` (thread mode unless
    ``use_subprocess=True``)."""
    import aconfig

    importlib.import_module(f"{__package__}.caikit_modules")  # quiets caikit's logging first
    from caikit.core.model_management.local_model_trainer import LocalModelTrainer

    return LocalModelTrainer(aconfig.Config(config), TRAINER_NAME)
