"""Trainable modules for the KUBERNETES tests.

They run inside pods of the fake cluster, which are separate local processes,
so they coordinate with the test through files in a directory both can see
(never through in-memory events).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import trainerkit

ENTERED, RELEASE = "entered", "release"


class FileGated(trainerkit.ModuleBase):
    """Reports ``steps`` progress reports, prints ``lines`` lines, creates
    ``gate_dir/entered``, then waits (a cancellation point) until
    ``gate_dir/release`` exists."""

    @classmethod
    def train(cls, gate_dir: str, steps: int = 0, lines: int = 0) -> "FileGated":
        for step in range(steps):
            trainerkit.report_progress(step=step + 1, total=steps, loss=1.0 / (step + 1))
        for number in range(lines):
            print(f"line {number}", flush=True)
        with open(os.path.join(gate_dir, ENTERED), "w"):
            pass
        while not os.path.exists(os.path.join(gate_dir, RELEASE)):
            trainerkit.check_canceled()
            time.sleep(0.02)
        return cls()


class Chatty(trainerkit.ModuleBase):
    """Prints ``lines`` lines on stdout and one on stderr, then returns."""

    @classmethod
    def train(cls, lines: int = 3) -> "Chatty":
        for number in range(lines):
            print(f"epoch {number}", flush=True)
        print("done on stderr", file=sys.stderr, flush=True)
        return cls()


class SelfKilled(trainerkit.ModuleBase):
    """Dies by SIGKILL inside train(), as the kernel's OOM killer would kill it."""

    @classmethod
    def train(cls) -> "SelfKilled":
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class Sleeper(trainerkit.ModuleBase):
    """Sleeps ``seconds`` (for deadlines)."""

    @classmethod
    def train(cls, seconds: float = 60.0) -> "Sleeper":
        time.sleep(seconds)
        return cls()


class SetModel:
    """A plain module whose argument is a set: only pickle can carry it."""

    def __init__(self, values):
        self.values = sorted(values)

    @classmethod
    def train(cls, values):
        if not isinstance(values, set):
            raise TypeError(f"values arrived as {type(values).__name__}, not set")
        return cls(values)

    def save(self, path):
        with open(os.path.join(path, "values.json"), "w") as handle:
            json.dump(self.values, handle)

    @classmethod
    def load(cls, path):
        with open(os.path.join(path, "values.json")) as handle:
            return cls(set(json.load(handle)))


class EnvEcho:
    """Remembers the values of the environment variables ``names`` in the pod."""

    def __init__(self, values):
        self.values = values

    @classmethod
    def train(cls, names):
        return cls({name: os.environ.get(name) for name in names})

    def save(self, path):
        with open(os.path.join(path, "env.json"), "w") as handle:
            json.dump(self.values, handle)

    @classmethod
    def load(cls, path):
        with open(os.path.join(path, "env.json")) as handle:
            return cls(json.load(handle))
