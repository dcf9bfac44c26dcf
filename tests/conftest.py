"""Shared test setup: every test gets its own state dir, and no test writes
into the real home directory."""

from __future__ import annotations

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _isolated_state_dir(tmp_path_factory, monkeypatch):
    state_dir = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("TRAINERKIT_STATE_DIR", str(state_dir))
    # Models loaded from URLs are cached here, not in the real ~/.cache.
    monkeypatch.setenv("TRAINERKIT_CACHE_DIR", str(state_dir / "cache"))
    # Child processes (subprocess trainers, CLI runs) must import the same code.
    existing = os.environ.get("PYTHONPATH", "")
    if REPO_ROOT not in existing.split(os.pathsep):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (REPO_ROOT, existing) if p))
    yield state_dir


@pytest.fixture
def manager_factory():
    """Build TrainerManagers from dicts and close them after the test."""
    import trainerkit

    managers = []

    def build(config=None):
        manager = trainerkit.TrainerManager.from_dict(config) if config is not None else trainerkit.TrainerManager()
        managers.append(manager)
        return manager

    yield build
    for manager in managers:
        manager.close(wait=False)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Trainer types registered during the test (by code or import_class:)
    are forgotten after it."""
    from trainerkit import registry

    monkeypatch.setattr(registry, "_registered", dict(registry._registered))


@pytest.fixture
def python_executable():
    return sys.executable
