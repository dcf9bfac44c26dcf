"""``trainerkit`` and capabilities (issue 17): the matrix in ``trainers``,
``describe``, ``train --capability`` and the parameters and served
capabilities in ``status``. Each test runs the real command in a child process."""

from __future__ import annotations

import re

from tests.cli_fixtures import json_out, run_cli, submitted_id, write

TUNED = "tests.cli.capability_modules:Tuned"
IRIS = "trainerkit.examples.iris:IrisClassifier"




def section(stdout, title):
    """The lines after the line starting with ``title``, up to a blank line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


# -- trainers: the capability matrix -------------------------------------------------------


MATRIX_CONFIG = """\
    model_management:
      trainers:
        quiet:
          type: LOCAL
          config: {capture_output: false}
        isolated:
          type: SUBPROCESS
          config: {detach: true}
"""


def test_trainers_prints_the_capability_matrix_after_the_table(tmp_path):
    config = write(tmp_path / "trainers.yaml", MATRIX_CONFIG)
    result = run_cli("--config", config, "trainers")
    assert result.returncode == 0, result.stderr
    matrix = section(result.stdout, "Capabilities")
    assert matrix[0].split() == ["CAPABILITY", "default", "quiet", "isolated"]
    rows = {line.split()[0]: re.split(r"\s{2,}", line)[1:] for line in matrix[1:]}
    assert list(rows) == ["cancel", "progress", "logs", "detach", "gpus", "multi_process",
                          "multi_node", "remote_storage", "checkpoints", "retries"]
    assert rows["cancel"] == ["best-effort", "best-effort", "native"]
    assert rows["logs"] == ["native, can disable", "-", "native, can disable"]
    assert rows["detach"] == ["-", "-", "native, can disable"]
    assert rows["gpus"] == ["-", "-", "-"]


def test_trainers_json_gives_each_trainers_capabilities_as_flag_lists(tmp_path):
    config = write(tmp_path / "trainers.yaml", MATRIX_CONFIG)
    document = json_out(run_cli("--config", config, "trainers", "--json"))
    by_name = {trainer["name"]: trainer["capabilities"] for trainer in document["trainers"]}
    assert list(by_name["default"]) == ["cancel", "progress", "logs", "detach", "gpus", "multi_process",
                                        "multi_node", "remote_storage", "checkpoints", "retries"]
    assert by_name["default"]["cancel"] == ["BEST_EFFORT"]
    assert by_name["default"]["progress"] == ["NATIVE", "CAN_DISABLE"]
    assert by_name["quiet"]["logs"] == []
    assert by_name["isolated"]["detach"] == ["NATIVE", "CAN_DISABLE"]


def test_trainers_marks_a_trainer_that_cannot_be_built_and_exits_1(tmp_path):
    config = write(tmp_path / "trainers.yaml", """\
        model_management:
          trainers:
            cluster:
              type: KUBERNETES
              config: {namespace: ml, image: "x:1", kubeconfig: /nonexistent/kubeconfig}
    """)
    result = run_cli("--config", config, "trainers")
    assert result.returncode == 1
    rows = {line.split()[0]: line.split()[1:] for line in section(result.stdout, "Capabilities")[1:]}
    assert rows["cancel"] == ["best-effort", "?"]  # the default trainer is still shown
    assert "trainer 'cluster': cannot tell its capabilities" in result.stderr
    document = json_out(run_cli("--config", config, "trainers", "--json"))
    assert [t["capabilities"] is None for t in document["trainers"]] == [False, True]


# -- train --capability --------------------------------------------------------------------


def test_an_unmet_capability_exits_6_listing_every_unmet_request_and_starts_nothing(tmp_path):
    result = run_cli(
        "train", IRIS, "--save-path", str(tmp_path / "m"),
        "--capability", "cancel=native", "--capability", "detach=best-effort", "--capability", "logs=optional",
    )
    assert result.returncode == 6
    assert "Training" not in result.stdout
    assert "trainer 'default' (LOCAL) cannot serve 2 requested capabilities; nothing was recorded or started" in result.stderr
    assert "  cancel: requested native, the trainer has it best-effort\n" in result.stderr
    assert "  detach: requested best-effort, the trainer does not have it\n" in result.stderr
    assert not (tmp_path / "m").exists()
    assert "No trainings." in run_cli("list").stdout


def test_an_unmet_capability_in_json_mode_lists_the_unmet_requests():
    result = run_cli("--json", "train", IRIS, "--capability", "cancel=NATIVE")
    assert result.returncode == 6
    error = json_out(result)["error"]
    assert error["kind"] == "unavailable"
    assert error["unsupported"] == [{"name": "cancel", "requested": "native", "supported": ["BEST_EFFORT"]}]


def test_met_capabilities_are_served_and_shown_by_status():
    result = run_cli(
        "train", IRIS, "--arg", "epochs=2",
        "--capability", "cancel=Best-Effort", "--capability", "logs=disable", "--capability", "gpus=optional",
    )
    assert result.returncode == 0, result.stderr
    training_id = submitted_id(result.stdout)
    status = run_cli("status", training_id)
    assert re.search(
        r"^capabilities: cancel=best-effort, logs=not served, gpus=not served$", status.stdout, re.MULTILINE
    ), status.stdout
    document = json_out(run_cli("--json", "status", training_id))
    assert document["capabilities"] == {"cancel": "BEST_EFFORT", "logs": None, "gpus": None}
    assert run_cli("logs", training_id).stdout == ""  # logs were turned off for this training


def test_a_malformed_capability_option_is_a_usage_error():
    unknown = run_cli("train", IRIS, "--capability", "gpu=native")
    assert unknown.returncode == 2
    assert "--capability 'gpu=native': unknown capability 'gpu'; the known ones are cancel, progress" in unknown.stderr
    for option, message in [
        ("cancel", "expected NAME=LEVEL"),
        ("cancel=always", "'always' is not a capability request level"),
    ]:
        result = run_cli("train", IRIS, "--capability", option)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    twice = run_cli("train", IRIS, "--capability", "logs=native", "--capability", "logs=disable")
    assert twice.returncode == 2 and "--capability logs= is given twice" in twice.stderr


def test_capabilities_is_an_option_of_train_not_an_argument():
    result = run_cli("train", IRIS, "--arg", "capabilities={cancel: native}")
    assert result.returncode == 2
    assert "use --capability NAME=LEVEL" in result.stderr


# -- describe ------------------------------------------------------------------------------


def test_describe_lists_the_parameters_of_train():
    result = run_cli("describe", TUNED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Module: {TUNED}"
    rows = [re.split(r"\s{2,}", line) for line in section(result.stdout, "Signature:")]
    assert rows == [
        ["PARAMETER", "KIND", "ANNOTATION", "DEFAULT"],
        ["data_path", "positional or keyword", "str", "(required)"],
        ["epochs", "positional or keyword", "int", "3"],
        ["lr", "keyword-only", "float", "0.1"],
        ["warmup", "keyword-only", "Optional[int]", "null"],
        ["extra", "keyword-only", "object", "<Opaque> (repr)"],
        ["options", "variadic keyword", "object", "-"],
        ["Hook: Tuned.training_parameters adjusts the parameters before train receives them."],
    ]
    assert "Parameters train would receive" not in result.stdout  # no arguments: nothing resolved


def test_describe_with_arguments_shows_what_train_would_receive_after_the_hook(tmp_path):
    args_file = write(tmp_path / "args.yaml", "data_path: d.csv\nepochs: 4\n")
    result = run_cli("describe", TUNED, "--args-file", args_file, "--arg", "epochs=9", "--arg", "layers=[64, 32]")
    assert result.returncode == 0, result.stderr
    assert section(result.stdout, "Parameters train would receive (trainer 'default'):") == [
        '  data_path="d.csv"',
        "  epochs=9",
        "  lr=0.2",  # doubled by the hook
        "  warmup=3",  # filled in by the hook
        "  extra=<Opaque> (repr)",
        '  options={"layers": [64, 32]}',
    ]
    assert "No trainings." in run_cli("list").stdout  # nothing recorded


def test_describe_json_gives_the_declared_and_the_resolved_parameters():
    document = json_out(run_cli("--json", "describe", TUNED, "--arg", "data_path=d.csv"))
    assert document["module"] == TUNED
    assert document["hook"] == "Tuned.training_parameters"
    assert document["parameters"][0] == {
        "name": "data_path", "kind": "positional_or_keyword", "annotation": "str",
        "required": True, "default": None, "default_by_repr": False,
    }
    assert document["parameters"][4]["default"] == "<Opaque>" and document["parameters"][4]["default_by_repr"]
    assert document["resolved"] == {
        "trainer": "default",
        "parameters": {"data_path": "d.csv", "epochs": 3, "lr": 0.2, "warmup": 1, "extra": "<Opaque>", "options": {}},
        "parameters_by_repr": ["extra"],
    }
    assert json_out(run_cli("--json", "describe", IRIS))["resolved"] is None


def test_describe_refuses_bad_input_with_exit_2():
    missing = run_cli("describe", TUNED, "--arg", "epochs=2")
    assert missing.returncode == 2
    assert "Tuned.train does not accept these arguments: missing a required argument: 'data_path'" in missing.stderr
    bad_hook = run_cli("describe", "tests.cli.capability_modules:BadHook", "--trainer", "default")
    assert bad_hook.returncode == 2
    assert "BadHook.training_parameters returned parameters that train does not accept" in bad_hook.stderr
    no_module = run_cli("describe", "tests.cli.capability_modules:Nope")
    assert no_module.returncode == 2 and "cannot import" in no_module.stderr
    no_trainer = run_cli("describe", IRIS, "--trainer", "nope")
    assert no_trainer.returncode == 2 and "no trainer named 'nope'" in no_trainer.stderr


# -- status: the recorded parameters ---------------------------------------------------------


def test_status_shows_the_recorded_parameters_one_per_line():
    result = run_cli("train", TUNED, "--arg", "data_path=x.csv", "--arg", "epochs=6")
    assert result.returncode == 0, result.stderr
    training_id = submitted_id(result.stdout)
    status = run_cli("status", training_id)
    lines = status.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("parameters:"))
    assert [line.split(":", 1)[-1].strip() if i == 0 else line.strip()
            for i, line in enumerate(lines[start:start + 6])] == [
        'data_path="x.csv"', "epochs=6", "lr=0.2", "warmup=2", "extra=<Opaque> (repr)", "options={}",
    ]
    assert "capabilities:" not in status.stdout  # none requested
    document = json_out(run_cli("--json", "status", training_id))
    assert document["parameters"]["lr"] == 0.2
    assert document["parameters_by_repr"] == ["extra"]
    assert document["capabilities"] == {}
