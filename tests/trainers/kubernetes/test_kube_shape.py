"""kube_shape reads both generations of the kubernetes client's models.

The installed client is one generation (pydantic models from 37, classic
OpenAPI-generator classes up to 36); the tests of the config keys run through
it. These tests build small classic-style classes exactly as the generator
writes them, so the other generation's reading is exercised too, whichever
client is installed.
"""

from __future__ import annotations

import pytest

from trainerkit.trainers.kubernetes import kube_shape


class _Configuration:
    client_side_validation = True


class V1FakeItem:
    openapi_types = {"key": "str", "path": "str", "mode": "int"}
    attribute_map = {"key": "key", "path": "path", "mode": "mode"}

    def __init__(self, key=None, path=None, mode=None):
        self.local_vars_configuration = _Configuration()
        self.key = key
        self.path = path
        if mode is not None:
            self.mode = mode

    @property
    def key(self):
        return self._key

    @key.setter
    def key(self, key):
        if self.local_vars_configuration.client_side_validation and key is None:  # noqa: E501
            raise ValueError("Invalid value for `key`, must not be `None`")  # noqa: E501
        self._key = key

    @property
    def path(self):
        return self._path

    @path.setter
    def path(self, path):
        if self.local_vars_configuration.client_side_validation and path is None:  # noqa: E501
            raise ValueError("Invalid value for `path`, must not be `None`")  # noqa: E501
        self._path = path

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, mode):
        self._mode = mode


class V1FakeSource:
    openapi_types = {
        "name": "str",
        "items": "list[V1FakeItem]",
        "labels": "dict(str, str)",
        "optional": "bool",
        "extra": "object",
    }
    attribute_map = {"name": "name", "items": "items", "labels": "labels", "optional": "optional", "extra": "extraStuff"}


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    # Nested model names are looked up in kubernetes.client.models, as the generator's own
    # deserializer does.
    monkeypatch.setattr(kube_shape.models, "V1FakeItem", V1FakeItem, raising=False)
    kube_shape._fields.cache_clear()
    yield
    kube_shape._fields.cache_clear()


def test_classic_models_fields_and_required_keys_are_read():
    fields = kube_shape._fields(V1FakeItem)
    assert {name: field.required for name, field in fields.items()} == {"key": True, "path": True, "mode": False}
    assert fields["mode"].kind.name == "int"
    source = kube_shape._fields(V1FakeSource)
    assert set(source) == {"name", "items", "labels", "optional", "extraStuff"}
    assert source["items"].kind.name == "list" and source["items"].kind.item.model is V1FakeItem
    assert source["labels"].kind.name == "map" and source["labels"].kind.item.name == "str"
    assert source["extraStuff"].kind.name == "any"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"name": "x", "items": [{"key": "a"}]}, "src.items[0].path: required key is missing"),
        ({"name": "x", "items": [{"key": "a", "path": "p", "mode": "0644"}]}, "src.items[0].mode: expected an integer, got '0644'"),
        ({"name": "x", "optional": "yes"}, "src.optional: expected true or false, got 'yes'"),
        ({"name": "x", "labels": {"a": 1}}, "src.labels.a: expected a string, got 1"),
        ({"name": "x", "itemz": []}, "src.itemz: unknown key; accepted keys: extraStuff, items, labels, name, optional"),
        ({"name": "x", "extra": 1}, "src.extra: write it as 'extraStuff', as in a Pod spec"),
        ({"name": "x", "items": {"key": "a"}}, "src.items: expected a list, got {'key': 'a'}"),
    ],
)
def test_classic_models_give_the_same_messages(value, problem):
    assert problem in kube_shape.check_object(value, V1FakeSource, "src")[0]


def test_a_valid_classic_object_has_no_problems():
    value = {"name": "x", "items": [{"key": "a", "path": "p", "mode": 420}], "labels": {"a": "b"}, "extraStuff": [1]}
    assert kube_shape.check_object(value, V1FakeSource, "src") == []
