"""Trainable modules of the storage tests (importable as tests.storage_modules,
so SUBPROCESS workers and the fake cluster's pods load them too)."""

from __future__ import annotations

import os
import signal
import time

import trainerkit
from trainerkit import storage
from tests.training_modules import first_time


class Epochs(trainerkit.ModuleBase):
    """Counts epochs, checkpointing after each, from the latest checkpoint.

    ``started_at``: the epoch it started from (0 on a fresh start).
    ``kill_after``: SIGKILL its own process right after that epoch's checkpoint,
    on the first attempt only (``marker`` records that it happened).
    ``hold``: after epoch ``hold_after``, wait until the file ``hold`` exists.
    """

    def __init__(self, epoch, started_at, blob=b""):
        self.epoch = epoch
        self.started_at = started_at
        self.blob = blob

    @classmethod
    def train(cls, epochs=3, kill_after=None, marker=None, hold=None, hold_after=None, size=0):
        previous = trainerkit.latest_checkpoint()
        start = previous.epoch if previous is not None else 0
        model = cls(start, start, b"x" * size)
        for epoch in range(start + 1, epochs + 1):
            model.epoch = epoch
            trainerkit.save_checkpoint(model)
            trainerkit.report_progress(epoch, epochs)
            if kill_after == epoch and marker and first_time(marker):
                os.kill(os.getpid(), signal.SIGKILL)
            if hold and hold_after == epoch:
                with open(hold + ".entered", "w"):
                    pass
                while not os.path.exists(hold):
                    trainerkit.check_canceled()
                    time.sleep(0.02)
        return model


class Named(trainerkit.ModuleBase):
    """Saves the checkpoint ``best`` twice (values 1, then 2) and returns what
    latest_checkpoint() gave back."""

    def __init__(self, value):
        self.value = value

    @classmethod
    def train(cls):
        trainerkit.save_checkpoint(cls(1), name="best")
        trainerkit.save_checkpoint(cls(2), name="best")
        return cls(trainerkit.latest_checkpoint().value)


class DiesMidUpload(trainerkit.ModuleBase):
    """Trains, then makes its process die (os._exit) when the model's manifest
    is about to be written: every file is uploaded, the manifest never is."""

    def __init__(self, value):
        self.value = value

    @classmethod
    def train(cls, value=5):
        original = storage.publish

        def publish(directory, url, storage_options=None, **options):
            fs, path = storage.filesystem(url, storage_options)

            def die(target, *args, **kwargs):
                if str(target).endswith(storage.MANIFEST_FILE):
                    os._exit(17)
                return type(fs).pipe_file(fs, target, *args, **kwargs)

            fs.pipe_file = die
            return original(directory, url, storage_options, **options)

        storage.publish = publish
        return cls(value)


class DiesMidUploadOnce(trainerkit.ModuleBase):
    """Like :class:`DiesMidUpload`, but only while the file ``marker`` does not
    exist yet (it creates it): the first attempt dies with its model's files
    uploaded and no manifest, a retry saves normally."""

    def __init__(self, value):
        self.value = value

    @classmethod
    def train(cls, marker, value=5):
        if not first_time(marker):
            return cls(value + 1)
        return DiesMidUpload.train.__func__(cls, value)


class DiesAfterSaveOnce(trainerkit.ModuleBase):
    """Dies (os._exit) right after its model was renamed into place at a plain
    save_path, before the outcome is reported, while the file ``marker`` does
    not exist yet (it creates it): the retry finds its own earlier model there."""

    def __init__(self, value):
        self.value = value

    @classmethod
    def train(cls, marker, value=5):
        if not first_time(marker):
            return cls(value + 1)
        from trainerkit import module

        module._fsync_dir = lambda path: os._exit(19)
        return cls(value)


class RankCheckpoints(trainerkit.ModuleBase):
    """Every rank saves a checkpoint named after the epoch and records what
    save_checkpoint returned and what latest_checkpoint gave it, in ``directory``."""

    def __init__(self, epoch):
        self.epoch = epoch

    @classmethod
    def train(cls, directory, epochs=2):
        rank = int(os.environ.get("RANK", "0"))
        previous = trainerkit.latest_checkpoint()
        start = previous.epoch if previous is not None else 0
        names = [trainerkit.save_checkpoint(cls(epoch), name=f"epoch-{epoch}") for epoch in range(start + 1, epochs + 1)]
        with open(os.path.join(directory, f"rank-{rank}"), "w") as handle:
            handle.write(f"{start} {','.join(names)}")
        return cls(epochs)
