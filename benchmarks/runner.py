"""``python -m benchmarks``: run the benchmark families, print the table, write JSON.

Each family (startup, local, subprocess, progress, output, records,
kubernetes, storage) runs in a fresh Python process, so that threads, memory and
imports left by one cannot skew another (the memory-slope row needs a clean
process above all). The parent collects every family's rows; a row a family
did not report, or a family that crashed, shows in the table as ``failed``
with the reason, never disappears.

Exit status: 0 when every row was measured or says why it cannot run (goals
met or not: those are findings, not errors); 1 when a row failed; 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Optional, Sequence

from .harness import (
    RESULTS_DIR,
    REPO_ROOT,
    CannotRun,
    Row,
    RowSpec,
    Settings,
    machine_facts,
    render_table,
    write_json,
)

#: Family name -> module; the order of the table.
FAMILIES = {
    "startup": "benchmarks.startup",
    "local": "benchmarks.local",
    "subprocess": "benchmarks.subprocess_case",
    "ranks": "benchmarks.ranks_case",
    "progress": "benchmarks.progress_case",
    "output": "benchmarks.output_case",
    "records": "benchmarks.records",
    "kubernetes": "benchmarks.kubernetes_case",
    "storage": "benchmarks.storage_case",
}
#: How long one family may run before it is reported failed.
FAMILY_TIMEOUT = {"quick": 180, "full": 1800}


def family_module(name: str) -> Any:
    return importlib.import_module(FAMILIES[name])


def all_rows() -> dict[str, tuple[RowSpec, ...]]:
    """Every family's declared rows (imports the light case modules only)."""
    return {name: tuple(family_module(name).ROWS) for name in FAMILIES}


def select(only: Optional[Sequence[str]]) -> dict[str, tuple[RowSpec, ...]]:
    """The rows to run: all, or those named by ``--only`` (a family or a row id).

    Raises:
        ValueError: a name that is no family or row, listing the known ones.
    """
    rows = all_rows()
    if not only:
        return rows
    chosen: dict[str, tuple[RowSpec, ...]] = {}
    for wanted in only:
        hits = {
            family: tuple(spec for spec in specs if spec.id == wanted or spec.id.startswith(wanted + "."))
            for family, specs in rows.items()
        }
        hits = {family: specs for family, specs in hits.items() if specs}
        if not hits:
            known = ", ".join(list(FAMILIES) + [spec.id for specs in rows.values() for spec in specs])
            raise ValueError(f"--only {wanted!r}: no such case; known cases: {known}")
        for family, specs in hits.items():
            chosen[family] = tuple(dict.fromkeys(chosen.get(family, ()) + specs))
    return {family: chosen[family] for family in FAMILIES if family in chosen}


# -- the child side --------------------------------------------------------------------


def run_family_here(name: str, settings: Settings) -> list[dict[str, Any]]:
    """Run one family in this process; its rows as dicts (failures included)."""
    module = family_module(name)
    try:
        rows: list[Row] = module.run(settings)
    except CannotRun as exc:
        rows = [spec.cannot_run(str(exc)) for spec in module.ROWS]
    except Exception as exc:  # a crash or a failed result check: report it, row by row
        detail = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        rows = [spec.failed(detail) for spec in module.ROWS]
    return [row.to_dict() for row in rows]


def _child_main(name: str, output: str, settings: Settings) -> int:
    write_json(output, {"rows": run_family_here(name, settings)})
    return 0


# -- the parent side -------------------------------------------------------------------


def _child_environment(state_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    # Children (and their own children: SUBPROCESS workers, spawn starts) must
    # import this checkout's trainerkit and benchmarks.
    paths = [REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO_ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # Nothing a benchmark does may write into the real home's state directory.
    env["TRAINERKIT_STATE_DIR"] = state_dir
    return env


def run_family_in_child(
    name: str, specs: Sequence[RowSpec], settings: Settings, workdir: str
) -> tuple[list[Row], float]:
    """Run one family in a fresh interpreter; every spec in ``specs`` gets a row."""
    output = os.path.join(workdir, f"{name}.json")
    state_dir = os.path.join(workdir, f"{name}-state")
    os.makedirs(state_dir, exist_ok=True)
    command = [sys.executable, "-m", "benchmarks", "--family-child", name, "--child-output", output]
    if settings.quick:
        command.append("--quick")
    for spec in specs:
        command += ["--only", spec.id]
    started = time.perf_counter()
    reason: Optional[str] = None
    timeout = FAMILY_TIMEOUT["quick" if settings.quick else "full"]
    try:
        completed = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=_child_environment(state_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if completed.stdout.strip():
            sys.stderr.write(completed.stdout)  # tracebacks of failed rows, warnings
        if completed.returncode != 0:
            tail = completed.stdout.strip().splitlines()[-1:] or ["no output"]
            reason = (
                f"the {name} benchmark process exited with {completed.returncode} (its output is "
                f"above the table): {tail[0]}"
            )
    except subprocess.TimeoutExpired:
        reason = f"the {name} benchmark process ran past {timeout} s and was stopped"
    seconds = time.perf_counter() - started
    reported: dict[str, dict[str, Any]] = {}
    if reason is None:
        try:
            with open(output, encoding="utf-8") as handle:
                reported = {row["id"]: row for row in json.load(handle)["rows"]}
        except (OSError, ValueError, KeyError) as exc:
            reason = f"the {name} benchmark process left no readable result: {exc}"
    rows = []
    for spec in specs:
        if spec.id in reported:
            rows.append(Row.from_dict(reported[spec.id], spec))
        else:
            rows.append(spec.failed(reason or f"the {name} benchmarks did not report this row"))
    return rows, seconds


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run trainerkit's benchmarks: each case against its baseline, in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="a small version (CI smoke: about a minute)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="CASE",
        help="run only this case: a family (" + ", ".join(FAMILIES) + ") or a row id such as "
        "local.throughput.vs_executor; repeatable",
    )
    parser.add_argument(
        "--results-dir",
        default=RESULTS_DIR,
        help="where to write the JSON result (default: benchmarks/results/)",
    )
    parser.add_argument("--family-child", choices=list(FAMILIES), help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parse_arguments(argv)
    settings = Settings(quick=arguments.quick)
    if arguments.family_child:
        wanted = frozenset(arguments.only) if arguments.only else None
        return _child_main(arguments.family_child, arguments.child_output, Settings(arguments.quick, wanted))

    try:
        selected = select(arguments.only)
    except ValueError as exc:
        print(f"python -m benchmarks: {exc}", file=sys.stderr)
        return 2
    mode = "quick" if settings.quick else "full"
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        # Every process the cases start (imports timed against `python -c pass`,
        # SUBPROCESS workers, ranks) would compile trainerkit from source each
        # time, about 100 ms that no installed trainerkit pays: measure with
        # bytecode caches, as users run it.
        print(
            "python -m benchmarks: PYTHONDONTWRITEBYTECODE is unset for the run (bytecode caches are "
            "written and used, as in an installed trainerkit)",
            file=sys.stderr,
        )
    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_facts()
    print(
        f"trainerkit benchmarks ({mode}) on {machine['usable_cpus']} CPUs, Python {machine['python']}, "
        f"load average {_load_text(machine['load_average'])}",
        flush=True,
    )
    rows: list[Row] = []
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="trainerkit-bench-") as workdir:
        for family, specs in selected.items():
            print(f"  running {family} ...", flush=True)
            family_rows, seconds = run_family_in_child(family, specs, settings, workdir)
            rows.extend(family_rows)
            timings[family] = round(seconds, 2)
    finished_at = datetime.datetime.now(datetime.timezone.utc)
    machine["load_average_end"] = _load_now()

    print()
    print(render_table(rows))
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(arguments.results_dir, f"bench-{stamp}-{mode}.json")
    write_json(
        path,
        {
            "benchmark": "trainerkit",
            "format": 1,
            "mode": mode,
            "only": arguments.only,
            "started_at": started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "family_seconds": timings,
            "machine": machine,
            "cases": [row.to_dict() for row in rows],
        },
    )
    print(f"\nload average at the end: {_load_text(machine['load_average_end'])}; result written to {path}")
    return 1 if any(row.failed for row in rows) else 0


def _load_now() -> Optional[list[float]]:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _load_text(load: Optional[list[float]]) -> str:
    return " ".join(f"{value:.2f}" for value in load) if load else "unknown"
