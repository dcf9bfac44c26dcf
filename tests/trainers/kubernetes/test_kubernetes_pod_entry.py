"""The pod's entry point on its own: exit status, termination message, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from trainerkit.info import TrainingStatus
from trainerkit.runner import Outcome
from trainerkit.runner import TrainingSpec
from tests import kubernetes_modules as pods
from tests.kubernetes_fixtures import wait_until

from tests.conftest import REPO_ROOT  # noqa: E402
ENTRY = [sys.executable, "-m", "trainerkit.trainers.kubernetes.pod_entry"]


@pytest.fixture
def run_pod(tmp_path):
    """Run the entry point like a pod would; return (process, termination message path)."""

    def start(module: str, *, args=(), kwargs=None, spec_override=None, wait=True):
        spec = TrainingSpec(
            training_id="cluster--pod-entry",
            module=module,
            arguments={"json": {"args": list(args), "kwargs": kwargs or {}}},
            save_path=str(tmp_path / "model"),
        ).to_dict()
        spec.update(spec_override or {})
        spec_file = tmp_path / "training.json"
        spec_file.write_text(json.dumps(spec))
        message = tmp_path / "termination-log"
        # As the manifest sets them (with the path the kubelet mounts the message file at).
        env = {**os.environ, "TRAINERKIT_TERMINATION_MESSAGE_PATH": str(message), "TRAINERKIT_IMAGE": "img:7"}
        for name in ("TRAINERKIT_POD_NAME", "TRAINERKIT_POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
            env.pop(name, None)
        process = subprocess.Popen(
            ENTRY + [str(spec_file)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        if wait:
            process.output = process.communicate(timeout=60)[0]
        return process, message

    return start


def outcome(message_path) -> Outcome:
    return Outcome.from_dict(json.loads(message_path.read_text()))


def test_completed_training_exits_0_and_reports_its_outcome(run_pod, tmp_path):
    process, message = run_pod("tests.training_modules:JsonModel", args=[7])
    assert process.returncode == 0, process.output
    assert outcome(message).status is TrainingStatus.COMPLETED
    assert json.loads((tmp_path / "model" / "value.json").read_text()) == {"value": 7}


def test_training_error_exits_4_with_the_traceback_in_the_message(run_pod):
    process, message = run_pod("tests.training_modules:Failing", kwargs={"message": "bad rows"})
    assert process.returncode == 4
    (error,) = outcome(message).errors
    assert (error.type, error.message) == ("tests.training_modules.Boom", "bad rows")
    assert "raise Boom(message)" in error.traceback
    assert "raise Boom(message)" in process.output  # kubectl logs shows it too


def test_long_traceback_is_shortened_to_fit_the_kubelets_limit(run_pod):
    process, message = run_pod("tests.training_modules:Failing", kwargs={"message": "x" * 10000})
    assert process.returncode == 4
    assert len(message.read_bytes()) <= 4096
    assert outcome(message).errors[0].type == "tests.training_modules.Boom"


def test_module_missing_from_the_image_names_the_image(run_pod):
    process, message = run_pod("no_such_package.models:Model")
    assert process.returncode == 4
    error = outcome(message).errors[0]
    assert error.type == "ImportError"
    assert "must be installed in img:7" in error.message


def test_unusable_spec_exits_2_and_says_which_key(run_pod):
    process, message = run_pod("tests.training_modules:JsonModel", spec_override={"module": ""})
    assert process.returncode == 2
    assert "spec key 'module' must be a non-empty string" in outcome(message).errors[0].message


def test_sigterm_stops_the_training_without_saving(run_pod, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    process, message = run_pod(f"{pods.__name__}:FileGated", args=[str(gate)], wait=False)
    try:
        wait_until(lambda: (gate / pods.ENTERED).exists(), what="train() to start")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143
    assert outcome(message).status is TrainingStatus.CANCELED
    assert not (tmp_path / "model").exists()


class _RecordingEnviron(dict):
    """os.environ that notes every name read."""

    def __init__(self, values):
        super().__init__(values)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def test_the_pod_entry_reads_only_variables_the_manifest_or_a_real_kubelet_sets(tmp_path, monkeypatch):
    """No test-only switch: what the entry point reads, production sets too."""
    import datetime

    from trainerkit.schema import validate
    from trainerkit.trainers.kubernetes import pod_entry
    from trainerkit.trainers.kubernetes.config import KubernetesTrainerConfig
    from trainerkit.trainers.kubernetes.manifest import build_manifests
    from tests.training_modules import JsonModel

    config, problems = validate(KubernetesTrainerConfig, {"image": "img:7"}, "cluster")
    assert not problems
    job = build_manifests(
        config, namespace="ml", instance_name="cluster", training_id="cluster--env", module_class=JsonModel,
        args=[3], kwargs={}, save_path=str(tmp_path / "model"), model_name=None, tags=(),
        submission_time=datetime.datetime.now(datetime.timezone.utc), nonce="abc123",
    ).job
    container = job["spec"]["template"]["spec"]["containers"][0]
    manifest_env = {e["name"]: e.get("value", "from-the-downward-api") for e in container["env"]}
    kubelet_env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1", "HOSTNAME": "pod"}
    # Where the kubelet would mount them, here: the manifest's paths, relocated.
    message = tmp_path / "termination-log"
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    manifest_env["TRAINERKIT_TERMINATION_MESSAGE_PATH"] = str(message)
    manifest_env["TRAINERKIT_SERVICE_ACCOUNT_DIR"] = str(account)
    spec_file = tmp_path / "training.json"
    spec_file.write_text(json.dumps(TrainingSpec(
        training_id="cluster--env", module="tests.training_modules:JsonModel",
        arguments={"json": {"args": [3], "kwargs": {}}}, save_path=str(tmp_path / "model"),
    ).to_dict()))
    others = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINERKIT_", "KUBERNETES_"))}
    environ = _RecordingEnviron({**others, **manifest_env, **kubelet_env})
    monkeypatch.setattr(os, "environ", environ)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert pod_entry.main([str(spec_file)]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outcome(message).status is TrainingStatus.COMPLETED
    ours = {name for name in environ.read if name.startswith(("TRAINERKIT_", "KUBERNETES_"))}
    assert ours <= set(manifest_env) | set(kubelet_env), ours - set(manifest_env) - set(kubelet_env)
    assert {"TRAINERKIT_TERMINATION_MESSAGE_PATH", "TRAINERKIT_SERVICE_ACCOUNT_DIR", "KUBERNETES_SERVICE_HOST"} <= ours


# -- the rendezvous wait of multi-node trainings (issue 16) -------------------------------


def test_node_environment_sets_the_first_rank_of_the_node():
    from trainerkit.trainers.kubernetes.pod_entry import node_environment

    environ = {"TRAINERKIT_NODES": "3", "TRAINERKIT_PROCS_PER_NODE": "2", "NODE_RANK": "2"}
    assert node_environment(environ) == (3, 2, 2)
    assert (environ["RANK"], environ["LOCAL_RANK"]) == ("4", "0")
    assert node_environment({"TRAINERKIT_NODES": "1", "TRAINERKIT_PROCS_PER_NODE": "1"}) is None
    with pytest.raises(ValueError, match="NODE_RANK=3 is not between 0 and 2"):
        node_environment({"TRAINERKIT_NODES": "3", "NODE_RANK": "3"})
    with pytest.raises(ValueError, match="NODE_RANK='x' is not an integer"):
        node_environment({"TRAINERKIT_NODES": "3", "NODE_RANK": "x"})


def test_the_wait_ends_once_rank_0_resolves_and_accepts_connections(monkeypatch):
    import socket as socket_module

    from trainerkit.trainers.kubernetes.pod_entry import wait_for_rank0

    real = socket_module.getaddrinfo
    answers = iter([socket_module.gaierror(socket_module.EAI_NONAME, "Name or service not known")] * 2)

    def slow_dns(host, *args, **kwargs):
        answer = next(answers, None)
        if answer is not None:
            raise answer
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket_module, "getaddrinfo", slow_dns)
    with socket_module.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        heard = []
        assert wait_for_rank0("t-0.t", port, node_rank=1, timeout=60, report=heard.append, interval=0.01)
    assert heard == [
        "waiting for rank 0 at t-0.t:%d: its name does not resolve yet ([Errno -2] Name or service not known)" % port,
        None,
    ]


def test_the_wait_gives_up_saying_what_was_missing():
    import socket as socket_module

    from trainerkit.trainers.kubernetes.pod_entry import RendezvousError, wait_for_rank0

    with socket_module.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    heard = []
    with pytest.raises(RendezvousError) as caught:
        wait_for_rank0("127.0.0.1", port, node_rank=2, timeout=0.05, report=heard.append, interval=0.01)
    message = str(caught.value)
    assert message.startswith(f"node 2 waited 0.05 s for rank 0 at 127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT), "
                              "but it does not accept connections yet (Connection refused)")
    assert "rendezvous_timeout" in message
    assert heard and heard[0].startswith(f"waiting for rank 0 at 127.0.0.1:{port}: it does not accept connections")
    # Rank 0 itself only needs its name to resolve (it is the one that listens).
    assert wait_for_rank0("127.0.0.1", port, node_rank=0, timeout=0.05)


def test_a_cancel_ends_the_wait():
    from trainerkit.runner import CancelSignal
    from trainerkit.trainers.kubernetes.pod_entry import wait_for_rank0

    cancel = CancelSignal()
    cancel.requested = True
    assert wait_for_rank0("127.0.0.1", 1, node_rank=1, timeout=60, cancel=cancel) is False


def test_the_pod_entry_point_starts_without_a_runpy_warning():
    # Importing the package must not import pod_entry itself: `python -m` would then run a
    # second copy and warn in every pod's log ("found in sys.modules after import of package").
    done = subprocess.run([sys.executable, "-m", "trainerkit.trainers.kubernetes.pod_entry"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("usage: ")
    assert "RuntimeWarning" not in done.stderr
