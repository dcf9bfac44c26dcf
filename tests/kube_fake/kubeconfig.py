"""kubeconfig generation (JSON, which is valid YAML, so no YAML dependency is needed)."""

from __future__ import annotations

import json
import os


def kubeconfig_dict(server: str, *, context: str = "fake", namespace: str = "default",
                    token: str | None = None) -> dict:
    user = f"{context}-user"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": f"{context}-cluster", "cluster": {"server": server}}],
        "users": [{"name": user, "user": {"token": token} if token is not None else {}}],
        "contexts": [{"name": context, "context": {"cluster": f"{context}-cluster", "user": user,
                                                    "namespace": namespace}}],
        "current-context": context,
    }


def write_kubeconfig(path: str | os.PathLike, server: str, *, context: str = "fake", namespace: str = "default",
                     token: str | None = None) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(kubeconfig_dict(server, context=context, namespace=namespace, token=token), fh, indent=2)
    os.chmod(path, 0o600)
    return path
