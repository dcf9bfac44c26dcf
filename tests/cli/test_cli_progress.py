"""What the progress display says while ``trainerkit`` follows a training:
plain lines (rate-limited) off a terminal, ETA from the training's own record."""

from __future__ import annotations

import datetime
import io

import pytest

from trainerkit.cli.progress_display import LineDisplay, NullDisplay, open_display
from trainerkit.cli.render import eta_seconds, format_duration, progress_line
from trainerkit.info import ProgressReport, TrainingInfo, TrainingStatus

T0 = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def info(status=TrainingStatus.RUNNING, step=None, total=None, at=0.0, **metrics):
    report = None
    if step is not None:
        report = ProgressReport(step=step, total=total, metrics=metrics, time=T0 + datetime.timedelta(seconds=at))
    return TrainingInfo(
        id="default--k3j9x7q2m4ab",
        trainer_name="default",
        status=status,
        module="m:M",
        submission_time=T0,
        start_time=T0 if status is not TrainingStatus.QUEUED else None,
        completion_time=T0 + datetime.timedelta(seconds=at) if status.is_terminal else None,
        progress=report,
    )


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_extrapolates_from_the_time_taken_so_far():
    # A quarter done after 10 s: 30 s to go, less the 2 s since the report.
    assert eta_seconds(info(step=25, total=100, at=10), T0 + datetime.timedelta(seconds=12)) == pytest.approx(28)


def test_eta_is_unknown_without_a_total_or_a_step():
    assert eta_seconds(info(step=5, at=1), T0) is None
    assert eta_seconds(info(), T0) is None
    assert eta_seconds(info(step=0, total=10, at=1), T0) is None


def test_eta_never_goes_negative():
    assert eta_seconds(info(step=50, total=100, at=10), T0 + datetime.timedelta(seconds=60)) == 0.0


def test_progress_line_carries_steps_eta_and_metrics():
    line = progress_line(info(step=25, total=100, at=10, loss=0.123456, accuracy=0.5), T0 + datetime.timedelta(seconds=10))
    assert line == "default--k3j9x7q2m4ab: RUNNING 25/100 (25%) ETA 30s loss=0.1235 accuracy=0.5"


@pytest.mark.parametrize(
    "seconds, text",
    [(0.42, "0.4s"), (12.4, "12s"), (185, "3m05s"), (7620, "2h07m"), (None, "-")],
)
def test_durations_read_at_a_glance(seconds, text):
    assert format_duration(seconds) == text


def test_line_display_writes_status_changes_and_rate_limits_reports():
    stream, clock = io.StringIO(), FakeClock()
    display = LineDisplay(stream, min_interval=1.0, clock=clock)
    display.update(info(TrainingStatus.QUEUED))
    display.update(info(TrainingStatus.RUNNING))
    display.update(info(step=1, total=10, at=0.1))  # 0 s since the last line: held back
    clock.now = 0.5
    display.update(info(step=2, total=10, at=0.5))  # still within the second: replaces step 1
    display.update(info(step=2, total=10, at=0.5))  # the same report again: nothing new
    clock.now = 1.0
    display.update(info(step=3, total=10, at=1.0))  # a second later: written
    clock.now = 1.2
    display.update(info(step=4, total=10, at=1.2))  # held back...
    display.close()  # ...and written at the end, so the last step is never lost
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[1:3] for line in lines] == [
        ["QUEUED"], ["RUNNING"], ["RUNNING", "3/10"], ["RUNNING", "4/10"]
    ]


def test_line_display_writes_nothing_more_on_close_when_up_to_date():
    stream, clock = io.StringIO(), FakeClock()
    display = LineDisplay(stream, min_interval=1.0, clock=clock)
    display.update(info(step=1, total=2, at=0.1))
    display.close()
    assert len(stream.getvalue().splitlines()) == 1


def test_no_bar_and_no_lines_off_a_terminal_in_json_mode():
    assert isinstance(open_display(io.StringIO(), json_mode=True, stdout=io.StringIO()), NullDisplay)
    assert isinstance(open_display(io.StringIO(), json_mode=False, stdout=io.StringIO()), LineDisplay)
