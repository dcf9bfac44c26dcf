"""How ``trainerkit train`` reads training arguments: ``--arg KEY=VALUE``
values are YAML 1.2 core scalars, ``--args-file`` a JSON or YAML mapping."""

from __future__ import annotations

import math
import re

import pytest

from trainerkit.cli.arguments import load_args_file, parse_arg_options, parse_value, training_arguments
from trainerkit.cli.exit_codes import CommandError, ExitCode


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", 3),
        ("-12", -12),
        ("010", 10),  # YAML 1.1 would read octal 8
        ("0x1F", 31),
        ("0o17", 15),
        ("0.5", 0.5),
        ("1e-3", 0.001),  # YAML 1.1 (PyYAML) would read the string '1e-3'
        ("-2.5E+2", -250.0),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("no", "no"),  # YAML 1.1 would read False
        ("on", "on"),
        ("1:30", "1:30"),  # YAML 1.1 would read 90 (sexagesimal)
        ("2024-01-31", "2024-01-31"),  # YAML 1.1 would read a date
        ("hello: world", "hello: world"),
        ("a # not a comment", "a # not a comment"),
        ("/data/train.csv", "/data/train.csv"),
        ("'7'", "7"),
        ('"yes"', "yes"),
        ("[64, 32, 1e-3, no]", [64, 32, 0.001, "no"]),
        ("{layers: 2, dropout: 0.1}", {"layers": 2, "dropout": 0.1}),
    ],
)
def test_values_follow_the_yaml_1_2_core_schema(text, expected):
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_infinity_and_nan_are_floats():
    assert parse_value(".inf") == math.inf
    assert parse_value("-.Inf") == -math.inf
    assert math.isnan(parse_value(".nan"))


def test_blank_but_not_empty_text_stays_text():
    assert parse_value("  ") == "  "


def test_explicit_yaml_tags_are_checked():
    assert parse_value("[!!float 3]") == [3.0]
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_value("[!!int abc]")


def test_options_become_keyword_arguments():
    assert parse_arg_options(["epochs=3", "name=a=b", "rate=1e-2"]) == {
        "epochs": 3, "name": "a=b", "rate": 0.01
    }


@pytest.mark.parametrize(
    "option, message",
    [
        ("epochs", "expected KEY=VALUE"),
        ("=3", "'' is not an argument name"),
        ("my-arg=3", "'my-arg' is not an argument name"),
        ("sizes=[1, 2", "the value is not valid YAML"),
    ],
)
def test_malformed_options_are_usage_errors(option, message):
    with pytest.raises(CommandError, match=message) as caught:
        parse_arg_options([option])
    assert caught.value.code is ExitCode.USAGE


def test_the_same_option_twice_is_refused():
    with pytest.raises(CommandError, match="--arg epochs= is given twice"):
        parse_arg_options(["epochs=1", "epochs=2"])


def test_yaml_args_file_uses_the_core_schema_too(tmp_path):
    path = tmp_path / "args.yml"
    path.write_text("rate: 1e-3\nflag: no\nwhen: 2024-01-31\n")
    assert load_args_file(str(path)) == {"rate": 0.001, "flag": "no", "when": "2024-01-31"}


def test_json_args_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text('{"epochs": 3, "data_path": null}')
    assert load_args_file(str(path)) == {"epochs": 3, "data_path": None}


def test_empty_yaml_args_file_means_no_arguments(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("# nothing yet\n")
    assert load_args_file(str(path)) == {}


def test_arg_overrides_the_args_file(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("epochs: 3\nseed: 1\n")
    assert training_arguments(str(path), ["epochs=9"]) == {"epochs": 9, "seed": 1}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("args.txt", "epochs: 3", "unknown file type '.txt'; use a .json, .yaml or .yml file"),
        ("args.json", "{epochs: 3}", "not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"),
        ("args.yaml", "epochs: [3", "not valid YAML"),
        ("args.yaml", "- 1\n- 2\n", "expected a mapping of argument names to values, got a list"),
        ("args.yaml", "learning-rate: 3\n", "'learning-rate' is not an argument name"),
        ("args.yaml", "1: 3\n", "1 is not an argument name"),
    ],
)
def test_bad_args_files_are_usage_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CommandError, match=re.escape(message)) as caught:
        load_args_file(str(path))
    assert caught.value.code is ExitCode.USAGE
    assert str(path) in caught.value.message


def test_missing_args_file_is_a_usage_error(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        load_args_file(str(tmp_path / "absent.yaml"))
