"""docs/cli.md shows a real ``trainerkit`` session, and it stays real.

The session blocks are produced by running :data:`SESSIONS` (regenerate them with
``.venv/bin/python -m tests.cli.test_cli_docs`` from the repository root and review
the diff). The test runs the same commands again and compares the output, with
what legitimately changes from run to run (training ids, times, durations, the
directory, rate-limited progress lines, traceback bodies) normalised away.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.cli_fixtures import cli_env

from tests.conftest import REPO_ROOT  # noqa: E402
DOC = os.path.join(REPO_ROOT, "docs", "cli.md")
#: Where the documented session ran (it appears in the save paths it prints).
DEMO_DIR = "/tmp/trainerkit-demo"

BAD_CONFIG = """\
model_management:
  trainers:
    default:
      type: LOCAL
      config: {max_worker: 2, retention_duration: 3x}
    gpu:
      type: LOKAL
"""
SUBPROCESS_CONFIG = """\
model_management:
  trainers:
    isolated:
      type: SUBPROCESS
      config: {max_workers: 2}
"""

IRIS = "trainerkit.examples.iris:IrisClassifier"
#: The documented sessions: (files created first, commands). In a command,
#: ``{1}`` is the first training id printed in that session, and so on.
SESSIONS: dict[str, tuple[dict[str, str], list[str]]] = {
    "cli-session": (
        {"bad.yaml": BAD_CONFIG},
        [
            "trainerkit trainers",
            f"trainerkit describe {IRIS} --arg epochs=300",
            f"trainerkit train {IRIS} --arg epochs=300 --arg learning_rate=0.05 "
            "--save-path models --save-with-id --model-name iris --tag demo",
            "trainerkit status {1}",
            "trainerkit result {1}",
            f"trainerkit train {IRIS} --arg epoch=300",
            "echo $?",
            f"trainerkit train {IRIS} --capability cancel=native --capability logs=disable",
            "echo $?",
            f"trainerkit train {IRIS} --arg data_path=missing.csv --tag demo",
            "echo $?",
            "trainerkit list --tag demo",
            "trainerkit --json status {1}",
            "trainerkit cancel {1}",
            "echo $?",
            "trainerkit delete {2}",
            "cat bad.yaml",
            "trainerkit config check bad.yaml",
            "echo $?",
        ],
    ),
    "cli-session-detach": (
        {"trainers.yaml": SUBPROCESS_CONFIG},
        [
            "cat trainers.yaml",
            "export TRAINERKIT_CONFIG=trainers.yaml",
            "trainerkit trainers",
            f"trainerkit train {IRIS} --trainer isolated --arg epochs=2000 "
            "--save-path models --save-with-id --detach",
            "trainerkit status {1} --watch",
            "trainerkit result {1}",
            f"trainerkit train {IRIS} --trainer isolated --arg epochs=1000000 "
            "--save-path models --save-with-id --detach",
            "trainerkit cancel {2}",
            "trainerkit list",
        ],
    ),
}

_ID = re.compile(r"\b(?:default|isolated)--[a-z0-9]{12}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00)?")
_DURATION = re.compile(r"\b(\d+(\.\d)?s|\d+m\d\ds|\d+h\d\dm)\b")
# Full-precision floats (JSON metrics) may differ in the last digits between C libraries.
_LONG_FLOAT = re.compile(r"\b(\d+\.\d{6})\d+")
# How far a canceled training got depends on timing; a finished one (step == total) does not.
_PARTIAL = re.compile(r"\b(\d+)/(\d+) \(\d+%\)")


def run_session(label: str, directory: str) -> str:
    """Run session ``label`` in ``directory`` (fresh records); the console transcript."""
    files, commands = SESSIONS[label]
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    pythonpath = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    env = cli_env({"TRAINERKIT_STATE_DIR": os.path.join(directory, ".state"), "PYTHONPATH": pythonpath})
    shim = f"trainerkit() {{ {sys.executable} -m trainerkit \"$@\"; }}; "
    ids: list[str] = []
    transcript: list[str] = []
    last_status = 0
    for command in commands:
        concrete = re.sub(r"\{(\d+)\}", lambda match: ids[int(match.group(1)) - 1], command)
        transcript.append(f"$ {concrete}")
        if command == "echo $?":
            transcript.append(str(last_status))
            continue
        if command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            env[name] = value
            continue
        result = subprocess.run(
            ["bash", "-c", shim + concrete],
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # as a terminal shows them: interleaved
            text=True,
            timeout=120,
        )
        last_status = result.returncode
        output = result.stdout.rstrip("\n")
        for found in _ID.findall(output):
            if found not in ids:
                ids.append(found)
        if output:
            transcript.append(output)
    return "\n".join(transcript) + "\n"


def normalise(transcript: str, directory: str) -> list[str]:
    """The transcript's lines with what varies between runs replaced."""
    ids: dict[str, str] = {}

    def id_placeholder(match: "re.Match[str]") -> str:
        return ids.setdefault(match.group(0), f"<id{len(ids) + 1}>")

    lines = []
    in_traceback = False
    for line in transcript.replace(directory, "<dir>").splitlines():
        if in_traceback and line.startswith("  "):
            continue  # traceback bodies: file paths and line numbers change with the code
        in_traceback = line.startswith("Traceback of the training:")
        line = _ID.sub(id_placeholder, line)
        if re.match(r"<id\d+>: ", line):
            continue  # plain progress lines: how many depends on timing
        if line.startswith("waiting for the trainings of SUBPROCESS trainer"):
            continue  # said at exit only when the worker has not yet taken the training over
        line = _DURATION.sub("<duration>", _TIME.sub("<time>", line))
        line = _LONG_FLOAT.sub(r"\1…", line)
        line = _PARTIAL.sub(lambda m: m.group(0) if m.group(1) == m.group(2) else f"<step>/{m.group(2)} (<n>%)", line)
        lines.append(" ".join(line.split()))
    return lines


def documented_session(label: str) -> str:
    with open(DOC, encoding="utf-8") as handle:
        doc = handle.read()
    match = re.search(
        rf"<!-- BEGIN generated: {label} -->\n```console\n(.*?)```\n<!-- END generated: {label} -->", doc, re.S
    )
    assert match, f"docs/cli.md lacks the generated block {label!r}"
    return match.group(1)


def _check_session(label: str, directory: str) -> None:
    fresh = normalise(run_session(label, directory), directory)
    documented = normalise(documented_session(label), DEMO_DIR)
    diff = "\n".join(difflib.unified_diff(documented, fresh, "docs/cli.md", "trainerkit now", lineterm=""))
    assert fresh == documented, (
        f"docs/cli.md's {label!r} session differs from what trainerkit prints now; regenerate it "
        f"with `.venv/bin/python -m tests.cli.test_cli_docs` and review the diff:\n{diff}"
    )


def test_documented_session_is_what_the_command_prints(tmp_path):
    _check_session("cli-session", str(tmp_path / "demo"))


@pytest.mark.skipif(
    importlib.util.find_spec("trainerkit.trainers.subprocess") is None,
    reason="the SUBPROCESS trainer (trainerkit/trainers/subprocess.py) is not available",
)
def test_documented_detach_session_is_what_the_command_prints(tmp_path):
    _check_session("cli-session-detach", str(tmp_path / "demo"))


def _rewrite() -> None:
    with open(DOC, encoding="utf-8") as handle:
        doc = handle.read()
    for label in SESSIONS:
        shutil.rmtree(DEMO_DIR, ignore_errors=True)
        try:
            transcript = run_session(label, DEMO_DIR)
        finally:
            shutil.rmtree(DEMO_DIR, ignore_errors=True)
        block = f"<!-- BEGIN generated: {label} -->\n```console\n{transcript}```\n<!-- END generated: {label} -->"
        doc, count = re.subn(
            rf"<!-- BEGIN generated: {label} -->.*?<!-- END generated: {label} -->", lambda _: block, doc, flags=re.S
        )
        assert count == 1, f"docs/cli.md needs exactly one {label!r} block"
    with open(DOC, "w", encoding="utf-8") as handle:
        handle.write(doc)


if __name__ == "__main__":
    _rewrite()
    print(f"rewrote the session blocks of {DOC}")
