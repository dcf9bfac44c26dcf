"""Per-training log files: capturing a thread's output, and reading a file back.

LOCAL trainings run in threads of the caller's process, so their output is
separated by thread: while a training runs, whatever its thread writes to
``sys.stdout``/``sys.stderr`` and every ``logging`` record it emits are also
appended to the training's own log file (they still reach the console as
before). Output of threads the training starts itself is not attributed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional, TextIO

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Router:
    """Maps thread ids to the log file their output also goes to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sinks: dict[int, Any] = {}
        self.handler = _ThreadLogHandler(self)

    def sink(self) -> Any:
        return self.sinks.get(threading.get_ident())


class _TeeStream(io.TextIOBase):
    """Writes through to the original stream, and to the current thread's sink."""

    def __init__(self, original: TextIO, router: _Router) -> None:
        self._original = original
        self._router = router

    def write(self, text: str) -> int:
        sink = self._router.sink()
        if sink is not None:
            try:
                sink.write(text)
            except (OSError, ValueError):
                pass  # a full disk or closed log must never break the training's prints
        return self._original.write(text)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str):  # encoding, fileno, isatty... of the original
        return getattr(self._original, name)


class _ThreadLogHandler(logging.Handler):
    def __init__(self, router: _Router) -> None:
        super().__init__()
        self._router = router
        self.setFormatter(logging.Formatter(_LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        sink = self._router.sinks.get(record.thread) if record.thread is not None else None
        if sink is None:
            return
        try:
            sink.write(self.format(record) + "\n")
        except (OSError, ValueError):
            pass


_router = _Router()


def _install() -> None:
    # Re-checked at every training: test runners and notebooks swap sys.stdout.
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _TeeStream):
            setattr(sys, name, _TeeStream(stream, _router))
    root = logging.getLogger()
    if _router.handler not in root.handlers:
        root.addHandler(_router.handler)


class _LazyFile:
    """A log file opened at its first write: trainings that print nothing cost no file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._handle: Optional[TextIO] = None

    def write(self, text: str) -> None:
        if self._handle is None:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self._handle = open(self._path, "a", encoding="utf-8", buffering=1, errors="replace")
        self._handle.write(text)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


@contextlib.contextmanager
def capture_thread_output(path: str) -> Iterator[None]:
    """Also append this thread's stdout, stderr and log records to ``path``."""
    sink: Any = _LazyFile(path)
    ident = threading.get_ident()
    with _router.lock:
        _install()
        _router.sinks[ident] = sink
    try:
        yield
    finally:
        with _router.lock:
            _router.sinks.pop(ident, None)
        sink.close()


def read_lines(
    path: str,
    *,
    follow: bool = False,
    finished: Callable[[], bool] = lambda: True,
    poll_interval: float = 0.1,
) -> Iterator[str]:
    """Yield the lines of ``path`` (without newlines).

    With ``follow``, keep waiting for new lines until ``finished()`` is true
    and the file has no more to give (a missing file counts as empty until
    then).
    """
    handle = None
    pending = ""
    try:
        while True:
            if handle is None and os.path.exists(path):
                handle = open(path, encoding="utf-8", errors="replace")
            chunk = handle.read() if handle is not None else ""
            if chunk:
                pending += chunk
                *lines, pending = pending.split("\n")
                yield from lines
                continue
            if not follow:
                break
            if finished():
                # One last read: the writer may have flushed just before finishing.
                chunk = handle.read() if handle is not None else ""
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    yield from lines
                break
            time.sleep(poll_interval)
        if pending:
            yield pending
    finally:
        if handle is not None:
            handle.close()
