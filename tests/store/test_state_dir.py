"""Where LOCAL keeps its records: the state directory and how it is chosen."""

from __future__ import annotations

import os

import pytest

import trainerkit
from trainerkit.errors import ConfigError
from trainerkit.store.sqlite import SQLiteTrainingStore
from trainerkit.store.state_dir import DATABASE_FILE, MEMORY_STATE_DIR, open_record_store, resolve_state_dir
from trainerkit.store import MemoryTrainingStore
from tests.training_modules import Adder

WAIT = 30


def local_manager(**config):
    return trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"default": {"type": "LOCAL", "config": config}}}}
    )


@pytest.fixture
def environment(monkeypatch):
    """Sets exactly the given variables among those that choose the state dir."""

    def set_only(**variables):
        for name in ("TRAINERKIT_STATE_DIR", "XDG_STATE_HOME", "HOME"):
            if name in variables:
                monkeypatch.setenv(name, variables[name])
            else:
                monkeypatch.delenv(name, raising=False)

    return set_only


def test_the_config_key_wins_over_the_environment(environment):
    environment(TRAINERKIT_STATE_DIR="/env/state", XDG_STATE_HOME="/xdg", HOME="/home/u")
    assert resolve_state_dir("/configured") == "/configured"


def test_the_environment_variable_wins_over_xdg_and_home(environment):
    environment(TRAINERKIT_STATE_DIR="/env/state", XDG_STATE_HOME="/xdg", HOME="/home/u")
    assert resolve_state_dir(None) == "/env/state"


def test_xdg_state_home_comes_next(environment):
    environment(XDG_STATE_HOME="/xdg", HOME="/home/u")
    assert resolve_state_dir(None) == "/xdg/trainerkit"


def test_a_relative_xdg_state_home_is_ignored_as_the_xdg_spec_says(environment):
    environment(XDG_STATE_HOME="relative/state", HOME="/home/u")
    assert resolve_state_dir(None) == "/home/u/.local/state/trainerkit"


def test_the_default_is_under_the_home_directory(environment):
    environment(HOME="/home/u")
    assert resolve_state_dir(None) == "/home/u/.local/state/trainerkit"


def test_relative_and_tilde_paths_become_absolute(tmp_path, monkeypatch, environment):
    monkeypatch.chdir(tmp_path)
    environment(HOME="/home/u")
    assert resolve_state_dir("records") == str(tmp_path / "records")
    assert resolve_state_dir("~/records") == "/home/u/records"


def test_memory_opts_out_of_durable_records(environment):
    environment()
    assert resolve_state_dir(MEMORY_STATE_DIR) == MEMORY_STATE_DIR
    environment(TRAINERKIT_STATE_DIR=MEMORY_STATE_DIR)
    assert resolve_state_dir(None) == MEMORY_STATE_DIR
    assert isinstance(open_record_store(MEMORY_STATE_DIR), MemoryTrainingStore)


def test_local_trainers_keep_records_in_the_state_dir_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINERKIT_STATE_DIR", str(tmp_path / "from-env"))
    with local_manager() as manager:
        trainer = manager.get_trainer("default")
        assert isinstance(trainer._store, SQLiteTrainingStore)
        trainer.train(Adder, 1).result(timeout=WAIT)
    assert (tmp_path / "from-env" / DATABASE_FILE).is_file()


def test_the_state_dir_config_key_is_used(tmp_path):
    with local_manager(state_dir=str(tmp_path / "configured")) as manager:
        assert manager.get_trainer("default")._store.path == str(tmp_path / "configured" / DATABASE_FILE)


def test_the_state_dir_key_can_be_set_by_environment_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_STATE_DIR", str(tmp_path / "override"))
    with local_manager() as manager:
        assert manager.get_trainer("default")._store.path == str(tmp_path / "override" / DATABASE_FILE)


def test_a_memory_state_dir_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINERKIT_STATE_DIR", str(tmp_path / "unused"))
    with local_manager(state_dir=MEMORY_STATE_DIR) as manager:
        trainer = manager.get_trainer("default")
        trainer.train(Adder, 1).result(timeout=WAIT)
        assert isinstance(trainer._store, MemoryTrainingStore)
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("bad", ["", "   ", ["a", "b"]])
def test_an_empty_or_non_text_state_dir_is_a_config_error_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"model_management\.trainers\.default\.config\.state_dir"):
        local_manager(state_dir=bad)


def test_retention_delete_models_must_be_a_boolean():
    with pytest.raises(ConfigError, match=r"config\.retention_delete_models: expected a boolean"):
        local_manager(retention_delete_models="yes")


def test_trainers_of_one_process_share_the_file_and_list_only_their_own(tmp_path):
    state_dir = str(tmp_path / "shared")
    trainers = {name: {"type": "LOCAL", "config": {"state_dir": state_dir}} for name in ("alpha", "beta")}
    with trainerkit.TrainerManager.from_dict({"model_management": {"trainers": trainers}}) as manager:
        alpha, beta = manager.get_trainer("alpha"), manager.get_trainer("beta")
        assert alpha._store.path == beta._store.path == os.path.join(state_dir, DATABASE_FILE)
        first = alpha.train(Adder, 1)
        second = beta.train(Adder, 2)
        first.result(timeout=WAIT)
        second.result(timeout=WAIT)
        assert [info.id for info in alpha.list_trainings()] == [first.id]
        assert [info.id for info in beta.list_trainings()] == [second.id]
        assert manager.get_model_future(second.id).get_info().trainer_name == "beta"
