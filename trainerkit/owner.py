"""Which process owns a training, and whether that process still lives.

An owner is ``host|pid|start`` where ``start`` is the process's start time in
clock ticks since boot (Linux ``/proc/<pid>/stat``), so a recycled pid is never
mistaken for the original process.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from typing import Optional

log = logging.getLogger("trainerkit")


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


def _is_expected_process(pid: int, command_marker: Optional[str]) -> bool:
    """Whether ``pid`` runs as this user and its command line holds ``command_marker``."""
    if command_marker is None:
        return True
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().decode("utf-8", "replace")
    except OSError:
        return False
    if command_marker in cmdline:
        return True
    log.warning(
        "not signalling process %d: it is not the trainerkit process the run file names "
        "(its command line lacks %r); the run file may have been planted or be stale",
        pid,
        command_marker,
    )
    return False


def signal_owner(owner: str, signum: int, *, command_marker: Optional[str] = None) -> bool:
    """Send ``signum`` to the process ``owner`` names, only if it is that very process.

    The process is pinned first (a pidfd, Linux 5.3+) and its start time
    checked afterwards, so a pid reused by another process is never signalled.
    With ``command_marker``, the process must also run as this user and its
    command line contain the marker (the module a trainerkit worker runs), so
    an owner string naming some other live process is never obeyed.
    Returns False when the process is gone (or was replaced, or is not the
    expected one); raises PermissionError when it belongs to another user,
    and ValueError for an owner of another host (which cannot be signalled
    from here).
    """
    host, pid, _ = parse_owner(owner)
    if host != _hostname():
        raise ValueError(f"process {owner} runs on host {host}, not on {_hostname()}")
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        if owner_is_alive(owner) is not True or not _is_expected_process(pid, command_marker):
            return False
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False
        return True
    import signal as signal_module

    try:
        pidfd = pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if owner_is_alive(owner) is not True:  # checked after pinning: the pid cannot change hands now
            return False
        if not _is_expected_process(pid, command_marker):
            return False
        signal_module.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)
