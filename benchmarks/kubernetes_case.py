"""KUBERNETES against the fake API server of the tests (``tests/kube_fake``).

* API load: requests per second that the API server receives while N
  trainings are in flight (their pods running) and watched (every future has
  a done callback), for a small and a large N. A trainer that shares one
  watch among its futures sends about the same number of requests whatever
  N is; one that polls each training sends N times more.
* Completion delay: from the moment the Job's ``Complete`` condition is
  written into the fake's store to the training's future being done, against
  a bare ``kubernetes`` watch on the same Jobs receiving that change. Pods run
  for real here (the fake's kubelet starts them as local processes), so every
  training trains, saves and is loaded.

Both need the ``kubernetes`` package, the fake (a checkout's ``tests/``) and
trainerkit's KUBERNETES trainer.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
import time
from typing import Any, Callable, Optional

from . import subjects
from .harness import Figure, Goal, Row, RowSpec, Settings, alternate, check, counted, guarded, paired
from .trivial_modules import Trivial

NAME = "kubernetes"
NAMESPACE = "default"
IMAGE = "registry.example.com/trainerkit-bench:1"
#: How much the request rate may grow when 10x more trainings are in flight.
RATE_GROWTH_LIMIT = 1.5

API_RATE = RowSpec(
    "kubernetes.api_rate",
    "API requests per second with many trainings in flight and watched, vs with few",
    "few in flight",
    Goal("ratio", "<=", RATE_GROWTH_LIMIT, f"<= {RATE_GROWTH_LIMIT}x (flat)"),
)
COMPLETION_DELAY = RowSpec(
    "kubernetes.completion_delay",
    "Job Complete written -> future done, vs a bare kubernetes watch seeing it",
    "bare watch",
)
ROWS = (API_RATE, COMPLETION_DELAY)


def run(settings: Settings) -> list[Row]:
    missing = _missing()
    if missing:
        return [spec.cannot_run(missing) for spec in ROWS]
    rows = []
    if settings.wants(API_RATE):
        rows += guarded([API_RATE], lambda: [_api_rate_row(settings)])
    if settings.wants(COMPLETION_DELAY):
        rows += guarded([COMPLETION_DELAY], lambda: [_completion_delay_row(settings)])
    return rows


def _missing() -> Optional[str]:
    reasons = []
    if importlib.util.find_spec("kubernetes") is None:
        reasons.append("the kubernetes package is not installed (pip install 'trainerkit[kubernetes]')")
    try:
        fake = importlib.util.find_spec("tests.kube_fake.cluster")
    except ModuleNotFoundError:
        fake = None
    if fake is None:
        reasons.append("the fake API server tests/kube_fake is not in this checkout")
    trainer = subjects.trainer_type_missing("KUBERNETES")
    if trainer:
        reasons.append(trainer)
    return "; ".join(reasons) or None


class _Cluster:
    """A started fake cluster with a kubeconfig for it, and a trainer pointed at it."""

    def __init__(self, workdir: str, run_pods: bool) -> None:
        from tests.kube_fake import FakeKubeCluster

        self.fake = FakeKubeCluster(namespaces=(NAMESPACE,), run_pods=run_pods)
        self.kubeconfig = self.fake.write_kubeconfig(os.path.join(workdir, "kubeconfig"))
        #: Where models are saved: a hostPath volume mounted at the same path,
        #: which the fake's pods (local processes) reach as they are.
        self.models = os.path.join(workdir, "models")
        os.makedirs(self.models)

    def trainer(self) -> Any:
        return subjects.trainerkit_trainer(
            "KUBERNETES",
            local_records=False,
            image=IMAGE,
            namespace=NAMESPACE,
            kubeconfig=self.kubeconfig,
            volumes=[{"name": "models", "hostPath": {"path": self.models, "type": "Directory"}}],
            volume_mounts=[{"name": "models", "mountPath": self.models}],
        )

    def save_path(self, value: int) -> str:
        return os.path.join(self.models, f"model-{value}")

    def job_of(self, training_id: str, timeout: float = 30.0) -> str:
        """The name of the Job that runs ``training_id`` (named by it, or labelled with it)."""

        def find(cluster: Any) -> Optional[str]:
            for name, job in cluster.jobs(NAMESPACE).items():
                metadata = job.get("metadata") or {}
                values = list((metadata.get("labels") or {}).values())
                values += list((metadata.get("annotations") or {}).values())
                if name == training_id or training_id in values:
                    return name
            return None

        return self.fake.wait_for(find, timeout, f"a Job for training {training_id}")

    def close(self) -> None:
        self.fake.stop()


# -- API load ---------------------------------------------------------------------------


def _api_rate_row(settings: Settings) -> Row:
    few, many = settings.size(20, 10), settings.size(200, 50)
    window = settings.size(5, 1)
    rounds = settings.size(3, 1)
    notes: set[str] = set()
    counts = alternate(
        rounds,
        {
            "many": lambda: _request_count(many, window, notes),
            "few": lambda: _request_count(few, window, notes),
        },
    )
    # A window with no request at all counts as one request in the ratio, so
    # that a trainer that is silent in both gets 1.0x rather than 0/0.
    ratios = [
        (max(m, 1) / m_seconds) / (max(f, 1) / f_seconds)
        for (m, m_seconds), (f, f_seconds) in zip(counts["many"], counts["few"])
    ]
    return API_RATE.measured(
        Figure([count / seconds for count, seconds in counts["many"]], "req/s"),
        Figure([count / seconds for count, seconds in counts["few"]], "req/s"),
        Figure(ratios, "x"),
        notes=[
            f"{many} vs {few} trainings in flight (pods held Running), requests counted over {window} s, "
            f"{counted(rounds, 'round')}; a window without any request counts as one request in the ratio",
            *sorted(notes),
        ],
    )


def _request_count(in_flight: int, window: float, notes: set[str]) -> tuple[int, float]:
    """(API requests received, seconds counted) with ``in_flight`` trainings running and watched."""
    with tempfile.TemporaryDirectory(prefix="trainerkit-bench-kube-") as workdir:
        cluster = _Cluster(workdir, run_pods=False)
        try:
            with cluster.trainer() as built:
                notes.update(built.notes)
                trainer = built.trainer
                ended: list[str] = []
                futures = [
                    trainer.train(Trivial, value, save_path=cluster.save_path(value))
                    for value in range(in_flight)
                ]
                for future in futures:
                    future.add_done_callback(lambda done: ended.append(done.id))
                cluster.fake.wait_for(
                    lambda c: sum(
                        1
                        for pod in c.pods(NAMESPACE).values()
                        if (pod.get("status") or {}).get("phase") == "Running"
                    )
                    >= in_flight,
                    timeout=120,
                    description=f"{in_flight} running pods",
                )
                _wait_until(lambda: all(f.running() for f in futures), f"{in_flight} RUNNING trainings")
                cluster.fake.reset_requests()
                started = time.perf_counter()
                time.sleep(window)  # the measurement window itself
                requests = cluster.fake.request_count()
                elapsed = time.perf_counter() - started
                check(not ended, f"{len(ended)} trainings ended during the window")
                check(
                    len(cluster.fake.jobs(NAMESPACE)) == in_flight,
                    "the fake does not hold one Job per training",
                )
                for future in futures:
                    future.cancel()
                for future in futures:
                    check(future.wait(timeout=60), f"training {future.id} did not stop after cancel()")
                return requests, elapsed
        finally:
            cluster.close()


# -- completion delay -------------------------------------------------------------------


class _BareWatch:
    """A bare ``kubernetes`` watch on the namespace's Jobs: when each Job was seen Complete."""

    def __init__(self, kubeconfig: str) -> None:
        import kubernetes

        self._api = kubernetes.config.new_client_from_config(config_file=kubeconfig, persist_config=False)
        self._batch = kubernetes.client.BatchV1Api(self._api)
        self._watch = kubernetes.watch.Watch()
        self._lock = threading.Condition()
        self.completed_at: dict[str, float] = {}
        self.error: Optional[BaseException] = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="bench-bare-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            for event in self._watch.stream(self._batch.list_namespaced_job, NAMESPACE, timeout_seconds=600):
                job = event["object"]
                conditions = (job.status.conditions if job.status else None) or []
                if any(c.type == "Complete" and c.status == "True" for c in conditions):
                    with self._lock:
                        self.completed_at.setdefault(job.metadata.name, time.perf_counter())
                        self._lock.notify_all()
        except Exception as exc:  # the stream ends with an error when the fake stops under it
            with self._lock:
                self.error = None if self._closing else exc
                self._lock.notify_all()

    def seen(self, job: str, timeout: float = 60.0) -> float:
        with self._lock:
            if not self._lock.wait_for(lambda: job in self.completed_at or self.error, timeout):
                raise AssertionError(f"the bare watch never saw Job {job} complete")
            if job not in self.completed_at:
                raise AssertionError(f"the bare watch failed: {self.error!r}")
            return self.completed_at[job]

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self._watch.stop()
        self._api.close()


def _completion_delay_row(settings: Settings) -> Row:
    samples = settings.size(15, 2)
    with tempfile.TemporaryDirectory(prefix="trainerkit-bench-kube-") as workdir:
        cluster = _Cluster(workdir, run_pods=True)
        bare: Optional[_BareWatch] = None
        try:
            with cluster.trainer() as built:
                bare = _BareWatch(cluster.kubeconfig)
                _one_completion(cluster, built.trainer, bare, -1)  # warm-up
                delays = [_one_completion(cluster, built.trainer, bare, value) for value in range(samples)]
                notes = [
                    f"{samples} trainings one at a time; pods run as local processes by the fake's kubelet",
                    *built.notes,
                ]
        finally:
            if bare is not None:
                bare.close()
            cluster.close()
    ours = [d[0] for d in delays]
    theirs = [d[1] for d in delays]
    return COMPLETION_DELAY.measured(
        Figure(ours, "s"), Figure(theirs, "s"), paired("difference", ours, theirs), notes=notes
    )


def _one_completion(cluster: _Cluster, trainer: Any, bare: _BareWatch, value: int) -> tuple[float, float]:
    """One training: (Complete -> future done, Complete -> bare watch saw it), in seconds."""
    done_at: list[float] = []
    future = trainer.train(Trivial, value, save_path=cluster.save_path(value))
    future.add_done_callback(lambda _: done_at.append(time.perf_counter()))
    job = cluster.job_of(future.id)
    check(
        _complete_seen(cluster.fake, job) is None, f"Job {job} completed before its completion could be timed"
    )
    complete_at = cluster.fake.wait_for(
        lambda c: _complete_seen(c, job), timeout=120, description=f"Job {job} to complete"
    )
    check(future.wait(timeout=60), f"training {future.id} never ended after its Job completed")
    model = future.result(timeout=5)
    check(isinstance(model, Trivial) and model.value == value, f"KUBERNETES returned {model!r}")
    check(
        future.get_info().status.value == "COMPLETED", f"training {future.id} is {future.get_info().status}"
    )
    return done_at[0] - complete_at, bare.seen(job) - complete_at


def _complete_seen(cluster: Any, job_name: str) -> Optional[float]:
    """The time (perf_counter) at which the store first shows the Job Complete, else None.

    ``wait_for`` re-checks on every store change, under the store's lock, so
    the stamp is taken as the change that completed the Job is published.
    """
    job = cluster.jobs(NAMESPACE).get(job_name)
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Complete" and condition.get("status") == "True":
            return time.perf_counter()
    return None


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
