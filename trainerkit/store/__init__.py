"""Where training records live: the interface (:mod:`.base`), in memory
(:mod:`.memory`), in SQLite (:mod:`.sqlite`, imported only when used) and the
state directory that holds it (:mod:`.state_dir`)."""

from .base import UPDATABLE_FIELDS, TrainingQuery, TrainingStore, normalize_statuses, normalize_tags
from .memory import MemoryTrainingStore

__all__ = [
    "UPDATABLE_FIELDS",
    "MemoryTrainingStore",
    "TrainingQuery",
    "TrainingStore",
    "normalize_statuses",
    "normalize_tags",
]
