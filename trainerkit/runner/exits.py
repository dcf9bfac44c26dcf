"""How a process ended, in words: one wording for every process trainerkit
watches (a SUBPROCESS training process or worker, a rank of a multi-process
training)."""

from __future__ import annotations

import signal
from typing import Optional

_NATIVE_CRASH = "a crash in native code; the training's log ends with the fault report"
_HINTS = {
    signal.SIGKILL: "sent from outside the training: by a user, or by the kernel's "
    "out-of-memory killer when memory ran out (see dmesg, or the container's OOMKilled status)",
    signal.SIGSEGV: _NATIVE_CRASH,
    signal.SIGBUS: _NATIVE_CRASH,
    signal.SIGABRT: "aborted by native code; the training's log ends with the fault report",
    signal.SIGFPE: _NATIVE_CRASH,
    signal.SIGILL: _NATIVE_CRASH,
}


def describe_exit(returncode: Optional[int]) -> str:
    """``returncode`` as ``subprocess`` reports it (negative: killed by that signal)."""
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} ({-returncode})"
    return f"exited with code {returncode}"


def signal_hint(returncode: Optional[int]) -> str:
    """What being killed by that signal usually means (``": ..."``), or nothing."""
    if returncode is not None and returncode < 0:
        hint = _HINTS.get(-returncode)  # type: ignore[call-overload]
        if hint:
            return f": {hint}"
    return ""
