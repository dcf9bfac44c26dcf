"""Training ids: DNS-1123 labels that carry the trainer name (spec: Training ids)."""

from __future__ import annotations

import os
import re
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import trainerkit
from trainerkit import ids
from trainerkit.errors import ConfigError, InvalidTrainingIdError

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")

any_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
)
verbatim_name = st.from_regex(r"\A[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){0,29}\Z").filter(
    lambda n: "--" not in n and len(n) <= 30
)


def accepted(name: str) -> bool:
    return ids.check_trainer_name(name) is None


@settings(max_examples=500)
@given(any_name)
def test_every_accepted_name_round_trips_through_a_valid_id(name):
    assume(accepted(name))
    training_id = ids.new_training_id(name)
    assert DNS_LABEL.match(training_id)
    assert len(training_id) <= 63
    assert trainerkit.ModelTrainerBase.get_trainer_name(training_id) == name


@settings(max_examples=300)
@given(verbatim_name)
def test_lowercase_names_up_to_30_characters_appear_verbatim_and_are_accepted(name):
    assert accepted(name)
    training_id = ids.new_training_id(name)
    assert training_id.startswith(name + "--")
    assert not training_id[len(name) + 2 :].startswith("-")


@settings(max_examples=300)
@given(any_name)
def test_names_are_refused_exactly_when_their_encoding_leaves_no_room(name):
    encoded_prefix = ids.id_prefix(name)
    fits = len(encoded_prefix) + ids.UNIQUE_LENGTH <= 63
    assert accepted(name) == fits


@settings(max_examples=300)
@given(any_name, st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z"))
def test_external_ids_round_trip_with_any_name(name, external):
    assume(accepted(name))
    prefix = ids.id_prefix(name)
    assume(len(prefix) + len(external) <= 63)
    training_id = ids.external_training_id(name, external)
    assert ids.split_training_id(training_id) == (name, external)


def test_ids_carry_at_least_50_random_bits_and_do_not_collide():
    assert ids.UNIQUE_LENGTH * 5 >= 50
    made = {ids.new_training_id("cluster") for _ in range(20000)}
    assert len(made) == 20000
    assert all(i.startswith("cluster--") for i in made)


@pytest.mark.parametrize(
    "name", ["My_Trainer", "gpu.box", "bücher", "日本語", "a--b", "-lead", "trail-", "UPPER", "_"]
)
def test_names_outside_the_verbatim_set_use_the_encoded_separator(name):
    training_id = ids.new_training_id(name)
    assert "---" in training_id
    assert DNS_LABEL.match(training_id)
    assert ids.trainer_name_from_id(training_id) == name


def test_a_name_too_long_to_encode_is_refused_when_the_config_is_loaded():
    name = "x" * 50
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {name: {"type": "LOCAL"}}}}
        )
    message = str(caught.value)
    assert name in message and "49" in message and "63" in message


def test_the_longest_verbatim_name_is_accepted():
    name = "y" * ids.MAX_NAME_PART_LENGTH
    manager = trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {name: {"type": "LOCAL"}}}}
    )
    assert name in manager.trainer_names


@pytest.mark.parametrize(
    "external, fragment",
    [
        ("Has-Caps", "DNS-1123"),
        ("under_score", "DNS-1123"),
        ("-leading", "DNS-1123"),
        ("trailing-", "DNS-1123"),
        ("../../etc", "DNS-1123"),
        ("", "DNS-1123"),
        ("a" * 60, "at most"),
    ],
)
def test_unsafe_external_ids_are_refused_clearly(external, fragment):
    with pytest.raises(InvalidTrainingIdError, match=fragment):
        ids.external_training_id("default", external)


def test_external_id_must_be_a_string():
    with pytest.raises(InvalidTrainingIdError, match="must be a string"):
        ids.external_training_id("default", 42)


@pytest.mark.parametrize(
    "bad",
    ["", "nounique", "default--", "Default--abc", "default---", "x" * 64, "default--ab_c", 17,
     "zz-zz---abc"],
)
def test_strings_that_are_not_ids_are_refused_with_the_id_shape(bad):
    with pytest.raises(InvalidTrainingIdError):
        ids.split_training_id(bad)


def test_separator_is_unambiguous_for_names_and_external_ids_with_dashes():
    training_id = ids.external_training_id("gpu-a100", "run-2024-01")
    assert training_id == "gpu-a100--run-2024-01"
    assert ids.split_training_id(training_id) == ("gpu-a100", "run-2024-01")


def test_generated_unique_part_uses_only_lowercase_base32():
    unique = ids.split_training_id(ids.new_training_id("default"))[1]
    assert len(unique) == 12 and set(unique) <= set(string.ascii_lowercase + "234567")


@pytest.mark.parametrize("external", ["abc\n", "abc\n\n", "a\nb"])
def test_an_external_id_with_a_newline_is_refused(external):
    with pytest.raises(InvalidTrainingIdError, match="DNS-1123"):
        ids.external_training_id("default", external)


def test_a_name_ending_in_a_newline_is_encoded_not_verbatim():
    assert not ids.is_verbatim_name("0\n")
    training_id = ids.new_training_id("0\n")
    assert DNS_LABEL.match(training_id) and "\n" not in training_id
    assert ids.trainer_name_from_id(training_id) == "0\n"
    with pytest.raises(InvalidTrainingIdError):
        ids.split_training_id("default--abc\n")


def test_a_forked_child_draws_other_ids_than_its_parent():
    ids.new_training_id("default")  # the generator exists before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave
        os.write(write_end, ids.new_training_id("default").encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_id.startswith("default--")
    assert ids.new_training_id("default") != child_id
