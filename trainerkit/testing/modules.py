"""Trainable modules that the backend conformance suite trains.

They live in the installed package, not in a test directory, so that any
process a backend starts (a worker process, a pod whose image has trainerkit
installed) can import them by their path, ``trainerkit.testing.modules:Quick``.
Their arguments are plain JSON values (strings and numbers), so every backend
can carry them to where the training runs.

Trainings that must be held in ``train`` (:class:`Blocking`) coordinate with
the test through files in a *gate directory* that both sides can see, never
through in-memory events: see :class:`trainerkit.testing.FileGate`.
"""

from __future__ import annotations

import os
import time

import trainerkit

#: File that :class:`Blocking` creates in its gate directory once it is inside ``train``.
ENTERED = "entered"
#: File whose existence in the gate directory lets :class:`Blocking` return.
RELEASE = "release"

#: Prefix of the lines that :class:`Chatty` prints.
LINE_PREFIX = "conformance line"

# How often Blocking looks at its gate. A short pause between looks keeps a
# held training from spinning a CPU; it is never used as timing by a test.
_POLL_INTERVAL = 0.01


class ConformanceError(Exception):
    """The exception :class:`Failing` raises: a custom type, defined in an
    importable module, so that a backend can rebuild it from its qualified
    name ``trainerkit.testing.modules.ConformanceError``."""


class Quick(trainerkit.ModuleBase):
    """Trains at once and remembers ``value``; saved and loaded by
    :class:`trainerkit.ModuleBase` (a pickle of the instance)."""

    def __init__(self, value: int) -> None:
        self.value = value

    @classmethod
    def train(cls, value: int = 1) -> "Quick":
        """Return a model holding ``value``."""
        return cls(value)


class Checkpointing(trainerkit.ModuleBase):
    """Counts ``epochs`` epochs, saving a checkpoint after each; it starts from
    :func:`trainerkit.latest_checkpoint` when there is one. ``started_at`` is
    the epoch it started from (0 on a fresh start)."""

    def __init__(self, epoch: int, started_at: int) -> None:
        self.epoch = epoch
        self.started_at = started_at

    @classmethod
    def train(cls, epochs: int = 2) -> "Checkpointing":
        """Run the epochs not yet done, checkpointing each; return the last state."""
        previous = trainerkit.latest_checkpoint()
        start = previous.epoch if previous is not None else 0
        model = cls(start, start)
        for epoch in range(start + 1, epochs + 1):
            model.epoch = epoch
            trainerkit.save_checkpoint(model)
        return model


class CrashesOnce(trainerkit.ModuleBase):
    """Its first attempt kills its own process (SIGKILL, a crash) after creating
    the file ``marker``; a later attempt, finding the file, returns ``value``."""

    def __init__(self, value: int) -> None:
        self.value = value

    @classmethod
    def train(cls, marker: str, value: int = 1) -> "CrashesOnce":
        """Crash the first time, return a model the next."""
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os.kill(os.getpid(), 9)  # SIGKILL (the number: os has no SIGKILL on every platform)
        return cls(value)


class Progress(trainerkit.ModuleBase):
    """Reports ``steps`` progress reports (``step`` 1..steps of ``total``
    steps, metric ``loss`` = 1/step), then returns."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    @classmethod
    def train(cls, steps: int = 3) -> "Progress":
        """Report each step, then return a model holding ``steps``."""
        for step in range(1, steps + 1):
            trainerkit.report_progress(step=step, total=steps, loss=1.0 / step)
        return cls(steps)


class Chatty(trainerkit.ModuleBase):
    """Prints ``lines`` lines ``conformance line <n>`` on standard output
    (flushed one by one), then returns."""

    @classmethod
    def train(cls, lines: int = 3) -> "Chatty":
        """Print the lines, then return a model."""
        for number in range(lines):
            print(f"{LINE_PREFIX} {number}", flush=True)
        return cls()


class Failing(trainerkit.ModuleBase):
    """Raises :class:`ConformanceError` with ``message`` from ``train``."""

    @classmethod
    def train(cls, message: str = "conformance failure") -> "Failing":
        """Raise :class:`ConformanceError` (never returns)."""
        raise ConformanceError(message)


class ChattyProgress(trainerkit.ModuleBase):
    """Prints ``lines`` lines like :class:`Chatty` and reports a progress step
    after each, then returns (for capabilities turned off per training)."""

    @classmethod
    def train(cls, lines: int = 2) -> "ChattyProgress":
        """Print and report each line, then return a model."""
        for number in range(lines):
            print(f"{LINE_PREFIX} {number}", flush=True)
            trainerkit.report_progress(step=number + 1, total=lines)
        return cls()


class Blocking(trainerkit.ModuleBase):
    """Holds its training inside ``train`` until the test releases it.

    Creates ``<gate>/entered`` once inside ``train``, then loops in pure
    Python, calling :func:`trainerkit.check_canceled` on every turn, until
    ``<gate>/release`` exists. A cancel therefore lands within one turn on
    every backend, including those that only honour cancellation points.
    """

    @classmethod
    def train(cls, gate: str) -> "Blocking":
        """Wait at the gate directory ``gate``; return a model once released."""
        with open(os.path.join(gate, ENTERED), "w", encoding="utf-8") as handle:
            handle.write(str(os.getpid()))
        release = os.path.join(gate, RELEASE)
        while not os.path.exists(release):
            trainerkit.check_canceled()
            time.sleep(_POLL_INTERVAL)
        return cls()


class NeedsArgs(trainerkit.ModuleBase):
    """Takes a required positional argument and a required keyword-only one,
    for the tests of arguments refused at submission."""

    def __init__(self, data: str, epochs: int) -> None:
        self.data = data
        self.epochs = epochs

    @classmethod
    def train(cls, data: str, *, epochs: int) -> "NeedsArgs":
        """Return a model holding its arguments."""
        return cls(data, epochs)


def exchange_ranks(value: int, timeout: float = 60.0) -> list[int]:
    """Every rank's ``value``, in rank order, exchanged over TCP through the
    torchrun rendezvous (``MASTER_ADDR:MASTER_PORT``) with the standard library
    only: rank 0 listens there, every other rank connects and sends its value,
    rank 0 sends the whole list back to each. Outside a multi-process training
    (no torchrun environment) it is ``[value]``.

    Raises:
        OSError: a peer could not be reached, or stopped answering, within
            ``timeout`` seconds.
    """
    import json
    import socket

    env = trainerkit.distributed_env()
    if env is None:
        return [value]
    if env.rank == 0:
        values: dict[int, int] = {0: value}
        peers = []
        with socket.create_server((env.master_addr, env.master_port), backlog=env.world_size) as server:
            server.settimeout(timeout)
            while len(values) < env.world_size:
                peer, _ = server.accept()
                peer.settimeout(timeout)
                line = peer.makefile("r", encoding="utf-8").readline()
                if not line:  # a connection probe (a node waiting until rank 0 accepts connections)
                    peer.close()
                    continue
                message = json.loads(line)
                values[int(message["rank"])] = int(message["value"])
                peers.append(peer)
        everything = [values[rank] for rank in range(env.world_size)]
        for peer in peers:
            with peer:
                peer.sendall((json.dumps(everything) + "\n").encode("utf-8"))
        return everything
    deadline = time.monotonic() + timeout
    while True:  # rank 0 may not listen yet
        try:
            connection = socket.create_connection((env.master_addr, env.master_port), timeout=timeout)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(_POLL_INTERVAL)
    with connection:
        connection.sendall((json.dumps({"rank": env.rank, "value": value}) + "\n").encode("utf-8"))
        return [int(item) for item in json.loads(connection.makefile("r", encoding="utf-8").readline())]


class RankExchange(trainerkit.ModuleBase):
    """A multi-process training with the standard library only: each rank
    reads its torchrun environment (:func:`trainerkit.distributed_env`) and
    sends ``value + rank`` to the others (:func:`exchange_ranks`); the model
    keeps what rank 0 saw: its rank, the world size and every rank's value."""

    def __init__(self, rank: int, world_size: int, values: list[int]) -> None:
        self.rank = rank
        self.world_size = world_size
        self.values = values

    @classmethod
    def train(cls, value: int = 0) -> "RankExchange":
        """Exchange ``value + rank`` with every rank; return what this rank saw."""
        env = trainerkit.distributed_env()
        rank, world_size = (env.rank, env.world_size) if env else (0, 1)
        print(f"rank {rank} of {world_size}", flush=True)
        return cls(rank, world_size, exchange_ranks(value + rank))

