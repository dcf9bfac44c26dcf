"""Trainable modules for the SUBPROCESS tests (importable as
tests.subprocess_modules, so training processes load them too).

Trainings in another process cannot share events with the test; they
coordinate through files instead: a training writes its pid and its
children's pids where the test says, and waits for a "release" file to appear.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import trainerkit


def _wait_for(path: str) -> None:
    # The training's own loop (not test synchronisation): it polls for the file.
    while not os.path.exists(path):
        time.sleep(0.01)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class Adder(trainerkit.ModuleBase):
    def __init__(self, total):
        self.total = total

    @classmethod
    def train(cls, a, b=1):
        return cls(a + b)


class Boom(ValueError):
    pass


class Failing(trainerkit.ModuleBase):
    @classmethod
    def train(cls, message="bad data"):
        raise Boom(message)


class Chatty(trainerkit.ModuleBase):
    """Prints to stdout and stderr, line by line."""

    @classmethod
    def train(cls, lines=3, delay=0.0):
        for number in range(1, lines + 1):
            print(f"out {number}")
            print(f"err {number}", file=sys.stderr)
            time.sleep(delay)
        return cls()


class Gated(trainerkit.ModuleBase):
    """Reports ``steps`` progress steps, writes its pid to ``pid_file``, then
    waits for ``release_file``."""

    @classmethod
    def train(cls, pid_file, release_file, steps=0, value=0):
        for step in range(1, steps + 1):
            trainerkit.report_progress(step=step, total=steps, loss=1.0 / step)
        _write(pid_file, str(os.getpid()))
        _wait_for(release_file)
        instance = cls()
        instance.value = value
        return instance


class Sleeper(trainerkit.ModuleBase):
    """Starts a grandchild (``sleep``), writes ``"<pid> <grandchild pid>"`` to
    ``pid_file``, then sleeps for an hour; with ``ignore_term`` it ignores SIGTERM."""

    @classmethod
    def train(cls, pid_file, ignore_term=False):
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(["sleep", "3600"])
        _write(pid_file, f"{os.getpid()} {grandchild.pid}")
        time.sleep(3600)
        return cls()


class CleansUp(trainerkit.ModuleBase):
    """Writes ``cleanup_file`` in a finally block when it is stopped."""

    @classmethod
    def train(cls, pid_file, cleanup_file):
        try:
            _write(pid_file, str(os.getpid()))
            time.sleep(3600)
        finally:
            _write(cleanup_file, "cleaned up")
        return cls()


class Crasher(trainerkit.ModuleBase):
    """Ends its process in the way ``how`` says."""

    @classmethod
    def train(cls, how):
        sys.stdout.write("about to crash\n")
        sys.stdout.flush()
        if how == "exit3":
            os._exit(3)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "sigsegv":
            ctypes.string_at(0)  # a real segmentation fault
        if how == "memory":
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024, resource.RLIM_INFINITY))
            hog = []
            while True:
                hog.append(bytearray(64 * 1024 * 1024))
        raise ValueError(f"unknown crash {how!r}")


class SavesSlowly(trainerkit.ModuleBase):
    """Trains at once; its save waits for ``release_file`` (a cancel then comes too late)."""

    def __init__(self, pid_file, release_file):
        self.pid_file = pid_file
        self.release_file = release_file

    @classmethod
    def train(cls, pid_file, release_file):
        return cls(pid_file, release_file)

    def save(self, path):
        _write(self.pid_file, str(os.getpid()))
        _wait_for(self.release_file)
        super().save(path)


class Echo(trainerkit.ModuleBase):
    """Keeps whatever it was given, to show what crossed the process boundary."""

    def __init__(self, value, cwd, env_value):
        self.value = value
        self.cwd = cwd
        self.env_value = env_value

    @classmethod
    def train(cls, value=None, env_name="TRAINERKIT_TEST_VALUE"):
        return cls(value, os.getcwd(), os.environ.get(env_name))


class Imported(trainerkit.ModuleBase):
    """Remembers which of ``names`` were imported before it was trained."""

    @classmethod
    def train(cls, names):
        instance = cls()
        instance.imported = sorted(name for name in names if name in sys.modules)
        return instance


class Point:
    """A plain picklable argument type."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


class Forks(trainerkit.ModuleBase):
    """Prints, forks a child that prints and leaves without cleanup, prints again."""

    @classmethod
    def train(cls):
        print("before fork")
        pid = os.fork()
        if pid == 0:
            try:
                print("in the child", flush=True)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        print("after fork")
        return cls()


class SeesGpus(trainerkit.ModuleBase):
    """Writes the CUDA_VISIBLE_DEVICES it sees to ``seen_file``, then waits for ``release_file``."""

    @classmethod
    def train(cls, seen_file, release_file):
        _write(seen_file, os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
        _wait_for(release_file)
        return cls()


class RanksGated(trainerkit.ModuleBase):
    """Each rank reports its own progress step (rank + 1), writes its pid to
    ``<directory>/rank<RANK>.pid``, then waits for ``<directory>/release``;
    rank ``fail_rank`` raises :class:`Boom` instead of waiting (with
    ``fail_late``: once released and rank 0 is returning). The model keeps
    the rank that returned it."""

    @classmethod
    def train(cls, directory, fail_rank=-1, fail_late=False):
        env = trainerkit.distributed_env()
        rank = env.rank if env else 0
        trainerkit.report_progress(step=rank + 1, total=10)
        _write(os.path.join(directory, f"rank{rank}.pid"), str(os.getpid()))
        if rank == fail_rank and not fail_late:
            raise Boom(f"rank {rank} gives up")
        _wait_for(os.path.join(directory, "release"))
        if rank == fail_rank:  # fail_late: after rank 0 may have returned
            _wait_for(os.path.join(directory, "rank0.returned"))
            raise Boom(f"rank {rank} gives up late")
        if rank == 0:
            _write(os.path.join(directory, "rank0.returned"), "")
        instance = cls()
        instance.rank = rank
        return instance


class RanksSeeGpus(trainerkit.ModuleBase):
    """Each rank writes its CUDA_VISIBLE_DEVICES to ``<directory>/rank<RANK>.gpus``."""

    @classmethod
    def train(cls, directory, payload=""):
        rank = os.environ["RANK"]
        _write(os.path.join(directory, f"rank{rank}.gpus"), os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
        instance = cls()
        instance.payload_length = len(payload)
        return instance


class RanksExit(trainerkit.ModuleBase):
    """Rank 1 prints a line and leaves with ``os._exit(5)``; rank 0 waits for
    ``<directory>/release`` (which never comes: the training fails first)."""

    @classmethod
    def train(cls, directory):
        if os.environ.get("RANK") == "1":
            print("rank 1 leaves now", flush=True)
            os._exit(5)
        _wait_for(os.path.join(directory, "release"))
        return cls()
