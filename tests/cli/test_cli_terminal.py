"""The ``trainerkit`` command under a pseudo-terminal: the live progress bar
and Ctrl-C, as a person at a shell sees them."""

from __future__ import annotations

import io
import sys

import pexpect
import pytest

from tests.cli_fixtures import cli_env, default_sigint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def spawn(*args: str) -> pexpect.spawn:
    """Start ``trainerkit ARGS`` on a pseudo-terminal; ``logfile_read`` keeps
    everything it drew."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "trainerkit", *args],
        env=cli_env({"TERM": "xterm-256color"}),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 140),
        preexec_fn=default_sigint,
    )
    child.logfile_read = io.StringIO()
    return child


def test_a_progress_bar_is_drawn_on_a_terminal():
    # Long enough (3 s) for several redraws even on a busy machine.
    child = spawn("train", "tests.cli_modules:Ticker", "--arg", "steps=30", "--arg", "delay=0.1")
    child.expect(r"Training (\S+) submitted")
    training_id = child.match.group(1)
    child.expect("━")  # rich's bar glyph
    child.expect(r"ETA \d")
    child.expect(r"\d+/30")
    child.expect(r"tick=\d+")  # the latest metrics ride along
    child.expect(f"Training {training_id} COMPLETED")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    transcript = child.logfile_read.getvalue()
    assert "\x1b[2K" in transcript  # the bar is redrawn in place, not printed line after line
    # What the (LOCAL, in-process) training printed appears above the bar.
    assert "tick 1\r\n" in transcript and "tick 30\r\n" in transcript


def test_ctrl_c_on_a_terminal_cancels_the_followed_training():
    child = spawn("train", "tests.cli_modules:Ticker", "--arg", "steps=600", "--arg", "delay=0.1")
    child.expect(r"Training (\S+) submitted")
    training_id = child.match.group(1)
    child.expect(r"ETA \d")
    child.sendintr()
    child.expect(f"Ctrl-C: canceling training {training_id}")
    child.expect(f"Training {training_id} CANCELED")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
