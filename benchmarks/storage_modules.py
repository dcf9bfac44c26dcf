"""The model the storage benchmark saves and loads: ``size`` bytes of data in
a few files, written and read by the module itself (as a real model's weights
would be), so both sides of the comparison move exactly the same files."""

from __future__ import annotations

import os

import trainerkit

#: How many files the weights are split into (a sharded checkpoint).
SHARDS = 4


class Weights(trainerkit.ModuleBase):
    """``size`` bytes of weights, saved as SHARDS raw files."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def train(cls, size: int = 1 << 20) -> "Weights":
        return cls(os.urandom(size))

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        step = -(-len(self.data) // SHARDS)
        for index in range(SHARDS):
            with open(os.path.join(path, f"shard-{index}.bin"), "wb") as handle:
                handle.write(self.data[index * step:(index + 1) * step])

    @classmethod
    def load(cls, path: str) -> "Weights":
        parts = []
        for index in range(SHARDS):
            with open(os.path.join(path, f"shard-{index}.bin"), "rb") as handle:
                parts.append(handle.read())
        return cls(b"".join(parts))
