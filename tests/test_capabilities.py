"""Capabilities that fail fast, and recorded training parameters (issue 17):
the serving rules, every built-in type's matrix (served, refused, disabled),
nothing left behind by a refused training, and parameters recorded across a
restart."""

from __future__ import annotations

import json
import os

import pytest

import trainerkit
from trainerkit import RequestLevel, SupportLevel, TrainingStatus, UnsupportedCapabilityError
from trainerkit.capabilities import CAPABILITY_NAMES, normalize_requests, serve
from tests.subprocess_fixtures import WAIT

NATIVE, BEST, CAN = SupportLevel.NATIVE, SupportLevel.BEST_EFFORT, SupportLevel.CAN_DISABLE
NONE = SupportLevel(0)


# -- the rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, supported, served",
    [
        ("native", NATIVE, NATIVE),
        ("native", NATIVE | CAN, NATIVE),
        ("best_effort", NATIVE, NATIVE),  # met by native support
        ("best-effort", BEST, BEST),
        ("optional", NATIVE, NATIVE),
        ("optional", BEST, BEST),
        ("optional", NONE, None),
        ("disable", NONE, None),  # nothing to disable
        ("disable", NATIVE | CAN, None),
    ],
)
def test_a_request_that_can_be_met_is_served_at_the_trainers_level(requested, supported, served):
    result = serve("t", normalize_requests({"logs": requested}), {"logs": supported})
    assert result.levels == {"logs": served}
    assert result.disabled == (frozenset({"logs"}) if requested == "disable" and supported else frozenset())


@pytest.mark.parametrize(
    "requested, supported",
    [("native", BEST), ("native", NONE), ("best_effort", NONE), ("disable", NATIVE), ("disable", BEST)],
)
def test_a_request_that_cannot_be_met_is_refused(requested, supported):
    with pytest.raises(UnsupportedCapabilityError) as caught:
        serve("t", normalize_requests({"logs": requested}), {"logs": supported})
    (item,) = caught.value.unsupported
    assert (item.name, item.requested, item.supported) == ("logs", RequestLevel.parse(requested), supported)


@pytest.mark.parametrize("text", ["NATIVE", "Best-Effort", "best_effort", " optional ", "DISABLE"])
def test_levels_are_case_insensitive_and_accept_both_spellings(text):
    assert RequestLevel.parse(text).value == text.strip().lower().replace("-", "_")


def test_an_unknown_name_or_level_lists_what_is_known():
    with pytest.raises(ValueError, match="unknown capability 'gpu'; the known ones are cancel, progress, logs"):
        normalize_requests({"gpu": "native"})
    with pytest.raises(ValueError, match="logs: 'always' is not a capability request level; use one of native"):
        normalize_requests({"logs": "always"})
    with pytest.raises(TypeError, match="must be a mapping"):
        normalize_requests(["logs"])


# -- every built-in type -------------------------------------------------------------


def manager(tmp_path, trainer_type="LOCAL", **config):
    config.setdefault("state_dir", str(tmp_path / "state"))
    return trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"t": {"type": trainer_type, "config": config}}}}
    )


EXPECTED = {
    "LOCAL": {
        "cancel": BEST, "progress": NATIVE | CAN, "logs": NATIVE | CAN,
        "remote_storage": NATIVE, "checkpoints": NATIVE,
    },
    "SUBPROCESS": {
        "cancel": NATIVE, "progress": NATIVE | CAN, "logs": NATIVE | CAN, "detach": NATIVE | CAN,
        "multi_process": NATIVE, "remote_storage": NATIVE, "checkpoints": NATIVE,
    },
}


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_each_type_declares_every_name_and_refuses_the_undeclared_ones_before_anything_exists(tmp_path, trainer_type):
    models = tmp_path / "models"
    with manager(tmp_path, trainer_type) as made:
        trainer = made.get_trainer("t")
        levels = trainer.capabilities()
        assert list(levels) == list(CAPABILITY_NAMES)
        assert {name: level for name, level in levels.items() if level} == EXPECTED[trainer_type]
        unsupported = [name for name, level in levels.items() if not level]
        with pytest.raises(UnsupportedCapabilityError) as caught:
            trainer.train(
                Reporter, save_path=str(models), capabilities={name: "native" for name in unsupported}
            )
        assert [item.name for item in caught.value.unsupported] == unsupported
        assert trainer.list_trainings() == []
        assert not models.exists()
        logs = tmp_path / "state" / "logs"
        assert not logs.exists() or os.listdir(logs) == []


class Reporter(trainerkit.ModuleBase):
    """Prints a line and reports progress."""

    @classmethod
    def train(cls, steps=2):
        for step in range(1, steps + 1):
            print(f"step {step}")
            trainerkit.report_progress(step, steps)
        return cls()


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_disabling_logs_and_progress_turns_them_off_for_that_training_only(tmp_path, trainer_type):
    models = str(tmp_path / "models")
    with manager(tmp_path, trainer_type) as made:
        trainer = made.get_trainer("t")
        quiet = trainer.train(Reporter, save_path=models, save_with_id=True, capabilities={"logs": "disable", "progress": "disable"})
        normal = trainer.train(Reporter, save_path=models, save_with_id=True, capabilities={"logs": "native", "progress": "optional"})
        quiet.result(timeout=WAIT)
        normal.result(timeout=WAIT)
        assert list(quiet.logs()) == [] and quiet.get_info().progress is None
        assert list(normal.logs()) == ["step 1", "step 2"] and normal.get_info().progress.step == 2
        assert quiet.get_info().capabilities == {"logs": None, "progress": None}
        assert normal.get_info().capabilities == {"logs": NATIVE, "progress": NATIVE}


def test_local_cancel_is_best_effort_so_a_native_request_fails_and_best_effort_is_served(tmp_path):
    with manager(tmp_path) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(UnsupportedCapabilityError, match="cancel: requested native, the trainer has it best-effort"):
            trainer.train(Reporter, capabilities={"cancel": "native"})
        future = trainer.train(Reporter, capabilities={"cancel": RequestLevel.BEST_EFFORT})
        future.result(timeout=WAIT)
        assert future.get_info().capabilities == {"cancel": BEST}


def test_local_without_capture_has_no_logs_to_give_or_disable(tmp_path):
    with manager(tmp_path, capture_output=False) as made:
        trainer = made.get_trainer("t")
        assert not trainer.capabilities()["logs"]
        with pytest.raises(UnsupportedCapabilityError, match="logs: requested native, the trainer does not have it"):
            trainer.train(Reporter, capabilities={"logs": "native"})
        assert trainer.train(Reporter, capabilities={"logs": "disable"}).result(timeout=WAIT)


@pytest.mark.parametrize(
    "configured, requested, detached",
    [(False, None, False), (False, "native", True), (False, "best-effort", True), (True, None, True), (True, "disable", False)],
)
def test_a_subprocess_training_detaches_as_the_config_says_unless_it_asks_otherwise(tmp_path, configured, requested, detached):
    from tests.subprocess_fixtures import gate, pids_in, release
    from tests.subprocess_modules import Gated

    pid_file, release_file = gate(tmp_path)
    capabilities = {"detach": requested} if requested else None
    with manager(tmp_path, "SUBPROCESS", detach=configured) as made:
        future = made.get_trainer("t").train(
            Gated, pid_file, release_file, save_path=str(tmp_path / "m"), capabilities=capabilities
        )
        pids_in(pid_file)
        worker = json.loads((tmp_path / "state" / "runs" / future.id / "worker.json").read_text())
        release(release_file)
        future.result(timeout=WAIT)
    assert worker["detach"] is detached
    assert future.get_info().capabilities == ({"detach": NATIVE if requested != "disable" else None} if requested else {})


def test_config_requests_apply_to_every_training_unless_the_call_overrides_them(tmp_path):
    with manager(tmp_path, capabilities={"logs": "disable", "cancel": "best-effort"}) as made:
        trainer = made.get_trainer("t")
        default = trainer.train(Reporter)
        override = trainer.train(Reporter, capabilities={"logs": "optional"})
        default.result(timeout=WAIT)
        override.result(timeout=WAIT)
        assert list(default.logs()) == [] and default.get_info().capabilities == {"logs": None, "cancel": BEST}
        assert list(override.logs()) == ["step 1", "step 2"]
        assert override.get_info().capabilities == {"logs": NATIVE, "cancel": BEST}


@pytest.mark.parametrize("value", [{"gpu": "native"}, {"logs": "sometimes"}, ["logs"]])
def test_a_bad_config_request_is_a_config_error(tmp_path, value):
    with pytest.raises(trainerkit.ConfigError, match="capabilities"):
        manager(tmp_path, capabilities=value)


def test_served_capabilities_survive_a_restart(tmp_path):
    with manager(tmp_path) as first:
        future = first.get_trainer("t").train(Reporter, capabilities={"progress": "native", "gpus": "optional"})
        future.result(timeout=WAIT)
    with manager(tmp_path) as second:
        info = second.get_model_future(future.id).get_info()
    assert info.capabilities == {"progress": NATIVE, "gpus": None}


# -- parameters ----------------------------------------------------------------------


class Tuned(trainerkit.ModuleBase):
    """Doubles its learning rate in the hook; records what train received."""

    @classmethod
    def train(cls, data, epochs=3, *, lr=0.1, extra=None):
        model = cls()
        model.received = {"data": data, "epochs": epochs, "lr": lr, "extra": extra}
        return model

    @classmethod
    def training_parameters(cls, **params):
        params["lr"] = params["lr"] * 2
        return params


class AddsUnknown(trainerkit.ModuleBase):
    @classmethod
    def train(cls, a):
        return cls()

    @classmethod
    def training_parameters(cls, **params):
        return {**params, "surprise": 1}


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_parameters_are_bound_adjusted_by_the_hook_received_and_recorded(tmp_path, trainer_type):
    with manager(tmp_path, trainer_type) as made:
        trainer = made.get_trainer("t")
        assert trainer.training_parameters(Tuned, [1, 2]) == {"data": [1, 2], "epochs": 3, "lr": 0.2, "extra": None}
        future = trainer.train(Tuned, [1, 2], lr=0.5, save_path=str(tmp_path / "m"), save_with_id=True)
        assert future.result(timeout=WAIT).received == {"data": [1, 2], "epochs": 3, "lr": 1.0, "extra": None}
        info = future.get_info()
        assert info.parameters == {"data": [1, 2], "epochs": 3, "lr": 1.0, "extra": None}
        assert info.parameters_by_repr == ()
    with manager(tmp_path, trainer_type) as again:
        assert again.get_model_future(future.id).get_info().parameters == info.parameters


def test_values_that_are_not_json_are_recorded_by_repr_and_flagged(tmp_path):
    class Opaque:
        def __repr__(self):
            return "<Opaque>"

    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(Tuned, Opaque(), extra={"nested": (1, 2)})
        future.result(timeout=WAIT)
        info = future.get_info()
    assert info.parameters["data"] == "<Opaque>" and info.parameters["extra"] == {"nested": [1, 2]}
    assert info.parameters_by_repr == ("data",)


def test_a_hook_that_adds_a_parameter_train_lacks_fails_at_train_time_naming_it(tmp_path):
    with manager(tmp_path) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(TypeError, match=r"AddsUnknown.training_parameters returned parameters that train does not accept.*'surprise'"):
            trainer.train(AddsUnknown, 1)
        assert trainer.list_trainings() == []


def test_bad_arguments_fail_before_anything_is_recorded(tmp_path):
    with manager(tmp_path) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(TypeError, match="missing a required argument: 'data'"):
            trainer.train(Tuned)
        with pytest.raises(TypeError, match="missing a required argument: 'data'"):
            trainer.training_parameters(Tuned)
        assert trainer.list_trainings() == []


def test_a_finished_training_reads_back_as_completed_with_everything_recorded(tmp_path):
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(Tuned, "d", capabilities={"logs": "native"})
        future.result(timeout=WAIT)
        info = future.get_info()
    assert info.status is TrainingStatus.COMPLETED
    again = trainerkit.TrainingInfo.from_dict(info.to_dict())
    assert again == info
