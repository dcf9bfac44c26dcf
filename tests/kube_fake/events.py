"""core/v1 Event recording for the simulated controllers (scheduler, kubelet, job controller)."""

from __future__ import annotations

import secrets

from .meta import clone, now_ts
from .resources import EVENTS
from .store import Store


class EventRecorder:
    def __init__(self, store: Store, node_name: str):
        self._store = store
        self._node = node_name
        self._seen: dict[tuple, tuple[str, str]] = {}  # (uid, reason, message) -> (namespace, event name)

    def record(self, obj: dict, etype: str, reason: str, message: str, component: str) -> None:
        """Record (or bump the count of) an Event about ``obj``. Call with or without the store lock."""
        md = obj["metadata"]
        namespace = md.get("namespace") or "default"
        key = (md.get("uid"), reason, message)
        now = now_ts()
        with self._store.lock:
            if not self._store.namespace_exists(namespace):
                return
            known = self._seen.get(key)
            if known is not None:
                def bump(ev: dict) -> None:
                    ev["count"] = ev.get("count", 1) + 1
                    ev["lastTimestamp"] = now
                if self._store.mutate(EVENTS, known[0], known[1], bump) is not None:
                    return
            name = f"{md['name']}.{secrets.token_hex(8)}"
            event = {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "kind": obj.get("kind"), "namespace": md.get("namespace"), "name": md["name"],
                    "uid": md.get("uid"), "apiVersion": obj.get("apiVersion"),
                    "resourceVersion": md.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "source": {"component": component} | ({"host": self._node} if component == "kubelet" else {}),
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": etype,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": self._node if component == "kubelet" else "",
            }
            self._store.create(EVENTS, clone(event))
            self._seen[key] = (namespace, name)
