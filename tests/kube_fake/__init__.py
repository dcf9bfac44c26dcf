"""A stateful fake Kubernetes API server for tests (stdlib only).

Serves real HTTP on 127.0.0.1 so that the official ``kubernetes`` Python client can
talk to it through a generated kubeconfig::

    from tests.kube_fake import FakeKubeCluster

    with FakeKubeCluster(namespaces=("default", "ml")) as cluster:
        path = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        api = kubernetes.config.new_client_from_config(config_file=path, persist_config=False)
        batch = kubernetes.client.BatchV1Api(api)

Modules: ``cluster`` (FakeKubeCluster), ``server`` (HTTP transport), ``api`` (REST
semantics), ``store`` (objects, resourceVersions, watch history, GC), ``jobcontroller``,
``kubelet`` (pods as local subprocesses - read its docstring for the execution
conventions), ``selectors``, ``validation``, ``patch``, ``events``, ``kubeconfig``,
``fixtures`` (pytest fixtures ``fake_kube`` / ``fake_kube_factory``).
"""

from .cluster import FakeKubeCluster
from .errors import ApiError
from .kubelet import MOUNTS_ENV
from .selectors import SelectorError, parse_field_selector, parse_label_selector

__all__ = ["FakeKubeCluster", "ApiError", "SelectorError", "parse_label_selector", "parse_field_selector",
           "MOUNTS_ENV"]
