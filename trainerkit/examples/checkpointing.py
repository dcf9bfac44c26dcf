"""A module that checkpoints every epoch and resumes from its latest checkpoint.

Standard library only. It fits a line ``y = w * x + b`` to noisy points by
gradient descent, one pass over the data per epoch, and after every epoch calls
:func:`trainerkit.save_checkpoint`; at the start it asks
:func:`trainerkit.latest_checkpoint` for where to pick up. So a training that
is killed and retried (``max_retries``), or a new training started with
``resume_from=<id>``, goes on from the last finished epoch instead of epoch 0
(docs/storage.md)::

    python -m trainerkit train trainerkit.examples.checkpointing:LineFit \\
        --arg epochs=20 --save-path /tmp/models --save-with-id
    python -m trainerkit train trainerkit.examples.checkpointing:LineFit \\
        --arg epochs=40 --save-path /tmp/models --save-with-id --resume-from <that id>

``crash_after_epoch`` makes the first attempt kill its own process after that
epoch's checkpoint (to see a retry resume); ``epoch_seconds`` slows epochs down
(to watch progress, or cancel and resume).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import Optional

import trainerkit


class LineFit:
    """A fitted line and how far its training got.

    Attributes:
        w, b: the line's slope and intercept.
        epoch: the epochs done.
        resumed_from: the epoch this training (attempt) started from: 0 on a
            fresh start, else the epoch of the checkpoint it resumed.
        loss: the mean squared error after the last epoch.
    """

    FILE = "line.json"

    def __init__(self, w: float = 0.0, b: float = 0.0, epoch: int = 0, resumed_from: int = 0, loss: float = 0.0):
        self.w, self.b, self.epoch, self.resumed_from, self.loss = w, b, epoch, resumed_from, loss

    @classmethod
    def train(
        cls,
        epochs: int = 10,
        learning_rate: float = 0.05,
        points: int = 200,
        seed: int = 0,
        crash_after_epoch: Optional[int] = None,
        epoch_seconds: float = 0.0,
    ) -> "LineFit":
        """Fit for ``epochs`` epochs in all, checkpointing after each one."""
        if epochs < 1:
            raise ValueError(f"epochs must be 1 or more, got {epochs}")
        rng = random.Random(seed)
        data = [(x, 3.0 * x + 1.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(points))]
        previous = trainerkit.latest_checkpoint()
        model = cls() if previous is None else cls(previous.w, previous.b, previous.epoch, previous.epoch, previous.loss)
        for epoch in range(model.epoch + 1, epochs + 1):
            trainerkit.check_canceled()
            grad_w = sum(2 * (model.w * x + model.b - y) * x for x, y in data) / len(data)
            grad_b = sum(2 * (model.w * x + model.b - y) for x, y in data) / len(data)
            model.w -= learning_rate * grad_w * 10
            model.b -= learning_rate * grad_b * 10
            model.loss = sum((model.w * x + model.b - y) ** 2 for x, y in data) / len(data)
            model.epoch = epoch
            trainerkit.save_checkpoint(model)
            trainerkit.report_progress(epoch, epochs, loss=round(model.loss, 6))
            if epoch_seconds:
                time.sleep(epoch_seconds)
            if crash_after_epoch == epoch and previous is None:
                os.kill(os.getpid(), signal.SIGKILL)  # only the first attempt: the retry resumes
        return model

    def save(self, path: str) -> None:
        """Write the line as JSON into directory ``path``."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, self.FILE), "w", encoding="utf-8") as handle:
            json.dump({"w": self.w, "b": self.b, "epoch": self.epoch, "resumed_from": self.resumed_from,
                       "loss": self.loss}, handle)

    @classmethod
    def load(cls, path: str) -> "LineFit":
        """Read a line written by :meth:`save`."""
        with open(os.path.join(path, cls.FILE), encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(float(data["w"]), float(data["b"]), int(data["epoch"]), int(data["resumed_from"]),
                   float(data["loss"]))

    def __repr__(self) -> str:
        return (f"<LineFit y={self.w:.3f}x{self.b:+.3f} epoch={self.epoch} "
                f"resumed_from={self.resumed_from} loss={self.loss:.5f}>")
