"""Where LOCAL and SUBPROCESS trainers keep their durable records.

The state directory holds one SQLite file, ``trainings.sqlite3``, shared by
every trainer (of any name) and every process that points at the same
directory. It is chosen, first match wins (see ``docs/records.md``):

1. the trainer's ``state_dir`` config key (which aconfig also lets
   ``MODEL_MANAGEMENT_TRAINERS_<NAME>_CONFIG_STATE_DIR`` override);
2. the environment variable ``TRAINERKIT_STATE_DIR``;
3. ``$XDG_STATE_HOME/trainerkit`` when ``XDG_STATE_HOME`` is an absolute path
   (the XDG Base Directory spec says to ignore a relative one);
4. ``~/.local/state/trainerkit``.

The value ``:memory:`` (in the config key or the environment variable) opts
out of durability: records then live in the trainer's memory and are gone
when the process exits.
"""

from __future__ import annotations

import os
from typing import Optional

from .base import TrainingStore
from .memory import MemoryTrainingStore

#: Environment variable that sets the state directory of every trainer that
#: does not set ``state_dir`` in its config.
STATE_DIR_ENV = "TRAINERKIT_STATE_DIR"
#: ``state_dir`` value that keeps records in memory only (not durable).
MEMORY_STATE_DIR = ":memory:"
#: The record database inside the state directory.
DATABASE_FILE = "trainings.sqlite3"


def check_state_dir(value: object) -> Optional[str]:
    """A config ``check`` for ``state_dir``: the problem with ``value``, or None."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a directory path or {MEMORY_STATE_DIR!r}, got {value!r}"
    if "\0" in value:
        return f"{value!r} contains a NUL character, which no path can hold"
    return None


def resolve_state_dir(configured: Optional[str] = None) -> str:
    """The state directory to use: an absolute path, or :data:`MEMORY_STATE_DIR`.

    Args:
        configured: the trainer's ``state_dir`` config value (None: not set).

    ``~`` is expanded and a relative path is made absolute against the
    current directory, so the answer does not change if the process later
    changes directory.
    """
    env = os.environ
    chosen = configured
    if chosen is None:
        chosen = env.get(STATE_DIR_ENV) or None
    if chosen is None:
        xdg = env.get("XDG_STATE_HOME", "")
        if xdg and os.path.isabs(xdg):
            chosen = os.path.join(xdg, "trainerkit")
    if chosen is None:
        home = env.get("HOME") or os.path.expanduser("~")
        chosen = os.path.join(home, ".local", "state", "trainerkit")
    if chosen == MEMORY_STATE_DIR:
        return MEMORY_STATE_DIR
    return os.path.abspath(os.path.expanduser(chosen))


def open_record_store(configured: Optional[str] = None) -> TrainingStore:
    """The record store for a trainer whose ``state_dir`` config is ``configured``.

    A :class:`~trainerkit.store.sqlite.SQLiteTrainingStore` on
    ``<state dir>/trainings.sqlite3`` (created on first use), or a
    :class:`~trainerkit.store.MemoryTrainingStore` for ``:memory:``.

    Raises:
        StoreError: the state directory or its database cannot be used; the
            message names the path and what to do.
    """
    state_dir = resolve_state_dir(configured)
    if state_dir == MEMORY_STATE_DIR:
        return MemoryTrainingStore()
    from .sqlite import SQLiteTrainingStore  # sqlite3 only for trainers that need it

    return SQLiteTrainingStore(os.path.join(state_dir, DATABASE_FILE))
