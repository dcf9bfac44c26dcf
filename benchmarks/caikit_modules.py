"""The trivial module, written as a caikit module, for the caikit baselines.

Imported only when caikit is installed (``pip install caikit==0.29.1``). It
does exactly what :class:`benchmarks.trivial_modules.Trivial` does: ``value``
travels through train, save and load so each run can be checked.
"""

from __future__ import annotations

import alog

# caikit logs a warning per module class it cannot introspect fully; the
# benchmark output is the table, so only caikit's errors are shown.
alog.configure(default_level="error")

import caikit  # noqa: E402
import caikit.core  # noqa: E402


@caikit.module(id="0b5e2a4c-7d1f-4c38-9a62-trainerkit-bench", name="TrivialBench", version="0.0.1")
class CaikitTrivial(caikit.core.ModuleBase):
    """Trains at once; saves and loads ``value`` through caikit's own model config."""

    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value

    @classmethod
    def train(cls, value: int) -> "CaikitTrivial":
        return cls(value)

    def save(self, model_path: str) -> None:
        saver = caikit.core.ModuleSaver(self, model_path=model_path)
        with saver:
            saver.update_config({"value": self.value})

    @classmethod
    def load(cls, model_path: str) -> "CaikitTrivial":
        return cls(caikit.core.ModuleConfig.load(model_path).value)
