"""Modules: shape checks, argument checks, atomic saves and trainerkit.load."""

from __future__ import annotations

import json
import os

import pytest

import trainerkit
from trainerkit.errors import ModelLoadError
from trainerkit.module import METADATA_FILE, bind_train_arguments, resolve_save_path, save_model
from tests.training_modules import Adder, BadSave, JsonModel


def test_a_saved_model_records_its_class_and_loads_without_naming_it(tmp_path):
    save_model(JsonModel(41), str(tmp_path / "m"), training_id="default--abc")
    metadata = json.loads((tmp_path / "m" / METADATA_FILE).read_text())
    assert metadata["module"] == "tests.training_modules:JsonModel"
    assert metadata["training_id"] == "default--abc"
    loaded = trainerkit.load(tmp_path / "m")
    assert isinstance(loaded, JsonModel) and loaded.value == 41


def test_module_base_saves_and_loads_by_default(tmp_path):
    save_model(Adder(3), str(tmp_path / "adder"))
    assert trainerkit.load(str(tmp_path / "adder")).total == 3


def test_a_crash_mid_save_leaves_nothing_at_the_save_path(tmp_path):
    target = tmp_path / "models" / "m"
    with pytest.raises(OSError, match="disk full"):
        save_model(BadSave(), str(target))
    assert not target.exists()
    assert os.listdir(tmp_path / "models") == []  # no temporary directory left behind


def test_saving_never_overwrites_an_existing_model(tmp_path):
    save_model(Adder(1), str(tmp_path / "m"))
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(Adder(2), str(tmp_path / "m"))
    assert trainerkit.load(tmp_path / "m").total == 1


def test_an_empty_directory_may_receive_a_model(tmp_path):
    (tmp_path / "m").mkdir()
    save_model(Adder(5), str(tmp_path / "m"))
    assert trainerkit.load(tmp_path / "m").total == 5


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: p.mkdir(), "was not saved by trainerkit"),
    ],
)
def test_load_errors_say_what_is_wrong(tmp_path, setup, fragment):
    target = tmp_path / "thing"
    setup(target)
    with pytest.raises(ModelLoadError, match=fragment):
        trainerkit.load(target)


def test_load_names_a_class_that_cannot_be_imported(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / METADATA_FILE).write_text(json.dumps({"module": "gone.module:Model"}))
    with pytest.raises(ModelLoadError, match="gone.module:Model cannot be imported"):
        trainerkit.load(tmp_path / "m")


def test_missing_and_unknown_arguments_fail_with_the_signature():
    with pytest.raises(TypeError, match=r"Adder.train\(a, b=1, \*, tag=None\): missing a required argument: 'a'"):
        bind_train_arguments(Adder, (), {})
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        bind_train_arguments(Adder, (1,), {"c": 2})


@pytest.mark.parametrize("name", ["../../etc", "..", ".", "a/b", "a\\b", "", " x", "a\0b", "a\nb", "a\tb", "a\x7fb"])
def test_unsafe_model_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a safe directory name"):
        resolve_save_path(str(tmp_path), save_with_id=False, model_name=name, training_id="default--x")


@pytest.mark.parametrize("name", ["x" * 256, "\u00e9" * 128])
def test_a_model_name_longer_than_a_file_name_may_be_is_refused_at_submission(tmp_path, name):
    with pytest.raises(ValueError, match="256 bytes long .* more than the 255 bytes a file name may have"):
        resolve_save_path(str(tmp_path), save_with_id=False, model_name=name, training_id="default--x")
    assert resolve_save_path(str(tmp_path), save_with_id=False, model_name="x" * 255, training_id="default--x")


def test_save_path_layout_is_path_then_id_then_model_name(tmp_path):
    path = resolve_save_path(str(tmp_path), save_with_id=True, model_name="clf", training_id="default--abc")
    assert path == str(tmp_path / "default--abc" / "clf")


def test_save_path_is_made_absolute_and_user_expanded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert resolve_save_path("rel", save_with_id=False, model_name=None, training_id="d--x") == str(tmp_path / "rel")


def test_model_name_without_save_path_is_refused():
    with pytest.raises(ValueError, match="need save_path"):
        resolve_save_path(None, save_with_id=False, model_name="clf", training_id="d--x")


def test_an_existing_model_at_the_save_path_is_refused_at_submission(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights").write_text("precious")
    with pytest.raises(FileExistsError, match="never overwrites"):
        resolve_save_path(str(tmp_path / "m"), save_with_id=False, model_name=None, training_id="d--x")


class StrictDirModule(JsonModel):
    """Creates its directory with exist_ok=False, as several caikit-nlp modules do."""

    def save(self, path):
        os.makedirs(path, exist_ok=False)
        super().save(path)


def test_a_module_that_insists_on_creating_its_directory_still_saves_atomically(tmp_path):
    save_model(StrictDirModule(3), str(tmp_path / "m"))
    assert trainerkit.load(tmp_path / "m").value == 3
    assert os.listdir(tmp_path) == ["m"]


# -- loading only what an allow-list names (issue 12 item 8) -----------------------


class _CallsOnLoad(trainerkit.ModuleBase):
    """A model whose pickle makes the loader call a function of another module."""

    def __reduce__(self):
        return (os.getpid, ())


def test_load_with_an_allow_list_refuses_a_class_outside_it_before_importing_it(tmp_path):
    package = tmp_path / "planted_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import os\nos.environ['PLANTED_PKG_IMPORTED'] = '1'\n")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / METADATA_FILE).write_text(json.dumps({"module": "planted_pkg:Model"}))
    os.environ.pop("PLANTED_PKG_IMPORTED", None)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModelLoadError, match=r"planted_pkg:Model is not in the allowed modules \['tests'\]"):
            trainerkit.load(tmp_path / "m", allowed_modules=["tests"])
        assert "PLANTED_PKG_IMPORTED" not in os.environ
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("planted_pkg", None)
        os.environ.pop("PLANTED_PKG_IMPORTED", None)


def test_an_allow_listed_class_loads_and_its_pickle_may_hold_plain_data(tmp_path):
    import collections
    import datetime

    value = {"when": datetime.datetime(2026, 1, 2), "seen": collections.OrderedDict(a=1), "s": {1, 2}}
    save_model(Adder(value), str(tmp_path / "m"))
    assert trainerkit.load(tmp_path / "m", allowed_modules=["tests.training_modules"]).total == value
    assert trainerkit.load(tmp_path / "m", allowed_modules=("tests",)).total == value


def test_an_allow_list_stops_a_pickle_that_calls_into_another_module(tmp_path):
    save_model(_CallsOnLoad(), str(tmp_path / "m"))
    (tmp_path / "m" / METADATA_FILE).write_text(json.dumps({"module": "tests.training_modules:Adder"}))
    # Without an allow-list the directory is trusted: the pickle's call runs (and returns a pid).
    with pytest.raises(ModelLoadError, match="holds a int, not a Adder"):
        trainerkit.load(tmp_path / "m")
    with pytest.raises(ModelLoadError, match=r"the pickle names posix.getpid, and module 'posix' is not in the allowed"):
        trainerkit.load(tmp_path / "m", allowed_modules=["tests"])


@pytest.mark.parametrize(
    "allowed, error",
    [("tests", TypeError), (["tests", "not a module"], ValueError), ([3], ValueError), (["tests."], ValueError)],
)
def test_a_bad_allow_list_is_refused(tmp_path, allowed, error):
    save_model(Adder(1), str(tmp_path / "m"))
    with pytest.raises(error, match="module name"):
        trainerkit.load(tmp_path / "m", allowed_modules=allowed)


def test_a_trainers_load_allowed_modules_applies_when_a_model_is_loaded_from_disk(tmp_path):
    state = str(tmp_path / "state")

    def manager(allowed):
        config = {"state_dir": state, "load_allowed_modules": allowed}
        return trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"default": {"type": "LOCAL", "config": config}}}}
        )

    with manager(["tests"]) as first:
        future = first.get_trainer("default").train(Adder, 1, save_path=str(tmp_path / "models"))
        assert future.result(timeout=30).total == 2
    with manager(["tests"]) as second:
        assert second.get_model_future(future.id).load().total == 2
    with manager(["sklearn"]) as third:
        with pytest.raises(ModelLoadError, match=r"tests.training_modules:Adder is not in the allowed modules \['sklearn'\]"):
            third.get_model_future(future.id).load()


@pytest.mark.parametrize("value", ["tests", ["bad name"], [1]])
def test_load_allowed_modules_in_a_config_must_be_module_names(value):
    with pytest.raises(trainerkit.ConfigError, match="load_allowed_modules"):
        trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"default": {"type": "LOCAL", "config": {"load_allowed_modules": value}}}}}
        )


# -- the quick argument check agrees with Signature.bind ----------------------------


class _Shapes:
    class Plain:
        @classmethod
        def train(cls, a, b=1, *, c, d=2):
            return cls()

    class Variadic:
        @classmethod
        def train(cls, a, *rest, key=None, **extra):
            return cls()

    class PositionalOnly:
        @classmethod
        def train(cls, a, /, b=0):
            return cls()


@pytest.mark.parametrize("module", [_Shapes.Plain, _Shapes.Variadic, _Shapes.PositionalOnly])
@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((), {}), ((1,), {}), ((1,), {"c": 3}), ((1, 2), {"c": 3, "d": 4}), ((1, 2, 3), {"c": 3}),
        ((), {"a": 1, "c": 3}), ((1,), {"a": 1, "c": 3}), ((1,), {"c": 3, "zzz": 0}), ((1,), {"b": 2}),
        ((1, 2, 3, 4), {}), ((), {"a": 1}), ((1,), {"key": 1, "other": 2}),
    ],
)
def test_the_quick_binding_agrees_with_signature_bind(module, args, kwargs):
    from trainerkit.module import train_signature, training_parameters

    try:
        bound = train_signature(module).bind(*args, **kwargs)
    except TypeError:
        bound = None
    if bound is None:
        with pytest.raises(TypeError, match=r"\.train\("):
            training_parameters(module, args, kwargs)
    else:
        bound.apply_defaults()
        params = training_parameters(module, args, kwargs)
        assert params == dict(bound.arguments) and list(params) == list(bound.arguments)


def test_a_retry_replaces_the_model_its_earlier_attempt_saved_but_never_another_trainings(tmp_path):
    path = str(tmp_path / "model")
    save_model(Adder(1), path, training_id="t--abcdefghijkl")
    save_model(Adder(2), path, training_id="t--abcdefghijkl")  # the same training, again: replaced
    assert trainerkit.load(path).total == 2
    assert sorted(os.listdir(tmp_path)) == ["model"]  # nothing left beside it
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(Adder(3), path, training_id="t--otherotherot")
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(Adder(3), path)  # no training id: nothing is its own
    with pytest.raises(Exception):
        save_model(Adder(lambda: 1), path, training_id="t--abcdefghijkl")  # its save fails
    assert trainerkit.load(path).total == 2 and sorted(os.listdir(tmp_path)) == ["model"]
