"""trainerkit: a config-driven trainer factory.

Declare trainers in YAML, get one by name, call ``train``; the returned future's
``result()`` is the trained model, loaded. See ``docs/`` for the whole story.
"""

from __future__ import annotations

from .capabilities import RequestLevel, SupportLevel, UnsupportedCapabilityError
from .errors import (
    ConfigError,
    InvalidTrainingIdError,
    ModelLoadError,
    ModelNotSavedError,
    StorageError,
    StoreError,
    TrainerkitError,
    TrainingCanceledError,
    TrainingCrashedError,
    TrainingError,
    TrainingExistsError,
    TrainingInterruptedError,
    TrainingNotFoundError,
    TrainingStateError,
    UnknownTrainerError,
)
from .future import ModelTrainerFutureBase
from .info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus
from .manager import TrainerManager
from .checkpoints import CheckpointInfo, latest_checkpoint, save_checkpoint
from .module import ModuleBase, load
from .progress import cancel_requested, check_canceled, report_progress
from .registry import register_trainer_type
from .resources import DistributedEnv, Resources, distributed_env
from .trainer import ModelTrainerBase

__version__ = "0.1.0"

__all__ = [
    "CheckpointInfo",
    "ConfigError",
    "DistributedEnv",
    "ErrorDetail",
    "InvalidTrainingIdError",
    "ModelLoadError",
    "ModelNotSavedError",
    "ModelTrainerBase",
    "ModelTrainerFutureBase",
    "ModuleBase",
    "ProgressReport",
    "RequestLevel",
    "Resources",
    "StorageError",
    "StoreError",
    "SupportLevel",
    "TrainerManager",
    "TrainerkitError",
    "TrainingCanceledError",
    "TrainingCrashedError",
    "TrainingError",
    "TrainingExistsError",
    "TrainingInfo",
    "TrainingInterruptedError",
    "TrainingNotFoundError",
    "TrainingStateError",
    "TrainingStatus",
    "UnknownTrainerError",
    "UnsupportedCapabilityError",
    "cancel_requested",
    "check_canceled",
    "distributed_env",
    "latest_checkpoint",
    "load",
    "register_trainer_type",
    "report_progress",
    "save_checkpoint",
]
