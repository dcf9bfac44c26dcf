"""Config keys of ``type: SUBPROCESS``, declared once and validated by the shared schema."""

from __future__ import annotations

import dataclasses
import os
import importlib.util
import datetime
import re
from typing import Literal, Optional, Union

from ...schema import option
from ...store.state_dir import MEMORY_STATE_DIR
from ...trainer_config import MachineTrainerConfig, check_directory

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ENV_NAME = re.compile(r"^[^=\0]+\Z")


def _check_gpus(value: object) -> Optional[str]:
    if isinstance(value, list):
        ids = [str(item).strip() for item in value]
        if any(not item or "," in item for item in ids):
            return f"{value!r}: each GPU id must be a non-empty id without commas (0, 1, or a UUID)"
        if len(set(ids)) != len(ids):
            return f"{value!r} names a GPU twice"
    return None


def gpu_ids(value: "str | list[int | str] | None") -> list[str]:
    """The device ids a ``gpus`` config value stands for ('auto' is looked up now)."""
    if value is None:
        return []
    if value != "auto":
        return [str(item).strip() for item in value]  # type: ignore[union-attr]
    import shutil
    import subprocess

    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi:
        try:
            listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        ids = [match.group(1) for match in re.finditer(r"^GPU (\d+):", listing, re.MULTILINE)]
        if ids:
            return ids
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [item.strip() for item in visible.split(",") if item.strip() and item.strip() != "-1"]


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
    gpus: Union[Literal["auto"], list[Union[int, str]], None] = option(
        None,
        check=_check_gpus,
        doc="GPUs this trainer hands out, each to one training at a time (as CUDA_VISIBLE_DEVICES): "
        "a list of device ids, 'auto' (the GPUs nvidia-smi -L lists, else those in this "
        "process's CUDA_VISIBLE_DEVICES), or null: none. A training with "
        "Resources(gpus_per_proc=n) waits QUEUED until n are free; one without GPUs sees none",
    )
    max_retries: int = option(
        0,
        minimum=0,
        doc="an attempt that crashes (killed by a signal, out of memory, os._exit) is started "
        "again with the same id, at most this many times (max_retries: 1 means at most two "
        "attempts); info.attempt says which attempt runs, latest_checkpoint() sees the earlier "
        "attempts' checkpoints. Retries happen while the submitting process lives (docs/storage.md)",
    )
    retry_on_error: bool = option(
        False,
        doc="with max_retries: also retry an attempt whose train() raised a Python exception "
        "(by default that fails the training at once: a bug rarely goes away on its own)",
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
