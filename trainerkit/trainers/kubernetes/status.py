"""A training's TrainingInfo, read from its Job and pods alone (pure functions).

The rules, first match wins:

* the Job carries the ``trainerkit.io/canceled`` annotation -> ``CANCELED``
  (recorded only on a Job that had not finished: see ``manifest.cancel_patch``);
* a ``Failed`` or ``FailureTarget`` condition -> ``ERRORED``, with the error the
  pod entry point wrote to the container's termination message (the training's
  own exception and traceback), else a description of how the container died,
  then the Job's reason (``BackoffLimitExceeded``, ``DeadlineExceeded``...);
* a ``Complete`` or ``SuccessCriteriaMet`` condition -> ``COMPLETED``;
* a container of one of its pods runs, or has run -> ``RUNNING``;
* otherwise ``QUEUED``, with why in ``detail`` (unschedulable, image pull
  back-off, a missing Secret...).

Progress is the ``trainerkit.io/progress`` annotation the pod sets on itself,
or the last report in the termination message, whichever is newer.

A multi-node training (an Indexed Job with several completions) is read over
all its pods, one per node (the completion index):

* ``ERRORED`` names the node that failed first, ``node <k>``, with its pod and
  why (its own error, or how its container ended); nodes stopped because of it
  (SIGTERM) are not blamed;
* ``RUNNING`` once every node's container has started; until then ``QUEUED``,
  with a detail that says how many of the pods run and why the first missing
  one does not; a node waiting for rank 0 (the ``trainerkit.io/rendezvous``
  annotation its pod entry point sets) shows in the detail;
* progress comes from node 0 (rank 0) only;
* with retries, every pod that failed (a crash, or an eviction) made the group
  restart: ``attempt`` counts them, the training stays ``RUNNING`` between
  attempts (``detail``: ``attempt 2 of 3: ...``), and a final failure names the
  node that failed last.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Mapping, Optional, Sequence

from ...capabilities import levels_from_json
from ...errors import TrainingCanceledError, TrainingError
from ...info import ErrorDetail, ProgressReport, TrainingInfo, TrainingStatus, qualified_name
from ...runner import Outcome
from .config import ENV_PROCS_PER_NODE
from .manifest import (
    ANNOTATION_CANCELED,
    ANNOTATION_CAPABILITIES,
    ANNOTATION_COMPLETION_INDEX,
    ANNOTATION_MODEL_NAME,
    ANNOTATION_MODULE,
    ANNOTATION_PARAMETERS,
    ANNOTATION_PROGRESS,
    ANNOTATION_RENDEZVOUS,
    ANNOTATION_SAVE_PATH,
    ANNOTATION_SUBMITTED,
    ANNOTATION_TAGS,
    ANNOTATION_TRAINER_NAME,
    CONTAINER_NAME,
)

#: Type name of errors that describe the Job or container rather than a Python exception.
JOB_ERROR_TYPE = qualified_name(TrainingError)
CANCELED_ERROR_TYPE = qualified_name(TrainingCanceledError)

_FAILED = ("Failed", "FailureTarget")
_COMPLETE = ("Complete", "SuccessCriteriaMet")


def owned_pods(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods whose controller is this very Job (not an older Job of the same
    name), oldest first."""
    uid = job.get("metadata", {}).get("uid")
    owned = [
        pod
        for pod in pods
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in pod.get("metadata", {}).get("ownerReferences") or ()
        )
    ]
    owned.sort(key=lambda pod: (pod["metadata"].get("creationTimestamp") or "", pod["metadata"].get("name")))
    return owned


def pods_settled(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    """True when no pod of the Job is still pending or running.

    Jobs and pods arrive through separate watches, so a Job may be seen
    finished a moment before its pod's final status (with the termination
    message that holds the training's error) is; a finished training is
    reported once its pods have settled too.
    """
    for pod in owned_pods(job, pods):
        phase = (pod.get("status") or {}).get("phase")
        state = _container_status(pod)
        if phase in ("Succeeded", "Failed") or (state and "terminated" in (state.get("state") or {})):
            continue
        return False
    return True


def training_info(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> TrainingInfo:
    """The TrainingInfo of the training whose Job is ``job``; ``pods`` may
    include pods of other Jobs (they are ignored)."""
    metadata = job.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or () if c.get("status") == "True"}
    pods = owned_pods(job, pods)
    containers = [(pod, _container_status(pod)) for pod in pods]
    nodes = node_count(job)

    submission = parse_time(annotations.get(ANNOTATION_SUBMITTED)) or parse_time(
        metadata.get("creationTimestamp")
    )
    # Kubernetes timestamps have whole seconds: a pod that started within the
    # second it was submitted would seem to start before its submission.
    start = _not_before(_earliest_start(containers), submission)
    if nodes > 1:  # rank 0's progress is the training's
        rank0 = [(pod, state) for pod, state in containers if pod_index(pod) == 0]
        progress = _latest_progress([pod for pod, _ in rank0], rank0)
    else:
        progress = _latest_progress(pods, containers)
    record = dict(
        id=metadata.get("name", ""),
        trainer_name=annotations.get(ANNOTATION_TRAINER_NAME, ""),
        module=annotations.get(ANNOTATION_MODULE, ""),
        save_path=annotations.get(ANNOTATION_SAVE_PATH) or None,
        model_name=annotations.get(ANNOTATION_MODEL_NAME),
        tags=_tags(annotations.get(ANNOTATION_TAGS)),
        submission_time=submission,
        progress=progress,
        # Each pod of a one-node Job is an attempt (max_retries/backoff_limit replace
        # crashed ones); each failed pod of a multi-node training restarted the group.
        attempt=_group_attempt(job, containers, conditions) if nodes > 1
        else max(1, sum(1 for _, state in containers if state and _ever_started(state))),
        ranks=nodes * procs_per_node(job),
        **_recorded(annotations),
    )

    canceled = _canceled(annotations.get(ANNOTATION_CANCELED))
    if canceled is not None:
        time, reason = canceled
        return TrainingInfo(
            **record,
            status=TrainingStatus.CANCELED,
            start_time=start,
            completion_time=time or parse_time(metadata.get("creationTimestamp")),
            errors=(ErrorDetail(CANCELED_ERROR_TYPE, reason),) if reason else (),
        )
    # Kubernetes timestamps have whole seconds; the pod entry point's outcome
    # says to the microsecond when the training itself ended.
    ended = _outcome_time(containers)
    failed = next((conditions[t] for t in _FAILED if t in conditions), None)
    if failed is not None:
        return TrainingInfo(
            **record,
            status=TrainingStatus.ERRORED,
            start_time=start,
            completion_time=ended or parse_time(failed.get("lastTransitionTime")) or _now(),
            errors=_node_errors(job, failed, containers) if nodes > 1 else _errors(job, failed, containers),
        )
    complete = next((conditions[t] for t in _COMPLETE if t in conditions), None)
    if complete is not None:
        return TrainingInfo(
            **record,
            status=TrainingStatus.COMPLETED,
            start_time=start or _not_before(parse_time(status.get("startTime")), submission),
            completion_time=ended
            or parse_time(status.get("completionTime"))
            or parse_time(complete.get("lastTransitionTime"))
            or _now(),
        )
    if nodes > 1:
        return _multi_node_progressing(job, record, start, containers, nodes)
    running = any("running" in (state.get("state") or {}) for _, state in containers if state)
    if running or start is not None:
        attempts = sum(1 for _, state in containers if state and _ever_started(state))
        detail = "" if running else "between attempts: the last pod failed and the Job is starting another"
        if attempts > 1:
            detail = _attempt_text(job, attempts) + (f"; {detail}" if detail else "")
        return TrainingInfo(**record, status=TrainingStatus.RUNNING, start_time=start, detail=detail)
    return TrainingInfo(**record, status=TrainingStatus.QUEUED, detail=_queued_detail(job, pods, containers))


def _backoff_limit(job: Mapping[str, Any]) -> Optional[int]:
    """The Job's ``backoffLimit``, or None when it has none."""
    limit = (job.get("spec") or {}).get("backoffLimit")
    return limit if isinstance(limit, int) else None


def _attempt_text(job: Mapping[str, Any], attempt: int) -> str:
    """``attempt k of n``: n the attempts the Job's backoffLimit allows (? without one)."""
    limit = _backoff_limit(job)
    return f"attempt {attempt} of {limit + 1 if limit is not None else '?'}"


# -- multi-node ---------------------------------------------------------------------------


def node_count(job: Mapping[str, Any]) -> int:
    """How many nodes the training of ``job`` spans (1 unless it is an Indexed Job)."""
    spec = job.get("spec") or {}
    completions = spec.get("completions")
    if spec.get("completionMode") == "Indexed" and isinstance(completions, int):
        return max(1, completions)
    return 1


def procs_per_node(job: Mapping[str, Any]) -> int:
    """The rank processes each pod of ``job`` runs (its ``TRAINERKIT_PROCS_PER_NODE``; 1 without)."""
    containers = ((((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or ()
    for container in containers:
        if container.get("name") != CONTAINER_NAME:
            continue
        for variable in container.get("env") or ():
            if variable.get("name") == ENV_PROCS_PER_NODE:
                try:
                    return max(1, int(variable.get("value") or 1))
                except ValueError:
                    return 1
    return 1


def pod_index(pod: Mapping[str, Any]) -> Optional[int]:
    """The completion index (node rank) of a pod of an Indexed Job, or None."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_COMPLETION_INDEX)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _multi_node_progressing(
    job: Mapping[str, Any],
    record: Mapping[str, Any],
    start: Optional[datetime.datetime],
    containers: Sequence[tuple[Mapping[str, Any], Any]],
    nodes: int,
) -> TrainingInfo:
    """RUNNING once every node's container has started, else QUEUED saying how many run."""
    latest: dict[int, tuple[Mapping[str, Any], Any]] = {}
    for pod, state in containers:  # oldest first: the newest pod of each index wins
        index = pod_index(pod)
        if index is not None and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            latest[index] = (pod, state)
    started = {index for index, (_, state) in latest.items() if state and _ever_started(state)}
    attempt = record.get("attempt") or 1
    prefix = f"{_attempt_text(job, attempt)}: " if attempt > 1 else ""
    if len(started) == nodes:
        waiting = []
        for index in sorted(latest):
            pod, _ = latest[index]
            text = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_RENDEZVOUS)
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = None
            if isinstance(data, dict) and data.get("waiting"):
                since = parse_time(data.get("since"))
                waited = f" (for {(_now() - since).total_seconds():.0f} s)" if since else ""
                waiting.append(f"node {index} {data['waiting']}{waited}")
        detail = "; ".join(waiting)
        return TrainingInfo(**record, status=TrainingStatus.RUNNING, start_time=start,
                            detail=prefix + detail if detail or not prefix else prefix.rstrip(": "))
    running = sum(1 for index in started)
    detail = f"{running} of {nodes} pods running"
    if (job.get("spec") or {}).get("suspend"):
        detail += "; " + _queued_detail(job, [], [])
    else:
        missing = next((index for index in range(nodes) if index not in started), None)
        if missing is not None and missing in latest:
            pod, state = latest[missing]
            detail += f"; node {missing}: " + _queued_detail(job, [pod], [(pod, state)])
        elif missing is not None:
            detail += f"; node {missing}: waiting for the Job controller to create its pod"
    if attempt > 1:  # between attempts: the group waits for a replaced pod
        return TrainingInfo(**record, status=TrainingStatus.RUNNING, start_time=start, detail=prefix + detail)
    return TrainingInfo(**record, status=TrainingStatus.QUEUED, detail=detail)


def _group_failures(containers: Sequence[tuple[Mapping[str, Any], Any]]) -> int:
    """The pods of a multi-node training that failed on their own (a crash, an
    exception, an eviction), not the ones stopped because the Job ended."""
    count = 0
    for pod, state in containers:
        terminated = _terminated(state)
        if terminated is None or terminated.get("exitCode") == 0:
            continue
        disrupted = any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or ())
        if terminated.get("exitCode") != 143 or disrupted:
            count += 1
    return count


def _group_attempt(
    job: Mapping[str, Any], containers: Sequence[tuple[Mapping[str, Any], Any]], conditions: Mapping[str, Any]
) -> int:
    """Which attempt a multi-node training is at: each failed pod restarted the
    group, except the one that failed the Job."""
    failures = _group_failures(containers)
    limit = _backoff_limit(job)
    if limit is None:
        limit = failures
    if any(t in conditions for t in _FAILED):  # the last failure started no attempt
        return max(1, min(failures, limit + 1))
    return min(failures, limit) + 1


def _node_errors(
    job: Mapping[str, Any],
    condition: Mapping[str, Any],
    containers: Sequence[tuple[Mapping[str, Any], Any]],
) -> tuple[ErrorDetail, ...]:
    """The errors of a failed multi-node training: the node that failed first, named
    ``node <k>`` with its pod and why, then the Job's reason."""
    candidates = []
    for pod, state in containers:
        terminated = _terminated(state)
        if terminated is None or terminated.get("exitCode") == 0:
            continue
        outcome = termination_outcome(state)
        if outcome is not None and outcome.status is TrainingStatus.ERRORED:
            rank = 0  # the training itself failed there
        elif outcome is None and terminated.get("exitCode") != 143:
            rank = 1  # the process died without reporting (killed, out of memory, crashed)
        else:
            rank = 2  # stopped from outside (SIGTERM), most likely because another node failed
        finished = parse_time(terminated.get("finishedAt")) or _now()
        candidates.append((rank, finished, pod_index(pod) if pod_index(pod) is not None else 1 << 30, pod, state, outcome))
    errors: list[ErrorDetail] = []
    limit = _backoff_limit(job)
    retried = limit is not None and limit > 0
    if candidates:
        # Without retries the node that failed first; with them, the last attempt's.
        order = (lambda c: (c[0] == 2, -c[1].timestamp(), c[2])) if retried else (lambda c: c[:3])
        _, _, index, pod, state, outcome = min(candidates, key=order)
        name = (pod.get("metadata") or {}).get("name")
        where = f"node {index} (pod {name})"
        if outcome is not None and outcome.status is TrainingStatus.ERRORED and outcome.errors:
            first, *rest = outcome.errors
            errors.append(ErrorDetail(first.type, f"{where}: {first.message}", first.traceback))
            errors.extend(rest)
        else:
            errors.append(ErrorDetail(JOB_ERROR_TYPE, f"{where}: " + _describe_exit(job, pod, _terminated(state) or {})))
    job_error = _errors(job, condition, ())[-1]
    if condition.get("reason") == "BackoffLimitExceeded" and retried:
        job_error = ErrorDetail(
            JOB_ERROR_TYPE,
            f"Job {(job.get('metadata') or {}).get('name')} failed (BackoffLimitExceeded): nodes failed "
            f"{_group_failures(containers)} times, and max_retries ({limit}) allows {limit} restarts of the group",
        )
    elif condition.get("reason") == "BackoffLimitExceeded":
        job_error = ErrorDetail(
            JOB_ERROR_TYPE,
            f"Job {(job.get('metadata') or {}).get('name')} failed (BackoffLimitExceeded): a node failed, "
            "so every node of the multi-node training was stopped (its pods are never restarted one by one)",
        )
    return tuple(errors) + (job_error,)


# -- pieces -----------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def parse_time(text: Any) -> Optional[datetime.datetime]:
    """An aware datetime from a Kubernetes timestamp (``2025-01-02T03:04:05Z``), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _container_status(pod: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return next((s for s in statuses if s.get("name") == CONTAINER_NAME), None)


def _ever_started(state: Mapping[str, Any]) -> bool:
    current = state.get("state") or {}
    return "running" in current or "terminated" in current or "terminated" in (state.get("lastState") or {})


def _not_before(
    time: Optional[datetime.datetime], floor: Optional[datetime.datetime]
) -> Optional[datetime.datetime]:
    if time is None or floor is None:
        return time
    return max(time, floor)


def _earliest_start(containers: Sequence[tuple[Mapping[str, Any], Any]]) -> Optional[datetime.datetime]:
    times = []
    for _, state in containers:
        if not state:
            continue
        for section in (state.get("state") or {}, state.get("lastState") or {}):
            for phase in ("running", "terminated"):
                started = parse_time((section.get(phase) or {}).get("startedAt"))
                if started is not None:
                    times.append(started)
    return min(times) if times else None


def _outcome_time(containers: Sequence[tuple[Mapping[str, Any], Any]]) -> Optional[datetime.datetime]:
    """When the newest pod's training ended, by its own report."""
    for _, state in reversed(containers):
        outcome = termination_outcome(state)
        if outcome is not None:
            return outcome.time
    return None


def _tags(text: Optional[str]) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        tags = json.loads(text)
    except ValueError:
        return ()
    return tuple(tag for tag in tags if isinstance(tag, str)) if isinstance(tags, list) else ()


def _canceled(text: Optional[str]) -> Optional[tuple[Optional[datetime.datetime], str]]:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return parse_time(data.get("time")), str(data.get("reason") or "")


def termination_outcome(state: Optional[Mapping[str, Any]]) -> Optional[Outcome]:
    """The :class:`~trainerkit.rundir.Outcome` the pod entry point wrote to its
    termination message (the latest one of the container), or None."""
    if not state:
        return None
    for section in (state.get("state") or {}, state.get("lastState") or {}):
        message = (section.get("terminated") or {}).get("message")
        if not message:
            continue
        try:
            data = json.loads(message)
            return Outcome.from_dict(data) if isinstance(data, dict) and "status" in data else None
        except (ValueError, TypeError, KeyError):
            continue
    return None


def _latest_progress(
    pods: Sequence[Mapping[str, Any]], containers: Sequence[tuple[Mapping[str, Any], Any]]
) -> Optional[ProgressReport]:
    reports: list[ProgressReport] = []
    for pod in pods:
        text = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_PROGRESS)
        if text:
            report = _progress(text)
            if report is not None:
                reports.append(report)
    for _, state in containers:
        outcome = termination_outcome(state)
        if outcome is not None and outcome.progress is not None:
            reports.append(outcome.progress)
    if not reports:
        return None
    epoch = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return max(reports, key=lambda report: report.time or epoch)


def _progress(data: Any) -> Optional[ProgressReport]:
    try:
        if isinstance(data, str):
            data = json.loads(data)
        return ProgressReport.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def _errors(
    job: Mapping[str, Any],
    condition: Mapping[str, Any],
    containers: Sequence[tuple[Mapping[str, Any], Any]],
) -> tuple[ErrorDetail, ...]:
    errors: list[ErrorDetail] = []
    # The newest pod that ended tells what went wrong inside it.
    for pod, state in reversed(containers):
        outcome = termination_outcome(state)
        if outcome is not None:
            if outcome.status is TrainingStatus.ERRORED:
                errors.extend(outcome.errors)
            # Otherwise the pod was stopped from outside (SIGTERM: a deadline,
            # an eviction): the Job's reason below says why.
            break
        terminated = _terminated(state)
        if terminated is not None and terminated.get("exitCode") != 0:
            errors.append(ErrorDetail(JOB_ERROR_TYPE, _describe_exit(job, pod, terminated)))
            break
    reason = condition.get("reason") or "Failed"
    message = condition.get("message") or ""
    spec = job.get("spec") or {}
    explanation = {
        "DeadlineExceeded": f"it ran longer than its active_deadline ({spec.get('activeDeadlineSeconds')} s)",
        "BackoffLimitExceeded": (
            f"its pods failed {(job.get('status') or {}).get('failed', '?')} time(s), more than "
            f"backoff_limit ({spec.get('backoffLimit')}) allows"
        ),
        "PodFailurePolicy": "the training itself failed, so the Job was not retried",
    }.get(reason, "")
    errors.append(
        ErrorDetail(
            JOB_ERROR_TYPE,
            f"Job {job.get('metadata', {}).get('name')} failed ({reason}"
            + (f": {message}" if message else "")
            + ")"
            + (f": {explanation}" if explanation else ""),
        )
    )
    return tuple(errors)


def _terminated(state: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    if not state:
        return None
    return (state.get("state") or {}).get("terminated") or (state.get("lastState") or {}).get("terminated")


def _describe_exit(job: Mapping[str, Any], pod: Mapping[str, Any], terminated: Mapping[str, Any]) -> str:
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or ""
    text = f"the training container of pod {pod['metadata'].get('name')} exited with code {code}"
    if reason:
        text += f" ({reason})"
    if reason == "OOMKilled":
        text += ": it ran out of memory; raise resources.limits.memory in the trainer's config"
    elif isinstance(code, int) and code > 128:
        text += f": killed by signal {code - 128}"
    output = (terminated.get("message") or "").strip()
    if output:
        text += f" before trainerkit's pod entry point reported an outcome; its last output:\n{output}"
        if "No module named 'trainerkit'" in output or "No module named trainerkit" in output:
            image = (job.get("spec") or {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
            text += f"\ntrainerkit is not installed in the image {image}: install it there (docs/kubernetes.md)"
    return text


def _queued_detail(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    containers: Sequence[tuple[Mapping[str, Any], Any]],
) -> str:
    if (job.get("spec") or {}).get("suspend"):
        return "the Job is suspended (kubectl patch job ... -p '{\"spec\":{\"suspend\":false}}' resumes it)"
    if not pods:
        return "waiting for the Job controller to create the pod"
    pod, state = containers[-1]
    name = pod["metadata"].get("name")
    waiting = ((state or {}).get("state") or {}).get("waiting") if state else None
    if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
        return f"pod {name}: {waiting.get('reason')}" + (f": {waiting['message']}" if waiting.get("message") else "")
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return (
                f"pod {name} cannot be scheduled ({condition.get('reason') or 'Unschedulable'}"
                + (f": {condition['message']}" if condition.get("message") else "")
                + ")"
            )
    if waiting:
        return f"pod {name}: {waiting.get('reason')}" + (f": {waiting['message']}" if waiting.get("message") else "")
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return f"pod {name} is {phase}"


def _recorded(annotations: Mapping[str, str]) -> dict[str, Any]:
    """The capabilities and parameters a Job's annotations keep (see manifest.record_annotations)."""
    recorded: dict[str, Any] = {}
    try:
        recorded["capabilities"] = levels_from_json(json.loads(annotations.get(ANNOTATION_CAPABILITIES) or "{}"))
    except ValueError:
        pass
    try:
        parameters = json.loads(annotations.get(ANNOTATION_PARAMETERS) or "{}")
    except ValueError:
        parameters = {}
    if isinstance(parameters, dict) and isinstance(parameters.get("values"), dict):
        recorded["parameters"] = parameters["values"]
        recorded["parameters_by_repr"] = tuple(str(name) for name in parameters.get("by_repr") or ())
    return recorded
