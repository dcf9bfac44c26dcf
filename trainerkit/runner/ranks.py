"""The local rank processes of one multi-process training: start, watch, stop.

A training with ``Resources(procs_per_node=P)`` runs P processes on each of
its nodes, one per rank, each with the torchrun environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), so that
``torch.distributed.init_process_group()`` needs no arguments. This module is
the part every backend shares:

* :class:`RankLayout`: where a node sits in the training (its node rank, how
  many nodes and processes per node, the rendezvous address) and the torchrun
  variables of each of its local ranks (:meth:`RankLayout.environ`).
* :func:`free_port`: a free TCP port for ``MASTER_PORT`` on one machine.
* :class:`LocalRanks`: the P processes of one node. Processes are started
  here by exec (:meth:`LocalRanks.start`) or elsewhere and handed over
  (:meth:`LocalRanks.adopt`, e.g. a fork of a warm interpreter); either way
  each is a child of this process, in a process group of its own.
  :meth:`LocalRanks.poll` reaps the ranks that ended (without blocking) and
  returns them as :class:`RankExit` (which rank, pid, exit code or signal, in
  words); :attr:`LocalRanks.failure` is the first rank that failed;
  :meth:`LocalRanks.stop` sends SIGTERM to every rank's process group and
  :meth:`LocalRanks.escalate` SIGKILL once the grace period is over.
  :meth:`LocalRanks.wait` is the blocking loop (a launcher with nothing else
  to do, such as a Kubernetes pod): it stops the others when one rank fails
  and returns when every rank has exited.

Usage in a launcher (one node of a Kubernetes Indexed Job)::

    layout = RankLayout(procs_per_node=4, nodes=2, node_rank=int(os.environ["JOB_COMPLETION_INDEX"]),
                        master_addr="train-0.train", master_port=29500)
    ranks = LocalRanks(layout, grace_period=30)
    for local_rank in range(layout.procs_per_node):
        ranks.start(local_rank, [sys.executable, "-m", "trainerkit.runner", "--spec", path],
                    env={**os.environ, **layout.environ(local_rank)})
    failure = ranks.wait()          # None: every rank exited 0
    if failure is not None:
        print(failure.describe())   # "rank 5 (pid 812) was killed by SIGKILL (9)"

Why by hand: torchrun (``torch.distributed.run``) does this, but it needs
torch in the launching process (trainerkit's core has no torch) and it starts
ranks only by exec, so ranks could not start from a prestarted interpreter;
``multiprocessing`` loses which rank died and how, and kills or orphans its
children with their parent (see docs/subprocess.md). What is left is small:
``subprocess``/``os.waitid`` and process groups.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from typing import Mapping, Optional, Sequence

from .exits import describe_exit, signal_hint

#: The torchrun variables every rank gets, in the order torchrun documents them.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")

#: The address ranks of a one-node training meet at.
LOCALHOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class RankLayout:
    """One node's place in a multi-process training.

    Attributes:
        procs_per_node: rank processes on each node (``LOCAL_WORLD_SIZE``).
        nodes: nodes of the training (``WORLD_SIZE`` is ``nodes * procs_per_node``).
        node_rank: this node (``NODE_RANK``, 0 to ``nodes - 1``); its local rank
            ``k`` is the global rank ``node_rank * procs_per_node + k``.
        master_addr: where rank 0 listens (``MASTER_ADDR``): ``127.0.0.1`` on
            one node, rank 0's host name across nodes.
        master_port: the rendezvous port (``MASTER_PORT``, 1 to 65535).
    """

    procs_per_node: int
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = LOCALHOST
    master_port: int = 29500

    def __post_init__(self) -> None:
        for name, least in (("procs_per_node", 1), ("nodes", 1), ("node_rank", 0), ("master_port", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"RankLayout {name} must be an integer >= {least}, got {value!r}")
        if self.node_rank >= self.nodes:
            raise ValueError(f"RankLayout node_rank must be below nodes ({self.nodes}), got {self.node_rank}")
        if self.master_port > 65535:
            raise ValueError(f"RankLayout master_port must be a TCP port (1 to 65535), got {self.master_port}")
        if not isinstance(self.master_addr, str) or not self.master_addr:
            raise ValueError(f"RankLayout master_addr must be a host name or address, got {self.master_addr!r}")

    @property
    def world_size(self) -> int:
        """Processes of the whole training."""
        return self.nodes * self.procs_per_node

    def rank(self, local_rank: int) -> int:
        """The global rank of this node's ``local_rank``."""
        self._check(local_rank)
        return self.node_rank * self.procs_per_node + local_rank

    def environ(self, local_rank: int) -> dict[str, str]:
        """The torchrun variables of this node's ``local_rank``."""
        return {
            "RANK": str(self.rank(local_rank)),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(self.procs_per_node),
            "NODE_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def _check(self, local_rank: int) -> None:
        if isinstance(local_rank, bool) or not isinstance(local_rank, int) or not 0 <= local_rank < self.procs_per_node:
            raise ValueError(f"local rank must be 0 to {self.procs_per_node - 1}, got {local_rank!r}")


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that nothing listens on at ``host`` right now (the kernel picks it).

    As with torchrun's own choice, another process could take it before rank 0
    binds it; the kernel hands out ports in turn, so that is rare.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class RankExit:
    """How one rank process ended.

    Attributes:
        local_rank: its local rank on this node.
        rank: its global rank.
        pid: its process id.
        returncode: as :mod:`subprocess` says it: the exit code, or minus the
            signal that killed it.
    """

    local_rank: int
    rank: int
    pid: int
    returncode: int

    @property
    def failed(self) -> bool:
        """Anything but exit code 0."""
        return self.returncode != 0

    def describe(self) -> str:
        """``rank 1 (pid 4242) was killed by SIGKILL (9)`` / ``... exited with code 1``."""
        return f"rank {self.rank} (pid {self.pid}) {describe_exit(self.returncode)}"

    def hint(self) -> str:
        """What the signal that killed it usually means (``": ..."``), or nothing."""
        return signal_hint(self.returncode)


class LocalRanks:
    """The rank processes of one training on this node (see the module docstring).

    Not thread-safe: one thread starts, polls and stops them. Every rank must be
    a child of this process, leading a process group of its own (``start`` does
    both; a caller that forks calls ``os.setpgid(0, 0)`` in the child).
    """

    def __init__(self, layout: RankLayout, grace_period: float = 10.0) -> None:
        if isinstance(grace_period, bool) or not isinstance(grace_period, (int, float)) or grace_period < 0:
            raise ValueError(f"grace_period must be seconds >= 0, got {grace_period!r}")
        self.layout = layout
        self.grace_period = float(grace_period)
        self._running: dict[int, int] = {}  # local rank -> pid
        self._popens: dict[int, subprocess.Popen] = {}
        self.exits: dict[int, RankExit] = {}  # local rank -> how it ended, in the order they ended
        self.failure: Optional[RankExit] = None  # the first rank that failed
        self.stopping = False
        self.kill_deadline: Optional[float] = None

    # -- starting

    def start(
        self,
        local_rank: int,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Optional[str] = None,
        stdout: Optional[int] = None,
        stderr: Optional[int] = None,
    ) -> int:
        """Exec ``argv`` as ``local_rank`` in a session (and process group) of its
        own, with exactly ``env`` (add :meth:`RankLayout.environ` to it); returns
        its pid. ``stdout``/``stderr`` are file descriptors (None: this process's).

        Raises:
            ValueError: the local rank is out of range or already started.
            OSError: the program cannot be started.
        """
        self._check_new(local_rank)
        popen = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True,
        )
        self._popens[local_rank] = popen
        self._running[local_rank] = popen.pid
        return popen.pid

    def adopt(self, local_rank: int, pid: int) -> None:
        """Watch ``pid`` (a child of this process that leads its own process
        group, e.g. a fork of this interpreter) as ``local_rank``."""
        self._check_new(local_rank)
        self._running[local_rank] = pid

    def _check_new(self, local_rank: int) -> None:
        self.layout._check(local_rank)
        if local_rank in self._running or local_rank in self.exits:
            raise ValueError(f"local rank {local_rank} was started already")

    # -- watching

    @property
    def pids(self) -> dict[int, int]:
        """Local rank -> pid of the ranks still running."""
        return dict(self._running)

    @property
    def all_exited(self) -> bool:
        """No rank is running (true before any was started, too)."""
        return not self._running

    def poll(self) -> list[RankExit]:
        """Reap the ranks that have ended since the last call, without blocking.

        Whatever is left of an ended rank's process group (processes it
        started) is killed before the rank is reaped, while its pid, the
        group's id, cannot have been reused.
        """
        ended: list[RankExit] = []
        for local_rank, pid in list(self._running.items()):
            try:
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped by someone else: nothing more to know
                status = 0
            else:
                if exited is None:
                    continue
                _kill_group(pid, signal.SIGKILL)
                try:
                    _, status = os.waitpid(pid, 0)
                except ChildProcessError:
                    status = 0
            returncode = os.waitstatus_to_exitcode(status)
            popen = self._popens.pop(local_rank, None)
            if popen is not None:
                popen.returncode = returncode  # reaped here: Popen must not wait for it again
            del self._running[local_rank]
            ended.append(self._record(local_rank, pid, returncode))
        return ended

    def _record(self, local_rank: int, pid: int, returncode: int) -> RankExit:
        exit = RankExit(local_rank=local_rank, rank=self.layout.rank(local_rank), pid=pid, returncode=returncode)
        self.exits[local_rank] = exit
        if exit.failed and self.failure is None and not self.stopping:
            self.failure = exit
        return exit

    # -- stopping

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to every running rank's process group and start the
        grace period, after which :meth:`escalate` kills what is left. Ranks
        that end after this are not failures (they were stopped)."""
        self.stopping = True
        for pid in self._running.values():
            _kill_group(pid, signum)
        if self.kill_deadline is None:
            self.kill_deadline = time.monotonic() + self.grace_period

    def escalate(self, now: Optional[float] = None) -> bool:
        """SIGKILL to every running rank's group once the grace period of
        :meth:`stop` is over; True when it did."""
        now = time.monotonic() if now is None else now
        if self.kill_deadline is None or now < self.kill_deadline or not self._running:
            return False
        for pid in self._running.values():
            _kill_group(pid, signal.SIGKILL)
        return True

    def kill(self) -> None:
        """SIGKILL every running rank's process group now."""
        self.stopping = True
        for pid in self._running.values():
            _kill_group(pid, signal.SIGKILL)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> Optional[RankExit]:
        """Watch until every rank has exited: when one fails, stop the others
        (SIGTERM, SIGKILL after the grace period). Returns the first failure, or
        None when every rank exited 0.

        Raises:
            TimeoutError: ``timeout`` seconds passed with ranks still running
                (they are left running; call :meth:`stop` or :meth:`kill`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self.failure is not None and not self.stopping:
                self.stop()
            if self.all_exited:
                return self.failure
            now = time.monotonic()
            if self.escalate(now):
                self.kill_deadline = None
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"ranks {sorted(self.layout.rank(k) for k in self._running)} are still running")
            time.sleep(interval)


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signum)
        except OSError:
            pass
