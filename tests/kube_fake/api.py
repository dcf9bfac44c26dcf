"""REST semantics of the fake apiserver: routing, authn/authz, CRUD, list, watch and pod logs.

Transport-independent: :meth:`Api.handle` takes a parsed :class:`Request` and returns
a :class:`Response` (JSON or text) or a :class:`StreamResponse` whose chunk iterator
the HTTP layer writes with chunked transfer encoding.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import errors as E
from . import resources as R
from .jobcontroller import default_pod_spec, prepare_job
from .kubelet import Kubelet, tail_lines
from .meta import clone, lookup_path, new_uid, random_suffix
from .patch import apply_patch
from .selectors import (FieldSelector, LabelSelector, SelectorError, parse_field_selector,
                        parse_label_selector)
from .store import BACKGROUND, FOREGROUND, ORPHAN, Expired, Store, WatchEvent
from .validation import validate, validate_update

log = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT = 1800.0
JOB_ORPHAN_WARNING = ('299 - "child pods are preserved by default when jobs are deleted; set '
                      'propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress '
                      'this warning"')
KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-kube-fake", "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0",
                "compiler": "gc", "platform": "linux/amd64"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes = b""


@dataclass
class Response:
    code: int
    body: Any  # dict -> JSON, str -> text/plain
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class StreamResponse:
    content_type: str
    chunks: Callable[[Callable[[], bool]], Iterator[bytes]]  # called with a client_gone() probe
    code: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Route:
    rt: R.ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


@dataclass
class _Rule:
    verb: str
    resource: str
    namespace: str | None
    code: int = 403
    reason: str = ""
    message: str = ""
    remaining: int | None = None  # None: forever
    after: bool = False  # the request is carried out first, then its answer is replaced by the fault
    reset: bool = False  # the connection is reset (TCP RST) instead of answered
    retry_after: int = 1  # Retry-After seconds of 429 and 503 answers
    rate: float | None = None  # a random fraction of matching requests; None: every one
    faults: tuple = ()  # rate rules: what a hit request gets, drawn at random


#: What ``inject_faults`` draws from: an error answer, or a reset connection, each either before
#: the request is carried out or after it (so the client never learns that it was).
FAULT_KINDS = ("500", "503", "429", "reset", "500-after", "reset-after")
_REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 502: "BadGateway",
            503: "ServiceUnavailable", 504: "Timeout"}


@dataclass(frozen=True)
class ServedFault:
    """A fault the fake served, for tests to check that injection happened."""

    verb: str
    resource: str
    name: str | None
    kind: str  # "500", "429", "reset", "500-after", "reset-after"...


def _matches_rule(rule: _Rule, verb: str, resource: str, namespace: str | None) -> bool:
    if rule.verb not in ("*", verb):
        return False
    base = resource.split("/")[0]
    group_resource = {rt.plural: rt.group_resource for rt in R.ALL_TYPES}.get(base, base)
    wanted = {resource, group_resource + resource[len(base):]}
    if rule.resource != "*" and rule.resource not in wanted:
        return False
    return rule.namespace is None or rule.namespace == namespace


def _parse_bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _int_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise E.bad_request(f'invalid value for {name}: "{value}"') from None


def _strip_type_meta(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def field_value(obj: dict, path: str) -> str | None:
    """Field-selector value of ``path`` (``metadata.name``, ``status.phase``, ``source`` ...)."""
    if path == "source":
        return lookup_path(obj, "source.component") or obj.get("reportingComponent")
    if path == "status.successful" and obj.get("kind") == "Job":
        value = lookup_path(obj, "status.succeeded")
        return str(value or 0)
    value = lookup_path(obj, path)
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


class Api:
    def __init__(self, store: Store, kubelet: Kubelet | None, *, token: str | None, user: str,
                 server_address: Callable[[], str], bookmark_interval: float = 1.0):
        self.store = store
        self.kubelet = kubelet
        self.token = token
        self.user = user
        self._server_address = server_address
        self.bookmark_interval = bookmark_interval
        self._rules_lock = threading.Lock()
        self._forbidden: list[_Rule] = []
        self._injected: list[_Rule] = []
        self._random = random.Random(0)
        self.served_faults: list[ServedFault] = []

    # -- fault injection ---------------------------------------------------------------------

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        with self._rules_lock:
            self._forbidden.append(_Rule(verb, resource, namespace))

    def allow(self, verb: str | None = None, resource: str | None = None, namespace: str | None = None) -> None:
        """Remove forbid() rules (all of them when called without arguments)."""
        with self._rules_lock:
            self._forbidden = [r for r in self._forbidden
                               if not ((verb is None or r.verb == verb) and (resource is None or r.resource ==
                                                                             resource)
                                       and (namespace is None or r.namespace == namespace))]

    def inject_error(self, verb: str, resource: str, *, code: int, reason: str, message: str,
                     namespace: str | None, times: int | None, after: bool = False, reset: bool = False,
                     retry_after: int = 1) -> None:
        with self._rules_lock:
            self._injected.append(_Rule(verb, resource, namespace, code, reason, message, times, after=after,
                                        reset=reset, retry_after=retry_after))

    def inject_faults(self, rate: float, *, verb: str = "*", resource: str = "*", namespace: str | None = None,
                      faults: tuple = FAULT_KINDS, retry_after: int = 1, seed: int = 0) -> None:
        unknown = [f for f in faults if f not in FAULT_KINDS and f.removesuffix("-after") not in
                   {str(code) for code in _REASONS}]
        if unknown or not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1] and faults among {FAULT_KINDS}, got {rate}, {unknown}")
        with self._rules_lock:
            self._random.seed(seed)
            self._injected.append(_Rule(verb, resource, namespace, rate=rate, faults=tuple(faults),
                                        retry_after=retry_after))

    def clear_injected_errors(self) -> None:
        with self._rules_lock:
            self._injected.clear()

    def _draw_fault(self, verb: str, resource: str, namespace: str | None, name: str | None) -> _Rule | None:
        """The fault this request gets (None: none), counting it against its rule."""
        with self._rules_lock:
            for rule in list(self._injected):
                if not _matches_rule(rule, verb, resource, namespace):
                    continue
                if rule.rate is not None:
                    if self._random.random() >= rule.rate:
                        continue
                    kind = self._random.choice(rule.faults)
                    code = kind.removesuffix("-after")
                    fault = _Rule(verb, resource, namespace, after=kind.endswith("-after"), reset=code == "reset",
                                  retry_after=rule.retry_after)
                    if not fault.reset:
                        fault.code, fault.reason = int(code), _REASONS[int(code)]
                        fault.message = f"injected error {code}"
                else:
                    fault = rule
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._injected.remove(rule)
                kind = "reset" if fault.reset else str(fault.code)
                self.served_faults.append(ServedFault(verb, resource, name, kind + ("-after" if fault.after else "")))
                return fault
        return None

    @staticmethod
    def _fail(fault: _Rule) -> None:
        if fault.reset:
            raise E.ConnectionDropped()
        retry = fault.code in (429, 503)
        headers = {"Retry-After": str(fault.retry_after)} if retry else {}
        details = {"retryAfterSeconds": fault.retry_after} if retry else None
        raise E.ApiError(fault.code, fault.reason, fault.message, details, headers)

    # -- entry point ------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response | StreamResponse:
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, "ok", content_type="text/plain; charset=utf-8")
        self._authenticate(req)
        if path == "/version":
            return Response(200, KUBE_VERSION)
        discovery = self._discovery(path)
        if discovery is not None:
            return Response(200, discovery)
        route = self._route(path)
        verb = self._verb(route, req)
        resource = route.rt.plural + (f"/{route.subresource}" if route.subresource else "")
        self._authorize(route, verb, resource)
        fault = self._draw_fault(verb, resource, route.namespace, route.name)
        if fault is not None and not fault.after:
            self._fail(fault)
        response = self._serve(route, req, verb, resource)
        if fault is not None:
            if isinstance(response, StreamResponse):
                raise E.ConnectionDropped()  # a stream cut right after its headers
            self._fail(fault)  # carried out, but the client never hears of it
        return response

    def _serve(self, route: Route, req: Request, verb: str, resource: str) -> Response | StreamResponse:
        ns = route.namespace
        if route.subresource == "log":
            if verb != "get":
                raise E.method_not_allowed()
            return self._pod_log(route, req)
        if route.subresource not in (None, "status"):
            raise E.resource_not_found()
        handler = {
            "get": self._get, "list": self._list, "watch": self._watch, "create": self._create,
            "update": self._update, "patch": self._patch, "delete": self._delete,
            "deletecollection": self._delete_collection,
        }[verb]
        if route.subresource == "status" and verb not in ("get", "update", "patch"):
            raise E.method_not_allowed()
        log.debug("%s %s ns=%s name=%s", verb, resource, ns, route.name)
        return handler(route, req)

    # -- routing / access --------------------------------------------------------------------------

    def _authenticate(self, req: Request) -> None:
        if self.token is None:
            return
        auth = req.headers.get("authorization", "")
        if auth != f"Bearer {self.token}":
            raise E.unauthorized()

    def _route(self, path: str) -> Route:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise E.resource_not_found()
        legacy_watch = False
        if rest and rest[0] == "watch":
            legacy_watch, rest = True, rest[1:]
        if not rest:
            raise E.resource_not_found()
        namespace = name = sub = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, plural = rest[1], rest[2]
            name = rest[3] if len(rest) > 3 else None
            sub = rest[4] if len(rest) > 4 else None
            if len(rest) > 5:
                raise E.resource_not_found()
        else:
            plural = rest[0]
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            if len(rest) > 3:
                raise E.resource_not_found()
        rt = R.lookup(group, version, plural)
        if rt is None:
            raise E.resource_not_found()
        if rt.namespaced is False and namespace is not None:
            raise E.resource_not_found()
        if rt is R.NAMESPACES:
            namespace = None
        if sub is not None and sub not in rt.subresources:
            raise E.resource_not_found()
        return Route(rt, namespace, name, sub, legacy_watch)

    def _verb(self, route: Route, req: Request) -> str:
        method = req.method
        if method in ("GET", "HEAD"):
            if route.name is None:
                return "watch" if route.legacy_watch or _parse_bool(req.query.get("watch")) else "list"
            if route.legacy_watch:
                return "watch"
            return "get"
        if route.legacy_watch:
            raise E.method_not_allowed()
        if method == "POST" and route.name is None:
            return "create"
        if method == "PUT" and route.name is not None:
            return "update"
        if method == "PATCH" and route.name is not None:
            return "patch"
        if method == "DELETE":
            return "delete" if route.name is not None else "deletecollection"
        raise E.method_not_allowed()

    def _authorize(self, route: Route, verb: str, resource: str) -> None:
        with self._rules_lock:
            for rule in self._forbidden:
                if _matches_rule(rule, verb, resource, route.namespace):
                    raise E.forbidden(route.rt, route.name, self.user, verb, resource, route.namespace)

    def _discovery(self, path: str) -> dict | None:
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self._server_address()}]}
        if path == "/apis":
            groups = []
            for gv in sorted(R.group_versions()):
                if "/" not in gv:
                    continue
                group, version = gv.split("/")
                entry = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        for gv, types in R.group_versions().items():
            prefix = "/api/" + gv if "/" not in gv else "/apis/" + gv
            if path != prefix:
                continue
            out = []
            for rt in types:
                verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
                out.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                            "kind": rt.kind, "verbs": verbs})
                for sub in sorted(rt.subresources):
                    out.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                                "kind": rt.kind if sub == "status" else "Pod",
                                "verbs": ["get", "patch", "update"] if sub == "status" else ["get"]})
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}
        return None

    # -- helpers ---------------------------------------------------------------------------------

    def _body(self, req: Request) -> Any:
        if not req.body:
            raise E.bad_request("the request body is empty")
        try:
            return json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise E.bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None

    def _selectors(self, route: Route, req: Request) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = parse_label_selector(req.query.get("labelSelector"))
            fields = parse_field_selector(req.query.get("fieldSelector"))
        except SelectorError as exc:
            raise E.bad_request(str(exc)) from None
        for fld in fields.fields():
            if not route.rt.supports_field(fld):
                raise E.bad_request(f'field label not supported: {fld}')
        return labels, fields

    @staticmethod
    def _matches(obj: dict, labels: LabelSelector, fields: FieldSelector) -> bool:
        return labels.matches((obj.get("metadata") or {}).get("labels")) and fields.matches(obj, field_value)

    def _require(self, route: Route) -> dict:
        obj = self.store.get(route.rt, route.namespace, route.name)
        if obj is None:
            raise E.not_found(route.rt, route.name)
        return obj

    # -- read verbs ----------------------------------------------------------------------------

    def _get(self, route: Route, req: Request) -> Response:
        return Response(200, self._require(route))

    def _list(self, route: Route, req: Request) -> Response:
        labels, fields = self._selectors(route, req)
        limit = _int_param(req.query, "limit")
        token = req.query.get("continue")
        start: list[str] | None = None
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise E.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                    "(version meta.k8s.io/v1)") from None
        with self.store.lock:
            rv = self.store.resource_version
            items = [o for o in self.store.list(route.rt, route.namespace) if self._matches(o, labels, fields)]
        if start is not None:
            items = [o for o in items if [o["metadata"].get("namespace") or "", o["metadata"]["name"]] > start]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": rv, "start": [last.get("namespace") or "", last["name"]]}
            ).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return Response(200, {"kind": route.rt.list_kind, "apiVersion": route.rt.api_version, "metadata": meta,
                              "items": [_strip_type_meta(o) for o in items]})

    def _watch(self, route: Route, req: Request) -> StreamResponse:
        labels, fields = self._selectors(route, req)
        if route.name is not None:  # legacy /watch/.../{name}
            fields = FieldSelector(fields.terms + (("metadata.name", "=", route.name),))
        timeout = _int_param(req.query, "timeoutSeconds")
        timeout_s = DEFAULT_WATCH_TIMEOUT if timeout is None or timeout <= 0 else float(timeout)
        rv_param = req.query.get("resourceVersion") or ""
        if rv_param not in ("", "0"):
            try:
                start_rv = int(rv_param)
            except ValueError:
                raise E.bad_request(f'resourceVersion: Invalid value: "{rv_param}": must be a valid '
                                    'resourceVersion') from None
        else:
            start_rv = None
        bookmarks = _parse_bool(req.query.get("allowWatchBookmarks"))
        store = self.store
        rt, namespace = route.rt, route.namespace

        def matches(obj: dict | None) -> bool:
            return obj is not None and self._matches(obj, labels, fields)

        def transform(ev: WatchEvent) -> tuple[str, dict] | None:
            if ev.rt is not rt or (namespace is not None and ev.namespace != namespace):
                return None
            if ev.type == "ADDED":
                return ("ADDED", ev.obj) if matches(ev.obj) else None
            if ev.type == "DELETED":
                return ("DELETED", ev.obj) if matches(ev.obj) else None
            new_match, old_match = matches(ev.obj), matches(ev.old)
            if new_match and old_match:
                return ("MODIFIED", ev.obj)
            if new_match:
                return ("ADDED", ev.obj)
            if old_match:
                return ("DELETED", ev.obj)
            return None

        def line(etype: str, obj: dict) -> bytes:
            return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"

        def chunks(client_gone: Callable[[], bool]) -> Iterator[bytes]:
            deadline = time.monotonic() + timeout_s
            with store.lock:
                if start_rv is None:
                    initial = sorted((o for o in store.list(rt, namespace) if matches(o)),
                                     key=lambda o: int(o["metadata"]["resourceVersion"]))
                    cursor = store.resource_version
                    expired = None
                else:
                    initial, cursor = [], start_rv
                    try:
                        store.check_watch_rv(cursor)
                        expired = None
                    except Expired as exc:
                        expired = str(exc)
            if initial:
                yield b"".join(line("ADDED", o) for o in initial)
            if expired is not None:
                yield line("ERROR", E.gone(expired).status())
                return
            last_bookmark = time.monotonic()
            while True:
                evs: list[WatchEvent] | None = None
                expired = None
                with store.cond:
                    if store.closed:
                        return
                    try:
                        evs = store.events_since(cursor)
                        if not evs:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return
                            store.cond.wait(min(remaining, 0.5))
                            evs = store.events_since(cursor)
                    except Expired as exc:
                        expired = str(exc)
                    current_rv = store.resource_version
                if expired is not None:
                    yield line("ERROR", E.gone(expired).status())
                    return
                if not evs:
                    if client_gone():
                        return
                    if bookmarks and time.monotonic() - last_bookmark > self.bookmark_interval:
                        last_bookmark = time.monotonic()
                        yield line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                                "metadata": {"resourceVersion": str(current_rv)}})
                    continue
                cursor = evs[-1].rv
                out = [t for t in (transform(ev) for ev in evs) if t is not None]
                if out:
                    yield b"".join(line(t, o) for t, o in out)
                if time.monotonic() >= deadline:
                    return

        return StreamResponse("application/json", chunks)

    def _pod_log(self, route: Route, req: Request) -> Response | StreamResponse:
        if route.rt is not R.PODS or route.name is None:
            raise E.resource_not_found()
        pod = self._require(route)
        if self.kubelet is None:
            raise E.bad_request(f'container in pod "{route.name}" is waiting to start: no kubelet')
        q = req.query
        buf = self.kubelet.log_buffer(pod, q.get("container"), _parse_bool(q.get("previous")))
        tail = _int_param(q, "tailLines")
        limit = _int_param(q, "limitBytes")
        text_type = "text/plain"
        if not _parse_bool(q.get("follow")):
            data = tail_lines(buf.snapshot(), tail)
            if limit is not None and limit >= 0:
                data = data[:limit]
            return Response(200, data.decode("utf-8", errors="replace"), content_type=text_type)
        store = self.store

        def chunks(client_gone: Callable[[], bool]) -> Iterator[bytes]:
            sent = 0
            snapshot = buf.snapshot()
            first = tail_lines(snapshot, tail)
            pos = len(snapshot)
            if first:
                if limit is not None:
                    first = first[:limit]
                sent += len(first)
                yield first
            while limit is None or sent < limit:
                data, finished = buf.read_from(pos, 0.5)
                if data:
                    pos += len(data)
                    if limit is not None:
                        data = data[:limit - sent]
                    sent += len(data)
                    yield data
                    continue
                if finished or store.closed or client_gone():
                    return
                if store.get(R.PODS, route.namespace, route.name) is None:
                    return

        return StreamResponse(text_type, chunks)

    # -- write verbs ---------------------------------------------------------------------------

    def _check_body_identity(self, route: Route, obj: dict, *, name_required: bool) -> None:
        if not isinstance(obj, dict):
            raise E.bad_request("the body of the request must be a JSON object")
        md = obj.get("metadata")
        if md is None:
            md = obj["metadata"] = {}
        if not isinstance(md, dict):
            raise E.bad_request("metadata must be an object")
        kind = obj.get("kind")
        if kind and kind != route.rt.kind:
            raise E.bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                                f"expected API version ({route.rt.api_version})"
                                if obj.get("apiVersion") not in (None, route.rt.api_version)
                                else f"the kind in the data ({kind}) does not match the expected kind "
                                     f"({route.rt.kind})")
        if route.rt.namespaced:
            body_ns = md.get("namespace")
            if body_ns and body_ns != route.namespace:
                raise E.bad_request("the namespace of the provided object does not match the namespace sent "
                                    "on the request")
            md["namespace"] = route.namespace
        if name_required and md.get("name") != route.name:
            raise E.bad_request(f"the name of the object ({md.get('name')}) does not match the name on the URL "
                                f"({route.name})")

    def _prepare_new(self, rt: R.ResourceType, obj: dict) -> None:
        md = obj["metadata"]
        if not md.get("name") and md.get("generateName"):
            while True:
                candidate = md["generateName"] + random_suffix()
                if self.store.get(rt, md.get("namespace"), candidate) is None:
                    md["name"] = candidate
                    break
        md["uid"] = new_uid()
        if rt is R.JOBS and md.get("name"):
            obj.pop("status", None)
            prepare_job(obj)
            obj["status"] = {}
        elif rt is R.PODS:
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                default_pod_spec(spec)
                spec.setdefault("restartPolicy", "Always")
                spec.setdefault("serviceAccountName", "default")
                spec.setdefault("serviceAccount", spec["serviceAccountName"])
                spec.setdefault("enableServiceLinks", True)
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rt is R.SERVICES:
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("type", "ClusterIP")
                spec.setdefault("sessionAffinity", "None")
                if spec.get("clusterIP") is None:  # allocated from the service CIDR (headless stays "None")
                    n = int(md["uid"].replace("-", "")[:4], 16)
                    spec["clusterIP"] = f"10.96.{n // 256}.{n % 256 or 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
                for port in spec.get("ports") or []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
                        port.setdefault("targetPort", port.get("port"))
            obj["status"] = {"loadBalancer": {}}
        elif rt is R.SECRETS:
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            if not data:
                obj.pop("data")
            obj.setdefault("type", "Opaque")
        elif rt is R.NAMESPACES:
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md.get("name", "")
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}

    def _create(self, route: Route, req: Request) -> Response:
        obj = self._body(req)
        self._check_body_identity(route, obj, name_required=False)
        rt = route.rt
        if rt.namespaced and not self.store.namespace_exists(route.namespace):
            raise E.namespace_not_found(route.namespace)
        md = obj["metadata"]
        if not md.get("name") and not md.get("generateName"):
            raise E.invalid(rt, "", [E.cause_required("metadata.name", "name or generateName is required")])
        self._prepare_new(rt, obj)
        causes = validate(rt, obj)
        if causes:
            raise E.invalid(rt, md.get("name") or "", causes)
        if _parse_bool_dry_run(req.query.get("dryRun")):
            if self.store.get(rt, route.namespace, md["name"]) is not None:
                raise E.already_exists(rt, md["name"])
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            return Response(201, obj)
        created = self.store.create(rt, obj)
        return Response(201, created)

    def _merge_for_write(self, route: Route, old: dict, new: dict) -> dict:
        """Apply status-subresource rules: main resource ignores status, /status ignores the rest."""
        rt = route.rt
        if route.subresource == "status":
            merged = clone(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            return merged
        if rt.has_status:
            if "status" in old:
                new["status"] = clone(old["status"])
            else:
                new.pop("status", None)
        if rt is R.SECRETS and new.get("stringData"):
            data = new.setdefault("data", {})
            for key, value in new.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if rt is R.JOBS:
            spec = new.setdefault("spec", {})
            ospec = old.get("spec") or {}
            for key in ("selector", "completionMode", "backoffLimit", "suspend", "podReplacementPolicy",
                        "parallelism", "completions"):
                if key not in spec and key in ospec:
                    spec[key] = clone(ospec[key])
            if isinstance(spec.get("template"), dict) and isinstance(spec["template"].get("spec"), dict):
                default_pod_spec(spec["template"]["spec"])
        if rt is R.PODS and isinstance(new.get("spec"), dict):
            default_pod_spec(new["spec"])
        return new

    def _write(self, route: Route, req: Request, old: dict, new: dict) -> Response:
        rt = route.rt
        new = self._merge_for_write(route, old, new)
        md = new.setdefault("metadata", {})
        omd = old["metadata"]
        want_rv = md.get("resourceVersion")
        if want_rv and want_rv != omd["resourceVersion"]:
            raise E.conflict(rt, route.name)
        md["name"], md["uid"] = omd["name"], omd["uid"]
        if rt.namespaced:
            md["namespace"] = omd["namespace"]
        md["creationTimestamp"] = omd["creationTimestamp"]
        causes = validate_update(rt, old, new)
        if causes:
            raise E.invalid(rt, route.name, causes)
        bump = route.subresource != "status" and (new.get("spec") != old.get("spec"))
        if _parse_bool_dry_run(req.query.get("dryRun")):
            return Response(200, new)
        return Response(200, self.store.update(rt, new, bump_generation=bump))

    def _update(self, route: Route, req: Request) -> Response:
        obj = self._body(req)
        self._check_body_identity(route, obj, name_required=True)
        with self.store.lock:  # read-modify-write is atomic; only an explicit resourceVersion can conflict
            old = self._require(route)
            return self._write(route, req, old, obj)

    def _patch(self, route: Route, req: Request) -> Response:
        body = self._body(req)
        content_type = req.headers.get("content-type", "")
        if "apply-patch" in content_type:
            raise E.ApiError(415, "UnsupportedMediaType", "server-side apply is not supported by the fake "
                                                          "apiserver")
        with self.store.lock:
            old = self._require(route)
            patched = apply_patch(content_type, old, body)
            if not isinstance(patched, dict):
                raise E.bad_request("patch result is not an object")
            patched.setdefault("metadata", {})
            patch_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if not patch_rv:
                patched["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._write(route, req, old, patched)

    def _delete_options(self, route: Route, req: Request) -> tuple[str, int | None, dict, bool]:
        opts: dict = {}
        if req.body:
            try:
                opts = json.loads(req.body) or {}
            except ValueError:
                raise E.bad_request("the body of the request could not be decoded as DeleteOptions") from None
        q = req.query
        policy = opts.get("propagationPolicy") or q.get("propagationPolicy")
        orphan = opts.get("orphanDependents")
        if orphan is None and "orphanDependents" in q:
            orphan = _parse_bool(q["orphanDependents"])
        if policy and orphan is not None:
            raise E.invalid(route.rt, route.name or "", [E.cause_invalid(
                "propagationPolicy", policy, "orphanDependents and deletionPropagation cannot be both set")])
        if policy is None and orphan is not None:
            policy = ORPHAN if orphan else BACKGROUND
        if policy is not None and policy not in (ORPHAN, BACKGROUND, FOREGROUND):
            raise E.invalid(route.rt, route.name or "", [E.cause_not_supported(
                "propagationPolicy", policy, [FOREGROUND, BACKGROUND, ORPHAN])])
        grace = opts.get("gracePeriodSeconds")
        if grace is None and q.get("gracePeriodSeconds") not in (None, ""):
            grace = _int_param(q, "gracePeriodSeconds")
        dry = bool(opts.get("dryRun")) or _parse_bool_dry_run(q.get("dryRun"))
        return policy, grace, opts.get("preconditions") or {}, dry

    def _delete(self, route: Route, req: Request) -> Response:
        policy, grace, preconditions, dry = self._delete_options(route, req)
        rt = route.rt
        headers = {}
        if policy is None:
            if rt is R.JOBS:
                policy = ORPHAN
                headers["Warning"] = JOB_ORPHAN_WARNING
            else:
                policy = BACKGROUND
        if dry:
            return Response(200, self._require(route), headers)
        obj, removed = self.store.delete(rt, route.namespace, route.name, propagation=policy,
                                         grace_seconds=grace, preconditions=preconditions)
        if removed and rt not in (R.PODS, R.SERVICES):  # those two answer with the deleted object
            return Response(200, E.success_status(rt, route.name, obj["metadata"].get("uid")), headers)
        return Response(200, obj, headers)

    def _delete_collection(self, route: Route, req: Request) -> Response:
        labels, fields = self._selectors(route, req)
        policy, grace, _pre, dry = self._delete_options(route, req)
        rt = route.rt
        if policy is None:
            policy = ORPHAN if rt is R.JOBS else BACKGROUND
        with self.store.lock:
            victims = [o for o in self.store.list(rt, route.namespace) if self._matches(o, labels, fields)]
            if not dry:
                for obj in victims:
                    md = obj["metadata"]
                    try:
                        self.store.delete(rt, md.get("namespace"), md["name"], propagation=policy,
                                          grace_seconds=grace)
                    except E.ApiError:
                        pass
        return Response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})


def _parse_bool_dry_run(value: str | None) -> bool:
    return value == "All"
