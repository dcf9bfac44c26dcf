"""Trainable modules used by the tests (importable as tests.training_modules,
so child processes can load them too)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import trainerkit


def first_time(marker: str) -> bool:
    """True the first time a training reaches this point, across attempts and
    processes: creates the file ``marker`` (holding this pid) when it does not exist."""
    if os.path.exists(marker):
        return False
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    return True


class Adder(trainerkit.ModuleBase):
    """Trains instantly: remembers a + b."""

    def __init__(self, total):
        self.total = total

    @classmethod
    def train(cls, a, b=1, *, tag=None):
        return cls(a + b)


class JsonModel:
    """Plain class with the module shape (no ModuleBase), like a caikit module."""

    def __init__(self, value):
        self.value = value

    @classmethod
    def train(cls, value):
        return cls(value)

    def save(self, path):
        with open(os.path.join(path, "value.json"), "w") as handle:
            json.dump({"value": self.value}, handle)

    @classmethod
    def load(cls, path):
        with open(os.path.join(path, "value.json")) as handle:
            return cls(json.load(handle)["value"])


class Boom(ValueError):
    pass


class Failing(trainerkit.ModuleBase):
    @classmethod
    def train(cls, message="bad data"):
        raise Boom(message)


class Gate:
    """Events a test uses to hold a training inside train()."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()


class Blocking(trainerkit.ModuleBase):
    """Waits for its gate to open; reports progress while waiting."""

    @classmethod
    def train(cls, gate, steps=0):
        gate.entered.set()
        for step in range(steps):
            trainerkit.report_progress(step=step + 1, total=steps, loss=1.0 / (step + 1))
        while not gate.release.wait(0.01):
            trainerkit.check_canceled()
        return cls()


class PurePythonLoop(trainerkit.ModuleBase):
    """Never checks for cancellation: only an interrupt can stop it."""

    @classmethod
    def train(cls, gate):
        gate.entered.set()
        counter = 0
        while True:
            counter += 1


class BadSave(trainerkit.ModuleBase):
    @classmethod
    def train(cls):
        return cls()

    def save(self, path):
        with open(os.path.join(path, "part-1"), "w") as handle:
            handle.write("half")
        raise OSError("disk full while saving")


class SlowEpochs(trainerkit.ModuleBase):
    @classmethod
    def train(cls, epochs=3, delay=0.0):
        for epoch in range(epochs):
            time.sleep(delay)
            trainerkit.report_progress(step=epoch + 1, total=epochs, accuracy=0.5 + epoch / 10)
        return cls()


class ExitsWith(trainerkit.ModuleBase):
    """train() leaves the interpreter: sys.exit(code), or Ctrl-C when code is None."""

    @classmethod
    def train(cls, code=3):
        if code is None:
            raise KeyboardInterrupt
        sys.exit(code)


class ReturnsNone(trainerkit.ModuleBase):
    """A train() that forgets to return the trained instance."""

    @classmethod
    def train(cls):
        cls()
