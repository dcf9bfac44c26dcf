"""A training's status, errors and progress, read from its Job and pods alone."""

from __future__ import annotations

import datetime
import json

from trainerkit.info import ErrorDetail, ProgressReport, TrainingStatus
from trainerkit.runner import Outcome
from trainerkit.trainers.kubernetes.manifest import ANNOTATION_CANCELED, ANNOTATION_PROGRESS
from trainerkit.trainers.kubernetes.status import training_info

UID = "job-uid-1"


def job(conditions=(), annotations=None, **spec):
    return {
        "metadata": {
            "name": "cluster--abc",
            "uid": UID,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {
                "trainerkit.io/trainer-name": "cluster",
                "trainerkit.io/module": "pkg.mod:Model",
                "trainerkit.io/save-path": "/models/run",
                "trainerkit.io/tags": '["a", "b"]',
                "trainerkit.io/submission-time": "2026-01-01T00:00:00+00:00",
                **(annotations or {}),
            },
        },
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 60, **spec},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": "2026-01-01T00:05:00Z"}
                for t, r, m in conditions
            ]
        },
    }


def pod(name="cluster--abc-x1", state=None, last_state=None, conditions=(), annotations=None, owner=UID,
        created="2026-01-01T00:00:01Z"):
    status = {"phase": "Pending", "conditions": list(conditions)}
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state, "lastState": last_state or {}}]
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "annotations": annotations or {},
            "ownerReferences": [{"kind": "Job", "uid": owner, "controller": True}],
        },
        "status": status,
    }


def outcome_message(status, errors=(), progress=None):
    return json.dumps(
        Outcome(status=status, time=_now(), errors=tuple(errors), progress=progress).to_dict()
    )


def _now():
    return datetime.datetime(2026, 1, 1, 0, 4, tzinfo=datetime.timezone.utc)


def test_record_fields_come_from_the_job_annotations():
    info = training_info(job(), [])
    assert (info.id, info.trainer_name, info.module, info.save_path) == (
        "cluster--abc", "cluster", "pkg.mod:Model", "/models/run"
    )
    assert info.tags == ("a", "b")
    assert info.submission_time.isoformat() == "2026-01-01T00:00:00+00:00"


def test_no_pod_yet_is_queued():
    info = training_info(job(), [])
    assert info.status is TrainingStatus.QUEUED
    assert "waiting for the Job controller" in info.detail


def test_unschedulable_pod_is_queued_with_the_scheduler_message():
    unschedulable = pod(
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    )
    info = training_info(job(), [unschedulable])
    assert info.status is TrainingStatus.QUEUED
    assert "cannot be scheduled (Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.)" in info.detail


def test_image_pull_back_off_is_queued_with_the_reason():
    waiting = pod(state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}})
    info = training_info(job(), [waiting])
    assert info.status is TrainingStatus.QUEUED
    assert "ImagePullBackOff: Back-off pulling image" in info.detail


def test_running_container_is_running_since_it_started():
    running = pod(state={"running": {"startedAt": "2026-01-01T00:01:00Z"}})
    info = training_info(job(), [running])
    assert info.status is TrainingStatus.RUNNING
    assert info.start_time.isoformat() == "2026-01-01T00:01:00+00:00"


def test_complete_job_is_completed_with_its_completion_time():
    done = job(conditions=[("Complete", "", "")])
    done["status"]["completionTime"] = "2026-01-01T00:04:30Z"
    info = training_info(done, [pod(state={"terminated": {"exitCode": 0, "startedAt": "2026-01-01T00:01:00Z"}})])
    assert info.status is TrainingStatus.COMPLETED
    assert info.completion_time.isoformat() == "2026-01-01T00:04:30+00:00"


def test_failed_job_reports_the_training_traceback_then_the_job_reason():
    error = ErrorDetail("pkg.mod.BadData", "column x is empty", "Traceback (most recent call last):\n  ...\n")
    failed_pod = pod(state={"terminated": {"exitCode": 4, "message": outcome_message(TrainingStatus.ERRORED, [error])}})
    info = training_info(job(conditions=[("Failed", "PodFailurePolicy", "Container trainer failed with exit code 4")]),
                         [failed_pod])
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0] == error
    assert info.errors[1].message.startswith("Job cluster--abc failed (PodFailurePolicy")


def test_deadline_is_named_with_the_configured_limit():
    info = training_info(job(conditions=[("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]),
                         [])
    assert info.status is TrainingStatus.ERRORED
    assert "DeadlineExceeded" in info.errors[0].message
    assert "active_deadline (60 s)" in info.errors[0].message


def test_oom_killed_container_says_to_raise_the_memory_limit():
    killed = pod(state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    info = training_info(job(conditions=[("Failed", "BackoffLimitExceeded", "")]), [killed])
    assert "exited with code 137 (OOMKilled)" in info.errors[0].message
    assert "raise resources.limits.memory" in info.errors[0].message


def test_crash_before_the_entry_point_shows_the_log_tail_and_hints_at_the_image():
    crashed = pod(state={"terminated": {
        "exitCode": 1, "message": "/usr/bin/python: Error while finding module specification for "
        "'trainerkit.trainers.kubernetes.pod_entry' (ModuleNotFoundError: No module named 'trainerkit')"}})
    failed = job(conditions=[("Failed", "BackoffLimitExceeded", "")])
    failed["spec"]["template"] = {"spec": {"containers": [{"image": "registry.example.com/x:1"}]}}
    message = training_info(failed, [crashed]).errors[0].message
    assert "No module named 'trainerkit'" in message
    assert "trainerkit is not installed in the image registry.example.com/x:1" in message


def test_canceled_annotation_wins_and_keeps_its_reason():
    canceled = job(
        annotations={ANNOTATION_CANCELED: json.dumps({"time": "2026-01-01T00:03:00+00:00", "reason": "canceled while running"})},
        suspend=True,
    )
    info = training_info(canceled, [pod(state={"running": {"startedAt": "2026-01-01T00:01:00Z"}})])
    assert info.status is TrainingStatus.CANCELED
    assert info.completion_time.isoformat() == "2026-01-01T00:03:00+00:00"
    assert info.errors == (ErrorDetail("trainerkit.errors.TrainingCanceledError", "canceled while running"),)


def test_suspended_job_without_cancel_is_queued_and_says_so():
    info = training_info(job(suspend=True), [])
    assert info.status is TrainingStatus.QUEUED
    assert "suspended" in info.detail


def test_pods_of_an_older_job_with_the_same_name_are_ignored():
    stale = pod(name="cluster--abc-old", state={"running": {"startedAt": "2026-01-01T00:01:00Z"}}, owner="older-uid")
    assert training_info(job(), [stale]).status is TrainingStatus.QUEUED


def test_progress_is_the_newest_of_pod_annotation_and_termination_message():
    older = ProgressReport(step=1, total=3, metrics={"loss": 0.5}, time=_now().replace(minute=1))
    newer = ProgressReport(step=3, total=3, metrics={"loss": 0.1}, time=_now().replace(minute=3))
    annotated = pod(
        state={"terminated": {"exitCode": 0, "message": outcome_message(TrainingStatus.COMPLETED, progress=newer)}},
        annotations={ANNOTATION_PROGRESS: json.dumps(older.to_dict())},
    )
    assert training_info(job(), [annotated]).progress == newer
    running = pod(state={"running": {}}, annotations={ANNOTATION_PROGRESS: json.dumps(older.to_dict())})
    assert training_info(job(), [running]).progress == older


def test_a_retry_between_attempts_stays_running_and_counts_attempts():
    first = pod(name="cluster--abc-a", state={"terminated": {"exitCode": 137, "startedAt": "2026-01-01T00:01:00Z"}})
    second = pod(name="cluster--abc-b", state={"running": {"startedAt": "2026-01-01T00:02:00Z"}},
                 created="2026-01-01T00:01:30Z")
    info = training_info(job(backoffLimit=2), [first, second])
    assert info.status is TrainingStatus.RUNNING
    assert info.detail == "attempt 2 of 3"
    assert info.start_time.isoformat() == "2026-01-01T00:01:00+00:00"


def test_a_pod_started_within_its_submission_second_does_not_start_before_it_was_submitted():
    # Kubernetes timestamps have whole seconds; the submission annotation has microseconds.
    submitted = "2026-01-01T00:01:00.750000+00:00"
    info = training_info(
        job(annotations={"trainerkit.io/submission-time": submitted}),
        [pod(state={"running": {"startedAt": "2026-01-01T00:01:00Z"}})],
    )
    assert info.status is TrainingStatus.RUNNING
    assert info.start_time == info.submission_time == datetime.datetime.fromisoformat(submitted)


# -- multi-node trainings (issue 16) -------------------------------------------------------

INDEX = "batch.kubernetes.io/job-completion-index"


def node_job(nodes=3, conditions=()):
    return job(conditions, completionMode="Indexed", completions=nodes, parallelism=nodes,
               template={"spec": {"containers": [{"name": "trainer", "env": [
                   {"name": "TRAINERKIT_PROCS_PER_NODE", "value": "2"}]}]}})


def node_pod(index, state, annotations=None, finished="2026-01-01T00:02:00Z", message=None, code=None):
    if state == "running":
        current = {"running": {"startedAt": "2026-01-01T00:01:00Z"}}
    elif state == "terminated":
        current = {"terminated": {"exitCode": code, "startedAt": "2026-01-01T00:01:00Z", "finishedAt": finished,
                                  **({"message": message} if message else {})}}
    else:
        current = {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": {"name": f"cluster--abc-{index}-xyz", "creationTimestamp": "2026-01-01T00:00:01Z",
                     "ownerReferences": [{"uid": UID, "controller": True}],
                     "annotations": {INDEX: str(index), **(annotations or {})}},
        "status": {"phase": "Running" if state == "running" else "Pending",
                   "containerStatuses": [{"name": "trainer", "state": current}]},
    }


def outcome_text(status, errors=(), step=None):
    progress = ProgressReport(step=step, time=datetime.datetime(2026, 1, 1, 0, 1, tzinfo=datetime.timezone.utc)) if step else None
    return json.dumps(Outcome(status=status, time=datetime.datetime(2026, 1, 1, 0, 2, tzinfo=datetime.timezone.utc),
                              errors=tuple(errors), progress=progress).to_dict())


def test_queued_until_every_node_runs_saying_how_many_do():
    info = training_info(node_job(), [node_pod(0, "running"), node_pod(1, "running"), node_pod(2, "waiting")])
    assert info.status is TrainingStatus.QUEUED
    assert info.detail == "2 of 3 pods running; node 2: pod cluster--abc-2-xyz: ContainerCreating"
    assert info.ranks == 6
    missing = training_info(node_job(), [node_pod(0, "running")])
    assert missing.detail == "1 of 3 pods running; node 1: waiting for the Job controller to create its pod"


def test_running_when_every_node_runs_and_a_rendezvous_wait_shows_in_the_detail():
    waiting = {"trainerkit.io/rendezvous": json.dumps({"waiting": "waiting for rank 0 at x-0.x:29500: its name does not resolve yet"})}
    info = training_info(node_job(), [node_pod(0, "running"), node_pod(1, "running", waiting), node_pod(2, "running")])
    assert info.status is TrainingStatus.RUNNING
    assert info.detail == "node 1 waiting for rank 0 at x-0.x:29500: its name does not resolve yet"
    plain = training_info(node_job(), [node_pod(i, "running") for i in range(3)])
    assert plain.status is TrainingStatus.RUNNING and plain.detail == ""


def test_progress_comes_from_rank_0_only():
    newer = {"trainerkit.io/progress": json.dumps(ProgressReport(step=9, time=datetime.datetime(2026, 1, 1, 0, 3, tzinfo=datetime.timezone.utc)).to_dict())}
    older = {"trainerkit.io/progress": json.dumps(ProgressReport(step=2, time=datetime.datetime(2026, 1, 1, 0, 1, tzinfo=datetime.timezone.utc)).to_dict())}
    info = training_info(node_job(2), [node_pod(0, "running", older), node_pod(1, "running", newer)])
    assert info.progress.step == 2


def test_the_first_failed_node_is_named_not_the_nodes_stopped_because_of_it():
    boom = ErrorDetail("pkg.Boom", "rank 3: no data", "Traceback ...")
    pods = [
        # stopped by SIGTERM before node 1's failure was even recorded (times have whole seconds)
        node_pod(0, "terminated", finished="2026-01-01T00:01:30Z", code=143,
                 message=outcome_text(TrainingStatus.CANCELED)),
        node_pod(1, "terminated", code=4, message=outcome_text(TrainingStatus.ERRORED, [boom])),
        node_pod(2, "terminated", code=137),
    ]
    info = training_info(node_job(3, [("Failed", "PodFailurePolicy", "Container trainer ... exit code 4")]), pods)
    assert info.status is TrainingStatus.ERRORED
    assert info.errors[0] == ErrorDetail("pkg.Boom", "node 1 (pod cluster--abc-1-xyz): rank 3: no data", "Traceback ...")
    assert "PodFailurePolicy" in info.errors[-1].message


def test_a_killed_node_is_named_with_how_it_died():
    pods = [node_pod(0, "terminated", code=143, message=outcome_text(TrainingStatus.CANCELED)),
            node_pod(2, "terminated", code=137)]
    info = training_info(node_job(3, [("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]), pods)
    assert info.errors[0].message.startswith("node 2 (pod cluster--abc-2-xyz): the training container of pod "
                                             "cluster--abc-2-xyz exited with code 137: killed by signal 9")
    assert info.errors[-1].message == (
        "Job cluster--abc failed (BackoffLimitExceeded): a node failed, so every node of the multi-node "
        "training was stopped (its pods are never restarted one by one)")
    assert info.attempt == 1  # no retries: whatever failed, there was one attempt


# -- multi-node trainings with retries: the group restarts ---------------------------------


def retried_job(nodes=2, limit=2, conditions=()):
    made = node_job(nodes, conditions)
    made["spec"]["backoffLimit"] = limit
    return made


def test_between_attempts_the_training_stays_running_and_says_which_attempt():
    crashed = node_pod(1, "terminated", code=5)
    crashed["metadata"]["name"] = "cluster--abc-1-old"
    pods = [node_pod(0, "running"), crashed, node_pod(1, "waiting")]
    info = training_info(retried_job(), pods)
    assert (info.status, info.attempt) == (TrainingStatus.RUNNING, 2)
    assert info.detail == "attempt 2 of 3: 1 of 2 pods running; node 1: pod cluster--abc-1-xyz: ContainerCreating"
    pods[-1] = node_pod(1, "running")
    again = training_info(retried_job(), pods)
    assert (again.status, again.detail) == (TrainingStatus.RUNNING, "attempt 2 of 3")


def test_an_evicted_pod_restarted_the_group_but_pods_stopped_by_the_job_did_not():
    evicted = node_pod(1, "terminated", code=143)
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True"}]
    stopped = node_pod(0, "terminated", code=143, message=outcome_text(TrainingStatus.CANCELED))
    assert training_info(retried_job(), [node_pod(0, "running"), evicted]).attempt == 2
    assert training_info(retried_job(), [stopped, node_pod(1, "running")]).attempt == 1


def test_when_the_restarts_are_used_up_the_last_node_to_fail_is_named():
    first = node_pod(1, "terminated", code=5, finished="2026-01-01T00:02:00Z",
                     message=outcome_text(TrainingStatus.ERRORED, [ErrorDetail("x.TrainingError", "rank 3 crashed once")]))
    first["metadata"]["name"] = "cluster--abc-1-first"
    last = node_pod(1, "terminated", code=137, finished="2026-01-01T00:04:00Z")
    stopped = node_pod(0, "terminated", code=143, finished="2026-01-01T00:04:01Z",
                       message=outcome_text(TrainingStatus.CANCELED))
    condition = [("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]
    info = training_info(retried_job(limit=1, conditions=condition), [first, stopped, last])
    assert (info.status, info.attempt) == (TrainingStatus.ERRORED, 2)
    assert info.errors[0].message.startswith("node 1 (pod cluster--abc-1-xyz): the training container")
    assert info.errors[-1].message == ("Job cluster--abc failed (BackoffLimitExceeded): nodes failed 2 times, "
                                       "and max_retries (1) allows 1 restarts of the group")
