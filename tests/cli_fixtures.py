"""Running the real ``trainerkit`` command in a child process, as users do."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from typing import IO, Any, Mapping, Optional

#: The command line that starts the CLI (what the console script runs).
TRAINERKIT = [sys.executable, "-m", "trainerkit"]

# Not anchored to a line start: a LOCAL training's own prints share the command's
# stdout and may land mid-line.
_SUBMITTED = re.compile(r"Training (\S+) submitted to trainer")


def cli_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """This test's environment (PYTHONPATH and TRAINERKIT_STATE_DIR come from
    conftest) without a developer's own TRAINERKIT_CONFIG, plus ``extra``."""
    env = dict(os.environ)
    env.pop("TRAINERKIT_CONFIG", None)
    env.update(extra or {})
    return env


def default_sigint() -> None:
    """preexec_fn: a child started from a shell that ignores SIGINT would
    inherit that; the command must see Ctrl-C as a user would send it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    *args: str, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None, timeout: float = 90
) -> subprocess.CompletedProcess:
    """Run ``trainerkit ARGS`` to completion, capturing stdout and stderr (not a terminal)."""
    return subprocess.run(
        [*TRAINERKIT, *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def submitted_id(stdout: str) -> str:
    """The training id from ``train``'s "Training <id> submitted" line."""
    match = _SUBMITTED.search(stdout)
    assert match, f"no 'Training <id> submitted' line in:\n{stdout}"
    return match.group(1)


def read_submitted_id(stream: IO[str]) -> str:
    """Read a running ``train``'s stdout up to its "Training <id> submitted" line."""
    seen = []
    for line in stream:
        seen.append(line)
        match = _SUBMITTED.search(line)
        if match:
            return match.group(1)
    raise AssertionError("the command ended without a 'Training <id> submitted' line:\n" + "".join(seen))


def write(path: Any, text: str) -> str:
    """Write dedented ``text`` to ``path``; its path as a string."""
    path.write_text(textwrap.dedent(text))
    return str(path)


def json_out(result: Any) -> Any:
    """The JSON document a ``--json`` command printed."""
    assert result.stdout.strip(), f"no stdout; stderr:\n{result.stderr}"
    return json.loads(result.stdout)
