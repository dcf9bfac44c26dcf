"""GPU slots of a SUBPROCESS trainer (issue 15): each training gets its own
devices as CUDA_VISIBLE_DEVICES, waits QUEUED (saying so) until enough are
free, frees them when its process ends; info.devices records them. Tests use
an explicit list of ids: no GPU is needed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import trainerkit
from trainerkit import Resources, TrainingStatus, UnsupportedCapabilityError
from tests.subprocess_fixtures import WAIT, release, wait_until
from tests.subprocess_modules import SeesGpus


def manager(tmp_path, **config):
    config.setdefault("state_dir", str(tmp_path / "state"))
    config.setdefault("cancel_grace_period", 1)
    return trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"t": {"type": "SUBPROCESS", "config": config}}}}
    )


def seen(path):
    wait_until(lambda: os.path.exists(path), f"{path} to be written")
    with open(path) as handle:
        return handle.read()


def test_each_training_gets_its_own_gpus_and_a_third_waits_until_one_is_free(tmp_path):
    models = str(tmp_path / "m")
    files = {name: (str(tmp_path / f"{name}.seen"), str(tmp_path / f"{name}.release")) for name in "abc"}
    with manager(tmp_path, gpus=["0", 1], max_workers=3) as made:
        trainer = made.get_trainer("t")
        assert trainer.capabilities()["gpus"] == trainerkit.SupportLevel.NATIVE
        one = Resources(gpus_per_proc=1)
        a = trainer.train(SeesGpus, *files["a"], save_path=models, save_with_id=True, resources=one)
        b = trainer.train(SeesGpus, *files["b"], save_path=models, save_with_id=True, resources={"gpus_per_proc": 1})
        assert sorted([seen(files["a"][0]), seen(files["b"][0])]) == ["0", "1"]
        c = trainer.train(SeesGpus, *files["c"], save_path=models, save_with_id=True, resources=one)
        wait_until(lambda: c.get_info().detail == "waiting for 1 GPU (0 of 2 free)", "the third to say it waits")
        assert c.get_info().status is TrainingStatus.QUEUED and not os.path.exists(files["c"][0])
        release(files["a"][1])
        a.result(timeout=WAIT)
        assert seen(files["c"][0]) == seen(files["a"][0])  # it got the device a freed
        for name in "bc":
            release(files[name][1])
        b.result(timeout=WAIT)
        c.result(timeout=WAIT)
        assert a.get_info().devices == (seen(files["a"][0]),)
        assert c.get_info().devices == a.get_info().devices and c.get_info().detail == ""


def test_a_training_without_gpus_on_a_gpu_trainer_sees_none(tmp_path):
    seen_file, release_file = str(tmp_path / "s"), str(tmp_path / "r")
    release(release_file)
    with manager(tmp_path, gpus=["0"]) as made:
        future = made.get_trainer("t").train(SeesGpus, seen_file, release_file, save_path=str(tmp_path / "m"))
        future.result(timeout=WAIT)
    assert seen(seen_file) == "" and future.get_info().devices == ()


def test_more_gpus_than_the_trainer_has_are_refused_at_train_time(tmp_path):
    with manager(tmp_path, gpus=["0", "1"]) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(ValueError, match=r"asks for 3 GPUs, but trainer 't' hands out 2 \(0, 1\)"):
            trainer.train(SeesGpus, "x", "y", save_path=str(tmp_path / "m"), resources={"gpus_per_proc": 3})
        assert trainer.list_trainings() == []
    with manager(tmp_path) as without:
        with pytest.raises(UnsupportedCapabilityError, match="gpus: requested native, the trainer does not have it"):
            without.get_trainer("t").train(SeesGpus, "x", "y", save_path=str(tmp_path / "m"), resources={"gpus_per_proc": 1})


def test_gpus_without_a_gpus_config_are_refused_saying_which_config_gives_them(tmp_path, monkeypatch):
    with manager(tmp_path) as without:
        with pytest.raises(UnsupportedCapabilityError, match=r"it has no gpus config: set gpus \(auto, or a list") as caught:
            without.get_trainer("t").train(SeesGpus, "x", "y", save_path=str(tmp_path / "m"), resources={"gpus_per_proc": 1})
        assert [item.name for item in caught.value.unsupported] == ["gpus"]
        assert without.get_trainer("t").list_trainings() == []
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    with manager(tmp_path, gpus="auto") as found_none:
        with pytest.raises(UnsupportedCapabilityError, match="its gpus: auto found none"):
            found_none.get_trainer("t").train(SeesGpus, "x", "y", save_path=str(tmp_path / "m"),
                                              resources={"procs_per_node": 2, "gpus_per_proc": 1})


@pytest.mark.parametrize("value", [["0", "0"], ["0,1"], "all"])
def test_a_bad_gpus_config_is_a_config_error(tmp_path, value):
    with pytest.raises(trainerkit.ConfigError, match="gpus"):
        manager(tmp_path, gpus=value)


def test_auto_takes_the_callers_visible_devices_without_nvidia_smi(tmp_path, monkeypatch):
    from trainerkit.trainers.subprocess.config import gpu_ids

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert gpu_ids("auto") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_ids("auto") == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi: no GPU on this machine")
def test_on_a_real_gpu_the_training_sees_exactly_its_device(tmp_path):
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    assert listing.startswith("GPU 0:")
    seen_file, release_file = str(tmp_path / "s"), str(tmp_path / "r")
    release(release_file)
    with manager(tmp_path, gpus="auto") as made:
        future = made.get_trainer("t").train(
            SeesGpus, seen_file, release_file, save_path=str(tmp_path / "m"), resources={"gpus_per_proc": 1}
        )
        future.result(timeout=WAIT)
    device = future.get_info().devices[0]
    assert seen(seen_file) == device
