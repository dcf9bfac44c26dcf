"""The ``trainerkit`` command, run for real in child processes (LOCAL trainers).

Every test starts ``python -m trainerkit`` the way a user's shell would, with
its own state directory (tests/conftest.py), and reads its stdout, stderr and
exit status. Terminal behaviour is in test_cli_terminal.py, the SUBPROCESS
cross-process flow in test_cli_subprocess.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.cli_fixtures import TRAINERKIT, cli_env, default_sigint, json_out, read_submitted_id, run_cli, submitted_id, write

IRIS = "trainerkit.examples.iris:IrisClassifier"




# -- help ---------------------------------------------------------------------------------


def test_help_names_every_command_and_the_exit_statuses():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "describe", "status", "list", "logs", "cancel", "delete", "result", "trainers", "config"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
    for code in ("0", "1", "2", "3", "4", "5", "6", "130"):
        assert re.search(rf"^\s+{code}\s", result.stdout, re.MULTILINE), code


def test_no_command_prints_help_and_exits_2():
    result = run_cli()
    assert result.returncode == 2
    assert "usage: trainerkit" in result.stdout


# -- train ----------------------------------------------------------------------------------


def test_train_prints_id_and_save_path_and_ends_completed(tmp_path):
    result = run_cli(
        "train", IRIS, "--arg", "epochs=20", "--save-path", str(tmp_path), "--save-with-id",
        "--model-name", "iris", "--tag", "nightly",
    )
    assert result.returncode == 0, result.stderr
    training_id = submitted_id(result.stdout)
    assert re.fullmatch(r"default--[a-z0-9]+", training_id)
    save_path = os.path.join(str(tmp_path), training_id, "iris")
    assert f"Save path: {save_path}" in result.stdout
    assert f"Training {training_id} COMPLETED" in result.stdout
    assert "20/20 (100%)" in result.stdout
    assert os.path.isfile(os.path.join(save_path, "iris-model.json"))


def test_train_without_save_path_warns_that_the_model_is_lost():
    result = run_cli("train", IRIS, "--arg", "epochs=2")
    assert result.returncode == 0
    assert "Save path: none" in result.stdout
    assert "warning: no --save-path" in result.stderr


def test_train_json_prints_one_document_with_the_final_info(tmp_path):
    result = run_cli("train", IRIS, "--arg", "epochs=5", "--save-path", str(tmp_path / "m"), "--tag", "a", "--json")
    assert result.returncode == 0, result.stderr
    info = json_out(result)
    assert info["status"] == "COMPLETED"
    assert info["tags"] == ["a"]
    assert info["save_path"] == str(tmp_path / "m")
    assert info["progress"]["step"] == info["progress"]["total"] == 5
    assert set(info["progress"]["metrics"]) == {"loss", "accuracy"}
    assert "RUNNING" not in result.stderr  # no progress lines when stdout is for programs


def test_json_stdout_stays_one_document_when_the_training_prints():
    result = run_cli("--json", "train", "tests.cli_modules:Chatty", "--arg", "lines=3")
    assert result.returncode == 0, result.stderr
    assert json_out(result)["status"] == "COMPLETED"
    assert "chatty line 2" in result.stderr


def test_progress_is_plain_lines_on_stderr_when_not_a_terminal():
    result = run_cli("train", "tests.training_modules:SlowEpochs", "--arg", "epochs=3")
    assert result.returncode == 0
    training_id = submitted_id(result.stdout)
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{training_id}: ")]
    # The training is instant: the follower may first see it RUNNING or already
    # COMPLETED, but the newest report is always printed, last.
    assert lines and "3/3 (100%)" in lines[-1]
    assert "\x1b[" not in result.stderr  # no cursor movement or colours
    assert "━" not in result.stderr
    assert "3/3" not in result.stdout.split("Last progress")[0]  # progress stays off stdout


def test_plain_progress_lines_are_rate_limited():
    result = run_cli("train", "tests.training_modules:SlowEpochs", "--arg", "epochs=300")
    assert result.returncode == 0
    progress_lines = [line for line in result.stderr.splitlines() if "/300" in line]
    assert progress_lines[-1].split()[2] == "300/300"
    assert len(progress_lines) < 30  # 300 reports, at most one line a second


def test_arg_values_arrive_typed_as_yaml_scalars(tmp_path):
    result = run_cli(
        "train", "tests.cli_modules:EchoArguments", "--save-path", str(tmp_path / "m"),
        "--arg", "epochs=3", "--arg", "rate=1e-3", "--arg", "flag=true", "--arg", "country=no",
        "--arg", "nothing=null", "--arg", "sizes=[64, 32]", "--arg", "quoted='7'",
        "--arg", "when=2024-01-31", "--arg", "text=hello: world",
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "m" / "received.json") as handle:
        received = json.load(handle)
    assert received == {
        "epochs": ["int", 3],
        "rate": ["float", 0.001],
        "flag": ["bool", True],
        "country": ["str", "no"],
        "nothing": ["NoneType", None],
        "sizes": ["list", [64, 32]],
        "quoted": ["str", "7"],
        "when": ["str", "2024-01-31"],
        "text": ["str", "hello: world"],
    }


def test_args_file_gives_arguments_and_arg_overrides_it(tmp_path):
    args_file = write(tmp_path / "args.yaml", """\
        epochs: 10
        rate: 1e-2
        layers: [3, 4]
    """)
    result = run_cli(
        "train", "tests.cli_modules:EchoArguments", "--save-path", str(tmp_path / "m"),
        "--args-file", args_file, "--arg", "epochs=20",
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "m" / "received.json") as handle:
        received = json.load(handle)
    assert received == {"epochs": ["int", 20], "rate": ["float", 0.01], "layers": ["list", [3, 4]]}


def test_args_file_that_is_not_a_mapping_is_refused(tmp_path):
    args_file = write(tmp_path / "args.json", "[1, 2]")
    result = run_cli("train", "tests.cli_modules:EchoArguments", "--args-file", args_file)
    assert result.returncode == 2
    assert "expected a mapping of argument names to values, got a list" in result.stderr


def test_unknown_argument_is_refused_before_submission_with_the_signature():
    result = run_cli("train", IRIS, "--arg", "epoch=3")
    assert result.returncode == 2
    assert "unknown argument 'epoch'; did you mean 'epochs'?" in result.stderr
    assert "signature: IrisClassifier.train(data_path: Optional[str] = None, epochs: int = 200" in result.stderr
    assert "Traceback" not in result.stderr
    assert "submitted" not in result.stdout
    assert json_out(run_cli("list", "--json")) == []


def test_missing_argument_is_refused_before_submission():
    result = run_cli("train", "tests.training_modules:Adder", "--arg", "b=2")
    assert result.returncode == 2
    assert "missing a required argument: 'a'" in result.stderr
    assert "signature: Adder.train(a, b=1, *, tag=None)" in result.stderr
    assert json_out(run_cli("list", "--json")) == []


def test_an_option_of_train_itself_is_refused_as_an_argument(tmp_path):
    result = run_cli("train", IRIS, "--arg", f"save_path={tmp_path}")
    assert result.returncode == 2
    assert "save_path is an option of trainerkit train itself" in result.stderr
    assert "--save-path" in result.stderr


@pytest.mark.parametrize(
    "option, message",
    [
        ("epochs", "expected KEY=VALUE"),
        ("2x=1", "'2x' is not an argument name"),
        ("sizes=[1, 2", "not valid YAML"),
    ],
)
def test_malformed_arg_is_a_usage_error(option, message):
    result = run_cli("train", IRIS, "--arg", option)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_module_that_cannot_be_imported_is_a_usage_error():
    result = run_cli("train", "no_such_package.models:Net")
    assert result.returncode == 2
    assert "cannot import 'no_such_package.models:Net'" in result.stderr
    assert "Traceback" not in result.stderr


def test_class_that_is_not_a_module_is_a_usage_error():
    result = run_cli("train", "json:JSONDecoder")
    assert result.returncode == 2
    assert "JSONDecoder is not a trainable module" in result.stderr


def test_existing_save_path_is_refused_before_submission(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "old-model").write_text("keep me")
    result = run_cli("train", IRIS, "--save-path", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "trainerkit never overwrites a saved model" in result.stderr
    assert (tmp_path / "m" / "old-model").read_text() == "keep me"


def test_errored_training_exits_4_and_shows_the_error():
    result = run_cli("train", "tests.training_modules:Failing", "--arg", "message=corrupt rows")
    assert result.returncode == 4
    training_id = submitted_id(result.stdout)
    assert f"Training {training_id} ERRORED" in result.stdout
    assert "tests.training_modules.Boom: corrupt rows" in result.stdout
    assert "Traceback of the training:" in result.stdout


def test_detach_is_refused_for_a_local_trainer():
    result = run_cli("train", IRIS, "--detach")
    assert result.returncode == 6
    assert "cannot --detach" in result.stderr
    assert "SUBPROCESS" in result.stderr
    assert json_out(run_cli("list", "--json")) == []


def test_unknown_trainer_is_a_usage_error():
    result = run_cli("train", IRIS, "--trainer", "defualt")
    assert result.returncode == 2
    assert "no trainer named 'defualt'" in result.stderr
    assert "did you mean 'default'" in result.stderr


def test_ctrl_c_cancels_a_followed_training_and_exits_130(tmp_path):
    process = subprocess.Popen(
        [*TRAINERKIT, "train", "tests.cli_modules:Ticker", "--arg", "steps=600", "--arg", "delay=0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        preexec_fn=default_sigint,
    )
    try:
        training_id = read_submitted_id(process.stdout)
        for line in process.stderr:  # wait until it runs and reports
            if "/600" in line:
                break
        # From another process: a LOCAL training can be neither canceled nor deleted there.
        foreign_cancel = run_cli("cancel", training_id)
        assert foreign_cancel.returncode == 6
        assert "can only be canceled by the process that runs it" in foreign_cancel.stderr
        foreign_delete = run_cli("delete", training_id)
        assert foreign_delete.returncode == 6
        assert "cancel it first" in foreign_delete.stderr
        process.send_signal(2)  # SIGINT, as Ctrl-C sends it
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert f"Ctrl-C: canceling training {training_id}" in stderr
    assert f"Training {training_id} CANCELED" in stdout
    status = json_out(run_cli("status", training_id, "--json"))
    assert status["status"] == "CANCELED"


# -- status, list ----------------------------------------------------------------------


def test_status_from_a_new_process_shows_the_finished_training(tmp_path):
    trained = run_cli("train", IRIS, "--arg", "epochs=4", "--save-path", str(tmp_path / "m"), "--tag", "x")
    training_id = submitted_id(trained.stdout)
    result = run_cli("status", training_id)
    assert result.returncode == 0
    assert re.search(rf"^id:\s+{training_id}$", result.stdout, re.MULTILINE)
    assert re.search(r"^status:\s+COMPLETED$", result.stdout, re.MULTILINE)
    assert re.search(r"^trainer:\s+default \(LOCAL\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^progress:\s+4/4 \(100%\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^metrics:\s+loss=\S+ accuracy=\S+$", result.stdout, re.MULTILINE)
    document = json_out(run_cli("status", training_id, "--json"))
    assert document["id"] == training_id and document["tags"] == ["x"]


def test_status_into_a_closed_pipe_exits_quietly():
    # `trainerkit status ID | head -3`: head leaves before the rest is written.
    training_id = submitted_id(run_cli("train", "tests.training_modules:Failing").stdout)
    process = subprocess.Popen([*TRAINERKIT, "status", training_id], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=cli_env())
    process.stdout.close()  # the reader is gone before the command writes anything
    stderr = process.stderr.read().decode()
    assert process.wait(90) == 1
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr


def test_status_of_an_errored_training_shows_its_traceback():
    training_id = submitted_id(run_cli("train", "tests.training_modules:Failing").stdout)
    result = run_cli("status", training_id)
    assert result.returncode == 0  # showing a status succeeded, whatever the status
    assert re.search(r"^error:\s+tests.training_modules.Boom: bad data$", result.stdout, re.MULTILINE)
    assert 'raise Boom(message)' in result.stdout


def test_status_watch_of_a_finished_training_exits_with_its_outcome():
    training_id = submitted_id(run_cli("train", "tests.training_modules:Failing").stdout)
    result = run_cli("status", training_id, "--watch")
    assert result.returncode == 4
    assert re.search(r"^status:\s+ERRORED$", result.stdout, re.MULTILINE)


def test_status_watch_follows_a_training_running_in_another_process():
    process = subprocess.Popen(
        [*TRAINERKIT, "train", "tests.cli_modules:Ticker", "--arg", "steps=30", "--arg", "delay=0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(),
    )
    try:
        training_id = read_submitted_id(process.stdout)
        watched = run_cli("status", training_id, "--watch")
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert watched.returncode == 0, watched.stderr
    assert re.search(r"^status:\s+COMPLETED$", watched.stdout, re.MULTILINE)
    assert any(line.startswith(f"{training_id}: ") and "30/30" in line for line in watched.stderr.splitlines())


def test_status_of_an_unknown_training_exits_3():
    result = run_cli("status", "default--aaaaaaaaaaaa")
    assert result.returncode == 3
    assert "no training 'default--aaaaaaaaaaaa'" in result.stderr


def test_status_of_a_training_of_an_unconfigured_trainer_exits_3():
    result = run_cli("status", "elsewhere--aaaaaaaaaaaa")
    assert result.returncode == 3
    assert "made by trainer 'elsewhere', which is not in this configuration" in result.stderr


def test_status_of_a_malformed_id_is_a_usage_error():
    result = run_cli("status", "Not_An_Id")
    assert result.returncode == 2
    assert "is not a trainerkit training id" in result.stderr


def test_errors_in_json_mode_are_a_json_document():
    result = run_cli("--json", "status", "default--aaaaaaaaaaaa")
    assert result.returncode == 3
    error = json_out(result)["error"]
    assert error["exit_code"] == 3 and error["kind"] == "not_found"
    assert "no training 'default--aaaaaaaaaaaa'" in error["message"]


def test_list_filters_by_status_tag_and_limit(tmp_path):
    failed = submitted_id(run_cli("train", "tests.training_modules:Failing").stdout)
    first = submitted_id(run_cli("train", "tests.training_modules:Adder", "--arg", "a=1", "--tag", "keep").stdout)
    second = submitted_id(run_cli("train", "tests.training_modules:Adder", "--arg", "a=2", "--tag", "keep").stdout)

    def ids(*args):
        result = run_cli("list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [info["id"] for info in json_out(result)]

    assert ids() == [second, first, failed]
    assert ids("--status", "errored") == [failed]
    assert ids("--status", "COMPLETED", "--status", "ERRORED") == [second, first, failed]
    assert ids("--tag", "keep") == [second, first]
    assert ids("--limit", "1") == [second]
    assert ids("--trainer", "default", "--since", "1h") == [second, first, failed]


def test_list_for_people_is_a_table():
    training_id = submitted_id(run_cli("train", "tests.training_modules:SlowEpochs", "--tag", "t1").stdout)
    result = run_cli("list")
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PROGRESS", "SUBMITTED", "RAN", "FOR", "MODULE", "TAGS"]
    assert row.split()[:4] == [training_id, "COMPLETED", "3/3", "(100%)"]
    assert row.split()[-2:] == ["SlowEpochs", "t1"]


def test_list_shows_the_other_trainers_when_one_cannot_be_read(tmp_path):
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("")
    config = write(tmp_path / "trainers.yaml", f"""\
        model_management:
          trainers:
            broken:
              type: LOCAL
              config: {{state_dir: {not_a_dir}}}
    """)
    training_id = submitted_id(run_cli("--config", config, "train", "tests.training_modules:Adder", "--arg", "a=1").stdout)
    result = run_cli("--config", config, "list")
    assert result.returncode == 1
    assert "trainer 'broken': cannot list its trainings" in result.stderr
    assert training_id in result.stdout
    only_broken = run_cli("--config", config, "list", "--trainer", "broken")
    assert only_broken.returncode == 1
    assert "not a directory" in only_broken.stderr
    assert "Traceback" not in only_broken.stderr


def test_list_with_nothing_says_so():
    result = run_cli("list")
    assert result.returncode == 0
    assert result.stdout.strip() == "No trainings."


def test_list_names_the_trainers_another_config_left_in_the_records(tmp_path):
    other = write(tmp_path / "other.yaml", """\
        model_management:
          trainers:
            nightly: {type: LOCAL}
    """)
    for _ in range(2):
        submitted_id(run_cli("--config", other, "train", "--trainer", "nightly", "tests.training_modules:Adder", "--arg", "a=1").stdout)
    result = run_cli("list")  # the built-in configuration names only 'default'
    assert result.returncode == 0
    assert result.stdout.strip() == "No trainings."
    assert "hold 2 trainings of trainers not named in the built-in default configuration: 'nightly' (2)" in result.stderr
    assert "--config" in result.stderr
    named = run_cli("--config", other, "list")
    assert len(named.stdout.splitlines()) == 3  # header and both trainings
    assert named.stderr == ""


def test_list_with_a_bad_status_is_a_usage_error():
    result = run_cli("list", "--status", "DONE")
    assert result.returncode == 2
    assert "'DONE' is not a training status" in result.stderr


def test_options_work_before_and_after_the_command():
    assert json_out(run_cli("--json", "list")) == []
    assert json_out(run_cli("list", "--json")) == []


# -- logs, cancel, delete, result -------------------------------------------------------


def test_logs_show_what_a_local_training_printed():
    training_id = submitted_id(run_cli("train", "tests.cli_modules:Chatty", "--arg", "lines=3").stdout)
    result = run_cli("logs", training_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["chatty line 0", "chatty line 1", "chatty line 2"]
    lines = [json.loads(line) for line in run_cli("logs", training_id, "--json").stdout.splitlines()]
    assert lines == [{"line": "chatty line 0"}, {"line": "chatty line 1"}, {"line": "chatty line 2"}]


def test_logs_follow_a_training_running_in_another_process_until_it_ends():
    process = subprocess.Popen(
        [*TRAINERKIT, "train", "tests.cli_modules:Ticker", "--arg", "steps=20", "--arg", "delay=0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(),
    )
    try:
        training_id = read_submitted_id(process.stdout)
        followed = run_cli("logs", training_id, "--follow")
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == [f"tick {step}" for step in range(1, 21)]


def test_logs_of_a_trainer_type_without_logs_are_unavailable(tmp_path):
    config = write(tmp_path / "trainers.yaml", """\
        model_management:
          trainers:
            quiet:
              import_class: tests.cli_modules.NoLogsLocalTrainer
    """)
    trained = run_cli("--config", config, "train", "tests.training_modules:Adder", "--arg", "a=1", "--trainer", "quiet")
    result = run_cli("--config", config, "logs", submitted_id(trained.stdout))
    assert result.returncode == 6
    assert "keeps no logs of trainings" in result.stderr
    assert "Traceback" not in result.stderr


def test_cancel_of_a_finished_training_exits_6():
    training_id = submitted_id(run_cli("train", "tests.training_modules:Adder", "--arg", "a=1").stdout)
    result = run_cli("cancel", training_id)
    assert result.returncode == 6
    assert f"training {training_id} already ended COMPLETED; there was nothing to cancel" in result.stderr


def test_delete_with_model_removes_the_record_and_the_model(tmp_path):
    trained = run_cli("train", IRIS, "--arg", "epochs=2", "--save-path", str(tmp_path), "--save-with-id")
    training_id = submitted_id(trained.stdout)
    model_dir = tmp_path / training_id
    assert model_dir.is_dir()
    result = run_cli("delete", training_id, "--model")
    assert result.returncode == 0
    assert f"Deleted training {training_id} and its model at {model_dir}." in result.stdout
    assert not model_dir.exists()
    assert run_cli("status", training_id).returncode == 3


def test_delete_keeps_the_model_by_default(tmp_path):
    trained = run_cli("train", IRIS, "--arg", "epochs=2", "--save-path", str(tmp_path / "m"))
    training_id = submitted_id(trained.stdout)
    result = run_cli("delete", training_id, "--json")
    assert json_out(result) == {
        "id": training_id, "deleted": True, "model_deleted": False, "save_path": str(tmp_path / "m")
    }
    assert (tmp_path / "m" / "iris-model.json").is_file()


def test_result_loads_the_model_and_summarises_it(tmp_path):
    trained = run_cli("train", IRIS, "--arg", "epochs=30", "--save-path", str(tmp_path / "m"))
    training_id = submitted_id(trained.stdout)
    result = run_cli("result", training_id)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^class:\s+trainerkit.examples.iris:IrisClassifier$", result.stdout, re.MULTILINE)
    assert re.search(r"^on disk:\s+2 files, ", result.stdout, re.MULTILINE)
    assert re.search(r"^model:\s+<IrisClassifier classes=\['setosa', 'versicolor', 'virginica'\]", result.stdout, re.MULTILINE)
    document = json_out(run_cli("result", training_id, "--json"))
    assert document["class"] == "trainerkit.examples.iris:IrisClassifier"
    assert document["save_path"] == str(tmp_path / "m")


def test_result_of_an_errored_training_exits_4():
    training_id = submitted_id(run_cli("train", "tests.training_modules:Failing").stdout)
    result = run_cli("result", training_id)
    assert result.returncode == 4
    assert "ended ERRORED, so it has no model: tests.training_modules.Boom: bad data" in result.stderr


def test_result_of_a_model_that_was_not_saved_is_unavailable():
    training_id = submitted_id(run_cli("train", "tests.training_modules:Adder", "--arg", "a=1").stdout)
    result = run_cli("result", training_id)
    assert result.returncode == 6
    assert "completed without a save_path" in result.stderr


# -- trainers, config -------------------------------------------------------------------


def test_trainers_shows_each_type_and_where_it_comes_from(tmp_path):
    config = write(tmp_path / "trainers.yaml", """\
        model_management:
          trainers:
            quick:
              type: LOCAL
            custom:
              import_class: tests.cli_modules.CliTestLocalTrainer
    """)
    result = run_cli("--config", config, "trainers")
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("\n\n")[0]  # the capability matrix follows (test_cli_capabilities.py)
    rows = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert set(rows) == {"default", "quick", "custom"}
    assert rows["quick"].split()[1:3] == ["LOCAL", "built-in"]
    assert rows["custom"].split()[1:] == ["CLI_TEST_LOCAL", "import_class", "(tests.cli_modules.CliTestLocalTrainer)"]
    document = json_out(run_cli("--config", config, "trainers", "--json"))
    custom = next(t for t in document["trainers"] if t["name"] == "custom")
    assert {key: custom[key] for key in ("name", "type", "source")} == {
        "name": "custom", "type": "CLI_TEST_LOCAL",
        "source": {"kind": "import_class", "detail": "tests.cli_modules.CliTestLocalTrainer"}}
    assert [t["name"] for t in document["trainers"]] == ["default", "quick", "custom"]


def test_config_comes_from_the_environment_variable_unless_given(tmp_path):
    env_config = write(tmp_path / "env.yaml", "model_management: {trainers: {from-env: {type: LOCAL}}}\n")
    flag_config = write(tmp_path / "flag.yaml", "model_management: {trainers: {from-flag: {type: LOCAL}}}\n")
    names = lambda result: [t["name"] for t in json_out(result)["trainers"]]  # noqa: E731
    assert names(run_cli("trainers", "--json", env={"TRAINERKIT_CONFIG": env_config})) == ["default", "from-env"]
    assert names(run_cli("trainers", "--json", "--config", flag_config, env={"TRAINERKIT_CONFIG": env_config})) == [
        "default", "from-flag"]
    assert names(run_cli("trainers", "--json")) == ["default"]


def test_a_broken_config_from_the_environment_says_where_it_came_from(tmp_path):
    result = run_cli("list", env={"TRAINERKIT_CONFIG": str(tmp_path / "missing.yaml")})
    assert result.returncode == 2
    assert "missing.yaml does not exist" in result.stderr
    assert "$TRAINERKIT_CONFIG" in result.stderr


def test_config_check_prints_every_problem_with_its_key_path(tmp_path):
    config = write(tmp_path / "bad.yaml", """\
        model_management:
          trainers:
            default:
              type: LOCAL
              config: {max_worker: 2, retention_duration: 3x}
            other:
              type: LOKAL
    """)
    result = run_cli("config", "check", config)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert any("model_management.trainers.default.config.max_worker: unknown key" in line and "did you mean 'max_workers'" in line for line in lines)
    assert any("model_management.trainers.default.config.retention_duration: '3x' is not a duration" in line for line in lines)
    assert any("model_management.trainers.other.type: unknown trainer type 'LOKAL'" in line for line in lines)
    assert lines[-1] == f"3 problems in {config}."
    document = json_out(run_cli("config", "check", config, "--json"))
    assert document["valid"] is False and len(document["problems"]) == 3


def test_config_check_of_a_valid_file_names_its_trainers(tmp_path):
    config = write(tmp_path / "ok.yaml", "model_management: {trainers: {quick: {type: LOCAL, config: {max_workers: 3}}}}\n")
    result = run_cli("config", "check", config)
    assert result.returncode == 0
    assert result.stdout.strip() == f"{config} is valid: 2 trainers: default (LOCAL), quick (LOCAL)."


def test_config_check_without_a_file_is_a_usage_error():
    result = run_cli("config", "check")
    assert result.returncode == 2
    assert "no file to check" in result.stderr


def test_train_with_load_loads_the_model_back_and_summarises_it(tmp_path):
    done = run_cli("train", IRIS, "--arg", "epochs=30", "--save-path", str(tmp_path), "--save-with-id",
                   "--model-name", "iris", "--load")
    assert done.returncode == 0, done.stderr
    training_id = submitted_id(done.stdout)
    assert "Loaded back:" in done.stdout
    assert re.search(r"^\s+class:\s+trainerkit.examples.iris:IrisClassifier$", done.stdout, re.MULTILINE)
    assert str(tmp_path / training_id / "iris") in done.stdout
    document = json_out(run_cli("train", IRIS, "--arg", "epochs=30", "--save-path", str(tmp_path),
                                "--save-with-id", "--load", "--json"))
    assert document["status"] == "COMPLETED"
    assert document["model"]["class"] == "trainerkit.examples.iris:IrisClassifier"


def test_train_with_load_and_detach_is_a_usage_error(tmp_path):
    done = run_cli("train", IRIS, "--save-path", str(tmp_path), "--load", "--detach")
    assert done.returncode == 2
    assert "--load waits for the model" in done.stderr


def test_train_takes_an_external_training_id_and_refuses_an_unsafe_one():
    trained = run_cli("train", "tests.training_modules:Adder", "--arg", "a=1", "--external-training-id", "run-7")
    assert trained.returncode == 0, trained.stderr
    assert submitted_id(trained.stdout) == "default--run-7"
    bad = run_cli("train", "tests.training_modules:Adder", "--arg", "a=1", "--external-training-id", "Run 7!")
    assert bad.returncode == 2
    assert "external_training_id 'Run 7!' is not a valid id part" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_delete_model_of_a_training_that_saved_none_does_not_claim_to_delete_one(tmp_path):
    failed = run_cli("train", "tests.training_modules:Failing", "--save-path", str(tmp_path / "m"))
    training_id = submitted_id(failed.stdout)
    result = run_cli("delete", training_id, "--model", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_deleted"] is False
    assert f"training {training_id} had no saved model to delete (nothing at {tmp_path / 'm'})" in result.stderr
