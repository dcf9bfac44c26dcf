"""trainerkit reads YAML one way everywhere: the YAML 1.2 core schema, in
config files, environment overrides (booleans), ``--args-file`` and ``--arg``."""

from __future__ import annotations

import math
import re

import pytest

import trainerkit
import yaml

from trainerkit.cli.arguments import load_args_file, parse_arg_options
from trainerkit.config import load_trainer_specs, load_yaml_specs
from trainerkit.errors import ConfigError
from trainerkit.yaml_core import load_yaml, parse_plain_scalar

# -- the loader -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("yes", "yes"),
        ("No", "No"),
        ("on", "on"),
        ("OFF", "OFF"),
        ("y", "y"),
        ("n", "n"),
        ("null", None),
        ("~", None),
        ("", None),
        ("010", 10),
        ("0o17", 15),
        ("0x1F", 31),
        ("-3", -3),
        ("1e-3", 0.001),
        ("1.", 1.0),
        ("1:30", "1:30"),
        ("2024-01-31", "2024-01-31"),
        ("1_000", "1_000"),
        ("0b101", "0b101"),
    ],
)
def test_plain_values_follow_the_core_schema(text, expected):
    value = load_yaml(f"key: {text}\n")["key"]
    assert value == expected and type(value) is type(expected)


def test_infinities_and_nan_are_floats():
    loaded = load_yaml("[.inf, -.Inf, .NaN]")
    assert loaded[:2] == [math.inf, -math.inf] and math.isnan(loaded[2])


def test_keys_follow_it_too():
    assert load_yaml("on: push\nno: 1\n") == {"on": "push", "no": 1}


def test_explicit_tags_are_checked_against_the_same_rules():
    assert load_yaml("[!!float 3, !!str 3, !!int 0x10]") == [3.0, "3", 16]
    for text in ("!!int abc", "!!bool yes", "!!float 1:30", "!!null nothing"):
        with pytest.raises(yaml.YAMLError, match="YAML 1.2 core schema"):
            load_yaml(text)


def test_anchors_and_merge_keys_work():
    assert load_yaml("base: &b {x: 1}\nother: {<<: *b, y: 2}\n")["other"] == {"x": 1, "y": 2}


@pytest.mark.parametrize("text", ["a: b", "x # y", "- item", "&anchor", "@home", "  "])
def test_a_plain_scalar_that_is_not_typed_is_kept_verbatim(text):
    assert parse_plain_scalar(text) == text


def test_a_plain_scalar_is_typed_ignoring_surrounding_blanks():
    assert parse_plain_scalar(" 3 ") == 3
    assert parse_plain_scalar("false") is False
    assert parse_plain_scalar("") is None


# -- one rule everywhere ----------------------------------------------------------------

ENV_STATE_DIR = "MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_STATE_DIR"
ENV_INTERRUPT = "MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_INTERRUPT_ON_CANCEL"
YAML_1_1_BOOLEANS = ["no", "yes", "on", "off"]


def _config_file(tmp_path, key, text):
    path = tmp_path / "trainers.yml"
    path.write_text(f"model_management:\n  trainers:\n    default:\n      config:\n        {key}: {text}\n")
    return path


@pytest.mark.parametrize("word", YAML_1_1_BOOLEANS)
def test_yaml_1_1_boolean_words_are_text_in_a_config_file(tmp_path, word):
    specs = load_yaml_specs(_config_file(tmp_path, "state_dir", word))
    assert specs["default"].config.state_dir == word


@pytest.mark.parametrize("word", YAML_1_1_BOOLEANS)
def test_yaml_1_1_boolean_words_are_text_in_an_environment_override(monkeypatch, word):
    monkeypatch.setenv(ENV_STATE_DIR, word)
    assert load_trainer_specs({})["default"].config.state_dir == word


@pytest.mark.parametrize("word", YAML_1_1_BOOLEANS)
def test_yaml_1_1_boolean_words_are_text_in_arg_and_args_file(tmp_path, word):
    assert parse_arg_options([f"flag={word}"]) == {"flag": word}
    path = tmp_path / "args.yaml"
    path.write_text(f"flag: {word}\n")
    assert load_args_file(str(path)) == {"flag": word}


@pytest.mark.parametrize("word", YAML_1_1_BOOLEANS)
def test_a_boolean_key_given_such_a_word_is_refused_with_a_hint(tmp_path, monkeypatch, word):
    hint = re.escape("write true or false (trainerkit reads YAML 1.2, where yes/no/on/off are text)")
    with pytest.raises(ConfigError, match=rf"interrupt_on_cancel: expected a boolean .*got '{word}' \(str\); " + hint):
        load_yaml_specs(_config_file(tmp_path, "interrupt_on_cancel", word))
    monkeypatch.setenv(ENV_INTERRUPT, word)
    with pytest.raises(ConfigError, match=rf"got '{word}' \(str\); " + hint):
        load_trainer_specs({})


@pytest.mark.parametrize("text, expected", [("true", True), ("false", False), ("False", False)])
def test_true_and_false_are_booleans_everywhere(tmp_path, monkeypatch, text, expected):
    specs = load_yaml_specs(_config_file(tmp_path, "interrupt_on_cancel", text))
    assert specs["default"].config.interrupt_on_cancel is expected
    assert parse_arg_options([f"flag={text}"]) == {"flag": expected}
    monkeypatch.setenv(ENV_INTERRUPT, text)
    assert load_trainer_specs({})["default"].config.interrupt_on_cancel is expected


def test_a_key_written_twice_is_refused_with_both_line_numbers(tmp_path):
    path = tmp_path / "trainers.yml"
    path.write_text(
        "model_management:\n  trainers:\n    a:\n      type: LOCAL\n      config:\n"
        "        max_workers: 1\n        max_workers: 2\n"
    )
    with pytest.raises(trainerkit.ConfigError, match=r"'max_workers' is written twice, on line 6 and on line 7"):
        trainerkit.TrainerManager.from_yaml(str(path))


def test_two_trainers_with_one_name_are_refused(tmp_path):
    path = tmp_path / "trainers.yml"
    path.write_text("model_management:\n  trainers:\n    a: {type: LOCAL}\n    a: {type: SUBPROCESS}\n")
    with pytest.raises(trainerkit.ConfigError, match=r"'a' is written twice, on line 3 and on line 4"):
        trainerkit.TrainerManager.from_yaml(str(path))


def test_a_key_brought_in_by_a_merge_may_be_overridden():
    assert load_yaml("base: &b {x: 1, y: 1}\nm:\n  <<: *b\n  x: 2\n")["m"] == {"x": 2, "y": 1}
