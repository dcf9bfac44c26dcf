"""``python -m benchmarks --quick`` runs, and accounts for every case.

A smoke test only: it never looks at a time. Speed claims live in the
benchmark's own table (docs/benchmarks.md), measured against baselines in the
same run, never in unit tests.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from benchmarks.runner import all_rows

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERDICTS = {"met", "not met", "reported", "cannot run"}

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run for the whole module: (completed process, parsed JSON result)."""
    results = tmp_path_factory.mktemp("bench-results")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH", "")) if p)
    env["TRAINERKIT_STATE_DIR"] = str(tmp_path_factory.mktemp("bench-state"))
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--results-dir", str(results)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=540,
    )
    files = glob.glob(os.path.join(str(results), "*.json"))
    document = None
    if len(files) == 1:
        with open(files[0], encoding="utf-8") as handle:
            document = json.load(handle)
    return completed, files, document


def _declared_ids():
    return [spec.id for specs in all_rows().values() for spec in specs]


def test_quick_run_exits_zero(quick_run):
    completed, _, _ = quick_run
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]


def test_quick_run_writes_one_json_result(quick_run):
    _, files, document = quick_run
    assert len(files) == 1 and document is not None
    assert document["mode"] == "quick"


def test_result_records_the_machine(quick_run):
    _, _, document = quick_run
    machine = document["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"] == sys.version.split()[0]
    assert "trainerkit" in machine["packages"]


def test_result_lists_every_declared_case_once(quick_run):
    _, _, document = quick_run
    reported = [case["id"] for case in document["cases"]]
    assert sorted(reported) == sorted(_declared_ids())


def test_every_case_is_measured_or_says_why_not(quick_run):
    _, _, document = quick_run
    for case in document["cases"]:
        assert case["verdict"] in VERDICTS, case
        if case["verdict"] == "cannot run":
            assert case["cannot_run"].strip(), case
        elif case["check"] is None:
            assert case["trainerkit"]["n"] >= 1, case


def test_table_shows_every_case(quick_run):
    completed, _, _ = quick_run
    for case_id in _declared_ids():
        assert case_id in completed.stdout
