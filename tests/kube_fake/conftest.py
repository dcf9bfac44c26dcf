"""Fixtures for the fake Kubernetes API server's own tests."""

from tests.kube_fake.fixtures import fake_kube, fake_kube_factory  # noqa: F401 - re-exported fixtures
