"""Manifests are data: every Job and ConfigMap trainerkit builds passes the
Kubernetes schema (kubernetes-validate, strict, 1.37) and the API server's own
rules, without a cluster."""

from __future__ import annotations

import datetime
import json
import os

import kubernetes_validate
import pytest
import yaml

from trainerkit import ids
from trainerkit.schema import validate
from trainerkit.trainers.kubernetes.config import KubernetesTrainerConfig
from trainerkit.trainers.kubernetes.manifest import (
    ANNOTATION_CANCELED,
    LABEL_TRAINER,
    LABEL_TRAINING_ID,
    build_manifests,
    cancel_patch,
    owner_patch,
)
from trainerkit.trainers.kubernetes.validation import configmap_problems, job_problems, parse_quantity
from trainerkit.runner import TrainingSpec
from trainerkit.resources import Resources
from trainerkit.trainers.kubernetes.validation import indexed_job_problems, service_problems
from tests.training_modules import Adder, JsonModel

from tests.conftest import REPO_ROOT  # noqa: E402
KUBERNETES_VERSION = "1.37.0"
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)

FULL = {
    "image": "registry.example.com/ml-train:1.4",
    "namespace": "ml",
    "image_pull_policy": "IfNotPresent",
    "image_pull_secrets": ["regcred"],
    "service_account": "trainerkit-training",
    "resources": {"requests": {"cpu": 4, "memory": "16Gi"}, "limits": {"memory": "16Gi", "nvidia.com/gpu": 1}},
    "env": {"OMP_NUM_THREADS": 4, "HF_TOKEN": {"secretKeyRef": {"name": "hf", "key": "token"}}},
    "env_from": [{"configMapRef": {"name": "defaults"}, "prefix": "DEF_"}, {"secretRef": {"name": "creds"}}],
    "volumes": [
        {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}},
    ],
    "volume_mounts": [{"name": "models", "mountPath": "/models"}, {"name": "scratch", "mountPath": "/scratch"}],
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            }
        }
    },
    "priority_class": "training-high",
    "labels": {"team": "ml-platform"},
    "annotations": {"example.com/cost-center": "ml-42"},
    "backoff_limit": 2,
    "active_deadline": "12h",
    "ttl_after_finished": "7d",
    "termination_grace_period": "30s",
}


def make_config(**keys) -> KubernetesTrainerConfig:
    config, problems = validate(KubernetesTrainerConfig, keys, "config")
    assert not problems, problems
    return config


def manifests(config=None, *, trainer="cluster", module=JsonModel, args=(3,), kwargs=None, **extra):
    config = config or make_config(image="img:1")
    training_id = extra.pop("training_id", ids.id_prefix(trainer) + "k3j9x7q2m4ab")
    return build_manifests(
        config,
        namespace=extra.pop("namespace", "ml"),
        instance_name=trainer,
        training_id=training_id,
        module_class=module,
        args=args,
        kwargs=kwargs or {},
        save_path=extra.pop("save_path", "/models/run"),
        model_name=extra.pop("model_name", None),
        tags=extra.pop("tags", ()),
        submission_time=NOW,
        nonce="a1b2c3",
        resources=extra.pop("resources", Resources()),
    )


def assert_valid(manifest):
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    problems = job_problems(manifest) if manifest["kind"] == "Job" else configmap_problems(manifest)
    assert problems == []


@pytest.mark.parametrize(
    "keys",
    [
        {"image": "img:1"},
        FULL,
        {**FULL, "argument_format": "pickle"},
        {"image": "img:1", "affinity": None, "env": {}, "resources": {"limits": {"cpu": "500m"}}},
    ],
    ids=["minimal", "full", "pickle", "cpu-only"],
)
def test_job_and_configmap_pass_the_kubernetes_schema(keys):
    built = manifests(make_config(**keys), model_name="clf", tags=("nightly", "iris"))
    assert_valid(built.job)
    assert_valid(built.config_map)


@pytest.mark.parametrize("name", ["cluster", "GPU_Box", "équipe-ml", "a" * 49])
def test_trainer_names_of_every_kind_give_valid_labels(name):
    built = manifests(trainer=name, training_id=ids.new_training_id(name))
    assert_valid(built.job)
    assert built.job["metadata"]["labels"][LABEL_TRAINER] == ids.encode_name(name)
    assert built.job["spec"]["template"]["metadata"]["labels"][LABEL_TRAINER] == ids.encode_name(name)


def test_job_is_named_by_the_training_id_and_labelled_with_it():
    built = manifests(training_id="cluster--run-7")
    assert built.job["metadata"]["name"] == "cluster--run-7"
    assert built.job["metadata"]["labels"][LABEL_TRAINING_ID] == "cluster--run-7"
    assert built.job["spec"]["template"]["metadata"]["labels"][LABEL_TRAINING_ID] == "cluster--run-7"


def test_pods_never_restart_in_place_and_training_errors_are_not_retried():
    job = manifests(make_config(**FULL)).job
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [4]
    assert job["spec"]["backoffLimit"] == 2


def test_config_keys_land_where_kubernetes_expects_them():
    job = manifests(make_config(**FULL)).job
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == FULL["image"] and container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in container["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in container["env"]
    assert container["envFrom"] == FULL["env_from"]
    assert pod["serviceAccountName"] == "trainerkit-training"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == FULL["node_selector"]
    assert pod["tolerations"] == FULL["tolerations"]
    assert pod["affinity"] == FULL["affinity"]
    assert pod["priorityClassName"] == "training-high"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert job["spec"]["activeDeadlineSeconds"] == 12 * 3600
    assert job["spec"]["ttlSecondsAfterFinished"] == 7 * 86400
    assert job["metadata"]["labels"]["team"] == "ml-platform"
    assert job["metadata"]["annotations"]["example.com/cost-center"] == "ml-42"


def test_the_pod_runs_the_trainerkit_entry_point_on_the_mounted_spec():
    built = manifests(make_config(**FULL))
    pod = built.job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "python", "-m", "trainerkit.trainers.kubernetes.pod_entry", "/etc/trainerkit/training.json"
    ]
    spec_volume = next(v for v in pod["volumes"] if v["name"] == "trainerkit-spec")
    assert spec_volume["configMap"]["name"] == built.config_map["metadata"]["name"]
    assert {"name": "trainerkit-spec", "mountPath": "/etc/trainerkit", "readOnly": True} in container["volumeMounts"]
    spec = TrainingSpec.from_dict(json.loads(built.config_map["data"]["training.json"]))
    assert spec.module == "tests.training_modules:JsonModel"
    assert spec.save_path == "/models/run"
    assert spec.arguments == {"json": {"args": [3], "kwargs": {}}}


def test_the_record_travels_in_job_annotations():
    annotations = manifests(model_name="clf", tags=("nightly", "iris")).job["metadata"]["annotations"]
    assert annotations["trainerkit.io/trainer-name"] == "cluster"
    assert annotations["trainerkit.io/module"] == "tests.training_modules:JsonModel"
    assert annotations["trainerkit.io/save-path"] == "/models/run"
    assert annotations["trainerkit.io/model-name"] == "clf"
    assert json.loads(annotations["trainerkit.io/tags"]) == ["nightly", "iris"]
    assert annotations["trainerkit.io/submission-time"] == NOW.isoformat()


def test_tuples_travel_as_json_lists():
    built = manifests(module=Adder, args=((1, 2),), kwargs={"b": [3.5, None, True]})
    spec = json.loads(built.config_map["data"]["training.json"])
    assert spec["arguments"]["json"] == {"args": [[1, 2]], "kwargs": {"b": [3.5, None, True]}}


@pytest.mark.parametrize(
    "value, where",
    [
        ({1, 2}, "argument a is a builtins.set"),
        ({"x": [1, object()]}, "argument a['x'][1] is a builtins.object"),
        ({1: "one"}, "argument a has the key 1 (int), but JSON keys are strings"),
        (float("nan"), "argument a is nan"),
    ],
)
def test_arguments_json_cannot_carry_are_named(value, where):
    with pytest.raises(TypeError) as caught:
        manifests(module=Adder, args=(value,))
    assert str(caught.value).startswith(where)
    assert "argument_format: pickle" in str(caught.value)


def test_keyword_argument_is_named_too():
    with pytest.raises(TypeError, match=r"^argument b is a builtins.complex"):
        manifests(module=Adder, args=(1,), kwargs={"b": 1j})


def test_pickle_format_carries_any_picklable_argument():
    built = manifests(make_config(image="img:1", argument_format="pickle"), module=Adder, args=({1, 2},))
    spec = TrainingSpec.from_dict(json.loads(built.config_map["data"]["training.json"]))
    assert set(spec.arguments) == {"pickle"}


def test_pickle_format_names_an_argument_that_cannot_be_pickled():
    with pytest.raises(TypeError, match=r"argument 'b' of Adder.train"):
        manifests(make_config(image="img:1", argument_format="pickle"), module=Adder, args=(1,), kwargs={"b": lambda: 1})


def test_arguments_too_large_for_a_configmap_are_refused_before_sending():
    with pytest.raises(ValueError, match=r"ConfigMap's data is \d+ bytes; the API server accepts at most 1048576"):
        manifests(module=Adder, args=("x" * (1024 * 1024 + 1),))


def test_the_user_may_set_pythonunbuffered_but_gets_it_by_default():
    default = manifests().job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in default
    chosen = manifests(make_config(image="img:1", env={"PYTHONUNBUFFERED": "0"})).job
    env = chosen["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "PYTHONUNBUFFERED"] == [{"name": "PYTHONUNBUFFERED", "value": "0"}]


def test_cancel_patch_suspends_records_and_is_conditional():
    job = {"metadata": {"name": "cluster--x", "resourceVersion": "42", "uid": "u-1"}}
    patch = cancel_patch(job, NOW, "canceled while running")
    assert patch["spec"] == {"suspend": True}
    assert patch["metadata"]["resourceVersion"] == "42"
    assert json.loads(patch["metadata"]["annotations"][ANNOTATION_CANCELED]) == {
        "time": NOW.isoformat(),
        "reason": "canceled while running",
    }


def test_owner_patch_makes_the_job_own_its_configmap():
    reference = owner_patch({"metadata": {"name": "cluster--x", "uid": "u-1"}})["metadata"]["ownerReferences"][0]
    assert (reference["kind"], reference["name"], reference["uid"]) == ("Job", "cluster--x", "u-1")


# -- the server-side rules themselves ------------------------------------------------------


def test_server_rules_catch_what_the_schema_misses():
    job = manifests().job
    job["metadata"]["name"] = "Not_A_Label"
    job["metadata"]["labels"]["team"] = "-bad-"
    job["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)  # the schema lets all of it through
    problems = "\n".join(job_problems(job))
    assert "Job name 'Not_A_Label' is not a DNS-1123 label" in problems
    assert "'-bad-' is not a valid label value" in problems
    assert "restartPolicy Never or OnFailure, got 'Always'" in problems
    assert "'lots' is not a Kubernetes quantity" in problems


@pytest.mark.parametrize(
    "text, value",
    [("500m", "0.5"), ("2", "2"), ("1Gi", str(2**30)), ("1.5k", "1500"), ("1e3", "1000"), ("0.5", "0.5")],
)
def test_quantities_parse_like_kubernetes(text, value):
    assert parse_quantity(text) == parse_quantity(value)


def test_shipped_rbac_manifests_are_valid():
    with open(os.path.join(REPO_ROOT, "config", "rbac-kubernetes-trainer.yaml")) as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if doc]
    assert {doc["kind"] for doc in documents} == {"ServiceAccount", "Role", "RoleBinding"}
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_container_is_told_its_termination_message_path_and_service_account_dir():
    container = manifests().job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRAINERKIT_TERMINATION_MESSAGE_PATH"] == container["terminationMessagePath"] == "/dev/termination-log"
    assert env["TRAINERKIT_SERVICE_ACCOUNT_DIR"] == "/var/run/secrets/kubernetes.io/serviceaccount"


# -- multi-node trainings (issue 16) -------------------------------------------------------


@pytest.mark.parametrize("keys", [{"image": "img:1"}, FULL], ids=["minimal", "full"])
def test_a_multi_node_training_is_an_indexed_job_and_a_headless_service_that_pass_the_schema(keys):
    built = manifests(make_config(**keys), resources=Resources(nodes=3, procs_per_node=2, gpus_per_proc=1))
    job, service = built.job, built.service
    assert_valid(job)
    assert indexed_job_problems(job) == []
    kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
    assert service_problems(service) == []
    training_id = job["metadata"]["name"]
    spec = job["spec"]
    retries = make_config(**keys).job_backoff_limit
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == ("Indexed", 3, 3, retries)
    # Without retries no pod is replaced; with them an evicted pod is, and the group restarts around it.
    assert [rule["action"] for rule in spec["podFailurePolicy"]["rules"]] == ["FailJob"] + (["Ignore"] if retries else [])
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == training_id
    assert service["spec"] == {"clusterIP": "None", "publishNotReadyAddresses": True,
                               "selector": {LABEL_TRAINING_ID: training_id}}
    assert service["metadata"]["labels"] == job["metadata"]["labels"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"  # procs_per_node x gpus_per_proc
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["MASTER_PORT"]) == ("6", "2", "29500")
    assert env["MASTER_ADDR"] == f"{training_id}-0.{training_id}"
    assert (env["TRAINERKIT_NODES"], env["TRAINERKIT_PROCS_PER_NODE"], env["TRAINERKIT_RENDEZVOUS_TIMEOUT"]) == ("3", "2", "600.0")
    if retries:  # the pods' launchers form a group on node 0's address, next to MASTER_PORT
        assert env["TRAINERKIT_GROUP_PORT"] == "29501"
        assert env["TRAINERKIT_POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    else:
        assert "TRAINERKIT_GROUP_PORT" not in env and "TRAINERKIT_POD_IP" not in env


def test_one_node_of_several_processes_meets_at_the_pods_own_address():
    built = manifests(make_config(image="img:1", master_port=1234), resources=Resources(procs_per_node=4))
    assert built.service is None and "completionMode" not in built.job["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in built.job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert (env["NODE_RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == ("0", "4", "1234")


def test_a_single_process_training_has_no_torchrun_environment_and_no_service():
    built = manifests()
    env = {e["name"] for e in built.job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert built.service is None and not env & {"RANK", "WORLD_SIZE", "MASTER_ADDR", "NODE_RANK"}
    assert [rule["action"] for rule in built.job["spec"]["podFailurePolicy"]["rules"]] == ["FailJob", "Ignore"]


def test_an_id_without_room_for_the_hostname_index_is_refused_before_sending():
    long_id = "cluster--" + "a" * 52  # 61 characters: "<id>-10" would be 64
    assert len(manifests(training_id=long_id, resources=Resources(nodes=10)).job["metadata"]["name"]) == 61
    with pytest.raises(ValueError, match=r"hostname '.*-10' would be 66 characters, .* the id of a training of 11 "
                                         r"nodes may take at most 60 characters \(choose an external_training_id 3 "
                                         r"characters shorter\)"):
        manifests(training_id=long_id + "aa", resources=Resources(nodes=11))


def test_service_names_must_start_with_a_letter():
    problems = service_problems({"metadata": {"name": "1abc"}, "spec": {}})
    assert problems == ["Service name '1abc' must start with a lowercase letter (a DNS-1035 label)"]
