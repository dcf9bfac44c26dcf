"""The README is executable: its Python example runs, and CI runs its test command."""

from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as handle:
        return handle.read()


def quick_start_commands():
    section = read("README.md").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)


def test_ci_runs_the_readme_test_command():
    test_command = quick_start_commands()[1]
    ci_lines = [line for line in read(".ci/run").splitlines() if line and not line.startswith("#")]
    assert test_command in ci_lines


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)\n```", read("README.md"), re.S)
    assert blocks
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["model"].test_accuracy > 0.9


def test_the_main_job_command_trains_and_loads_back_the_example(tmp_path):
    import shlex
    import subprocess
    import sys

    command = quick_start_commands()[0]
    job = command.split(" && ")[-1]  # the part after the install steps
    argv = shlex.split(job)
    assert argv[0] == "trainerkit"
    done = subprocess.run([sys.executable, "-m", "trainerkit", *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "submitted to trainer 'default'" in done.stdout
    assert "Loaded back:" in done.stdout and "test_accuracy=" in done.stdout
    assert (tmp_path / "trainerkit-models").is_dir()
