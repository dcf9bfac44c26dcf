"""PATCH bodies: JSON merge patch (RFC 7386), a strategic-merge-patch subset, JSON patch (RFC 6902).

Strategic merge patch is JSON merge patch plus merge-by-key for the lists the
trainer is likely to touch (containers/env/volumes/... by ``name``, conditions by
``type``, ownerReferences by ``uid``, volumeMounts by ``mountPath``) and the
``$patch: delete|replace`` directive; other directives are dropped.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError, bad_request
from .meta import clone

# list field name -> merge key
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "ports": "containerPort", "volumeMounts": "mountPath", "conditions": "type",
    "ownerReferences": "uid", "imagePullSecrets": "name", "tolerations": "key",
}
# primitive lists merged as sets
_SET_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    if isinstance(patch, dict):
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: clone(v) for k, v in patch.items() if k != "$patch"}
        if directive == "delete":
            return None
        result = clone(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$") or key.startswith("$setElementOrder/") or key.startswith("$deleteFromPrimitiveList/"):
                continue
            if value is None:
                result.pop(key, None)
                continue
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        return result
    if isinstance(patch, list):
        if field in _SET_LISTS and isinstance(target, list):
            out = list(target)
            for item in patch:
                if item not in out:
                    out.append(item)
            return out
        key = _MERGE_KEYS.get(field)
        if key and isinstance(target, list) and all(isinstance(i, dict) for i in patch):
            if any(i.get("$patch") == "replace" for i in patch):
                return [clone(i) for i in patch if i.get("$patch") != "replace"]
            out = [clone(i) for i in target]
            for item in patch:
                idx = next((n for n, cur in enumerate(out)
                            if isinstance(cur, dict) and cur.get(key) == item.get(key)), None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        out.pop(idx)
                    continue
                if idx is None:
                    out.append(strategic_merge_patch(None, item, ""))
                else:
                    out[idx] = strategic_merge_patch(out[idx], item, "")
            return out
        return clone(patch)
    return clone(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict):
            if part not in cur:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                               f"doc is missing path: {'/' + '/'.join(parts)}")
            cur = cur[part]
        elif isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                raise ApiError(422, "Invalid", f"doc is missing path: {'/' + '/'.join(parts)}") from None
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: {'/' + '/'.join(parts)}")
    return cur


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = clone(target)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {op.get('path')} failed")
            continue
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = clone(_walk(doc, src))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            continue
        if not parts:
            if kind in ("add", "replace"):
                doc = clone(op.get("value"))
                continue
            raise bad_request("cannot remove the document root")
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if kind in ("add", "replace"):
            value = clone(op.get("value"))
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                else:
                    idx = int(last)
                    if kind == "add":
                        parent.insert(idx, value)
                    else:
                        _walk(doc, parts)
                        parent[idx] = value
            elif isinstance(parent, dict):
                if kind == "replace":
                    _walk(doc, parts)
                parent[last] = value
            else:
                raise ApiError(422, "Invalid", f"doc is missing path: {op.get('path')}")
        elif kind == "remove":
            _walk(doc, parts)
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        else:
            raise bad_request(f"unexpected json patch operation {kind!r}")
    return doc


def apply_patch(content_type: str, target: dict, body: Any) -> dict:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json-patch+json":
        return json_patch(target, body)
    if not isinstance(body, dict):
        raise bad_request("patch body must be a JSON object")
    if ctype == "application/merge-patch+json":
        return merge_patch(target, body)
    if ctype in ("application/strategic-merge-patch+json", "application/json", ""):
        return strategic_merge_patch(target, body)
    raise ApiError(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media types include: "
                   f"application/json-patch+json, application/merge-patch+json, "
                   f"application/strategic-merge-patch+json (got {ctype!r})")
