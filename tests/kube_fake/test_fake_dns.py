"""Indexed Jobs, headless Services and pod DNS in the fake cluster, as a real cluster has them."""

from __future__ import annotations

import json
import sys

import kubernetes
import pytest

from .cluster import FakeKubeCluster
from .jobcontroller import COMPLETION_INDEX

pytestmark = pytest.mark.timeout(60)

# Each pod resolves every peer (retrying while DNS has no answer yet), waits until
# all have (a pod that ends loses its record), then prints what it saw as JSON: its
# index, its HOSTNAME, the peers' addresses and whether its first lookup failed.
RESOLVER = r"""
import json, os, socket, sys, time
index = int(os.environ["JOB_COMPLETION_INDEX"])
count, barrier = int(sys.argv[1]), sys.argv[2]
first_failed = None
seen = {}
for peer in range(count):
    name = f"grp-{peer}.grp"
    deadline = time.monotonic() + 20
    while True:
        try:
            seen[name] = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)[0][4][0]
            break
        except socket.gaierror:
            if first_failed is None:
                first_failed = True
                print("no answer yet for", name, flush=True)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    if first_failed is None:
        first_failed = False
open(os.path.join(barrier, str(index)), "w").close()
while len(os.listdir(barrier)) < count:
    time.sleep(0.05)
with socket.socket() as own:  # bind() resolves the name itself, as create_server() does
    own.bind((f"grp-{index}.grp", 0))
    bound = own.getsockname()[0]
try:
    socket.getaddrinfo("nowhere.grp", 80)
    unknown = "resolved"
except socket.gaierror:
    unknown = "NXDOMAIN"
print(json.dumps({"index": index, "hostname": os.environ["HOSTNAME"], "seen": seen,
                  "first_failed": first_failed, "unknown": unknown, "bound": bound}))
"""


def _indexed_job(count: int, barrier) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "grp"},
        "spec": {
            "completionMode": "Indexed", "completions": count, "parallelism": count, "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never", "subdomain": "grp",
                "containers": [{"name": "c", "image": "python:3.11",
                                "command": ["python", "-c", RESOLVER, str(count), str(barrier)]}],
            }},
        },
    }


def _barrier(tmp_path) -> str:
    path = tmp_path / "barrier"
    path.mkdir()
    return str(path)


def _headless(publish_not_ready: bool = True) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "grp"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": publish_not_ready,
                     "selector": {"batch.kubernetes.io/job-name": "grp"}}}


def _outputs(cluster: FakeKubeCluster) -> list[dict]:
    cluster.wait_for_job_finished("default", "grp", timeout=40)
    pods = cluster.pods("default")
    return sorted((json.loads(cluster.logs("default", name).strip().splitlines()[-1]) for name in pods),
                  key=lambda out: out["index"])


def test_indexed_job_pods_resolve_each_other_through_a_headless_service(fake_kube: FakeKubeCluster, tmp_path):
    core = kubernetes.client.CoreV1Api(fake_kube.api_client())
    batch = kubernetes.client.BatchV1Api(fake_kube.api_client())
    service = core.create_namespaced_service("default", _headless())
    assert service.spec.cluster_ip == "None"
    batch.create_namespaced_job("default", _indexed_job(3, _barrier(tmp_path)))
    outputs = _outputs(fake_kube)
    pods = {int(p["metadata"]["annotations"][COMPLETION_INDEX]): p for p in fake_kube.pods("default").values()}
    ips = {index: pod["status"]["podIP"] for index, pod in pods.items()}
    assert len(set(ips.values())) == 3, "every pod has an IP of its own"
    for out in outputs:
        assert out["hostname"] == f"grp-{out['index']}"
        assert out["seen"] == {f"grp-{i}.grp": ips[i] for i in range(3)}
        assert out["unknown"] == "NXDOMAIN"
        assert out["bound"] == ips[out["index"]]
    assert all(pods[i]["spec"]["hostname"] == f"grp-{i}" for i in range(3))
    assert fake_kube.dns_records() == {}, "records go when the pods end"


def test_names_resolve_only_after_the_dns_delay(fake_kube: FakeKubeCluster, tmp_path):
    fake_kube.set_dns_delay(600)
    core = kubernetes.client.CoreV1Api(fake_kube.api_client())
    batch = kubernetes.client.BatchV1Api(fake_kube.api_client())
    core.create_namespaced_service("default", _headless())
    batch.create_namespaced_job("default", _indexed_job(2, _barrier(tmp_path)))
    fake_kube.wait_for(lambda c: len(c.dns_records()) == 8, description="records of both pods")
    fake_kube.wait_for(lambda c: all("no answer yet" in c.logs("default", pod) for pod in c.pods("default")),
                       timeout=20, description="both pods to find no answer")
    fake_kube.set_dns_delay(0)
    assert all(out["first_failed"] for out in _outputs(fake_kube))


def test_no_records_without_a_headless_service_or_when_not_ready(fake_kube: FakeKubeCluster):
    core = kubernetes.client.CoreV1Api(fake_kube.api_client())
    service = _headless(publish_not_ready=False)
    core.create_namespaced_service("default", service)
    # Ready pods only: a pod that never becomes ready in time has no record.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"hostname": "grp-0", "subdomain": "grp", "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "python:3.11",
                                    "command": ["python", "-c", "import time; time.sleep(30)"]}]}}
    core.create_namespaced_pod("default", pod)
    fake_kube.wait_for(lambda c: (c.pods("default")["p"].get("status") or {}).get("phase") == "Running")
    assert set(fake_kube.dns_records()) >= {"grp-0.grp", "grp-0.grp.default.svc.cluster.local"}  # Ready
    core.delete_namespaced_service("grp", "default")
    fake_kube.wait_for(lambda c: c.dns_records() == {}, description="records to go with the Service")


def test_service_validation_and_defaults(fake_kube: FakeKubeCluster):
    core = kubernetes.client.CoreV1Api(fake_kube.api_client())
    bad = _headless()
    bad["metadata"]["name"] = "1grp"
    with pytest.raises(kubernetes.client.ApiException) as raised:
        core.create_namespaced_service("default", bad)
    assert raised.value.status == 422 and "DNS-1035" in raised.value.body
    no_ports = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"a": "b"}}}
    with pytest.raises(kubernetes.client.ApiException, match="spec.ports"):
        core.create_namespaced_service("default", no_ports)
    no_ports["spec"]["ports"] = [{"port": 80}]
    made = core.create_namespaced_service("default", no_ports)
    assert made.spec.cluster_ip.startswith("10.96.") and made.spec.ports[0].protocol == "TCP"


def test_sitecustomize_is_only_in_fake_pods():
    # The hook is installed through the pods' environment only; this interpreter is untouched.
    assert "sitecustomize" not in sys.modules or "kube_fake" not in (sys.modules["sitecustomize"].__file__ or "")
