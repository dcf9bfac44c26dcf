"""Start-up: what ``import trainerkit`` and the ``trainerkit`` command cost.

Each figure is the wall time of a fresh ``python`` process (many repeats,
interleaved with the baseline ``python -c pass``), so it includes everything
a user waits for. A separate check proves that neither ``import trainerkit``
nor building and using a LOCAL trainer imports the ``kubernetes`` package.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from typing import Callable, Sequence

from . import subjects
from .harness import Figure, Goal, Row, RowSpec, Settings, alternate, check, guarded, paired

NAME = "startup"

IMPORT = RowSpec(
    "startup.import",
    "python -c 'import trainerkit' vs python -c pass (wall time of the process)",
    "python -c pass",
    Goal("difference", "<=", 0.150, "<= +150 ms"),
)
IMPORT_VS_CAIKIT = RowSpec(
    "startup.import.vs_caikit",
    "python -c 'import trainerkit' vs python -c 'import caikit' (context)",
    "import caikit",
)
CLI_HELP = RowSpec(
    "startup.cli_help",
    "trainerkit --help vs python -c pass (wall time of the process)",
    "python -c pass",
)
NO_KUBERNETES = RowSpec(
    "startup.no_kubernetes_import",
    "the kubernetes package stays unimported by import trainerkit and by a LOCAL trainer",
    "sys.modules",
    Goal("check", "==", 1, "never imported"),
)
ROWS = (IMPORT, IMPORT_VS_CAIKIT, CLI_HELP, NO_KUBERNETES)

_PROBE = """
import json, sys
import trainerkit
after_import = sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes."))
from benchmarks.trivial_modules import Trivial
manager = trainerkit.TrainerManager()
trainer = manager.get_trainer("default")
model = trainer.train(Trivial, 7).result(timeout=60)
manager.close()
after_local = sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes."))
print(json.dumps({"after_import": after_import, "after_local": after_local, "value": model.value,
                  "trainer_type": type(trainer).name}))
"""


def run(settings: Settings) -> list[Row]:
    rows = []
    timings = (IMPORT, IMPORT_VS_CAIKIT, CLI_HELP)
    if settings.wants(*timings):
        rows += guarded(timings, lambda: _timing_rows(settings))
    if settings.wants(NO_KUBERNETES):
        rows += guarded([NO_KUBERNETES], lambda: [_kubernetes_check()])
    return rows


def _timing_rows(settings: Settings) -> list[Row]:
    repeats = settings.size(30, 3)
    python = [sys.executable]
    commands: dict[str, list[str]] = {
        "python": python + ["-c", "pass"],
        "trainerkit": python + ["-c", "import trainerkit"],
    }
    caikit_missing = subjects.caikit_missing()
    if caikit_missing is None:
        commands["caikit"] = python + ["-c", "import caikit"]
    cli_missing = _cli_missing()
    if cli_missing is None:
        commands["cli"] = python + ["-m", "trainerkit", "--help"]
    if not settings.quick:  # compile .pyc files and warm the disk cache first
        for command in commands.values():
            _timed(command)
    runners: dict[str, Callable[[], float]] = {
        name: (lambda command=command: _timed(command)) for name, command in commands.items()
    }
    times = alternate(repeats, runners)
    note = f"{repeats} interleaved runs of each command; figures are process wall times"
    bare = Figure(times["python"], "s")
    rows = [
        IMPORT.measured(
            Figure(times["trainerkit"], "s"),
            bare,
            paired("difference", times["trainerkit"], times["python"]),
            notes=[note],
        )
    ]
    if caikit_missing is None:
        rows.append(
            IMPORT_VS_CAIKIT.measured(
                Figure(times["trainerkit"], "s"),
                Figure(times["caikit"], "s"),
                paired("ratio", times["trainerkit"], times["caikit"]),
                notes=subjects.caikit_notes(),
            )
        )
    else:
        rows.append(IMPORT_VS_CAIKIT.cannot_run(caikit_missing))
    if cli_missing is None:
        rows.append(
            CLI_HELP.measured(
                Figure(times["cli"], "s"), bare, paired("difference", times["cli"], times["python"])
            )
        )
    else:
        rows.append(CLI_HELP.cannot_run(cli_missing))
    return rows


def _cli_missing() -> str | None:
    if importlib.util.find_spec("trainerkit.__main__") is None:
        return "the trainerkit command does not exist yet (no trainerkit/__main__.py, no console script)"
    return None


def _timed(command: Sequence[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    check(
        completed.returncode == 0,
        f"{' '.join(command[1:])} exited with {completed.returncode}: {completed.stderr.strip()[-300:]}",
    )
    if command[-1] == "--help":
        check("usage" in completed.stdout.lower(), "trainerkit --help printed no usage")
    return seconds


def _kubernetes_check() -> Row:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    check(completed.returncode == 0, f"the sys.modules probe failed: {completed.stderr.strip()[-300:]}")
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    check(
        found["value"] == 7 and found["trainer_type"] == "LOCAL", f"the probe's training went wrong: {found}"
    )
    imported = found["after_import"] or found["after_local"]
    if imported:
        detail = "imported: " + ", ".join(found["after_local"] or found["after_import"])
    else:
        detail = "not imported"
    return NO_KUBERNETES.checked(
        not imported,
        detail,
        notes=[
            "checked after import trainerkit, and after building the LOCAL default trainer "
            "and running one training"
        ],
    )
