"""Tests of the fake Kubernetes API server, driven through the real ``kubernetes`` client."""

from __future__ import annotations

import functools
import json
import os
import threading
import time

import kubernetes
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests import waiting
from tests.kube_fake import (
    FakeKubeCluster,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from tests.kube_fake.selectors import Requirement

NS = "ml"
PY = "python"


# --------------------------------------------------------------------------- helpers


class Kube:
    def __init__(self, cluster: FakeKubeCluster, config_file: str):
        self.cluster = cluster
        self.api_client = kubernetes.config.new_client_from_config(config_file=config_file, persist_config=False)
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def raw(self, fn, *args, **kwargs) -> dict:
        """Call a client method without model deserialisation and return the JSON body."""
        resp = fn(*args, _preload_content=False, **kwargs)
        try:
            return json.loads(resp.data)
        finally:
            resp.release_conn()


@pytest.fixture
def kube(fake_kube):
    k = Kube(fake_kube, fake_kube.kubeconfig_path)
    yield k
    k.close()


def make_job(name: str, command: list[str] | None = None, *, restart_policy: str = "Never",
             backoff_limit: int | None = 0, labels: dict | None = None, image: str = "python:3.12",
             env: list | None = None, env_from: list | None = None, volumes: list | None = None,
             mounts: list | None = None, **spec_kwargs) -> client.V1Job:
    container = client.V1Container(name="main", image=image, command=command or [PY, "-c", "pass"], env=env,
                                   env_from=env_from, volume_mounts=mounts)
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(restart_policy=restart_policy, containers=[container], volumes=volumes),
            ),
            **spec_kwargs,
        ),
    )


def has_condition(job, ctype: str) -> bool:
    return any(c.type == ctype and c.status == "True" for c in (job.status.conditions or []))


def condition(job, ctype: str):
    return next(c for c in job.status.conditions or [] if c.type == ctype)


def wait_job(k: Kube, name: str, pred, timeout: float = 20.0, ns: str = NS):
    """Wait on a watch (field-selected on the job name) until ``pred(job)`` holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        w = watch.Watch()
        remaining = max(1, int(deadline - time.monotonic()))
        for ev in w.stream(k.batch.list_namespaced_job, ns, field_selector=f"metadata.name={name}",
                           timeout_seconds=remaining):
            last = ev["object"]
            if ev["type"] != "DELETED" and pred(last):
                w.stop()
                return last
    raise AssertionError(f"timed out waiting for job {name}; last seen: {last}")


def wait_finished(k: Kube, name: str, timeout: float = 20.0, ns: str = NS):
    return wait_job(k, name, lambda j: has_condition(j, "Complete") or has_condition(j, "Failed"), timeout, ns)


def wait_pods(k: Kube, job_name: str, pred, timeout: float = 20.0, ns: str = NS) -> list:
    """Poll (with a deadline) the job's pods until ``pred(pods)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        pods = k.core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items
        if pred(pods):
            return pods
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for pods of {job_name}: "
                                 f"{[(p.metadata.name, p.status.phase) for p in pods]}")
        time.sleep(0.05)


def wait_running_pod(k: Kube, job_name: str, ns: str = NS):
    return wait_pods(k, job_name, lambda ps: any(p.status.phase == "Running" for p in ps), ns=ns)[0]


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


# These helpers read answers the way trainerkit's own client code does, so the
# tests hold with kubernetes 37+ (pydantic models) and 36 (classic models): 36's
# read_namespaced_pod_log returns str(bytes) ("b'hi\\n'") and its delete calls
# parse every answer as a V1Status, both fixed by _preload_content=False.


def pod_log(k: Kube, name: str, ns: str = NS, **params) -> str:
    return k.core.read_namespaced_pod_log(name, ns, _preload_content=False, **params).data.decode()


def answer_of(call, *args, **params) -> dict:
    return json.loads(call(*args, _preload_content=False, **params).data)


def raw_request(k: Kube, method: str, path: str, body: dict) -> tuple[int, dict]:
    """Sends ``body`` as it is (no client model checks it) with the kubeconfig's token."""
    cfg = k.api_client.configuration
    auth = cfg.auth_settings()["BearerToken"]
    headers = {"Content-Type": "application/json", "Accept": "application/json", auth["key"]: auth["value"]}
    try:
        resp = k.api_client.rest_client.request(method, cfg.host + path, headers=headers, body=body)
        resp.read()
    except ApiException as exc:
        return exc.status, json.loads(exc.body)
    return resp.status, json.loads(resp.data)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


wait_until = functools.partial(waiting.wait_until, timeout=10.0, interval=0.05)


# --------------------------------------------------------------------------- basics


def test_fixture_provides_started_cluster_and_kubeconfig(fake_kube):
    assert fake_kube.url.startswith("http://127.0.0.1:")
    assert os.path.exists(fake_kube.kubeconfig_path)
    with open(fake_kube.kubeconfig_path) as fh:
        cfg = json.load(fh)
    assert cfg["users"][0]["user"]["token"] == "test-token"
    assert cfg["contexts"][0]["context"]["namespace"] == "default"


def test_context_manager_and_custom_kubeconfig(tmp_path):
    with FakeKubeCluster(namespaces=("default", "team-a"), token="abc") as cluster:
        path = cluster.write_kubeconfig(tmp_path / "kc", context="other", namespace="team-a")
        api = kubernetes.config.new_client_from_config(config_file=path, persist_config=False)
        names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
        assert names == {"default", "team-a"}
        api.close()


def test_namespaces_get_list_and_404(kube):
    ns = kube.core.read_namespace(NS)
    assert ns.metadata.name == NS and ns.status.phase == "Active"
    listed = kube.core.list_namespace()
    assert {n.metadata.name for n in listed.items} == {"default", "ml"}
    assert int(listed.metadata.resource_version) > 0
    with pytest.raises(ApiException) as err:
        kube.core.read_namespace("nope")
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "nope" not found'


def test_job_create_get_list_delete(kube):
    created = kube.batch.create_namespaced_job(NS, make_job("train-1", suspend=True, labels={"app": "t"}))
    md = created.metadata
    assert md.uid and md.creation_timestamp and md.generation == 1 and int(md.resource_version) > 0
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": md.uid}
    tlabels = created.spec.template.metadata.labels
    assert tlabels["batch.kubernetes.io/controller-uid"] == md.uid
    assert tlabels["job-name"] == "train-1" and tlabels["batch.kubernetes.io/job-name"] == "train-1"
    assert created.spec.backoff_limit == 0 and created.spec.completions == 1 and created.spec.parallelism == 1

    got = kube.batch.read_namespaced_job("train-1", NS)
    assert got.metadata.uid == md.uid
    listed = kube.batch.list_namespaced_job(NS)
    assert [j.metadata.name for j in listed.items] == ["train-1"]
    assert int(listed.metadata.resource_version) >= int(got.metadata.resource_version)
    assert kube.batch.list_namespaced_job("default").items == []
    all_ns = kube.batch.list_job_for_all_namespaces()
    assert [j.metadata.namespace for j in all_ns.items] == [NS]

    result = answer_of(kube.batch.delete_namespaced_job, "train-1", NS, propagation_policy="Background")
    assert result["kind"] == "Status" and result["status"] == "Success"
    assert result["details"] == {"name": "train-1", "group": "batch", "kind": "jobs", "uid": md.uid}
    with pytest.raises(ApiException) as err:
        kube.batch.read_namespaced_job("train-1", NS)
    assert err.value.status == 404
    assert kube.cluster.jobs(NS) == {}


def test_resource_versions_are_global_and_monotonic(kube):
    rvs = []
    for i in range(3):
        rvs.append(int(kube.core.create_namespaced_config_map(
            NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{i}"))).metadata.resource_version))
    job = kube.batch.create_namespaced_job("default", make_job("j", suspend=True))
    rvs.append(int(job.metadata.resource_version))
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)


def test_duplicate_create_is_409(kube):
    kube.batch.create_namespaced_job(NS, make_job("dup", suspend=True))
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job(NS, make_job("dup", suspend=True))
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'jobs.batch "dup" already exists'
    assert body["details"] == {"name": "dup", "group": "batch", "kind": "jobs"}


def test_unknown_namespace_and_unknown_job_are_404(kube):
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job("nope", make_job("x"))
    assert err.value.status == 404
    body = status_of(err.value)
    assert body["reason"] == "NotFound" and body["message"] == 'namespaces "nope" not found'

    with pytest.raises(ApiException) as err:
        kube.batch.read_namespaced_job("ghost", NS)
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'jobs.batch "ghost" not found'
    with pytest.raises(ApiException) as err:
        kube.batch.delete_namespaced_job("ghost", NS)
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_pod_log("ghost", NS)
    assert err.value.status == 404 and status_of(err.value)["message"] == 'pods "ghost" not found'


@pytest.mark.parametrize("name, field", [
    ("Bad_Name", "metadata.name"),
    ("trailing-", "metadata.name"),
    ("x" * 64, "spec.template.labels"),
])
def test_invalid_job_name_is_422(kube, name, field):
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job(NS, make_job(name))
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid"
    assert body["message"].startswith(f'Job.batch "{name}" is invalid: ')
    assert field in [c["field"] for c in body["details"]["causes"]]
    assert body["details"]["kind"] == "Job" and body["details"]["group"] == "batch"


def test_restart_policy_always_and_missing_image_are_422(kube):
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job(NS, make_job("always", restart_policy="Always"))
    body = status_of(err.value)
    assert err.value.status == 422
    assert body["details"]["causes"] == [{
        "reason": "FieldValueNotSupported", "field": "spec.template.spec.restartPolicy",
        "message": 'Unsupported value: "Always": supported values: "OnFailure", "Never"'}]
    assert body["message"] == ('Job.batch "always" is invalid: spec.template.spec.restartPolicy: Unsupported '
                               'value: "Always": supported values: "OnFailure", "Never"')

    no_image = make_job("noimage")
    no_image.spec.template.spec.containers[0].image = None
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job(NS, no_image)
    causes = status_of(err.value)["details"]["causes"]
    assert {"reason": "FieldValueRequired", "message": "Required value",
            "field": "spec.template.spec.containers[0].image"} in causes

    # The client model refuses a container without a name, so send that one as a raw request.
    raw = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "noname", "labels": {"bad": "a b"}},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"image": "x"}]}}}}
    status, answer = raw_request(kube, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", raw)
    assert status == 422
    fields = {c["field"] for c in answer["details"]["causes"]}
    assert {"spec.template.spec.containers[0].name", "metadata.labels"} <= fields
    assert kube.cluster.jobs(NS) == {}


def test_wrong_or_missing_token_is_401(fake_kube, tmp_path):
    for token in ("wrong", None):
        path = fake_kube.write_kubeconfig(tmp_path / f"bad-{token}", token=token)
        api = kubernetes.config.new_client_from_config(config_file=path, persist_config=False)
        with pytest.raises(ApiException) as err:
            client.BatchV1Api(api).list_namespaced_job(NS)
        assert err.value.status == 401
        assert status_of(err.value)["reason"] == "Unauthorized"
        api.close()


def test_forbid_gives_rbac_style_403(kube):
    kube.cluster.forbid("create", "jobs", namespace=NS)
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job(NS, make_job("nope", suspend=True))
    assert err.value.status == 403
    body = status_of(err.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == ('jobs.batch is forbidden: User "system:serviceaccount:default:trainerkit" cannot '
                               'create resource "jobs" in API group "batch" in the namespace "ml"')
    kube.batch.create_namespaced_job("default", make_job("fine", suspend=True))  # other namespace allowed
    kube.batch.list_namespaced_job(NS)  # other verb allowed

    kube.cluster.forbid("get", "pods/log")
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_pod_log("whatever", "default")
    assert status_of(err.value)["message"] == (
        'pods "whatever" is forbidden: User "system:serviceaccount:default:trainerkit" cannot get resource '
        '"pods/log" in API group "" in the namespace "default"')

    kube.cluster.allow()
    kube.batch.create_namespaced_job(NS, make_job("now-ok", suspend=True))


def test_injected_errors_are_transient(kube):
    kube.cluster.inject_error("list", "jobs", 500, times=1)
    with pytest.raises(ApiException) as err:
        kube.batch.list_namespaced_job(NS)
    assert err.value.status == 500 and status_of(err.value)["reason"] == "InternalError"
    kube.batch.list_namespaced_job(NS)
    # 503 carries Retry-After, which urllib3 (under the kubernetes client) retries transparently
    kube.cluster.reset_requests()
    kube.cluster.inject_error("list", "jobs", 503, times=1)
    kube.batch.list_namespaced_job(NS)
    assert kube.cluster.request_count() == 2


def test_an_error_injected_after_a_create_answers_500_but_the_object_exists(kube):
    kube.cluster.inject_error("create", "configmaps", 500, after=True)
    with pytest.raises(ApiException) as err:
        kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "made"}, "data": {"a": "1"}})
    assert err.value.status == 500
    assert kube.cluster.configmaps(NS)["made"]["data"] == {"a": "1"}
    assert [f.kind for f in kube.cluster.served_faults] == ["500-after"]


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_an_injected_reset_drops_the_connection(kube, after):
    import urllib3

    kube.cluster.inject_reset("create", "configmaps", after=after)
    no_retries = urllib3.Retry(total=0, connect=0, read=0, status=0, redirect=0)
    with pytest.raises((urllib3.exceptions.ProtocolError, urllib3.exceptions.MaxRetryError)):
        kube.core.api_client.rest_client.pool_manager.request(
            "POST", f"{kube.cluster.url}/api/v1/namespaces/{NS}/configmaps",
            body=json.dumps({"metadata": {"name": "cut"}}),
            headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"},
            retries=no_retries,
        )
    assert ("cut" in kube.cluster.configmaps(NS)) is after
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "next"}})  # the server still serves


def test_injected_faults_hit_about_the_given_fraction_and_are_recorded(kube):
    kube.cluster.inject_faults(0.3, verb="list", resource="configmaps", faults=("500", "429"), retry_after=0)
    failed = 0
    for _ in range(200):
        try:
            kube.core.list_namespaced_config_map(NS, _preload_content=False, _request_timeout=5)
        except ApiException as exc:
            assert exc.status in (500, 429)
            failed += 1
    served = kube.cluster.served_faults
    assert 30 <= len(served) <= 90 and {f.kind for f in served} == {"500", "429"}
    assert failed >= 1
    kube.cluster.clear_injected_errors()
    kube.core.list_namespaced_config_map(NS)


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize("selector, labels, expected", [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a!=b", {"a": "c"}, True),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a in (x, y)", {"a": "y"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("a in (x)", {}, False),
    ("a notin (x)", {}, True),
    ("a notin (x,y)", {"a": "x"}, False),
    ("a", {"a": ""}, True),
    ("a", {"b": "1"}, False),
    ("!a", {"b": "1"}, True),
    ("!a", {"a": "1"}, False),
    ("a=b,c", {"a": "b", "c": "1"}, True),
    ("a=b, !c", {"a": "b", "c": "1"}, False),
    ("app.kubernetes.io/name=trainer,tier notin (db)", {"app.kubernetes.io/name": "trainer"}, True),
    ("a=", {"a": ""}, True),
    ("n>3", {"n": "4"}, True),
    ("n<3", {"n": "4"}, False),
    (" a = b , c in ( d ) ", {"a": "b", "c": "d"}, True),
])
def test_label_selector_parser_matches(selector, labels, expected):
    assert parse_label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize("selector", [
    "a in x", "a in (x", "a in ()", "a=b,", ",", "a b", "!", "a=b=c", "a===", "bad key=1", "a=(", "-a=1",
    "a=" + "v" * 64, "n>x", "a notin", "a,,b",
])
def test_label_selector_parser_rejects_malformed(selector):
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


_KEYS = st.sampled_from(["a", "b", "app.kubernetes.io/name", "x-y_z.1"])
_VALUES = st.sampled_from(["", "v1", "v2", "in", "x.y-z_0"])
_REQUIREMENTS = st.one_of(
    st.builds(Requirement, _KEYS, st.sampled_from(["exists", "!"])),
    st.builds(Requirement, _KEYS, st.sampled_from(["=", "==", "!="]), st.tuples(_VALUES)),
    st.builds(Requirement, _KEYS, st.sampled_from(["in", "notin"]),
              st.lists(_VALUES, min_size=1, max_size=3).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(reqs=st.lists(_REQUIREMENTS, min_size=1, max_size=4),
       labels=st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_label_selector_round_trips_through_its_string_form(reqs, labels):
    text = ",".join(str(r) for r in reqs)
    parsed = parse_label_selector(text)
    assert parsed.matches(labels) == all(r.matches(labels) for r in reqs)
    assert parse_label_selector(str(parsed)) == parsed or str(parse_label_selector(str(parsed))) == str(parsed)


def test_field_selector_parser():
    sel = parse_field_selector("metadata.name=a\\,b,status.phase!=Failed")
    assert sel.terms == (("metadata.name", "=", "a,b"), ("status.phase", "!=", "Failed"))
    with pytest.raises(SelectorError):
        parse_field_selector("nonsense")


def test_label_selectors_through_the_api(kube):
    specs = {"a": {"team": "vision", "tier": "gpu"}, "b": {"team": "nlp", "tier": "gpu"},
             "c": {"team": "nlp"}, "d": None}
    for name, labels in specs.items():
        kube.batch.create_namespaced_job(NS, make_job(f"sel-{name}", suspend=True, labels=labels))

    def names(selector: str) -> list[str]:
        return [j.metadata.name[4:] for j in kube.batch.list_namespaced_job(NS, label_selector=selector).items]

    assert names("team=nlp") == ["b", "c"]
    assert names("team==vision") == ["a"]
    assert names("team!=nlp") == ["a", "d"]
    assert names("team in (nlp,vision),tier") == ["a", "b"]
    assert names("team notin (nlp)") == ["a", "d"]
    assert names("!team") == ["d"]
    # a Job without labels of its own gets its template's (incl. the generated job-name) labels
    assert names("job-name=sel-d") == ["d"]
    assert names("job-name") == ["d"]
    assert [j.metadata.name for j in kube.batch.list_namespaced_job(
        NS, field_selector="metadata.name=sel-b").items] == ["sel-b"]
    with pytest.raises(ApiException) as err:
        kube.batch.list_namespaced_job(NS, label_selector="team in nlp")
    assert err.value.status == 400 and status_of(err.value)["reason"] == "BadRequest"
    with pytest.raises(ApiException) as err:
        kube.batch.list_namespaced_job(NS, field_selector="spec.parallelism=1")
    assert err.value.status == 400
    assert status_of(err.value)["message"] == "field label not supported: spec.parallelism"


def test_list_pagination(kube):
    for i in range(5):
        kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"p{i}")))
    first = kube.core.list_namespaced_config_map(NS, limit=2)
    assert [c.metadata.name for c in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    second = kube.core.list_namespaced_config_map(NS, limit=2, _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["p2", "p3"]
    third = kube.core.list_namespaced_config_map(NS, limit=2, _continue=second.metadata._continue)
    assert [c.metadata.name for c in third.items] == ["p4"] and not third.metadata._continue


# --------------------------------------------------------------------------- watches


def test_watch_with_timeout_seconds_ends(kube):
    start = time.monotonic()
    events = list(watch.Watch().stream(kube.batch.list_namespaced_job, NS, timeout_seconds=1))
    elapsed = time.monotonic() - start
    assert events == []
    assert 0.9 <= elapsed < 4


def test_watch_streams_live_events(kube):
    seen: list[tuple[str, str]] = []
    rv = kube.core.list_namespaced_config_map(NS).metadata.resource_version
    first_event = threading.Event()

    def consume():
        w = watch.Watch()
        for ev in w.stream(kube.core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            first_event.set()
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="live")))
    assert first_event.wait(10)  # delivered while the watch is open, before the next change exists
    kube.core.patch_namespaced_config_map("live", NS, {"data": {"k": "v"}})
    kube.core.delete_namespaced_config_map("live", NS)
    t.join(10)
    assert not t.is_alive()
    assert seen == [("ADDED", "live"), ("MODIFIED", "live"), ("DELETED", "live")]


def test_watch_from_resource_version_replays(kube):
    first = kube.batch.create_namespaced_job(NS, make_job("r-a", suspend=True))
    rv = first.metadata.resource_version
    kube.batch.create_namespaced_job(NS, make_job("r-b", suspend=True))
    kube.batch.create_namespaced_job(NS, make_job("r-c", suspend=True))
    events = list(watch.Watch().stream(kube.batch.list_namespaced_job, NS, resource_version=rv, timeout_seconds=1))
    added = [e["object"].metadata.name for e in events if e["type"] == "ADDED"]
    assert added == ["r-b", "r-c"]
    assert all(int(e["object"].metadata.resource_version) > int(rv) for e in events)
    # without a resourceVersion the watch starts with the current state as ADDED events
    events = list(watch.Watch().stream(kube.batch.list_namespaced_job, NS, timeout_seconds=1))
    assert sorted(e["object"].metadata.name for e in events if e["type"] == "ADDED") == ["r-a", "r-b", "r-c"]


def test_watch_410_gone_after_compact(kube):
    old = kube.batch.create_namespaced_job(NS, make_job("g-a", suspend=True)).metadata.resource_version
    kube.batch.create_namespaced_job(NS, make_job("g-b", suspend=True))
    kube.cluster.compact()
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(kube.batch.list_namespaced_job, NS, resource_version=old, timeout_seconds=2))
    assert err.value.status == 410
    assert "Expired" in err.value.reason and "too old resource version" in err.value.reason
    # the raw stream carries an ERROR event with a Status object
    resp = kube.batch.list_namespaced_job(NS, watch=True, resource_version=old, timeout_seconds=1,
                                          _preload_content=False)
    line = json.loads(resp.data.splitlines()[0])
    assert line["type"] == "ERROR"
    assert line["object"]["kind"] == "Status" and line["object"]["code"] == 410
    assert line["object"]["reason"] == "Expired"
    # a fresh list + watch from its resourceVersion works again
    rv = kube.batch.list_namespaced_job(NS).metadata.resource_version
    assert list(watch.Watch().stream(kube.batch.list_namespaced_job, NS, resource_version=rv,
                                     timeout_seconds=1)) == []


def test_watch_label_selector_reports_objects_leaving_the_selection(kube):
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="w", labels={"sel": "yes"})))
    rv = kube.core.list_namespaced_config_map(NS).metadata.resource_version
    kube.core.patch_namespaced_config_map("w", NS, {"metadata": {"labels": {"sel": "no"}}})
    kube.core.patch_namespaced_config_map("w", NS, {"metadata": {"labels": {"sel": "yes"}}})
    events = list(watch.Watch().stream(kube.core.list_namespaced_config_map, NS, label_selector="sel=yes",
                                       resource_version=rv, timeout_seconds=1))
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


# --------------------------------------------------------------------------- job controller + kubelet


def test_job_runs_to_completion_and_logs_are_readable(kube):
    kube.batch.create_namespaced_job(NS, make_job("hello", [PY, "-c", "print('hi'); import sys; sys.exit(0)"]))
    job = wait_finished(kube, "hello")
    assert has_condition(job, "Complete") and has_condition(job, "SuccessCriteriaMet")
    assert job.status.succeeded == 1 and not job.status.failed and not job.status.active
    assert job.status.start_time and job.status.completion_time
    pods = kube.core.list_namespaced_pod(NS, label_selector="job-name=hello").items
    assert len(pods) == 1
    pod = pods[0]
    assert pod.metadata.name.startswith("hello-") and len(pod.metadata.name) == len("hello-") + 5
    assert pod.metadata.owner_references[0].uid == job.metadata.uid
    assert pod.metadata.owner_references[0].kind == "Job" and pod.metadata.owner_references[0].controller
    assert pod.metadata.labels["batch.kubernetes.io/controller-uid"] == job.metadata.uid
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"
    log_text = pod_log(kube, pod.metadata.name)
    assert log_text == "hi\n"
    assert pod_log(kube, pod.metadata.name, container="main", tail_lines=1) == "hi\n"
    reasons = {e.reason for e in kube.core.list_namespaced_event(NS).items}
    assert {"SuccessfulCreate", "Scheduled", "Started", "Completed"} <= reasons


def test_objects_match_the_kubernetes_openapi_schema(kube):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kube.batch.create_namespaced_job(NS, make_job("schema", [PY, "-c", "print(1)"], ttl_seconds_after_finished=60))
    wait_finished(kube, "schema")
    job = kube.raw(kube.batch.read_namespaced_job, "schema", NS)
    pod_list = kube.raw(kube.core.list_namespaced_pod, NS)
    pod = dict(pod_list["items"][0], apiVersion="v1", kind="Pod")
    for obj in (job, pod):
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    assert "kind" not in pod_list["items"][0]  # list items carry no TypeMeta, like the real server
    assert job["status"]["ready"] == 0 and job["status"]["terminating"] == 0
    assert "failed" not in job["status"]  # zero counters are omitted (omitempty)


def test_failing_job_retries_until_backoff_limit(kube):
    kube.batch.create_namespaced_job(NS, make_job("flaky", [PY, "-c", "import sys; print('boom'); sys.exit(3)"],
                                                  backoff_limit=2))
    job = wait_finished(kube, "flaky")
    assert has_condition(job, "Failed") and not has_condition(job, "Complete")
    failed = condition(job, "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert failed.message == "Job has reached the specified backoff limit"
    assert has_condition(job, "FailureTarget")
    assert job.status.failed == 3 and not job.status.succeeded
    pods = kube.core.list_namespaced_pod(NS, label_selector="job-name=flaky").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Failed"
        term = pod.status.container_statuses[0].state.terminated
        assert term.exit_code == 3 and term.reason == "Error"
        assert pod_log(kube, pod.metadata.name) == "boom\n"


def test_on_failure_restarts_in_place_and_counts_towards_backoff(kube):
    kube.batch.create_namespaced_job(NS, make_job("restarts", [PY, "-c", "raise SystemExit(1)"],
                                                  restart_policy="OnFailure", backoff_limit=2))
    job = wait_finished(kube, "restarts")
    assert condition(job, "Failed").reason == "BackoffLimitExceeded"


def test_pod_failure_policy_fail_job(kube):
    job = make_job("pfp", [PY, "-c", "raise SystemExit(42)"], backoff_limit=5)
    job.spec.pod_failure_policy = client.V1PodFailurePolicy(rules=[client.V1PodFailurePolicyRule(
        action="FailJob", on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
            operator="In", values=[42]))])
    kube.batch.create_namespaced_job(NS, job)
    done = wait_finished(kube, "pfp")
    cond = condition(done, "Failed")
    assert cond.reason == "PodFailurePolicy" and "exit code 42" in cond.message
    assert done.status.failed == 1


def test_active_deadline_kills_sleeping_pod(kube):
    kube.batch.create_namespaced_job(NS, make_job("slow", ["sleep", "30"], active_deadline_seconds=1))
    pod = wait_running_pod(kube, "slow")
    pid = kube.cluster.pod_pid(NS, pod.metadata.name)
    assert pid and pid_alive(pid)
    start = time.monotonic()
    job = wait_finished(kube, "slow", timeout=10)
    assert time.monotonic() - start < 6
    cond = condition(job, "Failed")
    assert cond.reason == "DeadlineExceeded"
    assert cond.message == "Job was active longer than specified deadline"
    wait_until(lambda: not pid_alive(pid), what="pod process to die")
    wait_pods(kube, "slow", lambda ps: not ps)  # active pods are deleted
    assert kube.batch.read_namespaced_job("slow", NS).status.failed == 1


def test_termination_message_round_trip(kube):
    # The path is rewritten wherever it appears in command, args or env (a pod reads it as written).
    script = ("import os; open('/dev/termination-log', 'w').write('loss=0.25'); "
              "print(os.path.isfile(os.environ['MESSAGE']))")
    message_env = [client.V1EnvVar(name="MESSAGE", value="/dev/termination-log")]
    kube.batch.create_namespaced_job(NS, make_job("tm", [PY, "-c", script], env=message_env))
    long_script = "import os; open(os.environ['MESSAGE'], 'w').write('x' * 5000)"
    kube.batch.create_namespaced_job(NS, make_job("tm-long", [PY, "-c", long_script], env=message_env))
    custom = make_job("tm-custom", [PY, "-c", "import sys; open('/var/run/msg', 'w').write('custom'); sys.exit(2)"])
    custom.spec.template.spec.containers[0].termination_message_path = "/var/run/msg"
    kube.batch.create_namespaced_job(NS, custom)
    fallback = make_job("tm-fallback", [PY, "-c", "import sys; print('traceback here'); sys.exit(1)"])
    fallback.spec.template.spec.containers[0].termination_message_policy = "FallbackToLogsOnError"
    kube.batch.create_namespaced_job(NS, fallback)

    def message(job_name: str) -> str:
        wait_finished(kube, job_name)
        pod = kube.core.list_namespaced_pod(NS, label_selector=f"job-name={job_name}").items[0]
        return pod.status.container_statuses[0].state.terminated.message

    assert message("tm") == "loss=0.25"
    assert message("tm-long") == "x" * 4096
    assert message("tm-custom") == "custom"
    assert message("tm-fallback") == "traceback here\n"
    pod = kube.core.list_namespaced_pod(NS, label_selector="job-name=tm").items[0]
    assert pod_log(kube, pod.metadata.name) == "True\n"


def test_env_configmap_and_secret_resolution(kube):
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="hparams"), data={"lr": "0.1", "epochs": "3", "cfg.yaml": "a: 1\n"}))
    kube.core.create_namespaced_secret(NS, client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"), string_data={"token": "s3cret"}))
    env = [
        client.V1EnvVar(name="A", value="1"),
        client.V1EnvVar(name="B", value="$(A)-x"),
        client.V1EnvVar(name="LR", value_from=client.V1EnvVarSource(
            config_map_key_ref=client.V1ConfigMapKeySelector(name="hparams", key="lr"))),
        client.V1EnvVar(name="TOKEN", value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name="creds", key="token"))),
        client.V1EnvVar(name="POD", value_from=client.V1EnvVarSource(
            field_ref=client.V1ObjectFieldSelector(field_path="metadata.name"))),
        client.V1EnvVar(name="CFG", value="/etc/trainer/cfg.yaml"),
    ]
    env_from = [client.V1EnvFromSource(prefix="HP_", config_map_ref=client.V1ConfigMapEnvSource(name="hparams")),
                client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="creds"))]
    volumes = [client.V1Volume(name="cfg", config_map=client.V1ConfigMapVolumeSource(name="hparams")),
               client.V1Volume(name="data", empty_dir=client.V1EmptyDirVolumeSource())]
    mounts = [client.V1VolumeMount(name="cfg", mount_path="/etc/trainer"),
              client.V1VolumeMount(name="data", mount_path="/data")]
    script = ("import json, os; e = os.environ; "
              "print(json.dumps({k: e.get(k) for k in ['A', 'B', 'LR', 'TOKEN', 'POD', 'HP_epochs', 'token', "
              "'HOSTNAME']} | {'file': open(e['CFG']).read(), 'arg': open('/etc/trainer/lr').read()}))")
    kube.batch.create_namespaced_job(NS, make_job("envy", [PY, "-c", script], env=env, env_from=env_from,
                                                  volumes=volumes, mounts=mounts))
    job = wait_finished(kube, "envy")
    assert has_condition(job, "Complete"), job.status
    pod = kube.core.list_namespaced_pod(NS, label_selector="job-name=envy").items[0]
    out = json.loads(pod_log(kube, pod.metadata.name))
    assert out == {"A": "1", "B": "1-x", "LR": "0.1", "TOKEN": "s3cret", "POD": pod.metadata.name,
                   "HP_epochs": "3", "token": "s3cret", "HOSTNAME": pod.metadata.name, "file": "a: 1\n",
                   "arg": "0.1"}


def test_missing_configmap_gives_create_container_config_error(kube):
    env = [client.V1EnvVar(name="X", value_from=client.V1EnvVarSource(
        config_map_key_ref=client.V1ConfigMapKeySelector(name="later", key="x")))]
    kube.batch.create_namespaced_job(NS, make_job("waits", [PY, "-c", "import os; print(os.environ['X'])"],
                                                  env=env))

    def waiting(pods):
        st = pods and pods[0].status.container_statuses
        return st and st[0].state.waiting and st[0].state.waiting.reason == "CreateContainerConfigError"
    pods = wait_pods(kube, "waits", waiting)
    assert pods[0].status.container_statuses[0].state.waiting.message == 'configmap "later" not found'
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_pod_log(pods[0].metadata.name, NS)
    assert err.value.status == 400
    assert "is waiting to start: CreateContainerConfigError" in status_of(err.value)["message"]
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="later"),
                                                                  data={"x": "arrived"}))
    assert has_condition(wait_finished(kube, "waits"), "Complete")
    assert pod_log(kube, pods[0].metadata.name) == "arrived\n"


def test_delete_background_removes_pods_and_owned_configmap(kube):
    job = kube.batch.create_namespaced_job(NS, make_job("bg", ["sleep", "30"]))
    pod = wait_running_pod(kube, "bg")
    pid = kube.cluster.pod_pid(NS, pod.metadata.name)
    assert pid_alive(pid)
    owner = client.V1OwnerReference(api_version="batch/v1", kind="Job", name="bg", uid=job.metadata.uid)
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="bg-config", owner_references=[owner]), data={"k": "v"}))
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="unowned")))
    status = answer_of(kube.batch.delete_namespaced_job, "bg", NS, propagation_policy="Background")
    assert status["status"] == "Success"
    wait_until(lambda: not kube.core.list_namespaced_pod(NS, label_selector="job-name=bg").items,
               what="pods to be deleted")
    assert not pid_alive(pid)
    names = [c.metadata.name for c in kube.core.list_namespaced_config_map(NS).items]
    assert names == ["unowned"]


def test_delete_orphan_keeps_dependants_and_foreground_waits_for_them(kube):
    kube.batch.create_namespaced_job(NS, make_job("orph", ["sleep", "30"]))
    pod = wait_running_pod(kube, "orph")
    resp = kube.batch.delete_namespaced_job_with_http_info("orph", NS)  # batch/v1 default: Orphan + warning
    assert "child pods are preserved" in resp[2]["Warning"]
    still = kube.core.read_namespaced_pod(pod.metadata.name, NS)
    assert still.status.phase == "Running" and not still.metadata.owner_references
    kube.core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
    wait_until(lambda: not kube.cluster.pods(NS), what="orphaned pod deletion")

    kube.batch.create_namespaced_job(NS, make_job("fg", ["sleep", "30"]))
    wait_running_pod(kube, "fg")
    obj = answer_of(kube.batch.delete_namespaced_job, "fg", NS, propagation_policy="Foreground")
    assert obj["metadata"]["deletionTimestamp"] and obj["metadata"]["finalizers"] == ["foregroundDeletion"]
    wait_until(lambda: not kube.cluster.jobs(NS) and not kube.cluster.pods(NS), what="foreground deletion")


def test_follow_logs_streams_until_container_exits(kube, tmp_path):
    gate = tmp_path / "go"
    script = ("import os, time\nprint('line 0', flush=True)\n"
              f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\nprint('line 1', flush=True)\n")
    kube.batch.create_namespaced_job(NS, make_job("chatty", [PY, "-c", script]))
    pod = wait_running_pod(kube, "chatty")
    lines = []
    stream = kube.core.read_namespaced_pod_log(pod.metadata.name, NS, follow=True, _preload_content=False)
    for raw_line in stream:
        line = raw_line.decode().rstrip("\n")
        lines.append(line)
        if line == "line 0":
            gate.touch()  # 'line 1' is printed only after 'line 0' came through the open stream
    assert lines == ["line 0", "line 1"]  # and the stream ended when the process exited
    # like a real kubelet, the stream ends when the container exits; the pod status follows shortly
    wait_pods(kube, "chatty", lambda ps: ps[0].status.phase == "Succeeded")
    resp = kube.core.read_namespaced_pod_log(pod.metadata.name, NS, follow=True, _preload_content=False)
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.data.decode() == "line 0\nline 1\n"
    assert pod_log(kube, pod.metadata.name, tail_lines=1, limit_bytes=4) == "line"


def test_suspend_kills_pod_and_resume_restarts(kube):
    kube.batch.create_namespaced_job(NS, make_job("pausable", ["sleep", "30"]))
    pod = wait_running_pod(kube, "pausable")
    pid = kube.cluster.pod_pid(NS, pod.metadata.name)
    patched = kube.batch.patch_namespaced_job("pausable", NS, {"spec": {"suspend": True}})
    assert patched.spec.suspend is True and patched.metadata.generation == 2
    job = wait_job(kube, "pausable", lambda j: has_condition(j, "Suspended") and not j.status.active)
    assert condition(job, "Suspended").reason == "JobSuspended"
    assert job.status.start_time is None
    wait_until(lambda: not pid_alive(pid), what="suspended pod process to die")
    wait_pods(kube, "pausable", lambda ps: not ps)
    assert not job.status.failed  # suspension is not a failure

    kube.batch.patch_namespaced_job("pausable", NS, {"spec": {"suspend": False}})
    job = wait_job(kube, "pausable", lambda j: (j.status.active or 0) == 1)
    assert condition(job, "Suspended").status == "False" and condition(job, "Suspended").reason == "JobResumed"
    wait_running_pod(kube, "pausable")


def test_created_suspended_job_has_no_pods(kube):
    kube.batch.create_namespaced_job(NS, make_job("idle", ["sleep", "30"], suspend=True))
    job = wait_job(kube, "idle", lambda j: has_condition(j, "Suspended"))
    assert not job.status.active
    assert kube.cluster.pods(NS) == {}


def test_unschedulable_pods_stay_pending(kube):
    kube.cluster.set_unschedulable(True)
    kube.batch.create_namespaced_job(NS, make_job("pending", [PY, "-c", "print('scheduled')"]))

    def unschedulable(pods):
        conds = pods and pods[0].status.conditions or []
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable" for c in conds)
    pods = wait_pods(kube, "pending", unschedulable)
    assert pods[0].status.phase == "Pending" and not pods[0].spec.node_name
    events = kube.core.list_namespaced_event(NS, field_selector="reason=FailedScheduling").items
    assert events and events[0].involved_object.name == pods[0].metadata.name
    kube.cluster.set_unschedulable(False)
    assert has_condition(wait_finished(kube, "pending"), "Complete")


def test_image_pull_failure_never_runs(kube):
    kube.batch.create_namespaced_job(NS, make_job("badimg", [PY, "-c", "print(1)"],
                                                  image="registry.example/does-not-exist:1"))

    def backoff(pods):
        st = pods and pods[0].status.container_statuses
        return st and st[0].state.waiting and st[0].state.waiting.reason == "ImagePullBackOff"
    pods = wait_pods(kube, "badimg", backoff)
    assert pods[0].status.phase == "Pending"
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_pod_log(pods[0].metadata.name, NS)
    assert err.value.status == 400 and "trying and failing to pull image" in status_of(err.value)["message"]


def test_ttl_seconds_after_finished_deletes_job_and_pods(kube):
    kube.batch.create_namespaced_job(NS, make_job("ephemeral", [PY, "-c", "pass"], ttl_seconds_after_finished=0))
    wait_until(lambda: not kube.cluster.jobs(NS) and not kube.cluster.pods(NS), what="ttl deletion")


def test_indexed_job_sets_completion_index(kube):
    kube.batch.create_namespaced_job(NS, make_job(
        "indexed", [PY, "-c", "import os; print(os.environ['JOB_COMPLETION_INDEX'])"], completions=3,
        parallelism=3, completion_mode="Indexed"))
    job = wait_finished(kube, "indexed")
    assert has_condition(job, "Complete") and job.status.succeeded == 3
    assert job.status.completed_indexes == "0-2"
    pods = kube.core.list_namespaced_pod(NS, label_selector="job-name=indexed").items
    logs = sorted(pod_log(kube, p.metadata.name).strip() for p in pods)
    assert logs == ["0", "1", "2"]


# --------------------------------------------------------------------------- updates


def test_patch_replace_and_conflicts(kube):
    kube.batch.create_namespaced_job(NS, make_job("mut", suspend=True))
    wait_job(kube, "mut", lambda j: has_condition(j, "Suspended"))  # the controller's last write
    labelled = kube.batch.patch_namespaced_job("mut", NS, {"metadata": {"labels": {"stage": "one"}}})
    assert labelled.metadata.labels["stage"] == "one" and labelled.metadata.generation == 1
    stale = kube.batch.read_namespaced_job("mut", NS)
    kube.batch.patch_namespaced_job("mut", NS, [{"op": "replace", "path": "/spec/parallelism", "value": 2}])
    assert kube.batch.read_namespaced_job("mut", NS).metadata.generation == 2
    stale.metadata.labels["stage"] = "two"
    with pytest.raises(ApiException) as err:
        kube.batch.replace_namespaced_job("mut", NS, stale)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as err:
        kube.batch.patch_namespaced_job("mut", NS, {"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}})
    assert err.value.status == 422 and "field is immutable" in status_of(err.value)["message"]
    fresh = kube.batch.read_namespaced_job("mut", NS)
    fresh.metadata.labels["stage"] = "three"
    assert kube.batch.replace_namespaced_job("mut", NS, fresh).metadata.labels["stage"] == "three"
    status = kube.batch.read_namespaced_job_status("mut", NS)
    assert status.metadata.name == "mut" and has_condition(status, "Suspended")


def test_configmap_and_secret_crud(kube):
    kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"),
                                                                  data={"a": "1"}))
    assert kube.core.read_namespaced_config_map("c", NS).data == {"a": "1"}
    sec = kube.core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s"),
                                                                 string_data={"pw": "x"}))
    assert sec.data == {"pw": "eA=="} and sec.type == "Opaque" and sec.string_data is None
    with pytest.raises(ApiException) as err:
        kube.core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    assert status_of(err.value)["message"] == 'configmaps "c" already exists'
    kube.core.delete_namespaced_config_map("c", NS)
    kube.core.delete_namespaced_secret("s", NS)
    assert kube.cluster.configmaps(NS) == {} and kube.cluster.secrets(NS) == {}


def test_concurrent_requests_and_request_counting(kube):
    kube.cluster.reset_requests()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                kube.core.create_namespaced_config_map(
                    NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c-{n}-{i}")))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    items = kube.core.list_namespaced_config_map(NS).items
    assert len(items) == 90
    assert len({c.metadata.resource_version for c in items}) == 90
    assert kube.cluster.request_count() == 91
    assert kube.cluster.requests.count("POST", f"/api/v1/namespaces/{NS}/configmaps") == 90
    assert ("GET", f"/api/v1/namespaces/{NS}/configmaps") in list(kube.cluster.requests)


# --------------------------------------------------------------------------- cluster-level behaviour


def test_stop_kills_running_pod_processes(tmp_path):
    cluster = FakeKubeCluster(namespaces=(NS,))
    k = Kube(cluster, cluster.write_kubeconfig(tmp_path / "kc"))
    try:
        k.batch.create_namespaced_job(NS, make_job("forever", ["sleep", "60"]))
        pod = wait_running_pod(k, "forever")
        pid = cluster.pod_pid(NS, pod.metadata.name)
        assert pid_alive(pid)
    finally:
        k.close()
        cluster.stop()
    assert not pid_alive(pid)
    cluster.stop()  # idempotent


def test_simulated_pods_without_processes(fake_kube_factory):
    cluster = fake_kube_factory(run_pods=False)
    k = Kube(cluster, cluster.kubeconfig_path)
    k.batch.create_namespaced_job(NS, make_job("sim", ["train"]))
    pod = wait_running_pod(k, "sim")
    cluster.finish_pod(NS, pod.metadata.name, exit_code=0, logs="epoch 1\n", message="ok")
    job = wait_finished(k, "sim")
    assert has_condition(job, "Complete")
    assert pod_log(k, pod.metadata.name) == "epoch 1\n"
    done = k.core.read_namespaced_pod(pod.metadata.name, NS)
    assert done.status.container_statuses[0].state.terminated.message == "ok"
    k.close()


# --------------------------------------------------------------------------- pods, kill semantics, misc


def test_pod_delete_escalates_sigterm_to_sigkill(kube):
    stubborn = ("import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))\n"
                "print('ready', flush=True)\n"
                "while True: time.sleep(0.05)\n")
    polite = ("import signal, sys, time\n"
              "def bye(*a):\n    print('got SIGTERM', flush=True); sys.exit(143)\n"
              "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\nwhile True: time.sleep(0.05)\n")
    for name, script in (("stubborn", stubborn), ("polite", polite)):
        job = make_job(name, [PY, "-c", script])
        job.spec.template.spec.termination_grace_period_seconds = 1
        kube.batch.create_namespaced_job(NS, job)
    results = {}
    for name in ("stubborn", "polite"):
        pod = wait_running_pod(kube, name)
        wait_until(lambda: kube.cluster.logs(NS, pod.metadata.name).startswith("ready"), what="handler installed")
        w = watch.Watch()
        last = None
        deleted = kube.core.delete_namespaced_pod(pod.metadata.name, NS)
        assert deleted.metadata.deletion_timestamp is not None and deleted.metadata.deletion_grace_period_seconds == 1
        for ev in w.stream(kube.core.list_namespaced_pod, NS, field_selector=f"metadata.name={pod.metadata.name}",
                           resource_version=deleted.metadata.resource_version, timeout_seconds=10):
            last = ev
            if ev["type"] == "DELETED":
                w.stop()
        assert last["type"] == "DELETED"
        results[name] = (last["object"].status.container_statuses[0].state.terminated.exit_code,
                         kube.cluster.events(NS))
    assert results["stubborn"][0] == 137  # SIGKILL after the grace period
    assert results["polite"][0] == 143


def test_bare_pod_lifecycle(kube):
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="bare", labels={"kind": "bare"}), spec=client.V1PodSpec(
        restart_policy="Never", containers=[client.V1Container(name="c", image="busybox",
                                                               command=["sh", "-c", "echo from-shell"])]))
    created = kube.core.create_namespaced_pod(NS, pod)
    assert created.status.phase == "Pending"
    wait_until(lambda: kube.core.read_namespaced_pod("bare", NS).status.phase == "Succeeded", what="bare pod")
    assert pod_log(kube, "bare") == "from-shell\n"
    assert [p.metadata.name for p in kube.core.list_namespaced_pod(NS, label_selector="kind=bare").items] == ["bare"]
    assert [p.metadata.name for p in kube.core.list_namespaced_pod(
        NS, field_selector="status.phase=Succeeded").items] == ["bare"]
    gone = kube.core.delete_namespaced_pod("bare", NS)
    assert gone.metadata.name == "bare"  # pods return the object, not a Status
    assert kube.cluster.pods(NS) == {}


def test_missing_executable_is_start_error(kube):
    kube.batch.create_namespaced_job(NS, make_job("noexec", ["definitely-not-a-binary-xyz"]))
    job = wait_finished(kube, "noexec")
    assert condition(job, "Failed").reason == "BackoffLimitExceeded"
    pod = kube.core.list_namespaced_pod(NS, label_selector="job-name=noexec").items[0]
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 128 and term.reason == "StartError" and "definitely-not-a-binary-xyz" in term.message


def test_delete_collection_and_cluster_helpers(kube):
    for name, team in (("dc-a", "x"), ("dc-b", "x"), ("dc-c", "y")):
        kube.batch.create_namespaced_job(NS, make_job(name, suspend=True, labels={"team": team}))
    status = kube.batch.delete_collection_namespaced_job(NS, label_selector="team=x", propagation_policy="Background")
    assert status.status == "Success"
    assert sorted(kube.cluster.jobs(NS)) == ["dc-c"]
    kube.batch.patch_namespaced_job("dc-c", NS, {"spec": {"suspend": False}})
    done = kube.cluster.wait_for_job_finished(NS, "dc-c", timeout=10)
    assert any(c["type"] == "Complete" for c in done["status"]["conditions"])
    assert any(e["reason"] == "SuccessfulCreate" for e in kube.cluster.events(NS))
    assert kube.core.list_namespaced_event(NS, field_selector="involvedObject.name=dc-c").items


def test_patch_module_semantics():
    from tests.kube_fake.patch import json_patch, merge_patch, strategic_merge_patch

    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2], "containers": [{"name": "x", "image": "1"}, {"name": "y"}]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3}, "l": [3], "containers": doc["containers"]}
    smp = strategic_merge_patch(doc, {"containers": [{"name": "x", "image": "2"}, {"name": "z"}]})
    assert smp["containers"] == [{"name": "x", "image": "2"}, {"name": "y"}, {"name": "z"}]
    smp = strategic_merge_patch(doc, {"containers": [{"name": "y", "$patch": "delete"}]})
    assert smp["containers"] == [{"name": "x", "image": "1"}]
    assert json_patch(doc, [{"op": "add", "path": "/l/-", "value": 9}, {"op": "remove", "path": "/a/b"},
                            {"op": "test", "path": "/a/c", "value": 2}])["l"] == [1, 2, 9]
    assert doc["l"] == [1, 2]  # inputs are never mutated


def test_pod_can_call_back_into_the_api_like_an_in_cluster_client(kube):
    # As in a real pod: the address from KUBERNETES_SERVICE_HOST/PORT, over HTTPS checked
    # against the service account's ca.crt, with its token.
    script = (
        "import json, os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "url = ('https://' + os.environ['KUBERNETES_SERVICE_HOST'] + ':' + os.environ['KUBERNETES_SERVICE_PORT'] +"
        " '/api/v1/namespaces/' + os.environ['NS'] + '/pods/' + os.environ['POD'])\n"
        "token = open(sa + '/token').read()\n"
        "assert open(sa + '/namespace').read() == os.environ['NS']\n"
        "tls = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "body = json.dumps({'metadata': {'annotations': {'progress': '50%'}}}).encode()\n"
        "req = urllib.request.Request(url, data=body, method='PATCH', headers={'Authorization': 'Bearer ' + token,"
        " 'Content-Type': 'application/merge-patch+json'})\n"
        "print(json.load(urllib.request.urlopen(req, context=tls))['metadata']['annotations']['progress'])\n"
    )
    env = [client.V1EnvVar(name="POD", value_from=client.V1EnvVarSource(
               field_ref=client.V1ObjectFieldSelector(field_path="metadata.name"))),
           client.V1EnvVar(name="NS", value_from=client.V1EnvVarSource(
               field_ref=client.V1ObjectFieldSelector(field_path="metadata.namespace")))]
    kube.batch.create_namespaced_job(NS, make_job("callback", [PY, "-c", script], env=env))
    job = wait_finished(kube, "callback")
    pod = kube.core.list_namespaced_pod(NS, label_selector="job-name=callback").items[0]
    assert has_condition(job, "Complete"), pod_log(kube, pod.metadata.name)
    assert pod.metadata.annotations == {"progress": "50%"}
    assert pod_log(kube, pod.metadata.name) == "50%\n"
    assert kube.cluster.in_cluster_requests.count("PATCH", f"/api/v1/namespaces/{NS}/pods/") == 1


def test_merge_patch_with_stale_resource_version_conflicts(kube):
    job = kube.batch.create_namespaced_job(NS, make_job("cancel-me", ["sleep", "30"]))
    stale_rv = job.metadata.resource_version
    wait_job(kube, "cancel-me", lambda j: j.status.start_time is not None)  # the controller changed it
    patch = {"metadata": {"resourceVersion": stale_rv, "annotations": {"canceled": "yes"}}, "spec": {"suspend": True}}
    with pytest.raises(ApiException) as err:
        kube.batch.patch_namespaced_job("cancel-me", NS, patch, _content_type="application/merge-patch+json")
    assert err.value.status == 409
    assert status_of(err.value)["message"] == (
        'Operation cannot be fulfilled on jobs.batch "cancel-me": the object has been modified; please apply '
        'your changes to the latest version and try again')
    for _attempt in range(20):  # the controller keeps writing status: re-read and retry on 409, as clients must
        patch["metadata"]["resourceVersion"] = kube.batch.read_namespaced_job("cancel-me", NS).metadata.resource_version
        try:
            done = kube.batch.patch_namespaced_job("cancel-me", NS, patch,
                                                   _content_type="application/merge-patch+json")
            break
        except ApiException as exc:
            assert exc.status == 409
    else:
        raise AssertionError("patch kept conflicting")
    assert done.spec.suspend and done.metadata.annotations == {"canceled": "yes"}


def test_watch_bookmarks_when_asked(fake_kube_factory):
    cluster = fake_kube_factory(bookmark_interval=0.2)
    k = Kube(cluster, cluster.kubeconfig_path)
    rv = k.batch.list_namespaced_job(NS).metadata.resource_version
    events = list(watch.Watch().stream(k.batch.list_namespaced_job, NS, resource_version=rv,
                                       allow_watch_bookmarks=True, timeout_seconds=1))
    assert events and all(e["type"] == "BOOKMARK" for e in events)
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == rv
    k.close()
