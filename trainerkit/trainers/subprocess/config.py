"""Config keys of ``type: SUBPROCESS``, declared once and validated by the shared schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import datetime
import re
from typing import Literal, Optional

from ...schema import option
from ...store.state_dir import MEMORY_STATE_DIR
from ...trainer_config import MachineTrainerConfig, check_directory

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ENV_NAME = re.compile(r"^[^=\0]+\Z")


def _check_preload(modules: list) -> Optional[str]:
    bad = [name for name in modules if not _MODULE_NAME.match(name)]
    if bad:
        return f"{bad} are not module names (like 'numpy' or 'torch.nn')"
    # The package must be importable here (workers start with this sys.path); a
    # worker's own failure to preload would only reach its stderr. Only the top
    # package is looked up, so checking 'torch.nn' does not import torch.
    missing = [name for name in modules if importlib.util.find_spec(name.partition(".")[0]) is None]
    if missing:
        return (
            f"no module named {', '.join(repr(name.partition('.')[0]) for name in missing)} can be imported "
            "here; install it, fix the name, or remove it from preload"
        )
    return None


def _check_env(env: dict) -> Optional[str]:
    bad = [name for name in env if not _ENV_NAME.match(name)]
    if bad:
        return f"{bad} are not environment variable names (non-empty, without '=' or NUL)"
    if any("\0" in value for value in env.values()):
        return "values must not contain NUL characters"
    return None


@dataclasses.dataclass(frozen=True)
class SubprocessTrainerConfig(MachineTrainerConfig):
    """Config keys of ``type: SUBPROCESS`` (and the shared ones of MachineTrainerConfig)."""

    start_method: Literal["prestarted", "exec"] = option(
        "prestarted",
        doc="'prestarted': ready_workers worker processes are started ahead of need, so a "
        "training starts by handing its spec to a process that is already up; 'exec': a "
        "worker is started when a training starts (it pays an interpreter start and "
        "trainerkit's import), and no process waits idle. Either way each training gets a "
        "fresh interpreter of its own, started by exec, never a fork of the caller",
    )
    ready_workers: int = option(
        1,
        minimum=1,
        maximum=64,
        doc="with start_method 'prestarted': how many idle workers are kept ready (each an "
        "interpreter with trainerkit and the preload modules imported); one is replaced as "
        "soon as it takes a training",
    )
    preload: list[str] = option(
        default_factory=list,
        check=_check_preload,
        doc="modules ready workers import before they get a training, so trainings skip "
        "their import time: list heavy, stable dependencies (torch, transformers). A package "
        "that cannot be found is a config error. Your own module is always imported fresh, so "
        "edits to it take effect",
    )
    env: dict[str, str] = option(
        default_factory=dict,
        check=_check_env,
        doc="environment variables added to (or replacing) the submitting process's "
        "environment in the training's process",
    )
    cwd: Optional[str] = option(
        None,
        check=check_directory,
        doc="working directory of trainings; null: the submitting process's working "
        "directory at train() time",
    )
    cancel_grace_period: datetime.timedelta = option(
        "10s",
        doc="time between SIGTERM and SIGKILL when a training is canceled (or its process "
        "must stop): the training sees TrainingCanceledError at once and may clean up in "
        "'finally' blocks. Default 10 s, as docker stop: enough to close files and write a "
        "checkpoint, short enough that a stuck training frees the machine soon",
    )
    detach: bool = option(
        False,
        doc="trainings keep running when the submitting process exits; its normal exit "
        "then waits only until its queued trainings have started. false: its normal exit waits "
        "for them, and if it is killed they are stopped (recorded as interrupted)",
    )

    def validate(self) -> list[str]:
        if self.state_dir == MEMORY_STATE_DIR:
            return [
                "state_dir: ':memory:' cannot hold SUBPROCESS records: trainings run in other "
                "processes, which record into the state directory; give a directory path (or "
                "leave it null for the default)"
            ]
        return []
