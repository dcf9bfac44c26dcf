"""The shared benchmark harness: settings, repeats, figures, rows, table, JSON.

Every claim the benchmarks make is a *ratio measured in the same run*: each
repeat runs trainerkit and its baselines back to back, in rotating order, so
that a burst of load from elsewhere on a shared machine hits both sides of a
pair. A row's ratio is the median of the per-repeat ratios (or differences).

A figure is reported as its median and its spread, the median absolute
deviation as a percentage of the median (``±4%``); the raw values go to JSON.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")

T = TypeVar("T")

#: Distributions whose versions every result records.
PACKAGES = ("trainerkit", "alchemy-config", "PyYAML", "caikit", "kubernetes")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How big a run is, and which rows it wants.

    ``quick`` is the CI smoke size (it runs; no time is judged). ``rows``:
    the row ids to measure, or None for all.
    """

    quick: bool = False
    rows: Optional[frozenset[str]] = None

    def size(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` in quick mode."""
        return quick if self.quick else full

    def wants(self, *specs: "RowSpec") -> bool:
        """Whether any of ``specs`` is to be measured."""
        return self.rows is None or any(spec.id in self.rows for spec in specs)


class CannotRun(Exception):
    """A case (or one row of it) cannot run here; the message says why."""


# -- figures ------------------------------------------------------------------------


@dataclasses.dataclass
class Figure:
    """A measured quantity: raw values in ``unit``, shown as median and spread."""

    values: list[float]
    unit: str

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a figure needs at least one value")

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """Median absolute deviation as a fraction of the median (0 for one value)."""
        if len(self.values) < 2 or self.median == 0:
            return 0.0
        middle = self.median
        return statistics.median(abs(v - middle) for v in self.values) / abs(middle)

    def text(self) -> str:
        spread = f" ±{self.spread * 100:.0f}%" if len(self.values) > 1 else ""
        return format_value(self.median, self.unit) + spread

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "median": self.median,
            "spread": self.spread,
            "n": len(self.values),
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
        }


def format_value(value: float, unit: str) -> str:
    """Human text for one value: seconds become s/ms/µs, rates get thousands separators."""
    if unit == "s":
        magnitude = abs(value)
        if magnitude >= 1:
            return f"{value:.2f} s"
        if magnitude >= 1e-3:
            return f"{value * 1e3:.1f} ms"
        if magnitude >= 1e-5:
            return f"{value * 1e6:.0f} µs"
        return f"{value * 1e6:.2f} µs"  # per-call costs: a fraction of a µs matters
    if unit == "x":
        return f"{value:.2f}x"
    if unit.startswith("/") or unit in ("B", "B/record", "B/training", "req/s"):
        return f"{value:,.0f} {unit}".replace(" /", "/")
    return f"{value:.3g} {unit}"


def counted(number: int, noun: str, plural: Optional[str] = None) -> str:
    """``3 rounds``, ``1 round``: a count for the notes."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a slope needs two or more (x, y) points")
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx


# -- repeating ----------------------------------------------------------------------


def alternate(repeats: int, runners: Mapping[str, Callable[[], T]], warm_up: bool = False) -> dict[str, list[T]]:
    """Run every runner ``repeats`` times, interleaved, rotating which goes first.

    Each runner measures one round and returns what it measured (it must check
    its own results before returning). Returns the measurements per runner
    name, index ``i`` of each list coming from the same round. With
    ``warm_up``, each runner runs once first, not measured (first runs compile
    and fill caches).
    """
    if warm_up:
        for runner in runners.values():
            runner()
    names = list(runners)
    values: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(runners[name]())
    return values


def paired(kind: str, ours: Sequence[float], theirs: Sequence[float]) -> Figure:
    """Per-round ratios (``kind='ratio'``) or differences (``'difference'``, in s)."""
    if len(ours) != len(theirs):
        raise ValueError("paired figures need the same number of rounds")
    if kind == "ratio":
        return Figure([a / b for a, b in zip(ours, theirs)], "x")
    if kind == "difference":
        return Figure([a - b for a, b in zip(ours, theirs)], "s")
    raise ValueError(f"kind must be 'ratio' or 'difference', got {kind!r}")


class Stopwatch:
    """``with Stopwatch() as watch: ...``; then ``watch.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.seconds = time.perf_counter() - self._start


def check(condition: bool, message: str) -> None:
    """A result check: a case never reports a time for work that went wrong."""
    if not condition:
        raise AssertionError(message)


# -- rows ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Goal:
    """What a row must show: ``subject op threshold``.

    ``subject`` is ``ratio`` (trainerkit / baseline, per round), ``difference``
    (trainerkit - baseline, per round, in the figure's unit), ``value`` (the
    trainerkit figure itself) or ``check`` (a yes/no finding).
    """

    subject: str
    op: str
    threshold: float
    text: str

    def met(self, row: "Row") -> bool:
        if self.subject == "check":
            return bool(row.check)
        figure = {"ratio": row.ratio, "difference": row.ratio, "value": row.trainerkit}[self.subject]
        assert figure is not None
        value = figure.median
        return {"<": value < self.threshold, "<=": value <= self.threshold, ">=": value >= self.threshold}[
            self.op
        ]


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """A row a case promises to report, declared before anything runs."""

    id: str
    title: str
    baseline: str
    goal: Optional[Goal] = None

    def measured(
        self,
        trainerkit: Figure,
        baseline: Optional[Figure] = None,
        ratio: Optional[Figure] = None,
        notes: Iterable[str] = (),
    ) -> "Row":
        return Row(self, trainerkit=trainerkit, baseline=baseline, ratio=ratio, notes=list(notes))

    def checked(self, ok: bool, detail: str, notes: Iterable[str] = ()) -> "Row":
        return Row(self, check=ok, detail=detail, notes=list(notes))

    def cannot_run(self, reason: str, notes: Iterable[str] = ()) -> "Row":
        return Row(self, cannot_run=reason, notes=list(notes))

    def failed(self, reason: str) -> "Row":
        """The row's run went wrong (a crash, or a result check that failed)."""
        return Row(self, cannot_run=reason, failed=True)


@dataclasses.dataclass
class Row:
    """One line of the table: a measured comparison, a check, or why it cannot run."""

    spec: RowSpec
    trainerkit: Optional[Figure] = None
    baseline: Optional[Figure] = None
    ratio: Optional[Figure] = None
    check: Optional[bool] = None
    detail: str = ""
    cannot_run: Optional[str] = None
    failed: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.failed:
            return "failed"
        if self.cannot_run is not None:
            return "cannot run"
        if self.spec.goal is None:
            return "reported"
        return "met" if self.spec.goal.met(self) else "not met"

    def cells(self) -> list[str]:
        """Table cells: case, trainerkit, baseline, ratio, goal, result."""
        goal = self.spec.goal.text if self.spec.goal else "—"
        if self.cannot_run is not None:
            return [self.spec.id, "—", self.spec.baseline, "—", goal, f"{self.verdict}: {self.cannot_run}"]
        if self.check is not None:
            return [self.spec.id, self.detail, self.spec.baseline, "—", goal, self.verdict]
        assert self.trainerkit is not None
        baseline = self.spec.baseline
        if self.baseline is not None:
            baseline = f"{self.spec.baseline}: {self.baseline.text()}"
        ratio = "—"
        if self.ratio is not None:
            ratio = self.ratio.text()
            if self.ratio.unit != "x" and self.ratio.median >= 0:
                ratio = "+" + ratio  # a difference: always signed
        return [self.spec.id, self.trainerkit.text(), baseline, ratio, goal, self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.spec.id,
            "title": self.spec.title,
            "baseline_name": self.spec.baseline,
            "goal": dataclasses.asdict(self.spec.goal) if self.spec.goal else None,
            "verdict": self.verdict,
            "cannot_run": self.cannot_run,
            "failed": self.failed,
            "trainerkit": self.trainerkit.to_dict() if self.trainerkit else None,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "ratio": self.ratio.to_dict() if self.ratio else None,
            "check": self.check,
            "detail": self.detail,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], spec: RowSpec) -> "Row":
        def figure(name: str) -> Optional[Figure]:
            raw = data.get(name)
            return Figure(list(raw["values"]), raw["unit"]) if raw else None

        return cls(
            spec,
            trainerkit=figure("trainerkit"),
            baseline=figure("baseline"),
            ratio=figure("ratio"),
            check=data.get("check"),
            detail=data.get("detail", ""),
            cannot_run=data.get("cannot_run"),
            failed=bool(data.get("failed", False)),
            notes=list(data.get("notes", [])),
        )


def guarded(specs: Sequence[RowSpec], measure: Callable[[], list[Row]]) -> list[Row]:
    """Run one part of a family; if it cannot run or fails, say so for each of its rows.

    A failure (a crash, or a result check that did not hold) is printed with
    its traceback and reported as ``failed``; the family's other parts still run.
    """
    try:
        return measure()
    except CannotRun as exc:
        return [spec.cannot_run(str(exc)) for spec in specs]
    except Exception as exc:
        traceback.print_exc()
        return [spec.failed(f"{type(exc).__name__}: {exc}") for spec in specs]


# -- reporting ----------------------------------------------------------------------


HEADER = ["case", "trainerkit", "baseline", "ratio", "goal", "result"]


def render_table(rows: Sequence[Row]) -> str:
    """A plain-text table, one line per row, then the notes."""
    lines = [HEADER] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER) - 1)]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
        if index == 0:
            out.append("  ".join("-" * width for width in widths) + "  " + "-" * len("result"))
    notes = [(row.spec.id, note) for row in rows for note in row.notes]
    if notes:
        out.append("")
        out.extend(f"  {case}: {note}" for case, note in notes)
    return "\n".join(out)


def package_versions() -> dict[str, Optional[str]]:
    versions: dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("trainerkit") is None:
        # Run from a checkout that is not pip-installed: the source's own version.
        try:
            sys.path.insert(0, REPO_ROOT)
            import trainerkit

            versions["trainerkit"] = f"{trainerkit.__version__} (source checkout)"
        except ImportError:
            pass
        finally:
            sys.path.remove(REPO_ROOT)
    versions["sqlite"] = sqlite3.sqlite_version
    return versions


def machine_facts() -> dict[str, Any]:
    """What the numbers were measured on (load average included: the machine is shared)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": load,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_commit": commit,
    }


def write_json(path: str, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (a half-written result never appears)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, allow_nan=False)
        handle.write("\n")
    os.replace(temporary, path)
