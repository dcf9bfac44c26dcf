"""A real S3 server on this machine for the storage tests: moto's server mode,
started once per test session on a free port of 127.0.0.1 (no network), and a
fresh bucket per test. Credentials and the endpoint reach this process, its
SUBPROCESS workers and the fake cluster's pods through the environment
(``AWS_ENDPOINT_URL_S3``, which botocore honours, and dummy keys)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

#: Dummy credentials moto accepts.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "trainerkit-test",
    "AWS_SECRET_ACCESS_KEY": "trainerkit-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """``http://127.0.0.1:<port>`` of a moto S3 server running for the whole session."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _leaks_in(name: str) -> bool:
    """A variable of the user's shell that botocore (or a proxy setting) would
    read: AWS_PROFILE, AWS_SESSION_TOKEN, AWS_CONFIG_FILE, AWS_ENDPOINT_URL_*..."""
    return name.upper().startswith(("AWS_", "BOTO_")) or name.lower() in ("http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The S3 environment (endpoint and credentials) of this process and its children.

    Hermetic: every AWS_* variable of the user's shell (a profile, a session
    token, another endpoint, config and credentials files) and any proxy is
    removed first, and ~/.aws is not read, so only the moto server is reached.
    """
    for name in [name for name in os.environ if _leaks_in(name)]:
        monkeypatch.delenv(name)
    env = {
        **S3_ENV,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_bucket(s3_env):
    """A new, empty bucket on the moto server: its ``s3://name`` URL."""
    import s3fs

    name = f"tk-{uuid.uuid4().hex[:16]}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"], skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


def s3_files(url: str, endpoint: str) -> list[str]:
    """Every object under ``url`` (``bucket/key`` names), read afresh."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    path = url.split("://", 1)[1]
    return sorted(fs.find(path)) if fs.exists(path) else []


__all__ = ["S3_ENV", "s3_bucket", "s3_endpoint", "s3_env", "s3_files", "os"]
