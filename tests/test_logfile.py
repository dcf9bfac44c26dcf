"""Per-thread output capture (what LOCAL trainings use for ``future.logs()``):
each capture gets its own thread's lines, and nothing it installs outlives
the last active capture."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from trainerkit import logfile
from trainerkit.logfile import capture_thread_output, read_lines


@pytest.fixture(autouse=True)
def own_router(monkeypatch):
    """A router of this test's own, so that captures another test left running
    (a LOCAL training still finishing) do not share its count."""
    monkeypatch.setattr(logfile, "_router", logfile._Router())
    return logfile._router


def _lines(path):
    return list(read_lines(str(path)))


def _our_handlers(router):
    return [h for h in logging.getLogger().handlers if h is router.handler]


def test_a_capture_collects_its_thread_prints_and_log_records(tmp_path):
    path = tmp_path / "logs" / "one.log"
    with capture_thread_output(str(path)):
        print("hello")
        print("oops", file=sys.stderr)
        logging.getLogger("trainerkit.test").warning("careful")
    lines = _lines(path)
    assert lines[:2] == ["hello", "oops"]
    assert lines[2].endswith("WARNING trainerkit.test: careful")


def test_after_the_capture_ends_the_streams_and_root_logger_are_as_before(tmp_path, own_router):
    stdout, stderr, handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    with capture_thread_output(str(tmp_path / "a.log")):
        assert sys.stdout is not stdout and _our_handlers(own_router)
    assert sys.stdout is stdout and sys.stderr is stderr
    assert logging.getLogger().handlers == handlers
    assert not _our_handlers(own_router)


def test_a_capture_that_prints_nothing_creates_no_file(tmp_path):
    with capture_thread_output(str(tmp_path / "quiet.log")):
        pass
    assert not (tmp_path / "quiet.log").exists()


def test_overlapping_captures_in_two_threads_each_get_their_own_lines(tmp_path, own_router):
    stdout = sys.stdout
    both_started = threading.Barrier(2, timeout=10)
    first_may_end = threading.Event()
    first_ended = threading.Event()
    hooks_after_first: list[bool] = []

    def first():
        with capture_thread_output(str(tmp_path / "first.log")):
            both_started.wait()
            print("first says 1")
            first_may_end.wait(10)
        first_ended.set()

    def second():
        with capture_thread_output(str(tmp_path / "second.log")):
            both_started.wait()
            print("second says 1")
            first_may_end.set()
            first_ended.wait(10)
            # The other capture ended; this one is still active and still captured.
            hooks_after_first.append(sys.stdout is not stdout and bool(_our_handlers(own_router)))
            print("second says 2")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert _lines(tmp_path / "first.log") == ["first says 1"]
    assert _lines(tmp_path / "second.log") == ["second says 1", "second says 2"]
    assert hooks_after_first == [True]
    assert sys.stdout is stdout and not _our_handlers(own_router)


def test_a_nested_capture_takes_over_its_thread_until_it_ends(tmp_path):
    with capture_thread_output(str(tmp_path / "outer.log")):
        print("outer 1")
        with capture_thread_output(str(tmp_path / "inner.log")):
            print("inner")
        print("outer 2")
    assert _lines(tmp_path / "outer.log") == ["outer 1", "outer 2"]
    assert _lines(tmp_path / "inner.log") == ["inner"]


def test_a_stream_that_other_code_installed_meanwhile_is_left_in_place(tmp_path):
    original = sys.stdout
    theirs = io.StringIO()
    try:
        with capture_thread_output(str(tmp_path / "a.log")):
            sys.stdout = theirs
        assert sys.stdout is theirs
    finally:
        sys.stdout = original


def test_a_local_training_leaves_no_hook_behind(tmp_path):
    # In a fresh interpreter: the real streams, the real root logger, no other test's trainings.
    script = textwrap.dedent(
        f"""
        import logging, sys
        import trainerkit
        from tests.training_modules import Adder

        stdout, stderr, handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
        manager = trainerkit.TrainerManager.from_dict(
            {{"model_management": {{"trainers": {{"default": {{"config": {{"state_dir": {str(tmp_path)!r}}}}}}}}}}}
        )
        future = manager.get_trainer("default").train(Adder, 1)
        future.result(timeout=30)
        manager.close(wait=True)
        assert sys.stdout is stdout, sys.stdout
        assert sys.stderr is stderr, sys.stderr
        assert logging.getLogger().handlers == handlers, logging.getLogger().handlers
        print("clean")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


class _Recorder(io.StringIO):
    """A stream that remembers each write (a line-buffered terminal shows them as they come)."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return super().write(text)


def test_another_threads_line_never_lands_inside_a_half_written_line(tmp_path, monkeypatch):
    screen = _Recorder()
    monkeypatch.setattr(sys, "stdout", screen)
    half_written, other_done = threading.Event(), threading.Event()

    def other_thread():
        half_written.wait(10)
        sys.stdout.write("Training submitted.\n")  # the CLI's own line, mid-way through the training's
        other_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with capture_thread_output(str(tmp_path / "t.log")):
        sys.stdout.write("tick 1")  # print() writes a line and its newline separately
        half_written.set()
        other_done.wait(10)
        sys.stdout.write("\n")
        sys.stdout.write("no newline yet")
        sys.stdout.flush()  # a flush hands over a partial line
    thread.join(10)
    assert screen.writes == ["Training submitted.\n", "tick 1\n", "no newline yet"]
    assert _lines(tmp_path / "t.log") == ["tick 1", "no newline yet"]


# -- buffered, line-assembled output (issue 13: print costs a few microseconds) ---------


def test_a_line_printed_in_pieces_reaches_the_file_and_the_console_whole(tmp_path, monkeypatch):
    console = io.StringIO()
    monkeypatch.setattr(sys, "stdout", console)
    path = tmp_path / "pieces.log"
    with capture_thread_output(str(path)):
        print("a", "b", 3, sep="-")
        sys.stdout.write("half ")
        sys.stdout.write("and half\ntail without newline")
    assert console.getvalue() == "a-b-3\nhalf and half\ntail without newline"
    assert path.read_text() == "a-b-3\nhalf and half\ntail without newline"


def test_flush_hands_over_a_partial_line(tmp_path, monkeypatch):
    console = io.StringIO()
    monkeypatch.setattr(sys, "stdout", console)
    with capture_thread_output(str(tmp_path / "p.log")):
        print("progress: 50%", end="", flush=True)
        assert console.getvalue() == "progress: 50%"


class _RecordingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_lines_are_still_assembled_whole_after_a_flush_and_around_a_nested_capture(tmp_path, monkeypatch):
    console = _RecordingStream()
    monkeypatch.setattr(sys, "stdout", console)
    with capture_thread_output(str(tmp_path / "outer.log")):
        print("progress: 50%", end="", flush=True)
        print("", "done")
        print("a", "b", "c")
        print("half", end="")
        with capture_thread_output(str(tmp_path / "inner.log")):
            print("inner", 1)
        print("after", "inner")
    assert console.writes == ["progress: 50%", " done\n", "a b c\n", "half", "inner 1\n", "after inner\n"]
    assert (tmp_path / "outer.log").read_text() == "progress: 50% done\na b c\nhalfafter inner\n"
    assert (tmp_path / "inner.log").read_text() == "inner 1\n"


def test_output_reaches_the_file_while_the_training_is_still_running(tmp_path):
    from trainerkit.testing import wait_until

    path = tmp_path / "live.log"
    with capture_thread_output(str(path)):
        print("epoch 1 done")
        # ...and the training computes for a long time without printing:
        wait_until(lambda: path.exists() and path.read_text() == "epoch 1 done\n", "the line in the file", timeout=10)


def test_a_child_forked_by_a_training_never_writes_its_parents_buffered_lines_again(tmp_path):
    import os

    path = tmp_path / "forked.log"
    with capture_thread_output(str(path)):
        print("before fork")
        pid = os.fork()
        if pid == 0:  # the child: print, flush what it has, leave without cleanup
            try:
                print("in the child")
                sys.stdout.flush()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        print("after fork")
    assert path.read_text().splitlines() == ["before fork", "in the child", "after fork"]
