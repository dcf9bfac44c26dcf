"""The SUBPROCESS pipes' framing: one JSON object per line, read without blocking.

Three pipes carry it: the trainer writes a training's spec to a worker's
stdin (and ``{"detach": true}`` later); the training process writes its news
(``ready``, ``progress``, ``finishing``, ``outcome``) to its supervisor; the
supervisor writes events (``ready``, ``running``, ``progress``, ``outcome``)
to the trainer. Each reader owns one :class:`LineReader`.
"""

from __future__ import annotations

import os
from typing import Optional

_CHUNK = 65536


class LineReader:
    """Complete lines from a non-blocking pipe, however the writes were split."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def read(self) -> Optional[list[bytes]]:
        """The lines completed by what can be read now (maybe none); None at end of file."""
        try:
            data = os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            return None
        self._buffer += data
        return self._complete_lines()

    def drain(self) -> list[bytes]:
        """Every complete line the pipe holds now, up to end of file (for a writer
        that has exited: what it sent just before is still in the pipe)."""
        try:
            os.set_blocking(self.fd, False)
            while True:
                data = os.read(self.fd, _CHUNK)
                if not data:
                    break
                self._buffer += data
        except OSError:  # BlockingIOError included: nothing more for now
            pass
        return self._complete_lines()

    def _complete_lines(self) -> list[bytes]:
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest)
        return lines
