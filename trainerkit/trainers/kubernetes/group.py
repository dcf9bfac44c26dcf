"""The group of a multi-node training's pods: every rank restarts together.

A multi-node training with retries (``max_retries`` or ``backoff_limit`` above
0) must never run a replaced pod next to ranks of the attempt that failed: the
replacement would join a rendezvous whose other members are gone. So each pod's
launcher (the pod entry point) keeps one TCP connection to node 0's launcher,
which listens on its pod's address at ``$TRAINERKIT_GROUP_PORT``
(``MASTER_PORT + 1``), and the launchers start their ranks only together:

* node 0's :class:`GroupCoordinator` waits until every other node has joined,
  then tells them all to ``start`` (and starts its own ranks);
* a launcher whose rank fails reports it (``failed``, a crash or the
  training's own exception); a pod that dies is noticed by its connection
  closing. The coordinator collects the failures of one short settle period
  (:data:`SETTLE_SECONDS`, so that the errors other ranks raise when a peer
  dies are not mistaken for the cause), picks the cause (a crash before an
  exception, then the earliest) and tells every node to ``stop``, naming it;
* the node that caused it leaves: a crash ends its pod with
  :data:`EXIT_NODE_CRASHED`, which the Job counts against its
  ``backoffLimit`` and replaces; an exception ends it with the training-failed
  code, which fails the Job at once (its pod failure policy). Every other node
  stops its ranks (SIGTERM, then SIGKILL after the grace period) and waits for
  the group to be whole again; when the replacement has joined, every rank of
  the training starts again, and resumes from the last checkpoint as any
  retried training does;
* when node 0's pod is the one replaced, the others notice the connection
  closing, stop their ranks and join the new node 0 at the same hostname.

Messages are JSON lines: from a node ``{"join": k, "pod": name}``,
``{"failed": k, "crash": bool, "why": text}``, ``{"ready": k}`` (its ranks of
the last start have all exited) and ``{"done": k}``; from node 0
``{"start": n}``, ``{"stop": n, "cause": k, "why": text}`` and
``{"finished": true}`` (node 0's ranks completed: nothing restarts any more).
Sockets use TCP keepalive, so a node that vanishes without closing its
connection (its machine lost) is noticed within about half a minute.

Why by hand: torchrun's elastic agent (``--max-restarts`` with a c10d
rendezvous) restarts every worker when one fails, but it needs torch in the
pod's launcher and restarts on any failure, including the training's own
exceptions, which trainerkit fails at once. What is left is a few sockets and
threads of the standard library.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from typing import Any, Optional

log = logging.getLogger("trainerkit")

#: The pod's exit status when one of its ranks crashed (killed, out of memory, exited
#: without an outcome) and the group restarts: counted against the Job's backoffLimit.
EXIT_NODE_CRASHED = 5
#: How long node 0 gathers failures before it names the cause of a restart.
SETTLE_SECONDS = 1.0
#: The group port is MASTER_PORT + this (MASTER_PORT - 1 when that is 65535).
GROUP_PORT_OFFSET = 1


def group_port(master_port: int) -> int:
    """The port node 0's launcher listens on for the group, next to ``master_port``."""
    return master_port + GROUP_PORT_OFFSET if master_port < 65535 else master_port - GROUP_PORT_OFFSET


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass


class _Connection:
    """One group connection: lines in (on a thread of its own, into ``events``), lines out."""

    def __init__(self, sock: socket.socket, events: "queue.Queue[tuple[Any, ...]]") -> None:
        self.sock = sock
        self.node: Optional[int] = None
        self.closed = False
        self._events = events
        self._send_lock = threading.Lock()
        _keepalive(sock)
        threading.Thread(target=self._read, name="trainerkit-group", daemon=True).start()

    def _read(self) -> None:
        try:
            with self.sock.makefile("r", encoding="utf-8") as lines:
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(message, dict):
                        self._events.put(("message", self, message))
        except (OSError, ValueError):
            pass
        self._events.put(("closed", self, None))

    def send(self, message: dict) -> bool:
        """Send one message; False when the connection is gone."""
        data = (json.dumps(message) + "\n").encode("utf-8")
        try:
            with self._send_lock:
                self.sock.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class GroupCoordinator:
    """Node 0's side of the group (see the module docstring).

    Args:
        address: this pod's own IP address (``status.podIP``), to listen on.
        port: the group port.
        nodes: the training's nodes (node 0 included).
    """

    def __init__(self, address: str, port: int, nodes: int) -> None:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
        self._server = socket.socket(family, kind, proto)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(sockaddr)
        self._server.listen(max(8, 2 * nodes))
        self.nodes = nodes
        self.members: dict[int, _Connection] = {}
        self.pods: dict[int, str] = {}
        self.done: set[int] = set()
        self.ready: set[int] = set()  # joined, with no rank running: can start
        self.starts = 0
        self._events: "queue.Queue[tuple[Any, ...]]" = queue.Queue()
        threading.Thread(target=self._accept, name="trainerkit-group-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            _Connection(sock, self._events)

    @property
    def missing(self) -> list[int]:
        """The nodes (other than 0) that have not joined, or still stop the ranks of the last start."""
        return [node for node in range(1, self.nodes) if node not in self.members or node not in self.ready]

    def poll(self) -> list[tuple[str, int, dict]]:
        """Take in what arrived: ``("join", k, msg)``, ``("failed", k, msg)``, ``("done", k, msg)``
        and ``("left", k, {})`` (a node whose connection closed before it was done)."""
        happened: list[tuple[str, int, dict]] = []
        while True:
            try:
                kind, connection, message = self._events.get_nowait()
            except queue.Empty:
                return happened
            if kind == "closed":
                node = connection.node
                if node is not None and self.members.get(node) is connection:
                    del self.members[node]
                    self.ready.discard(node)
                    if node not in self.done:
                        happened.append(("left", node, {}))
                continue
            if "join" in message:
                node = message.get("join")
                if not isinstance(node, int) or not 0 < node < self.nodes:
                    connection.close()
                    continue
                old = self.members.pop(node, None)
                if old is not None:  # its pod was replaced before the old connection closed
                    old.close()
                    happened.append(("left", node, {}))
                connection.node = node
                self.members[node] = connection
                self.pods[node] = str(message.get("pod") or "")
                self.done.discard(node)
                self.ready.add(node)
                happened.append(("join", node, message))
            elif connection.node is not None and self.members.get(connection.node) is connection:
                if "failed" in message:
                    happened.append(("failed", connection.node, message))
                elif "done" in message:
                    self.done.add(connection.node)
                    happened.append(("done", connection.node, message))
                elif "ready" in message:
                    self.ready.add(connection.node)

    def broadcast(self, message: dict) -> None:
        """Send ``message`` to every node that has joined."""
        for connection in list(self.members.values()):
            connection.send(message)

    def start(self) -> int:
        """Tell every node to start its ranks; returns the start's number (1 first)."""
        self.starts += 1
        self.done.clear()
        self.ready.clear()
        self.broadcast({"start": self.starts})
        return self.starts

    def drop(self, node: int) -> None:
        """Forget ``node``'s connection (it caused a restart and leaves: its
        replacement joins anew)."""
        connection = self.members.pop(node, None)
        self.ready.discard(node)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        try:
            self._server.close()
        except OSError:
            pass
        for connection in list(self.members.values()):
            connection.close()


class GroupMember:
    """A node's (other than 0) side of the group (see the module docstring)."""

    def __init__(self, address: str, port: int, node: int, pod: str) -> None:
        self.address, self.port, self.node, self.pod = address, port, node, pod
        self._connection: Optional[_Connection] = None
        self._events: "queue.Queue[tuple[Any, ...]]" = queue.Queue()

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.closed

    def connect(self, timeout: float = 5.0) -> None:
        """Connect to node 0 and join.

        Raises:
            OSError: node 0 cannot be reached now (the caller retries).
        """
        sock = socket.create_connection((self.address, self.port), timeout=timeout)
        sock.settimeout(None)
        self._events = queue.Queue()  # nothing from an earlier connection counts any more
        self._connection = _Connection(sock, self._events)
        if not self._connection.send({"join": self.node, "pod": self.pod}):
            self._connection.close()
            raise ConnectionError(f"node 0 at {self.address}:{self.port} closed the connection at once")

    def poll(self) -> list[tuple[str, dict]]:
        """``("start", msg)``, ``("stop", msg)``, ``("finished", msg)`` or ``("lost", {})``
        (the connection to node 0 closed)."""
        happened: list[tuple[str, dict]] = []
        while True:
            try:
                kind, connection, message = self._events.get_nowait()
            except queue.Empty:
                return happened
            if connection is not self._connection:
                continue
            if kind == "closed":
                connection.closed = True
                happened.append(("lost", {}))
            else:
                for name in ("start", "stop", "finished"):
                    if name in message:
                        happened.append((name, message))
                        break

    def send(self, message: dict) -> None:
        """Send ``message`` to node 0 (lost silently: a closed connection shows in :meth:`poll`)."""
        if self._connection is not None:
            self._connection.send(message)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

