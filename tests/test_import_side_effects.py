"""Importing trainerkit changes nothing in the process: the fork and exit
hooks that ids and the SQLite store need are registered at their first use."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_RECORD_HOOKS = """
import atexit, os

hooks = []
_fork, _exit = os.register_at_fork, atexit.register

def register_at_fork(**callbacks):
    hooks.extend(("fork", f.__module__) for f in callbacks.values())
    return _fork(**callbacks)

def register_exit(function, *args, **kwargs):
    hooks.append(("exit", getattr(function, "__module__", "")))
    return _exit(function, *args, **kwargs)

os.register_at_fork, atexit.register = register_at_fork, register_exit

def trainerkit_hooks():
    return sorted(hook for hook in hooks if hook[1].startswith("trainerkit"))
"""


def _run(code: str) -> None:
    script = _RECORD_HOOKS + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_importing_trainerkit_registers_no_fork_or_exit_hook():
    _run(
        """
        import trainerkit, trainerkit.ids, trainerkit.store.sqlite, trainerkit.config, trainerkit.cli.commands
        assert trainerkit_hooks() == [], trainerkit_hooks()
        """
    )


def test_the_first_id_registers_the_reseed_after_fork_once():
    _run(
        """
        from trainerkit import ids
        ids.new_training_id("a")
        ids.new_training_id("b")
        assert trainerkit_hooks() == [("fork", "trainerkit.ids")], trainerkit_hooks()
        """
    )


def test_the_first_store_registers_the_fork_reset_and_the_exit_flush_once(tmp_path):
    _run(
        f"""
        from trainerkit.store.sqlite import SQLiteTrainingStore
        SQLiteTrainingStore({str(tmp_path / "a.sqlite3")!r})
        SQLiteTrainingStore({str(tmp_path / "b.sqlite3")!r})
        expected = [("exit", "trainerkit.store.sqlite"), ("fork", "trainerkit.store.sqlite")]
        assert trainerkit_hooks() == expected, trainerkit_hooks()
        """
    )
