"""The trainer base class: the user API every trainer type shares, and the
backend contract (docs/backends.md).

Submission checks, ids, save paths, records, status transitions, progress
plumbing, listing, deletion and retention live here, once. A backend is a
subclass that adds only how to start, observe and stop a run, by implementing:

* :meth:`ModelTrainerBase.start_training` — start (or queue) a training;
* :meth:`ModelTrainerBase.cancel_training` — stop a queued or running one;
* optionally :meth:`~ModelTrainerBase.prepare_training` (refuse a request, or
  prepare what ``start_training`` needs, before anything is recorded),
  :meth:`~ModelTrainerBase.create_store`, :meth:`~ModelTrainerBase.observe_trainings`
  (for trainings run elsewhere), :meth:`~ModelTrainerBase.recover_training`
  (a live record whose owning process is gone), :meth:`~ModelTrainerBase.training_logs`
  and :meth:`~ModelTrainerBase.shutdown`.

A backend reports what happens only through the ``mark_*`` reporter methods
(running, progress, completed, errored, canceled, outcome, observed). Each
persists the change to the trainer's :class:`~trainerkit.store.TrainingStore`
and then applies it to the future, so records and futures never disagree; the
first terminal status wins. Backends never touch a store or a future's internals.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import logging
import os
import shutil
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Optional, Sequence

from . import ids
from .durations import parse_duration
from .errors import (
    InvalidTrainingIdError,
    TrainingCanceledError,
    TrainingInterruptedError,
    ModelLoadError,
    StorageError,
    StoreError,
    TrainingNotFoundError,
    TrainingStateError,
)
from .future import NO_MODEL, ModelTrainerFutureBase
from .info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus, utcnow
from .capabilities import (
    CAPABILITY_NAMES,
    RequestLevel,
    Served,
    SupportLevel,
    UnsupportedCapabilityError,
    normalize_requests,
    serve,
)
from .resources import Resources
from .checkpoints import CheckpointInfo, CheckpointStore
from .storage import check_destination, is_url
from . import storage
from .module import (
    METADATA_FILE,
    PARAMETERS_HOOK,
    call_arguments,
    check_module_class,
    check_writable,
    class_path,
    read_metadata,
    recordable_parameters,
    resolve_save_path,
    training_parameters,
)
from .owner import owner_is_alive, process_owner
from .schema import validate_with_schema
from .trainer_config import TrainerConfig
from .store import MemoryTrainingStore, TrainingQuery, TrainingStore, normalize_statuses, normalize_tags

if TYPE_CHECKING:
    from .runner import Outcome

log = logging.getLogger("trainerkit")


@dataclasses.dataclass(frozen=True)
class TrainingRequest:
    """Everything a backend needs to run one training."""

    training_id: str
    module_class: type
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    save_path: Optional[str]
    model_name: Optional[str]
    tags: tuple[str, ...]
    #: What :meth:`ModelTrainerBase.prepare_training` returned for this request.
    prepared: Any = None
    #: Capabilities the training turned off (DISABLE requests the trainer can
    #: honour: ``logs``, ``progress``, ``detach``); the backend must honour them.
    disabled: frozenset[str] = frozenset()
    #: Every capability the training requested, and at which level (the
    #: config's defaults overridden by the call's).
    requested: Mapping[str, RequestLevel] = dataclasses.field(default_factory=dict)
    #: Nodes, processes per node and GPUs per process (see :class:`~trainerkit.Resources`).
    resources: Resources = Resources()
    #: The training whose newest checkpoint ``latest_checkpoint()`` returns
    #: until this one saves its own (``train(..., resume_from=...)``).
    resume_from: Optional[str] = None


#: How a training that requested no capabilities was served.
_NOTHING_REQUESTED = Served(levels={}, disabled=frozenset(), requested={})


class ModelTrainerBase(abc.ABC):
    """A configured place where trainings run (one instance per config name).

    Subclasses set ``name`` (the config ``type``) and ``ConfigSchema`` (a
    dataclass declared with :func:`trainerkit.schema.option`) and are built as
    ``Trainer(config, instance_name)`` with the validated config. A subclass
    that overrides ``__init__`` calls ``super().__init__(config, instance_name)``
    first; the record store is created (:meth:`create_store`) when first needed,
    so it may use whatever the subclass's ``__init__`` set up.
    """

    #: What the type can do (see :meth:`capabilities`); names left out are unsupported.
    CAPABILITIES: Mapping[str, SupportLevel] = {}
    #: The type name used in config (``type: LOCAL``).
    name: ClassVar[str] = ""
    #: The dataclass that declares this type's config keys (None: no keys).
    ConfigSchema: ClassVar[Optional[type]] = None
    #: How often futures of trainings run elsewhere are refreshed, in seconds.
    observe_interval: ClassVar[float] = 0.2
    #: True when a submitted training keeps running, and its record keeps being
    #: updated, after the submitting process exits (``trainerkit train --detach``
    #: refuses types where this is False, such as LOCAL, whose trainings are threads).
    supports_detach: ClassVar[bool] = False
    #: True when trainings save their model from this machine (so train() checks
    #: that save_path can be written here); False where they save elsewhere (a pod).
    saves_on_this_machine: ClassVar[bool] = True
    #: True when trainings run in the calling process (threads): only then can
    #: they use fsspec's ``memory://`` filesystem, which lives in one process.
    trains_in_this_process: ClassVar[bool] = False
    #: True when the backend pushes every change to its futures itself once
    #: :meth:`observe_trainings` has been called for them (a watch), so that
    #: no polling thread is needed; False: the base polls every ``observe_interval``.
    pushes_updates: ClassVar[bool] = False

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """What makes ``name`` unfit to name a trainer of this type, beyond the rules of
        every trainer (:func:`trainerkit.ids.check_trainer_name`), or None. Checked when
        the configuration is loaded and when a trainer is built, never at ``train()``."""
        return None

    def __init__(self, config: Any, instance_name: str) -> None:
        problem = ids.check_trainer_name(instance_name) or type(self).name_problem(instance_name)
        if problem:
            raise InvalidTrainingIdError(problem)
        self.config = config
        self.instance_name = instance_name
        self._owner = process_owner()
        self._lock = threading.RLock()
        self._closed = False
        self._futures: "weakref.WeakValueDictionary[str, ModelTrainerFutureBase]" = (
            weakref.WeakValueDictionary()
        )
        # Futures kept alive on purpose: live ones, and finished ones whose
        # model exists only in memory (until retention or delete drops them).
        self._pinned: dict[str, ModelTrainerFutureBase] = {}
        self._observed: "weakref.WeakSet[ModelTrainerFutureBase]" = weakref.WeakSet()
        self._observer: Optional[threading.Thread] = None
        self._store_instance: Optional[TrainingStore] = None
        retention = config.retention_duration if isinstance(config, TrainerConfig) else None
        self._retention: Optional[datetime.timedelta] = (
            parse_duration(retention) if retention is not None else None
        )
        self._stop = threading.Event()
        self._purger: Optional[threading.Thread] = None
        # A relative checkpoint_dir (a path, or a file:// URL) names a place under
        # the directory this trainer was built in, as a relative save_path does:
        # not wherever this process, or a worker with its own cwd, is later.
        try:
            self._built_in: Optional[str] = os.getcwd()
        except OSError:  # the current directory was removed: relative paths stay as given
            self._built_in = None

    def open(self) -> "ModelTrainerBase":
        """Open the trainer's records now (and start retention); return the trainer.

        The factory (:meth:`TrainerManager.get_trainer`) calls it right after
        construction, so that an unusable state directory fails there; a
        trainer built directly opens on first use. Calling it again does nothing.
        """
        with self._lock:
            if self._store_instance is not None:
                return self
            self._store_instance = self.create_store()
            self._warn_unservable_default_resources()
            if self._retention is not None and not self._closed:
                self._purger = threading.Thread(
                    target=self._purge_loop, name=f"trainerkit-retention-{self.instance_name}", daemon=True
                )
                self._purger.start()
        return self

    def _warn_unservable_default_resources(self) -> None:
        """Say so once when the config's ``default_resources`` need a capability this
        trainer lacks: every train() without its own ``resources`` will be refused."""
        config = self.config
        defaults = config.default_resources if isinstance(config, TrainerConfig) else None
        if not defaults:
            return
        try:
            resources = Resources.of(defaults)
            levels = self.capabilities()
        except Exception:  # noqa: BLE001 - only a warning; train() reports the real error
            return
        lacking = [name for name in resources.needs() if not levels.get(name)]
        if lacking:
            log.warning(
                "trainer %r: its default_resources %s need %s, which it does not have, so every "
                "train() without resources=... will be refused: change default_resources or the trainer type",
                self.instance_name, resources.describe(), ", ".join(lacking),
            )

    @property
    def owner(self) -> str:
        """The identity (``host|pid|start``) of this process, recorded as the owner of
        the trainings it submits (see :mod:`trainerkit.owner`)."""
        return self._owner

    @property
    def _store(self) -> TrainingStore:
        store = self._store_instance
        if store is None:
            self.open()
            store = self._store_instance
            assert store is not None
        return store

    # -- class-level helpers ----------------------------------------------------------

    @classmethod
    def validate_config(cls, raw: Any, key_path: str) -> tuple[Any, list[str]]:
        """Turn the raw ``config:`` mapping into what ``__init__`` receives.

        Returns ``(config, problems)``; every problem names its full key path.
        The default validates against ``ConfigSchema``; a type without a schema
        receives the mapping as an ``aconfig.Config`` and must check it itself.
        """
        return validate_with_schema(cls.ConfigSchema, raw, key_path)

    @classmethod
    def get_trainer_name(cls, training_id: str) -> str:
        """The name of the trainer that made ``training_id``, from the id alone."""
        return ids.trainer_name_from_id(training_id)

    # -- the public API -------------------------------------------------------------

    def train(
        self,
        module_class: type,
        *args: Any,
        save_path: "str | os.PathLike[str] | None" = None,
        save_with_id: bool = False,
        model_name: Optional[str] = None,
        external_training_id: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        capabilities: Optional[Mapping[str, "RequestLevel | str"]] = None,
        resources: "Resources | Mapping[str, Any] | None" = None,
        resume_from: Optional[str] = None,
        **kwargs: Any,
    ) -> ModelTrainerFutureBase:
        """Submit a training of ``module_class`` with ``*args, **kwargs``.

        Arguments are checked against ``module_class.train``'s signature now
        (TypeError before anything starts), and passed through the module's
        optional ``training_parameters`` hook (see :meth:`training_parameters`);
        what ``train`` receives is recorded as ``info.parameters``. The model
        is saved to ``save_path[/<training id> if save_with_id][/<model_name>]``;
        without ``save_path`` it stays in this process's memory.

        ``capabilities`` (over the trainer's configured ``capabilities``) says
        which features the training relies on, e.g. ``{"cancel": "native",
        "logs": "disable"}``; an unmet one raises
        :class:`~trainerkit.UnsupportedCapabilityError` before anything is
        recorded or started (docs/capabilities.md).

        ``resources`` (a :class:`~trainerkit.Resources`, or a mapping whose
        missing keys come from the trainer's ``default_resources``) asks for several processes or
        nodes, or GPUs; a trainer that cannot serve it refuses the training the
        same way, naming the capability it lacks.

        ``save_path`` may be a URL of any fsspec filesystem (``s3://bucket/models``):
        the destination is checked now (protocol, installed package,
        credentials, empty), see docs/storage.md. ``resume_from`` names an
        earlier training whose newest checkpoint ``trainerkit.latest_checkpoint()``
        returns until this training saves its own.

        Returns a future whose ``result()`` is the trained model, loaded.
        """
        self._check_open()
        wanted = self._resources(resources)
        served = self._serve_capabilities(capabilities, wanted)
        check_module_class(module_class)
        params = training_parameters(module_class, args, kwargs)
        if getattr(module_class, PARAMETERS_HOOK, None) is not None:
            args, kwargs = call_arguments(module_class, params)
        recorded, by_repr = recordable_parameters(params)
        if not isinstance(save_with_id, bool):
            raise TypeError(f"save_with_id must be True or False, got {save_with_id!r}")
        tag_tuple = normalize_tags(tags)
        if external_training_id is not None:
            training_id = ids.external_training_id(self.instance_name, external_training_id)
        else:
            training_id = ids.new_training_id(self.instance_name)
        path = resolve_save_path(
            save_path, save_with_id=save_with_id, model_name=model_name, training_id=training_id
        )
        if resume_from is not None:
            self._check_resume_from(resume_from)
        self._check_process_local_urls(path)
        self._check_checkpoint_url()
        if path is not None:
            if is_url(path):
                check_destination(path, self.storage_options)
            elif self.saves_on_this_machine:
                check_writable(path)
            if not save_with_id:  # a path with the training's id in it is its own
                self._check_save_path_free(path)
        request = TrainingRequest(
            training_id=training_id,
            module_class=module_class,
            args=tuple(args),
            kwargs=dict(kwargs),
            save_path=path,
            model_name=model_name,
            tags=tag_tuple,
            disabled=served.disabled,
            requested=served.requested,
            resources=wanted,
            resume_from=resume_from,
        )
        prepared = self.prepare_training(request)
        if prepared is not None:
            request = dataclasses.replace(request, prepared=prepared)
        info = TrainingInfo(
            id=training_id,
            trainer_name=self.instance_name,
            status=TrainingStatus.QUEUED,
            module=class_path(module_class),
            submission_time=utcnow(),
            save_path=path,
            model_name=model_name,
            tags=tag_tuple,
            capabilities=dict(served.levels),
            parameters=recorded,
            parameters_by_repr=by_repr,
            ranks=wanted.world_size,
        )
        self._store.add(info, owner=self._owner, replace_finished=external_training_id is not None)
        future = self._new_future(info)
        with self._lock:
            self._futures[training_id] = future
            self._pinned[training_id] = future
        try:
            self.start_training(future, request)
        except BaseException:
            with self._lock:
                if self._pinned.get(training_id) is future:
                    del self._pinned[training_id]
                if self._futures.get(training_id) is future:
                    del self._futures[training_id]
            self._store.delete(training_id)
            raise
        log.debug("submitted training %s of %s", training_id, info.module)
        return future

    def capabilities(self) -> dict[str, SupportLevel]:
        """What this trainer can do: a :class:`~trainerkit.SupportLevel` for
        every capability name (``SupportLevel(0)``: unsupported).

        A backend declares its levels in :attr:`CAPABILITIES` (or overrides
        this method when they depend on its config); undeclared names are
        unsupported, and the conformance suite checks both ways.
        """
        return {name: self.CAPABILITIES.get(name, SupportLevel(0)) for name in CAPABILITY_NAMES}

    def training_parameters(self, module_class: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The arguments ``module_class.train`` would receive from
        ``train(module_class, *args, **kwargs)``, by parameter name: bound to
        its signature, defaults filled in, then passed through the module's
        optional classmethod ``training_parameters(cls, **params) -> Mapping``
        (which may fill in or adjust values). Nothing is recorded or started.

        Raises:
            TypeError: the arguments do not fit, or the hook's result does not.
        """
        check_module_class(module_class)
        return training_parameters(module_class, args, kwargs)

    def _serve_capabilities(self, requested: Any, resources: Resources = Resources()) -> Served:
        """Serve the config's default requests overridden by ``requested``, and
        what ``resources`` needs (multi_node, multi_process, gpus)."""
        requests = self._default_capability_requests()
        if requested is not None:
            requests = {**requests, **normalize_requests(requested)}
        needed = resources.needs()
        needs = normalize_requests(needed) if needed else {}
        if needs:
            self._serve(needs, needed_by=f"resources {resources.describe()}")
            for name in needs:
                if requests.get(name) is RequestLevel.DISABLE:
                    raise ValueError(
                        f"capabilities turn {name} off, but resources {resources.describe()} need it; "
                        "drop one of the two"
                    )
            requests = {**requests, **needs}
        if not requests:
            return _NOTHING_REQUESTED
        return self._serve(requests)

    def _serve(self, requests: dict[str, RequestLevel], needed_by: str = "") -> Served:
        """:func:`~trainerkit.capabilities.serve` against this trainer's
        capabilities; a refusal carries :meth:`_capability_hint`."""
        try:
            return serve(self.instance_name, requests, self.capabilities(), needed_by=needed_by)
        except UnsupportedCapabilityError as exc:
            hint = self._capability_hint([item.name for item in exc.unsupported])
            if not hint:
                raise
            raise UnsupportedCapabilityError(self.instance_name, exc.unsupported, exc.needed_by, hint) from None

    def _capability_hint(self, unsupported: Sequence[str]) -> str:
        """How this trainer, or another one, could serve the capabilities named in
        ``unsupported`` (added to the refusal's message), or ""."""
        if "multi_node" in unsupported:
            return "of the built-in trainer types only KUBERNETES runs a training on several nodes (docs/distributed.md)"
        return ""

    def _resources(self, requested: Any) -> Resources:
        """The call's ``resources`` (a mapping fills in its missing keys from the
        config's ``default_resources``), else the config's, else one process."""
        config = self.config
        defaults = config.default_resources if isinstance(config, TrainerConfig) else None
        if requested is None:
            return Resources.of(defaults)
        if isinstance(requested, Mapping) and defaults:
            return Resources.of({**defaults, **requested})
        return Resources.of(requested)

    def _default_capability_requests(self) -> dict[str, RequestLevel]:
        config = self.config
        defaults = config.capabilities if isinstance(config, TrainerConfig) else None
        if not defaults:
            return {}
        return normalize_requests(defaults, f"trainer {self.instance_name!r} config capabilities")

    # -- storage and checkpoints ----------------------------------------------------------

    @property
    def storage_options(self) -> dict[str, dict[str, Any]]:
        """The config's ``storage_options`` (``{protocol: {option: value}}``)."""
        config = self.config
        options = config.storage_options if isinstance(config, TrainerConfig) else None
        return storage.check_storage_options(options)

    @property
    def cache_dir(self) -> Optional[str]:
        """The config's ``cache_dir`` (None: the default cache directory)."""
        config = self.config
        return config.cache_dir if isinstance(config, TrainerConfig) else None

    def checkpoint_dir(self) -> Optional[str]:
        """Where this trainer's trainings save checkpoints: the config's
        ``checkpoint_dir``, else :meth:`default_checkpoint_dir` (None: nowhere)."""
        config = self.config
        configured = config.checkpoint_dir if isinstance(config, TrainerConfig) else None
        if not configured:
            return self.default_checkpoint_dir()
        base = getattr(self, "_built_in", None)
        if base is None:
            return configured
        if is_url(configured):
            protocol, _, rest = configured.partition("://")
            if protocol.lower() in ("file", "local") and not rest.startswith("/"):
                return f"{protocol.lower()}://{os.path.abspath(os.path.join(base, os.path.expanduser(rest)))}"
            return configured
        if self.saves_on_this_machine:  # (a KUBERNETES path is one inside its pods)
            return os.path.abspath(os.path.join(base, os.path.expanduser(configured)))
        return configured

    def default_checkpoint_dir(self) -> Optional[str]:
        """The checkpoint directory without a configured one (base: none)."""
        return None

    def checkpoint_store(self) -> Optional[CheckpointStore]:
        """The :class:`~trainerkit.checkpoints.CheckpointStore` of :meth:`checkpoint_dir`, or None."""
        cached = getattr(self, "_checkpoint_store_cache", None)
        if cached is not None:
            return cached[0]
        location = self.checkpoint_dir()
        store = CheckpointStore(location, self.storage_options) if location else None
        if getattr(self, "_store_instance", None) is not None:
            # Built and opened: where checkpoints go no longer changes, and
            # resolving it (the state directory, paths) on every train() cost
            # about 30 µs of the hot path.
            self._checkpoint_store_cache = (store,)
        return store

    def list_checkpoints(self, training_id: str) -> list[CheckpointInfo]:
        """The checkpoints of ``training_id``, oldest first ([] without a checkpoint_dir)."""
        store = self.checkpoint_store()
        return store.list(training_id) if store is not None else []

    def _delete_checkpoints(self, training_id: str) -> None:
        store = self.checkpoint_store()
        if store is not None:
            store.delete(training_id)

    def _check_process_local_urls(self, save_path: Optional[str]) -> None:
        """``memory://`` lives in one process: refuse it where trainings run in another."""
        if self.trains_in_this_process:
            return
        for what, location in (("save_path", save_path), ("checkpoint_dir", self.checkpoint_dir())):
            if location and is_url(location) and storage.protocol_of(location) == "memory":
                raise ValueError(
                    f"{what} {location} is in fsspec's memory filesystem, which exists only inside one "
                    f"process, but trainer {self.instance_name!r} ({self.name}) trains in another process; "
                    "use a directory or a shared store (s3://, gs://, file:// on a shared disk)"
                )

    def _check_checkpoint_url(self) -> None:
        """A URL ``checkpoint_dir`` whose protocol fsspec does not know, or whose
        package (s3fs, gcsfs...) is missing, fails at ``train()``, not at the
        training's first ``save_checkpoint`` (nothing is contacted: the
        training may never checkpoint)."""
        if getattr(self, "_checkpoint_url_usable", False):
            return
        store = self.checkpoint_store()
        if store is None or not is_url(store.root):
            if getattr(self, "_checkpoint_store_cache", None) is not None:
                self._checkpoint_url_usable = True  # resolved for good: nothing to check at each train()
            return
        try:
            storage.filesystem(store.root, self.storage_options)
        except StorageError as exc:
            raise StorageError(f"checkpoint_dir of trainer {self.instance_name!r}: {exc}") from None
        self._checkpoint_url_usable = True  # its package is there: it stays there

    def _check_resume_from(self, resume_from: Any) -> None:
        """``resume_from`` must name a training of this trainer, or one with checkpoints."""
        if not isinstance(resume_from, str):
            raise TypeError(f"resume_from must be a training id (a string), got {resume_from!r}")
        try:
            ids.trainer_name_from_id(resume_from)
        except InvalidTrainingIdError as exc:
            raise InvalidTrainingIdError(f"resume_from: {exc}") from None
        if self._store.get(resume_from) is not None:
            return
        if self.list_checkpoints(resume_from):
            return
        raise TrainingNotFoundError(
            f"resume_from={resume_from!r}: trainer {self.instance_name!r} has no record of that "
            f"training and no checkpoints of it under {self.checkpoint_dir() or '(no checkpoint_dir)'}; "
            "check the id (trainerkit list shows them)"
        )

    def _check_save_path_free(self, path: str) -> None:
        """A live training reserves its save path: refuse a second one there."""
        live = self._store.list(TrainingQuery(status=frozenset({TrainingStatus.QUEUED, TrainingStatus.RUNNING})))
        holder = next((info for info in live if info.save_path == path and not self._reconcile(info).status.is_terminal), None)
        if holder is not None:
            raise FileExistsError(
                f"save_path {path} is reserved by training {holder.id}, which is "
                f"{holder.status.value}; choose another save_path, or save_with_id=True for one "
                "directory per training"
            )

    def get_model_future(self, training_id: str) -> ModelTrainerFutureBase:
        """A future for an existing training of this trainer (from any process).

        Raises:
            InvalidTrainingIdError: not a trainerkit id.
            TrainingNotFoundError: no record of it (or it belongs to another trainer).
        """
        name = ids.trainer_name_from_id(training_id)
        if name != self.instance_name:
            raise TrainingNotFoundError(
                f"training {training_id!r} belongs to trainer {name!r}, not {self.instance_name!r}; "
                "use TrainerManager.get_model_future(training_id), which routes by the id"
            )
        with self._lock:
            future = self._futures.get(training_id)
        if future is not None:
            return future
        info = self._load_info(training_id)
        if info is None:
            raise TrainingNotFoundError(
                f"no training {training_id!r} in trainer {self.instance_name!r}: it never "
                "existed here, or it was deleted or purged by retention"
            )
        with self._lock:
            future = self._futures.get(training_id)
            if future is None:
                future = self._new_future(info)
                self._futures[training_id] = future
        # Like a future from train(), it completes by itself (concurrent.futures.wait
        # and as_completed rely on it): someone follows its training from now on.
        self._ensure_observed(future)
        return future

    def list_trainings(
        self,
        status: Any = None,
        since: "datetime.datetime | datetime.timedelta | str | None" = None,
        tags: "Sequence[str] | str | None" = None,
        limit: Optional[int] = None,
    ) -> list[TrainingInfo]:
        """This trainer's trainings, newest first.

        Args:
            status: a status (or its name) or several; None for all.
            since: only trainings submitted at or after this time: an aware
                datetime (naive ones are taken as local time), or a duration
                back from now (``timedelta`` or text such as ``"2h"``).
            tags: only trainings carrying every one of these tags.
            limit: at most this many (a positive integer).
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        if limit is not None and limit > _MAX_LIMIT:
            raise ValueError(f"limit must be at most {_MAX_LIMIT:,} (None lists every training), got {limit:,}")
        query = TrainingQuery(
            trainer_name=self.instance_name,
            status=normalize_statuses(status),
            since=_since(since),
            tags=normalize_tags(tags),
            limit=limit,
        )
        live = frozenset({TrainingStatus.QUEUED, TrainingStatus.RUNNING})
        if query.status is not None and query.status & (live | {TrainingStatus.ERRORED}):
            # A live record whose process died is ERRORED: settle those first so
            # that the status filter sees what get_info() would report.
            for info in self._store.list(TrainingQuery(trainer_name=self.instance_name, status=live)):
                self._reconcile(info)
        return [self._reconcile(info) for info in self._store.list(query)]

    def delete_training(self, training_id: str, delete_model: bool = False, keep_checkpoints: bool = False) -> None:
        """Forget a finished training; with ``delete_model`` remove its saved model too.

        Only the model directory itself is removed, and only when it holds a
        model trainerkit saved for this very training. Its checkpoints
        (``<checkpoint_dir>/<training id>``) are removed too, unless
        ``keep_checkpoints``.

        Raises:
            TrainingNotFoundError: no such training.
            TrainingStateError: the training is still QUEUED or RUNNING.
        """
        future = self.get_model_future(training_id)
        info = future.get_info()
        if not info.status.is_terminal:
            raise TrainingStateError(
                f"training {training_id} is {info.status.value}; cancel it first "
                "(future.cancel()) and delete it once it has stopped"
            )
        if delete_model and info.save_path:
            self._delete_model_dir(info)
        if not keep_checkpoints:
            self._delete_checkpoints(training_id)
        self._store.delete(training_id)
        with self._lock:
            self._pinned.pop(training_id, None)
            self._futures.pop(training_id, None)
        future._model = NO_MODEL
        log.info("deleted training %s%s", training_id, " and its model" if delete_model else "")

    def record_counts(self) -> tuple[str, dict[str, int]]:
        """``(where, counts)``: where this trainer's records live (a database
        path; may be empty) and how many trainings each trainer name has there,
        this trainer's and those of any other trainer sharing the records (a
        ``state_dir`` used by several configurations)."""
        return self._store.describe(), self._store.count_by_trainer()

    def purge_finished(self, older_than: Optional[datetime.timedelta] = None) -> list[str]:
        """Remove finished trainings completed more than ``older_than`` ago
        (default: the configured ``retention_duration``); return their ids.

        With ``retention_delete_models`` configured, their saved model
        directories go too (each only if it holds the model trainerkit saved
        for that training; one that cannot be removed is logged and kept).
        """
        if older_than is None:
            older_than = self._retention
        if older_than is None:
            return []
        purged = self._store.purge_finished(utcnow() - older_than, trainer_name=self.instance_name)
        with self._lock:
            for info in purged:
                # The trainer lets go; a future the caller still holds keeps its model.
                self._pinned.pop(info.id, None)
                self._futures.pop(info.id, None)
        for info in purged:
            try:
                self._delete_checkpoints(info.id)
            except OSError as exc:
                log.warning("retention kept the checkpoints of training %s: %s", info.id, exc)
        if isinstance(self.config, TrainerConfig) and self.config.retention_delete_models:
            for info in purged:
                if info.save_path:
                    try:
                        self._delete_model_dir(info)
                    except (TrainingStateError, ModelLoadError, OSError) as exc:
                        log.warning("retention kept the model of training %s: %s", info.id, exc)
        if purged:
            log.debug("retention purged %d trainings of %s", len(purged), self.instance_name)
        return [info.id for info in purged]

    def shutdown(self, wait: bool = True) -> None:
        """Stop background threads; with ``wait``, let running trainings finish."""
        self._closed = True
        self._stop.set()
        if self._purger is not None and wait and self._purger is not threading.current_thread():
            self._purger.join(timeout=5)
        if self._store_instance is not None:
            self._store_instance.close()

    # -- the backend contract: hooks -----------------------------------------------------

    @abc.abstractmethod
    def start_training(self, future: ModelTrainerFutureBase, request: TrainingRequest) -> None:
        """Start or queue the training ``request`` describes; ``future`` is its handle.

        Called once per training, after its QUEUED record exists. Report what
        happens next through the ``mark_*`` methods, from any thread. Raising
        here undoes the submission (the record is removed) and the error reaches
        the caller of ``train()``.
        """

    @abc.abstractmethod
    def cancel_training(self, future: ModelTrainerFutureBase) -> bool:
        """Stop a QUEUED or RUNNING training.

        Returns True when the training is (or will end) CANCELED, False when it
        was already finishing. A queued training is usually marked at once
        (:meth:`mark_canceled`); a running one when it has stopped.
        """

    def prepare_training(self, request: TrainingRequest) -> Any:
        """Refuse a request this backend cannot run (raise a clear error), or
        prepare what :meth:`start_training` needs.

        Called before anything is recorded; what it returns reaches
        :meth:`start_training` as ``request.prepared``. The default accepts
        everything and prepares nothing.
        """
        return None

    def create_store(self) -> TrainingStore:
        """The record store of this trainer (default: in this process's memory)."""
        return MemoryTrainingStore()

    def training_logs(self, future: ModelTrainerFutureBase, follow: bool) -> Iterator[str]:
        """The output of a training, line by line (``follow``: until it ends).

        A backend that runs multi-process trainings also takes ``rank=k`` (a
        keyword, only ever passed for k > 0 and below ``info.ranks``) and
        returns rank k's output; without it, rank 0's."""
        raise NotImplementedError(
            f"trainer type {self.name} keeps no logs of trainings; read the output where the "
            "training itself writes it"
        )

    def observe_trainings(self, futures: Sequence[ModelTrainerFutureBase]) -> None:
        """Bring futures of trainings that run elsewhere up to date.

        Called every ``observe_interval`` seconds, from one thread, while someone
        waits on such a future. The default reads the records (for trainings
        another process of the same trainer runs); a backend whose trainings
        report elsewhere reads that and calls :meth:`mark_observed`.
        """
        for future in futures:
            info = self._load_info(future.id)
            if info is None:
                info = dataclasses.replace(
                    future.cached_info,
                    status=TrainingStatus.ERRORED,
                    completion_time=utcnow(),
                    errors=(ErrorDetail.of(TrainingNotFoundError, "the training's record was deleted"),),
                )
            self.mark_observed(future, info)

    def recover_training(self, info: TrainingInfo) -> Optional[Mapping[str, Any]]:
        """A QUEUED or RUNNING record whose owning process is gone: what is it now?

        Return the record changes that bring it up to date (the base persists
        them; ``{}`` when the training is still fine, running on without that
        process), or None for the default: COMPLETED when the model was saved
        for this very training, else ERRORED, interrupted.
        """
        return None

    def find_future(self, training_id: str) -> Optional[ModelTrainerFutureBase]:
        """The future of ``training_id`` that this trainer handed out and that is
        still in use, or None (for backends that learn of changes by id)."""
        with self._lock:
            return self._futures.get(training_id)

    # -- the backend contract: reporters ----------------------------------------------------

    def mark_running(
        self,
        future: ModelTrainerFutureBase,
        *,
        start_time: Optional[datetime.datetime] = None,
        devices: Sequence[str] = (),
    ) -> TrainingInfo:
        """The training started (at ``start_time``, default now), on ``devices``
        (the GPU ids it was given, if any). Returns the new info."""
        changes: dict[str, Any] = dict(status=TrainingStatus.RUNNING, start_time=start_time or utcnow(), detail="")
        if devices:
            changes["devices"] = tuple(devices)
        info = self._record(future, **changes)
        future._apply(info)
        return info

    def mark_attempt(self, future: ModelTrainerFutureBase, attempt: int, detail: str) -> TrainingInfo:
        """The training goes on with attempt number ``attempt`` (a retry after a
        crash, same id); ``detail`` says so ("attempt 2 of 3: ...")."""
        info = self._record(future, attempt=attempt, detail=detail)
        future._apply(info)
        return info

    def mark_waiting(self, future: ModelTrainerFutureBase, detail: str) -> TrainingInfo:
        """The training is still QUEUED; ``detail`` says what it waits for."""
        info = self._record(future, detail=detail)
        future._apply(info)
        return info

    def mark_progress(self, future: ModelTrainerFutureBase, report: ProgressReport) -> TrainingInfo:
        """The training's latest ``report_progress``."""
        info = self._record(future, progress=report)
        future._apply(info)
        return info

    def mark_completed(
        self,
        future: ModelTrainerFutureBase,
        model: Any = NO_MODEL,
        *,
        time: Optional[datetime.datetime] = None,
        progress: Optional[ProgressReport] = None,
    ) -> TrainingInfo:
        """The training completed; ``model`` is the trained instance when this
        process holds it (``result()`` returns it without loading)."""
        return self._finish(future, TrainingStatus.COMPLETED, (), time, progress, model=model)

    def mark_errored(
        self,
        future: ModelTrainerFutureBase,
        error: "BaseException | ErrorDetail",
        *,
        time: Optional[datetime.datetime] = None,
        progress: Optional[ProgressReport] = None,
    ) -> TrainingInfo:
        """The training failed with ``error`` (an exception raised in this process,
        which ``result()`` then raises as is, or the :class:`ErrorDetail` of one
        raised elsewhere, which ``result()`` rebuilds)."""
        detail = error if isinstance(error, ErrorDetail) else ErrorDetail.from_exception(error)
        exception = error if isinstance(error, BaseException) else None
        return self._finish(future, TrainingStatus.ERRORED, (detail,), time, progress, exception=exception)

    def mark_canceled(
        self,
        future: ModelTrainerFutureBase,
        reason: str = "",
        *,
        time: Optional[datetime.datetime] = None,
        progress: Optional[ProgressReport] = None,
    ) -> TrainingInfo:
        """The training was canceled (``reason``: when, or by whom)."""
        errors = (ErrorDetail.of(TrainingCanceledError, reason),) if reason else ()
        return self._finish(future, TrainingStatus.CANCELED, errors, time, progress)

    def mark_outcome(self, future: ModelTrainerFutureBase, outcome: "Outcome") -> TrainingInfo:
        """How a training run by :func:`trainerkit.runner.run_training` ended,
        as its :class:`~trainerkit.runner.Outcome` says (status, time, errors,
        last progress)."""
        return self._finish(future, outcome.status, outcome.errors, outcome.time, outcome.progress)

    def mark_observed(self, future: ModelTrainerFutureBase, info: TrainingInfo) -> TrainingInfo:
        """Take ``info``, read from where the training's record lives (this
        trainer's store or the system that runs it), as the training's state."""
        future._apply(info)
        if info.status.is_terminal:
            self._after_terminal(future, info)
        return info

    def _finish(
        self,
        future: ModelTrainerFutureBase,
        status: TrainingStatus,
        errors: Sequence[ErrorDetail],
        time: Optional[datetime.datetime],
        progress: Optional[ProgressReport],
        *,
        model: Any = NO_MODEL,
        exception: Optional[BaseException] = None,
    ) -> TrainingInfo:
        """Record a terminal status, then end the future with it (and with the
        in-process model or exception, when there is one)."""
        changes: dict[str, Any] = dict(status=status, completion_time=time or utcnow(), errors=tuple(errors))
        if progress is not None:
            changes["progress"] = progress
        info = self._record(future, **changes)
        future._apply(info, model=model, exception=exception)
        self._after_terminal(future, info)
        return info

    def _record(self, future: ModelTrainerFutureBase, **changes: Any) -> TrainingInfo:
        """Persist ``changes`` to the training's record; return the new info.

        If the store fails (a full disk, say), the future still ends, ERRORED
        with that StoreError, so that nobody waits on it forever; the error is
        logged and raised to the backend, and the record keeps its last stored
        state (once this process is gone, it is reported interrupted).
        """
        try:
            return self._store.update(future.id, **changes)
        except StoreError as exc:
            log.error("training %s stopped: its record could not be updated: %s", future.id, exc)
            info = dataclasses.replace(
                future.cached_info,
                status=TrainingStatus.ERRORED,
                completion_time=utcnow(),
                errors=(ErrorDetail.from_exception(exc),),
            )
            future._apply(info, exception=exc)
            self._after_terminal(future, info)
            raise

    def _after_terminal(self, future: ModelTrainerFutureBase, info: TrainingInfo) -> None:
        # Keep the future (and its in-memory model) only when the model lives nowhere else.
        if info.status is not TrainingStatus.COMPLETED or info.save_path:
            with self._lock:
                self._pinned.pop(info.id, None)

    # -- internals ------------------------------------------------------------------

    def _new_future(self, info: TrainingInfo) -> ModelTrainerFutureBase:
        return ModelTrainerFutureBase(self, info)

    def _check_open(self) -> None:
        if self._closed:
            raise TrainingStateError(f"trainer {self.instance_name!r} has been shut down")

    def _load_info(self, training_id: str) -> Optional[TrainingInfo]:
        info = self._store.get(training_id)
        return self._reconcile(info) if info is not None else None

    def _reconcile(self, info: TrainingInfo) -> TrainingInfo:
        """Report a live record whose owning process is gone as interrupted."""
        if info.status.is_terminal:
            return info
        owner = self._store.get_owner(info.id)
        if not owner or owner == self._owner or owner_is_alive(owner) is not False:
            return info
        changes = self.recover_training(info)
        if changes is not None:
            return self._store.update(info.id, **changes) if changes else info
        if info.save_path and self._holds_model_of(info):
            # The model was saved (atomically, with its training id) before its
            # process died, only the final record change was lost: it completed.
            return self._store.update(
                info.id, status=TrainingStatus.COMPLETED, completion_time=utcnow(),
                detail="completion recovered from the saved model after its process exited",
            )
        return self._store.update(
            info.id,
            status=TrainingStatus.ERRORED,
            completion_time=utcnow(),
            errors=(
                ErrorDetail.of(
                    TrainingInterruptedError,
                    f"training was interrupted: the process that ran it ({owner}) exited while "
                    f"the training was {info.status.value}",
                ),
            ),
        )

    def _is_owned_here(self, future: ModelTrainerFutureBase) -> bool:
        with self._lock:
            return self._pinned.get(future.id) is future

    def _fresh_info(self, future: ModelTrainerFutureBase) -> TrainingInfo:
        if future.cached_info.status.is_terminal or self._is_owned_here(future):
            return future.cached_info
        self.observe_trainings([future])
        return future.cached_info

    def _ensure_observed(self, future: ModelTrainerFutureBase) -> None:
        """Make sure someone updates ``future`` until it ends."""
        if future.cached_info.status.is_terminal or self._is_owned_here(future):
            return
        if self.pushes_updates:
            self.observe_trainings([future])
            return
        with self._lock:
            self._observed.add(future)
            if self._observer is None or not self._observer.is_alive():
                self._observer = threading.Thread(
                    target=self._observe_loop,
                    name=f"trainerkit-observer-{self.instance_name}",
                    daemon=True,
                )
                self._observer.start()

    def _observe_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                live = [f for f in self._observed if not f.cached_info.status.is_terminal]
                if not live:
                    self._observer = None
                    return
            try:
                self.observe_trainings(live)
            except Exception:  # keep observing; the next round may succeed
                log.exception("refreshing trainings of %s failed", self.instance_name)
            del live
            self._stop.wait(self.observe_interval)

    def _cancel(self, future: ModelTrainerFutureBase) -> bool:
        if future.cached_info.status.is_terminal:
            return False
        return self.cancel_training(future)

    def _purge_loop(self) -> None:
        assert self._retention is not None
        interval = min(max(self._retention.total_seconds() / 4, 0.05), 60.0)
        while not self._stop.wait(interval):
            try:
                self.purge_finished()
            except Exception:
                log.exception("retention purge of %s failed", self.instance_name)

    def _holds_model_of(self, info: TrainingInfo) -> bool:
        path = info.save_path
        try:
            if path and is_url(path):
                metadata = storage.read_manifest(path, self.storage_options)
            else:
                metadata = read_metadata(path) if path and os.path.isdir(path) else None
        except (ModelLoadError, OSError):
            return False
        return bool(metadata and metadata.get("training_id") == info.id)

    def _delete_model_dir(self, info: TrainingInfo) -> None:
        path = info.save_path
        assert path is not None
        if is_url(path):
            manifest = storage.read_manifest(path, self.storage_options)
            if manifest is None and not storage.list_dir(path, self.storage_options):
                return  # already gone (an earlier delete that failed later, on the checkpoints)
            if manifest is None or manifest.get("training_id") != info.id:
                raise TrainingStateError(
                    f"refusing to delete {path}: it does not hold the model trainerkit saved for "
                    f"training {info.id} (no matching {storage.MANIFEST_FILE}); remove it by hand if intended"
                )
            storage.remove(path, self.storage_options)
            return
        if not os.path.lexists(path):
            return
        metadata = read_metadata(path) if os.path.isdir(path) and not os.path.islink(path) else None
        if metadata is None or metadata.get("training_id") != info.id:
            raise TrainingStateError(
                f"refusing to delete {path}: it does not hold the model trainerkit saved for "
                f"training {info.id} (no matching {METADATA_FILE}); remove it by hand if intended"
            )
        shutil.rmtree(path)


#: The largest limit a record store takes (SQLite's 64-bit integers).
_MAX_LIMIT = 2**63 - 1


def _since(since: Any) -> Optional[datetime.datetime]:
    if since is None:
        return None
    if isinstance(since, datetime.datetime):
        return since if since.tzinfo else since.astimezone()
    if isinstance(since, (datetime.timedelta, str, int, float)) and not isinstance(since, bool):
        try:
            return utcnow() - parse_duration(since)
        except ValueError as exc:
            raise ValueError(f"since: {exc}, or a datetime") from None
    raise TypeError(f"since must be a datetime, a timedelta or a duration text, got {since!r}")
