"""Simulated scheduler + kubelet: pods of the fake cluster run as local subprocesses.

Every pod gets a runner thread.  The runner schedules the pod onto the single fake
node (or leaves it Pending with ``PodScheduled=False/Unschedulable`` while
``FakeKubeCluster.set_unschedulable(True)``), then executes the pod's **first
container** ``command + args`` as a local process.  Local-execution conventions:

* The process runs in a fresh process group (``start_new_session=True``) with the
  parent's environment plus the container's ``env`` / ``envFrom`` (``value`` with
  ``$(VAR)`` expansion, ``valueFrom`` configMapKeyRef / secretKeyRef / fieldRef /
  resourceFieldRef), ``HOSTNAME`` (``spec.hostname``, else the pod name) and
  ``JOB_COMPLETION_INDEX`` for Indexed Jobs.
* Every pod gets an IP of its own on the loopback network (``127.77.x.y``, in
  ``status.podIP``), so pods can listen on the same port; with a ``ClusterDNS``
  (``dns.py``) the pods' Python resolves ``<hostname>.<subdomain>`` of pods behind
  a headless Service, as the cluster DNS does.  ``$(VAR)`` references in command/args are expanded like the kubelet.
* ``command[0]`` of ``python``/``python3``/``python3.X`` (any directory) is replaced
  by ``sys.executable`` so that the test interpreter (and its venv) is used.
  A container without ``command`` runs ``FakeKubeCluster(image_entrypoints=...)
  [image] + args`` when configured, else ``args``; with neither, it exits 0 at once.
* ``workingDir`` is used when it exists locally, otherwise the parent's cwd.
* Termination message: ``/dev/termination-log`` cannot be used locally, so every
  occurrence of the container's ``terminationMessagePath`` in command/args/env values is
  rewritten to a per-container temp file, as a mount would put it there. After exit the
  file is read back (first 4096 bytes, like the kubelet) into
  ``state.terminated.message``; ``FallbackToLogsOnError`` uses the log tail.
* ``configMap`` / ``secret`` volumes are materialised as files in a per-pod temp dir;
  since nothing can be mounted, occurrences of an absolute ``mountPath`` (as a path
  prefix) in command/args/env values are rewritten to that dir, and
  ``TRAINERKIT_FAKE_MOUNTS`` holds a JSON ``{mountPath: local dir}`` map.
  ``hostPath`` / ``persistentVolumeClaim`` / ``emptyDir`` volumes are no-ops: the pod
  sees the local filesystem as is.
* Service account, as a real kubelet provides it: unless
  ``automountServiceAccountToken: false``, the pod gets a per-pod copy of
  ``/var/run/secrets/kubernetes.io/serviceaccount`` (``token`` = the cluster's bearer
  token, ``ca.crt`` = the CA of the cluster's in-cluster TLS endpoint, ``namespace``;
  occurrences of that path in command/args/env are rewritten like volume mounts), and
  every pod gets ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` (and
  ``KUBERNETES_SERVICE_PORT_HTTPS``), the address of that HTTPS endpoint, like the
  ``kubernetes`` Service's. No variable of the fake's own tells a pod where the API is.
* Images whose name contains ``does-not-exist`` never start: ``ErrImagePull`` then
  ``ImagePullBackOff``.  A missing ConfigMap/Secret referenced from env gives
  ``CreateContainerConfigError`` (retried until it appears).
* stdout+stderr are captured into a per-container log buffer served by pods/log.
  Exit code ``0`` -> ``Completed``, otherwise ``Error``; a signal N is reported as
  exit code ``128+N``.  ``restartPolicy: OnFailure`` restarts the container in place
  (``restartCount`` / ``lastState``).  Killing (pod deletion, Job deadline, suspend)
  sends SIGTERM to the process group, then SIGKILL after the grace period (capped by
  ``grace_cap``).  After the main process exits, leftovers in its group are SIGKILLed.
* Init containers run first, sequentially, with the same rules.  Containers other
  than the first are not executed; they mirror the first container's lifecycle
  (running while it runs, then terminated with exit code 0).

With ``run_pods=False`` nothing is executed: scheduled pods go Running and stay there
until ``FakeKubeCluster.finish_pod(...)`` gives them an exit code / logs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from . import errors as E
from .events import EventRecorder
from .meta import clone, now_ts
from .resources import CONFIGMAPS, PODS, SECRETS
from .store import Store, WatchEvent

if TYPE_CHECKING:
    from .dns import ClusterDNS

log = logging.getLogger(__name__)

MOUNTS_ENV = "TRAINERKIT_FAKE_MOUNTS"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
HOST_IP = "127.0.0.1"
MISSING_IMAGE_MARKER = "does-not-exist"

_PYTHON_RE = re.compile(r"^python(3(\.\d+)?)?$")
_VAR_RE = re.compile(r"\$\$|\$\(([^)]*)\)")


class LogBuffer:
    """Append-only byte buffer with blocking reads for ``follow=true``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._data = bytearray()
        self.closed = False

    def write(self, chunk: bytes) -> None:
        with self._cond:
            self._data.extend(chunk)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def snapshot(self) -> bytes:
        with self._cond:
            return bytes(self._data)

    def read_from(self, pos: int, timeout: float) -> tuple[bytes, bool]:
        """Wait up to ``timeout`` for data after ``pos``; returns (data, finished)."""
        with self._cond:
            if len(self._data) <= pos and not self.closed:
                self._cond.wait(timeout)
            data = bytes(self._data[pos:])
            return data, self.closed


def tail_lines(data: bytes, lines: int | None) -> bytes:
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes a dollar; unknown refs stay verbatim)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR_RE.sub(sub, text)


class ConfigError(Exception):
    def __init__(self, reason: str, message: str, event_reason: str = "Failed"):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.event_reason = event_reason


class _Container:
    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name = spec.get("name", "")
        self.image = spec.get("image", "")
        self.init = init
        self.state: dict = {"waiting": {"reason": "PodInitializing" if not init else "PodInitializing"}}
        self.last_state: dict = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.container_id: str | None = None
        self.logs: list[LogBuffer] = []

    def status(self) -> dict:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"docker.io/library/{self.image}@sha256:{'0' * 64}" if self.container_id else "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": clone(self.state),
            "lastState": clone(self.last_state),
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out

    def terminated(self) -> dict | None:
        return self.state.get("terminated")


def _qos_class(spec: dict) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


class PodRunner:
    """Drives one pod from Pending to a terminal phase (or removal)."""

    def __init__(self, kubelet: "Kubelet", pod: dict):
        self.k = kubelet
        self.store = kubelet.store
        md = pod["metadata"]
        self.uid = md["uid"]
        self.namespace = md["namespace"]
        self.name = md["name"]
        self.spec = clone(pod.get("spec") or {})
        self.init_containers = [_Container(c, True) for c in self.spec.get("initContainers") or []]
        self.containers = [_Container(c, False) for c in self.spec.get("containers") or []]
        self.restart_policy = self.spec.get("restartPolicy", "Always")
        self.ip = kubelet.allocate_ip()
        self.phase = "Pending"
        self.scheduled = False
        self.start_time: str | None = None
        self.conditions: dict[str, dict] = {}
        self.done = False  # guarded by the store lock
        self._plock = threading.Lock()
        self._kill_grace: float | None = None
        self._proc: subprocess.Popen | None = None
        self._tmpdir: str | None = None
        self._sim_cond = threading.Condition()
        self._sim_result: tuple[int, str, str] | None = None
        self._reported: set[str] = set()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"kube-fake-pod-{self.name}")

    # -- control -------------------------------------------------------------------------

    @property
    def killed(self) -> bool:
        return self._kill_grace is not None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def request_kill(self, grace: float) -> None:
        grace = max(0.0, min(float(grace), self.k.grace_cap))
        with self._plock:
            if self._kill_grace is not None and self._kill_grace <= grace:
                return
            self._kill_grace = grace
            proc = self._proc
        with self._sim_cond:
            self._sim_cond.notify_all()
        with self.store.cond:
            self.store.cond.notify_all()
        if proc is not None:
            threading.Thread(target=_kill_process_group, args=(proc, grace), daemon=True,
                             name=f"kube-fake-kill-{self.name}").start()

    def finish_simulated(self, exit_code: int, logs: str, message: str) -> None:
        with self._sim_cond:
            self._sim_result = (exit_code, logs, message)
            self._sim_cond.notify_all()

    def find(self, name: str) -> _Container | None:
        for c in self.init_containers + self.containers:
            if c.name == name:
                return c
        return None

    def _wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, returning early when the pod is killed or the cluster stops."""
        deadline = time.monotonic() + timeout
        with self.store.cond:
            while not self.killed and not self.store.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.store.cond.wait(remaining)

    # -- status ------------------------------------------------------------------------

    def _set_condition(self, ctype: str, status: str, reason: str | None = None, message: str | None = None) -> None:
        cur = self.conditions.get(ctype)
        ts = cur["lastTransitionTime"] if cur and cur["status"] == status else now_ts()
        cond = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ts}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        self.conditions[ctype] = cond

    def _refresh_conditions(self) -> None:
        if not self.scheduled:
            return
        terminal = self.phase in ("Succeeded", "Failed")
        self._set_condition("PodReadyToStartContainers", "False" if terminal else "True")
        pending_init = [c.name for c in self.init_containers if not (c.terminated() and
                                                                     c.terminated().get("exitCode") == 0)]
        if pending_init and not terminal:
            self._set_condition("Initialized", "False", "ContainersNotInitialized",
                                f"containers with incomplete status: [{' '.join(pending_init)}]")
        else:
            self._set_condition("Initialized", "True")
        unready = [c.name for c in self.containers if not c.ready]
        if terminal:
            reason = "PodCompleted" if self.phase == "Succeeded" else "PodFailed"
            self._set_condition("Ready", "False", reason)
            self._set_condition("ContainersReady", "False", reason)
        elif unready:
            msg = f"containers with unready status: [{' '.join(unready)}]"
            self._set_condition("Ready", "False", "ContainersNotReady", msg)
            self._set_condition("ContainersReady", "False", "ContainersNotReady", msg)
        else:
            self._set_condition("Ready", "True")
            self._set_condition("ContainersReady", "True")

    def _build_status(self) -> dict:
        self._refresh_conditions()
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        status: dict[str, Any] = {"phase": self.phase}
        conds = [self.conditions[t] for t in order if t in self.conditions]
        if conds:
            status["conditions"] = conds
        if self.scheduled:
            status["hostIP"] = HOST_IP
            status["hostIPs"] = [{"ip": HOST_IP}]
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
            status["startTime"] = self.start_time
            if self.init_containers:
                status["initContainerStatuses"] = [c.status() for c in self.init_containers]
            status["containerStatuses"] = [c.status() for c in self.containers]
        status["qosClass"] = _qos_class(self.spec)
        return status

    def _publish(self) -> bool:
        status = self._build_status()
        node = self.k.node_name if self.scheduled else None

        def apply(pod: dict) -> None:
            pod["status"] = status
            if node:
                pod["spec"]["nodeName"] = node
        return self.store.mutate(PODS, self.namespace, self.name, apply) is not None

    def _current_pod(self) -> dict | None:
        return self.store.get(PODS, self.namespace, self.name)

    def _event(self, etype: str, reason: str, message: str, component: str = "kubelet") -> None:
        pod = self._current_pod()
        if pod is not None:
            self.k.recorder.record(pod, etype, reason, message, component)

    # -- lifecycle ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if not self._schedule():
                return
            if self._image_pull_failure():
                return
            if self.k.run_pods:
                self._run_pod()
            else:
                self._simulate()
        except Exception:
            log.exception("pod runner for %s/%s crashed", self.namespace, self.name)
        finally:
            self._finish()

    def _schedule(self) -> bool:
        reported = False
        while True:
            with self.store.cond:
                if self.killed or self.store.closed or self._current_pod() is None:
                    return False
                if not self.k.unschedulable:
                    self.scheduled = True
                    self.start_time = now_ts()
                    self._set_condition("PodScheduled", "True")
                    for c in self.containers:
                        c.state = {"waiting": {"reason": "PodInitializing" if self.init_containers
                                               else "ContainerCreating"}}
                    for c in self.init_containers:
                        c.state = {"waiting": {"reason": "PodInitializing"}}
                    self._publish()
                    self._event("Normal", "Scheduled",
                                f"Successfully assigned {self.namespace}/{self.name} to {self.k.node_name}",
                                "default-scheduler")
                    return True
                if not reported:
                    reported = True
                    msg = ("0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are "
                           "available: 1 Preemption is not helpful for scheduling.")
                    self._set_condition("PodScheduled", "False", "Unschedulable", msg)
                    self._publish()
                    self._event("Warning", "FailedScheduling", msg, "default-scheduler")
                self.store.cond.wait(0.5)

    def _image_pull_failure(self) -> bool:
        bad = next((c for c in self.init_containers + self.containers if MISSING_IMAGE_MARKER in c.image), None)
        if bad is None:
            return False
        with self.store.lock:
            bad.state = {"waiting": {"reason": "ErrImagePull", "message": (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{bad.image}": failed to '
                f'resolve reference "{bad.image}": {bad.image}: not found')}}
            self._publish()
            self._event("Normal", "Pulling", f'Pulling image "{bad.image}"')
            self._event("Warning", "Failed", f'Failed to pull image "{bad.image}": {bad.state["waiting"]["message"]}')
            self._event("Warning", "Failed", "Error: ErrImagePull")
        self._wait(self.k.image_pull_backoff)
        with self.store.lock:
            if not self.killed:
                bad.state = {"waiting": {"reason": "ImagePullBackOff",
                                         "message": f'Back-off pulling image "{bad.image}"'}}
                self._publish()
                self._event("Normal", "BackOff", f'Back-off pulling image "{bad.image}"')
                self._event("Warning", "Failed", "Error: ImagePullBackOff")
        while not self.killed and not self.store.closed:
            self._wait(1.0)
        return True

    def _run_pod(self) -> None:
        for c in self.init_containers:
            rc = self._run_container(c)
            if rc is None:
                return
            if rc != 0:
                self._terminate_phase("Failed")
                return
        if not self.containers:
            self._terminate_phase("Succeeded")
            return
        main = self.containers[0]
        while True:
            rc = self._run_container(main)
            if rc is None:
                return
            if self.restart_policy == "Never" or self.killed or self.store.closed:
                break
            if rc == 0 and self.restart_policy != "Always":
                break
            # restartPolicy OnFailure / Always: restart in place.
            with self.store.lock:
                main.restart_count += 1
                main.last_state = {"terminated": main.state["terminated"]}
                main.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                    f"back-off 10s restarting failed container={main.name} "
                    f"pod={self.name}_{self.namespace}({self.uid})")}}
                main.ready = main.started = False
                self._mirror_sidecars(None)
                self._publish()
                self._event("Warning", "BackOff", f"Back-off restarting failed container {main.name} in pod "
                                                  f"{self.name}_{self.namespace}({self.uid})")
            # restartPolicy Always restarts even successful containers: never spin faster than 1/s.
            backoff = max(self.k.restart_backoff, 1.0 if self.restart_policy == "Always" else 0.0)
            if backoff > 0:
                self._wait(backoff)
            if self.killed or self.store.closed:
                break
        term = main.terminated() or {}
        self._terminate_phase("Succeeded" if term.get("exitCode") == 0 else "Failed")

    def _terminate_phase(self, phase: str) -> None:
        with self.store.lock:
            self.phase = phase
            for c in self.containers:
                c.ready = False
                c.started = False if c.terminated() else c.started
            self._publish()

    def _mirror_sidecars(self, main_state: str | None, main_term: dict | None = None) -> None:
        """Containers after the first are not executed: they follow the first container's lifecycle."""
        for c in self.containers[1:]:
            if main_state == "running":
                c.container_id = c.container_id or f"containerd://{secrets.token_hex(32)}"
                c.state = {"running": {"startedAt": now_ts()}}
                c.ready = c.started = True
                if not c.logs:
                    buf = LogBuffer()
                    buf.close()
                    c.logs.append(buf)
            elif main_state == "terminated":
                started = (c.state.get("running") or {}).get("startedAt") or now_ts()
                if main_term is not None and self.killed:  # killed together with the first container
                    term = {"exitCode": main_term["exitCode"], "reason": main_term["reason"]}
                else:
                    term = {"exitCode": 0, "reason": "Completed"}
                term.update(startedAt=started, finishedAt=now_ts())
                if c.container_id:
                    term["containerID"] = c.container_id
                c.state = {"terminated": term}
                c.ready = c.started = False

    def _run_container(self, c: _Container) -> int | None:
        """Run one container attempt to completion; None when the pod was killed before it started."""
        reported_error = None
        while True:
            if self.killed or self.store.closed:
                return None
            try:
                plan = self._prepare(c)
                break
            except ConfigError as err:
                with self.store.lock:
                    c.state = {"waiting": {"reason": err.reason, "message": err.message}}
                    self._publish()
                    if reported_error != err.message:
                        reported_error = err.message
                        if err.reason == "ContainerCreating":
                            self._event("Warning", err.event_reason, err.message)
                        else:
                            self._event("Warning", "Failed", f"Error: {err.message}")
                self._wait(0.5)
        argv, env, cwd, term_path = plan
        buf = LogBuffer()
        started_at = now_ts()
        c.container_id = f"containerd://{secrets.token_hex(32)}"
        with self.store.lock:
            if self.killed:
                return None
            c.logs.append(buf)
            self._event("Normal", "Pulled", f'Container image "{c.image}" already present on machine')
            self._event("Normal", "Created", f"Created container: {c.name}")
        if not argv:
            buf.write(b"")
            buf.close()
            return self._record_exit(c, 0, started_at, term_path, buf)
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            buf.close()
            msg = (f"failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                   f"runc create failed: unable to start container process: error during container init: "
                   f'exec: "{argv[0]}": {exc.strerror or exc}: unknown')
            with self.store.lock:
                c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": msg,
                                          "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now_ts(),
                                          "containerID": c.container_id}}
                c.ready = c.started = False
                self._publish()
                self._event("Warning", "Failed", f"Error: {msg}")
            return 128
        with self._plock:
            self._proc = proc
            grace = self._kill_grace
        if grace is not None:
            threading.Thread(target=_kill_process_group, args=(proc, grace), daemon=True).start()
        log.debug("pod %s/%s container %s started pid %s: %s", self.namespace, self.name, c.name, proc.pid, argv)
        with self.store.lock:
            c.state = {"running": {"startedAt": started_at}}
            c.ready = c.started = True
            if not c.init:
                self.phase = "Running"
                if c is self.containers[0]:
                    self._mirror_sidecars("running")
            self._publish()
            self._event("Normal", "Started", f"Started container {c.name}")
        pump = threading.Thread(target=_pump, args=(proc, buf), daemon=True, name=f"kube-fake-log-{self.name}")
        pump.start()
        rc = proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the runtime kills whatever is left in the container
        except (ProcessLookupError, PermissionError):
            pass
        pump.join(timeout=5)
        buf.close()
        with self._plock:
            self._proc = None
        if rc < 0:
            rc = 128 - rc
        return self._record_exit(c, rc, started_at, term_path, buf)

    def _record_exit(self, c: _Container, rc: int, started_at: str, term_path: str | None, buf: LogBuffer) -> int:
        message = ""
        if term_path:
            try:
                with open(term_path, "rb") as fh:
                    message = fh.read(MAX_TERMINATION_MESSAGE).decode("utf-8", errors="replace")
            except OSError:
                message = ""
        if not message and rc != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = tail_lines(buf.snapshot(), FALLBACK_LOG_LINES)[-FALLBACK_LOG_BYTES:].decode(
                "utf-8", errors="replace")
        term: dict[str, Any] = {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error",
                                "startedAt": started_at, "finishedAt": now_ts(), "containerID": c.container_id}
        if message:
            term["message"] = message
        with self.store.lock:
            c.state = {"terminated": term}
            c.ready = False
            c.started = False
            if c is (self.containers[0] if self.containers else None):
                self._mirror_sidecars("terminated", term)
            self._publish()
        return rc

    def _simulate(self) -> None:
        main = self.containers[0] if self.containers else None
        if main is None:
            self._terminate_phase("Succeeded")
            return
        buf = LogBuffer()
        started_at = now_ts()
        with self.store.lock:
            main.container_id = f"containerd://{secrets.token_hex(32)}"
            main.logs.append(buf)
            main.state = {"running": {"startedAt": started_at}}
            main.ready = main.started = True
            self.phase = "Running"
            self._mirror_sidecars("running")
            self._publish()
        with self._sim_cond:
            while self._sim_result is None and not self.killed and not self.store.closed:
                self._sim_cond.wait(0.5)
            result = self._sim_result
        if result is None:
            result = (143, "", "")
        rc, logs, message = result
        buf.write(logs.encode())
        buf.close()
        term_file = None
        if message:
            self._ensure_tmpdir()
            term_file = os.path.join(self._tmpdir, f"termination-log-{main.name}")
            with open(term_file, "w") as fh:
                fh.write(message)
        self._record_exit(main, rc, started_at, term_file, buf)
        self._terminate_phase("Succeeded" if rc == 0 else "Failed")

    def _finish(self) -> None:
        with self.store.lock:
            self.done = True
            pod = self._current_pod()
            if pod is not None and pod["metadata"].get("deletionTimestamp"):
                self.store.remove(PODS, self.namespace, self.name)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- container preparation ------------------------------------------------------------

    def _ensure_tmpdir(self) -> str:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix=f"kube-fake-{self.name}-")
        return self._tmpdir

    def _prepare(self, c: _Container) -> tuple[list[str], dict[str, str], str | None, str | None]:
        with self.store.lock:
            pod = self._current_pod()
            if pod is None:
                raise ConfigError("ContainerCreating", "pod deleted")
            cms = {o["metadata"]["name"]: o for o in self.store.list(CONFIGMAPS, self.namespace)}
            secs = {o["metadata"]["name"]: o for o in self.store.list(SECRETS, self.namespace)}
        mounts = self._materialise_volumes(c, cms, secs)
        if self.spec.get("automountServiceAccountToken") is not False and SERVICE_ACCOUNT_DIR not in mounts:
            sa_dir = os.path.join(self._ensure_tmpdir(), "serviceaccount")
            os.makedirs(sa_dir, exist_ok=True)
            for fname, content in (("token", self.k.token or ""), ("namespace", self.namespace),
                                   ("ca.crt", self.k.ca_cert())):
                with open(os.path.join(sa_dir, fname), "w") as fh:
                    fh.write(content)
            mounts[SERVICE_ACCOUNT_DIR] = sa_dir
        host, port = self.k.service_address()
        service_env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
                       "KUBERNETES_SERVICE_PORT_HTTPS": str(port)} if port else {}
        container_env = self._resolve_env(c, pod, cms, secs)
        tmp = self._ensure_tmpdir()
        term_path_spec = c.spec.get("terminationMessagePath") or "/dev/termination-log"
        term_file = os.path.join(tmp, f"termination-log-{c.name}-{len(c.logs)}")
        open(term_file, "w").close()
        rewrites = sorted(mounts.items(), key=lambda kv: -len(kv[0]))
        rewrites.insert(0, (term_path_spec, term_file))

        def rewrite(text: str) -> str:
            for src, dst in rewrites:
                if src and src.startswith("/"):
                    text = re.sub(r"(?<![\w./-])" + re.escape(src.rstrip("/") or "/") + r"(?=$|/|[^\w.-])",
                                  lambda _m, d=dst: d, text)
            return text

        container_env = {k: rewrite(v) for k, v in container_env.items()}
        command = [expand_vars(x, container_env) for x in c.spec.get("command") or []]
        args = [expand_vars(x, container_env) for x in c.spec.get("args") or []]
        if not command:
            command = list(self.k.image_entrypoints.get(c.image, []))
        argv = [rewrite(x) for x in command + args]
        if argv and _PYTHON_RE.match(os.path.basename(argv[0])):
            argv[0] = sys.executable
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update(service_env)
        env.update(self.k.extra_env)
        if self.k.dns is not None:
            env.update(self.k.dns.pod_env(env.get("PYTHONPATH")))
        env.update(container_env)
        env["HOSTNAME"] = self.spec.get("hostname") or self.name
        env[MOUNTS_ENV] = json.dumps(mounts, sort_keys=True)
        cwd = c.spec.get("workingDir")
        if cwd:
            cwd = rewrite(cwd)
        if not cwd or not os.path.isdir(cwd):
            cwd = self.k.workdir
        return argv, env, cwd, term_file

    def _materialise_volumes(self, c: _Container, cms: dict, secs: dict) -> dict[str, str]:
        volumes = {v.get("name"): v for v in self.spec.get("volumes") or []}
        mounts: dict[str, str] = {}
        for mount in c.spec.get("volumeMounts") or []:
            vol = volumes.get(mount.get("name"))
            if vol is None:
                continue
            files: dict[str, bytes] | None = None
            if "configMap" in vol:
                src = vol["configMap"] or {}
                cm = cms.get(src.get("name"))
                if cm is None:
                    if src.get("optional"):
                        files = {}
                    else:
                        raise ConfigError("ContainerCreating", f'MountVolume.SetUp failed for volume '
                                          f'"{vol["name"]}" : configmap "{src.get("name")}" not found',
                                          "FailedMount")
                else:
                    files = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
                    files.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
            elif "secret" in vol:
                src = vol["secret"] or {}
                sec = secs.get(src.get("secretName"))
                if sec is None:
                    if src.get("optional"):
                        files = {}
                    else:
                        raise ConfigError("ContainerCreating", f'MountVolume.SetUp failed for volume '
                                          f'"{vol["name"]}" : secret "{src.get("secretName")}" not found',
                                          "FailedMount")
                else:
                    files = {k: base64.b64decode(v) for k, v in (sec.get("data") or {}).items()}
            if files is None:
                continue  # hostPath / emptyDir / PVC / others: local filesystem as is
            src = vol.get("configMap") or vol.get("secret") or {}
            if src.get("items"):
                selected = {}
                for item in src["items"]:
                    if item.get("key") in files:
                        selected[item.get("path") or item["key"]] = files[item["key"]]
                files = selected
            root = os.path.join(self._ensure_tmpdir(), "volumes", vol["name"])
            os.makedirs(root, exist_ok=True)
            for rel, data in files.items():
                target = os.path.join(root, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as fh:
                    fh.write(data)
            local = os.path.join(root, mount["subPath"]) if mount.get("subPath") else root
            mounts[mount["mountPath"]] = local
        return mounts

    def _resolve_env(self, c: _Container, pod: dict, cms: dict, secs: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.spec.get("envFrom") or []:
            prefix = src.get("prefix") or ""
            if src.get("configMapRef") is not None:
                ref = src["configMapRef"]
                cm = cms.get(ref.get("name"))
                if cm is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError("CreateContainerConfigError", f'configmap "{ref.get("name")}" not found')
                for k, v in (cm.get("data") or {}).items():
                    env[prefix + k] = v
            elif src.get("secretRef") is not None:
                ref = src["secretRef"]
                sec = secs.get(ref.get("name"))
                if sec is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError("CreateContainerConfigError", f'secret "{ref.get("name")}" not found')
                for k, v in (sec.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode("utf-8", errors="replace")
        for var in c.spec.get("env") or []:
            name = var.get("name")
            if not name:
                continue
            source = var.get("valueFrom")
            if source is None:
                env[name] = expand_vars(var.get("value") or "", env)
                continue
            value = self._value_from(c, source, pod, cms, secs)
            if value is not None:
                env[name] = value
        return env

    def _value_from(self, c: _Container, source: dict, pod: dict, cms: dict, secs: dict) -> str | None:
        ns = self.namespace
        if source.get("configMapKeyRef") is not None:
            ref = source["configMapKeyRef"]
            cm = cms.get(ref.get("name"))
            if cm is None:
                if ref.get("optional"):
                    return None
                raise ConfigError("CreateContainerConfigError", f'configmap "{ref.get("name")}" not found')
            data = cm.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError("CreateContainerConfigError",
                                  f"couldn't find key {ref.get('key')} in ConfigMap {ns}/{ref.get('name')}")
            return data[ref["key"]]
        if source.get("secretKeyRef") is not None:
            ref = source["secretKeyRef"]
            sec = secs.get(ref.get("name"))
            if sec is None:
                if ref.get("optional"):
                    return None
                raise ConfigError("CreateContainerConfigError", f'secret "{ref.get("name")}" not found')
            data = sec.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError("CreateContainerConfigError",
                                  f"couldn't find key {ref.get('key')} in Secret {ns}/{ref.get('name')}")
            return base64.b64decode(data[ref["key"]]).decode("utf-8", errors="replace")
        if source.get("fieldRef") is not None:
            path = source["fieldRef"].get("fieldPath", "")
            md = pod.get("metadata") or {}
            m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
            if m:
                return (md.get(m.group(1)) or {}).get(m.group(2), "")
            simple = {
                "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
                "metadata.uid": md.get("uid"), "spec.nodeName": self.k.node_name,
                "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
                "status.hostIP": HOST_IP, "status.hostIPs": HOST_IP, "status.podIP": self.ip,
                "status.podIPs": self.ip,
            }
            return str(simple.get(path) or "")
        if source.get("resourceFieldRef") is not None:
            resource = source["resourceFieldRef"].get("resource", "")
            kind, _, res = resource.partition(".")
            spec_res = (c.spec.get("resources") or {}).get(kind) or {}
            if res in spec_res:
                return str(spec_res[res])
            if resource == "limits.cpu":
                return str(os.cpu_count() or 1)
            if resource == "limits.memory":
                try:
                    return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
                except (ValueError, OSError):
                    return "0"
            return "0"
        return ""


def _pump(proc: subprocess.Popen, buf: LogBuffer) -> None:
    fd = proc.stdout.fileno()
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf.write(chunk)
    except OSError:
        pass
    finally:
        try:
            proc.stdout.close()
        except OSError:
            pass


def _kill_process_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if grace > 0:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Kubelet:
    """Owns the pod runners; hooks into the store for pod creation and graceful deletion."""

    def __init__(self, store: Store, recorder: EventRecorder, *, node_name: str, run_pods: bool,
                 grace_cap: float, restart_backoff: float, image_pull_backoff: float,
                 extra_env: dict[str, str] | None, workdir: str | None,
                 image_entrypoints: dict[str, list[str]] | None,
                 service_address: Callable[[], tuple[str, int]] = lambda: ("", 0),
                 ca_cert: Callable[[], str] = lambda: "", token: str | None = None,
                 dns: "ClusterDNS | None" = None):
        self.store = store
        self.dns = dns  # installs the cluster-DNS resolver hook in the pods' Python (dns.py)
        self._ips = 0
        self.recorder = recorder
        self.node_name = node_name
        self.run_pods = run_pods
        self.grace_cap = grace_cap
        self.restart_backoff = restart_backoff
        self.image_pull_backoff = image_pull_backoff
        self.extra_env = dict(extra_env or {})
        self.workdir = workdir
        self.image_entrypoints = dict(image_entrypoints or {})
        self.service_address = service_address  # (host, port) of the in-cluster HTTPS endpoint
        self.ca_cert = ca_cert  # its CA certificate (PEM)
        self.token = token
        self.unschedulable = False
        self._runners: dict[str, PodRunner] = {}
        self._stopped = False

    def allocate_ip(self) -> str:
        """A loopback address of the pod's own (127.77.x.y), so that pods can listen on the same
        port side by side, as pods with IPs of their own do; the host's ``lo`` answers all of 127/8."""
        with self.store.lock:
            self._ips += 1
            n = self._ips
        return f"127.77.{(n // 254) % 256}.{n % 254 + 1}"

    def start(self) -> None:
        self.store.add_listener(self._on_event)
        self.store.graceful_pod_deleter = self._graceful_delete

    def _on_event(self, ev: WatchEvent) -> None:  # called under the store lock
        if ev.rt is not PODS or self._stopped:
            return
        uid = ev.obj["metadata"]["uid"]
        runner = self._runners.get(uid)
        if ev.type == "ADDED" and runner is None:
            runner = PodRunner(self, ev.obj)
            self._runners[uid] = runner
            runner.thread.start()
        elif ev.type == "MODIFIED" and runner is not None and ev.obj["metadata"].get("deletionTimestamp"):
            grace = ev.obj["metadata"].get("deletionGracePeriodSeconds")
            runner.request_kill(30 if grace is None else grace)
        elif ev.type == "DELETED" and runner is not None:
            runner.request_kill(0)
            self._runners.pop(uid, None)

    def _graceful_delete(self, pod: dict, grace: int | None) -> bool:  # called under the store lock
        runner = self._runners.get(pod["metadata"]["uid"])
        if runner is None or runner.done:
            return False
        if grace == 0:
            runner.request_kill(0)
        return True

    def set_unschedulable(self, value: bool) -> None:
        with self.store.cond:
            self.unschedulable = bool(value)
            self.store.cond.notify_all()

    def runner(self, pod: dict) -> PodRunner | None:
        with self.store.lock:
            return self._runners.get(pod["metadata"]["uid"])

    def log_buffer(self, pod: dict, container: str | None, previous: bool) -> LogBuffer:
        name = pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        main = [c.get("name") for c in spec.get("containers") or []]
        init = [c.get("name") for c in spec.get("initContainers") or []]
        if not container:
            if len(main) != 1:
                msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(main)}]"
                if init:
                    msg += f" or one of the init containers: [{' '.join(init)}]"
                raise E.bad_request(msg)
            container = main[0]
        if container not in main and container not in init:
            raise E.bad_request(f"container {container} is not valid for pod {name}")
        runner = self.runner(pod)
        cont = runner.find(container) if runner else None
        bufs = cont.logs if cont else []
        if previous:
            if len(bufs) < 2:
                raise E.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            return bufs[-2]
        if not bufs:
            reason = ((cont.state.get("waiting") or {}).get("reason") if cont else None) or "ContainerCreating"
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            raise E.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return bufs[-1]

    def finish_simulated(self, pod: dict, exit_code: int, logs: str, message: str) -> None:
        runner = self.runner(pod)
        if runner is None:
            raise KeyError(pod["metadata"]["name"])
        runner.finish_simulated(exit_code, logs, message)

    def stop(self, timeout: float = 10.0) -> None:
        with self.store.lock:
            self._stopped = True
            runners = list(self._runners.values())
        for runner in runners:
            runner.request_kill(0)
        for runner in runners:
            runner.thread.join(timeout)
            if runner.thread.is_alive():
                log.warning("pod runner %s did not stop", runner.name)
