"""Per-training log files: capturing a thread's output, and reading a file back.

LOCAL trainings run in threads of the caller's process, so their output is
separated by thread: while a training runs, whatever its thread writes to
``sys.stdout``/``sys.stderr`` and every ``logging`` record it emits are also
appended to the training's own log file (they still reach the console as
before). Output of threads the training starts itself is not attributed.

The process-wide hooks this needs (tee streams in ``sys.stdout`` and
``sys.stderr``, one handler on the root logger) exist only while at least one
capture is active: the first capture installs them, the last one to end
removes them, leaving alone any stream that other code has put in place since.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import sys
import threading
import time
import weakref
from time import monotonic as _monotonic
from typing import Any, Callable, Iterator, Optional, TextIO

from .deferred import background
from .errors import StoreError
from .private_files import make_private_dir, open_private

log = logging.getLogger("trainerkit")
_get_ident = threading.get_ident

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Router:
    """Maps thread ids to the log file their output also goes to, and owns the
    process-wide hooks while any capture is active."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sinks: dict[int, Any] = {}
        self.handler = _ThreadLogHandler(self)
        self.active = 0  # captures that have started and not yet ended
        self.tees: list[tuple[str, "_TeeStream"]] = []  # what we put in sys, oldest first
        self.spare: dict[str, "_TeeStream"] = {}  # the last tee of each stream, for reuse

    def install(self) -> None:
        """Tee ``sys.stdout``/``sys.stderr`` and hook the root logger. Lock held.

        Checked at every capture start, not only the first: test runners and
        notebooks swap ``sys.stdout`` while trainings run.
        """
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not (isinstance(stream, _TeeStream) and stream.router is self):
                # The same tee again while the stream is the same: a training's
                # start and end then cost no object churn.
                tee = self.spare.get(name)
                if tee is None or tee.original is not stream:
                    tee = self.spare[name] = _TeeStream(stream, self)
                tee.attach(self.sinks)
                setattr(sys, name, tee)
                self.tees.append((name, tee))
        root = logging.getLogger()
        if self.handler not in root.handlers:
            root.addHandler(self.handler)

    def switch(self, ident: int, sink: Any) -> None:
        """Thread ``ident``'s output goes to ``sink`` (None: to none) from now
        on; its partial lines go out first. Lock held."""
        old = self.sinks.get(ident)
        for _, tee in self.tees:
            tee.hand_over(ident, old)
        if sink is None:
            self.sinks.pop(ident, None)
        else:
            self.sinks[ident] = sink
            for _, tee in self.tees:
                tee.follow(ident)

    def uninstall(self) -> None:
        """Undo :meth:`install`, newest first. Lock held.

        A stream is put back only where our tee is still the one in ``sys``:
        one that other code installed meanwhile is theirs to keep.
        """
        for name, tee in reversed(self.tees):
            if getattr(sys, name) is tee:
                setattr(sys, name, tee.original)
            tee.release()
        self.tees.clear()
        logging.getLogger().removeHandler(self.handler)


class _TeeStream(io.TextIOBase):
    """Writes through to the original stream, and to the current thread's sink.

    What reaches the original stream is whole lines, each thread's assembled on
    its own: ``print`` writes a line and its newline separately, and a line
    buffered stream shared by threads (a terminal, rich's live display) would
    otherwise splice another thread's line into the middle of it. A partial
    line goes on at the thread's next newline or ``flush()``, or when its
    capture starts or ends.
    """

    # Slots: attribute reads on an io.TextIOBase subclass are otherwise slow,
    # and write() runs for every piece of every print() of a training.
    __slots__ = ("original", "router", "_sinks", "_lines", "_partial")

    def __init__(self, original: TextIO, router: _Router) -> None:
        self.original = original
        self.router = router
        self._sinks = router.sinks  # the router's dict itself: sinks added later are seen
        # Captured threads' lines in progress, only while this tee is in sys:
        # one dict read tells a training's write from any other, and a piece
        # without a newline (most of print's writes) is one list append.
        self._lines: dict[int, list[str]] = {}
        self._partial: dict[int, str] = {}  # other threads'; dict operations are atomic

    def write(self, text: str) -> int:
        # Every print() of a training runs this (four times for print(a, b)): kept lean.
        ident = _get_ident()
        parts = self._lines.get(ident)
        if parts is not None:
            if "\n" not in text:
                parts.append(text)
                return len(text)
            if parts:
                parts.append(text)
                whole = "".join(parts)
                parts.clear()
            else:
                whole = text
            if whole[-1] != "\n":
                cut = whole.rfind("\n") + 1
                parts.append(whole[cut:])
                whole = whole[:cut]
            self.original.write(whole)
            sink = self._sinks.get(ident)
            if sink is not None:  # _LazyFile.write, inlined: this runs for every line
                sink.queue.append(whole)
                if not sink.scheduled:
                    sink.schedule()
            return len(text)
        sink = self._sinks.get(ident)
        if sink is not None:  # a capture's write to a tee no longer in sys
            sink.write(text)
            return self.original.write(text)
        pending = self._partial.pop(ident, None)
        whole = text if pending is None else pending + text
        cut = whole.rfind("\n") + 1
        if cut:
            self.original.write(whole[:cut])
        if cut < len(whole):
            self._partial[ident] = whole[cut:]
        return len(text)

    def flush(self) -> None:
        ident = _get_ident()
        sink = self._sinks.get(ident)
        if sink is not None:
            self.hand_over(ident, sink, stop=False)
            sink.flush()  # an explicit flush (print(..., flush=True)) reaches the log file too
        rest = self._partial.pop(ident, "")
        if rest:
            self.original.write(rest)
        self.original.flush()

    def attach(self, sinks: dict[int, Any]) -> None:
        """Back in ``sys``: assemble the lines of the captured threads again."""
        for ident in list(sinks):
            self.follow(ident)

    def follow(self, ident: int) -> None:
        """Assemble thread ``ident``'s lines from now on (it is captured)."""
        self._lines.setdefault(ident, [])

    def hand_over(self, ident: int, sink: Any, *, stop: bool = True) -> None:
        """Write out thread ``ident``'s partial line, to ``sink`` too; unless
        ``stop`` is False, stop assembling its lines."""
        parts = self._lines.pop(ident, None) if stop else self._lines.get(ident)
        if not parts:
            return
        rest = "".join(parts)
        parts.clear()
        try:
            self.original.write(rest)
        except (OSError, ValueError):
            pass
        if sink is not None:
            sink.write(rest)

    def close(self) -> None:
        """Closing (or collecting) the tee leaves the stream it wraps open and unflushed."""

    def release(self) -> None:
        """Out of ``sys``: pass writes straight through, and hand over every thread's partial line."""
        for ident in list(self._lines):
            self.hand_over(ident, self._sinks.get(ident))
        for ident in list(self._partial):
            rest = self._partial.pop(ident, "")
            if rest:
                self.original.write(rest)

    def __getattr__(self, name: str):  # encoding, fileno, isatty... of the original
        return getattr(self.original, name)


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


#: Output a training wrote reaches its log file at most this long later (a
#: reader such as ``trainerkit logs -f`` sees it then): the file is written
#: by a background thread, a system call per line would cost more than the print.
FLUSH_INTERVAL = 0.1


class _LazyFile:
    """A log file opened at its first write: trainings that print nothing cost no file.

    The training's thread only queues text (a deque append, safe without a
    lock); the background thread writes the queue out :data:`FLUSH_INTERVAL`
    after the first unwritten piece, and so do an explicit flush and the
    capture's end.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._handle: Optional[TextIO] = None
        self._failed = False
        self._lock = threading.Lock()  # one writer of the file at a time (flusher, flush(), close())
        self.queue: "collections.deque[str]" = collections.deque()
        self.scheduled = False
        self.used = False  # something was written (every first write schedules a flush)

    def write(self, text: str) -> None:
        self.queue.append(text)
        if not self.scheduled:
            self.schedule()

    def schedule(self) -> None:
        self.scheduled = True
        self.used = True
        _flush_before_fork()
        _open_files.add(self)
        background.schedule(self.flush, _monotonic() + FLUSH_INTERVAL)

    def _open(self) -> bool:
        if self._failed:
            return False
        try:
            make_private_dir(os.path.dirname(self._path), what="the log directory", setting="log_dir")
            fd = open_private(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except (OSError, StoreError) as exc:
            # Said once, to the caller's logs; the training's own prints go on.
            self._failed = True
            log.error("the output of this training is not kept in %s: %s", self._path, exc)
            return False
        self._handle = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        return True

    def flush(self) -> None:
        """Write out what is queued (a full disk or a failed open never raises)."""
        self.scheduled = False
        queue = self.queue
        with self._lock:
            if not queue:
                return
            chunks = []
            while queue:  # popleft, not a swap: a piece appended meanwhile is never lost
                chunks.append(queue.popleft())
            if self._handle is None and not self._open():
                return
            try:
                self._handle.write("".join(chunks))  # type: ignore[union-attr]
                self._handle.flush()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass  # a full disk or closed log must never break the training's prints

    def close(self) -> None:
        if not self.used:  # a training that printed nothing: no file, no flush, nothing to close
            return
        self.flush()
        with self._lock:
            if self._handle is not None:
                try:
                    self._handle.close()
                except OSError:
                    pass
        _open_files.discard(self)


#: Log files with queued text: written out before a fork, so that a child (a
#: data loader worker, multiprocessing) never writes its parent's lines again.
_open_files: "weakref.WeakSet[_LazyFile]" = weakref.WeakSet()
_fork_hook = []


def _flush_before_fork() -> None:
    if not _fork_hook:
        _fork_hook.append(True)
        os.register_at_fork(before=_flush_open_files, after_in_child=_renew_locks)


def _flush_open_files() -> None:
    for sink in list(_open_files):
        sink.flush()


def _renew_locks() -> None:
    # A lock another thread held at fork() stays held forever in the child.
    for sink in list(_open_files):
        sink._lock = threading.Lock()
        sink.scheduled = False


class capture_thread_output:  # noqa: N801 - used as a function: with capture_thread_output(path)
    """Also append this thread's stdout, stderr and log records to ``path``
    while the block runs (the file is created at the first write).

    Captures may overlap across threads, and nest in one thread (the inner
    one wins until it ends). When the last active capture ends, ``sys.stdout``,
    ``sys.stderr`` and the root logger are as they were before the first.

    A class rather than a generator context manager: every LOCAL training
    enters one, and a generator's frame and wrapper cost more than the work.
    """

    __slots__ = ("_router", "_sink", "_ident", "_outer")

    def __init__(self, path: str) -> None:
        self._router = _router  # the one this capture starts on is the one it ends on
        self._sink: Any = _LazyFile(path)

    def __enter__(self) -> None:
        router = self._router
        self._ident = ident = _get_ident()
        with router.lock:
            router.install()
            router.active += 1
            self._outer = router.sinks.get(ident)
            router.switch(ident, self._sink)

    def __exit__(self, *exc_info: Any) -> None:
        router = self._router
        try:
            with router.lock:
                router.switch(self._ident, self._outer)
                router.active -= 1
                if router.active == 0:
                    router.uninstall()
        finally:
            self._sink.close()


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
