"""Helpers of the records tests: modules that wait on files (so that a second
process can hold them mid-training) and a handle on a child process running
``tests/records_child.py``."""

from __future__ import annotations

import functools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

import trainerkit
from tests import waiting
from tests.training_modules import JsonModel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 60  # upper bound for anything a child does; tests end far sooner


wait_until = functools.partial(waiting.wait_until, timeout=WAIT)


class FileGated(trainerkit.ModuleBase):
    """Creates the file ``started``, then trains until the file ``gate`` exists;
    the model is a JsonModel holding ``value``."""

    @classmethod
    def train(cls, started: str, gate: str, value: int = 0) -> JsonModel:
        with open(started, "w"):
            pass
        deadline = time.monotonic() + WAIT
        while not os.path.exists(gate):
            trainerkit.check_canceled()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate file {gate} never appeared")
            time.sleep(0.01)
        return JsonModel(value)


class Hangs(trainerkit.ModuleBase):
    """Never returns: stands for a training whose process gets killed."""

    @classmethod
    def train(cls) -> "Hangs":
        threading.Event().wait()
        raise AssertionError("unreachable")


def local_config(state_dir: str, name: str = "default", **config: Any) -> dict:
    return {
        "model_management": {
            "trainers": {name: {"type": "LOCAL", "config": {"state_dir": state_dir, **config}}}
        }
    }


class Child:
    """``python -m tests.records_child <scenario> <args>``: a second process
    whose JSON lines on stdout are read with :meth:`message`."""

    def __init__(self, scenario: str, *args: str) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.records_child", scenario, *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def message(self, timeout: float = WAIT) -> dict:
        """The next JSON line the child printed."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child printed nothing within {timeout} s:\n{self.stderr()}") from None
        if line is None:
            code = self.proc.wait(timeout=WAIT)
            raise AssertionError(f"the child exited ({code}) before reporting:\n{self.stderr()}")
        return json.loads(line)

    def finish(self, timeout: float = WAIT) -> None:
        """Wait for a clean exit."""
        code = self.proc.wait(timeout=timeout)
        assert code == 0, f"the child exited with {code}:\n{self.stderr()}"

    def kill(self) -> None:
        """SIGKILL, and reap it so that it is gone, not a zombie."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)

    def close(self) -> None:
        self.kill()
        self._stderr.close()
