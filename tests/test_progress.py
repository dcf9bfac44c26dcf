"""report_progress in a tight loop: the first report at once, then at most one
per publish interval with the latest values, the last values at the end, and
values that sit unpublished handed over by the background publisher."""

from __future__ import annotations

import threading

import pytest

import trainerkit
from trainerkit.progress import TrainingContext, training_context
from trainerkit.testing import wait_until


def context(reports, interval, canceled=lambda: False):
    return TrainingContext("default--abc", reports.append, canceled, publish_interval=interval)


def test_a_tight_loop_publishes_the_first_report_and_the_last_values():
    reports = []
    with training_context(context(reports, interval=3600)):
        for step in range(1, 10_001):
            trainerkit.report_progress(step, 10_000, loss=1 / step)
        assert [report.step for report in reports] == [1]  # the rest waits for the interval
    assert [report.step for report in reports] == [1, 10_000]
    assert reports[-1].metrics == {"loss": pytest.approx(1e-4)} and reports[-1].total == 10_000


def test_values_no_later_call_publishes_are_handed_over_in_the_background():
    reports = []
    with training_context(context(reports, interval=0.01)):
        trainerkit.report_progress(1, 3)
        trainerkit.report_progress(2, 3, loss=0.5)  # within the interval: kept
        # ...and the training then works for a long time without reporting:
        wait_until(lambda: reports[-1].step == 2, "the kept report to be published", timeout=10)
    assert [report.step for report in reports] == [1, 2]
    assert reports[-1].metrics == {"loss": 0.5}


def test_step_and_total_are_checked_at_every_call():
    reports = []
    with training_context(context(reports, interval=3600)):
        trainerkit.report_progress(1, 2)
        with pytest.raises(TypeError, match=r"report_progress step='3' must be a number or None"):
            trainerkit.report_progress("3", 2)
        with pytest.raises(TypeError, match=r"total=True must be a number or None"):
            trainerkit.report_progress(3, True)


def test_a_metric_that_cannot_be_recorded_fails_the_first_call():
    with training_context(context([], interval=3600)):
        with pytest.raises(TypeError, match=r"weights=\[1, 2\] is a list"):
            trainerkit.report_progress(1, weights=[1, 2])


def test_a_bad_last_value_is_logged_not_raised_at_the_end(caplog):
    reports = []
    with training_context(context(reports, interval=3600)):
        trainerkit.report_progress(1, 2, loss=0.5)
        trainerkit.report_progress(2, 2, loss=object())
    assert [report.step for report in reports] == [1]
    assert "the last progress report is dropped" in caplog.text


def test_numpy_like_scalars_are_converted_when_published():
    class Scalar:
        def item(self):
            return 0.25

    reports = []
    with training_context(context(reports, interval=3600)):
        trainerkit.report_progress(1, 2, loss=Scalar())
        trainerkit.report_progress(2, 2, loss=Scalar())
    assert [report.metrics for report in reports] == [{"loss": 0.25}, {"loss": 0.25}]


def test_every_call_is_a_cancellation_point():
    reports = []
    canceled = threading.Event()
    with training_context(context(reports, interval=3600, canceled=canceled.is_set)):
        trainerkit.report_progress(1, 2)
        canceled.set()
        with pytest.raises(trainerkit.TrainingCanceledError):
            trainerkit.report_progress(2, 2)
