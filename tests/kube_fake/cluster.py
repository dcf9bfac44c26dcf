"""``FakeKubeCluster``: the public face of the fake - wires store, controllers, kubelet and HTTP server."""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import threading
import time
from typing import Any, Callable, Iterable

from . import errors as E
from . import resources as R
from .api import FAULT_KINDS, Api, ServedFault
from .dns import ClusterDNS
from .events import EventRecorder
from .jobcontroller import JobController
from .kubeconfig import write_kubeconfig
from .kubelet import Kubelet
from .meta import clone, format_ts
from .requestlog import RequestLog
from .server import FakeHTTPServer
from .store import Store

log = logging.getLogger(__name__)

DEFAULT_USER = "system:serviceaccount:default:trainerkit"
#: The in-cluster endpoint's certificate (IP 127.0.0.1, valid 2000-2126) and its CA; see tls/README.md.
TLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tls")
TLS_CA, TLS_CERT, TLS_KEY = (os.path.join(TLS_DIR, name) for name in ("ca.crt", "apiserver.crt", "apiserver.key"))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


class FakeKubeCluster:
    """A stateful fake Kubernetes API server on ``127.0.0.1:<ephemeral port>``.

    Parameters:
        namespaces: namespaces that exist from the start.
        run_pods: execute pod containers as local subprocesses (see ``kubelet``); when
            False pods go Running and wait for :meth:`finish_pod`.
        token: bearer token the server requires (None: no authentication).
        user: user name quoted in 403 messages.
        job_controller: run the simulated Job controller.
        history_size: watch events retained for resourceVersion replays.
        grace_cap: upper bound (seconds) on SIGTERM -> SIGKILL grace for pod kills.
        restart_backoff: seconds between in-place restarts (restartPolicy OnFailure).
        image_pull_backoff: seconds between ErrImagePull and ImagePullBackOff.
        pod_env: extra environment for every pod process.
        pod_workdir: cwd for pod processes without a usable ``workingDir``.
        image_entrypoints: ``{image: argv}`` used when a container has no ``command``.
        bookmark_interval: seconds of watch inactivity after which a BOOKMARK event is sent to
            watches that asked for ``allowWatchBookmarks`` (the real apiserver: about a minute).
        start: start serving immediately.
    """

    def __init__(self, namespaces: Iterable[str] = ("default",), *, run_pods: bool = True,
                 token: str | None = "test-token", user: str = DEFAULT_USER, job_controller: bool = True,
                 history_size: int = 10000, grace_cap: float = 2.0, restart_backoff: float = 0.0,
                 image_pull_backoff: float = 0.2, pod_env: dict[str, str] | None = None,
                 pod_workdir: str | None = None, image_entrypoints: dict[str, list[str]] | None = None,
                 bookmark_interval: float = 1.0, node_name: str = "fake-node", host: str = "127.0.0.1",
                 port: int = 0, start: bool = True):
        self.token = token
        self.user = user
        self.node_name = node_name
        self.kubeconfig_path: str | None = None
        self.requests = RequestLog()
        self.store = Store(history_size=history_size)
        self.recorder = EventRecorder(self.store, node_name)
        self.in_cluster_requests = RequestLog()
        self.dns = ClusterDNS(self.store)
        self.kubelet = Kubelet(self.store, self.recorder, node_name=node_name, run_pods=run_pods,
                               grace_cap=grace_cap, restart_backoff=restart_backoff,
                               image_pull_backoff=image_pull_backoff, extra_env=pod_env, workdir=pod_workdir,
                               image_entrypoints=image_entrypoints,
                               service_address=lambda: (self._host, self.in_cluster_port),
                               ca_cert=lambda: _read(TLS_CA), token=token, dns=self.dns)
        self.controller = JobController(self.store, self.recorder) if job_controller else None
        self.api = Api(self.store, self.kubelet, token=token, user=user,
                       server_address=lambda: f"{self._host}:{self.port}", bookmark_interval=bookmark_interval)
        self._host = host
        self._port = port
        self._httpd: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tls_httpd: FakeHTTPServer | None = None
        self._tls_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._lifecycle_lock = threading.Lock()
        for ns in namespaces:
            self.create_namespace(ns)
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeKubeCluster":
        with self._lifecycle_lock:
            if self._started:
                return self
            self._started = True
            self.dns.start()
            self.kubelet.start()
            if self.controller is not None:
                self.controller.start()
            self._httpd = FakeHTTPServer((self._host, self._port), self.api, self.requests)
            self._port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            daemon=True, name=f"kube-fake-http-{self._port}")
            self._thread.start()
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(TLS_CERT, TLS_KEY)
            self._tls_httpd = FakeHTTPServer((self._host, 0), self.api, self.requests, tls=tls,
                                             also_log=self.in_cluster_requests)
            self._tls_thread = threading.Thread(target=self._tls_httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                                daemon=True, name=f"kube-fake-https-{self._port}")
            self._tls_thread.start()
            log.info("fake kube apiserver listening on %s and, for pods, on %s", self.url, self.in_cluster_url)
            return self

    def stop(self) -> None:
        """Stop serving, end watches/log streams, kill all pod processes. Idempotent."""
        with self._lifecycle_lock:
            if self._stopped:
                return
            self._stopped = True
        self.kubelet.stop()
        self.store.close()
        self.dns.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_connections()
            self._httpd.server_close()
        if self._tls_httpd is not None:
            self._tls_httpd.shutdown()
            self._tls_httpd.close_connections()
            self._tls_httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        if self._tls_thread is not None:
            self._tls_thread.join(5)
        if self.controller is not None:
            self.controller.join(5)
        log.info("fake kube apiserver on port %s stopped", self._port)

    def __enter__(self) -> "FakeKubeCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def in_cluster_port(self) -> int:
        """Port of the HTTPS endpoint that pods reach through KUBERNETES_SERVICE_HOST/PORT (0: not started)."""
        return self._tls_httpd.server_address[1] if self._tls_httpd is not None else 0

    @property
    def in_cluster_url(self) -> str:
        """``https://127.0.0.1:<port>``: the API as pods see it (the CA is ``tls/ca.crt``); the same
        API as :attr:`url`, and its requests are also logged in :attr:`in_cluster_requests`."""
        return f"https://{self._host}:{self.in_cluster_port}"

    def write_kubeconfig(self, path: str | os.PathLike, context: str = "fake", namespace: str = "default",
                         token: str | None = ...) -> str:  # type: ignore[assignment]
        """Write a kubeconfig (bearer-token user) pointing at this server; remembers it as ``kubeconfig_path``."""
        tok = self.token if token is ... else token
        self.kubeconfig_path = write_kubeconfig(path, self.url, context=context, namespace=namespace, token=tok)
        return self.kubeconfig_path

    def api_client(self, config_file: str | None = None):
        """A real ``kubernetes.client.ApiClient`` for this cluster (needs a written kubeconfig)."""
        import kubernetes  # local import: the fake itself is stdlib-only

        path = config_file or self.kubeconfig_path
        if path is None:
            raise RuntimeError("call write_kubeconfig() first")
        return kubernetes.config.new_client_from_config(config_file=path, persist_config=False)

    # -- request accounting ---------------------------------------------------------------------

    def request_count(self) -> int:
        return len(self.requests)

    def reset_requests(self) -> None:
        self.requests.clear()

    # -- fault injection / cluster state ------------------------------------------------------------

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Matching requests get 403 Forbidden (verb/resource may be ``*``; resource ``jobs``,
        ``jobs.batch``, ``pods/log`` ...)."""
        self.api.forbid(verb, resource, namespace)

    def allow(self, verb: str | None = None, resource: str | None = None, namespace: str | None = None) -> None:
        """Undo :meth:`forbid` (everything when called without arguments)."""
        self.api.allow(verb, resource, namespace)

    def inject_error(self, verb: str, resource: str, code: int = 500, *, times: int | None = 1,
                     namespace: str | None = None, reason: str | None = None, message: str | None = None,
                     after: bool = False, retry_after: int = 1) -> None:
        """The next ``times`` matching requests (None: all) fail with ``code`` (429/503 carry
        ``Retry-After: retry_after``). With ``after`` each is carried out first, and only its
        answer is the error: the client never learns that its request took effect."""
        reason = reason or {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 502: "BadGateway",
                            503: "ServiceUnavailable", 504: "Timeout"}.get(code, "InternalError")
        message = message or {429: "Too many requests, please try again later.",
                              503: "the server is currently unable to handle the request"}.get(
            code, f"injected error {code}")
        self.api.inject_error(verb, resource, code=code, reason=reason, message=message, namespace=namespace,
                              times=times, after=after, retry_after=retry_after)

    def inject_reset(self, verb: str, resource: str, *, times: int | None = 1, namespace: str | None = None,
                     after: bool = False) -> None:
        """The next ``times`` matching requests (None: all) get their connection reset (TCP RST)
        instead of an answer; with ``after``, once the request has been carried out."""
        self.api.inject_error(verb, resource, code=0, reason="", message="", namespace=namespace, times=times,
                              after=after, reset=True)

    def inject_faults(self, rate: float, *, verb: str = "*", resource: str = "*", namespace: str | None = None,
                      faults: tuple = FAULT_KINDS, retry_after: int = 1, seed: int = 0) -> None:
        """A random fraction ``rate`` of matching requests get one of ``faults`` (drawn with a
        seeded generator): ``"500"``, ``"503"``, ``"429"`` (answered with that code before the
        request is carried out), ``"reset"`` (connection reset), and the same with ``-after``
        (carried out, then answered with the error or reset). Until :meth:`clear_injected_errors`.
        :attr:`served_faults` lists what was served."""
        self.api.inject_faults(rate, verb=verb, resource=resource, namespace=namespace, faults=faults,
                               retry_after=retry_after, seed=seed)

    @property
    def served_faults(self) -> list[ServedFault]:
        """Every injected error and reset served so far, oldest first."""
        return list(self.api.served_faults)

    def clear_injected_errors(self) -> None:
        self.api.clear_injected_errors()

    def backdate(self, resource: str, namespace: str | None, name: str, seconds: float) -> None:
        """Make an object look created ``seconds`` ago (its creationTimestamp; no watch event):
        time travel for tests of what happens to old objects."""
        rt = {t.plural: t for t in R.ALL_TYPES}[resource]
        with self.store.lock:
            obj = self.store.get(rt, namespace, name)
            if obj is None:
                raise KeyError(f"{resource} {namespace}/{name}")
            moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
            obj["metadata"]["creationTimestamp"] = format_ts(moment)

    def set_unschedulable(self, value: bool = True) -> None:
        """While True, new pods stay Pending with PodScheduled=False/Unschedulable."""
        self.kubelet.set_unschedulable(value)

    def set_dns_delay(self, seconds: float) -> None:
        """Pod DNS records (``<hostname>.<subdomain>``) answer only ``seconds`` after they appear:
        slow DNS, as a headless Service's records can be on a real cluster."""
        self.dns.set_delay(seconds)

    def dns_records(self) -> dict[str, dict]:
        """The cluster DNS records now: ``{name: {"ip": ..., "not_before": posix time}}``."""
        return self.dns.records()

    def services(self, namespace: str | None = "default") -> dict[str, dict]:
        return self.store.snapshot(R.SERVICES, namespace)

    def compact(self) -> None:
        """Drop the watch history: watches from an older resourceVersion get 410 Gone (Expired)."""
        self.store.compact()

    def create_namespace(self, name: str) -> dict:
        if self.store.namespace_exists(name):
            return clone(self.store.get(R.NAMESPACES, None, name))
        return clone(self.store.create(R.NAMESPACES, {
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}))

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    # -- snapshots for assertions -------------------------------------------------------------------

    def jobs(self, namespace: str | None = "default") -> dict[str, dict]:
        return self.store.snapshot(R.JOBS, namespace)

    def pods(self, namespace: str | None = "default") -> dict[str, dict]:
        return self.store.snapshot(R.PODS, namespace)

    def configmaps(self, namespace: str | None = "default") -> dict[str, dict]:
        return self.store.snapshot(R.CONFIGMAPS, namespace)

    def secrets(self, namespace: str | None = "default") -> dict[str, dict]:
        return self.store.snapshot(R.SECRETS, namespace)

    def events(self, namespace: str | None = "default") -> list[dict]:
        return sorted(self.store.snapshot(R.EVENTS, namespace).values(),
                      key=lambda e: int(e["metadata"]["resourceVersion"]))

    def namespaces(self) -> dict[str, dict]:
        return self.store.snapshot(R.NAMESPACES, None)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        obj = self.store.get(R.PODS, namespace, pod)
        if obj is None:
            raise KeyError(f"{namespace}/{pod}")
        try:
            return self.kubelet.log_buffer(obj, container, False).snapshot().decode("utf-8", errors="replace")
        except E.ApiError:
            return ""

    def pod_pid(self, namespace: str, pod: str) -> int | None:
        """PID (= process group id) of the pod's running container process, if any."""
        obj = self.store.get(R.PODS, namespace, pod)
        runner = self.kubelet.runner(obj) if obj else None
        return runner.pid if runner else None

    def finish_pod(self, namespace: str, pod: str, exit_code: int = 0, logs: str = "", message: str = "") -> None:
        """``run_pods=False`` mode: make a Running pod's container exit."""
        obj = self.store.get(R.PODS, namespace, pod)
        if obj is None:
            raise KeyError(f"{namespace}/{pod}")
        self.kubelet.finish_simulated(obj, exit_code, logs, message)

    def wait_for(self, predicate: Callable[["FakeKubeCluster"], Any], timeout: float = 10.0,
                 description: str = "condition") -> Any:
        """Block (on the store's condition variable) until ``predicate(self)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self.store.cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {description}")
                self.store.cond.wait(min(remaining, 0.5))

    def wait_for_job_finished(self, namespace: str, name: str, timeout: float = 30.0) -> dict:
        """Wait until the Job has a Complete or Failed condition; returns a copy of it."""
        def done(c: "FakeKubeCluster") -> dict | None:
            job = c.store.get(R.JOBS, namespace, name)
            if job is None:
                return None
            for cond in (job.get("status") or {}).get("conditions") or []:
                if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
                    return clone(job)
            return None
        return self.wait_for(done, timeout, f"job {namespace}/{name} to finish")
