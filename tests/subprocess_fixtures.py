"""Helpers of the SUBPROCESS tests: waiting with a deadline, and the files
through which a test and a training in another process coordinate."""

from __future__ import annotations

import functools
import os

from tests import waiting
from trainerkit.owner import owner_is_alive, process_owner

WAIT = 60  # generous upper bound; every wait ends as soon as its condition holds
GRACE = "300ms"  # cancel grace period of the tests' trainers: short, so stuck trainings end fast


wait_until = functools.partial(waiting.wait_until, timeout=WAIT)


def pids_in(path):
    """The pids a training wrote to ``path`` (waiting for the file)."""
    wait_until(lambda: os.path.exists(path), f"{path} to be written")
    with open(path) as handle:
        return [int(word) for word in handle.read().split()]


def gone(pid):
    """True when process ``pid`` has exited (a zombie counts as gone)."""
    return owner_is_alive(process_owner(pid)) is False


def gate(tmp_path, name="gate"):
    """``(pid_file, release_file)`` for a gated training (tests.subprocess_modules.Gated)."""
    return str(tmp_path / f"{name}.pid"), str(tmp_path / f"{name}.release")


def release(path):
    """Open the gate: create the release file the training waits for."""
    with open(path, "w"):
        pass
