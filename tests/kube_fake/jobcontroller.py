"""Simulated ``batch/v1`` Job controller (plus the TTL-after-finished controller).

Follows the real controller closely enough for a trainer:

* creates pods ``<job>-<5 chars>`` (Indexed: ``<job>-<index>-<5 chars>`` with the
  completion-index annotation/label and ``JOB_COMPLETION_INDEX``) from the template,
  labelled ``batch.kubernetes.io/controller-uid`` / ``job-name`` and owned by the Job;
  keeps ``min(parallelism, remaining completions)`` pods active;
* counts finished pods into ``status.succeeded`` / ``status.failed`` (a pod that
  vanishes before finishing counts as failed, except when removed for suspension;
  restarts under ``restartPolicy: OnFailure`` count as failures too);
* ``failed > backoffLimit`` -> ``FailureTarget`` then ``Failed`` (reason
  ``BackoffLimitExceeded``); ``activeDeadlineSeconds`` -> ``DeadlineExceeded``;
  ``podFailurePolicy`` ``onExitCodes`` rules (FailJob / Ignore / Count);
  success -> ``SuccessCriteriaMet`` then ``Complete`` with ``completionTime``;
  remaining active pods are deleted when the Job finishes;
* ``spec.suspend`` deletes active pods, sets ``Suspended=True`` and clears
  ``startTime``; resuming sets ``Suspended=False`` (JobResumed);
* ``ttlSecondsAfterFinished`` deletes the finished Job (Foreground propagation).

Retries are immediate (no exponential pod backoff) so tests stay fast.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass, field

from .events import EventRecorder
from .meta import (clone, condition_true, controller_ref, get_condition, now_ts, owner_reference, parse_ts,
                   random_suffix)
from .resources import JOBS, PODS
from .store import FOREGROUND, Store, WatchEvent

log = logging.getLogger(__name__)

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass
class _Tracking:
    counted: dict[str, str] = field(default_factory=dict)   # pod uid -> "succeeded" | "failed" | "ignored"
    index_of: dict[str, int] = field(default_factory=dict)  # pod uid -> completion index
    suspended_pods: set[str] = field(default_factory=set)    # pods removed for suspension (not failures)
    known: set[str] = field(default_factory=set)             # pod uids seen alive
    restarts: dict[str, int] = field(default_factory=dict)   # pod uid -> max restartCount seen
    fail_job: tuple[str, str] | None = None                  # (reason, message) decided by podFailurePolicy
    succeeded_indexes: set[int] = field(default_factory=set)
    started_at: float | None = None                          # precise startTime (status has 1s resolution)


def prepare_job(job: dict) -> None:
    """Apiserver-side defaulting for a new Job (generated selector & labels, spec defaults)."""
    md = job.setdefault("metadata", {})
    uid = md["uid"]
    name = md["name"]
    spec = job.setdefault("spec", {})
    template = spec.setdefault("template", {})
    tmd = template.setdefault("metadata", {})
    tlabels = tmd.setdefault("labels", {})
    if not spec.get("manualSelector"):
        tlabels.update({CONTROLLER_UID: uid, JOB_NAME: name, LEGACY_CONTROLLER_UID: uid, LEGACY_JOB_NAME: name})
        spec["selector"] = {"matchLabels": {CONTROLLER_UID: uid}}
    if not md.get("labels"):
        md["labels"] = dict(tlabels)
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed" if not spec.get("podFailurePolicy") else "Failed")
    pod_spec = template.setdefault("spec", {})
    if isinstance(pod_spec, dict):
        default_pod_spec(pod_spec)


def default_pod_spec(pod_spec: dict) -> None:
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("securityContext", {})
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    for key in ("initContainers", "containers"):
        for c in pod_spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            image = c.get("image") or ""
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")


def _condition(ctype: str, status: str, reason: str, message: str) -> dict:
    now = now_ts()
    return {"type": ctype, "status": status, "lastProbeTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def _set_condition(status: dict, ctype: str, value: str, reason: str, message: str) -> None:
    conds = status.setdefault("conditions", [])
    cur = get_condition(conds, ctype)
    if cur is None:
        conds.append(_condition(ctype, value, reason, message))
    elif cur.get("status") != value or cur.get("reason") != reason:
        cur.update(_condition(ctype, value, reason, message))


class JobController:
    def __init__(self, store: Store, recorder: EventRecorder):
        self.store = store
        self.recorder = recorder
        self._queue: dict[tuple[str, str], None] = {}
        self._timers: list[tuple[float, int, tuple[str, str]]] = []
        self._timer_seq = 0
        self._tracking: dict[str, _Tracking] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True, name="kube-fake-job-controller")

    def start(self) -> None:
        self.store.add_listener(self._on_event)
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- event intake (under the store lock) ---------------------------------------------

    def _on_event(self, ev: WatchEvent) -> None:
        if ev.rt is JOBS:
            if ev.type == "DELETED":
                self._tracking.pop(ev.obj["metadata"]["uid"], None)
                return
            self._queue[(ev.namespace, ev.obj["metadata"]["name"])] = None
        elif ev.rt is PODS:
            ref = controller_ref(ev.obj)
            if ref and ref.get("kind") == "Job":
                self._queue[(ev.namespace, ref["name"])] = None

    def _schedule(self, when: float, key: tuple[str, str]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, key))

    def _loop(self) -> None:
        store = self.store
        with store.cond:
            while not store.closed:
                now = time.time()
                while self._timers and self._timers[0][0] <= now:
                    _, _, key = heapq.heappop(self._timers)
                    self._queue[key] = None
                if not self._queue:
                    timeout = min(self._timers[0][0] - now, 1.0) if self._timers else 1.0
                    store.cond.wait(max(timeout, 0.001))
                    continue
                keys = list(self._queue)
                self._queue.clear()
                for key in keys:
                    try:
                        self._sync(*key)
                    except Exception:
                        log.exception("job sync %s/%s failed", *key)

    # -- reconciliation (under the store lock) --------------------------------------------

    def _sync(self, namespace: str, name: str) -> None:
        store = self.store
        job = store.get(JOBS, namespace, name)
        if job is None:
            return
        md = job["metadata"]
        uid = md["uid"]
        if md.get("deletionTimestamp"):
            return
        track = self._tracking.setdefault(uid, _Tracking())
        spec = job.get("spec") or {}
        status = clone(job.get("status") or {})
        conds = status.get("conditions") or []
        pods = [o for rt, o in store.dependants(uid) if rt is PODS and (controller_ref(o) or {}).get("uid") == uid]
        indexed = spec.get("completionMode") == "Indexed"

        # 1. account for finished / vanished pods
        alive = set()
        for pod in pods:
            puid = pod["metadata"]["uid"]
            alive.add(puid)
            track.known.add(puid)
            if indexed and puid not in track.index_of:
                ann = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
                if ann is not None:
                    track.index_of[puid] = int(ann)
            restarts = sum(cs.get("restartCount", 0) for cs in (pod.get("status") or {}).get("containerStatuses") or [])
            track.restarts[puid] = max(track.restarts.get(puid, 0), restarts)
            if puid in track.counted:
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                track.counted[puid] = "succeeded"
                if puid in track.index_of:
                    track.succeeded_indexes.add(track.index_of[puid])
            elif phase == "Failed":
                track.counted[puid] = "failed" if puid not in track.suspended_pods else "ignored"
                if track.counted[puid] == "failed":
                    self._apply_pod_failure_policy(spec, pod, track)
        for puid in list(track.known - alive):
            track.known.discard(puid)
            if puid not in track.counted:
                track.counted[puid] = "ignored" if puid in track.suspended_pods else "failed"

        succeeded = sum(1 for v in track.counted.values() if v == "succeeded")
        failed = sum(1 for v in track.counted.values() if v == "failed")
        restart_failures = sum(track.restarts.values())
        active = [p for p in pods if p["metadata"]["uid"] not in track.counted
                  and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if p["metadata"]["uid"] not in track.counted
                       and p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in active if condition_true((p.get("status") or {}).get("conditions"), "Ready"))

        status["succeeded"] = succeeded
        status["failed"] = failed
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        finished = condition_true(conds, "Complete") or condition_true(conds, "Failed")

        if finished:
            for pod in active:
                self._delete_pod(pod)
            status["active"] = len(active)
            status["ready"] = ready
            self._write(job, status)
            self._schedule_ttl(job, status)
            return

        # 2. suspension
        if spec.get("suspend"):
            for pod in active:
                track.suspended_pods.add(pod["metadata"]["uid"])
                self._delete_pod(pod)
            if not condition_true(conds, "Suspended"):
                _set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended")
                status.pop("startTime", None)
                track.started_at = None
                self.recorder.record(job, "Normal", "Suspended", "Job suspended", "job-controller")
            status["active"] = 0
            status["ready"] = 0
            self._write(job, status)
            return
        if condition_true(conds, "Suspended"):
            _set_condition(status, "Suspended", "False", "JobResumed", "Job resumed")
            status["startTime"] = now_ts()
            track.started_at = time.time()
            self.recorder.record(job, "Normal", "Resumed", "Job resumed", "job-controller")
        if not status.get("startTime"):
            status["startTime"] = now_ts()
            track.started_at = time.time()
        if track.started_at is None:
            track.started_at = parse_ts(status["startTime"])

        # 3. failure / success decisions
        failure: tuple[str, str] | None = None
        target = get_condition(conds, "FailureTarget")
        if target is not None and target.get("status") == "True":
            failure = (target.get("reason", ""), target.get("message", ""))
        elif track.fail_job:
            failure = track.fail_job
        elif failed + restart_failures > spec.get("backoffLimit", 6):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif spec.get("activeDeadlineSeconds") is not None:
            deadline = track.started_at + spec["activeDeadlineSeconds"]
            if time.time() >= deadline:
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                self._schedule(deadline, (namespace, name))

        completions = spec.get("completions")
        if indexed:
            success = len(track.succeeded_indexes) >= (completions or 0)
        elif completions is not None:
            success = succeeded >= completions
        else:
            success = succeeded > 0 and not active

        if failure is not None:
            if target is None:
                _set_condition(status, "FailureTarget", "True", failure[0], failure[1])
                for pod in active:
                    self._delete_pod(pod)
                self.recorder.record(job, "Warning", failure[0], failure[1], "job-controller")
            if not active and not terminating:
                _set_condition(status, "Failed", "True", failure[0], failure[1])
            status["active"] = len(active)
            status["ready"] = ready
            self._write(job, status)
            self._schedule_ttl(job, status)
            return
        if success:
            if get_condition(conds, "SuccessCriteriaMet") is None:
                _set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached",
                               "Reached expected number of succeeded pods")
                for pod in active:
                    self._delete_pod(pod)
            if not active and not terminating:
                _set_condition(status, "Complete", "True", "CompletionsReached",
                               "Reached expected number of succeeded pods")
                status["completionTime"] = now_ts()
                self.recorder.record(job, "Normal", "Completed", "Job completed", "job-controller")
            if indexed:
                status["completedIndexes"] = _format_indexes(track.succeeded_indexes)
            status["active"] = len(active)
            status["ready"] = ready
            self._write(job, status)
            self._schedule_ttl(job, status)
            return

        # 4. scale up
        parallelism = spec.get("parallelism", 1)
        occupied = len(active) + len(terminating)
        if indexed:
            running_idx = {track.index_of.get(p["metadata"]["uid"]) for p in active + terminating}
            todo = [i for i in range(completions or 0)
                    if i not in track.succeeded_indexes and i not in running_idx]
            for idx in todo[:max(0, parallelism - occupied)]:
                active.append(self._create_pod(job, track, idx))
            status["completedIndexes"] = _format_indexes(track.succeeded_indexes)
        else:
            wanted = parallelism if completions is None else min(parallelism, completions - succeeded)
            for _ in range(max(0, wanted - occupied)):
                active.append(self._create_pod(job, track, None))
        status["active"] = len(active)
        status["ready"] = ready
        self._write(job, status)

    def _apply_pod_failure_policy(self, spec: dict, pod: dict, track: _Tracking) -> None:
        policy = spec.get("podFailurePolicy") or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        for idx, rule in enumerate(policy.get("rules") or []):
            on_codes = rule.get("onExitCodes")
            if not on_codes:
                continue
            for cs in statuses:
                if on_codes.get("containerName") and cs.get("name") != on_codes["containerName"]:
                    continue
                term = (cs.get("state") or {}).get("terminated") or {}
                code = term.get("exitCode")
                if code is None or code == 0:
                    continue
                values = on_codes.get("values") or []
                hit = code in values if on_codes.get("operator", "In") == "In" else code not in values
                if not hit:
                    continue
                action = rule.get("action")
                puid = pod["metadata"]["uid"]
                if action == "Ignore":
                    track.counted[puid] = "ignored"
                elif action == "FailJob" and track.fail_job is None:
                    md = pod["metadata"]
                    track.fail_job = ("PodFailurePolicy",
                                      f"Container {cs.get('name')} for pod {md['namespace']}/{md['name']} failed "
                                      f"with exit code {code} matching FailJob rule at index {idx}")
                return

    def _create_pod(self, job: dict, track: _Tracking, index: int | None) -> dict:
        md = job["metadata"]
        template = clone((job.get("spec") or {}).get("template") or {})
        tmd = template.get("metadata") or {}
        prefix = f"{md['name']}-" if index is None else f"{md['name']}-{index}-"
        store = self.store
        while True:
            pod_name = prefix + random_suffix()
            if store.get(PODS, md["namespace"], pod_name) is None:
                break
        labels = dict(tmd.get("labels") or {})
        annotations = dict(tmd.get("annotations") or {})
        spec = template.get("spec") or {}
        if index is not None:
            labels[COMPLETION_INDEX] = str(index)
            annotations[COMPLETION_INDEX] = str(index)
            for key in ("initContainers", "containers"):
                for c in spec.get(key) or []:
                    env = c.setdefault("env", [])
                    if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                        env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                            "apiVersion": "v1",
                            "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})
            spec.setdefault("hostname", f"{md['name']}-{index}")
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
        ])
        pod_md = {"name": pod_name, "generateName": prefix, "namespace": md["namespace"], "labels": labels,
                  "ownerReferences": [owner_reference(job)]}
        if annotations:
            pod_md["annotations"] = annotations
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_md, "spec": spec,
               "status": {"phase": "Pending", "qosClass": "BestEffort"}}
        created = store.create(PODS, pod)
        puid = created["metadata"]["uid"]
        track.known.add(puid)
        if index is not None:
            track.index_of[puid] = index
        self.recorder.record(job, "Normal", "SuccessfulCreate", f"Created pod: {pod_name}", "job-controller")
        return created

    def _delete_pod(self, pod: dict) -> None:
        md = pod["metadata"]
        try:
            self.store.delete(PODS, md["namespace"], md["name"])
        except Exception:
            log.debug("pod %s already gone", md["name"])

    def _write(self, job: dict, status: dict) -> None:
        md = job["metadata"]
        # Like the real API: active/succeeded/failed are omitempty (absent when 0, i.e. None in the
        # client models) while ready/terminating are pointers and stay present as 0.
        for key in ("active", "succeeded", "failed"):
            if status.get(key) == 0:
                del status[key]

        def apply(obj: dict) -> None:
            obj["status"] = status
        self.store.mutate(JOBS, md["namespace"], md["name"], apply)

    def _schedule_ttl(self, job: dict, status: dict) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        conds = status.get("conditions") or []
        done = get_condition(conds, "Complete") if condition_true(conds, "Complete") else \
            get_condition(conds, "Failed") if condition_true(conds, "Failed") else None
        if done is None:
            return
        finished_at = parse_ts(status.get("completionTime") or done["lastTransitionTime"])
        due = finished_at + ttl
        md = job["metadata"]
        if time.time() >= due:
            try:
                self.store.delete(JOBS, md["namespace"], md["name"], propagation=FOREGROUND,
                                  preconditions={"uid": md["uid"]})
            except Exception:
                log.debug("ttl delete of %s failed", md["name"])
        else:
            self._schedule(due, (md["namespace"], md["name"]))


def _format_indexes(indexes: set[int]) -> str:
    out: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)
