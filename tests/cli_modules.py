"""Trainable modules (and one trainer type) used by the ``trainerkit`` command
tests; importable as ``tests.cli_modules`` so the command's processes (and
SUBPROCESS workers) load them too."""

from __future__ import annotations

import json
import os
import time

import trainerkit
from trainerkit.trainer import ModelTrainerBase
from trainerkit.trainers.local import LocalModelTrainer


class EchoArguments(trainerkit.ModuleBase):
    """Keeps the keyword arguments it was trained with, with their type names."""

    FILE = "received.json"

    def __init__(self, received):
        self.received = received

    def __repr__(self):
        return f"<EchoArguments {sorted(self.received)}>"

    @classmethod
    def train(cls, **kwargs):
        return cls({key: [type(value).__name__, value] for key, value in kwargs.items()})

    def save(self, path):
        with open(os.path.join(path, self.FILE), "w", encoding="utf-8") as handle:
            json.dump(self.received, handle)

    @classmethod
    def load(cls, path):
        with open(os.path.join(path, cls.FILE), encoding="utf-8") as handle:
            return cls(json.load(handle))


class Chatty(trainerkit.ModuleBase):
    """Prints to stdout while training (LOCAL trainings print into the command's process)."""

    @classmethod
    def train(cls, lines=3):
        for line in range(lines):
            print(f"chatty line {line}", flush=True)
            trainerkit.report_progress(step=line + 1, total=lines)
        return cls()


class Ticker(trainerkit.ModuleBase):
    """Prints ``tick N`` and reports step N every ``delay`` seconds."""

    @classmethod
    def train(cls, steps=5, delay=0.0):
        for step in range(1, steps + 1):
            print(f"tick {step}", flush=True)
            trainerkit.report_progress(step=step, total=steps, tick=step)
            time.sleep(delay)
        return cls()


class CliTestLocalTrainer(LocalModelTrainer):
    """A LOCAL trainer under another type name, declared with ``import_class:``."""

    name = "CLI_TEST_LOCAL"


class NoLogsLocalTrainer(LocalModelTrainer):
    """A trainer type that keeps no per-training logs (the base class's default)."""

    name = "CLI_TEST_NO_LOGS"
    training_logs = ModelTrainerBase.training_logs
