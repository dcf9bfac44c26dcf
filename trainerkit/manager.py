"""TrainerManager: the configured trainers, built once each, and id routing."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Mapping, Optional

from . import ids
from .errors import TrainingNotFoundError, UnknownTrainerError
from .future import ModelTrainerFutureBase
from .registry import TypeSource, available_types
from .schema import did_you_mean
from .trainer import ModelTrainerBase

if TYPE_CHECKING:
    from .config import TrainerSpec


class TrainerManager:
    """The trainers declared in a configuration.

    ``TrainerManager()`` uses the built-in defaults (one LOCAL trainer named
    ``default``); :meth:`from_yaml` and :meth:`from_dict` merge a user
    configuration over them. The whole configuration is validated here, so a
    mistake fails at once, not at the first ``train()``.
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None, *, source: str = "config") -> None:
        from .config import load_trainer_specs  # YAML and aconfig load with the first manager

        self._init_specs(load_trainer_specs(config, source=source))

    def _init_specs(self, specs: "dict[str, TrainerSpec]") -> None:
        self._specs = specs
        self._trainers: dict[str, ModelTrainerBase] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_yaml(cls, path: "str | os.PathLike[str]") -> "TrainerManager":
        """Load and validate a YAML file (see ``docs/configuration.md``)."""
        from .config import load_yaml_specs

        manager = cls.__new__(cls)
        manager._init_specs(load_yaml_specs(path))
        return manager

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TrainerManager":
        """Validate a configuration given as a dict (the YAML file's shape)."""
        return cls(config, source="")

    @property
    def trainer_names(self) -> list[str]:
        """The names of the configured trainers."""
        return list(self._specs)

    def trainer_spec(self, name: str) -> "TrainerSpec":
        """The validated entry of trainer ``name`` (type, class, config)."""
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTrainerError(
                f"no trainer named {name!r} in the configuration; configured trainers: "
                + ", ".join(self._specs)
                + did_you_mean(name, list(self._specs))
            ) from None

    def type_source(self, name: str) -> TypeSource:
        """Where trainer ``name``'s type comes from (built in, entry point, import_class)."""
        spec = self.trainer_spec(name)
        if spec.import_class:
            return TypeSource("import_class", spec.import_class)
        return available_types().get(spec.type, TypeSource("registered", spec.type))

    def get_trainer(self, name: str) -> ModelTrainerBase:
        """The trainer called ``name``: built on first use, then reused."""
        spec = self.trainer_spec(name)
        with self._lock:
            trainer = self._trainers.get(name)
            if trainer is None:
                trainer = spec.trainer_class(spec.config, name)
                try:
                    trainer.open()  # an unusable state directory or cluster fails here
                except BaseException:
                    trainer.shutdown(wait=False)
                    raise
                self._trainers[name] = trainer
            return trainer

    def get_model_future(self, training_id: str) -> ModelTrainerFutureBase:
        """A future for ``training_id``, routed by the trainer name inside the id."""
        name = ids.trainer_name_from_id(training_id)
        if name not in self._specs:
            raise TrainingNotFoundError(
                f"training {training_id!r} was made by trainer {name!r}, which is not in this "
                "configuration; configured trainers: " + ", ".join(self._specs)
            )
        return self.get_trainer(name).get_model_future(training_id)

    def close(self, wait: bool = True) -> None:
        """Shut down every trainer built so far."""
        with self._lock:
            trainers = list(self._trainers.values())
            self._trainers.clear()
        for trainer in trainers:
            trainer.shutdown(wait=wait)

    def __enter__(self) -> "TrainerManager":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
