"""Models and checkpoints at URLs (issue 14), against a real S3 server on this
machine (moto's server mode, tests.storage_fixtures) and fsspec's memory://
and file:// filesystems, for LOCAL and SUBPROCESS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import trainerkit
from trainerkit import storage
from trainerkit.errors import ModelLoadError, StorageError, TrainingStateError
from tests.storage_fixtures import s3_bucket, s3_endpoint, s3_env, s3_files  # noqa: F401 - fixtures
from tests.storage_modules import DiesAfterSaveOnce, DiesMidUpload, DiesMidUploadOnce, Epochs, Named
from tests.subprocess_fixtures import GRACE
from tests.training_modules import Adder

WAIT = 60


def _manager(manager_factory, tmp_path, trainer_type, **config):
    base = {"state_dir": str(tmp_path / "state")}
    if trainer_type == "SUBPROCESS":
        base["cancel_grace_period"] = GRACE
    base.update(config)
    return manager_factory({"model_management": {"trainers": {"t": {"type": trainer_type, "config": base}}}})


@pytest.fixture(params=["LOCAL", "SUBPROCESS"])
def trainer_type(request):
    return request.param


# -- models at URLs ---------------------------------------------------------------------------


def test_a_model_saved_to_s3_loads_back_here_and_in_a_fresh_process(
    manager_factory, tmp_path, trainer_type, s3_bucket, s3_env
):
    trainer = _manager(manager_factory, tmp_path, trainer_type).get_trainer("t")
    future = trainer.train(Adder, 2, save_path=f"{s3_bucket}/models/", save_with_id=True, model_name="adder")
    assert future.save_path == f"{s3_bucket}/models/{future.id}/adder"
    assert future.result(timeout=WAIT).total == 3
    key = future.save_path.split("://", 1)[1]
    assert s3_files(future.save_path, s3_env["AWS_ENDPOINT_URL_S3"]) == [
        f"{key}/{storage.MANIFEST_FILE}", f"{key}/.trainerkit-model.json", f"{key}/model.pkl",
    ]
    manifest = storage.read_manifest(future.save_path)
    assert manifest["module"] == "tests.training_modules:Adder" and manifest["training_id"] == future.id
    assert {item["path"] for item in manifest["files"]} == {".trainerkit-model.json", "model.pkl"}
    # Another process, knowing nothing but the URL (and the S3 environment), loads it.
    code = f"import trainerkit; print(trainerkit.load({future.save_path!r}, cache=False).total)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    # A new manager (a restarted caller) gets the model through the future.
    again = _manager(manager_factory, tmp_path, trainer_type).get_trainer("t")
    assert again.get_model_future(future.id).result(timeout=WAIT).total == 3


def test_a_crash_mid_upload_leaves_files_but_nothing_loadable(manager_factory, tmp_path, s3_bucket, s3_env):
    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS").get_trainer("t")
    future = trainer.train(DiesMidUpload, save_path=f"{s3_bucket}/crashed")
    assert future.wait(WAIT)
    info = future.get_info()
    assert info.status is trainerkit.TrainingStatus.ERRORED
    assert "17" in info.errors[0].message
    left = s3_files(f"{s3_bucket}/crashed", s3_env["AWS_ENDPOINT_URL_S3"])
    assert left and not any(name.endswith(storage.MANIFEST_FILE) for name in left)
    with pytest.raises(ModelLoadError, match=r"no complete model at s3://.*/crashed.*upload never finished"):
        trainerkit.load(f"{s3_bucket}/crashed")
    with pytest.raises(trainerkit.TrainingError):
        future.result()
    # The half-upload occupies the prefix: a new save there is refused, saying where.
    with pytest.raises(FileExistsError, match=f"{s3_bucket}/crashed"):
        trainer.train(Adder, 1, save_path=f"{s3_bucket}/crashed")


def test_a_retry_after_a_crash_mid_upload_removes_its_own_leftovers_and_saves(
    manager_factory, tmp_path, s3_bucket, s3_env
):
    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS", max_retries=1).get_trainer("t")
    marker = str(tmp_path / "died")
    future = trainer.train(DiesMidUploadOnce, marker, save_path=f"{s3_bucket}/retried")
    assert future.result(timeout=WAIT).value == 6
    assert os.path.exists(marker) and future.get_info().attempt == 2
    assert trainerkit.load(f"{s3_bucket}/retried", cache=False).value == 6


def test_a_retry_after_a_crash_right_after_a_plain_path_save_replaces_that_model(manager_factory, tmp_path):
    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS", max_retries=1).get_trainer("t")
    marker = str(tmp_path / "died")
    future = trainer.train(DiesAfterSaveOnce, marker, save_path=str(tmp_path / "m"))
    assert future.result(timeout=WAIT).value == 6
    assert future.get_info().attempt == 2
    assert trainerkit.load(str(tmp_path / "m")).value == 6


def test_leftovers_of_another_training_are_never_removed(s3_bucket, s3_env, tmp_path):
    url = f"{s3_bucket}/theirs"
    fs, path = storage.filesystem(url)
    fs.pipe_file(f"{path}/.trainerkit-model.json", json.dumps({"module": "x:Y", "training_id": "t--otherotherot"}).encode())
    fs.pipe_file(f"{path}/weights.bin", b"half")
    with pytest.raises(FileExistsError, match="theirs: it is not empty"):
        trainerkit.module.save_model_to(Adder(1), url, training_id="t--abcdefghijkl")
    with pytest.raises(FileExistsError):
        trainerkit.module.save_model_to(Adder(1), url)  # no training id: nothing is its own
    assert s3_files(url, s3_env["AWS_ENDPOINT_URL_S3"]) == sorted(
        f"{path}/{name}" for name in (".trainerkit-model.json", "weights.bin")
    )
    trainerkit.module.save_model_to(Adder(2), url, training_id="t--otherotherot")
    assert trainerkit.load(url, cache=False).total == 2


def test_an_upload_that_fails_removes_what_it_uploaded(s3_bucket, s3_env, monkeypatch, tmp_path):
    fs, _ = storage.filesystem(s3_bucket)  # fsspec hands publish() this same instance
    real = fs.pipe_file

    def refuse(path, *args, **kwargs):
        if str(path).endswith(storage.MANIFEST_FILE):
            raise PermissionError("AccessDenied: no writes for you")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fs, "pipe_file", refuse)
    with pytest.raises(StorageError, match=rf"cannot upload the model to {s3_bucket}/m: PermissionError.*credentials"):
        trainerkit.module.save_model_to(Adder(1), f"{s3_bucket}/m")
    assert s3_files(f"{s3_bucket}/m", s3_env["AWS_ENDPOINT_URL_S3"]) == []


def test_loads_from_a_url_are_cached_by_manifest_and_cache_false_bypasses_it(s3_bucket, s3_env, tmp_path):
    url = f"{s3_bucket}/cached"
    trainerkit.module.save_model_to(Adder(41), url, training_id=None)
    cache = tmp_path / "cache"
    assert trainerkit.load(url, cache_dir=str(cache)).total == 41
    entries = os.listdir(cache)
    assert len(entries) == 1 and sorted(os.listdir(cache / entries[0])) == [".trainerkit-model.json", "model.pkl"]
    # The cached copy is used while the manifest is the same: the remote model file may go.
    fs, path = storage.filesystem(url)
    fs.rm_file(f"{path}/model.pkl")
    assert trainerkit.load(url, cache_dir=str(cache)).total == 41
    with pytest.raises(ModelLoadError, match=r"incomplete.*model.pkl"):
        trainerkit.load(url, cache=False)
    # A new model under the same URL has a new manifest, so it is downloaded afresh.
    storage.remove(url)
    trainerkit.module.save_model_to(Adder(42), url)
    assert trainerkit.load(url, cache_dir=str(cache)).total == 42
    assert len(os.listdir(cache)) == 2


@pytest.fixture
def users_aws_shell(monkeypatch, tmp_path):
    """What a user's shell may hold: a profile that is not on this machine, a
    real endpoint, a session token, proxies, a config file naming another region."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-3\ns3 =\n    addressing_style = virtual\n")
    for name, value in {
        "AWS_PROFILE": "prod-admin", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_SESSION_TOKEN": "expired",
        "AWS_CONFIG_FILE": str(config), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)


def test_the_s3_tests_are_hermetic_whatever_aws_settings_the_shell_has(users_aws_shell, s3_bucket, s3_env):
    assert "AWS_PROFILE" not in os.environ and "AWS_SESSION_TOKEN" not in os.environ
    url = f"{s3_bucket}/hermetic"
    trainerkit.module.save_model_to(Adder(8), url)
    assert trainerkit.load(url, cache=False).total == 8
    assert s3_files(url, s3_env["AWS_ENDPOINT_URL_S3"])


def test_a_changed_file_is_refused_as_not_matching_its_manifest(tmp_path):
    url = "memory://trainerkit-tests/changed"
    trainerkit.module.save_model_to(Adder(1), url)
    fs, path = storage.filesystem(url)
    fs.pipe_file(f"{path}/model.pkl", b"not the pickle that was published")
    with pytest.raises(ModelLoadError, match=r"does not match its manifest: model.pkl"):
        trainerkit.load(url, cache=False)
    storage.remove(url)


@pytest.mark.parametrize(
    "save_path, error, match",
    [
        ("nosuch://bucket/m", StorageError, r"nosuch://bucket/m.*'nosuch' is not a protocol fsspec knows"),
        ("gs://bucket/m", StorageError, r"gs://bucket/m.*pip install 'trainerkit\[gcs\]'"),
        ("s3://", ValueError, r"not a usable URL"),
        ("s3://no-such-bucket-trainerkit/m", StorageError, r"s3://no-such-bucket-trainerkit/m"),
    ],
)
def test_a_bad_url_is_one_clear_error_at_train_time_and_nothing_is_recorded(
    manager_factory, tmp_path, trainer_type, s3_env, save_path, error, match
):
    if save_path.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("gcsfs is installed here")
    trainer = _manager(manager_factory, tmp_path, trainer_type).get_trainer("t")
    with pytest.raises(error, match=match):
        trainer.train(Adder, 1, save_path=save_path)
    assert trainer.list_trainings() == []


def test_no_credentials_is_one_clear_error_at_train_time(manager_factory, tmp_path, s3_bucket, s3_env, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # skip_instance_cache: a filesystem built with the credentials must not be reused.
    options = {"s3": {"skip_instance_cache": True, "endpoint_url": s3_env["AWS_ENDPOINT_URL_S3"]}}
    trainer = _manager(manager_factory, tmp_path, "LOCAL", storage_options=options).get_trainer("t")
    with pytest.raises(StorageError, match=rf"{s3_bucket}/m.*credentials"):
        trainer.train(Adder, 1, save_path=f"{s3_bucket}/m")
    assert trainer.list_trainings() == []


def test_storage_options_of_the_config_reach_the_worker(manager_factory, tmp_path, s3_bucket, s3_env, monkeypatch):
    # No endpoint in the environment: only the config's storage_options say where S3 is.
    endpoint = s3_env["AWS_ENDPOINT_URL_S3"]
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    options = {"s3": {"endpoint_url": endpoint, "skip_instance_cache": True}}
    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS", storage_options=options).get_trainer("t")
    future = trainer.train(Epochs, 2, save_path=f"{s3_bucket}/opts", save_with_id=True)
    assert future.result(timeout=WAIT).epoch == 2
    assert [info.name for info in future.checkpoints()] == ["checkpoint-000001", "checkpoint-000002"]


def test_an_occupied_url_is_refused_and_delete_model_removes_a_url_model(
    manager_factory, tmp_path, s3_bucket, s3_env
):
    trainer = _manager(manager_factory, tmp_path, "LOCAL").get_trainer("t")
    future = trainer.train(Adder, 1, save_path=f"{s3_bucket}/one")
    future.result(timeout=WAIT)
    with pytest.raises(FileExistsError, match=f"{s3_bucket}/one is not empty"):
        trainer.train(Adder, 1, save_path=f"{s3_bucket}/one")
    trainer.delete_training(future.id, delete_model=True)
    assert s3_files(f"{s3_bucket}/one", s3_env["AWS_ENDPOINT_URL_S3"]) == []


def test_a_delete_that_failed_on_the_checkpoints_after_removing_a_url_model_can_be_retried(
    manager_factory, tmp_path, monkeypatch
):
    trainer = _manager(manager_factory, tmp_path, "LOCAL", checkpoint_dir=str(tmp_path / "ckpt")).get_trainer("t")
    future = trainer.train(Epochs, 1, save_path="memory://tk-tests/delete-retried", save_with_id=True)
    future.result(timeout=WAIT)
    store = type(trainer.checkpoint_store())

    def broken(self, training_id):
        raise StorageError(f"cannot remove {self.training_dir(training_id)}: the store is down")

    monkeypatch.setattr(store, "delete", broken)
    with pytest.raises(StorageError, match="the store is down"):
        trainer.delete_training(future.id, delete_model=True)
    assert storage.read_manifest(future.save_path) is None  # the model went first
    monkeypatch.undo()
    trainer.delete_training(future.id, delete_model=True)  # the model is already gone: not "refusing"
    assert trainer.list_checkpoints(future.id) == []
    with pytest.raises(trainerkit.TrainingNotFoundError):
        trainer.get_model_future(future.id)


# -- checkpoints ---------------------------------------------------------------------------------


def test_checkpoints_at_an_s3_checkpoint_dir_resume_and_are_deleted_with_the_training(
    manager_factory, tmp_path, trainer_type, s3_bucket, s3_env
):
    ckpt = f"{s3_bucket}/ckpt"
    trainer = _manager(manager_factory, tmp_path, trainer_type, checkpoint_dir=ckpt).get_trainer("t")
    first = trainer.train(Epochs, 3, save_path=str(tmp_path / "models"), save_with_id=True)
    assert first.result(timeout=WAIT).started_at == 0
    saved = first.checkpoints()
    assert [info.path for info in saved] == [f"{ckpt}/{first.id}/checkpoint-00000{n}" for n in (1, 2, 3)]
    assert trainerkit.load(saved[1].path).epoch == 2
    second = trainer.train(Epochs, 5, save_path=str(tmp_path / "models"), save_with_id=True, resume_from=first.id)
    model = second.result(timeout=WAIT)
    assert (model.started_at, model.epoch) == (3, 5)
    trainer.delete_training(first.id)
    assert s3_files(f"{ckpt}/{first.id}", s3_env["AWS_ENDPOINT_URL_S3"]) == []
    assert len(second.checkpoints()) == 2


def test_a_checkpoint_saved_again_under_its_name_replaces_the_old_one(manager_factory, tmp_path, trainer_type):
    trainer = _manager(manager_factory, tmp_path, trainer_type).get_trainer("t")
    future = trainer.train(Named, save_path=str(tmp_path / "models"), save_with_id=True)
    assert future.result(timeout=WAIT).value == 2
    (best,) = future.checkpoints()
    assert best.name == "best" and trainerkit.load(best.path).value == 2
    # Only the new version's files remain, beside the manifest that names them.
    entries = sorted(os.listdir(best.path))
    assert entries[0] == storage.MANIFEST_FILE and len(entries) == 2 and entries[1].startswith("v-")


def test_cancel_then_resume_from_the_canceled_training(manager_factory, tmp_path, s3_bucket, s3_env):
    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS", checkpoint_dir=f"{s3_bucket}/ckpt").get_trainer("t")
    hold = str(tmp_path / "hold")
    first = trainer.train(Epochs, 4, hold=hold, hold_after=2, save_path=str(tmp_path / "m"), save_with_id=True)
    from tests.subprocess_fixtures import wait_until

    wait_until(lambda: os.path.exists(hold + ".entered"), "the training to finish epoch 2")
    first.cancel()
    assert first.wait(WAIT) and first.get_info().status is trainerkit.TrainingStatus.CANCELED
    assert [info.name for info in first.checkpoints()] == ["checkpoint-000001", "checkpoint-000002"]
    second = trainer.train(Epochs, 4, save_path=str(tmp_path / "m"), save_with_id=True, resume_from=first.id)
    model = second.result(timeout=WAIT)
    assert (model.started_at, model.epoch) == (2, 4)


def test_resume_from_an_unknown_training_is_refused_at_train_time(manager_factory, tmp_path, trainer_type):
    trainer = _manager(manager_factory, tmp_path, trainer_type).get_trainer("t")
    with pytest.raises(trainerkit.TrainingNotFoundError, match="t--nosuchtraining1.*no record"):
        trainer.train(Adder, 1, save_path=str(tmp_path / "m"), resume_from="t--nosuchtraining1")
    with pytest.raises(trainerkit.InvalidTrainingIdError, match="resume_from"):
        trainer.train(Adder, 1, save_path=str(tmp_path / "m"), resume_from="not an id")
    assert trainer.list_trainings() == []


def test_outside_a_training_save_checkpoint_is_refused_and_latest_checkpoint_is_none():
    assert trainerkit.latest_checkpoint() is None
    with pytest.raises(TrainingStateError, match="outside a training"):
        trainerkit.save_checkpoint(Adder(1))


def test_a_bad_checkpoint_name_is_refused(manager_factory, tmp_path):
    from trainerkit.checkpoints import CheckpointStore

    store = CheckpointStore(str(tmp_path / "ckpt"))
    for name in ("../up", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            store.save("t--abcdefghijkl", Adder(1), name)
    assert store.list("t--abcdefghijkl") == []


def test_a_bad_checkpoint_name_is_one_error_that_speaks_of_the_checkpoint_name(tmp_path):
    from trainerkit.checkpoints import CheckpointStore

    store = CheckpointStore(str(tmp_path / "ckpt"))
    for name, why in (("", "it is empty"), ("../x", "it must be one path segment"), ("a/b", "it must be one path segment"),
                      ("x" * 300, "it is 300 bytes long")):
        with pytest.raises(ValueError) as caught:
            store.save("t--abcdefghijkl", Adder(1), name)
        assert str(caught.value).startswith(f"checkpoint name {name[:60]!r} cannot be used: {why}")
        assert "model_name" not in str(caught.value)
    with pytest.raises(TypeError, match="checkpoint name must be a string"):
        store.save("t--abcdefghijkl", Adder(1), 3)
    assert store.list("t--abcdefghijkl") == []
    assert store.save("t--abcdefghijkl", Adder(1), "y" * 255) == "y" * 255  # the longest a file name may be
    assert trainerkit.load(store.list("t--abcdefghijkl")[0].path).total == 1


def test_load_takes_a_home_relative_path_and_refuses_an_empty_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    trainerkit.module.save_model_to(Adder(5), str(tmp_path / "models" / "run"))
    assert trainerkit.load("~/models/run").total == 5
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="load\\(\\) takes a model directory or URL"):
            trainerkit.load(empty)
    with pytest.raises(TypeError, match="model directory or URL, got int"):
        trainerkit.load(3)
    for bare in ("s3://", "memory:///", "file://"):  # not 'no credentials' or 'no manifest at /'
        with pytest.raises(ValueError, match=f"load\\(\\) got '{bare}', which names no model"):
            trainerkit.load(bare)


def test_a_relative_file_url_is_made_absolute_like_a_plain_path(manager_factory, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = _manager(manager_factory, tmp_path, "LOCAL", checkpoint_dir="file://ckpts").get_trainer("t")
    future = trainer.train(Epochs, 1, save_path="file://models/run/")
    assert future.save_path == f"file://{tmp_path}/models/run"
    assert future.result(timeout=WAIT).epoch == 1
    assert os.path.isfile(tmp_path / "models" / "run" / storage.MANIFEST_FILE)
    assert future.checkpoints()[0].path == f"file://{tmp_path}/ckpts/{future.id}/checkpoint-000001"
    monkeypatch.chdir("/")
    assert trainerkit.load(future.save_path).epoch == 1
    assert trainerkit.load(future.checkpoints()[0].path).epoch == 1


def test_checkpoints_and_file_urls_work_under_a_directory_with_odd_characters(manager_factory, tmp_path):
    odd = tmp_path / "my models #1 ? x::y"
    trainer = _manager(manager_factory, tmp_path, "LOCAL", checkpoint_dir=str(odd / "ckpt")).get_trainer("t")
    future = trainer.train(Epochs, 2, save_path=f"file://{odd}/m")
    assert future.result(timeout=WAIT).epoch == 2
    assert os.path.isfile(odd / "m" / storage.MANIFEST_FILE)
    assert [trainerkit.load(info.path).epoch for info in future.checkpoints()] == [1, 2]
    assert trainerkit.load(str(odd / "m")).epoch == 2


def test_a_relative_checkpoint_dir_is_the_same_place_for_the_caller_and_a_worker_with_its_own_cwd(
    manager_factory, tmp_path, monkeypatch
):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    trainer = _manager(
        manager_factory, tmp_path, "SUBPROCESS", checkpoint_dir="rel-ckpt", cwd=str(tmp_path / "elsewhere")
    ).get_trainer("t")
    assert trainer.checkpoint_dir() == str(tmp_path / "rel-ckpt")
    future = trainer.train(Epochs, 2, save_path=str(tmp_path / "m"), save_with_id=True)
    future.result(timeout=WAIT)
    assert [c.name for c in future.checkpoints()] == ["checkpoint-000001", "checkpoint-000002"]
    assert os.path.isdir(tmp_path / "rel-ckpt" / future.id) and not os.path.exists(tmp_path / "elsewhere" / "rel-ckpt")
    monkeypatch.chdir(tmp_path / "elsewhere")
    trainer.delete_training(future.id)
    assert not os.path.exists(tmp_path / "rel-ckpt" / future.id)


def test_an_unwritable_cache_dir_is_one_storage_error_and_cache_false_still_loads(tmp_path, monkeypatch):
    url = "memory://trainerkit-tests/unwritable-cache"
    trainerkit.module.save_model_to(Adder(7), url)
    cache = tmp_path / "cache"
    cache.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage.tempfile, "mkdtemp", refuse)  # as a read-only cache_dir does (root ignores chmod)
    with pytest.raises(StorageError, match=r"unwritable-cache: the cache directory .*cache cannot be created or written \(Permission denied\).*cache=False"):
        trainerkit.load(url, cache_dir=str(cache))
    monkeypatch.undo()
    assert os.listdir(cache) == []
    assert trainerkit.load(url, cache=False).total == 7
    storage.remove(url)


@pytest.mark.parametrize(
    "checkpoint_dir, match",
    [
        ("nosuch://bucket/ckpt", r"checkpoint_dir of trainer 't': cannot use nosuch://bucket/ckpt.*not a protocol fsspec knows"),
        ("gs://bucket/ckpt", r"checkpoint_dir of trainer 't': cannot use gs://bucket/ckpt.*pip install 'trainerkit\[gcs\]'"),
    ],
)
def test_an_unusable_checkpoint_dir_url_is_refused_at_train_time(manager_factory, tmp_path, trainer_type, checkpoint_dir, match):
    if checkpoint_dir.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401
            pytest.skip("gcsfs is installed here")
        except ImportError:
            pass
    trainer = _manager(manager_factory, tmp_path, trainer_type, checkpoint_dir=checkpoint_dir).get_trainer("t")
    with pytest.raises(StorageError, match=match):
        trainer.train(Adder, 1)
    assert trainer.list_trainings() == []


@pytest.mark.parametrize("key", ["cache_dir", "log_dir"])
def test_a_url_for_a_local_directory_key_is_refused_by_the_config(manager_factory, tmp_path, key):
    with pytest.raises(trainerkit.ConfigError, match=f"config.{key}: 's3://bucket/cache' is a URL, but this is a directory of this machine"):
        _manager(manager_factory, tmp_path, "LOCAL", **{key: "s3://bucket/cache"}).get_trainer("t")


def test_load_refuses_a_url_as_cache_dir_instead_of_making_a_local_s3_colon_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "memory://trainerkit-tests/cache-url"
    trainerkit.module.save_model_to(Adder(4), url)
    with pytest.raises(ValueError, match="cache_dir 's3://bucket/cache' is not a directory of this machine"):
        trainerkit.load(url, cache_dir="s3://bucket/cache")
    assert os.listdir(tmp_path) == []
    storage.remove(url)


def test_save_checkpoint_of_something_that_is_not_a_model_is_a_clear_error_and_leaves_nothing(tmp_path):
    from trainerkit.checkpoints import CheckpointStore

    store = CheckpointStore(str(tmp_path / "ckpt"))
    for thing in (None, object(), "weights"):
        with pytest.raises(TypeError, match=r"save_checkpoint\(\) takes the model to save: an instance with a save\(path\)"):
            store.save("t--abcdefghijkl", thing)
    with pytest.raises(Exception):
        store.save("t--abcdefghijkl", Adder(lambda: 1))  # its pickle fails mid-save
    assert not os.path.exists(tmp_path / "ckpt" / "t--abcdefghijkl")
    assert store.list("t--abcdefghijkl") == []


def test_a_training_submitted_again_under_its_external_id_resumes_unless_deleted_first(manager_factory, tmp_path):
    trainer = _manager(manager_factory, tmp_path, "LOCAL").get_trainer("t")
    first = trainer.train(Epochs, 2, external_training_id="nightly")
    assert first.result(timeout=WAIT).started_at == 0
    again = trainer.train(Epochs, 3, external_training_id="nightly")
    assert again.id == first.id and again.result(timeout=WAIT).started_at == 2  # as documented in storage.md
    trainer.delete_training(again.id)
    fresh = trainer.train(Epochs, 1, external_training_id="nightly")
    assert fresh.result(timeout=WAIT).started_at == 0
    assert [c.name for c in fresh.checkpoints()] == ["checkpoint-000001"]


class _CheckpointsFromAThread(trainerkit.ModuleBase):
    def __init__(self, errors):
        self.errors = errors

    @classmethod
    def train(cls):
        import contextvars
        import threading

        errors = []

        def plain():
            try:
                trainerkit.save_checkpoint(cls([]), "plain")
            except trainerkit.TrainingStateError as exc:
                errors.append(str(exc))

        context = contextvars.copy_context()
        for target in (plain, lambda: context.run(trainerkit.save_checkpoint, cls([]), "copied")):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        return cls(errors)


def test_save_checkpoint_from_a_thread_says_how_to_give_it_the_training(manager_factory, tmp_path):
    trainer = _manager(manager_factory, tmp_path, "LOCAL").get_trainer("t")
    future = trainer.train(_CheckpointsFromAThread)
    errors = future.result(timeout=WAIT).errors
    assert len(errors) == 1 and "contextvars.copy_context().run" in errors[0]
    assert [c.name for c in future.checkpoints()] == ["copied"]


def test_a_memory_url_round_trips_in_process(manager_factory, tmp_path):
    trainer = _manager(manager_factory, tmp_path, "LOCAL", checkpoint_dir="memory://tk-tests/ckpt").get_trainer("t")
    future = trainer.train(Epochs, 2, save_path="memory://tk-tests/models", save_with_id=True)
    assert future.result(timeout=WAIT).epoch == 2
    assert trainerkit.load(future.save_path, cache=False).epoch == 2
    assert [info.name for info in future.checkpoints()] == ["checkpoint-000001", "checkpoint-000002"]
    trainer.delete_training(future.id, delete_model=True)
    assert storage.read_manifest(future.save_path) is None
    assert future.checkpoints() == []


def test_the_manifest_records_sizes_and_checksums(tmp_path):
    url = "file://" + str(tmp_path / "published")
    trainerkit.module.save_model_to(Adder(3), url, training_id="t--abcdefghijkl")
    with open(tmp_path / "published" / storage.MANIFEST_FILE) as handle:
        manifest = json.load(handle)
    pickle_entry = next(item for item in manifest["files"] if item["path"] == "model.pkl")
    assert pickle_entry["size"] == os.path.getsize(tmp_path / "published" / "model.pkl")
    assert len(pickle_entry["sha256"]) == 64 and manifest["training_id"] == "t--abcdefghijkl"
    assert trainerkit.load(url).total == 3
    assert trainerkit.load(str(tmp_path / "published")).total == 3


def test_cli_trains_to_a_url_and_loads_it(tmp_path, s3_bucket, s3_env):
    env = {**os.environ, "TRAINERKIT_STATE_DIR": str(tmp_path / "state")}
    train = subprocess.run(
        [sys.executable, "-m", "trainerkit", "--json", "train", "tests.training_modules:Adder", "--arg", "a=4",
         "--save-path", f"{s3_bucket}/cli", "--save-with-id"],
        capture_output=True, text=True, timeout=WAIT, env=env,
    )
    assert train.returncode == 0, train.stderr
    document = json.loads(train.stdout)
    url = document["save_path"]
    assert url.startswith(f"{s3_bucket}/cli/")
    load = subprocess.run(
        [sys.executable, "-m", "trainerkit", "--json", "load", url], capture_output=True, text=True,
        timeout=WAIT, env=env,
    )
    assert load.returncode == 0, load.stderr
    loaded = json.loads(load.stdout)
    assert loaded["class"] == "tests.training_modules:Adder" and loaded["files"] == 2
    missing = subprocess.run(
        [sys.executable, "-m", "trainerkit", "load", f"{s3_bucket}/nothing-here"], capture_output=True,
        text=True, timeout=WAIT, env=env,
    )
    assert missing.returncode != 0 and f"no model at {s3_bucket}/nothing-here" in missing.stderr


def test_cli_load_of_a_bad_path_is_one_usage_or_not_found_error_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    trainerkit.module.save_model_to(Adder(6), str(tmp_path / "m"))
    env = {**os.environ, "TRAINERKIT_STATE_DIR": str(tmp_path / "state")}

    def cli(path):
        return subprocess.run([sys.executable, "-m", "trainerkit", "--json", "load", path], capture_output=True,
                              text=True, timeout=WAIT, env=env)

    for path, code, text in (("", 2, "trainerkit load takes a model directory or URL"),
                             ("s3://", 2, "trainerkit load got 's3://', which names no model"),
                             (str(tmp_path / "nothing"), 6, "the directory does not exist")):
        done = cli(path)
        assert done.returncode == code and text in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and json.loads(done.stdout)["error"]["exit_code"] == code
    home = cli("~/m")
    assert home.returncode == 0, home.stderr
    assert json.loads(home.stdout)["files"] == 2  # the summary reads the same ~-expanded directory


# -- retries (SUBPROCESS) ------------------------------------------------------------------------


def test_a_crashed_attempt_is_retried_with_the_same_id_and_resumes_from_its_last_checkpoint(
    manager_factory, tmp_path, s3_bucket, s3_env
):
    trainer = _manager(
        manager_factory, tmp_path, "SUBPROCESS", max_retries=2, checkpoint_dir=f"{s3_bucket}/ckpt"
    ).get_trainer("t")
    assert trainer.capabilities()["retries"]
    marker = str(tmp_path / "killed")
    future = trainer.train(Epochs, 5, kill_after=3, marker=marker, save_path=f"{s3_bucket}/m", save_with_id=True)
    model = future.result(timeout=WAIT)
    assert os.path.exists(marker)  # the first attempt was SIGKILLed after its third checkpoint
    assert (model.started_at, model.epoch) == (3, 5)
    info = future.get_info()
    assert info.status is trainerkit.TrainingStatus.COMPLETED and info.attempt == 2
    assert [c.name for c in future.checkpoints()] == [f"checkpoint-00000{n}" for n in range(1, 6)]
    log = "\n".join(future.logs())
    assert "attempt 2 of 3: attempt 1 failed" in log and "SIGKILL" in log
    # A new manager reads the attempt back from the record.
    again = _manager(manager_factory, tmp_path, "SUBPROCESS", max_retries=2).get_trainer("t")
    assert again.get_model_future(future.id).get_info().attempt == 2


def test_retries_stop_at_max_retries_and_an_exception_is_not_retried(manager_factory, tmp_path):
    from tests.subprocess_modules import Crasher
    from tests.training_modules import Failing

    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS", max_retries=1).get_trainer("t")
    crashing = trainer.train(Crasher, "exit3", save_path=str(tmp_path / "m"), save_with_id=True)
    assert crashing.wait(WAIT)
    info = crashing.get_info()
    assert info.status is trainerkit.TrainingStatus.ERRORED and info.attempt == 2
    assert info.errors[0].type.endswith("TrainingCrashedError")
    failing = trainer.train(Failing, save_path=str(tmp_path / "m"), save_with_id=True)
    assert failing.wait(WAIT)
    assert failing.get_info().status is trainerkit.TrainingStatus.ERRORED and failing.get_info().attempt == 1


def test_retry_on_error_retries_an_exception_too(manager_factory, tmp_path):
    from tests.training_modules import Failing

    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS", max_retries=1, retry_on_error=True).get_trainer("t")
    failing = trainer.train(Failing, save_path=str(tmp_path / "m"), save_with_id=True)
    assert failing.wait(WAIT)
    info = failing.get_info()
    assert info.status is trainerkit.TrainingStatus.ERRORED and info.attempt == 2
    assert "attempt 2 of 2" in "\n".join(failing.logs())


def test_memory_urls_are_refused_where_trainings_run_in_another_process(manager_factory, tmp_path):
    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS").get_trainer("t")
    with pytest.raises(ValueError, match="save_path memory://x/m is in fsspec's memory filesystem"):
        trainer.train(Adder, 1, save_path="memory://x/m")
    with_dir = _manager(manager_factory, tmp_path, "SUBPROCESS", checkpoint_dir="memory://x/c").get_trainer("t")
    with pytest.raises(ValueError, match="checkpoint_dir memory://x/c"):
        with_dir.train(Adder, 1, save_path=str(tmp_path / "m"))
    assert trainer.list_trainings() == []


def test_in_a_multi_process_training_only_rank_0_saves_checkpoints_and_every_rank_resumes(manager_factory, tmp_path):
    from tests.storage_modules import RankCheckpoints

    trainer = _manager(manager_factory, tmp_path, "SUBPROCESS").get_trainer("t")
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = trainer.train(RankCheckpoints, str(first_dir), 2, save_path=str(tmp_path / "m"), save_with_id=True,
                          resources={"procs_per_node": 2})
    assert first.result(timeout=WAIT).epoch == 2
    assert [info.name for info in first.checkpoints()] == ["epoch-1", "epoch-2"]
    assert (first_dir / "rank-0").read_text() == "0 epoch-1,epoch-2"
    assert (first_dir / "rank-1").read_text() == "0 epoch-1,epoch-2"  # returned, not saved
    second = trainer.train(RankCheckpoints, str(second_dir), 3, save_path=str(tmp_path / "m"), save_with_id=True,
                           resources={"procs_per_node": 2}, resume_from=first.id)
    second.result(timeout=WAIT)
    assert (second_dir / "rank-0").read_text() == "2 epoch-3" == (second_dir / "rank-1").read_text()
    assert [info.name for info in second.checkpoints()] == ["epoch-3"]
