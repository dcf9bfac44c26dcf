"""``metav1.Status`` error objects, shaped like the real apiserver's."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType


class ApiError(Exception):
    """Raised anywhere in request handling; rendered as a Status response."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


class ConnectionDropped(Exception):
    """Raised in request handling: the transport resets the connection (TCP RST) instead of
    answering, as a crashing apiserver or a load balancer cutting the connection does."""


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def success_status(rt: ResourceType, name: str, uid: str | None) -> dict:
    details = {"name": name, "group": rt.group, "kind": rt.plural} if rt.group else {"name": name, "kind": rt.plural}
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def _details(rt: ResourceType, name: str | None) -> dict:
    details: dict[str, Any] = {}
    if name is not None:
        details["name"] = name
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"})


def resource_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str = "the object has been modified; please apply your "
             "changes to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
                    _details(rt, name))


def invalid(rt: ResourceType, name: str, causes: list[dict]) -> ApiError:
    rendered = [f'{c["field"]}: {c["message"]}' if c.get("field") else c["message"] for c in causes]
    if len(rendered) == 1:
        summary = rendered[0]
    else:
        summary = "[" + ", ".join(rendered) + "]"
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = causes
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(rt: ResourceType, name: str | None, user: str, verb: str, resource: str,
              namespace: str | None) -> ApiError:
    target = f'{rt.group_resource} "{name}"' if name else rt.group_resource
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (f'{target} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "{rt.group}"{scope}')
    return ApiError(403, "Forbidden", message, _details(rt, name))


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                    f'accepted media types include: application/json-patch+json, application/merge-patch+json, '
                    f'application/strategic-merge-patch+json (got "{content_type}")')


def field_cause(reason: str, field: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field}


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cause_invalid(field: str, value: Any, detail: str) -> dict:
    return field_cause("FieldValueInvalid", field, f"Invalid value: {_render_value(value)}: {detail}")


def cause_required(field: str, detail: str = "") -> dict:
    return field_cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def cause_not_supported(field: str, value: Any, supported: list[str]) -> dict:
    sup = ", ".join(_render_value(s) for s in supported)
    return field_cause("FieldValueNotSupported", field,
                       f"Unsupported value: {_render_value(value)}: supported values: {sup}")


def cause_duplicate(field: str, value: Any) -> dict:
    return field_cause("FieldValueDuplicate", field, f"Duplicate value: {_render_value(value)}")


def cause_forbidden(field: str, detail: str) -> dict:
    return field_cause("FieldValueForbidden", field, f"Forbidden: {detail}")
