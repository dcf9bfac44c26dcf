"""Checkpoints of a running training: saved under ``<checkpoint_dir>/<training id>/<name>``.

Inside ``train``, :func:`save_checkpoint` saves the model the way a model save
does (the module's own ``save``, then a manifest written last, see
:mod:`trainerkit.storage`), so a crash mid-save never leaves a loadable half
checkpoint, and saving under an existing name replaces it atomically.
:func:`latest_checkpoint` returns the newest one, loaded: this training's
(earlier attempts included), else that of the training it resumes from.
Outside, ``future.checkpoints()`` lists them as :class:`CheckpointInfo`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Mapping, Optional

from . import storage
from .errors import ModelLoadError, StorageError, TrainingStateError
from .module import check_model_name, load, save_model

log = logging.getLogger("trainerkit")

#: Default checkpoint names: ``checkpoint-000001``, ``checkpoint-000002``, ...
_DEFAULT_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint of a training.

    Attributes:
        name: its name (``save_checkpoint(model, name=...)``, or ``checkpoint-000001``...).
        path: where it lives (a path or URL): ``trainerkit.load(info.path)`` loads it.
        time: when it was saved (timezone-aware).
    """

    name: str
    path: str
    time: datetime.datetime


class CheckpointStore:
    """The checkpoints of the trainings under one ``checkpoint_dir``."""

    def __init__(self, checkpoint_dir: str, storage_options: storage.StorageOptions = None) -> None:
        if storage.is_url(checkpoint_dir):
            self.root = storage.absolute_file_url(checkpoint_dir).rstrip("/")
        else:
            self.root = os.path.abspath(os.path.expanduser(checkpoint_dir))
        self.storage_options = dict(storage_options or {})

    def training_dir(self, training_id: str) -> str:
        """``<checkpoint_dir>/<training id>``."""
        return storage.join(self.root, training_id)

    def list(self, training_id: str) -> list[CheckpointInfo]:
        """The complete checkpoints of ``training_id``, oldest first."""
        found = []
        for entry in storage.list_dir(self.training_dir(training_id), self.storage_options):
            if entry.name.startswith("."):
                continue
            try:
                manifest = self._manifest(entry.location)
            except ModelLoadError as exc:
                log.warning("checkpoint %s is skipped: %s", entry.location, exc)
                continue
            if manifest is not None:
                found.append(CheckpointInfo(entry.name, entry.location, storage.manifest_time(manifest)))
        found.sort(key=lambda info: (info.time, info.name))
        return found

    def _manifest(self, location: str) -> Optional[dict[str, Any]]:
        if storage.is_url(location):
            return storage.read_manifest(location, self.storage_options)
        path = os.path.join(location, storage.MANIFEST_FILE)
        try:
            with open(path, "rb") as handle:
                return storage.parse_manifest(handle.read(), location)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None

    def save(self, training_id: str, model: Any, name: Optional[str] = None) -> str:
        """Save ``model`` as checkpoint ``name`` (default: the next ``checkpoint-NNNNNN``)."""
        if not callable(getattr(model, "save", None)):
            raise TypeError(
                "save_checkpoint() takes the model to save: an instance with a save(path) method "
                f"(such as a trainerkit.ModuleBase), got {model!r:.80}"
            )
        if name is None:  # the names alone (no manifest reads): one listing per save
            entries = storage.list_dir(self.training_dir(training_id), self.storage_options)
            numbers = [int(m.group(1)) for entry in entries if (m := _DEFAULT_NAME.match(entry.name))]
            name = f"checkpoint-{max(numbers, default=0) + 1:06d}"
        else:
            check_checkpoint_name(name)
        location = storage.join(self.training_dir(training_id), name)
        parent = self.training_dir(training_id)
        if storage.is_url(location):
            staging_parent = None
        else:
            os.makedirs(parent, exist_ok=True)
            staging_parent = parent  # same filesystem: the files are moved, not copied
        staging = tempfile.mkdtemp(prefix=".staging-", dir=staging_parent)
        try:
            inner = os.path.join(staging, "model")
            save_model(model, inner, training_id=training_id)
            target = location if storage.is_url(location) else f"file://{location}"
            storage.publish(inner, target, self.storage_options, replace=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if staging_parent is not None:
                try:
                    os.rmdir(parent)  # only when empty: the training's first save failed
                except OSError:
                    pass
            raise
        shutil.rmtree(staging, ignore_errors=True)
        log.info("training %s saved checkpoint %s to %s", training_id, name, location)
        return name

    def delete(self, training_id: str) -> None:
        """Remove every checkpoint of ``training_id``."""
        location = self.training_dir(training_id)
        if storage.is_url(location):
            storage.remove(location, self.storage_options)
        elif os.path.isdir(location):
            shutil.rmtree(location)


def check_checkpoint_name(name: Any) -> str:
    """Validate a checkpoint name: one safe path segment, not starting with '.'.

    Raises:
        TypeError: ``name`` is not a string. ValueError: saying what is wrong with it.
    """
    if not isinstance(name, str):
        raise TypeError(f"a checkpoint name must be a string (or None for the next default name), got {name!r}")
    try:
        check_model_name(name)
    except ValueError:
        size = len(name.encode("utf-8", "surrogatepass"))
        why = (
            "it is empty" if not name
            else f"it is {size} bytes long (UTF-8), more than the 255 a file name may have" if size > 255
            else "it must be one path segment, without '/', '\\', control characters or surrounding "
            "spaces, and not '.' or '..'"
        )
        raise ValueError(
            f"checkpoint name {name[:60]!r} cannot be used: {why}; use a name such as 'best' or "
            "'epoch-3', or name=None for the next checkpoint-000001, checkpoint-000002..."
        ) from None
    if name.startswith("."):
        raise ValueError(f"checkpoint name {name!r} must not start with '.' (those names are trainerkit's)")
    return name


@dataclasses.dataclass(frozen=True)
class CheckpointContext:
    """What the running training needs for its checkpoints."""

    training_id: str
    store: Optional[CheckpointStore]
    resume_from: Optional[str] = None
    cache_dir: Optional[str] = None
    #: Why there is no store (said by save_checkpoint), when there is none.
    missing: str = ""
    #: The global rank of this process in a multi-process training: only
    #: rank 0 saves checkpoints (as only rank 0 saves the model).
    rank: int = 0


_current: "contextvars.ContextVar[Optional[CheckpointContext]]" = contextvars.ContextVar(
    "trainerkit_checkpoints", default=None
)


def install(context: Optional[CheckpointContext]) -> "contextvars.Token[Optional[CheckpointContext]]":
    """Make ``context`` the current training's checkpoints; returns the reset token."""
    return _current.set(context)


def uninstall(token: "contextvars.Token[Optional[CheckpointContext]]") -> None:
    _current.reset(token)


def save_checkpoint(model: Any, name: Optional[str] = None) -> str:
    """Save a checkpoint of the running training and return its name.

    Call it inside a module's ``train``. The checkpoint goes to
    ``<checkpoint_dir>/<training id>/<name>``, atomically like a model save;
    an existing checkpoint of the same name is replaced atomically.
    ``name`` defaults to the next ``checkpoint-000001``, ``checkpoint-000002``...

    In a multi-process training only rank 0 saves (rank 0's model is the
    training's model); on the other ranks it saves nothing and returns
    ``name`` (or "" for a default name), so every rank may call it.

    Raises:
        TrainingStateError: called outside a training, or the trainer has no
            ``checkpoint_dir``.
        ValueError: ``name`` is not one safe path segment.
        TypeError: ``model`` has no ``save(path)`` method (None, a plain object).
        StorageError: the checkpoint cannot be written (names the location).
    """
    context = _current.get()
    if context is None:
        raise TrainingStateError(
            "save_checkpoint() is called outside a training: call it inside a module's train() "
            "run by a trainer, in the thread that runs train() (a thread train() starts gets the "
            "training with contextvars.copy_context().run(...)); to save a model yourself, use "
            "model.save(path)"
        )
    if context.store is None:
        raise TrainingStateError(
            f"training {context.training_id} cannot save a checkpoint: {context.missing or 'its trainer has no checkpoint_dir'}; "
            "set checkpoint_dir (a path or URL) in the trainer's config"
        )
    if context.rank != 0:
        if name is not None:
            check_checkpoint_name(name)
        return name or ""
    return context.store.save(context.training_id, model, name)


def latest_checkpoint() -> Any:
    """The newest checkpoint of the running training, loaded; None on a fresh start.

    This training's own checkpoints (an earlier attempt's included) come
    first; without any, those of the training named by
    ``train(..., resume_from=...)``. Outside a training, or without a
    ``checkpoint_dir``, it returns None. Each rank of a multi-process
    training reads the newest checkpoint when it calls this; only rank 0
    saves, so every rank resumes alike when they call it before their first
    collective operation (as rank 0 cannot save the next one before it).
    """
    context = _current.get()
    if context is None or context.store is None:
        return None
    store = context.store
    for training_id in (context.training_id, context.resume_from):
        if not training_id:
            continue
        found = store.list(training_id)
        if found:
            newest = found[-1]
            log.info("training %s resumes from checkpoint %s", context.training_id, newest.path)
            # Read once per attempt: downloaded to a temporary directory, not kept in a cache.
            return load(newest.path, storage_options=store.storage_options, cache=False)
    return None


def checkpoint_store(checkpoint_dir: Optional[str], storage_options: Optional[Mapping[str, Any]]) -> Optional[CheckpointStore]:
    """A :class:`CheckpointStore` for a config's ``checkpoint_dir`` (None: none)."""
    if not checkpoint_dir:
        return None
    return CheckpointStore(checkpoint_dir, storage_options)
