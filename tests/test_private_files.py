"""State and log directories that another user could write to are refused;
trainerkit's files are created private and never written through a planted
symbolic link; a run file naming some other process is not obeyed (issue 12
item 7)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

import trainerkit
from trainerkit import TrainingStatus
from trainerkit.errors import StoreError
from trainerkit.owner import process_owner, signal_owner
from trainerkit.private_files import make_private_dir, unsafe_directory
from trainerkit.trainers.subprocess.handles import WORKER_MODULE
from tests.subprocess_fixtures import WAIT, gate, pids_in, release, wait_until
from tests.subprocess_modules import Gated


def manager(trainer_type="LOCAL", **config):
    return trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"t": {"type": trainer_type, "config": config}}}}
    )


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def another_users_directory(tmp_path):
    """A directory owned by another user: made and given away when we are root,
    else one that root owns."""
    if os.geteuid() != 0:
        return "/usr/share"
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    return str(path)


@pytest.mark.parametrize("bits, who", [(0o770, "its group"), (0o1703, "every user"), (0o777, "its group and every user")])
def test_a_state_directory_others_can_write_to_is_refused_before_anything_is_recorded(tmp_path, bits, who):
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(bits)
    with manager(state_dir=str(state)) as made:
        with pytest.raises(StoreError, match=rf"refusing to use the state directory: {state} is writable by {who}.*chmod go-w {state}"):
            made.get_trainer("t").train(_Noop)
    assert os.listdir(state) == []


def test_a_state_directory_of_another_user_is_refused(tmp_path):
    theirs = another_users_directory(tmp_path)
    with pytest.raises(StoreError, match=rf"{theirs} belongs to another user \(uid \d+; this process runs as uid {os.geteuid()}\)"):
        make_private_dir(theirs, what="the state directory", setting="state_dir")
    with manager(state_dir=theirs) as made:
        with pytest.raises(StoreError, match="belongs to another user"):
            made.get_trainer("t").train(_Noop)


def test_a_log_dir_others_can_write_to_is_refused_at_the_first_training(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    with manager(log_dir=str(logs)) as made:
        with pytest.raises(StoreError, match=rf"the log directory: {logs} is writable by its group and every user"):
            made.get_trainer("t").train(_Noop)
    with manager() as unconfigured:  # the same records, without the log_dir
        assert unconfigured.get_trainer("t").list_trainings() == []
    assert os.listdir(logs) == []


def test_directories_trainerkit_creates_are_private_and_pass_its_own_check(tmp_path):
    path = tmp_path / "a" / "b"
    make_private_dir(str(path), what="x", setting="y")
    assert mode(path) == 0o700 and unsafe_directory(str(path)) is None


class _Noop(trainerkit.ModuleBase):
    @classmethod
    def train(cls):
        print("hello from the training")
        return cls()


class _Big(trainerkit.ModuleBase):
    @classmethod
    def train(cls, blob):
        print(len(blob))
        return cls()


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_records_logs_and_run_files_are_private(tmp_path, trainer_type):
    state = tmp_path / "state"
    models = str(tmp_path / "models")
    with manager(trainer_type, state_dir=str(state)) as made:
        future = made.get_trainer("t").train(_Big, "x" * 300_000, save_path=models, save_with_id=True)
        future.result(timeout=WAIT)
        assert list(future.logs()) == ["300000"]
        for name in ("trainings.sqlite3", "trainings.sqlite3-wal", "trainings.sqlite3-shm"):
            assert mode(state / name) == 0o600, name  # -wal and -shm exist while it is open
    assert mode(state) == 0o700
    assert mode(state / "logs") == 0o700
    assert mode(state / "logs" / f"{future.id}.log") == 0o600
    if trainer_type == "SUBPROCESS":
        run = state / "runs" / future.id
        assert mode(state / "runs") == 0o700 and mode(run) == 0o700
        files = os.listdir(run)
        assert "outcome.json" in files
        assert all(mode(run / name) == 0o600 for name in files), {name: oct(mode(run / name)) for name in files}


@pytest.mark.parametrize("trainer_type", ["LOCAL", "SUBPROCESS"])
def test_a_symbolic_link_planted_as_a_log_file_is_never_written_through(tmp_path, trainer_type, caplog):
    state = tmp_path / "state"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    with manager(trainer_type, state_dir=str(state)) as made:
        trainer = made.get_trainer("t")
        trainer.list_trainings()  # opens the state directory
        (state / "logs").mkdir(mode=0o700, exist_ok=True)
        (state / "logs" / "t--planted.log").symlink_to(victim)
        future = trainer.train(_Noop, external_training_id="planted", save_path=str(tmp_path / "m"), save_with_id=True)
        assert future.wait(WAIT)
        info = future.get_info()
    assert victim.read_text() == "precious\n"
    if trainer_type == "LOCAL":
        # The training's prints go on (capture never breaks them); the caller is told.
        assert info.status is TrainingStatus.COMPLETED
        assert "t--planted.log is a symbolic link, and trainerkit never writes through one" in caplog.text
    else:
        # The log file is the worker's stdout: it cannot start, and says why.
        assert info.status is TrainingStatus.ERRORED
        assert "is a symbolic link, and trainerkit never writes through one" in info.errors[0].message + info.errors[0].traceback


def test_signal_owner_with_a_marker_never_signals_another_process_of_this_user():
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_until(lambda: process_owner(stranger.pid).split("|")[2] != "", "the process to start")
        owner = process_owner(stranger.pid)  # its real identity, start time included
        assert signal_owner(owner, signal.SIGTERM, command_marker=WORKER_MODULE) is False
        assert stranger.poll() is None
        assert signal_owner(owner, signal.SIGTERM) is True  # without the marker it would be obeyed
        assert stranger.wait(WAIT) == -signal.SIGTERM
    finally:
        stranger.kill()
        stranger.wait()


def test_a_cancel_from_another_process_ignores_a_run_file_naming_another_process(tmp_path):
    state = tmp_path / "state"
    pid_file, release_file = gate(tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    config = {"state_dir": str(state), "cancel_grace_period": 1}
    try:
        with manager("SUBPROCESS", **config) as first, manager("SUBPROCESS", **config) as second:
            future = first.get_trainer("t").train(Gated, pid_file, release_file, save_path=str(tmp_path / "m"), save_with_id=True)
            pids_in(pid_file)
            worker_file = state / "runs" / future.id / "worker.json"
            text = worker_file.read_text()
            supervisor = json.loads(text)["supervisor"]
            worker_file.write_text(text.replace(supervisor, process_owner(stranger.pid)))
            assert second.get_model_future(future.id).cancel() is False
            assert stranger.poll() is None
            release(release_file)
            assert future.result(timeout=WAIT).value == 0
    finally:
        stranger.kill()
        stranger.wait()
