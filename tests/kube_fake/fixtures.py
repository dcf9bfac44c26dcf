"""pytest fixtures for the fake Kubernetes API server.

Use them from a conftest.py (``from tests.kube_fake.fixtures import fake_kube, fake_kube_factory``)
or with ``pytest_plugins = ["tests.kube_fake.fixtures"]``.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from .cluster import FakeKubeCluster


@pytest.fixture
def fake_kube_factory(tmp_path) -> Iterator[Callable[..., FakeKubeCluster]]:
    """Factory ``make(**FakeKubeCluster kwargs)`` -> started cluster with ``kubeconfig_path`` written
    into ``tmp_path``; every cluster made is stopped at teardown."""
    made: list[FakeKubeCluster] = []

    def make(**kwargs) -> FakeKubeCluster:
        kwargs.setdefault("namespaces", ("default", "ml"))
        cluster = FakeKubeCluster(**kwargs)
        made.append(cluster)
        cluster.write_kubeconfig(tmp_path / f"kubeconfig-{len(made)}")
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def fake_kube(fake_kube_factory) -> FakeKubeCluster:
    """A started FakeKubeCluster (namespaces ``default`` and ``ml``, pods run as subprocesses,
    token ``test-token``) with ``cluster.kubeconfig_path`` written into tmp_path."""
    return fake_kube_factory()
