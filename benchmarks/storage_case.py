"""Storage: saving and loading a large model through trainerkit against bare
fsspec ``put``/``get`` of the same files.

One round of each side moves one model of ``size`` bytes (200 MB, 20 MB with
``--quick``; :class:`~benchmarks.storage_modules.Weights`, four raw shard
files) out and back:

* **trainerkit**: ``save_model_to(model, destination)`` then
  ``trainerkit.load(destination, cache=False)``. To a local path that is the
  atomic save (the module writes into a hidden sibling, renamed into place)
  and a load in place; to ``s3://`` it is the module's save into a staging
  directory, the upload, the manifest (sizes and SHA-256 of every file)
  written last, then the manifest read, the download, the check of every
  file against the manifest and the module's load.
* **bare fsspec**: the module's ``save`` into a staging directory,
  ``fs.put(files, destination)``, ``fs.get(destination files, another
  directory)`` and the module's ``load`` from there: what a user without
  trainerkit writes, with no atomicity and no check.

The S3 server is moto's (``python -m moto.server``, a separate process on a
free port of 127.0.0.1), the same one the tests use; without moto and s3fs
the S3 row says it cannot run. Each side checks that the model it loaded
holds the bytes that were saved.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator

from .harness import CannotRun, Figure, Goal, Row, RowSpec, Settings, alternate, check, guarded, paired
from .storage_modules import Weights

NAME = "storage"

LOCAL = RowSpec(
    "storage.save_load.local",
    "save + load of a large model to a local path (atomic save, load in place) vs "
    "module save + fsspec put + get + module load",
    "bare fsspec put/get",
    Goal("ratio", "<=", 1.2, "<= 1.2x"),
)
S3 = RowSpec(
    "storage.save_load.s3",
    "save + load of a large model to s3:// (moto server; upload, manifest last, download "
    "checked against it) vs module save + fsspec put + get + module load",
    "bare fsspec put/get",
    Goal("ratio", "<=", 1.2, "<= 1.2x"),
)
ROWS = (LOCAL, S3)


def run(settings: Settings) -> list[Row]:
    size = settings.size(200 << 20, 20 << 20)
    repeats = settings.size(5, 2)
    rows = []
    if settings.wants(LOCAL):
        rows += guarded((LOCAL,), lambda: _local(LOCAL, size, repeats))
    if settings.wants(S3):
        rows += guarded((S3,), lambda: _s3(S3, size, repeats))
    return rows


def _local(spec: RowSpec, size: int, repeats: int) -> list[Row]:
    import fsspec

    model = Weights.train(size)
    with tempfile.TemporaryDirectory(prefix="trainerkit-bench-storage-") as scratch:
        fs = fsspec.filesystem("file")
        destinations = _numbered(scratch)
        seconds = alternate(repeats, {
            "trainerkit": lambda: _trainerkit_round(model, destinations()),
            "bare": lambda: _bare_round(model, fs, destinations(), scratch),
        })
    return [_row(spec, seconds, size, repeats, "a local directory (the same disk as the staging files)")]


def _s3(spec: RowSpec, size: int, repeats: int) -> list[Row]:
    for package in ("s3fs", "moto"):
        if importlib.util.find_spec(package) is None:
            raise CannotRun(f"{package} is not installed (pip install -e '.[test]')")
    model = Weights.train(size)
    with _moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="trainerkit-bench-storage-") as scratch:
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        destinations = _numbered(f"s3://{bucket}")
        seconds = alternate(repeats, {
            "trainerkit": lambda: _trainerkit_round(model, destinations()),
            "bare": lambda: _bare_round(model, fs, destinations(), scratch),
        })
    return [_row(spec, seconds, size, repeats, "moto's S3 server on 127.0.0.1, in its own process")]


def _numbered(base: str) -> Callable[[], str]:
    counter = iter(range(1_000_000))
    return lambda: f"{base}/model-{next(counter)}"


def _trainerkit_round(model: Weights, destination: str) -> float:
    import trainerkit
    from trainerkit.module import save_model_to

    started = time.perf_counter()
    save_model_to(model, destination)
    loaded = trainerkit.load(destination, cache=False)
    elapsed = time.perf_counter() - started
    check(loaded.data == model.data, f"the model loaded from {destination} is not the one saved")
    return elapsed


def _bare_round(model: Weights, fs: Any, destination: str, scratch: str) -> float:
    staging = tempfile.mkdtemp(dir=scratch)
    back = tempfile.mkdtemp(dir=scratch)
    target = destination.split("://", 1)[-1]
    started = time.perf_counter()
    model.save(staging)
    names = sorted(os.listdir(staging))
    fs.makedirs(target, exist_ok=True)  # a no-op on S3; a local put needs the directory
    fs.put([os.path.join(staging, name) for name in names], [f"{target}/{name}" for name in names])
    fs.get([f"{target}/{name}" for name in names], [os.path.join(back, name) for name in names])
    loaded = Weights.load(back)
    elapsed = time.perf_counter() - started
    check(loaded.data == model.data, f"the bare round trip through {destination} lost data")
    shutil.rmtree(staging)
    shutil.rmtree(back)
    return elapsed


def _row(spec: RowSpec, seconds: dict[str, list[float]], size: int, repeats: int, where: str) -> Row:
    return spec.measured(
        Figure(seconds["trainerkit"], "s"),
        Figure(seconds["bare"], "s"),
        paired("ratio", seconds["trainerkit"], seconds["bare"]),
        notes=[
            f"{size / 1e6:.0f} MB in 4 files, {repeats} rounds, interleaved; destination: {where}; "
            "both sides include the module's own save and load"
        ],
    )


@contextlib.contextmanager
def _moto_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Hermetic: none of the shell's AWS settings (a profile, a session token,
    # another endpoint, ~/.aws files) nor a proxy may reach the benchmark's client.
    leaks = [name for name in os.environ if name.upper().startswith(("AWS_", "BOTO_"))
             or name.lower() in ("http_proxy", "https_proxy", "all_proxy")]
    ours = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env = {**{k: v for k, v in os.environ.items() if k not in leaks}, **ours}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    saved = {name: os.environ.get(name) for name in {*leaks, *ours, "AWS_ENDPOINT_URL_S3"}}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise CannotRun("the moto S3 server did not start") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        for name in leaks:
            os.environ.pop(name, None)
        os.environ.update({**ours, "AWS_ENDPOINT_URL_S3": endpoint})
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
