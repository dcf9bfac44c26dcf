"""KUBERNETES trainer config: every key validated, with key paths, before any request."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import trainerkit
from trainerkit.errors import ConfigError
from trainerkit.trainers.kubernetes import KubernetesModelTrainer, KubernetesTrainerConfig

from tests.conftest import REPO_ROOT  # noqa: E402
WHERE = "model_management.trainers.cluster.config"


def config_of(**keys):
    return {"model_management": {"trainers": {"cluster": {"type": "KUBERNETES", "config": {"image": "img:1", **keys}}}}}


def problems_of(**keys) -> str:
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(config_of(**keys))
    return str(caught.value)


@pytest.fixture
def kubeconfig(tmp_path):
    """A kubeconfig pointing at nothing: building a trainer sends no request."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: kind-dev, context: {cluster: c, user: u, namespace: team-a}}]\n"
        "current-context: kind-dev\n"
    )
    return str(path)


def test_misspelled_key_names_its_full_path_and_the_likely_key():
    message = problems_of(backof_limit=2)
    assert f"{WHERE}.backof_limit: unknown key" in message
    assert "did you mean 'backoff_limit'?" in message


def test_missing_image_is_refused_at_load():
    with pytest.raises(ConfigError, match=rf"{WHERE}\.image: required key is missing"):
        trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"cluster": {"type": "KUBERNETES", "config": {}}}}}
        )


def test_image_pull_policy_lists_the_accepted_values():
    message = problems_of(image_pull_policy="IfNotPresnt")
    assert f"{WHERE}.image_pull_policy" in message and "'IfNotPresent'" in message


@pytest.mark.parametrize(
    "resources, expected",
    [
        ({"limits": {"memory": "2Gx"}}, "resources.limits.memory: '2Gx' is not a Kubernetes quantity"),
        ({"requests": {"memroy": "1Gi"}}, "resources.requests.memroy: 'memroy' is not a standard resource"),
        ({"requests": {"nvidia.com/gpu": 1}}, "extended resources must also be set in limits"),
        ({"limits": {"nvidia.com/gpu": 0.5}}, "must be a whole number"),
        ({"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}, "'2' is more than the limit '500m'"),
        ({"limits": {"cpu": 2}, "requsts": {}}, "resources.requsts: unknown key"),
    ],
)
def test_resources_are_checked_like_the_api_server_does(resources, expected):
    message = problems_of(resources=resources)
    assert f"{WHERE}.resources" in message and expected in message


def test_gpu_limits_are_accepted():
    manager = trainerkit.TrainerManager.from_dict(
        config_of(resources={"limits": {"nvidia.com/gpu": 1, "memory": "16Gi"}, "requests": {"cpu": 2}})
    )
    config = manager.trainer_spec("cluster").config
    assert config.resources.limits == {"nvidia.com/gpu": "1", "memory": "16Gi"}
    assert config.resources.requests == {"cpu": "2"}


def test_labels_in_the_reserved_prefix_and_bad_label_values_are_refused():
    message = problems_of(labels={"trainerkit.io/trainer": "x", "team": "machine learning"})
    assert "reserved for trainerkit" in message
    assert "'machine learning' is not a valid label value" in message


def test_env_values_must_be_text_or_a_value_from():
    message = problems_of(env={"OK": 1, "BAD": [1], "A=B": "x", "TRAINERKIT_TRAINING_ID": "x"})
    assert f"{WHERE}.env.BAD: expected a string or a valueFrom mapping" in message
    assert f"{WHERE}.env.A=B: environment variable name" in message
    assert f"{WHERE}.env.TRAINERKIT_TRAINING_ID: trainerkit sets this variable itself" in message
    assert "env.OK" not in message


def test_a_volume_mount_must_name_a_declared_volume():
    message = problems_of(
        volumes=[{"name": "data", "emptyDir": {}}], volume_mounts=[{"name": "models", "mountPath": "/models"}]
    )
    assert f"{WHERE}.volume_mounts[0].name: 'models' is not the name of any entry of volumes ('data')" in message


def test_durations_accept_the_caikit_syntax():
    manager = trainerkit.TrainerManager.from_dict(config_of(active_deadline="1h30m", ttl_after_finished=600))
    config = manager.trainer_spec("cluster").config
    assert config.active_deadline.total_seconds() == 5400
    assert config.ttl_after_finished.total_seconds() == 600


def test_bad_namespace_is_refused_at_load():
    assert f"{WHERE}.namespace: namespace 'ML_Team' is not a DNS-1123 label" in problems_of(namespace="ML_Team")


def test_example_config_file_loads():
    manager = trainerkit.TrainerManager.from_yaml(os.path.join(REPO_ROOT, "config", "kubernetes.yaml"))
    spec = manager.trainer_spec("cluster")
    assert spec.trainer_class is KubernetesModelTrainer
    assert isinstance(spec.config, KubernetesTrainerConfig)
    assert spec.config.resources.limits["nvidia.com/gpu"] == "1"


def test_loading_a_kubernetes_config_does_not_import_the_client():
    code = (
        "import sys, trainerkit\n"
        "trainerkit.TrainerManager.from_dict({'model_management': {'trainers': {'cluster': "
        "{'type': 'KUBERNETES', 'config': {'image': 'img:1'}}}}})\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported at config load'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- checked when the trainer is built (with the client's models) ------------------------------


def test_typo_inside_a_toleration_names_its_path_when_the_trainer_is_built(kubeconfig, manager_factory):
    manager = manager_factory(
        config_of(kubeconfig=kubeconfig, tolerations=[{"key": "gpu", "operator": "Exists", "efect": "NoSchedule"}])
    )
    with pytest.raises(ConfigError) as caught:
        manager.get_trainer("cluster")
    assert f"{WHERE}.tolerations[0].efect: unknown key" in str(caught.value)
    assert "did you mean 'effect'?" in str(caught.value)


def test_volume_written_in_snake_case_is_refused(kubeconfig, manager_factory):
    manager = manager_factory(
        config_of(
            kubeconfig=kubeconfig,
            volumes=[{"name": "models", "persistent_volume_claim": {"claimName": "models"}}],
            volume_mounts=[{"name": "models", "mountPath": "/models"}],
        )
    )
    with pytest.raises(ConfigError, match=r"volumes\[0\]\.persistent_volume_claim: write it as 'persistentVolumeClaim'"):
        manager.get_trainer("cluster")


def test_missing_required_field_of_a_volume_is_named(kubeconfig, manager_factory):
    manager = manager_factory(
        config_of(
            kubeconfig=kubeconfig,
            volumes=[{"name": "models", "persistentVolumeClaim": {}}],
            volume_mounts=[{"name": "models", "mountPath": "/models"}],
        )
    )
    with pytest.raises(ConfigError, match=r"volumes\[0\]\.persistentVolumeClaim\.claimName: required key is missing"):
        manager.get_trainer("cluster")


def test_env_value_from_is_checked(kubeconfig, manager_factory):
    manager = manager_factory(config_of(kubeconfig=kubeconfig, env={"TOKEN": {"secretKeyRef": {"name": "hf"}}}))
    with pytest.raises(ConfigError, match=rf"{WHERE}\.env\.TOKEN\.secretKeyRef\.key: required key is missing"):
        manager.get_trainer("cluster")


def test_namespace_defaults_to_the_context_namespace(kubeconfig, manager_factory):
    trainer = manager_factory(config_of(kubeconfig=kubeconfig)).get_trainer("cluster")
    assert trainer.namespace == "team-a"


def test_unknown_context_lists_the_contexts(kubeconfig, manager_factory):
    manager = manager_factory(config_of(kubeconfig=kubeconfig, context="kind-deb"))
    with pytest.raises(ConfigError) as caught:
        manager.get_trainer("cluster")
    assert f"{WHERE}.context: kubeconfig {kubeconfig} has no context 'kind-deb'" in str(caught.value)
    assert "did you mean 'kind-dev'?" in str(caught.value)


def test_missing_kubeconfig_file_is_named(tmp_path, manager_factory):
    missing = str(tmp_path / "nope")
    manager = manager_factory(config_of(kubeconfig=missing))
    with pytest.raises(ConfigError, match=rf"{WHERE}\.kubeconfig: {missing} does not exist"):
        manager.get_trainer("cluster")


def test_no_configuration_at_all_says_what_to_set(tmp_path, monkeypatch, manager_factory):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    manager = manager_factory(config_of())
    with pytest.raises(ConfigError, match=r"no Kubernetes configuration found.*not running inside a cluster"):
        manager.get_trainer("cluster")


def kubernetes_keys_table() -> str:
    from trainerkit.schema import describe_schema

    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {t} | `{d}` | {doc} |" for k, t, d, doc in describe_schema(KubernetesTrainerConfig)]
    return "\n".join(rows) + "\n"


def test_the_keys_table_in_the_docs_matches_the_code():
    with open(os.path.join(REPO_ROOT, "docs", "kubernetes.md"), encoding="utf-8") as handle:
        doc = handle.read()
    begin, end = "<!-- BEGIN generated: KUBERNETES keys -->\n", "<!-- END generated: KUBERNETES keys -->"
    table = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert table == kubernetes_keys_table(), (
        "docs/kubernetes.md is out of date: paste tests.trainers.kubernetes.test_kubernetes_config.kubernetes_keys_table() into it"
    )


def test_inside_a_cluster_the_pods_service_account_is_used(tmp_path, monkeypatch, manager_factory):
    from kubernetes.config import incluster_config

    from trainerkit.trainers.kubernetes import api

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (account / "namespace").write_text("ml-jobs\n")
    monkeypatch.setattr(api, "SERVICE_ACCOUNT_DIR", str(account))
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    trainer = manager_factory(config_of()).get_trainer("cluster")
    assert trainer.namespace == "ml-jobs"
    assert trainer.cluster.server == "https://10.96.0.1:443"
    assert trainer.cluster.source == "in-cluster service account"


def _named(name: str) -> dict:
    return {"model_management": {"trainers": {name: {"type": "KUBERNETES", "config": {"image": "img:1"}}}}}


def test_a_trainer_name_whose_ids_start_with_a_digit_is_refused_at_load():
    # The id names the headless Service of a multi-node training: a DNS-1035 label.
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(_named("2024-runs"))
    message = str(caught.value)
    assert "model_management.trainers.2024-runs: trainer name '2024-runs' would start its training ids with '2'" in message
    assert "Service names must start with a letter" in message and "'k8s-2024-runs'" in message
    # Other types keep accepting it.
    trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"2024-runs": {"type": "LOCAL"}}}}).close()


def test_a_trainer_name_must_leave_room_for_the_pods_index_suffix():
    fits = "a" * 44  # 44 + '--' + 12 + '-4095' = 63
    trainerkit.TrainerManager.from_dict(_named(fits)).close()
    with pytest.raises(ConfigError) as caught:
        trainerkit.TrainerManager.from_dict(_named(fits + "b"))
    message = str(caught.value)
    assert f"trainer name '{fits}b' is too long for a KUBERNETES trainer: it encodes to 45 characters" in message
    assert "at most 44 fit" in message and "<id>-<index>" in message


def test_a_kubernetes_trainer_built_in_code_gets_the_same_name_check():
    config, problems = trainerkit.schema.validate(KubernetesTrainerConfig, {"image": "img:1"}, "c")
    assert not problems
    with pytest.raises(trainerkit.InvalidTrainingIdError, match="Service names must start with a letter"):
        KubernetesModelTrainer(config, "9lives")


def test_multi_node_keys_are_checked_at_load():
    assert f"{WHERE}.master_port" in problems_of(master_port=70000)
    assert f"{WHERE}.rendezvous_timeout" in problems_of(rendezvous_timeout="0s")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tolerations", [{"key": "gpu", "tolerationSeconds": "60"}], r"tolerations\[0\]\.tolerationSeconds: expected an integer, got '60'"),
        (
            "volumes",
            [{"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": "yes"}}],
            r"volumes\[0\]\.persistentVolumeClaim\.readOnly: expected true or false, got 'yes'",
        ),
        (
            "volumes",
            [{"name": "cfg", "configMap": {"name": "c", "items": [{"key": "a"}]}}],
            r"volumes\[0\]\.configMap\.items\[0\]\.path: required key is missing",
        ),
        ("volumes", [{"name": "cfg", "configMap": {"items": {"key": "a"}}}], r"volumes\[0\]\.configMap\.items: expected a list"),
        ("env_from", [{"secretRef": "hf"}], r"env_from\[0\]\.secretRef: expected a mapping \(SecretEnvSource\), got 'hf'"),
    ],
)
def test_wrong_types_and_missing_nested_keys_are_named_with_either_client_generation(
    kubeconfig, manager_factory, field, value, message
):
    # The same checks hold whether kubernetes 37+ (pydantic models) or 36 (classic
    # OpenAPI models, installed beside s3fs) is the client: kube_shape reads both.
    manager = manager_factory(config_of(kubeconfig=kubeconfig, **{field: value}))
    with pytest.raises(ConfigError, match=message):
        manager.get_trainer("cluster")


def test_duration_defaults_read_as_a_config_file_writes_them():
    table = kubernetes_keys_table()
    assert "| `rendezvous_timeout` | a duration like '7d12h', '90m' or a number of seconds | `'10m'` |" in table
    assert "| `progress_interval` | a duration like '7d12h', '90m' or a number of seconds | `'2s'` |" in table
    assert "timedelta" not in table
