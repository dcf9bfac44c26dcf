"""The docs show what the code does: generated tables, real messages, runnable examples.

Blocks between ``<!-- BEGIN generated: LABEL -->`` and ``<!-- END generated: LABEL -->``
in docs/*.md are produced by the code; when the code changes, rewrite them with

    .venv/bin/python -m tests.test_docs_match_code      # from the repository root

and review the diff. Other tests here check that quoted messages are still real
and that the example code in the docs runs.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import textwrap
from typing import Callable

import pytest

import trainerkit
from trainerkit import ids
from trainerkit.schema import describe_schema
from trainerkit.trainers.local import LocalTrainerConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO_ROOT, "docs")
_BLOCK = r"<!-- BEGIN (?:generated|example): {label} -->\n(.*?)<!-- END (?:generated|example): {label} -->"


def _doc(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


def _generated_block(doc: str, label: str) -> str:
    match = re.search(_BLOCK.format(label=re.escape(label)), doc, re.S)
    assert match, f"block {label!r} is missing from the doc"
    return match.group(1)


def _fenced(block: str) -> str:
    match = re.search(r"```[a-z]*\n(.*?)```", block, re.S)
    assert match, "no fenced code in the block"
    return match.group(1)


# -- what the generated blocks must contain -------------------------------------------


def _local_keys_table() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {t} | `{d}` | {doc} |" for k, t, d, doc in describe_schema(LocalTrainerConfig)]
    return "\n".join(rows) + "\n"


def _validation_example() -> str:
    doc = _doc("configuration.md")
    yaml_text = re.search(r"This `trainers.yml`:\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "trainers.yml"), "w", encoding="utf-8") as handle:
            handle.write(yaml_text)
        here = os.getcwd()
        os.chdir(folder)  # the message starts with the path as given: keep it short
        try:
            trainerkit.TrainerManager.from_yaml("trainers.yml")
        except trainerkit.ConfigError as error:
            return "```\n" + str(error) + "\n```\n"
        finally:
            os.chdir(here)
    raise AssertionError("the validation example in configuration.md raised no ConfigError")


class Classifier:
    """The module whose wrong calls docs/modules.md shows."""

    @classmethod
    def train(cls, data_path, epochs=3):
        return cls()

    def save(self, path):
        raise AssertionError("never trained")

    @classmethod
    def load(cls, path):
        raise AssertionError("never trained")


def _signature_errors() -> str:
    from trainerkit.module import bind_train_arguments  # what train() calls first

    messages = []
    for args, kwargs in [((), {}), (("d.csv",), {"epoch": 5}), (("d.csv", 3, 4), {})]:
        try:
            bind_train_arguments(Classifier, args, kwargs)
        except TypeError as error:
            messages.append(str(error))
    return "```\n" + "\n".join(messages) + "\n```\n"


NAME_EXAMPLES = [
    "default", "cluster", "gpu-a100", "GPU_Box", "gpu_box", "My_Trainer", "Cluster",
    "team.ml", "a--b", "-edge", "trainer-\u00fc", "\u8bad\u7ec3",
]
EXAMPLE_UNIQUE = "k3j9x7q2m4ab"


def _name_examples_table() -> str:
    rows = ["| trainer name | name part | separator | example id |", "|---|---|---|---|"]
    for name in NAME_EXAMPLES:
        rows.append(
            f"| `{name}` | `{ids.encode_name(name)}` | `{ids.separator_for(name)}` | "
            f"`{ids.id_prefix(name) + EXAMPLE_UNIQUE}` |"
        )
    return "\n".join(rows) + "\n"


LONG_NAME = "Vision_Transformer_Large_Experiments_2024"


def _long_name_error() -> str:
    try:
        trainerkit.TrainerManager.from_dict({"model_management": {"trainers": {LONG_NAME: {"type": "LOCAL"}}}})
    except trainerkit.ConfigError as error:
        return "```\n" + str(error) + "\n```\n"
    raise AssertionError(f"{LONG_NAME!r} was accepted")


def _capability_names_table() -> str:
    from trainerkit.capabilities import CAPABILITY_MEANINGS, CAPABILITY_NAMES

    rows = ["| name | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {CAPABILITY_MEANINGS[name]} |" for name in CAPABILITY_NAMES]
    return "\n".join(rows) + "\n"


_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: docs, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: docs, user: {token: docs}}]
contexts: [{name: docs, context: {cluster: docs, user: docs, namespace: ml}}]
current-context: docs
"""

#: The columns of the built-in matrix in docs/capabilities.md: (heading, type, config).
MATRIX_COLUMNS = [
    ("LOCAL", "LOCAL", {}),
    ("LOCAL<br>`capture_output: false`", "LOCAL", {"capture_output": False}),
    ("SUBPROCESS", "SUBPROCESS", {}),
    ("SUBPROCESS<br>`detach: true`", "SUBPROCESS", {"detach": True}),
    ("SUBPROCESS<br>`gpus: [0, 1]`,<br>`max_retries: 1`", "SUBPROCESS", {"gpus": [0, 1], "max_retries": 1}),
    ("KUBERNETES", "KUBERNETES", {}),
    (
        "KUBERNETES<br>GPU in `resources`,<br>`backoff_limit: 2`",
        "KUBERNETES",
        {"resources": {"limits": {"nvidia.com/gpu": 1}}, "backoff_limit": 2},
    ),
]


def _capability_matrix() -> str:
    """Each built-in type's ``capabilities()``, asked of a real trainer built from
    the column's config (KUBERNETES: with a kubeconfig; nothing is contacted)."""
    from trainerkit.capabilities import CAPABILITY_NAMES

    columns = []
    with tempfile.TemporaryDirectory() as folder:
        kubeconfig = os.path.join(folder, "kubeconfig")
        with open(kubeconfig, "w", encoding="utf-8") as handle:
            handle.write(_KUBECONFIG)
        for index, (_, trainer_type, config) in enumerate(MATRIX_COLUMNS):
            config = dict(config)
            if trainer_type == "KUBERNETES":
                config.update(namespace="ml", image="registry.example.com/train:1", kubeconfig=kubeconfig)
            else:
                config.update(state_dir=os.path.join(folder, f"state{index}"))
            manager = trainerkit.TrainerManager.from_dict(
                {"model_management": {"trainers": {"t": {"type": trainer_type, "config": config}}}}
            )
            spec = manager.trainer_spec("t")
            trainer = spec.trainer_class(spec.config, "t")  # built, never opened or used
            try:
                columns.append(trainer.capabilities())
            finally:
                trainer.shutdown(wait=False)
                manager.close(wait=False)
    rows = ["| capability | " + " | ".join(heading for heading, _, _ in MATRIX_COLUMNS) + " |"]
    rows.append("|---" * (len(MATRIX_COLUMNS) + 1) + "|")
    for name in CAPABILITY_NAMES:
        cells = [levels[name].describe() if levels[name] else "-" for levels in columns]
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


GENERATED: dict[tuple[str, str], Callable[[], str]] = {
    ("capabilities.md", "capability names"): _capability_names_table,
    ("capabilities.md", "built-in matrix"): _capability_matrix,
    ("configuration.md", "LOCAL keys"): _local_keys_table,
    ("configuration.md", "validation example"): _validation_example,
    ("modules.md", "signature errors"): _signature_errors,
    ("training-ids.md", "name examples"): _name_examples_table,
    ("training-ids.md", "long name"): _long_name_error,
}


@pytest.mark.parametrize("doc_name, label", list(GENERATED), ids=[f"{d}:{l}" for d, l in GENERATED])
def test_generated_block_matches_the_code(doc_name, label):
    expected = GENERATED[(doc_name, label)]()
    assert _generated_block(_doc(doc_name), label) == expected, (
        f"docs/{doc_name} block {label!r} is stale; run: python -m tests.test_docs_match_code\n"
        + expected
    )


# -- configuration.md -----------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"model_management": {"trainer": {}}},
        {"model_management": {"trainers": {"big": {"typ": "LOCAL"}}}},
        {"model_management": {"trainers": {"Vision_Transformer_Large_Experiments_2024": {"type": "LOCAL"}}}},
    ],
)
def test_other_documented_config_messages_are_real(config):
    with pytest.raises(trainerkit.ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(config)
    doc = _doc("configuration.md")
    first = caught.value.problems[0]
    assert first in doc or f"trainers.yml: {first}" in doc, first


def test_documented_environment_override_applies(monkeypatch):
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_BATCH_NIGHTLY_CONFIG_RETENTION_DURATION", "90m")
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_GPU_BOX_CONFIG_MAX_WORKERS", "2.0")
    manager = trainerkit.TrainerManager.from_yaml(os.path.join(REPO_ROOT, "config", "multi.yaml"))
    assert manager.trainer_spec("batch-nightly").config.retention_duration.total_seconds() == 5400
    assert manager.trainer_spec("GPU_Box").config.max_workers == 2


def test_documented_environment_error_is_real(monkeypatch):
    monkeypatch.setenv("MODEL_MANAGEMENT_TRAINERS_DEFAULT_CONFIG_MAX_WORKERS", "abc")
    with pytest.raises(trainerkit.ConfigError) as caught:
        trainerkit.TrainerManager()
    assert str(caught.value) in _doc("configuration.md")


@pytest.fixture
def acme_module(tmp_path, monkeypatch, isolated_registry):
    """The doc's acme_trainerkit.py, importable, and the ACME type unregistered around the test."""
    code = _fenced(_generated_block(_doc("backends.md"), "acme_trainerkit.py"))
    package_dir = tmp_path / "site"
    package_dir.mkdir()
    (package_dir / "acme_trainerkit.py").write_text(code)
    monkeypatch.syspath_prepend(str(package_dir))
    monkeypatch.delitem(sys.modules, "acme_trainerkit", raising=False)
    yield package_dir
    sys.modules.pop("acme_trainerkit", None)


class _Counter(trainerkit.ModuleBase):
    def __init__(self, steps):
        self.steps = steps

    @classmethod
    def train(cls, steps):
        for step in range(1, steps + 1):
            trainerkit.report_progress(step=step, total=steps)
        return cls(steps)


def test_documented_acme_trainer_runs_through_import_class(acme_module, manager_factory, tmp_path):
    manager = manager_factory(
        {"model_management": {"trainers": {"partner": {"import_class": "acme_trainerkit.AcmeTrainer"}}}}
    )
    future = manager.get_trainer("partner").train(_Counter, 4, save_path=str(tmp_path / "m"))
    assert future.done()  # ACME trains inside train()
    assert future.result().steps == 4
    assert future.get_info().progress.step == 4
    assert trainerkit.load(future.save_path).steps == 4
    assert manager.type_source("partner").kind == "import_class"


def test_documented_acme_trainer_is_found_through_its_entry_point(acme_module, manager_factory):
    dist_info = acme_module / "acme_trainerkit-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-trainerkit\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [trainerkit.trainers]
            ACME = acme_trainerkit:AcmeTrainer
            """
        )
    )
    manager = manager_factory(
        {"model_management": {"trainers": {"partner": {"type": "ACME", "config": {"record_progress": False}}}}}
    )
    future = manager.get_trainer("partner").train(_Counter, 3)
    assert future.result().steps == 3
    assert future.get_info().progress is None
    assert manager.type_source("partner").kind == "entry point"


# -- modules.md -----------------------------------------------------------------------


def test_model_name_error_in_modules_doc_is_real(manager_factory, tmp_path):
    with pytest.raises(ValueError) as caught:
        manager_factory().get_trainer("default").train(
            Classifier, "d.csv", save_path=str(tmp_path), model_name="../evil"
        )
    assert str(caught.value) in _doc("modules.md")


# -- capabilities.md ------------------------------------------------------------------


@pytest.mark.parametrize("label", ["choosing a trainer", "training parameters"])
def test_capabilities_doc_examples_run(label, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _fenced(_generated_block(_doc("capabilities.md"), label))
    exec(compile(code, f"docs/capabilities.md: {label}", "exec"), {"__name__": "capabilities_doc_example"})


def test_unsupported_capability_message_in_capabilities_doc_is_real(manager_factory):
    with pytest.raises(trainerkit.UnsupportedCapabilityError) as caught:
        manager_factory().get_trainer("default").train(Classifier, "d.csv", capabilities={"cancel": "native"})
    assert str(caught.value) in _doc("capabilities.md")


# -- training-ids.md ------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: ids.external_training_id("default", "Run_42"),
        lambda: ids.external_training_id("GPU_Box", "a" * 48),
        lambda: ids.split_training_id("default-abc"),
    ],
)
def test_id_error_messages_in_training_ids_doc_are_real(call):
    with pytest.raises(trainerkit.InvalidTrainingIdError) as caught:
        call()
    assert str(caught.value) in _doc("training-ids.md")


def test_name_examples_round_trip_with_dashes_in_the_unique_part():
    for name in NAME_EXAMPLES:
        for unique in (EXAMPLE_UNIQUE, "run--1"):
            assert ids.split_training_id(ids.id_prefix(name) + unique) == (name, unique)


def test_wrong_arguments_leave_no_record(manager_factory):
    trainer = manager_factory().get_trainer("default")
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        trainer.train(Classifier, "d.csv", epoch=5)
    assert trainer.list_trainings() == []


def _rewrite_generated_blocks() -> None:
    for (doc_name, label), generate in GENERATED.items():
        path = os.path.join(DOCS, doc_name)
        text = _doc(doc_name)
        pattern = re.compile(_BLOCK.format(label=re.escape(label)), re.S)
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"docs/{doc_name}: block {label!r} not found")
        updated = text[: match.start(1)] + generate() + text[match.end(1) :]
        if updated != text:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(updated)
            print(f"rewrote docs/{doc_name}: {label}")


if __name__ == "__main__":
    _rewrite_generated_blocks()
