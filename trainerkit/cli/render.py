"""Turning trainings into text for people: times, durations, progress, tables.

Pure functions of their inputs (``now`` is passed in where it matters), shared
by the commands and the progress display so both say the same thing.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..capabilities import SupportLevel
from ..info import ProgressReport, TrainingInfo, TrainingStatus


def format_time(value: Optional[datetime.datetime]) -> str:
    """``2025-01-31 14:02:07`` in the local time zone, or ``-``."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: Optional[float]) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h07m``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_number(value: Any) -> str:
    """Numbers short enough for one line (``0.0512``, ``200``); others as text."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "null"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``loss=0.0512 accuracy=0.975``."""
    return " ".join(f"{name}={format_number(value)}" for name, value in metrics.items())


def format_steps(report: Optional[ProgressReport]) -> str:
    """``150/200 (75%)``, ``step 150`` without a total, ``-`` without a report."""
    if report is None or report.step is None:
        return "-"
    if report.total:
        fraction = report.fraction or 0.0
        return f"{format_number(report.step)}/{format_number(report.total)} ({fraction:.0%})"
    return f"step {format_number(report.step)}"


def elapsed_seconds(info: TrainingInfo, now: datetime.datetime) -> Optional[float]:
    """Running time: start to completion (or to ``now`` while it runs)."""
    if info.start_time is None:
        return None
    end = info.completion_time or (None if info.status.is_terminal else now)
    if end is None:
        return None
    return (end - info.start_time).total_seconds()


def eta_seconds(info: TrainingInfo, now: datetime.datetime) -> Optional[float]:
    """Seconds left, extrapolated from the time the training took to reach its
    latest report; None while that cannot be known (no total, no step yet).

    Both times come from the training's record, so any process (even one that
    started watching late) computes the same estimate.
    """
    report = info.progress
    if info.status.is_terminal:
        return 0.0 if info.status is TrainingStatus.COMPLETED else None
    if report is None or report.time is None or info.start_time is None:
        return None
    fraction = report.fraction
    if not fraction:
        return None
    spent = (report.time - info.start_time).total_seconds()
    if spent <= 0:
        return None
    remaining = spent * (1.0 - fraction) / fraction - (now - report.time).total_seconds()
    return max(0.0, remaining)


def progress_line(info: TrainingInfo, now: datetime.datetime) -> str:
    """One plain progress line: ``<id>: RUNNING 150/200 (75%) ETA 3.2s loss=0.05``."""
    parts = [f"{info.id}: {info.status.value}"]
    report = info.progress
    if report is not None:
        if report.step is not None:
            parts.append(format_steps(report))
        eta = eta_seconds(info, now)
        if eta is not None and not info.status.is_terminal:
            parts.append(f"ETA {format_duration(eta)}")
        if report.metrics:
            parts.append(format_metrics(report.metrics))
    return " ".join(parts)


def status_lines(info: TrainingInfo, now: datetime.datetime, trainer_type: str = "") -> list[str]:
    """The ``trainerkit status`` block: one ``label: value`` per line, then
    the errors with the training's traceback."""
    trainer = f"{info.trainer_name} ({trainer_type})" if trainer_type else info.trainer_name
    rows: list[tuple[str, str]] = [
        ("id", info.id),
        ("status", info.status.value),
        ("trainer", trainer),
        ("module", info.module),
    ]
    by_repr = set(info.parameters_by_repr)
    for index, (name, value) in enumerate(info.parameters.items()):
        rows.append(("parameters" if index == 0 else "", format_parameter(name, value, by_repr=name in by_repr)))
    if info.capabilities:
        rows.append(("capabilities", format_served(info.capabilities)))
    if info.model_name:
        rows.append(("model name", info.model_name))
    rows.append(("save path", info.save_path or "- (model kept in the training process's memory only)"))
    if info.tags:
        rows.append(("tags", ", ".join(info.tags)))
    if info.ranks > 1:
        rows.append(("ranks", f"{info.ranks} processes (trainerkit logs {info.id} --rank K)"))
    if info.devices:
        rows.append(("devices", format_devices(info.devices, info.ranks)))
    rows.append(("submitted", format_time(info.submission_time)))
    rows.append(("started", format_time(info.start_time)))
    if info.status.is_terminal:
        rows.append(("finished", format_time(info.completion_time)))
    elapsed = elapsed_seconds(info, now)
    if elapsed is not None:
        rows.append(("ran for", format_duration(elapsed)))
    report = info.progress
    if report is not None:
        text = format_steps(report)
        eta = eta_seconds(info, now)
        if eta is not None and not info.status.is_terminal:
            text += f", ETA {format_duration(eta)}"
        rows.append(("progress", text))
        if report.metrics:
            rows.append(("metrics", format_metrics(report.metrics)))
    if info.attempt > 1:
        rows.append(("attempt", str(info.attempt)))
    if info.detail:
        rows.append(("detail", info.detail))
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"{label + ':' if label else '':<{width}} {value}" for label, value in rows]
    for error in info.errors:
        text = f"{error.type}: {error.message}" if error.type else error.message
        lines.append(f"{'error:':<{width}} {text}")
        if error.traceback and info.status is TrainingStatus.ERRORED:
            lines.append("traceback of the training:")
            lines.extend("  " + line for line in error.traceback.rstrip().splitlines())
    return lines


def format_devices(devices: "tuple[str, ...]", ranks: int) -> str:
    """``0, 1``; for several ranks each with its own run of devices (rank 0's
    first, as info.devices lists them): ``0,1 (rank 0), 2,3 (rank 1)``."""
    if ranks <= 1 or len(devices) % ranks:
        return ", ".join(devices)
    each = len(devices) // ranks
    return ", ".join(
        f"{','.join(devices[rank * each:(rank + 1) * each])} (rank {rank})" for rank in range(ranks)
    )


#: Longer parameter values are cut here (``trainerkit --json status`` has them whole).
PARAMETER_WIDTH = 200


def format_parameter(name: str, value: Any, *, by_repr: bool = False) -> str:
    """``epochs=300``, ``data_path=null``, ``layers=[64, 32]``: the value as
    JSON, which ``--arg`` reads back; one recorded by ``repr`` is shown as
    that text and marked: ``data=<Opaque> (repr)``."""
    text = str(value) if by_repr else json.dumps(value, ensure_ascii=False)
    if len(text) > PARAMETER_WIDTH:
        text = text[:PARAMETER_WIDTH] + "…"
    return f"{name}={text}" + (" (repr)" if by_repr else "")


def format_served(capabilities: Mapping[str, Optional[SupportLevel]]) -> str:
    """``cancel=best-effort, logs=not served``: how each requested capability
    was served (``not served``: disabled, or optional and not available)."""
    return ", ".join(
        f"{name}={level.describe() if level is not None else 'not served'}" for name, level in capabilities.items()
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces (no trailing spaces)."""
    all_rows = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in all_rows
    ]


def short_module(module: str) -> str:
    """``package.module:Class`` to ``Class``."""
    return module.rpartition(":")[2] or module


def training_row(info: TrainingInfo, now: datetime.datetime) -> list[str]:
    """One row of ``trainerkit list``."""
    return [
        info.id,
        info.status.value,
        format_steps(info.progress),
        format_time(info.submission_time),
        format_duration(elapsed_seconds(info, now)),
        short_module(info.module),
        ",".join(info.tags) or "-",
    ]


LIST_HEADERS = ("ID", "STATUS", "PROGRESS", "SUBMITTED", "RAN FOR", "MODULE", "TAGS")


def support_cell(level: Optional[SupportLevel]) -> str:
    """A cell of the capability matrix: ``native, can disable``, ``best-effort``...;
    ``-`` when unsupported, ``?`` when the trainer could not be asked (None)."""
    if level is None:
        return "?"
    return level.describe() if level else "-"


def capability_matrix(
    names: Sequence[str], trainers: Sequence[tuple[str, Optional[Mapping[str, SupportLevel]]]]
) -> list[str]:
    """The ``trainerkit trainers`` capability table: a row per capability in
    ``names``, a column per ``(trainer name, its capabilities() or None)``."""
    return table(
        ("CAPABILITY", *(name for name, _ in trainers)),
        (
            [capability, *(support_cell(levels.get(capability, SupportLevel(0)) if levels is not None else None)
                           for _, levels in trainers)]
            for capability in names
        ),
    )
