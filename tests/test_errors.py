"""trainerkit's errors: one hierarchy in trainerkit.errors, recorded under
qualified names (never a bare ``TrainingNotFoundError``) and rebuilt from them."""

from __future__ import annotations

import pytest

from trainerkit import errors
from trainerkit.future import rebuild_exception
from trainerkit.info import ErrorDetail


def _raised(error_class):
    try:
        raise error_class("what went wrong")
    except error_class as caught:
        return caught


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_recorded_under_its_qualified_name(name):
    detail = ErrorDetail.from_exception(_raised(getattr(errors, name)))
    assert detail.type == f"trainerkit.errors.{name}"


@pytest.mark.parametrize("name", errors.__all__)
def test_every_recorded_error_type_is_rebuilt_as_itself(name):
    error_class = getattr(errors, name)
    detail = ErrorDetail.from_exception(_raised(error_class))
    rebuilt = rebuild_exception(detail.type, detail.message, detail.traceback)
    assert type(rebuilt) is error_class
    assert str(rebuilt) == str(_raised(error_class))


def test_a_training_error_names_the_remote_type_qualified():
    error = errors.TrainingError("boom", error_type="acme.errors.BoomError")
    assert str(error) == "acme.errors.BoomError: boom"


class Outer:
    class NestedError(Exception):
        """An exception class defined inside another class."""


def test_a_nested_exception_class_is_rebuilt_as_itself():
    detail = ErrorDetail.from_exception(Outer.NestedError("deep"))
    assert detail.type == f"{__name__}.Outer.NestedError"
    rebuilt = rebuild_exception(detail.type, detail.message, detail.traceback)
    assert type(rebuilt) is Outer.NestedError and str(rebuilt) == "deep"
