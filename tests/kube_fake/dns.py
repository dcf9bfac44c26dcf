"""Simulated cluster DNS for the pods the fake kubelet runs.

A real cluster resolves ``<hostname>.<subdomain>`` (and the longer
``<hostname>.<subdomain>.<namespace>.svc[.cluster.local]``) to a pod's IP when
the pod sets ``spec.hostname`` and ``spec.subdomain`` and a headless Service
(``clusterIP: None``) named like the subdomain exists in its namespace; with
``publishNotReadyAddresses: true`` the record exists as soon as the pod has an
IP, otherwise once the pod is Ready. Records go when the pod ends or is
deleted.

Fake pods are local processes, so those names cannot come from real DNS. This
module keeps the records of every namespace in one JSON file,
``{"records": {name: {"ip": ip, "not_before": posix time}}}``, rewritten
(atomically) whenever a pod or Service changes. The kubelet puts
``pod_site/`` first on the pods' ``PYTHONPATH``; its ``sitecustomize`` wraps
``socket.getaddrinfo``/``gethostbyname`` in the pod's interpreter so that the
code under test resolves names with the ordinary socket API, as in
production. Like a cluster without upstream resolvers, any other dotted name
fails to resolve at once (tests never reach real DNS).

``set_delay(seconds)`` makes each new record answer only ``seconds`` after it
first appeared (slow DNS propagation, as with CoreDNS caches and headless
Services: torchx#541, jobset#603).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time

from .resources import PODS, SERVICES
from .store import Store, WatchEvent

#: The pods' environment variable naming the records file (read by pod_site/sitecustomize.py).
RECORDS_ENV = "TRAINERKIT_FAKE_DNS_RECORDS"
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pod_site")
CLUSTER_DOMAIN = "cluster.local"


class ClusterDNS:
    """The records of one fake cluster, kept in a file that the pods' resolver hook reads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dir = tempfile.mkdtemp(prefix="kube-fake-dns-")
        self.path = os.path.join(self._dir, "records.json")
        self._delay = 0.0
        self._first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._write({})

    def start(self) -> None:
        self.store.add_listener(self._on_event)

    def set_delay(self, seconds: float) -> None:
        """Every record answers only ``seconds`` after it first appeared (0: at once)."""
        with self.store.lock:
            self._delay = max(0.0, float(seconds))
            self._refresh()

    def pod_env(self, base_pythonpath: str | None) -> dict[str, str]:
        """The variables that install the resolver hook in a pod's Python."""
        path = SITE_DIR + (os.pathsep + base_pythonpath if base_pythonpath else "")
        return {"PYTHONPATH": path, RECORDS_ENV: self.path}

    def records(self) -> dict[str, dict]:
        with open(self.path, encoding="utf-8") as handle:
            return json.load(handle)["records"]

    def close(self) -> None:
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass

    # -- internals ---------------------------------------------------------------------

    def _on_event(self, ev: WatchEvent) -> None:  # under the store lock
        if ev.rt is PODS or ev.rt is SERVICES:
            self._refresh()

    def _refresh(self) -> None:
        now = time.time()
        services = {}
        for svc in self.store.list(SERVICES):
            md, spec = svc["metadata"], svc.get("spec") or {}
            if md.get("deletionTimestamp") or spec.get("clusterIP") != "None":
                continue
            services[(md.get("namespace"), md["name"])] = bool(spec.get("publishNotReadyAddresses"))
        records: dict[str, dict] = {}
        for pod in self.store.list(PODS):
            md, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            hostname, subdomain = spec.get("hostname"), spec.get("subdomain")
            key = (md.get("namespace"), subdomain)
            ip = status.get("podIP")
            if not hostname or not subdomain or key not in services or not ip or md.get("deletionTimestamp"):
                continue
            if status.get("phase") in ("Succeeded", "Failed"):
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
            if not services[key] and not ready:
                continue
            namespace = md.get("namespace")
            for name in (f"{hostname}.{subdomain}", f"{hostname}.{subdomain}.{namespace}",
                         f"{hostname}.{subdomain}.{namespace}.svc",
                         f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"):
                first = self._first_seen.setdefault(name, now)
                records[name] = {"ip": ip, "not_before": first + self._delay}
        for name in list(self._first_seen):
            if name not in records:
                del self._first_seen[name]
        self._write(records)

    def _write(self, records: dict[str, dict]) -> None:
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".records-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"records": records}, handle, sort_keys=True)
            os.replace(tmp, self.path)
