"""Trivial trainable modules and functions the benchmarks run.

Standard library only, so that importing this module in a child process (a
spawn start, a SUBPROCESS training) costs the same for trainerkit and its
baselines: what a benchmark measures is the machinery, not this code.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time


class Trivial:
    """Trains at once. ``value`` travels through train, save and load, so a
    benchmark can check that the model it got back is the one it asked for."""

    MODEL_FILE = "trivial.json"

    def __init__(self, value: int) -> None:
        self.value = value

    @classmethod
    def train(cls, value: int) -> "Trivial":
        return cls(value)

    def save(self, path: str) -> None:
        with open(os.path.join(path, self.MODEL_FILE), "w", encoding="utf-8") as handle:
            json.dump({"value": self.value}, handle)

    @classmethod
    def load(cls, path: str) -> "Trivial":
        with open(os.path.join(path, cls.MODEL_FILE), encoding="utf-8") as handle:
            return cls(json.load(handle)["value"])


def do_nothing() -> None:
    """The target of the bare spawn baseline."""


class LatencyProbe:
    """Clock readings taken inside a training, for the latency case.

    The training stamps ``entered`` as its first act, then waits for
    ``release`` (opened once the caller is blocked in ``result()``), stamps
    ``returned`` and returns.
    """

    def __init__(self) -> None:
        self.entered_at = 0.0
        self.returned_at = 0.0
        self.entered = threading.Event()
        self.release = threading.Event()


class Stamped(Trivial):
    """A trivial module whose ``train`` stamps a :class:`LatencyProbe`."""

    @classmethod
    def train(cls, probe: LatencyProbe) -> "Stamped":  # type: ignore[override]
        probe.entered_at = time.perf_counter()
        probe.entered.set()
        probe.release.wait()
        instance = cls(0)
        probe.returned_at = time.perf_counter()
        return instance


class RankProbe(Trivial):
    """One rank of a multi-process training: as its first act it connects to
    ``address`` (``host:port``) and sends its ``RANK``, then waits for one byte
    (the release) and returns, keeping its rank and the world size."""

    @classmethod
    def train(cls, address: str) -> "RankProbe":  # type: ignore[override]
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(os.environ.get("RANK", "0").encode() + b"\n")
            connection.recv(1)
        instance = cls(0)
        instance.rank = int(os.environ.get("RANK", "0"))
        instance.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        return instance

    def save(self, path: str) -> None:
        with open(os.path.join(path, self.MODEL_FILE), "w", encoding="utf-8") as handle:
            json.dump({"value": self.value, "rank": self.rank, "world_size": self.world_size}, handle)

    @classmethod
    def load(cls, path: str) -> "RankProbe":
        with open(os.path.join(path, cls.MODEL_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
        instance = cls(data["value"])
        instance.rank, instance.world_size = data["rank"], data["world_size"]
        return instance
