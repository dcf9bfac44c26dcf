"""The thin layer over the official ``kubernetes`` client: every API call lives here.

Nothing else in trainerkit talks to the API server. This module

* loads the connection settings (a kubeconfig file and context, or the pod's
  service account when running inside a cluster) into a private
  ``ApiClient`` (the process-wide default client is never touched);
* makes each request through the client's typed API classes with
  ``_preload_content=False`` and hands back plain JSON dicts (the rest of the
  package treats Kubernetes objects as data, like the manifests it builds);
* resends a request that met a transient failure (429, a 5xx, a connection
  dropped mid-request) with bounded, jittered backoff that honours
  ``Retry-After`` (:func:`retry_delay`); a create whose earlier attempt was
  carried out unbeknown to us finds its own object on the resend, and takes it;
* turns every failure into one trainerkit error that names the request and
  what to do: :class:`~trainerkit.errors.ClusterUnreachableError`,
  :class:`~trainerkit.errors.ClusterPermissionError` (401, or the verb and
  resource RBAC refused), a missing namespace, or
  :class:`~trainerkit.errors.ClusterError`; the answers callers act upon are
  the exceptions of :mod:`.api_errors`.

It imports ``kubernetes`` at module level: the trainer imports this module
only when it is built, so that loading a configuration does not.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import time
from typing import Any, Callable, Iterator, Optional

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException

from ...errors import ClusterError, ClusterPermissionError, ClusterUnreachableError, ConfigError
from ...schema import did_you_mean
from .api_errors import AlreadyExistsError, ConflictError, ExpiredError, NotFoundError
from .config import SERVICE_ACCOUNT_DIR

log = logging.getLogger("trainerkit")

RBAC_HINT = (
    "grant it with the Role and RoleBinding in config/rbac-kubernetes-trainer.yaml "
    "(see docs/kubernetes.md)"
)
_MERGE_PATCH = "application/merge-patch+json"
FOLLOW_READ_TIMEOUT = 7 * 24 * 3600
#: Answers that say "try again": too many requests, and the server's own failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Backoff before the first resend; it doubles with each one, up to the maximum.
RETRY_BACKOFF_FIRST, RETRY_BACKOFF_MAX = 0.1, 5.0
#: A server's Retry-After is honoured up to this many seconds.
RETRY_AFTER_MAX = 30.0


def retry_delay(resend: int, retry_after: Optional[float] = None) -> float:
    """Seconds to wait before resend number ``resend`` (1 for the first).

    Exponential backoff from :data:`RETRY_BACKOFF_FIRST` to :data:`RETRY_BACKOFF_MAX`,
    jittered down to half so that many clients do not resend in step; at least
    the server's ``Retry-After``, which is capped at :data:`RETRY_AFTER_MAX`.
    """
    backoff = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF_FIRST * 2 ** (resend - 1)) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        return max(backoff, min(RETRY_AFTER_MAX, retry_after))
    return backoff


@dataclasses.dataclass(frozen=True)
class ClusterTarget:
    """Which cluster and namespace a trainer talks to, and how it was configured."""

    server: str
    namespace: str
    source: str  # "kubeconfig <path>, context <name>" or "in-cluster service account"

    def describe(self) -> str:
        return f"{self.server} ({self.source})"


def connect(
    *,
    kubeconfig: Optional[str],
    context: Optional[str],
    namespace: Optional[str],
    request_timeout: float,
    request_retries: int,
    where: str,
) -> "KubeApi":
    """Load the connection settings and return a :class:`KubeApi`. Sends no request.

    Order: an explicit ``kubeconfig``; else ``$KUBECONFIG`` or
    ``~/.kube/config`` when it exists; else the pod's service account when
    running inside a cluster.

    Raises:
        ConfigError: no usable configuration (naming ``where``, the config key path).
    """
    configuration = kubernetes.client.Configuration()
    in_cluster = False
    if kubeconfig is not None:
        path = os.path.expanduser(kubeconfig)
        if not os.path.exists(path):
            raise ConfigError(f"{where}.kubeconfig: {kubeconfig} does not exist")
        config_file: Optional[str] = path
    else:
        config_file = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        if not any(os.path.exists(p) for p in config_file.split(os.pathsep) if p):
            if not _in_cluster_available():
                raise ConfigError(
                    f"{where}: no Kubernetes configuration found: no kubeconfig at "
                    f"{config_file} and not running inside a cluster; set {where}.kubeconfig (or "
                    "$KUBECONFIG) to a kubeconfig file"
                )
            in_cluster = True
    if in_cluster:
        if context is not None:
            raise ConfigError(
                f"{where}.context: {context!r} was given, but no kubeconfig was found and the "
                "trainer runs with the pod's service account, which has no contexts"
            )
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"{where}: cannot use the pod's service account: {exc}") from None
        default_namespace = _read_text(os.path.join(SERVICE_ACCOUNT_DIR, "namespace")) or "default"
        source = "in-cluster service account"
    else:
        assert config_file is not None
        try:
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=config_file)
        except (ConfigException, OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot read kubeconfig {config_file}: {exc}") from None
        names = [c["name"] for c in contexts or []]
        if context is not None and context not in names:
            raise ConfigError(
                f"{where}.context: kubeconfig {config_file} has no context {context!r}; its contexts: "
                + (", ".join(names) or "none")
                + did_you_mean(context, names)
            )
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if chosen is None:
            raise ConfigError(
                f"{where}: kubeconfig {config_file} sets no current-context; set {where}.context to "
                "one of: " + (", ".join(names) or "none")
            )
        try:
            kubernetes.config.load_kube_config(
                config_file=config_file,
                context=chosen["name"],
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise ConfigError(
                f"{where}: cannot use context {chosen['name']!r} of kubeconfig {config_file}: {exc}"
            ) from None
        default_namespace = (chosen.get("context") or {}).get("namespace") or "default"
        source = f"kubeconfig {config_file}, context {chosen['name']}"
    # urllib3 only reconnects, twice and quickly, so that a dead server fails
    # fast; every other resend is KubeApi's own (_call), which knows which
    # failures are transient and recognises a create that had been carried out.
    configuration.retries = urllib3.Retry(
        total=2, connect=2, read=0, status=0, redirect=0, backoff_factor=0.1, respect_retry_after_header=False
    )
    target = ClusterTarget(server=configuration.host, namespace=namespace or default_namespace, source=source)
    return KubeApi(kubernetes.client.ApiClient(configuration), target, request_timeout, request_retries)


def _in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        os.path.join(SERVICE_ACCOUNT_DIR, "token")
    )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


class Stream:
    """A streaming response (a watch or a followed log), closable from another thread."""

    def __init__(self, response: Any, describe: Callable[[BaseException], BaseException]) -> None:
        self._response = response
        self._describe = describe
        self._closed = False

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; ends when the server ends it or :meth:`close` is called."""
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                if chunk:
                    yield chunk
        except Exception as exc:
            if self._closed:
                return  # closed on purpose, from another thread: whatever the read hit ends it
            if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
                raise self._describe(exc) from None
            raise
        finally:
            self._release()

    def lines(self, keep_empty: bool = False) -> Iterator[str]:
        """The body as text lines (without line ends); a last partial line is yielded too."""
        buffer = b""
        for chunk in self.chunks():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                if line or keep_empty:
                    yield line.decode("utf-8", errors="replace")
        if buffer:
            yield buffer.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Stop reading now (unblocks a reader in another thread)."""
        self._closed = True
        try:
            self._response.shutdown()  # urllib3 >= 2.3: unblocks a read in progress
        except Exception:  # already closed or finished
            pass
        try:
            self._response.close()
        except Exception:
            pass
        self._release()

    def _release(self) -> None:
        try:
            self._response.release_conn()
        except Exception:
            pass


class KubeApi:
    """The requests trainerkit makes, in one namespace, as plain dicts."""

    def __init__(self, api_client: Any, target: ClusterTarget, request_timeout: float, request_retries: int) -> None:
        self.target = target
        self._retries = request_retries
        self.namespace = target.namespace
        self._client = api_client
        self._batch = kubernetes.client.BatchV1Api(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._timeout = (min(10.0, request_timeout), request_timeout)

    def close(self) -> None:
        """Release the connection pool."""
        try:
            self._client.close()
        except Exception:
            pass

    # -- jobs -----------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Job; AlreadyExistsError when a Job of that name exists that is not
        this very one (one that an earlier attempt of this call made is returned)."""
        return self._create(
            "jobs.batch", body,
            lambda: self._batch.create_namespaced_job(
                self.namespace, body, field_validation="Strict", **self._options()
            ),
            lambda name: self._batch.read_namespaced_job(name, self.namespace, **self._options()),
        )

    def get_job(self, name: str) -> Optional[dict[str, Any]]:
        """The Job, or None when it does not exist."""
        try:
            return self._json(
                "get", "jobs.batch", name,
                lambda: self._batch.read_namespaced_job(name, self.namespace, **self._options()),
            )
        except NotFoundError:
            return None

    def list_jobs(self, label_selector: str) -> dict[str, Any]:
        """A JobList (``items`` and ``metadata.resourceVersion``)."""
        return self._json(
            "list", "jobs.batch", None,
            lambda: self._batch.list_namespaced_job(
                self.namespace, label_selector=label_selector, **self._options()
            ),
        )

    def patch_job(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch; a ``metadata.resourceVersion`` in it makes it conditional
        (ConflictError when the Job changed since)."""
        return self._json(
            "patch", "jobs.batch", name,
            lambda: self._batch.patch_namespaced_job(
                name, self.namespace, patch, _content_type=_MERGE_PATCH, **self._options()
            ),
        )

    def delete_job(self, name: str, uid: Optional[str] = None) -> bool:
        """Delete a Job and, in the background, its pods and ConfigMap. False when absent.

        With ``uid``, only that very Job (not a newer one with the same name).
        """
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self._json(
                "delete", "jobs.batch", name,
                lambda: self._batch.delete_namespaced_job(
                    name, self.namespace, body=options, **self._options()
                ),
            )
        except NotFoundError as exc:
            return exc.after_resend  # gone after a resend: the attempt whose answer was lost deleted it
        return True

    def watch_jobs(self, label_selector: str, resource_version: str, timeout_seconds: int) -> Stream:
        return self._watch(
            "jobs.batch",
            lambda **kw: self._batch.list_namespaced_job(self.namespace, **kw),
            label_selector, resource_version, timeout_seconds,
        )

    # -- pods -----------------------------------------------------------------------------

    def list_pods(self, label_selector: str) -> dict[str, Any]:
        """A PodList (``items`` and ``metadata.resourceVersion``)."""
        return self._json(
            "list", "pods", None,
            lambda: self._core.list_namespaced_pod(
                self.namespace, label_selector=label_selector, **self._options()
            ),
        )

    def watch_pods(self, label_selector: str, resource_version: str, timeout_seconds: int) -> Stream:
        return self._watch(
            "pods",
            lambda **kw: self._core.list_namespaced_pod(self.namespace, **kw),
            label_selector, resource_version, timeout_seconds,
        )

    def pod_log(self, name: str, container: str, follow: bool) -> Stream:
        """The container's output; with ``follow`` the stream lasts while it runs.

        Read raw: the client cannot decode logs served as
        ``application/octet-stream`` into its ``str`` return type.
        """
        response = self._call(
            "get", "pods/log", name,
            lambda: self._core.read_namespaced_pod_log(
                name, self.namespace, container=container, follow=follow,
                _preload_content=False,
                # A training may print nothing for hours: a followed log has no read timeout
                # to speak of (a week), a snapshot the usual one.
                _request_timeout=(self._timeout[0], FOLLOW_READ_TIMEOUT) if follow else self._timeout,
            ),
        )
        return Stream(response, lambda exc: self._unreachable("get", "pods/log", exc))

    # -- configmaps -----------------------------------------------------------------------

    def create_configmap(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the ConfigMap (as :meth:`create_job`)."""
        return self._create(
            "configmaps", body,
            lambda: self._core.create_namespaced_config_map(
                self.namespace, body, field_validation="Strict", **self._options()
            ),
            lambda name: self._core.read_namespaced_config_map(name, self.namespace, **self._options()),
        )

    def patch_configmap(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._json(
            "patch", "configmaps", name,
            lambda: self._core.patch_namespaced_config_map(
                name, self.namespace, patch, _content_type=_MERGE_PATCH, **self._options()
            ),
        )

    def list_configmaps(self, label_selector: str) -> dict[str, Any]:
        """A ConfigMapList (``items``)."""
        return self._json(
            "list", "configmaps", None,
            lambda: self._core.list_namespaced_config_map(
                self.namespace, label_selector=label_selector, **self._options()
            ),
        )

    def delete_configmap(self, name: str, resource_version: Optional[str] = None) -> bool:
        """Delete a ConfigMap; False when absent.

        With ``resource_version``, only if it has not changed since (ConflictError otherwise).
        """
        options: dict[str, Any] = {}
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        try:
            self._json(
                "delete", "configmaps", name,
                lambda: self._core.delete_namespaced_config_map(
                    name, self.namespace, body=options or None, **self._options()
                ),
            )
        except NotFoundError as exc:
            return exc.after_resend
        return True

    # -- services (multi-node trainings) -----------------------------------------------------

    def create_service(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Service (as :meth:`create_job`)."""
        return self._create(
            "services", body,
            lambda: self._core.create_namespaced_service(
                self.namespace, body, field_validation="Strict", **self._options()
            ),
            lambda name: self._core.read_namespaced_service(name, self.namespace, **self._options()),
        )

    def get_service(self, name: str) -> Optional[dict[str, Any]]:
        """The Service, or None when it does not exist."""
        try:
            return self._json(
                "get", "services", name,
                lambda: self._core.read_namespaced_service(name, self.namespace, **self._options()),
            )
        except NotFoundError:
            return None

    def delete_service(self, name: str, uid: Optional[str] = None) -> bool:
        """Delete a Service (with ``uid``: only that very one); False when absent."""
        options: dict[str, Any] = {"preconditions": {"uid": uid}} if uid else {}
        try:
            self._json(
                "delete", "services", name,
                lambda: self._core.delete_namespaced_service(
                    name, self.namespace, body=options or None, **self._options()
                ),
            )
        except NotFoundError as exc:
            return exc.after_resend
        return True

    # -- plumbing -------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self._timeout}

    def _watch(
        self,
        resource: str,
        list_call: Callable[..., Any],
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
    ) -> Stream:
        response = self._call(
            "watch", resource, None,
            lambda: list_call(
                label_selector=label_selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                # The server ends the watch after timeout_seconds; the read
                # timeout only catches a connection that died silently.
                _request_timeout=(self._timeout[0], timeout_seconds + 30),
            ),
        )
        return Stream(response, lambda exc: self._unreachable("watch", resource, exc))

    def _create(
        self,
        resource: str,
        body: dict[str, Any],
        create: Callable[[], Any],
        read: Callable[[str], Any],
    ) -> dict[str, Any]:
        name = body["metadata"]["name"]
        try:
            return self._json("create", resource, name, create)
        except AlreadyExistsError as exc:
            if not exc.after_resend:
                raise
            # An earlier attempt was carried out but its answer lost (a 5xx after the
            # write, a dropped connection): the object is ours if it is what we sent.
            existing = self._json("get", resource, name, lambda: read(name))
            if not _made_from(body, existing):
                raise
            log.debug("create %s %s: an earlier attempt had made it", resource, name)
            return existing

    def _json(self, verb: str, resource: str, name: Optional[str], call: Callable[[], Any]) -> dict[str, Any]:
        data = self._call(verb, resource, name, call, read=lambda response: response.data)
        try:
            return json.loads(data) if data else {}
        except ValueError:
            raise ClusterError(
                f"the Kubernetes API server at {self.target.server} answered {verb} {resource} with "
                f"something that is not JSON ({data[:200]!r}); is {self.target.server} really a "
                "Kubernetes API server?"
            ) from None

    def _call(
        self,
        verb: str,
        resource: str,
        name: Optional[str],
        call: Callable[[], Any],
        read: Callable[[Any], Any] = lambda response: response,
    ) -> Any:
        """``read(call())``, resent up to ``request_retries`` times after a transient failure.

        Resending is safe for every request trainerkit makes: objects are named
        by the training, so a create carried out twice meets AlreadyExists
        (recognised in :meth:`_create`), a conditional patch meets a Conflict,
        and a delete NotFound (``after_resend`` tells the callers apart).
        """
        started = time.monotonic()
        resends = 0
        while True:
            retry_after: Optional[float] = None
            try:
                return read(call())
            except ApiException as exc:
                transient = exc.status in RETRY_STATUSES
                retry_after = _retry_after(exc)
                failure = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                transient = _dropped(exc)
                failure = exc
            if not transient or resends >= self._retries:
                retried = (
                    f"; trainerkit sent it {resends + 1} times over {time.monotonic() - started:.1f} s "
                    f"(retried {resends} times)" if resends else ""
                )
                if isinstance(failure, ApiException):
                    error: ClusterError = self._translate(verb, resource, name, failure, retried)
                else:
                    error = self._unreachable(verb, resource, failure, retried)
                if isinstance(error, (AlreadyExistsError, NotFoundError)):
                    error.after_resend = resends > 0
                raise error from None
            resends += 1
            delay = retry_delay(resends, retry_after)
            log.debug(
                "%s %s%s: %s; resending in %.2f s (%d of %d)", verb, resource, f" {name}" if name else "",
                _describe_failure(failure), delay, resends, self._retries,
            )
            time.sleep(delay)

    def _unreachable(self, verb: str, resource: str, exc: BaseException, retried: str = "") -> ClusterUnreachableError:
        reason = getattr(exc, "reason", None) or exc
        return ClusterUnreachableError(
            f"cannot reach the Kubernetes API server at {self.target.describe()} to {verb} "
            f"{resource}: {reason}{retried}; check that the cluster is running and that the kubeconfig "
            "points at it (kubectl cluster-info)"
        )

    def _translate(
        self, verb: str, resource: str, name: Optional[str], exc: ApiException, retried: str = ""
    ) -> ClusterError:
        status = _status_body(exc)
        message = status.get("message") or exc.reason or ""
        reason = status.get("reason") or ""
        what = f"{resource} {name!r}" if name else resource
        where = f"in namespace {self.namespace!r}"
        code = exc.status
        if code == 401:
            return ClusterPermissionError(
                f"the Kubernetes API server at {self.target.describe()} rejected the credentials "
                f"(401 Unauthorized) when asked to {verb} {what}: the token or certificate is "
                "missing, expired or wrong; refresh the kubeconfig (log in again) or fix the "
                "service account",
                verb=verb, resource=resource, namespace=self.namespace,
            )
        if code == 403:
            return ClusterPermissionError(
                f"Kubernetes RBAC does not allow this trainer to {verb} {resource} {where} "
                f"(403 Forbidden: {message}); {RBAC_HINT}",
                verb=verb, resource=resource, namespace=self.namespace,
            )
        if code == 404:
            details = status.get("details") or {}
            if details.get("kind") == "namespaces" or message.startswith("namespaces "):
                return ClusterError(
                    f"namespace {self.namespace!r} does not exist in the cluster at "
                    f"{self.target.describe()}: create it (kubectl create namespace "
                    f"{self.namespace}) or set the trainer's namespace to an existing one"
                )
            return NotFoundError(f"{what} not found {where}: {message}")
        if code == 409:
            if reason == "AlreadyExists":
                return AlreadyExistsError(f"{what} already exists {where}")
            return ConflictError(f"{what} changed while trainerkit updated it {where}: {message}")
        if code == 410:
            return ExpiredError(f"the watch of {resource} expired: {message}")
        if code == 422 or code == 400:
            causes = "; ".join(
                f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
                for c in (status.get("details") or {}).get("causes") or []
            )
            return ClusterError(
                f"the Kubernetes API server refused to {verb} {what} {where} ({code} {reason}): "
                f"{causes or message}"
            )
        return ClusterError(
            f"the Kubernetes API server at {self.target.describe()} failed to {verb} {what} {where} "
            f"({code} {reason or exc.reason}: {message}){retried}; try again, and check the API "
            "server's health if it persists"
        )


def _retry_after(exc: ApiException) -> Optional[float]:
    """The seconds of a ``Retry-After`` header (the API server sends whole seconds)."""
    value = (exc.headers or {}).get("Retry-After") if exc.headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: no API server sends one; back off as usual


def _dropped(exc: BaseException) -> bool:
    """Whether a transport error is a connection dropped mid-request (worth resending),
    not a server that cannot be reached at all (reported at once)."""
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return True
    return isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected))


def _describe_failure(failure: BaseException) -> str:
    if isinstance(failure, ApiException):
        return f"{failure.status} {failure.reason}"
    return str(getattr(failure, "reason", None) or failure)


def _made_from(sent: dict[str, Any], existing: dict[str, Any]) -> bool:
    """Whether ``existing`` is the object made from ``sent``: it carries every label
    and annotation sent (a training's Job carries its submission time to the
    microsecond, its ConfigMap a random name) and the same data."""
    sent_meta, meta = sent.get("metadata") or {}, existing.get("metadata") or {}
    for field in ("labels", "annotations"):
        theirs = meta.get(field) or {}
        if any(theirs.get(key) != value for key, value in (sent_meta.get(field) or {}).items()):
            return False
    return sent.get("data") == existing.get("data")


def _status_body(exc: ApiException) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {"message": str(body)[:500]}
    return data if isinstance(data, dict) else {}
