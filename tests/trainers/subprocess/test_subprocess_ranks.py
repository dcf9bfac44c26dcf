"""Multi-process SUBPROCESS trainings (issue 15): Resources(procs_per_node=P)
runs P rank processes with the torchrun environment; rank 0's model and
progress are the training's; one failing rank fails the training and stops the
others; cancel stops them all; future.logs(rank=k); GPUs per rank."""

from __future__ import annotations

import os
import signal

import pytest

import trainerkit
from trainerkit import Resources, TrainingCanceledError, TrainingCrashedError, TrainingStatus
from trainerkit.testing.modules import RankExchange
from tests.subprocess_fixtures import WAIT, gone, pids_in, release, wait_until
from tests.subprocess_modules import Boom, RanksExit, RanksGated, RanksSeeGpus

TWO = Resources(procs_per_node=2)


def manager(tmp_path, **config):
    config.setdefault("state_dir", str(tmp_path / "state"))
    config.setdefault("cancel_grace_period", 5)
    return trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"t": {"type": "SUBPROCESS", "config": config}}}}
    )


def rank_pids(directory, ranks):
    return {rank: pids_in(os.path.join(directory, f"rank{rank}.pid"))[0] for rank in range(ranks)}


def pids_from_log(future):
    """The rank pids the worker notes in rank 0's log when it starts them."""
    line = next(line for line in future.logs() if " ranks on 127.0.0.1:" in line)
    return [int(pid) for pid in line.split("pids ")[1].split(", ")]


def test_ranks_see_the_torchrun_environment_and_rank_0s_model_is_the_result(tmp_path):
    models = tmp_path / "models"
    with manager(tmp_path) as made:
        trainer = made.get_trainer("t")
        assert trainer.capabilities()["multi_process"] == trainerkit.SupportLevel.NATIVE
        future = trainer.train(RankExchange, 10, save_path=str(models), save_with_id=True, resources={"procs_per_node": 3})
        model = future.result(timeout=WAIT)
        assert (model.rank, model.world_size, model.values) == (0, 3, [10, 11, 12])
        info = future.get_info()
        assert info.status is TrainingStatus.COMPLETED and info.ranks == 3
        assert os.listdir(models) == [future.id]  # one model: rank 0's
        assert [line for line in future.logs() if not line.startswith("[trainerkit]")] == ["rank 0 of 3"]
        assert list(future.logs(rank=2)) == ["rank 2 of 3"]
        with pytest.raises(ValueError, match=r"has 3 processes \(ranks 0 to 2\); there is no rank 3"):
            future.logs(rank=3)
        with pytest.raises(TypeError, match="rank must be an integer"):
            future.logs(rank="1")
        log_dir = os.path.dirname(trainer.log_path(future.id))
        assert trainer.log_path(future.id, rank=1) == os.path.join(log_dir, f"{future.id}.rank1.log")
        trainer.delete_training(future.id)
        assert not [name for name in os.listdir(log_dir) if name.startswith(future.id)]


def test_killing_rank_1_with_sigkill_fails_the_training_naming_it_and_stops_rank_0(tmp_path):
    directory = str(tmp_path)
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksGated, directory, save_path=str(tmp_path / "m"), resources=TWO)
        pids = rank_pids(directory, 2)
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(TrainingCrashedError, match=rf"rank 1 \(pid {pids[1]}\) was killed by SIGKILL \(9\)"):
            future.result(timeout=WAIT)
        assert future.get_info().status is TrainingStatus.ERRORED
        assert all(gone(pid) for pid in pids.values()), "a rank outlived the training"
        rank0_log = "\n".join(future.logs())
        assert "stopping the other ranks" in rank0_log
        assert "did not stop within the grace period" not in rank0_log, "rank 0 needed SIGKILL to stop"
        assert not os.path.exists(tmp_path / "m"), "a failed training saved a model"


def test_a_rank_that_raises_fails_the_training_with_its_own_error(tmp_path):
    directory = str(tmp_path)
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksGated, directory, fail_rank=1, save_path=str(tmp_path / "m"), resources=TWO)
        with pytest.raises(Boom, match="^rank 1: rank 1 gives up\n"):
            future.result(timeout=WAIT)
        assert all(gone(pid) for pid in pids_from_log(future))
        assert "Boom: rank 1 gives up" not in "\n".join(future.logs())  # rank 0's log is its own
        assert future.get_info().errors[0].type.endswith("Boom")


def test_a_rank_failing_after_rank_0_returned_still_fails_the_training(tmp_path):
    directory = str(tmp_path)
    release(os.path.join(directory, "release"))
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(
            RanksGated, directory, fail_rank=1, fail_late=True, save_path=str(tmp_path / "m"), resources=TWO
        )
        with pytest.raises(Boom, match="^rank 1: rank 1 gives up late\n"):
            future.result(timeout=WAIT)
        assert future.get_info().status is TrainingStatus.ERRORED
        assert all(gone(pid) for pid in pids_from_log(future))


def test_rank_0_failing_stops_the_others_and_is_the_error(tmp_path):
    directory = str(tmp_path)
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksGated, directory, fail_rank=0, save_path=str(tmp_path / "m"), resources=TWO)
        with pytest.raises(Boom, match="^rank 0 gives up\n"):
            future.result(timeout=WAIT)
        pids = pids_from_log(future)  # rank 1 may be stopped before it writes its pid file
        assert len(pids) == 2 and all(gone(pid) for pid in pids)


def test_rank_0s_progress_is_the_trainings_and_cancel_stops_every_rank(tmp_path):
    directory = str(tmp_path)
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksGated, directory, save_path=str(tmp_path / "m"), resources={"procs_per_node": 3})
        pids = rank_pids(directory, 3)
        wait_until(lambda: future.get_info().progress is not None, "rank 0's progress")
        assert future.get_info().progress.step == 1  # rank 0 reports step 1; ranks 1, 2 report 2, 3
        assert future.cancel()
        with pytest.raises(TrainingCanceledError):
            future.result(timeout=WAIT)
        assert future.get_info().status is TrainingStatus.CANCELED
        assert all(gone(pid) for pid in pids.values())


def test_a_training_completes_once_every_rank_has_returned(tmp_path):
    directory = str(tmp_path)
    release(os.path.join(directory, "release"))
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksGated, directory, save_path=str(tmp_path / "m"), resources=TWO)
        assert future.result(timeout=WAIT).rank == 0
        assert future.get_info().progress.step == 1
        assert all(gone(pid) for pid in rank_pids(directory, 2).values())


def test_each_rank_gets_its_own_gpus_and_large_arguments(tmp_path):
    directory = str(tmp_path)
    payload = "x" * 100_000  # travels through a file of the run directory, which every rank reads
    with manager(tmp_path, gpus=["0", "1", "2", "3", "4"]) as made:
        trainer = made.get_trainer("t")
        future = trainer.train(
            RanksSeeGpus, directory, payload, save_path=str(tmp_path / "m"), resources={"procs_per_node": 2, "gpus_per_proc": 2}
        )
        assert future.result(timeout=WAIT).payload_length == len(payload)
        assert [open(os.path.join(directory, f"rank{k}.gpus")).read() for k in (0, 1)] == ["0,1", "2,3"]
        assert future.get_info().devices == ("0", "1", "2", "3")
        with pytest.raises(ValueError, match=r"asks for 6 GPUs \(3 processes x 2\), but trainer 't' hands out 5"):
            trainer.train(RanksSeeGpus, directory, save_path=str(tmp_path / "m2"),
                          resources={"procs_per_node": 3, "gpus_per_proc": 2})


def test_ranks_without_gpus_on_a_gpu_trainer_see_none(tmp_path):
    directory = str(tmp_path)
    with manager(tmp_path, gpus=["0"]) as made:
        made.get_trainer("t").train(RanksSeeGpus, directory, save_path=str(tmp_path / "m"), resources=TWO).result(timeout=WAIT)
        assert [open(os.path.join(directory, f"rank{k}.gpus")).read() for k in (0, 1)] == ["", ""]


def test_several_nodes_are_refused_before_anything_starts(tmp_path):
    with manager(tmp_path) as made:
        trainer = made.get_trainer("t")
        with pytest.raises(trainerkit.UnsupportedCapabilityError, match="multi_node"):
            trainer.train(RankExchange, save_path=str(tmp_path / "m"), resources={"nodes": 2, "procs_per_node": 2})
        assert trainer.list_trainings() == []


def test_a_multi_process_training_waits_queued_until_all_its_gpus_are_free(tmp_path):
    from tests.subprocess_modules import Gated

    first = tmp_path / "first"
    first.mkdir()
    pid_file, release_file = str(first / "pid"), str(first / "release")
    with manager(tmp_path, gpus=["0", "1"], max_workers=2) as made:
        trainer = made.get_trainer("t")
        holder = trainer.train(Gated, pid_file, release_file, save_path=str(tmp_path / "m1"), resources={"gpus_per_proc": 1})
        pids_in(pid_file)
        pair = trainer.train(RanksSeeGpus, str(tmp_path), save_path=str(tmp_path / "m2"),
                             resources={"procs_per_node": 2, "gpus_per_proc": 1})
        wait_until(lambda: pair.get_info().detail == "waiting for 2 GPUs (1 of 2 free)", "the pair to wait for GPUs")
        assert pair.get_info().status is TrainingStatus.QUEUED
        release(release_file)
        holder.result(timeout=WAIT)
        pair.result(timeout=WAIT)
        assert sorted(open(os.path.join(tmp_path, f"rank{k}.gpus")).read() for k in (0, 1)) == ["0", "1"]
        assert sorted(pair.get_info().devices) == ["0", "1"]


def test_a_rank_stopped_on_its_own_by_sigterm_fails_the_training_saying_so(tmp_path):
    directory = str(tmp_path)
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksGated, directory, save_path=str(tmp_path / "m"), resources=TWO)
        pids = rank_pids(directory, 2)
        os.kill(pids[1], signal.SIGTERM)
        with pytest.raises(TrainingCrashedError, match=rf"rank 1 \(pid {pids[1]}\) stopped on a SIGTERM sent to that rank alone"):
            future.result(timeout=WAIT)
        assert all(gone(pid) for pid in pids.values())


def test_a_rank_that_exits_with_a_code_fails_the_training_with_the_end_of_its_log(tmp_path):
    with manager(tmp_path) as made:
        future = made.get_trainer("t").train(RanksExit, str(tmp_path), save_path=str(tmp_path / "m"), resources=TWO)
        with pytest.raises(TrainingCrashedError, match=r"rank 1 \(pid \d+\) exited with code 5 before reporting an outcome"):
            future.result(timeout=WAIT)
        assert "rank 1 leaves now" in future.get_info().errors[0].traceback


def test_killing_the_worker_takes_every_rank_with_it(tmp_path):
    from trainerkit.owner import parse_owner
    from trainerkit.trainers.subprocess.rundir import RunDirectory

    directory = str(tmp_path)
    with manager(tmp_path) as made:
        trainer = made.get_trainer("t")
        future = trainer.train(RanksGated, directory, save_path=str(tmp_path / "m"), resources={"procs_per_node": 3})
        pids = rank_pids(directory, 3)
        record = RunDirectory(os.path.join(str(tmp_path / "state"), "runs", future.id)).read_worker()
        _, supervisor, _ = parse_owner(record.supervisor)
        os.kill(supervisor, signal.SIGKILL)
        with pytest.raises(TrainingCrashedError, match="was killed by SIGKILL"):
            future.result(timeout=WAIT)
        wait_until(lambda: all(gone(pid) for pid in pids.values()), "every rank to die with the worker")
