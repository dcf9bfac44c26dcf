"""The example third-party backend, examples/trainerkit-pool (type POOL): the full
conformance suite through its entry point, and the reuse of worker processes that
is its reason to exist."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from typing import Any, Optional

import pytest

import trainerkit
from trainerkit.testing import BackendConformance
from tests.conftest import REPO_ROOT

EXAMPLE = os.path.join(REPO_ROOT, "examples", "trainerkit-pool")


@pytest.fixture(scope="session")
def pool_site(tmp_path_factory) -> Optional[str]:
    """Where the example distribution is installed for these tests: nowhere new when
    it is installed already, else a real ``pip install --target`` of it, so that the
    rest of the suite (the CLI's documented sessions list the types available) runs
    without a third-party type."""
    try:
        importlib.metadata.distribution("trainerkit-pool")
        return None
    except importlib.metadata.PackageNotFoundError:
        pass
    target = str(tmp_path_factory.mktemp("pool-site"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, EXAMPLE],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install {EXAMPLE}:\n{result.stdout}{result.stderr}", pytrace=False)
    return target


@pytest.fixture(autouse=True)
def pool_installed(pool_site, monkeypatch) -> None:
    """The example on sys.path (and on the workers' PYTHONPATH) for each test here."""
    if pool_site is not None:
        monkeypatch.syspath_prepend(pool_site)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (pool_site, os.environ.get("PYTHONPATH")))))
    require_pool_backend()


def require_pool_backend() -> None:
    """Fail (never skip) unless trainerkit-pool is installed with its entry point."""
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="trainerkit.trainers")}
    assert names.get("POOL") == "trainerkit_pool:PoolTrainer", f"no entry point POOL in {names}"
    import trainerkit_pool  # noqa: F401 - importable, not only registered


def test_the_pool_backend_is_installed_with_its_entry_point():
    require_pool_backend()


class TestPoolConformance(BackendConformance):
    needs_save_path = True  # a model comes back from a worker process only through save_path

    @pytest.fixture
    def trainer_config(self, tmp_path) -> dict[str, Any]:
        require_pool_backend()
        return {"type": "POOL", "config": {"max_workers": 1, "state_dir": str(tmp_path / "state")}}


class Pid(trainerkit.ModuleBase):
    """Remembers the pid of the process that trained it (importable by the workers)."""

    def __init__(self, pid: int, seed: int) -> None:
        self.pid = pid
        self.seed = seed

    @classmethod
    def train(cls, seed: int) -> "Pid":
        print(f"trained in pid {os.getpid()}", flush=True)
        return cls(os.getpid(), seed)


class Crash(trainerkit.ModuleBase):
    """Takes its worker process down, as a segfault or the out-of-memory killer would."""

    @classmethod
    def train(cls) -> "Crash":
        os._exit(3)


@pytest.fixture
def pool_trainer(manager_factory, tmp_path):
    """``pool_trainer(**config)``: a POOL trainer with that config."""
    require_pool_backend()

    def build(**config: Any) -> Any:
        config.setdefault("state_dir", str(tmp_path / "state"))
        manager = manager_factory({"model_management": {"trainers": {"pool": {"type": "POOL", "config": config}}}})
        return manager.get_trainer("pool")

    return build


def train_pids(trainer: Any, tmp_path: Any, count: int) -> list:
    futures = [trainer.train(Pid, seed, save_path=str(tmp_path / "models"), save_with_id=True)
               for seed in range(count)]
    models = [future.result(timeout=60) for future in futures]
    assert [model.seed for model in models] == list(range(count))
    for future, model in zip(futures, models):  # each training's output is in its own log
        assert f"trained in pid {model.pid}" in list(future.logs())
    return [model.pid for model in models]


def test_a_sweep_reuses_the_worker_processes(pool_trainer, tmp_path):
    pids = train_pids(pool_trainer(max_workers=2), tmp_path, 6)
    assert os.getpid() not in pids, "trainings must run outside the caller"
    assert len(set(pids)) <= 2, f"6 trainings with max_workers 2 ran in {len(set(pids))} processes: {pids}"


def test_max_tasks_per_child_recycles_the_workers(pool_trainer, tmp_path):
    # One worker, replaced after every 2 trainings: 6 trainings in 3 processes. (Handed to a
    # ProcessPoolExecutor all at once, this backlog would hang on CPython's gh-115634.)
    pids = train_pids(pool_trainer(max_workers=1, max_tasks_per_child=2), tmp_path, 6)
    assert [pids[i] == pids[i + 1] for i in range(5)] == [True, False, True, False, True], pids
    assert len(set(pids)) == 3, pids


def test_a_worker_crash_errors_its_training_and_the_pool_is_rebuilt(pool_trainer, tmp_path):
    trainer = pool_trainer(max_workers=1)
    crashed = trainer.train(Crash, save_path=str(tmp_path / "models"), save_with_id=True)
    queued = trainer.train(Pid, 7, save_path=str(tmp_path / "models"), save_with_id=True)
    with pytest.raises(trainerkit.TrainingCrashedError, match="ended abruptly"):
        crashed.result(timeout=60)
    assert crashed.get_info().errors[0].type == "trainerkit.errors.TrainingCrashedError"
    assert queued.result(timeout=60).seed == 7  # it waited, then ran in the new pool
