"""The SUBPROCESS pipes' line framing: lines arrive whole however writes split them."""

from __future__ import annotations

import os
import signal
import time

from trainerkit.trainers.subprocess.protocol import LineReader
from trainerkit.trainers.subprocess.supervisor import write_all


def test_a_line_split_across_writes_arrives_once_and_whole():
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(read_fd, False)
        reader = LineReader(read_fd)
        assert reader.read() == []  # nothing written yet
        os.write(write_fd, b'{"event": "rea')
        assert reader.read() == []  # half a line is kept, not delivered
        os.write(write_fd, b'dy"}\n{"event": "progress"}\n{"ev')
        assert reader.read() == [b'{"event": "ready"}', b'{"event": "progress"}']
        os.write(write_fd, b'ent": "outcome"}\n')
        os.close(write_fd)
        write_fd = -1
        assert reader.read() == [b'{"event": "outcome"}']
        assert reader.read() is None  # end of file
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_drain_returns_what_an_exited_writer_left_in_the_pipe():
    read_fd, write_fd = os.pipe()
    reader = LineReader(read_fd)
    os.write(write_fd, b"one\ntwo\nthree-without-newline")
    os.close(write_fd)
    try:
        assert reader.drain() == [b"one", b"two"]
    finally:
        os.close(read_fd)


def test_a_long_spec_line_arrives_whole_when_a_child_exits_during_the_write():
    """The supervisor hands rank 0 its spec through a pipe while the ranks it
    forked may already exit: their SIGCHLD lands in a write blocked on a full
    pipe, and one os.write then returns after the first 64 KiB (CI lost a 100 kB
    argument that way). write_all writes the rest."""
    data = b"x" * 300_000
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # as the supervisor's
    read_fd, write_fd = os.pipe()
    reader = os.fork()
    if reader == 0:  # reads only after the child below has exited, slowly
        os.close(write_fd)
        time.sleep(0.3)
        received = 0
        while chunk := os.read(read_fd, 65536):
            received += len(chunk)
            time.sleep(0.01)
        os._exit(0 if received == len(data) else 1)
    quick = os.fork()
    if quick == 0:
        os._exit(0)  # its SIGCHLD arrives while write_all waits on the full pipe
    try:
        os.close(read_fd)
        write_all(write_fd, data)
        os.close(write_fd)
        assert os.waitpid(quick, 0)[1] == 0
        assert os.waitstatus_to_exitcode(os.waitpid(reader, 0)[1]) == 0, "the reader got less than was written"
    finally:
        signal.signal(signal.SIGCHLD, previous)
