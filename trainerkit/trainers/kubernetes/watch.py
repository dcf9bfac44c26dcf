"""One shared view of a trainer's Jobs and pods, kept current by two watches.

However many trainings a trainer follows, it keeps exactly two long-lived
requests open: a watch of its Jobs and a watch of their pods (both selected
by the trainer's label). Each is a reflector in the client-go manner: list,
then watch from the list's resourceVersion; on a watch that ends, watch again
from the last version seen (bookmarks keep it fresh); on ``410 Gone``, list
again. Status, progress and logs of every training are then read from memory,
and every change is pushed to the trainer (``on_change``) as it happens.

A watch that fails (the API server restarting, a network cut) is retried
with exponential back-off in the background; meanwhile the last known state is
served and :attr:`ClusterCache.healthy` is False.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from ...errors import ClusterError
from .api_errors import ExpiredError
from .manifest import LABEL_TRAINING_ID

if TYPE_CHECKING:
    from .api import KubeApi, Stream

log = logging.getLogger("trainerkit")

#: The API server ends each watch after this long; the reflector then watches again.
WATCH_SECONDS = 300
_BACKOFF_START, _BACKOFF_MAX = 0.5, 30.0


class _Reflector:
    """Mirrors one kind of object (Jobs or pods) matching a label selector."""

    def __init__(
        self,
        kind: str,
        list_call: Callable[[str], dict[str, Any]],
        watch_call: Callable[[str, str, int], "Stream"],
        selector: str,
        on_change: Callable[[set[str]], None],
        stop: threading.Event,
    ) -> None:
        self.kind = kind
        self._list = list_call
        self._watch = watch_call
        self._selector = selector
        self._on_change = on_change
        self._stop = stop
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.first_error: Optional[BaseException] = None
        self.first_attempt = threading.Event()
        self.healthy = False
        self._stream: Optional["Stream"] = None
        self._thread = threading.Thread(target=self._run, name=f"trainerkit-watch-{kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def remember(self, obj: dict[str, Any], insert: bool) -> None:
        """Take an object from a write's response, unless the watch already has a newer one.

        Only a creation inserts: an object the watch does not hold may have been
        deleted meanwhile, and must not come back as a ghost.
        """
        name = obj["metadata"]["name"]
        with self.lock:
            current = self.objects.get(name)
            if (current is None and insert) or (current is not None and _newer(obj, current)):
                self.objects[name] = obj

    def forget(self, name: str) -> None:
        with self.lock:
            self.objects.pop(name, None)

    def _run(self) -> None:
        backoff = _BACKOFF_START
        while not self._stop.is_set():
            try:
                version = self._relist()
                backoff = _BACKOFF_START
                while not self._stop.is_set():
                    version = self._watch_once(version)
            except ExpiredError:
                log.debug("%s watch expired; listing again", self.kind)
                continue
            except ClusterError as exc:
                self.healthy = False
                if not self.first_attempt.is_set():
                    self.first_error = exc
                    self.first_attempt.set()
                    return  # the caller of start() reports it; a later start() tries again
                if self._stop.is_set():
                    return
                log.warning("watching %s failed (%s); retrying in %.1f s", self.kind, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except Exception:  # a bug or a malformed event: never let the thread die silently
                if self._stop.is_set():
                    return
                log.exception("watching %s failed unexpectedly; retrying", self.kind)
                self.healthy = False
                if not self.first_attempt.is_set():
                    self.first_error = ClusterError(f"the first list of {self.kind} failed unexpectedly")
                    self.first_attempt.set()
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def _relist(self) -> str:
        listing = self._list(self._selector)
        items = {item["metadata"]["name"]: item for item in listing.get("items") or ()}
        with self.lock:
            previous = self.objects
            self.objects = items
        changed = {
            _training_of(obj)
            for name, obj in list(items.items()) + list(previous.items())
            if previous.get(name) is not items.get(name)
        }
        self.synced.set()
        self._notify(changed)
        return (listing.get("metadata") or {}).get("resourceVersion") or ""

    def _watch_once(self, version: str) -> str:
        stream = self._watch(self._selector, version, WATCH_SECONDS)
        self._stream = stream
        self.healthy = True
        self.first_attempt.set()  # listed and watching: start() may return
        opened, events = time.monotonic(), 0
        try:
            if self._stop.is_set():
                return version
            for line in stream.lines():
                events += 1
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                metadata = obj.get("metadata") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise ExpiredError(obj.get("message") or "resource version too old")
                    raise ClusterError(f"the watch of {self.kind} failed: {obj.get('message') or obj}")
                version = metadata.get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                name = metadata.get("name")
                with self.lock:
                    if kind == "DELETED":
                        self.objects.pop(name, None)
                    else:
                        self.objects[name] = obj
                self._notify({_training_of(obj)})
        finally:
            self._stream = None
            stream.close()
        if not events and time.monotonic() - opened < 1.0:
            # Something between here and the API server ends watches at once:
            # do not turn that into a tight loop of requests.
            self._stop.wait(_BACKOFF_START)
        return version

    def _notify(self, training_ids: set[Optional[str]]) -> None:
        ids = {training_id for training_id in training_ids if training_id}
        if ids:
            try:
                self._on_change(ids)
            except Exception:
                log.exception("updating trainings from the %s watch failed", self.kind)


def _training_of(obj: Optional[dict[str, Any]]) -> Optional[str]:
    if not obj:
        return None
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_TRAINING_ID)


def _newer(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    # resourceVersions are opaque by contract but etcd revisions in practice;
    # when they are not numbers, the watch's copy (current) wins.
    try:
        return int(candidate["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


class ClusterCache:
    """The Jobs and pods of one trainer (one label selector) in memory.

    :meth:`start` blocks until both are listed (raising the first list's
    error); after that, reads never send a request.
    """

    def __init__(self, api: "KubeApi", selector: str, on_change: Callable[[set[str]], None]) -> None:
        self._api = api
        self._selector = selector
        self._on_change = on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._generation = 0
        self._jobs: Optional[_Reflector] = None
        self._pods: Optional[_Reflector] = None

    @property
    def running(self) -> bool:
        """True once both kinds are listed (reads are then served from memory)."""
        return all(
            reflector is not None and reflector.synced.is_set() and reflector.first_error is None
            for reflector in (self._jobs, self._pods)
        )

    @property
    def healthy(self) -> bool:
        """True while both watches are connected."""
        return bool(self.running and self._jobs and self._pods and self._jobs.healthy and self._pods.healthy)

    def start(self, timeout: float) -> None:
        """Start both watches (once) and wait until both have listed and are watching.

        Raises:
            ClusterError: a first list failed (unreachable, forbidden...).
            TimeoutError: no answer within ``timeout`` seconds.
        """
        with self._lock:
            if self._stop.is_set():
                raise ClusterError("the trainer has been shut down")
            for attribute, kind, list_call, watch_call in (
                ("_jobs", "jobs", self._api.list_jobs, self._api.watch_jobs),
                ("_pods", "pods", self._api.list_pods, self._api.watch_pods),
            ):
                reflector = getattr(self, attribute)
                if reflector is None or (reflector.first_error is not None):
                    reflector = _Reflector(kind, list_call, watch_call, self._selector, self._changes, self._stop)
                    setattr(self, attribute, reflector)
                    reflector.start()
            reflectors = [self._jobs, self._pods]
        for reflector in reflectors:
            assert reflector is not None
            if not reflector.first_attempt.wait(timeout):
                raise TimeoutError(
                    f"listing {reflector.kind} in namespace {self._api.namespace!r} took more than "
                    f"{timeout:.0f} s; is the API server at {self._api.target.server} overloaded?"
                )
            if reflector.first_error is not None:
                raise reflector.first_error

    def stop(self) -> None:
        """End both watches (their threads exit promptly)."""
        self._stop.set()
        for reflector in (self._jobs, self._pods):
            if reflector is not None:
                reflector.close_stream()
        for reflector in (self._jobs, self._pods):
            if reflector is not None:
                reflector.join(5)
        with self._changed:
            self._changed.notify_all()

    # -- reads -----------------------------------------------------------------------------

    def job(self, name: str) -> Optional[dict[str, Any]]:
        assert self._jobs is not None
        with self._jobs.lock:
            return self._jobs.objects.get(name)

    def jobs(self) -> list[dict[str, Any]]:
        assert self._jobs is not None
        with self._jobs.lock:
            return list(self._jobs.objects.values())

    def pods(self, training_id: Optional[str] = None) -> list[dict[str, Any]]:
        """The pods of one training (or all of them)."""
        assert self._pods is not None
        with self._pods.lock:
            pods = list(self._pods.objects.values())
        if training_id is None:
            return pods
        return [pod for pod in pods if _training_of(pod) == training_id]

    # -- writes seen before their watch events --------------------------------------------------

    def remember_job(self, job: dict[str, Any], created: bool = False) -> None:
        """Take a Job from a write's response (``created``: from its creation)."""
        if self._jobs is not None:
            self._jobs.remember(job, insert=created)

    def forget_job(self, name: str) -> None:
        if self._jobs is not None:
            self._jobs.forget(name)

    # -- waiting for changes ------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """A counter that grows with every change seen."""
        return self._generation

    def wait_for_change(self, generation: int, timeout: float) -> int:
        """Block until something changed after ``generation`` (or ``timeout``); return the new one."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != generation or self._stop.is_set(), timeout)
            return self._generation

    def _changes(self, training_ids: set[str]) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        self._on_change(training_ids)

