"""Resources on train() (issue 15, first slice): validated at once, refused
by a trainer that cannot serve them before anything exists, taken from the
trainer config's default_resources; the torchrun environment read back by
distributed_env()."""

from __future__ import annotations

import pytest

import trainerkit
from trainerkit import DistributedEnv, Resources, UnsupportedCapabilityError, distributed_env
from tests.subprocess_fixtures import WAIT
from tests.training_modules import Adder


def manager(tmp_path, trainer_type="LOCAL", **config):
    config.setdefault("state_dir", str(tmp_path / "state"))
    return trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"t": {"type": trainer_type, "config": config}}}}
    )


@pytest.mark.parametrize(
    "value, error, message",
    [
        ({"nodes": 0}, ValueError, "nodes must be between 1 and 4096, got 0"),
        ({"procs_per_node": True}, TypeError, "procs_per_node must be an integer"),
        ({"gpus_per_proc": -1}, ValueError, "gpus_per_proc must be between 0 and 64"),
        ({"gpus": 1}, ValueError, r"unknown keys \['gpus'\]; the keys are nodes, procs_per_node, gpus_per_proc"),
        ("2 procs", TypeError, "resources must be a trainerkit.Resources or a mapping"),
    ],
)
def test_bad_resources_are_refused_naming_what_is_wrong(value, error, message):
    with pytest.raises(error, match=message):
        Resources.of(value)


def test_resources_say_which_capabilities_they_need():
    assert Resources().needs() == {} and Resources.of(None) == Resources()
    assert Resources(nodes=2, procs_per_node=4, gpus_per_proc=1).needs() == {
        "multi_node": "native", "multi_process": "native", "gpus": "native"
    }
    assert Resources(nodes=2, procs_per_node=4).world_size == 8
    assert Resources(procs_per_node=2).describe() == "Resources(procs_per_node=2)"


@pytest.mark.parametrize("trainer_type, lacking", [("LOCAL", ["multi_process", "gpus"]), ("SUBPROCESS", ["gpus"])])
def test_a_trainer_that_cannot_serve_the_resources_refuses_them_before_anything_exists(tmp_path, trainer_type, lacking):
    with manager(tmp_path, trainer_type) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(UnsupportedCapabilityError, match=r"needed by resources Resources\(procs_per_node=2, gpus_per_proc=1\)") as caught:
            trainer.train(Adder, 1, save_path=str(tmp_path / "m"), resources={"procs_per_node": 2, "gpus_per_proc": 1})
        assert [item.name for item in caught.value.unsupported] == lacking
        assert trainer.list_trainings() == []
        assert not (tmp_path / "m").exists()
        future = trainer.train(Adder, 1, save_path=str(tmp_path / "m"), resources=Resources())
        assert future.result(timeout=WAIT).total == 2


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_several_nodes_are_refused_pointing_at_kubernetes(tmp_path, trainer_type):
    with manager(tmp_path, trainer_type) as made:
        with pytest.raises(UnsupportedCapabilityError, match="only KUBERNETES runs a training on several nodes") as caught:
            made.get_trainer("t").train(Adder, 1, save_path=str(tmp_path / "m"), resources={"nodes": 2, "gpus_per_proc": 1})
        assert [item.name for item in caught.value.unsupported] == ["multi_node", "gpus"]
        assert made.get_trainer("t").list_trainings() == []


def test_the_config_default_applies_unless_the_call_says_otherwise(tmp_path):
    with manager(tmp_path, default_resources={"gpus_per_proc": 1}) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(UnsupportedCapabilityError, match="gpus"):
            trainer.train(Adder, 1)
        assert trainer.train(Adder, 1, resources={"gpus_per_proc": 0}).result(timeout=WAIT).total == 2


def test_a_config_default_the_trainer_cannot_serve_is_warned_about_when_it_is_built(tmp_path, caplog):
    with manager(tmp_path, "SUBPROCESS", default_resources={"nodes": 2}) as made:
        made.get_trainer("t")
    assert "its default_resources Resources(nodes=2) need multi_node, which it does not have" in caplog.text
    caplog.clear()
    with manager(tmp_path, "SUBPROCESS", default_resources={"procs_per_node": 2}) as made:
        made.get_trainer("t")
    assert "default_resources" not in caplog.text


def test_a_bad_config_default_is_a_config_error(tmp_path):
    with pytest.raises(trainerkit.ConfigError, match="default_resources"):
        manager(tmp_path, default_resources={"procs": 2})


def test_distributed_env_reads_the_torchrun_variables():
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert distributed_env(env) == DistributedEnv(1, 4, 1, 2, 0, "10.0.0.1", 29500)
    assert distributed_env({}) is None
    assert distributed_env({"WORLD_SIZE": "1", "RANK": "0", "MASTER_PORT": "1"}) is None
    with pytest.raises(ValueError, match=r"MASTER_PORT='x' is not an integer"):
        distributed_env({**env, "MASTER_PORT": "x"})
    with pytest.raises(ValueError, match=r"RANK is not set, but WORLD_SIZE=4 says this is a multi-process training"):
        distributed_env({"WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match=r"MASTER_PORT is not set"):
        distributed_env({"WORLD_SIZE": "4", "RANK": "0"})
    with pytest.raises(ValueError, match=r"RANK=4 is not between 0 and WORLD_SIZE - 1 \(3\)"):
        distributed_env({**env, "RANK": "4"})


def test_a_mapping_fills_in_its_missing_keys_from_the_config_default(tmp_path):
    with manager(tmp_path, default_resources={"gpus_per_proc": 1}) as made:
        trainer = made.get_trainer("t")
        assert trainer._resources({"nodes": 1}) == Resources(gpus_per_proc=1)
        assert trainer._resources(Resources()) == Resources()  # a Resources is taken whole
        assert trainer._resources(None) == Resources(gpus_per_proc=1)


def test_the_cli_passes_its_resource_options_to_train(tmp_path):
    from tests.cli_fixtures import run_cli

    refused = run_cli("train", "tests.training_modules:Adder", "--arg", "a=1", "--procs-per-node", "2")
    assert refused.returncode == 6
    assert "needed by resources Resources(procs_per_node=2)" in refused.stderr
    assert "multi_process: requested native, the trainer does not have it" in refused.stderr
    bad = run_cli("train", "tests.training_modules:Adder", "--arg", "a=1", "--gpus-per-proc", "-1")
    assert bad.returncode == 2 and "gpus_per_proc must be between 0 and 64, got -1" in bad.stderr
    assert run_cli("train", "tests.training_modules:Adder", "--arg", "a=1", "--nodes", "1").returncode == 0


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_a_single_process_training_has_rank_0_only(tmp_path, trainer_type):
    with manager(tmp_path, trainer_type) as made:
        future = made.get_trainer("t").train(Adder, 1, save_path=str(tmp_path / "m"))
        future.result(timeout=WAIT)
        assert future.get_info().ranks == 1
        assert list(future.logs(rank=0)) == list(future.logs())
        with pytest.raises(ValueError, match=r"has one process \(rank 0\); there is no rank 1"):
            future.logs(rank=1)
        with pytest.raises(TypeError, match="rank must be an integer"):
            future.logs(rank=True)
