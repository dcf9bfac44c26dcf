"""Modules for the ``trainerkit describe``/``status`` parameter tests; importable
as ``tests.cli.capability_modules`` by the command's processes."""

from __future__ import annotations

from typing import Optional

import trainerkit


class Opaque:
    """A default that JSON cannot hold: recorded by ``repr``."""

    def __repr__(self) -> str:
        return "<Opaque>"


class Tuned(trainerkit.ModuleBase):
    """Its ``training_parameters`` hook doubles ``lr`` and fills ``warmup``."""

    @classmethod
    def train(
        cls, data_path: str, epochs: int = 3, *, lr: float = 0.1, warmup: Optional[int] = None,
        extra: object = Opaque(), **options: object,
    ) -> "Tuned":
        return cls()

    @classmethod
    def training_parameters(cls, **params: object) -> dict:
        params["lr"] = params["lr"] * 2
        if params["warmup"] is None:
            params["warmup"] = params["epochs"] // 3
        return params


class BadHook(trainerkit.ModuleBase):
    """Its hook adds a parameter ``train`` does not take."""

    @classmethod
    def train(cls, epochs: int = 1) -> "BadHook":
        return cls()

    @classmethod
    def training_parameters(cls, **params: object) -> dict:
        return {**params, "surprise": 1}
