"""In-memory object store: one global resourceVersion, bounded watch history, garbage collection.

Concurrency model: a single re-entrant lock (``Store.lock``) guards all state and a
condition variable on it (``Store.cond``) is notified after every change; watch
streams, the job controller and the kubelet wait on it.  Stored objects are never
mutated in place (copy-on-write), so references handed out under the lock can be
serialised after releasing it.

Deletion semantics (``Store.delete``):

* objects with finalizers only get ``metadata.deletionTimestamp`` and are removed
  when an update empties the finalizer list;
* pods with a live process are deleted gracefully: ``deletionTimestamp`` is set and
  the kubelet removes the pod after the process has exited;
* ``propagationPolicy`` Background removes the owner at once and then deletes the
  dependants (objects whose ``ownerReferences`` point at its uid); Foreground adds the
  ``foregroundDeletion`` finalizer and removes the owner after the last dependant is
  gone; Orphan strips the owner reference from the dependants.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable, Iterable

from . import errors as E
from .meta import clone, now_ts, new_uid, owner_uids
from .resources import ALL_TYPES, NAMESPACES, PODS, ResourceType, by_plural

log = logging.getLogger(__name__)

FOREGROUND = "Foreground"
BACKGROUND = "Background"
ORPHAN = "Orphan"
_GC_FINALIZERS = {"foregroundDeletion", "orphan"}


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    rt: ResourceType
    namespace: str | None
    obj: dict
    old: dict | None


class Expired(Exception):
    """The requested resourceVersion is older than the retained event history."""


def _key(obj: dict) -> tuple[str, str]:
    md = obj["metadata"]
    return (md.get("namespace") or "", md["name"])


def _with_type_meta(rt: ResourceType, obj: dict) -> dict:
    """``kind`` and ``apiVersion`` first, like the apiserver's JSON."""
    out = {"kind": rt.kind, "apiVersion": rt.api_version}
    out.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion"))
    return out


class Store:
    def __init__(self, history_size: int = 10000):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict]] = {rt.plural: {} for rt in ALL_TYPES}
        self._by_uid: dict[str, tuple[str, str, str]] = {}
        self._dependants: dict[str, set[str]] = defaultdict(set)
        self._history: deque[WatchEvent] = deque(maxlen=max(1, history_size))
        self._oldest_valid_rv = 0
        self._listeners: list[Callable[[WatchEvent], None]] = []
        self.closed = False
        # Set by the kubelet: called with (pod, grace_seconds); returns True when the kubelet owns a
        # running pod and will remove it itself once its process has exited.
        self.graceful_pod_deleter: Callable[[dict, int | None], bool] | None = None

    # -- bookkeeping ---------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def add_listener(self, fn: Callable[[WatchEvent], None]) -> None:
        with self.lock:
            self._listeners.append(fn)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, etype: str, rt: ResourceType, obj: dict, old: dict | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        if len(self._history) == self._history.maxlen:
            self._oldest_valid_rv = self._history[0].rv
        self._history.append(WatchEvent(rv, etype, rt, obj["metadata"].get("namespace"), obj, old))
        for fn in list(self._listeners):
            try:
                fn(self._history[-1])
            except Exception:  # a listener must never break the store
                log.exception("store listener failed")
        self.cond.notify_all()

    def _index(self, uid: str, old: dict | None, new: dict | None) -> None:
        for owner in owner_uids(old) if old else []:
            self._dependants[owner].discard(uid)
            if not self._dependants[owner]:
                del self._dependants[owner]
        for owner in owner_uids(new) if new else []:
            self._dependants[owner].add(uid)

    # -- reads -------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict | None:
        with self.lock:
            return self._objects[rt.plural].get((namespace or "", name))

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[dict]:
        with self.lock:
            items = self._objects[rt.plural]
            if namespace is None:
                return [items[k] for k in sorted(items)]
            return [items[k] for k in sorted(items) if k[0] == namespace]

    def by_uid(self, uid: str) -> tuple[ResourceType, dict] | None:
        with self.lock:
            loc = self._by_uid.get(uid)
            if loc is None:
                return None
            rt = by_plural(loc[0])
            return rt, self._objects[loc[0]][(loc[1], loc[2])]

    def dependants(self, uid: str) -> list[tuple[ResourceType, dict]]:
        with self.lock:
            out = []
            for dep in sorted(self._dependants.get(uid, ())):
                found = self.by_uid(dep)
                if found:
                    out.append(found)
            return out

    def namespace_exists(self, namespace: str) -> bool:
        return self.get(NAMESPACES, None, namespace) is not None

    # -- writes ------------------------------------------------------------------------

    def create(self, rt: ResourceType, obj: dict) -> dict:
        """Store a new object (name already set); assigns uid, resourceVersion, timestamps."""
        with self.lock:
            obj = clone(obj)
            md = obj.setdefault("metadata", {})
            if rt.namespaced:
                md["namespace"] = md.get("namespace") or "default"
            else:
                md.pop("namespace", None)
            key = _key(obj)
            if key in self._objects[rt.plural]:
                raise E.already_exists(rt, md["name"])
            md.setdefault("uid", new_uid())
            md["resourceVersion"] = str(self._bump())
            md["creationTimestamp"] = now_ts()
            md.setdefault("generation", 1)
            for fld in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                md.pop(fld, None)
            obj = _with_type_meta(rt, obj)
            self._objects[rt.plural][key] = obj
            self._by_uid[md["uid"]] = (rt.plural, key[0], key[1])
            self._index(md["uid"], None, obj)
            self._record("ADDED", rt, obj, None)
            return obj

    def update(self, rt: ResourceType, obj: dict, *, bump_generation: bool = False) -> dict:
        """Replace a stored object (identity fields are kept from the stored copy)."""
        with self.lock:
            obj = clone(obj)
            key = _key(obj)
            old = self._objects[rt.plural].get(key)
            if old is None:
                raise E.not_found(rt, key[1])
            md = obj["metadata"]
            omd = old["metadata"]
            for fld in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if fld in omd:
                    md[fld] = omd[fld]
                else:
                    md.pop(fld, None)
            md["generation"] = omd.get("generation", 1) + (1 if bump_generation else 0)
            if rt.namespaced:
                md["namespace"] = key[0]
            obj = _with_type_meta(rt, obj)
            md = obj["metadata"]
            md["resourceVersion"] = omd["resourceVersion"]
            if obj == old:
                return old
            md["resourceVersion"] = str(self._bump())
            self._objects[rt.plural][key] = obj
            self._index(md["uid"], old, obj)
            self._record("MODIFIED", rt, obj, old)
            if md.get("deletionTimestamp") and not md.get("finalizers"):
                self._remove(rt, obj, propagate=True)
            return obj

    def mutate(self, rt: ResourceType, namespace: str | None, name: str, fn: Callable[[dict], None],
               *, bump_generation: bool = False) -> dict | None:
        """Apply ``fn`` to a copy of the stored object and store it if it changed (None: object is gone)."""
        with self.lock:
            cur = self.get(rt, namespace, name)
            if cur is None:
                return None
            new = clone(cur)
            fn(new)
            if new == cur:
                return cur
            return self.update(rt, new, bump_generation=bump_generation)

    def _set_deleting(self, rt: ResourceType, obj: dict, grace: int | None = None,
                      add_finalizer: str | None = None) -> dict:
        new = clone(obj)
        md = new["metadata"]
        if not md.get("deletionTimestamp"):
            md["deletionTimestamp"] = now_ts()
            if grace is not None:
                md["deletionGracePeriodSeconds"] = grace
        if add_finalizer and add_finalizer not in (md.get("finalizers") or []):
            md.setdefault("finalizers", []).append(add_finalizer)
        md["resourceVersion"] = str(self._bump())
        self._objects[rt.plural][_key(new)] = new
        self._record("MODIFIED", rt, new, obj)
        return new

    def delete(self, rt: ResourceType, namespace: str | None, name: str, *, propagation: str | None = None,
               grace_seconds: int | None = None, preconditions: dict | None = None) -> tuple[dict, bool]:
        """Delete an object. Returns (object, removed_now)."""
        with self.lock:
            obj = self.get(rt, namespace, name)
            if obj is None:
                raise E.not_found(rt, name)
            md = obj["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != md["uid"]:
                raise E.conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                           f"UID in object meta: {md['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
                raise E.conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                           f"{md['resourceVersion']}")
            propagation = propagation or BACKGROUND
            if rt is NAMESPACES:
                return self._delete_namespace(obj), True
            if md.get("deletionTimestamp"):
                if rt is PODS and grace_seconds == 0 and self.graceful_pod_deleter:
                    self.graceful_pod_deleter(obj, 0)
                return obj, False
            if propagation == ORPHAN:
                self._orphan_dependants(md["uid"])
            if propagation == FOREGROUND and self._dependants.get(md["uid"]):
                obj = self._set_deleting(rt, obj, add_finalizer="foregroundDeletion")
                for drt, dep in self.dependants(md["uid"]):
                    self._delete_dependant(drt, dep, md["uid"])
                return self.get(rt, namespace, name) or obj, False
            if [f for f in md.get("finalizers") or [] if f not in _GC_FINALIZERS]:
                return self._set_deleting(rt, obj), False
            if rt is PODS and self.graceful_pod_deleter is not None:
                grace = grace_seconds
                if grace is None:
                    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                if self.graceful_pod_deleter(obj, grace):
                    return self._set_deleting(rt, obj, grace=grace), False
            removed = self._remove(rt, obj, propagate=propagation != ORPHAN)
            return removed, True

    def remove(self, rt: ResourceType, namespace: str | None, name: str) -> dict | None:
        """Remove immediately (used by the kubelet once a terminating pod's process is gone)."""
        with self.lock:
            obj = self.get(rt, namespace, name)
            if obj is None:
                return None
            return self._remove(rt, obj, propagate=True)

    def _remove(self, rt: ResourceType, obj: dict, *, propagate: bool) -> dict:
        key = _key(obj)
        if self._objects[rt.plural].get(key) is None:
            return obj
        del self._objects[rt.plural][key]
        uid = obj["metadata"]["uid"]
        self._by_uid.pop(uid, None)
        self._index(uid, obj, None)
        gone = clone(obj)
        gone["metadata"]["resourceVersion"] = str(self._bump())
        self._record("DELETED", rt, gone, obj)
        if propagate:
            for drt, dep in self.dependants(uid):
                self._delete_dependant(drt, dep, uid)
        else:
            self._orphan_dependants(uid)
        # Foreground deletion of owners waiting for this dependant.
        for owner_uid in owner_uids(obj):
            found = self.by_uid(owner_uid)
            if not found:
                continue
            ort, owner = found
            omd = owner["metadata"]
            if omd.get("deletionTimestamp") and "foregroundDeletion" in (omd.get("finalizers") or []) \
                    and not self._dependants.get(owner_uid):
                def drop(o: dict) -> None:
                    o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or []
                                                   if f != "foregroundDeletion"]
                    if not o["metadata"]["finalizers"]:
                        del o["metadata"]["finalizers"]
                self.mutate(ort, omd.get("namespace"), omd["name"], drop)
        return gone

    def _delete_dependant(self, rt: ResourceType, dep: dict, owner_uid: str) -> None:
        """Garbage-collect ``dep`` whose owner ``owner_uid`` is being deleted."""
        md = dep["metadata"]
        others = [u for u in owner_uids(dep) if u != owner_uid and u in self._by_uid
                  and not (self.by_uid(u)[1]["metadata"].get("deletionTimestamp"))]
        if others:
            self._strip_owner(rt, dep, owner_uid)
            return
        try:
            self.delete(rt, md.get("namespace"), md["name"], propagation=BACKGROUND)
        except E.ApiError:
            pass

    def _strip_owner(self, rt: ResourceType, dep: dict, owner_uid: str) -> None:
        def strip(o: dict) -> None:
            refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid]
            if refs:
                o["metadata"]["ownerReferences"] = refs
            else:
                o["metadata"].pop("ownerReferences", None)
        md = dep["metadata"]
        self.mutate(rt, md.get("namespace"), md["name"], strip)

    def _orphan_dependants(self, uid: str) -> None:
        for drt, dep in self.dependants(uid):
            self._strip_owner(drt, dep, uid)

    def _delete_namespace(self, ns_obj: dict) -> dict:
        name = ns_obj["metadata"]["name"]
        for rt in ALL_TYPES:
            if not rt.namespaced:
                continue
            for obj in self.list(rt, name):
                try:
                    self.delete(rt, name, obj["metadata"]["name"], propagation=BACKGROUND, grace_seconds=0)
                except E.ApiError:
                    pass
        return self._remove(NAMESPACES, ns_obj, propagate=False)

    # -- watch support ---------------------------------------------------------------

    def check_watch_rv(self, rv: int) -> None:
        with self.lock:
            if rv < self._oldest_valid_rv:
                raise Expired(f"too old resource version: {rv} ({self._oldest_valid_rv})")

    def events_since(self, rv: int) -> list[WatchEvent]:
        """Events with resourceVersion > rv (raises Expired if some were dropped)."""
        with self.lock:
            self.check_watch_rv(rv)
            out: list[WatchEvent] = []
            for ev in reversed(self._history):
                if ev.rv <= rv:
                    break
                out.append(ev)
            out.reverse()
            return out

    def compact(self) -> None:
        """Forget the event history (watches from older resourceVersions get 410 Gone)."""
        with self.lock:
            self._history.clear()
            self._oldest_valid_rv = self._rv

    def snapshot(self, rt: ResourceType, namespace: str | None) -> dict[str, dict]:
        with self.lock:
            return {o["metadata"]["name"]: clone(o) for o in self.list(rt, namespace)}

    def all_objects(self) -> Iterable[tuple[ResourceType, dict]]:
        with self.lock:
            return [(by_plural(p), o) for p, items in self._objects.items() for o in items.values()]
