"""The backend conformance suite: :class:`BackendConformance`.

A pytest base class whose tests prove, through trainerkit's public API alone,
that a trainer type honours the trainer contract (``docs/testing.md``). A
backend runs it by subclassing it in a test module and giving the
``trainer_config`` fixture::

    from trainerkit.testing import BackendConformance

    class TestAcmeConformance(BackendConformance):
        needs_save_path = True

        @pytest.fixture
        def trainer_config(self, tmp_path):
            return {"type": "ACME", "config": {"max_workers": 1}}

This module imports pytest; ``import trainerkit`` never imports it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import logging
import os
import re
import threading
from typing import Any, Callable, ContextManager, Iterator

import pytest

import trainerkit
from trainerkit import ModelTrainerBase, TrainerManager, TrainingStatus

from ..capabilities import CAPABILITY_NAMES, RequestLevel, SupportLevel, UnsupportedCapabilityError, serve
from ..resources import Resources
from . import modules
from .modules import (
    Blocking, Chatty, ChattyProgress, Checkpointing, ConformanceError, CrashesOnce, Failing, NeedsArgs, Progress,
    Quick,
)
from .waiting import FileGate, wait_until

log = logging.getLogger("trainerkit.testing")

_LIVE = [TrainingStatus.QUEUED, TrainingStatus.RUNNING]
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")

#: A :func:`hold_queue <BackendConformance.hold_queue>` value: called with the
#: trainer under test, it returns a context manager inside which that trainer's
#: new trainings stay QUEUED.
QueueHolder = Callable[[ModelTrainerBase], ContextManager[None]]


class _Gates:
    """Makes :class:`FileGate` directories under one directory; releases them all."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.made: list[FileGate] = []

    def __call__(self) -> FileGate:
        gate = FileGate(os.path.join(self.root, f"gate-{len(self.made)}"))
        self.made.append(gate)
        return gate

    def release_all(self) -> None:
        for gate in self.made:
            gate.release()


class BackendConformance:
    """Tests that every trainer type must pass; subclass it to run them.

    A subclass **must** override the fixture ``trainer_config``: the
    ``{"type": ..., "config": {...}}`` block of the trainer under test, which
    the suite declares under the name :attr:`trainer_name`. When
    :attr:`bounded_concurrency` is true, that config must let the trainer run
    **one training at a time** (``max_workers: 1``). Records must be kept
    where a second manager built with the same config finds them (for
    built-in types: a ``state_dir`` under ``tmp_path``).

    A subclass **may** override the fixtures ``save_dir`` (where models are
    saved; a path the training sees at the same path), ``gate_dir`` (where
    held trainings look for their release file, likewise) and ``hold_queue``
    (how to keep new trainings QUEUED), and set the class attributes below to
    declare what the backend legitimately lacks: each test that needs a
    missing capability is skipped with a reason, never passed.
    """

    #: The name the suite gives the trainer under test in its manager config.
    trainer_name: str = "subject"
    #: Upper bound, in seconds, of every wait; each ends as soon as its condition holds.
    timeout: float = 60.0

    #: ``train()`` without ``save_path`` is refused (ValueError), because the
    #: model comes back only through a save; False: the model is kept in memory.
    needs_save_path: bool = False
    #: ``max_workers`` bounds concurrent trainings, so a training submitted
    #: while the only slot is busy is QUEUED (the config must set ``max_workers: 1``).
    bounded_concurrency: bool = True
    #: ``cancel()`` stops a training that is already running.
    cancels_running: bool = True
    #: A new manager over the same config (a restarted process) finds earlier trainings.
    survives_restart: bool = True
    #: ``future.logs()`` returns what the training printed.
    keeps_logs: bool = True
    #: ``get_info().progress`` shows the training's ``report_progress`` calls.
    reports_progress: bool = True

    # -- fixtures ---------------------------------------------------------------------------

    @pytest.fixture
    def trainer_config(self) -> dict[str, Any]:
        """The ``{type, config}`` block of the trainer under test: override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the fixture trainer_config, returning the "
            '{"type": ..., "config": {...}} block of the trainer under test'
        )

    @pytest.fixture
    def manager_config(self, trainer_config: dict[str, Any]) -> dict[str, Any]:
        """The whole manager config: ``trainer_config`` under :attr:`trainer_name`."""
        return {"model_management": {"trainers": {self.trainer_name: trainer_config}}}

    @pytest.fixture
    def gate_dir(self, tmp_path: Any) -> str:
        """Directory of the gates that hold :class:`~trainerkit.testing.modules.Blocking`
        trainings; override it when trainings run where ``tmp_path`` is not visible."""
        return str(tmp_path / "conformance-gates")

    @pytest.fixture
    def make_gate(self, gate_dir: str) -> Iterator[Callable[[], FileGate]]:
        """``make_gate()``: a new :class:`FileGate`; all are released at teardown."""
        gates = _Gates(gate_dir)
        yield gates
        gates.release_all()

    @pytest.fixture
    def save_dir(self, tmp_path: Any) -> str:
        """Directory under which the suite saves models (each under its training id);
        override it when trainings must save somewhere else (a mounted volume)."""
        return str(tmp_path / "conformance-models")

    @pytest.fixture
    def storage_url(self, tmp_path: Any) -> str:
        """An fsspec URL under which the ``remote_storage`` tests save models (each
        under its training id); the default, a ``file://`` URL under ``tmp_path``,
        suits backends whose trainings run on this machine."""
        return "file://" + str(tmp_path / "conformance-remote")

    @pytest.fixture
    def make_manager(
        self, manager_config: dict[str, Any], make_gate: _Gates
    ) -> Iterator[Callable[[], TrainerManager]]:
        """``make_manager()``: a new :class:`TrainerManager` over ``manager_config``,
        as a restarted process would build it.

        At teardown, trainings still QUEUED or RUNNING are canceled and waited
        for, gates are opened, and every manager is closed.
        """
        managers: list[TrainerManager] = []

        def build() -> TrainerManager:
            manager = TrainerManager.from_dict(manager_config)
            managers.append(manager)
            return manager

        yield build
        try:
            if managers:
                self._cancel_live(managers[-1].get_trainer(self.trainer_name))
        finally:
            make_gate.release_all()
            for manager in managers:
                try:
                    manager.close(wait=False)
                except Exception:  # keep closing the others
                    log.warning("closing a conformance test manager failed", exc_info=True)

    @pytest.fixture
    def manager(self, make_manager: Callable[[], TrainerManager]) -> TrainerManager:
        """The first manager of the test."""
        return make_manager()

    @pytest.fixture
    def trainer(self, manager: TrainerManager) -> ModelTrainerBase:
        """The trainer under test, from :func:`manager`."""
        return manager.get_trainer(self.trainer_name)

    @pytest.fixture
    def hold_queue(self, make_gate: _Gates, save_dir: str) -> QueueHolder:
        """``with hold_queue(trainer):`` new trainings of ``trainer`` stay QUEUED.

        The default fills the trainer's only slot (``max_workers: 1``) with a
        :class:`~trainerkit.testing.modules.Blocking` training and releases it
        on exit. A backend without bounded concurrency overrides this fixture
        with its own way (the KUBERNETES suite makes the cluster unschedulable),
        or the tests that need a QUEUED training are skipped.
        """
        if not self.bounded_concurrency:
            pytest.skip(
                f"{type(self).__name__}.bounded_concurrency is False and it does not override "
                "the hold_queue fixture: the suite has no way to keep a training QUEUED"
            )

        @contextlib.contextmanager
        def hold(trainer: ModelTrainerBase) -> Iterator[None]:
            gate = make_gate()
            blocker = trainer.train(Blocking, gate.path, save_path=save_dir, save_with_id=True)
            gate.wait_entered(self.timeout)
            try:
                yield
            finally:
                gate.release()
                blocker.wait(self.timeout)

        return hold

    # -- helpers ----------------------------------------------------------------------------

    def _require(self, capability: str, why: str) -> None:
        """Skip the test, saying why, unless the class attribute ``capability`` is true."""
        if not getattr(self, capability):
            pytest.skip(f"{type(self).__name__}.{capability} is False: {why}")

    def _cancel_live(self, trainer: ModelTrainerBase) -> None:
        """Cancel what a test left QUEUED or RUNNING, and wait for it to end."""
        futures = []
        for info in trainer.list_trainings(status=_LIVE):
            try:
                future = trainer.get_model_future(info.id)
                future.cancel()
                futures.append(future)
            except Exception:
                log.warning("could not cancel %s after the test", info.id, exc_info=True)
        for future in futures:
            if not future.wait(self.timeout):
                log.warning("%s did not end within %s s of its cancel", future.id, self.timeout)

    def _assert_no_model(self, path: Any) -> None:
        assert path is None or not os.path.exists(path), f"a model was saved at {path}"

    # -- results and info -------------------------------------------------------------------

    def test_result_is_the_trained_model_and_info_describes_the_training(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        future = trainer.train(
            Quick, 41, save_path=save_dir, save_with_id=True, model_name="model",
            tags=["conformance", "result"],
        )
        model = future.result(timeout=self.timeout)
        assert isinstance(model, Quick) and model.value == 41
        assert future.done() and future.cancel() is False  # finished: nothing to cancel

        expected_path = os.path.join(os.path.abspath(save_dir), future.id, "model")
        assert future.save_path == expected_path
        loaded = trainerkit.load(expected_path)
        assert isinstance(loaded, Quick) and loaded.value == 41

        info = future.get_info()
        assert info.id == future.id
        assert info.trainer_name == self.trainer_name
        assert info.status is TrainingStatus.COMPLETED and info.status.is_terminal
        assert not info.errors
        assert info.module == "trainerkit.testing.modules:Quick"
        assert info.save_path == expected_path
        assert info.model_name == "model"
        assert sorted(info.tags) == ["conformance", "result"]
        times = (info.submission_time, info.start_time, info.completion_time)
        assert all(isinstance(t, datetime.datetime) and t.tzinfo is not None for t in times), times

    def test_info_times_are_in_order_submission_start_completion(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        future = trainer.train(Quick, save_path=save_dir, save_with_id=True)
        future.result(timeout=self.timeout)
        info = future.get_info()
        assert info.submission_time <= info.start_time <= info.completion_time, (
            f"times out of order: submitted {info.submission_time.isoformat()}, started "
            f"{info.start_time.isoformat()}, completed {info.completion_time.isoformat()}"
        )

    def test_training_id_names_the_trainer_and_is_a_dns_label(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        future = trainer.train(Quick, save_path=save_dir, save_with_id=True)
        assert future.id.startswith(f"{self.trainer_name}--")
        assert len(future.id) <= 63 and _DNS_LABEL.match(future.id), future.id
        assert ModelTrainerBase.get_trainer_name(future.id) == self.trainer_name
        assert future.wait(self.timeout)

    def test_without_save_path_train_is_refused_and_nothing_is_recorded(
        self, trainer: ModelTrainerBase
    ) -> None:
        if not self.needs_save_path:
            pytest.skip(f"{type(self).__name__}.needs_save_path is False: it keeps models in memory")
        with pytest.raises(ValueError, match="save_path"):
            trainer.train(Quick, 1)
        assert trainer.list_trainings() == []

    def test_without_save_path_result_is_the_model_kept_in_memory(
        self, trainer: ModelTrainerBase
    ) -> None:
        if self.needs_save_path:
            pytest.skip(f"{type(self).__name__}.needs_save_path is True: a model comes back only "
                        "through save_path")
        future = trainer.train(Quick, 5)
        assert future.result(timeout=self.timeout).value == 5
        assert future.save_path is None and future.get_info().save_path is None

    # -- queueing and cancel ----------------------------------------------------------------

    def test_a_training_beyond_max_workers_waits_queued_until_a_slot_frees(
        self, trainer: ModelTrainerBase, make_gate: _Gates, save_dir: str
    ) -> None:
        self._require("bounded_concurrency", "it does not bound concurrent trainings")
        gate = make_gate()
        first = trainer.train(Blocking, gate.path, save_path=save_dir, save_with_id=True)
        gate.wait_entered(self.timeout)
        second = trainer.train(Quick, 2, save_path=save_dir, save_with_id=True)
        assert first.get_info().status is TrainingStatus.RUNNING
        status = second.get_info().status
        assert status is TrainingStatus.QUEUED, (
            f"{status.name} while the only slot is busy (does trainer_config set max_workers: 1?)"
        )
        assert second.get_info().start_time is None
        assert not second.done()
        gate.release()
        assert second.result(timeout=self.timeout).value == 2
        assert isinstance(first.result(timeout=self.timeout), Blocking)
        assert second.get_info().start_time >= first.get_info().completion_time

    def test_cancel_of_a_queued_training_ends_it_canceled_before_it_starts(
        self, trainer: ModelTrainerBase, hold_queue: QueueHolder, save_dir: str
    ) -> None:
        with hold_queue(trainer):
            future = trainer.train(Quick, 3, save_path=save_dir, save_with_id=True)
            status = future.get_info().status
            assert status is TrainingStatus.QUEUED, f"{status.name} while hold_queue holds the queue"
            assert future.cancel() is True
            assert future.wait(self.timeout)
            assert future.get_info().status is TrainingStatus.CANCELED
            assert future.done() and future.cancelled()
            with pytest.raises(concurrent.futures.CancelledError):
                future.result(timeout=self.timeout)
        info = future.get_info()
        assert info.status is TrainingStatus.CANCELED
        assert info.start_time is None
        self._assert_no_model(future.save_path)

    def test_cancel_of_a_running_training_ends_it_canceled(
        self, trainer: ModelTrainerBase, make_gate: _Gates, save_dir: str
    ) -> None:
        self._require("cancels_running", "it cannot stop a training that has started")
        gate = make_gate()
        future = trainer.train(Blocking, gate.path, save_path=save_dir, save_with_id=True)
        gate.wait_entered(self.timeout)
        assert future.get_info().status is TrainingStatus.RUNNING
        assert future.cancel() is True
        assert future.wait(self.timeout)
        info = future.get_info()
        assert info.status is TrainingStatus.CANCELED
        assert info.completion_time is not None
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=self.timeout)
        self._assert_no_model(future.save_path)

    # -- errors, progress, logs -------------------------------------------------------------

    def test_an_error_in_train_is_raised_again_with_its_own_type_and_message(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        future = trainer.train(Failing, "bad rows 17", save_path=save_dir, save_with_id=True)
        with pytest.raises(ConformanceError, match="bad rows 17") as caught:
            future.result(timeout=self.timeout)
        assert type(caught.value) is ConformanceError
        info = future.get_info()
        assert info.status is TrainingStatus.ERRORED
        assert info.errors, "an ERRORED training must carry its error"
        assert info.errors[0].type == "trainerkit.testing.modules.ConformanceError"
        assert "bad rows 17" in info.errors[0].message
        assert "ConformanceError" in (info.errors[0].traceback or "")
        self._assert_no_model(future.save_path)

    def test_progress_shows_the_last_report(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        self._require("reports_progress", "it does not carry report_progress to get_info()")
        future = trainer.train(Progress, 3, save_path=save_dir, save_with_id=True)
        assert future.result(timeout=self.timeout).steps == 3
        progress = future.get_info().progress
        assert progress is not None, "no progress recorded"
        assert (progress.step, progress.total) == (3, 3)
        assert progress.fraction == pytest.approx(1.0)
        assert progress.metrics == {"loss": pytest.approx(1 / 3)}

    def test_logs_hold_what_the_training_printed(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        self._require("keeps_logs", "it keeps no output of its trainings")
        future = trainer.train(Chatty, 3, save_path=save_dir, save_with_id=True)
        future.result(timeout=self.timeout)
        printed = [line.rstrip("\r\n") for line in future.logs()]
        ours = [line for line in printed if line.startswith(modules.LINE_PREFIX)]
        assert ours == [f"{modules.LINE_PREFIX} {n}" for n in range(3)], printed

    # -- records ----------------------------------------------------------------------------

    def test_a_new_manager_finds_a_finished_training_and_loads_its_model(
        self,
        manager: TrainerManager,
        make_manager: Callable[[], TrainerManager],
        save_dir: str,
    ) -> None:
        self._require("survives_restart", "its records live only in the manager that made them")
        future = manager.get_trainer(self.trainer_name).train(
            Quick, 7, save_path=save_dir, save_with_id=True, tags=["restart"]
        )
        future.result(timeout=self.timeout)
        manager.close()  # the process "restarts"

        restarted = make_manager()
        listed = restarted.get_trainer(self.trainer_name).list_trainings()
        assert [info.id for info in listed] == [future.id]
        again = restarted.get_model_future(future.id)
        info = again.get_info()
        assert info.status is TrainingStatus.COMPLETED
        assert info.module == "trainerkit.testing.modules:Quick"
        assert info.save_path == future.save_path
        assert list(info.tags) == ["restart"]
        model = again.result(timeout=self.timeout)
        assert isinstance(model, Quick) and model.value == 7

    def test_list_trainings_filters_by_status_and_tags_newest_first_with_a_limit(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        completed = trainer.train(Quick, 1, save_path=save_dir, save_with_id=True,
                                  tags=["conformance", "kept"])
        errored = trainer.train(Failing, save_path=save_dir, save_with_id=True,
                                tags=["conformance"])
        assert completed.wait(self.timeout) and errored.wait(self.timeout)

        def ids(**query: Any) -> list[str]:
            return [info.id for info in trainer.list_trainings(**query)]

        assert ids() == [errored.id, completed.id]
        assert ids(status="COMPLETED") == [completed.id]
        assert ids(status=TrainingStatus.ERRORED) == [errored.id]
        assert ids(status=["completed", "errored"]) == [errored.id, completed.id]
        assert ids(status="RUNNING") == []
        assert ids(tags=["kept"]) == [completed.id]
        assert ids(tags=["conformance"]) == [errored.id, completed.id]
        assert ids(tags=["conformance", "kept"]) == [completed.id]
        assert ids(tags=["absent"]) == []
        assert ids(limit=1) == [errored.id]
        assert ids(status="COMPLETED", tags=["conformance"], limit=1) == [completed.id]

    def test_delete_training_forgets_it_and_removes_its_model(
        self, manager: TrainerManager, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        future = trainer.train(Quick, save_path=save_dir, save_with_id=True)
        future.result(timeout=self.timeout)
        assert os.path.isdir(future.save_path)
        trainer.delete_training(future.id, delete_model=True)
        with pytest.raises(trainerkit.TrainingNotFoundError):
            trainer.get_model_future(future.id)
        with pytest.raises(trainerkit.TrainingNotFoundError):
            manager.get_model_future(future.id)
        assert trainer.list_trainings() == []
        assert not os.path.exists(future.save_path)

    def test_delete_training_refuses_a_training_that_has_not_finished(
        self, trainer: ModelTrainerBase, make_gate: _Gates, save_dir: str
    ) -> None:
        gate = make_gate()
        future = trainer.train(Blocking, gate.path, save_path=save_dir, save_with_id=True)
        with pytest.raises(trainerkit.TrainingStateError):
            trainer.delete_training(future.id)
        assert [info.id for info in trainer.list_trainings()] == [future.id]

    # -- bad input --------------------------------------------------------------------------

    def test_bad_arguments_are_refused_before_anything_starts(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        with pytest.raises(TypeError, match="'data'"):
            trainer.train(NeedsArgs, epochs=1, save_path=save_dir, save_with_id=True)
        with pytest.raises(TypeError, match="'epochs'"):
            trainer.train(NeedsArgs, "rows.csv", save_path=save_dir, save_with_id=True)
        with pytest.raises(TypeError, match="'epoch'"):
            trainer.train(NeedsArgs, "rows.csv", epochs=1, epoch=2, save_path=save_dir,
                          save_with_id=True)
        with pytest.raises(TypeError, match="too many positional"):
            trainer.train(NeedsArgs, "rows.csv", 3, save_path=save_dir, save_with_id=True)
        assert trainer.list_trainings() == []
        assert not os.path.exists(save_dir) or os.listdir(save_dir) == []

    def test_an_external_training_id_in_use_by_a_live_training_is_refused(
        self, trainer: ModelTrainerBase, make_gate: _Gates, save_dir: str
    ) -> None:
        gate = make_gate()
        live = trainer.train(Blocking, gate.path, save_path=save_dir, save_with_id=True,
                             external_training_id="conformance-ext")
        assert live.id == f"{self.trainer_name}--conformance-ext"
        with pytest.raises(trainerkit.TrainingExistsError):
            trainer.train(Quick, save_path=save_dir, save_with_id=True, model_name="second",
                          external_training_id="conformance-ext")
        assert [info.id for info in trainer.list_trainings()] == [live.id]
        assert live.get_info().module == "trainerkit.testing.modules:Blocking"

    # -- concurrent.futures -----------------------------------------------------------------

    def test_futures_work_with_concurrent_futures_wait_as_completed_and_callbacks(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        called: list[Any] = []
        lock = threading.Lock()

        def on_done(future: Any) -> None:
            with lock:
                called.append(future)

        futures = [trainer.train(Quick, n, save_path=save_dir, save_with_id=True) for n in (1, 2)]
        for future in futures:
            future.add_done_callback(on_done)
        done, not_done = concurrent.futures.wait(futures, timeout=self.timeout)
        assert done == set(futures) and not not_done
        values = sorted(f.result().value
                        for f in concurrent.futures.as_completed(futures, timeout=self.timeout))
        assert values == [1, 2]
        wait_until(lambda: len(called) == 2, "both done callbacks", timeout=self.timeout)
        assert sorted(id(f) for f in called) == sorted(id(f) for f in futures)

    def test_a_multi_node_training_runs_every_rank_of_every_node(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        levels = trainer.capabilities()
        if not levels["multi_node"]:
            pytest.skip("the trainer does not declare multi_node")
        procs = 2 if levels["multi_process"] else 1
        resources = Resources(nodes=2, procs_per_node=procs)
        future = trainer.train(modules.RankExchange, 10, save_path=save_dir, save_with_id=True, resources=resources)
        model = future.result(timeout=self.timeout)
        world = 2 * procs
        assert (model.rank, model.world_size) == (0, world), "the result must be rank 0's model"
        assert model.values == [10 + rank for rank in range(world)], "every rank must take part"
        assert future.get_info().ranks == world
        last = world - 1
        assert f"rank {last} of {world}" in list(future.logs(rank=last))
        assert f"rank 0 of {world}" not in list(future.logs(rank=last)), "logs(rank=k) must be rank k's own"

    # -- capabilities -----------------------------------------------------------------------

    def test_capabilities_name_every_capability_with_a_support_level(self, trainer: ModelTrainerBase) -> None:
        levels = trainer.capabilities()
        assert list(levels) == list(CAPABILITY_NAMES), "capabilities() must give every name, in order"
        assert all(isinstance(level, SupportLevel) for level in levels.values()), levels

    def test_an_undeclared_capability_is_refused_before_anything_exists(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        lacking = [name for name, level in trainer.capabilities().items() if not level]
        if not lacking:
            pytest.skip("the trainer declares every capability")
        before = {info.id for info in trainer.list_trainings()}
        path = os.path.join(save_dir, "refused")
        with pytest.raises(UnsupportedCapabilityError) as caught:
            trainer.train(Quick, 1, save_path=path, capabilities={name: "native" for name in lacking})
        assert [item.name for item in caught.value.unsupported] == lacking
        assert {info.id for info in trainer.list_trainings()} == before, "a refused training was recorded"
        self._assert_no_model(path)

    # -- storage and checkpoints ------------------------------------------------------------

    def test_remote_storage_saves_to_a_url_and_loads_back_from_it(
        self, trainer: ModelTrainerBase, make_manager: Callable[[], TrainerManager], storage_url: str
    ) -> None:
        if not trainer.capabilities()["remote_storage"]:
            pytest.skip("the trainer does not declare remote_storage")
        future = trainer.train(Quick, 31, save_path=storage_url, save_with_id=True)
        assert future.save_path == f"{storage_url.rstrip('/')}/{future.id}"
        assert future.result(timeout=self.timeout).value == 31
        # The URL holds a complete model: anyone loads it from there, with nothing else.
        assert trainerkit.load(future.save_path, cache=False).value == 31
        if self.survives_restart:
            again = make_manager().get_model_future(future.id)
            assert again.result(timeout=self.timeout).value == 31
        # An occupied URL is refused at train() time, and nothing is recorded.
        before = {info.id for info in trainer.list_trainings()}
        with pytest.raises(FileExistsError, match=re.escape(future.save_path)):
            trainer.train(Quick, 1, save_path=future.save_path)
        assert {info.id for info in trainer.list_trainings()} == before

    def test_checkpoints_are_listed_loaded_resumed_from_and_deleted(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        if not trainer.capabilities()["checkpoints"]:
            pytest.skip("the trainer does not declare checkpoints")
        first = trainer.train(Checkpointing, 2, save_path=save_dir, save_with_id=True)
        model = first.result(timeout=self.timeout)
        assert (model.started_at, model.epoch) == (0, 2)
        saved = first.checkpoints()
        assert [info.name for info in saved] == ["checkpoint-000001", "checkpoint-000002"]
        assert all(info.time.tzinfo is not None for info in saved)
        assert saved[0].time <= saved[1].time
        assert trainerkit.load(saved[0].path).epoch == 1
        # A new training resumes from the newest checkpoint of the first one.
        second = trainer.train(Checkpointing, 3, save_path=save_dir, save_with_id=True, resume_from=first.id)
        resumed = second.result(timeout=self.timeout)
        assert (resumed.started_at, resumed.epoch) == (2, 3)
        assert [info.name for info in second.checkpoints()] == ["checkpoint-000001"]
        # Deleting a training deletes its checkpoints, unless asked to keep them.
        trainer.delete_training(first.id)
        trainer.delete_training(second.id, keep_checkpoints=True)
        assert trainer.list_checkpoints(first.id) == []
        assert [info.name for info in trainer.list_checkpoints(second.id)] == ["checkpoint-000001"]
        with pytest.raises(trainerkit.TrainingNotFoundError, match=first.id):
            trainer.train(Checkpointing, 1, save_path=save_dir, save_with_id=True, resume_from=first.id)

    def test_retries_start_a_crashed_attempt_again_with_the_same_id(
        self, trainer: ModelTrainerBase, gate_dir: str, save_dir: str
    ) -> None:
        if not trainer.capabilities()["retries"]:
            pytest.skip("the trainer does not declare retries")
        os.makedirs(gate_dir, exist_ok=True)
        marker = os.path.join(gate_dir, f"crashed-{os.getpid()}-{id(trainer)}")
        future = trainer.train(CrashesOnce, marker, 8, save_path=save_dir, save_with_id=True)
        assert future.result(timeout=self.timeout).value == 8
        assert os.path.exists(marker), "the first attempt did not run"
        assert future.get_info().attempt == 2

    def test_declared_capabilities_are_what_the_backend_really_does(self, trainer: ModelTrainerBase) -> None:
        # The behaviour tests above run for what the class attributes claim;
        # a declared capability must be one of those claims.
        levels = trainer.capabilities()
        claims = {"cancel": "cancels_running", "progress": "reports_progress", "logs": "keeps_logs"}
        for name, attribute in claims.items():
            if levels[name]:
                assert getattr(self, attribute), (
                    f"the trainer declares {name} ({levels[name].describe()}) but "
                    f"{type(self).__name__}.{attribute} is False"
                )

    def test_a_disabled_capability_is_turned_off_for_that_training(
        self, trainer: ModelTrainerBase, save_dir: str
    ) -> None:
        levels = trainer.capabilities()
        can = [name for name in ("logs", "progress") if SupportLevel.CAN_DISABLE in levels[name]]
        if not can:
            pytest.skip("the trainer cannot turn logs or progress off per training")
        requests = {name: "disable" for name in can}
        future = trainer.train(ChattyProgress, save_path=save_dir, save_with_id=True, capabilities=requests)
        future.result(timeout=self.timeout)
        info = future.get_info()
        assert info.capabilities == {name: None for name in can}
        if "logs" in can:
            printed = [line for line in future.logs() if line.startswith(modules.LINE_PREFIX)]
            assert printed == [], f"logs were disabled, yet kept: {printed}"
        if "progress" in can:
            assert info.progress is None, f"progress was disabled, yet recorded: {info.progress}"

    def test_served_capabilities_and_parameters_are_recorded(
        self, trainer: ModelTrainerBase, make_manager: Callable[[], TrainerManager], save_dir: str
    ) -> None:
        levels = trainer.capabilities()
        requests = {name: "optional" for name in CAPABILITY_NAMES}
        future = trainer.train(Quick, 7, save_path=save_dir, save_with_id=True, capabilities=requests)
        future.result(timeout=self.timeout)
        expected = {name: levels[name].served_level for name in CAPABILITY_NAMES}
        info = future.get_info()
        assert info.capabilities == expected
        assert info.parameters == trainer.training_parameters(Quick, 7) == {"value": 7}
        if self.survives_restart:
            again = make_manager().get_model_future(future.id).get_info()
            assert again.capabilities == expected and again.parameters == {"value": 7}

    @pytest.mark.parametrize("level", ["native", "best_effort", "optional", "disable"])
    def test_every_capability_at_every_level_is_served_or_refused_as_declared(
        self, trainer: ModelTrainerBase, save_dir: str, level: str
    ) -> None:
        declared = trainer.capabilities()
        met, unmet = {}, []
        for name, support in declared.items():
            try:
                served = serve("probe", {name: RequestLevel.parse(level)}, {name: support})
            except UnsupportedCapabilityError:
                unmet.append(name)
            else:
                met[name] = served.levels[name]
        for name in unmet:
            with pytest.raises(UnsupportedCapabilityError) as caught:
                trainer.train(Quick, 1, save_path=save_dir, save_with_id=True, capabilities={name: level})
            assert [item.name for item in caught.value.unsupported] == [name]
        future = trainer.train(Quick, 2, save_path=save_dir, save_with_id=True, capabilities={n: level for n in met})
        assert future.result(timeout=self.timeout).value == 2
        assert future.get_info().capabilities == met

    # -- resources ---------------------------------------------------------------------------

    def test_multi_process_runs_ranks_that_meet_or_is_refused(self, trainer: ModelTrainerBase, save_dir: str) -> None:
        # Declared: Resources(procs_per_node=2) runs two ranks with the torchrun
        # environment that meet at MASTER_ADDR:MASTER_PORT (RankExchange swaps
        # values over TCP), rank 0's model is the result and each rank has its
        # own logs. Not declared: the request is refused before anything exists.
        two = trainerkit.Resources(procs_per_node=2)
        if not trainer.capabilities()["multi_process"]:
            before = {info.id for info in trainer.list_trainings()}
            with pytest.raises(UnsupportedCapabilityError) as caught:
                trainer.train(modules.RankExchange, 5, save_path=save_dir, save_with_id=True, resources=two)
            assert [item.name for item in caught.value.unsupported] == ["multi_process"]
            assert {info.id for info in trainer.list_trainings()} == before
            return
        future = trainer.train(modules.RankExchange, 5, save_path=save_dir, save_with_id=True, resources=two)
        model = future.result(timeout=self.timeout)
        assert (model.rank, model.world_size, model.values) == (0, 2, [5, 6]), "the ranks did not meet"
        assert future.get_info().ranks == 2
        if self.keeps_logs:
            assert "rank 1 of 2" in list(future.logs(rank=1))
            assert "rank 0 of 2" in list(future.logs())
        with pytest.raises(ValueError, match="no rank 2"):
            future.logs(rank=2)
