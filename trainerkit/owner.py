"""Which process owns a training, and whether that process still lives.

An owner is ``host|pid|start`` where ``start`` is the process's start time in
clock ticks since boot (Linux ``/proc/<pid>/stat``), so a recycled pid is never
mistaken for the original process.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Optional


def _stat_fields(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("ascii", "replace")
    except OSError:
        return []
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return data[data.rfind(")") + 2 :].split()


def _start_ticks(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


@functools.lru_cache(maxsize=None)
def _hostname() -> str:
    return socket.gethostname()


def process_owner(pid: Optional[int] = None) -> str:
    """The owner string of process ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return f"{_hostname()}|{pid}|{_start_ticks(pid)}"


def parse_owner(owner: str) -> tuple[str, int, str]:
    """``(host, pid, start)`` of an owner string; ValueError if malformed."""
    host, pid, start = owner.split("|")
    return host, int(pid), start


def owner_is_alive(owner: str) -> Optional[bool]:
    """True/False for an owner on this host; None when it cannot be known
    (another host, or a malformed owner)."""
    try:
        host, pid, start = parse_owner(owner)
    except ValueError:
        return None
    if host != _hostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # exited, not yet reaped by its parent
    if start and len(fields) > 19 and fields[19] != start:
        return False  # the pid was reused by another process
    return True
