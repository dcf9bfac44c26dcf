"""The training pod's entry point: ``python -m trainerkit.trainers.kubernetes.pod_entry SPEC``.

It runs :func:`trainerkit.worker.run_training` on the
:class:`~trainerkit.worker.TrainingSpec` that the trainer put in the pod's
ConfigMap, with two pod-specific reporters:

* the outcome (status, the error's type, message and traceback, the last
  progress report) goes to the container's termination message, where the
  trainer reads it from the pod's status (shortened to the kubelet's 4096
  bytes). The file is the container's ``terminationMessagePath``, which the
  manifest also passes in ``$TRAINERKIT_TERMINATION_MESSAGE_PATH`` (a
  container cannot read its own spec); without it, the kubelet's default
  ``/dev/termination-log``;
* progress reports go to the annotation ``trainerkit.io/progress`` of the
  pod itself, at most once per ``$TRAINERKIT_PROGRESS_INTERVAL`` seconds and
  once more at the end. The trainer already watches its pods, so progress
  arrives through that same watch, with no request per training. This needs
  the pod's service account to be allowed to ``patch pods`` (see
  ``config/rbac-kubernetes-trainer.yaml``); without it the training runs all
  the same, progress shows only at the end, and one warning says why.

In a multi-node training (``$TRAINERKIT_NODES`` above 1) the pod is one node:
it sets ``RANK`` (``NODE_RANK * procs_per_node``) and ``LOCAL_RANK`` next to the
torchrun variables of the manifest, then, before the training starts, waits
(at most ``$TRAINERKIT_RENDEZVOUS_TIMEOUT`` seconds) until ``MASTER_ADDR``
resolves and, on every node but rank 0's, accepts connections on
``MASTER_PORT``: a headless Service's DNS records can take a while to appear,
and ``torch.distributed`` gives up on a name that does not resolve. While it
waits, the annotation ``trainerkit.io/rendezvous`` of its pod says why (the
trainer shows it in the status detail); when the time is up the training
fails naming the node, the address and what was missing. Resolution uses the
ordinary socket API, as the training's own code will.

The pod reaches the API server the way in-cluster clients do:
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (set by the
kubelet), with the service account's ``token`` and ``ca.crt`` from the
directory the kubelet mounts them in, which the manifest passes in
``$TRAINERKIT_SERVICE_ACCOUNT_DIR`` (the standard
``/var/run/secrets/kubernetes.io/serviceaccount`` when it is not set). Every
variable read here is set by the manifest or by the kubelet, in tests as in
production. Only the standard library is used: the image needs trainerkit,
not the ``kubernetes`` package.

With retries (``$TRAINERKIT_GROUP_PORT`` set), every pod of a multi-node
training runs its ranks as child processes under a launcher, and the launchers
form a group that stops and restarts every rank together when one node fails
(:mod:`.group`); node 0's launcher waits for its own hostname as above, the
others for node 0's launcher instead of rank 0.

Exit status: 0 completed; 4 the training (import, arguments, ``train`` or
the save) failed, which fails the Job at once; 5 a rank of this node crashed
and the group restarts without this pod (the Job replaces it); 143 stopped by
SIGTERM (cancel, deadline, eviction); 2 an unusable spec.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ...errors import TrainingError
from ...info import ErrorDetail, ProgressReport, TrainingStatus, utcnow
from ...runner import Outcome
from ...runner import (
    CancelSignal,
    FileReporter,
    ReporterGroup,
    SpecError,
    load_module_class,
    read_spec,
    run_training,
)
from .config import (
    ENV_GROUP_PORT,
    ENV_IMAGE,
    ENV_NODES,
    ENV_PROCS_PER_NODE,
    ENV_RENDEZVOUS_TIMEOUT,
    ENV_POD_IP,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_PROGRESS_INTERVAL,
    ENV_SERVICE_ACCOUNT_DIR,
    ENV_TERMINATION_MESSAGE_PATH,
    SERVICE_ACCOUNT_DIR,
    TERMINATION_MESSAGE_PATH,
)
from .group import EXIT_NODE_CRASHED
from .manifest import ANNOTATION_PROGRESS, ANNOTATION_RENDEZVOUS, EXIT_TRAINING_FAILED, POD_ENTRY_MODULE, rank_prefix

if TYPE_CHECKING:
    from ...runner.ranks import LocalRanks, RankExit

log = logging.getLogger("trainerkit")

#: The kubelet keeps at most this much of a termination message.
TERMINATION_MESSAGE_MAX = 4096
EXIT_COMPLETED, EXIT_USAGE, EXIT_TERMINATED = 0, 2, 143


class PodAnnotationReporter:
    """Publishes the latest progress report as an annotation of this pod.

    A background thread sends at most one merge patch per ``interval``; the
    training never waits for the API server, and a failing API server never
    fails the training.
    """

    def __init__(self, api_url: str, token: str, namespace: str, pod: str, interval: float,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self._url = (
            f"{api_url.rstrip('/')}/api/v1/namespaces/{urllib.parse.quote(namespace)}"
            f"/pods/{urllib.parse.quote(pod)}"
        )
        self._token = token
        self._interval = interval
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._latest: Optional[ProgressReport] = None
        self._sent: Optional[ProgressReport] = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._disabled = False
        self._thread = threading.Thread(target=self._loop, name="trainerkit-progress", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls) -> Optional["PodAnnotationReporter"]:
        """A reporter for this pod, or None (with a log line) when the pod cannot reach the API."""
        pod, namespace = os.environ.get(ENV_POD_NAME), os.environ.get(ENV_POD_NAMESPACE)
        if not pod or not namespace:
            log.info("progress is reported at the end only: %s/%s are not set", ENV_POD_NAME, ENV_POD_NAMESPACE)
            return None
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            log.info("progress is reported at the end only: the pod has no Kubernetes API address")
            return None
        url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        account = os.environ.get(ENV_SERVICE_ACCOUNT_DIR) or SERVICE_ACCOUNT_DIR
        token_file = os.path.join(account, "token")
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError:
            log.info(
                "progress is reported at the end only: no service account token at %s "
                "(automountServiceAccountToken is off?)", token_file,
            )
            return None
        ca_file = os.path.join(account, "ca.crt")
        context = ssl.create_default_context(cafile=ca_file if os.path.exists(ca_file) else None)
        try:
            interval = max(0.05, float(os.environ.get(ENV_PROGRESS_INTERVAL, "2")))
        except ValueError:
            interval = 2.0
        return cls(url, token, namespace, pod, interval, context)

    # -- Reporter --------------------------------------------------------------------

    def progress(self, report: ProgressReport) -> None:
        with self._lock:
            self._latest = report
        self._wake.set()

    def finishing(self) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._send_latest()  # the last report, if the thread had not sent it yet

    def annotate(self, key: str, value: Optional[str]) -> None:
        """Set (None: remove) one annotation of this pod now; failures are logged, never raised."""
        self._patch({"metadata": {"annotations": {key: value}}})

    # -- sending -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            self._send_latest()
            self._stop.wait(self._interval)

    def _send_latest(self) -> None:
        with self._lock:
            report = self._latest
            if report is None or report is self._sent or self._disabled:
                return
            self._sent = report
        self._patch({"metadata": {"annotations": {ANNOTATION_PROGRESS: json.dumps(report.to_dict())}}})

    def _patch(self, patch: dict) -> None:
        if self._disabled:
            return
        body = json.dumps(patch)
        request = urllib.request.Request(
            self._url,
            data=body.encode("utf-8"),
            method="PATCH",
            headers={
                "Content-Type": "application/merge-patch+json",
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._ssl) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                self._disabled = True
                log.warning(
                    "progress is reported at the end only: the API server refused to let this "
                    "pod patch its own annotations (%s %s); give the pod's service account "
                    "'patch' on 'pods' (config/rbac-kubernetes-trainer.yaml)", exc.code, exc.reason,
                )
            else:
                log.debug("progress report not published: %s", exc)
        except (OSError, ValueError) as exc:
            log.debug("progress report not published: %s", exc)


class _StderrReporter:
    """Writes the training's error to the pod's log, where ``kubectl logs`` shows it."""

    def progress(self, report: ProgressReport) -> None:
        pass

    def finishing(self) -> None:
        log.info("training finished; saving the model")

    def outcome(self, outcome: Outcome) -> None:
        log.info("training %s", outcome.status.value)
        for error in outcome.errors:
            print(error.traceback or f"{error.type}: {error.message}", file=sys.stderr, flush=True)


def _import_error_outcome(module: str, exc: ImportError) -> Outcome:
    image = os.environ.get(ENV_IMAGE) or "the training image"
    error = ImportError(
        f"the training pod cannot import the module class {module!r} ({exc}): the module must be "
        f"installed in {image} (see the Dockerfile in docs/kubernetes.md), not only where train() "
        "was called"
    )
    return Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=(ErrorDetail.from_exception(error),))


class RendezvousError(TimeoutError):
    """A node of a multi-node training could not reach rank 0 in time."""


def node_environment(environ: "os._Environ[str] | dict[str, str]") -> Optional[tuple[int, int, int]]:
    """``(nodes, procs_per_node, node_rank)`` of a pod of a multi-process training
    (None for a training of one process); sets ``RANK`` and ``LOCAL_RANK`` of the
    node's first process in ``environ``.

    Raises:
        ValueError: a variable the manifest sets is missing or malformed (names it).
    """
    def number(name: str, default: Optional[str] = None) -> int:
        text = environ.get(name, default)
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"the pod's {name}={text!r} is not an integer (it is set by trainerkit's manifest)") from None

    nodes = number(ENV_NODES, "1")
    procs = number(ENV_PROCS_PER_NODE, "1")
    if nodes < 1 or procs < 1:
        raise ValueError(f"the pod's {ENV_NODES}={nodes} and {ENV_PROCS_PER_NODE}={procs} must be at least 1")
    if nodes * procs <= 1:
        return None
    node_rank = number("NODE_RANK")
    if not 0 <= node_rank < nodes:
        raise ValueError(f"the pod's NODE_RANK={node_rank} is not between 0 and {nodes - 1}")
    environ["RANK"] = str(node_rank * procs)
    environ["LOCAL_RANK"] = "0"
    return nodes, procs, node_rank


def wait_for_rank0(
    address: str,
    port: int,
    *,
    node_rank: int,
    timeout: float,
    report: Any = None,
    cancel: Optional[CancelSignal] = None,
    interval: float = 0.5,
    whom: str = "rank 0",
    port_name: str = "MASTER_PORT",
) -> bool:
    """Wait until ``address`` resolves and (on nodes other than 0) accepts TCP
    connections on ``port``; ``report(text or None)`` hears each new reason to
    wait and, at the end, None. Returns False when canceled meanwhile.

    Raises:
        RendezvousError: ``timeout`` seconds passed first; says what was missing.
    """
    started = time.monotonic()
    shown: Optional[str] = None
    where = f"{address}:{port}"
    while True:
        if cancel is not None and cancel.requested:
            return False
        try:
            infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
            reason = None
        except (socket.gaierror, UnicodeError) as exc:
            infos, reason = [], f"its name does not resolve yet ({exc})"
        if reason is None and node_rank != 0:
            reason = "it does not accept connections yet"
            for family, kind, proto, _, sockaddr in infos:
                try:
                    with socket.socket(family, kind, proto) as probe:
                        probe.settimeout(max(0.1, min(2.0, interval * 4)))
                        probe.connect(sockaddr)
                    reason = None
                    break
                except OSError as exc:
                    reason = f"it does not accept connections yet ({exc.strerror or exc})"
        if reason is None:
            if shown is not None and report is not None:
                report(None)
            if shown is not None:
                log.info("%s at %s is reachable after %.1f s", whom, where, time.monotonic() - started)
            return True
        waited = time.monotonic() - started
        if waited >= timeout:
            raise RendezvousError(
                f"node {node_rank} waited {timeout:g} s for {whom} at {where} (MASTER_ADDR:{port_name}), "
                f"but {reason}: check that rank 0's pod runs and that the training's headless Service "
                "resolves in the cluster's DNS, or raise rendezvous_timeout in the trainer's config"
            )
        if reason != shown:
            shown = reason
            log.info("node %d: waiting for %s at %s: %s", node_rank, whom, where, reason)
            if report is not None:
                report(f"waiting for {whom} at {where}: {reason}")
        time.sleep(min(interval, max(0.0, timeout - waited)))


def _rendezvous_settings() -> tuple[str, int, float]:
    """``MASTER_ADDR``, ``MASTER_PORT`` and the rendezvous timeout, as the manifest set them.

    Raises:
        ValueError: one is malformed.
    """
    try:
        port = int(os.environ.get("MASTER_PORT") or "")
        timeout = float(os.environ.get(ENV_RENDEZVOUS_TIMEOUT) or "600")
    except ValueError:
        raise ValueError("the pod's MASTER_PORT or rendezvous timeout is malformed (they are set by trainerkit's manifest)") from None
    return os.environ.get("MASTER_ADDR") or "", port, timeout


def _annotate_wait(annotations: Optional[PodAnnotationReporter], text: Optional[str]) -> None:
    """Say in this pod's rendezvous annotation what it waits for (None: nothing)."""
    if annotations is not None:
        value = None if text is None else json.dumps({"waiting": text, "since": utcnow().isoformat()})
        annotations.annotate(ANNOTATION_RENDEZVOUS, value)


def _rendezvous(annotations: Optional[PodAnnotationReporter], cancel: CancelSignal, node_rank: int) -> bool:
    address, port, timeout = _rendezvous_settings()
    return wait_for_rank0(address, port, node_rank=node_rank, timeout=timeout,
                          report=lambda text: _annotate_wait(annotations, text), cancel=cancel)


#: ``pod_entry --rank-outcome FILE SPEC``: a rank process that a pod's launcher started,
#: which writes its outcome to FILE.
RANK_OPTION = "--rank-outcome"
#: How long the ranks of a stopped pod get between SIGTERM and SIGKILL.
RANK_GRACE_SECONDS = 5.0


def _start_local_ranks(
    ranks: "LocalRanks", spec_file: str, outcome_files: dict[int, str], write_lock: threading.Lock, prefixed: bool
) -> list[threading.Thread]:
    """Start this node's ranks (this same entry point, one rank each) with their
    output pumped to the pod's log, prefixed ``[rank k]`` when ``prefixed``."""
    layout = ranks.layout
    pumps = []
    for local in range(layout.procs_per_node):
        read_end, write_end = os.pipe()
        env = {**os.environ, **layout.environ(local)}
        argv = [sys.executable, "-m", POD_ENTRY_MODULE, RANK_OPTION, outcome_files[local], spec_file]
        try:
            ranks.start(local, argv, env, stdout=write_end, stderr=write_end)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        prefix = rank_prefix(layout.rank(local)) if prefixed else ""
        pump = threading.Thread(target=_pump, args=(read_end, prefix, write_lock),
                                name=f"trainerkit-rank-{local}-output", daemon=True)
        pump.start()
        pumps.append(pump)
    return pumps


def _watch_ranks(ranks: "LocalRanks", pumps: Sequence[threading.Thread], should_stop: Any) -> None:
    """Poll ``ranks`` until every one has exited, stopping them (SIGTERM, SIGKILL
    after the grace period) once ``should_stop()`` says so; then let their output drain."""
    while True:
        ranks.poll()
        if should_stop() and not ranks.stopping:
            ranks.stop()
        if ranks.all_exited:
            break
        ranks.escalate()
        time.sleep(0.05)
    for pump in pumps:
        pump.join(timeout=5)


def _failure_outcome(failure: "RankExit", outcome_file: str) -> tuple[Outcome, bool]:
    """The outcome of a node whose rank ``failure`` failed first, and whether it
    crashed (killed, or ended without an outcome) rather than raised."""
    reported = _read_outcome(outcome_file)
    if reported is not None and reported.status is TrainingStatus.ERRORED and reported.errors:
        head, *rest = reported.errors
        errors = (dataclasses.replace(head, message=f"rank {failure.rank}: {head.message}"), *rest)
        return Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=errors), False
    error = ErrorDetail.of(TrainingError, failure.describe() + failure.hint())
    return Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=(error,)), True


def _launch_ranks(
    spec_file: str, nodes: int, procs: int, node_rank: int, reporters: ReporterGroup, cancel: CancelSignal
) -> int:
    """Run this node's ``procs`` ranks as child processes (this same entry point, one
    rank each) with trainerkit.runner.ranks; their output goes to the pod's log, each
    line prefixed ``[rank k]``. The first rank that fails stops the others and is
    the pod's outcome; a SIGTERM (cancel, deadline) stops them all."""
    from ...runner.ranks import LocalRanks, RankLayout

    layout = RankLayout(
        procs_per_node=procs, nodes=nodes, node_rank=node_rank,
        master_addr=os.environ.get("MASTER_ADDR") or "127.0.0.1",
        master_port=int(os.environ.get("MASTER_PORT") or 29500),
    )
    ranks = LocalRanks(layout, grace_period=RANK_GRACE_SECONDS)
    workdir = tempfile.mkdtemp(prefix="trainerkit-ranks-")
    outcome_files = {local: os.path.join(workdir, f"outcome-{local}.json") for local in range(procs)}
    pumps: list[threading.Thread] = []
    try:
        pumps = _start_local_ranks(ranks, spec_file, outcome_files, threading.Lock(), prefixed=True)
        _watch_ranks(ranks, pumps, lambda: ranks.failure is not None or cancel.requested)
        if cancel.requested:
            return _report_canceled(reporters)
        failure = ranks.failure
        if failure is None:
            first = _read_outcome(outcome_files[0]) or Outcome(status=TrainingStatus.COMPLETED, time=utcnow())
            reporters.outcome(first)
            return EXIT_COMPLETED
        outcome, _ = _failure_outcome(failure, outcome_files[failure.local_rank])
        reporters.outcome(outcome)
        return EXIT_TRAINING_FAILED
    finally:
        if not ranks.all_exited:  # this process is failing: take the ranks with it
            ranks.kill()
            ranks.poll()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclasses.dataclass
class _Failure:
    """A failure the group heard of: which node, whether it crashed, in words."""

    node: int
    crash: bool
    why: str


class _GroupLauncher:
    """This pod's launcher in a multi-node training with retries: its ranks start,
    stop and start again together with every other node's (see :mod:`.group`)."""

    def __init__(self, spec_file: str, nodes: int, procs: int, node_rank: int, reporters: ReporterGroup,
                 cancel: CancelSignal, annotations: Optional[PodAnnotationReporter]) -> None:
        from ...runner.ranks import RankLayout

        self.master_addr, master_port, self.timeout = _rendezvous_settings()
        try:
            self.port = int(os.environ.get(ENV_GROUP_PORT) or "")
        except ValueError:
            raise ValueError(f"the pod's {ENV_GROUP_PORT} is malformed (it is set by trainerkit's manifest)") from None
        self.layout = RankLayout(procs_per_node=procs, nodes=nodes, node_rank=node_rank,
                                 master_addr=self.master_addr or "127.0.0.1", master_port=master_port)
        self.spec_file, self.reporters, self.cancel, self.annotations = spec_file, reporters, cancel, annotations
        self.pod = os.environ.get(ENV_POD_NAME) or ""
        self.workdir = tempfile.mkdtemp(prefix="trainerkit-ranks-")
        self.write_lock = threading.Lock()
        self.shown: Optional[str] = None

    @property
    def node(self) -> int:
        return self.layout.node_rank

    def run(self) -> int:
        try:
            return self._coordinate() if self.node == 0 else self._member()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what every node does

    def _show(self, text: Optional[str]) -> None:
        """Say in the pod's rendezvous annotation (and the log) what this node waits for."""
        if text == self.shown:
            return
        self.shown = text
        if text is not None:
            log.info("node %d: %s", self.node, text)
        _annotate_wait(self.annotations, text)

    def _run_ranks(self, number: int, events: Any, failed: Any) -> tuple[str, Optional[Outcome], bool]:
        """Run this node's ranks once (start ``number``). ``events()`` returns a
        list with ``"stop"`` when the group restarts (the ranks stop);
        ``failed(crash, why)`` hears this node's first failure. Returns
        ``("completed" | "failed" | "stopped" | "canceled", outcome, crashed)``."""
        from ...runner.ranks import LocalRanks

        ranks = LocalRanks(self.layout, grace_period=RANK_GRACE_SECONDS)
        files = {local: os.path.join(self.workdir, f"start{number}-outcome-{local}.json")
                 for local in range(self.layout.procs_per_node)}
        stopped = False
        own: Optional[tuple[Outcome, bool]] = None
        try:
            pumps = _start_local_ranks(ranks, self.spec_file, files, self.write_lock,
                                       prefixed=self.layout.procs_per_node > 1)

            def should_stop() -> bool:
                nonlocal own, stopped
                if ranks.failure is not None and own is None and not stopped:
                    own = _failure_outcome(ranks.failure, files[ranks.failure.local_rank])
                    failed(own[1], own[0].errors[0].message)
                for event in events():
                    stopped = stopped or event == "stop"
                return stopped or own is not None or self.cancel.requested

            _watch_ranks(ranks, pumps, should_stop)
        finally:
            if not ranks.all_exited:
                ranks.kill()
                ranks.poll()
        if self.cancel.requested:
            return "canceled", None, False
        if own is not None:
            return "failed", own[0], own[1]
        if stopped:
            return "stopped", None, False
        return "completed", _read_outcome(files[0]) or Outcome(status=TrainingStatus.COMPLETED, time=utcnow()), False

    def _leave(self, outcome: Outcome, crashed: bool) -> int:
        """This node caused the group to stop: end the pod, replaced (a crash) or failing the Job."""
        self.reporters.outcome(outcome)
        return EXIT_NODE_CRASHED if crashed else EXIT_TRAINING_FAILED

    # -- node 0

    def _coordinate(self) -> int:
        from .group import SETTLE_SECONDS, GroupCoordinator

        address = os.environ.get(ENV_POD_IP) or self.master_addr
        try:
            coordinator = GroupCoordinator(address, self.port, self.layout.nodes)
        except OSError as exc:
            raise RendezvousError(
                f"node 0 cannot listen for the group on {address}:{self.port} ({ENV_GROUP_PORT}, "
                f"master_port + 1): {exc}; choose another master_port in the trainer's config"
            ) from None
        # Of the running start: the failures heard, when node 0 names their cause, and the cause.
        number = 0
        pending: list[_Failure] = []
        settle_at: Optional[float] = None
        cause: Optional[_Failure] = None

        def note(failure: _Failure) -> None:
            nonlocal settle_at
            pending.append(failure)
            if settle_at is None:
                settle_at = time.monotonic() + SETTLE_SECONDS

        def events() -> list[str]:
            nonlocal cause
            for kind, node, message in coordinator.poll():
                if kind == "failed":
                    note(_Failure(node, bool(message.get("crash")), str(message.get("why") or "")))
                elif kind == "left":
                    pod = coordinator.pods.get(node) or "?"
                    note(_Failure(node, True, f"its pod {pod} left the group (it ended or was replaced)"))
            if cause is not None or settle_at is None or time.monotonic() < settle_at:
                return []
            cause = min(pending, key=lambda failure: not failure.crash)  # a crash first, then the earliest
            log.info("node %d failed (%s): every rank stops and the group restarts", cause.node, cause.why)
            coordinator.broadcast({"stop": number, "cause": cause.node, "why": cause.why})
            if cause.node != 0:
                coordinator.drop(cause.node)  # it leaves; its replacement joins anew
            return ["stop"]

        try:
            while True:
                if not self._gather(coordinator, address):
                    return _report_canceled(self.reporters)
                pending.clear()
                settle_at, cause = None, None
                number = coordinator.start()
                log.info("group start %d: every node has joined; ranks start", number)
                result, outcome, crashed = self._run_ranks(
                    number, events, lambda crash, why: note(_Failure(0, crash, why)))
                if result == "canceled":
                    return _report_canceled(self.reporters)
                if result == "completed":
                    coordinator.broadcast({"finished": True})
                    assert outcome is not None
                    self.reporters.outcome(outcome)
                    return EXIT_COMPLETED
                while cause is None:  # this node failed: name the cause once the others have spoken
                    events()
                    time.sleep(0.02)
                if coordinator.done:  # a node finished: its pod does not come back, so no restart
                    finished = ", ".join(map(str, sorted(coordinator.done)))
                    if cause.node == 0 and outcome is not None:
                        return self._leave(outcome, False)
                    error = ErrorDetail.of(TrainingError, (
                        f"node {cause.node} failed ({cause.why}) after node {finished} had finished: "
                        "the group cannot restart without it"))
                    return self._leave(Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=(error,)), False)
                if cause.node == 0 and outcome is not None:
                    return self._leave(outcome, crashed)
        finally:
            coordinator.close()

    def _gather(self, coordinator: Any, address: str) -> bool:
        """Node 0: wait until every node has joined and stopped its last ranks; False when canceled.

        Raises:
            RendezvousError: ``rendezvous_timeout`` passed first; names the nodes missing.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            coordinator.poll()  # a node leaving while the group gathers just has to come back
            if self.cancel.requested:
                return False
            missing = coordinator.missing
            if not missing:
                self._show(None)
                return True
            nodes = f"node{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"
            if time.monotonic() >= deadline:
                raise RendezvousError(
                    f"node 0 waited {self.timeout:g} s for {nodes} to join the group at {address}:{self.port} "
                    f"({ENV_GROUP_PORT}): check that their pods run and reach node 0's pod, or raise "
                    "rendezvous_timeout in the trainer's config"
                )
            self._show(f"waiting for {nodes} to join the group")
            time.sleep(0.05)

    # -- every other node

    def _member(self) -> int:
        from .group import SETTLE_SECONDS, GroupMember

        member = GroupMember(self.master_addr, self.port, self.node, self.pod)
        finished = False  # node 0's ranks completed: nothing restarts any more
        cause: Optional[int] = None  # of the running start: the node node 0 named when it stopped the group

        def events() -> list[str]:
            nonlocal finished, cause
            happened = []
            for kind, message in member.poll():
                if kind == "finished":
                    finished = True
                elif kind == "stop" and cause is None:
                    cause = int(message.get("cause", -1))
                    happened.append("stop")
                elif kind == "lost" and not finished and cause is None:
                    cause = 0
                    happened.append("stop")
            return happened

        def failed(crash: bool, why: str) -> None:
            member.send({"failed": self.node, "crash": crash, "why": why})

        try:
            while True:
                # Join (again) and wait for the group to start.
                deadline = time.monotonic() + self.timeout
                number = None
                while number is None:
                    if self.cancel.requested:
                        return _report_canceled(self.reporters)
                    if not member.connected:
                        if not self._join(member, deadline):
                            return _report_canceled(self.reporters)
                    for kind, message in member.poll():
                        if kind == "start":
                            number = int(message.get("start") or 0)
                        elif kind == "finished":
                            finished = True
                    if number is None:
                        if time.monotonic() >= deadline:
                            raise RendezvousError(
                                f"node {self.node} waited {self.timeout:g} s for the group to start "
                                "(node 0 waits for every node to join): check that every pod of the "
                                "training runs, or raise rendezvous_timeout in the trainer's config"
                            )
                        self._show("waiting for node 0 to start the group")
                        time.sleep(0.05)
                self._show(None)
                log.info("group start %d: ranks start", number)
                cause = None
                result, outcome, crashed = self._run_ranks(number, events, failed)
                if result == "canceled":
                    return _report_canceled(self.reporters)
                if result == "completed":
                    member.send({"done": self.node})
                    assert outcome is not None
                    self.reporters.outcome(outcome)
                    return EXIT_COMPLETED
                if result == "failed":
                    assert outcome is not None
                    # Node 0 names the cause once the failures of a moment are in; without an
                    # answer (node 0 gone, or the training finished) this node is the cause.
                    answer_by = time.monotonic() + SETTLE_SECONDS + 10
                    while cause is None and not finished and time.monotonic() < answer_by:
                        events()
                        time.sleep(0.02)
                    if finished:  # node 0 is done and gone: a replaced pod could not rejoin
                        return self._leave(outcome, False)
                    if cause is None or cause == self.node:
                        return self._leave(outcome, crashed)
                log.info("node %s failed: this node's ranks stopped; waiting for the group to restart", cause)
                member.send({"ready": self.node})
        finally:
            member.close()

    def _join(self, member: Any, deadline: float) -> bool:
        """Connect to node 0 (waiting until it resolves and listens); False when canceled."""
        while True:
            reachable = wait_for_rank0(
                self.master_addr, self.port, node_rank=self.node, timeout=max(0.0, deadline - time.monotonic()),
                report=self._show, cancel=self.cancel, whom="node 0's launcher", port_name=ENV_GROUP_PORT,
            )
            if not reachable:
                return False
            try:
                member.connect()
                return True
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise RendezvousError(
                        f"node {self.node} could not join the group at {self.master_addr}:{self.port}: {exc}"
                    ) from None
                time.sleep(0.2)


def _pump(fd: int, prefix: str, lock: threading.Lock) -> None:
    with os.fdopen(fd, "rb") as stream:
        for line in stream:
            text = prefix + line.decode("utf-8", errors="replace").rstrip("\n") + "\n"
            with lock:
                sys.stdout.write(text)
                sys.stdout.flush()


def _read_outcome(path: str) -> Optional[Outcome]:
    try:
        with open(path, encoding="utf-8") as handle:
            return Outcome.from_dict(json.load(handle))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _report_canceled(reporters: ReporterGroup) -> int:
    """Report the training CANCELED (a SIGTERM: cancel, deadline, eviction); the exit status."""
    reporters.outcome(Outcome(status=TrainingStatus.CANCELED, time=utcnow()))
    return EXIT_TERMINATED


def _exit_status(outcome: Outcome) -> int:
    """The process's exit status for the training's ``outcome`` (see the module docstring)."""
    if outcome.status is TrainingStatus.COMPLETED:
        return EXIT_COMPLETED
    if outcome.status is TrainingStatus.CANCELED:
        return EXIT_TERMINATED
    return EXIT_TRAINING_FAILED


def _run_rank(spec: Any, outcome_file: str) -> int:
    """One rank process of a pod that runs several: train, write the outcome for the
    launcher; global rank 0 also publishes progress on the pod. A rank whose launcher
    is gone (the pod's main process was killed) stops itself, as the container's other
    processes would be on a real node."""
    parent = os.getppid()
    rank = os.environ.get("RANK", "0")
    reporters = ReporterGroup(
        _StderrReporter(), FileReporter(outcome_file),
        PodAnnotationReporter.from_environment() if rank == "0" else None,
    )
    cancel = CancelSignal().install()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="trainerkit-orphan-watch", daemon=True).start()
    return _exit_status(run_training(spec, reporters, cancel, apply_settings=False))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the training of the spec file given as the only argument; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[trainerkit] %(message)s", stream=sys.stderr)
    termination = FileReporter(
        os.environ.get(ENV_TERMINATION_MESSAGE_PATH) or TERMINATION_MESSAGE_PATH,
        max_bytes=TERMINATION_MESSAGE_MAX,
    )
    rank_outcome = None
    if len(argv) == 3 and argv[0] == RANK_OPTION:  # a rank process of a multi-process pod
        rank_outcome, argv = argv[1], argv[2:]
    if len(argv) != 1:
        print("usage: python -m trainerkit.trainers.kubernetes.pod_entry SPEC_FILE", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = read_spec(argv[0])
    except SpecError as exc:
        outcome = Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=(ErrorDetail.from_exception(exc),))
        ReporterGroup(_StderrReporter(), termination).outcome(outcome)
        return EXIT_USAGE
    if rank_outcome is not None:  # one rank process started by this pod's launcher (_launch_ranks)
        return _run_rank(spec, rank_outcome)
    log.info("training %s of %s", spec.training_id, spec.module)
    try:
        load_module_class(spec.module)
    except ImportError as exc:
        ReporterGroup(_StderrReporter(), termination).outcome(_import_error_outcome(spec.module, exc))
        return EXIT_TRAINING_FAILED
    except TypeError:
        pass  # not a module class: run_training reports it like any training error
    # The termination message first: it is the outcome; the last annotation patch may wait on the network.
    annotations = PodAnnotationReporter.from_environment()
    reporters = ReporterGroup(_StderrReporter(), termination, annotations)
    cancel = CancelSignal().install()
    try:
        node = node_environment(os.environ)
        if node is not None:
            nodes, procs, node_rank = node
            log.info("node %d of %d, ranks %s to %d of %s", node_rank, nodes, os.environ["RANK"],
                     node_rank * procs + procs - 1, os.environ.get("WORLD_SIZE"))
            grouped = nodes > 1 and bool(os.environ.get(ENV_GROUP_PORT))  # with retries: restart as a group
            # Node 0 waits for its own hostname either way; in a group the other
            # nodes wait for node 0's launcher (_GroupLauncher) instead of rank 0.
            if nodes > 1 and (node_rank == 0 or not grouped) and not _rendezvous(annotations, cancel, node_rank):
                return _report_canceled(reporters)
            if grouped:
                return _GroupLauncher(argv[0], nodes, procs, node_rank, reporters, cancel, annotations).run()
            if procs > 1:
                return _launch_ranks(argv[0], nodes, procs, node_rank, reporters, cancel)
    except (ValueError, RendezvousError) as exc:
        reporters.outcome(Outcome(status=TrainingStatus.ERRORED, time=utcnow(), errors=(ErrorDetail.from_exception(exc),)))
        return EXIT_TRAINING_FAILED
    return _exit_status(run_training(spec, reporters, cancel, apply_settings=False))


if __name__ == "__main__":
    sys.exit(main())
