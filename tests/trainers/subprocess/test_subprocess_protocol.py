"""The SUBPROCESS pipes' line framing: lines arrive whole however writes split them."""

from __future__ import annotations

import os

from trainerkit.trainers.subprocess.protocol import LineReader


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
