"""Configuration: defaults, merging, environment overrides and validation errors."""

from __future__ import annotations

import datetime
import glob
import os

import pytest

import trainerkit
from trainerkit.config import load_trainer_specs
from trainerkit.errors import ConfigError, UnknownTrainerError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trainers(**entries):
    return {"model_management": {"trainers": entries}}


def test_no_config_gives_one_local_trainer_named_default():
    manager = trainerkit.TrainerManager()
    assert manager.trainer_names == ["default"]
    spec = manager.trainer_spec("default")
    assert spec.type == "LOCAL"
    assert spec.config.max_workers == 1


def test_user_file_is_merged_over_the_defaults(tmp_path):
    path = tmp_path / "trainers.yaml"
    path.write_text(
        "model_management:\n  trainers:\n    fast:\n      type: LOCAL\n      config: {max_workers: 3}\n"
    )
    manager = trainerkit.TrainerManager.from_yaml(path)
    assert manager.trainer_names == ["default", "fast"]
    assert manager.trainer_spec("fast").config.max_workers == 3


def test_user_values_override_default_trainer_keys_one_by_one():
    specs = load_trainer_specs(trainers(default={"config": {"retention_duration": "7d12h"}}))
    assert specs["default"].type == "LOCAL"
    assert specs["default"].config.retention_duration == datetime.timedelta(days=7, hours=12)


def test_environment_overrides_a_key_not_written_in_any_file(monkeypatch):
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_MAX_WORKERS", "4")
    assert trainerkit.TrainerManager().trainer_spec("default").config.max_workers == 4


def test_environment_overrides_a_value_from_the_file(monkeypatch, tmp_path):
    path = tmp_path / "t.yml"
    path.write_text("model_management:\n  trainers:\n    gpu-box:\n      type: LOCAL\n      config: {max_workers: 2}\n")
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_GPU_BOX_CONFIG_MAX_WORKERS", "6")
    assert trainerkit.TrainerManager.from_yaml(path).trainer_spec("gpu-box").config.max_workers == 6


def test_a_bad_environment_value_is_reported_with_its_key_path(monkeypatch):
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_MAX_WORKERS", "many")
    with pytest.raises(ConfigError, match=r"trainers\.default\.config\.max_workers: expected an integer"):
        trainerkit.TrainerManager()


def test_unknown_key_names_full_path_given_value_accepted_keys_and_a_suggestion():
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(trainers(cluster={"type": "LOCAL", "config": {"max_wokers": 3}}))
    message = str(caught.value)
    assert "model_management.trainers.cluster.config.max_wokers" in message
    assert "3 (int)" in message
    assert "max_workers" in message and "retention_duration" in message
    assert "did you mean 'max_workers'?" in message


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"max_workers": "two"}, "max_workers: expected an integer, got 'two' (str)"),
        ({"max_workers": 0}, "max_workers: must be >= 1, got 0"),
        ({"max_workers": True}, "max_workers: expected an integer"),
        ({"retention_duration": "soon"}, "retention_duration: 'soon' is not a duration"),
        ({"interrupt_on_cancel": "yes"}, "interrupt_on_cancel: expected a boolean"),
    ],
)
def test_wrong_types_and_values_name_the_key_and_what_is_accepted(config, fragment):
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(trainers(default={"config": config}))
    assert fragment in str(caught.value)
    assert "model_management.trainers.default.config." in str(caught.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(
            trainers(
                a={"type": "LOCAL", "config": {"max_workers": -1}},
                b={"type": "NOPE"},
                c={"type": "LOCAL", "confg": {}},
            )
        )
    assert len(caught.value.problems) == 3


def test_unknown_type_lists_the_available_types():
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(trainers(x={"type": "LOKAL"}))
    message = str(caught.value)
    assert "unknown trainer type 'LOKAL'" in message
    assert "LOCAL" in message and "did you mean 'LOCAL'" in message


def test_unknown_top_level_and_trainer_keys_are_refused():
    with pytest.raises(ConfigError, match="model_managment: unknown top-level key.*did you mean 'model_management'"):
        trainerkit.TrainerManager.from_dict({"model_managment": {}})
    with pytest.raises(ConfigError, match=r"trainers\.x\.typ: unknown key.*did you mean 'type'"):
        trainerkit.TrainerManager.from_dict(trainers(x={"typ": "LOCAL"}))


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("model_management: [1, 2]", "expected a mapping"),
        ("model_management:\n  trainers: [a]", "expected a mapping of trainer names"),
        ("- just\n- a list", "must be a mapping"),
        ("model_management: {trainers: {x: LOCAL}}", "expected a mapping with keys type and config"),
        ("key: [unclosed", "is not valid YAML"),
    ],
)
def test_malformed_files_get_one_clear_error(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        trainerkit.TrainerManager.from_yaml(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        trainerkit.TrainerManager.from_yaml(tmp_path / "nope.yaml")


def test_an_empty_file_means_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert trainerkit.TrainerManager.from_yaml(path).trainer_names == ["default"]


def test_a_trainer_is_built_once_and_reused(manager_factory):
    manager = manager_factory()
    assert manager.get_trainer("default") is manager.get_trainer("default")


def test_asking_for_an_unconfigured_trainer_suggests_a_close_name(manager_factory):
    manager = manager_factory()
    with pytest.raises(UnknownTrainerError, match="did you mean 'default'"):
        manager.get_trainer("defualt")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "config", "*.yaml"))))
def test_every_example_config_file_loads(path):
    if "kubernetes" in os.path.basename(path):
        pytest.importorskip("kubernetes")
    if os.path.basename(path).startswith("rbac"):
        pytest.skip("a Kubernetes manifest, not a trainers config")
    manager = trainerkit.TrainerManager.from_yaml(path)
    assert "default" in manager.trainer_names and len(manager.trainer_names) >= 1


def test_there_are_example_configs():
    assert glob.glob(os.path.join(REPO, "config", "*.yaml"))


def test_trainer_names_that_yaml_reads_as_numbers_or_null_are_config_errors(tmp_path):
    path = tmp_path / "trainers.yml"
    path.write_text("model_management:\n  trainers:\n    123:\n      type: LOCAL\n    ~:\n      type: LOCAL\n")
    with pytest.raises(trainerkit.ConfigError) as caught:
        trainerkit.TrainerManager.from_yaml(str(path))
    message = str(caught.value)
    assert "the key 123 is a number, not text" in message
    assert "the key None is null" in message and "quote it" in message


def test_import_class_whose_type_differs_from_type_is_refused_naming_both(isolated_registry):
    config = {"model_management": {"trainers": {"a": {
        "type": "SUBPROCESS", "import_class": "trainerkit.trainers.local.LocalModelTrainer"}}}}
    with pytest.raises(trainerkit.ConfigError, match=r"type 'SUBPROCESS' does not match import_class .*LocalModelTrainer.*'LOCAL'"):
        trainerkit.TrainerManager.from_dict(config)


@pytest.mark.parametrize("value", ["99999999999999999d", 1e300, "1e400"])
def test_a_duration_too_long_to_represent_is_a_config_error_not_an_overflow(value):
    config = {"model_management": {"trainers": {"a": {"type": "LOCAL", "config": {"retention_duration": value}}}}}
    with pytest.raises(trainerkit.ConfigError, match="retention_duration"):
        trainerkit.TrainerManager.from_dict(config)


def test_a_list_limit_beyond_what_a_store_takes_is_a_value_error(manager_factory):
    trainer = manager_factory().get_trainer("default")
    with pytest.raises(ValueError, match="limit must be at most"):
        trainer.list_trainings(limit=10**23)
