"""The group protocol of multi-node trainings with retries (trainerkit.trainers.kubernetes.group),
over real sockets on the loopback: joining, starting, failures, a replaced node, node 0 gone."""

from __future__ import annotations

import socket
import time

import pytest

from trainerkit.trainers.kubernetes.group import GroupCoordinator, GroupMember, group_port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _until(poll, want, timeout=5.0):
    """Poll until an event for which want(event) is true arrives; every event seen, in order."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += poll()
        if any(want(event) for event in seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"nothing wanted arrived; saw {seen}")


@pytest.fixture
def coordinator():
    made = GroupCoordinator("127.0.0.1", _free_port(), nodes=3)
    yield made
    made.close()


def _member(coordinator, node, pod=None):
    member = GroupMember("127.0.0.1", coordinator._server.getsockname()[1], node, pod or f"pod-{node}")
    member.connect()
    return member


def test_the_group_starts_once_every_node_has_joined_and_hears_failures(coordinator):
    assert coordinator.missing == [1, 2]
    one = _member(coordinator, 1)
    _until(coordinator.poll, lambda e: e[:2] == ("join", 1))
    assert coordinator.missing == [2]
    two = _member(coordinator, 2)
    _until(coordinator.poll, lambda e: e[:2] == ("join", 2))
    assert coordinator.missing == [] and coordinator.pods == {1: "pod-1", 2: "pod-2"}
    assert coordinator.start() == 1
    assert coordinator.missing == [1, 2]  # running the ranks of start 1: not ready for another
    for member in (one, two):
        assert _until(member.poll, lambda e: e[0] == "start")[-1] == ("start", {"start": 1})
    two.send({"failed": 2, "crash": True, "why": "rank 5 (pid 9) was killed by SIGKILL (9)"})
    failed = _until(coordinator.poll, lambda e: e[0] == "failed")[-1]
    assert failed[:2] == ("failed", 2) and failed[2]["crash"] is True
    coordinator.broadcast({"stop": 1, "cause": 2, "why": "rank 5 ..."})
    coordinator.drop(2)
    assert _until(one.poll, lambda e: e[0] == "stop")[-1][1]["cause"] == 2
    assert _until(two.poll, lambda e: e[0] == "lost")  # dropped: its replacement joins anew
    one.send({"ready": 1})
    replacement = _member(coordinator, 2, "pod-2b")
    _until(coordinator.poll, lambda e: e[:2] == ("join", 2))
    deadline = time.monotonic() + 5
    while coordinator.missing and time.monotonic() < deadline:  # node 1's "ready" may come in later
        coordinator.poll()
        time.sleep(0.01)
    assert coordinator.missing == [] and coordinator.pods[2] == "pod-2b"
    for member in (one, two, replacement):
        member.close()


def test_a_node_whose_connection_closes_before_it_is_done_has_left(coordinator):
    one, two = _member(coordinator, 1), _member(coordinator, 2)
    _until(coordinator.poll, lambda e: e[:2] == ("join", 2))
    one.send({"done": 1})
    _until(coordinator.poll, lambda e: e[0] == "done")
    one.close()
    two.close()
    events = _until(coordinator.poll, lambda e: e[0] == "left")
    deadline = time.monotonic() + 5
    while coordinator.missing != [1, 2] and time.monotonic() < deadline:  # node 1's close may come in later
        events += coordinator.poll()
        time.sleep(0.01)
    assert [e[:2] for e in events if e[0] == "left"] == [("left", 2)]  # node 1 was done: not a failure
    assert coordinator.missing == [1, 2]


def test_a_replacement_that_joins_before_the_old_connection_closed_replaces_it(coordinator):
    old = _member(coordinator, 1, "old")
    _until(coordinator.poll, lambda e: e[:2] == ("join", 1))
    new = _member(coordinator, 1, "new")
    events = _until(coordinator.poll, lambda e: e[:2] == ("join", 1))
    assert [e[:2] for e in events] == [("left", 1), ("join", 1)]
    assert coordinator.pods[1] == "new"
    assert _until(old.poll, lambda e: e[0] == "lost")
    new.close()


def test_a_member_hears_when_node_0_is_gone(coordinator):
    member = _member(coordinator, 1)
    _until(coordinator.poll, lambda e: e[:2] == ("join", 1))
    coordinator.close()
    assert _until(member.poll, lambda e: e[0] == "lost")
    assert not member.connected


def test_nodes_out_of_range_are_turned_away(coordinator):
    stranger = _member(coordinator, 7)
    assert _until(lambda: coordinator.poll() + stranger.poll(), lambda e: e[0] == "lost")
    assert coordinator.missing == [1, 2]


def test_the_group_port_is_next_to_master_port():
    assert group_port(29500) == 29501 and group_port(65535) == 65534
