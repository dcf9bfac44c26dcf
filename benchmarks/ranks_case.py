"""Multi-process trainings: from ``train()`` to every rank running.

trainerkit: ``train(RankProbe, address, resources=Resources(procs_per_node=4))``
on an idle SUBPROCESS trainer (``start_method: prestarted``): the clock stops
when the fourth rank has called in from inside ``train`` (each connects to a
TCP listener of the benchmark and sends its ``RANK``). Baseline: a bare
torchrun-style launch, the floor of "start 4 ranks": 4 stdlib Python processes
exec'd at once with the torchrun variables, each in a session of its own,
calling in the same way as their first act. Neither side's teardown (release,
save, exit) is timed; each round begins ``SETTLE`` seconds after the previous
one ended, time for the replacement worker to come up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from .harness import Figure, Goal, Row, RowSpec, Settings, Stopwatch, alternate, check, counted, guarded, paired
from .subjects import trainerkit_trainer
from .trivial_modules import RankProbe

NAME = "ranks"
RANKS = 4

VS_LAUNCH = RowSpec(
    "ranks.start_all_running.vs_launch",
    f"SUBPROCESS (prestarted) train() with procs_per_node={RANKS} until every rank is inside train",
    f"bare launch of {RANKS} stdlib processes with the torchrun env",
    Goal("ratio", "<=", 1.0, "<= 1.0x"),
)
ROWS = (VS_LAUNCH,)

#: The baseline rank: call in with its RANK, then wait for the release byte.
_BARE_RANK = (
    "import os, socket\n"
    "host, port = os.environ['PROBE_ADDRESS'].rsplit(':', 1)\n"
    "with socket.create_connection((host, int(port))) as s:\n"
    "    s.sendall(os.environ['RANK'].encode() + b'\\n')\n"
    "    s.recv(1)\n"
)


def run(settings: Settings) -> list[Row]:
    return guarded(ROWS, lambda: _rows(settings)) if settings.wants(*ROWS) else []


class _Listener:
    """The TCP listener every rank calls in to; ``wait_all`` returns when all have."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.server.settimeout(120)
        self.address = "%s:%d" % self.server.getsockname()[:2]

    def wait_all(self, count: int) -> list[socket.socket]:
        peers, ranks = [], set()
        while len(peers) < count:
            peer, _ = self.server.accept()
            ranks.add(peer.makefile("rb").readline().strip())
            peers.append(peer)
        check(ranks == {str(k).encode() for k in range(count)}, f"ranks called in as {sorted(ranks)}")
        return peers

    @staticmethod
    def release(peers: list[socket.socket]) -> None:
        for peer in peers:
            with peer:
                peer.sendall(b"!")

    def close(self) -> None:
        self.server.close()


def _rows(settings: Settings) -> list[Row]:
    repeats = settings.size(10, 2)
    settle = settings.size(1, 0.5)
    with contextlib.ExitStack() as stack:
        built = stack.enter_context(trainerkit_trainer("SUBPROCESS", max_workers=1))
        models = stack.enter_context(tempfile.TemporaryDirectory(prefix="trainerkit-bench-models-"))
        listener = _Listener()
        stack.callback(listener.close)
        counter = iter(range(1 << 30))

        def ours() -> float:
            time.sleep(settle)  # idle: the replacement worker has had time to start
            return _trainerkit_start(built.trainer, listener, os.path.join(models, str(next(counter))))

        def bare() -> float:
            time.sleep(settle)
            return _bare_start(listener)

        runners: dict[str, Callable[[], float]] = {"trainerkit": ours, "bare": bare}
        times = alternate(repeats, runners, warm_up=not settings.quick)
        notes = [
            f"{counted(repeats, 'interleaved round')}, {RANKS} ranks on {os.cpu_count()} CPUs; each round "
            f"starts {settle} s after the previous one ended",
            *built.notes,
        ]
    return [
        VS_LAUNCH.measured(
            Figure(times["trainerkit"], "s"),
            Figure(times["bare"], "s"),
            paired("ratio", times["trainerkit"], times["bare"]),
            notes=notes,
        )
    ]


def _trainerkit_start(trainer: Any, listener: _Listener, save_path: str) -> float:
    import trainerkit

    with Stopwatch() as watch:
        future = trainer.train(
            RankProbe, listener.address, save_path=save_path, resources=trainerkit.Resources(procs_per_node=RANKS)
        )
        peers = listener.wait_all(RANKS)
    listener.release(peers)
    model = future.result(timeout=120)
    check(model.rank == 0 and model.world_size == RANKS, f"SUBPROCESS returned {vars(model)}")
    return watch.seconds


def _bare_start(listener: _Listener) -> float:
    base = dict(os.environ, PROBE_ADDRESS=listener.address, MASTER_ADDR="127.0.0.1", MASTER_PORT="29500",
                WORLD_SIZE=str(RANKS), LOCAL_WORLD_SIZE=str(RANKS), NODE_RANK="0")
    with Stopwatch() as watch:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _BARE_RANK], env=dict(base, RANK=str(rank), LOCAL_RANK=str(rank)),
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            for rank in range(RANKS)
        ]
        peers = listener.wait_all(RANKS)
    listener.release(peers)
    codes = [process.wait(timeout=120) for process in processes]
    check(codes == [0] * RANKS, f"the bare ranks exited with {codes}")
    return watch.seconds

