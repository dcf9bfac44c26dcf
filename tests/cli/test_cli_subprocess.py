"""The ``trainerkit`` command across processes, with a SUBPROCESS trainer:
``train --detach`` in one process, then status, logs, cancel, list and result
from new ones, as a person at a shell (or a script) drives them."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import time

import pexpect
import pytest

from tests.cli_fixtures import cli_env, default_sigint, run_cli, submitted_id

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("trainerkit.trainers.subprocess") is None,
    reason="the SUBPROCESS trainer (trainerkit/trainers/subprocess.py) is not available",
)

TICKER = "tests.cli_modules:Ticker"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "trainers.yaml"
    path.write_text("model_management:\n  trainers:\n    isolated:\n      type: SUBPROCESS\n      config: {max_workers: 2}\n")
    return str(path)


def cli(config, *args):
    return run_cli(*args, env={"TRAINERKIT_CONFIG": config})


def status_of(config, training_id):
    result = cli(config, "status", training_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(config, training_id, condition, what, timeout=60.0):
    """Poll the training's status (each look is a new trainerkit process) until
    ``condition(info)`` holds; return that info."""
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = status_of(config, training_id)
        if condition(info):
            return info
        if info["status"] in ("COMPLETED", "ERRORED", "CANCELED"):
            break  # it ended otherwise: no point waiting
    raise AssertionError(f"gave up waiting for {what}; last status: {info}")


def detach(config, tmp_path, *args):
    result = cli(config, "train", TICKER, "--trainer", "isolated", "--detach",
                 "--save-path", str(tmp_path / "models"), "--save-with-id", *args)
    assert result.returncode == 0, result.stderr
    assert "Detached." in result.stdout
    return submitted_id(result.stdout)


def test_detached_training_is_watched_listed_tailed_and_canceled_from_new_processes(config, tmp_path):
    training_id = detach(config, tmp_path, "--arg", "steps=600", "--arg", "delay=0.1", "--tag", "xp")

    def reported_twice(info):
        return info["status"] == "RUNNING" and ((info["progress"] or {}).get("step") or 0) >= 2

    running = wait_for(config, training_id, reported_twice, "the detached training to report progress")
    assert running["progress"]["total"] == 600
    assert running["tags"] == ["xp"]

    logs = cli(config, "logs", training_id)
    assert logs.returncode == 0, logs.stderr
    assert "tick 1" in logs.stdout.splitlines()

    listed = cli(config, "list", "--trainer", "isolated", "--status", "RUNNING", "--json")
    assert [info["id"] for info in json.loads(listed.stdout)] == [training_id]

    canceled = cli(config, "cancel", training_id)
    assert canceled.returncode == 0, canceled.stderr
    assert f"Training {training_id} CANCELED." in canceled.stdout
    assert status_of(config, training_id)["status"] == "CANCELED"
    again = cli(config, "cancel", training_id)  # nothing left to cancel: as for a finished one
    assert again.returncode == 6
    assert f"training {training_id} already ended CANCELED; there was nothing to cancel" in again.stderr

    listed = cli(config, "list", "--status", "CANCELED", "--tag", "xp", "--json")
    assert [info["id"] for info in json.loads(listed.stdout)] == [training_id]

    assert cli(config, "result", training_id).returncode == 5
    deleted = cli(config, "delete", training_id)
    assert deleted.returncode == 0
    assert cli(config, "status", training_id).returncode == 3


def test_detached_training_outlives_the_command_and_its_model_is_loadable(config, tmp_path):
    training_id = detach(config, tmp_path, "--arg", "steps=3", "--arg", "delay=0.2")

    watched = cli(config, "status", training_id, "--watch")
    assert watched.returncode == 0, watched.stderr
    assert "COMPLETED" in watched.stdout

    logs = cli(config, "logs", training_id)
    assert [line for line in logs.stdout.splitlines() if line.startswith("tick")] == ["tick 1", "tick 2", "tick 3"]

    result = cli(config, "result", training_id)
    assert result.returncode == 0, result.stderr
    assert "tests.cli_modules:Ticker" in result.stdout


def test_logs_follow_streams_until_the_training_ends(config, tmp_path):
    training_id = detach(config, tmp_path, "--arg", "steps=10", "--arg", "delay=0.1")
    followed = cli(config, "logs", training_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    ticks = [line for line in followed.stdout.splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {step}" for step in range(1, 11)]


def test_logs_json_is_one_object_per_line(config, tmp_path):
    training_id = detach(config, tmp_path, "--arg", "steps=2")
    cli(config, "status", training_id, "--watch")
    result = cli(config, "logs", training_id, "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"line": "tick 2"} in lines


def test_cancel_no_wait_returns_at_once_and_the_training_still_ends_canceled(config, tmp_path):
    training_id = detach(config, tmp_path, "--arg", "steps=600", "--arg", "delay=0.1")
    wait_for(config, training_id, lambda info: info["status"] == "RUNNING", "the training to run")
    result = cli(config, "cancel", training_id, "--no-wait")
    assert result.returncode == 0
    assert f"Cancel of training {training_id} requested." in result.stdout
    wait_for(config, training_id, lambda info: info["status"] == "CANCELED", "the cancel to take effect")


def test_ctrl_c_on_a_terminal_cancels_a_followed_subprocess_training(config, tmp_path):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "trainerkit", "--config", config, "train", TICKER, "--trainer", "isolated",
         "--save-path", str(tmp_path / "model"), "--arg", "steps=600", "--arg", "delay=0.1"],
        env=cli_env({"TERM": "xterm-256color"}), encoding="utf-8", timeout=60,
        dimensions=(40, 140), preexec_fn=default_sigint,
    )
    child.logfile_read = io.StringIO()
    child.expect(r"Training (\S+) submitted")
    training_id = child.match.group(1)
    child.expect(r"\d+/600")
    child.sendintr()  # Ctrl-C reaches the whole foreground process group
    child.expect(f"Ctrl-C: canceling training {training_id}")
    child.expect(f"Training {training_id} CANCELED")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130


def test_a_multi_process_training_from_the_shell_shows_its_ranks_devices_and_logs(tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text(
        "model_management:\n  trainers:\n    isolated:\n      type: SUBPROCESS\n"
        "      config: {gpus: ['0', '1', '2']}\n"
    )
    config = str(path)
    result = cli(config, "train", "trainerkit.testing.modules:RankExchange", "--trainer", "isolated", "--arg", "value=3",
                 "--procs-per-node", "2", "--gpus-per-proc", "1", "--save-path", str(tmp_path / "models"), "--save-with-id")
    assert result.returncode == 0, result.stderr
    training_id = submitted_id(result.stdout)
    status = cli(config, "status", training_id)
    assert re.search(rf"^ranks: +2 processes \(trainerkit logs {training_id} --rank K\)$", status.stdout, re.M), status.stdout
    assert re.search(r"^devices: +0 \(rank 0\), 1 \(rank 1\)$", status.stdout, re.M), status.stdout
    assert status_of(config, training_id)["ranks"] == 2
    assert cli(config, "logs", training_id, "--rank", "1").stdout.splitlines() == ["rank 1 of 2"]
    assert "rank 0 of 2" in cli(config, "logs", training_id).stdout.splitlines()
    refused = cli(config, "logs", training_id, "--rank", "2")
    assert refused.returncode == 2
    assert "has 2 processes (ranks 0 to 1); there is no rank 2" in refused.stderr
