"""Small helpers for Kubernetes object metadata: timestamps, uids, names, copies.

Objects are plain JSON-compatible dicts everywhere in the fake.  Stored objects
are treated as immutable: every change goes through :func:`clone` first, so a
reference taken under the store lock can be serialised after releasing it.
"""

from __future__ import annotations

import datetime
import json
import random
import uuid
from typing import Any, Iterable

# Alphabet the real apiserver uses for generateName suffixes (no vowels, no
# confusable characters).
_GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_rng = random.SystemRandom()


def now_ts() -> str:
    """Current time as an RFC 3339 timestamp with second precision, like metav1.Time."""
    return format_ts(datetime.datetime.now(datetime.timezone.utc))


def format_ts(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: str) -> float:
    """RFC 3339 timestamp -> POSIX seconds."""
    text = value.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(length: int = 5) -> str:
    return "".join(_rng.choice(_GENERATE_NAME_ALPHABET) for _ in range(length))


def clone(obj: Any) -> Any:
    """Deep copy of a JSON-compatible value (faster than copy.deepcopy for JSON data)."""
    return json.loads(json.dumps(obj))


def meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


def labels_of(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def owner_reference(owner: dict, *, controller: bool = True, block: bool = True) -> dict:
    md = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": md["name"],
        "uid": md["uid"],
        "controller": controller,
        "blockOwnerDeletion": block,
    }


def controller_ref(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_uids(obj: dict) -> list[str]:
    return [ref.get("uid") for ref in (obj.get("metadata") or {}).get("ownerReferences") or [] if ref.get("uid")]


def get_condition(conditions: Iterable[dict] | None, ctype: str) -> dict | None:
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(conditions: Iterable[dict] | None, ctype: str) -> bool:
    cond = get_condition(conditions, ctype)
    return bool(cond) and cond.get("status") == "True"


def lookup_path(obj: Any, path: str) -> Any:
    """Resolve a dotted path such as ``status.phase`` (None when absent)."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur
