"""trainerkit.runner.ranks: the local rank processes of one training, started
with the torchrun environment, watched, and stopped together when one fails."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from trainerkit.runner.ranks import TORCHRUN_VARIABLES, LocalRanks, RankExit, RankLayout, free_port
from tests.conftest import REPO_ROOT

# A rank that exchanges its rank number with the others (stdlib only), then prints the list.
EXCHANGE = "from trainerkit.testing.modules import exchange_ranks; import os; print(exchange_ranks(int(os.environ['RANK'])))"
# A rank that sleeps until it is stopped.
SLEEPS = "import time; time.sleep(600)"


def _env(layout: RankLayout, local_rank: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in TORCHRUN_VARIABLES}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **layout.environ(local_rank)}


def _start(ranks: LocalRanks, local_rank: int, code: str, tmp_path, **kwargs) -> int:
    out = os.open(str(tmp_path / f"rank{local_rank}.out"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return ranks.start(local_rank, [sys.executable, "-c", code], _env(ranks.layout, local_rank),
                           stdout=out, stderr=out, **kwargs)
    finally:
        os.close(out)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_layout_gives_each_local_rank_the_torchrun_variables():
    layout = RankLayout(procs_per_node=4, nodes=2, node_rank=1, master_addr="train-0.train", master_port=29400)
    assert layout.world_size == 8
    assert layout.environ(2) == {
        "RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4", "NODE_RANK": "1",
        "MASTER_ADDR": "train-0.train", "MASTER_PORT": "29400",
    }
    assert sorted(layout.environ(0)) == sorted(TORCHRUN_VARIABLES)
    with pytest.raises(ValueError, match="local rank must be 0 to 3"):
        layout.environ(4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(procs_per_node=0), "procs_per_node must be an integer >= 1"),
    (dict(procs_per_node=2, nodes=2, node_rank=2), "node_rank must be below nodes"),
    (dict(procs_per_node=2, master_port=70000), "master_port must be a TCP port"),
    (dict(procs_per_node=2, master_addr=""), "master_addr must be a host name"),
    (dict(procs_per_node=True), "procs_per_node must be an integer"),
])
def test_a_bad_layout_is_refused_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RankLayout(**kwargs)


def test_free_port_is_bindable():
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_ranks_meet_at_the_master_address_and_exchange_values(tmp_path):
    layout = RankLayout(procs_per_node=3, master_port=free_port())
    ranks = LocalRanks(layout, grace_period=5)
    pids = [_start(ranks, k, EXCHANGE, tmp_path) for k in range(3)]
    assert ranks.pids == dict(enumerate(pids))
    assert ranks.wait(timeout=60) is None
    assert ranks.all_exited and ranks.failure is None
    assert [ranks.exits[k].returncode for k in range(3)] == [0, 0, 0]
    for k in range(3):
        assert (tmp_path / f"rank{k}.out").read_text().strip() == "[0, 1, 2]"


def test_a_rank_killed_by_a_signal_stops_the_others_and_is_named(tmp_path):
    layout = RankLayout(procs_per_node=3, master_port=free_port())
    ranks = LocalRanks(layout, grace_period=5)
    others = [_start(ranks, 0, SLEEPS, tmp_path), _start(ranks, 2, SLEEPS, tmp_path)]
    victim = _start(ranks, 1, SLEEPS, tmp_path)
    os.kill(victim, signal.SIGKILL)
    failure = ranks.wait(timeout=60)
    assert failure == RankExit(local_rank=1, rank=1, pid=victim, returncode=-signal.SIGKILL)
    assert failure.describe() == f"rank 1 (pid {victim}) was killed by SIGKILL (9)"
    assert "out-of-memory" in failure.hint()
    # The others were stopped (SIGTERM), which is not a failure of theirs.
    assert {k: ranks.exits[k].returncode for k in (0, 2)} == {0: -signal.SIGTERM, 2: -signal.SIGTERM}
    assert all(_gone(pid) for pid in others + [victim])


def test_a_failing_rank_on_another_node_is_named_by_its_global_rank(tmp_path):
    layout = RankLayout(procs_per_node=2, nodes=2, node_rank=1, master_port=free_port())
    ranks = LocalRanks(layout, grace_period=5)
    _start(ranks, 0, SLEEPS, tmp_path)
    pid = _start(ranks, 1, "import sys; sys.exit(7)", tmp_path)
    failure = ranks.wait(timeout=60)
    assert failure is not None and (failure.local_rank, failure.rank, failure.returncode) == (1, 3, 7)
    assert failure.describe() == f"rank 3 (pid {pid}) exited with code 7"


def test_a_rank_that_ignores_sigterm_is_killed_after_the_grace_period_with_its_children(tmp_path):
    layout = RankLayout(procs_per_node=2, master_port=free_port())
    ranks = LocalRanks(layout, grace_period=0.5)
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    _start(ranks, 0, stubborn, tmp_path)
    _start(ranks, 1, "import sys; sys.exit(1)", tmp_path)
    out = tmp_path / "rank0.out"
    deadline = time.monotonic() + 60
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(out.read_text().split()[0])
    failure = ranks.wait(timeout=60)
    assert failure is not None and failure.rank == 1
    assert ranks.exits[0].returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild), "a process the rank started outlived it"


def test_a_forked_rank_is_adopted_and_watched(tmp_path):
    layout = RankLayout(procs_per_node=2, master_port=free_port())
    ranks = LocalRanks(layout)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os._exit(4)
    ranks.adopt(1, pid)
    with pytest.raises(ValueError, match="local rank 1 was started already"):
        ranks.adopt(1, pid)
    assert ranks.wait(timeout=60) == RankExit(local_rank=1, rank=1, pid=pid, returncode=4)


def test_wait_with_a_timeout_leaves_ranks_running_and_says_which(tmp_path):
    ranks = LocalRanks(RankLayout(procs_per_node=1, master_port=free_port()), grace_period=1)
    pid = _start(ranks, 0, SLEEPS, tmp_path)
    with pytest.raises(TimeoutError, match=r"ranks \[0\] are still running"):
        ranks.wait(timeout=0.2)
    assert not _gone(pid)
    ranks.kill()
    assert ranks.wait(timeout=60) is None  # killed on request: not a failure
    assert ranks.exits[0].returncode == -signal.SIGKILL


def test_a_program_that_cannot_start_is_an_oserror(tmp_path):
    ranks = LocalRanks(RankLayout(procs_per_node=1))
    with pytest.raises(OSError):
        ranks.start(0, [str(tmp_path / "missing")], os.environ)
    assert ranks.all_exited
