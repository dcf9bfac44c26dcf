"""The config keys that trainer types share, declared once.

A type's ``ConfigSchema`` subclasses :class:`TrainerConfig` (retention, which
the base class applies) or :class:`MachineTrainerConfig` (also the keys of
types whose trainings run on this machine and keep their records in the state
directory), then adds its own keys. The shared validator
(:func:`trainerkit.schema.validate_with_schema`) checks them all alike.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any, Callable, Optional

from .capabilities import normalize_requests
from .module import check_allowed_modules
from .resources import Resources
from .schema import option
from . import storage
from .store.state_dir import check_state_dir


def check_directory(value: str) -> Optional[str]:
    """A config ``check`` for a directory path of this machine: the problem with
    ``value``, or None (a URL is refused: these directories are local)."""
    if not value.strip() or "\0" in value:
        return f"{value!r} is not a usable directory path"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", value):
        return f"{value!r} is a URL, but this is a directory of this machine: give a path such as /var/cache/trainerkit"
    return None


def _problem(check: Callable[[Any], Any]) -> Callable[[Any], Optional[str]]:
    """A config ``check`` from a function that raises TypeError/ValueError for a bad value."""

    def problem(value: Any) -> Optional[str]:
        try:
            check(value)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    return problem


#: Config checks: a list of module names, capability requests, default resources.
check_module_names = _problem(lambda value: check_allowed_modules(value, "the list"))
check_capability_requests = _problem(lambda value: normalize_requests(value, "the mapping"))
check_resources = _problem(Resources.of)
check_storage_options = _problem(storage.check_storage_options)


def check_location(value: str) -> Optional[str]:
    """A config ``check`` for a directory path or an fsspec URL."""
    if not value.strip() or "\0" in value:
        return f"{value!r} is not a usable directory path or URL"
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Keys every built-in type has: how long finished trainings are kept."""

    retention_duration: Optional[datetime.timedelta] = option(
        None,
        doc="finished trainings are forgotten (their records deleted; for KUBERNETES their "
        "Jobs) this long after they end (caikit syntax: '7d12h', '90m'); null keeps them until "
        "deleted",
    )
    retention_delete_models: bool = option(
        False,
        doc="when retention_duration purges a finished training, also delete its saved model "
        "directory (only a directory trainerkit saved for that very training)",
    )
    load_allowed_modules: Optional[list[str]] = option(
        None,
        check=check_module_names,
        doc="loading a model from its directory (future.result()/load() in another process, "
        "trainerkit result) imports only classes of these modules and the modules under them, "
        "and the default pickle format may name nothing else (plain data types aside); null "
        "trusts the model directories (see docs/modules.md)",
    )
    capabilities: Optional[dict[str, str]] = option(
        None,
        check=check_capability_requests,
        doc="capabilities every training of this trainer requests unless train(capabilities=...) "
        "says otherwise, e.g. {cancel: native, logs: disable}; a trainer that cannot serve them "
        "refuses the training before anything starts (docs/capabilities.md)",
    )
    storage_options: Optional[dict[str, dict[str, Any]]] = option(
        None,
        check=check_storage_options,
        doc="options of the fsspec filesystems that save_path, checkpoint_dir and loads use, by "
        "protocol, e.g. {s3: {endpoint_url: 'http://minio:9000'}}; they win over each "
        "filesystem's own environment variables (AWS_*, GOOGLE_APPLICATION_CREDENTIALS...); keep "
        "secrets in those variables (docs/storage.md)",
    )
    checkpoint_dir: Optional[str] = option(
        None,
        check=check_location,
        doc="where trainerkit.save_checkpoint() saves, as <checkpoint_dir>/<training id>/<name>: a "
        "path or an fsspec URL (s3://bucket/ckpt); null: LOCAL and SUBPROCESS use <state dir>/"
        "checkpoints, KUBERNETES saves none (give it a URL, or a path on a writable volume "
        "mount) (docs/storage.md)",
    )
    cache_dir: Optional[str] = option(
        None,
        check=check_directory,
        doc="local directory that models loaded from URLs (future.result(), trainerkit load) are "
        "downloaded to and reused from while unchanged; null: $TRAINERKIT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/trainerkit/models, else ~/.cache/trainerkit/models",
    )
    default_resources: Optional[dict[str, int]] = option(
        None,
        check=check_resources,
        doc="nodes, procs_per_node and gpus_per_proc every training of this trainer gets unless "
        "train(resources=...) says otherwise, e.g. {procs_per_node: 2, gpus_per_proc: 1}; null: "
        "one process without GPUs (docs/capabilities.md)",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MachineTrainerConfig(TrainerConfig):
    """Keys of types whose trainings run on this machine (LOCAL, SUBPROCESS)."""

    max_workers: int = option(
        1,
        minimum=1,
        doc="trainings that run at once; the others wait QUEUED. Default 1: a training usually "
        "saturates the machine (all cores, or the GPU's memory), so running two at once makes "
        "both slower or runs out of memory; raise it for light trainings",
    )
    state_dir: Optional[str] = option(
        None,
        check=check_state_dir,
        doc="directory of the durable training records (trainings.sqlite3, shareable by "
        "trainers and processes; SUBPROCESS keeps its run directories there too); null: "
        "$TRAINERKIT_STATE_DIR, else $XDG_STATE_HOME/trainerkit, else "
        "~/.local/state/trainerkit; ':memory:' keeps records in this process only (LOCAL "
        "only; see docs/records.md)",
    )
    log_dir: Optional[str] = option(
        None,
        check=check_directory,
        doc="directory of the per-training log files (<training id>.log: what the training "
        "prints and logs); null: <state dir>/logs (a temporary directory with state_dir "
        "':memory:')",
    )
