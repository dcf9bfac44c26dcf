"""Models and checkpoints anywhere fsspec reaches: URLs, manifests, the load cache.

A ``save_path``, a ``checkpoint_dir`` or the argument of :func:`trainerkit.load`
may be a plain path or a URL of any fsspec filesystem (``s3://bucket/prefix``,
``gs://...``, ``memory://...``, ``file://...``). fsspec does the talking to each
store (and s3fs, gcsfs, adlfs are its optional backends, named in the error when
one is missing); what no library does, and this module does by hand, is the
publishing protocol on stores where rename does not exist:

* **Publish.** The model is saved into a local staging directory (by the
  module's own ``save``), its files are uploaded, and a manifest,
  ``.trainerkit-manifest.json`` (each file's path, size and SHA-256, the class
  that saved it, the training id, the time), is written *last*. A prefix without
  a complete manifest is never loaded: a crashed upload is never a model.
* **Replace (checkpoints).** A checkpoint saved under an existing name uploads
  its files under a fresh sub-prefix and then overwrites the manifest, which
  names that sub-prefix (its ``root``): one object write switches readers from
  the old files to the new ones; the old files are removed afterwards.
* **Cache.** Loading from a URL reads the manifest, and downloads the files
  into ``<cache dir>/<SHA-256 of the manifest>`` (into a temporary sibling,
  checked against the manifest, renamed into place), reused while the
  manifest stays the same. ``load(..., cache=False)`` bypasses it.

Plain local paths keep the atomic-rename save of :func:`trainerkit.module.save_model`;
a local directory that holds a manifest (a checkpoint under a local
``checkpoint_dir``) is read in place.

Filesystem options come from each filesystem's own environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, ``GOOGLE_APPLICATION_CREDENTIALS``,
fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>``...) and from ``storage_options``
(``{protocol: {option: value}}``), which win over them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import ModelLoadError, StorageError
from .info import utcnow

log = logging.getLogger("trainerkit")

MANIFEST_FILE = ".trainerkit-manifest.json"
MANIFEST_FORMAT = 1
#: The metadata file :func:`trainerkit.module.save_model` writes (repeated to avoid an import cycle).
_METADATA_FILE = ".trainerkit-model.json"

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

#: The trainerkit extra that installs the fsspec backend of each protocol.
_EXTRAS = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
    "abfs": ("azure", "adlfs"), "az": ("azure", "adlfs"), "adl": ("azure", "adlfs"), "abfss": ("azure", "adlfs"),
}

#: Environment variable of the load cache directory.
CACHE_DIR_ENV = "TRAINERKIT_CACHE_DIR"

_CHUNK = 1 << 20
#: Files uploaded, downloaded and hashed at once.
_TRANSFER_THREADS = 8

StorageOptions = Optional[Mapping[str, Mapping[str, Any]]]


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a plain path."""
    return isinstance(path, str) and bool(_URL.match(path))


def protocol_of(url: str) -> str:
    """The protocol (scheme) of ``url``, lowercase."""
    return url.split("://", 1)[0].lower()


def absolute_file_url(url: str) -> str:
    """``file://relative/path`` (or ``local://``) made absolute against the current
    directory (``~`` expanded), the way a plain path is: a record, a worker in
    another directory or a later ``load`` then names the same place. Other URLs
    are returned as they are."""
    protocol, _, rest = url.partition("://")
    if protocol.lower() not in ("file", "local") or rest.startswith("/"):
        return url
    return f"{protocol.lower()}://{os.path.abspath(os.path.expanduser(rest))}"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a URL or a plain path."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def check_storage_options(value: Any, what: str = "storage_options") -> dict[str, dict[str, Any]]:
    """Validate ``{protocol: {option: value}}``; return it as plain dicts.

    Raises:
        TypeError: naming what was given and the shape expected.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{what} must map protocols to options, such as {{'s3': {{'endpoint_url': "
            f"'http://minio:9000'}}}}, got {value!r}"
        )
    result: dict[str, dict[str, Any]] = {}
    for protocol, options in value.items():
        if not isinstance(protocol, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", protocol):
            raise TypeError(f"{what}: {protocol!r} is not a protocol name such as 's3' or 'gs'")
        if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
            raise TypeError(
                f"{what}.{protocol} must map option names to values, such as {{'endpoint_url': "
                f"'http://minio:9000'}}, got {options!r}"
            )
        result[protocol.lower()] = dict(options)
    return result


def _missing_extra(protocol: str, url: str, exc: BaseException) -> StorageError:
    extra, package = _EXTRAS.get(protocol, (None, None))
    if extra is not None:
        hint = f"pip install 'trainerkit[{extra}]' (it installs {package})"
    else:
        hint = "install the fsspec backend package of this protocol (see fsspec's list of known implementations)"
    return StorageError(f"cannot use {url}: the {protocol}:// filesystem is not installed ({exc}); {hint}")


def filesystem(url: str, storage_options: StorageOptions = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for ``url``.

    Raises:
        StorageError: fsspec is not installed, the protocol is unknown, its
            backend package (extra) is missing, or the options are refused;
            the message names the URL and what to do.
    """
    protocol = protocol_of(url)
    try:
        import fsspec
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise StorageError(f"cannot use {url}: fsspec is not installed ({exc}); pip install fsspec") from None
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        known = ", ".join(sorted(p for p in fsspec.available_protocols() if len(p) > 1)[:40])
        raise StorageError(
            f"cannot use {url}: {protocol!r} is not a protocol fsspec knows; use one of {known} "
            "(or a plain path)"
        ) from None
    except ImportError as exc:
        raise _missing_extra(protocol, url, exc) from None
    options = dict((storage_options or {}).get(protocol, {}))
    try:
        if protocol in ("file", "local"):  # not url_to_fs: a local path may hold '::' (its chaining)
            fs = fsspec.filesystem(protocol, **options)
            path = fs._strip_protocol(url)
        else:
            fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise _missing_extra(protocol, url, exc) from None
    except Exception as exc:
        raise StorageError(
            f"cannot use {url}: the {protocol}:// filesystem refused its options "
            f"{sorted(options)} ({type(exc).__name__}: {exc}); check storage_options.{protocol}"
        ) from None
    return fs, path.rstrip("/") or path


def _fail(url: str, doing: str, exc: BaseException) -> StorageError:
    """A StorageError naming ``url`` and what was being done, with a hint for credentials."""
    text = f"{type(exc).__name__}: {exc}"
    hint = ""
    lowered = text.lower()
    if any(word in lowered for word in ("credential", "accessdenied", "access denied", "forbidden", "403", "signature")):
        hint = (
            "; check the credentials this process has for it (the filesystem's own environment "
            "variables, such as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3://, or the trainer's "
            "storage_options)"
        )
    elif "nosuchbucket" in lowered or "bucket" in lowered and "not" in lowered:
        hint = "; create the bucket first, or fix its name"
    return StorageError(f"cannot {doing} {url}: {text}{hint}")


# -- checks at train() time ------------------------------------------------------------


def check_destination(url: str, storage_options: StorageOptions = None) -> None:
    """Refuse, before a training runs, a URL destination that is not empty or
    cannot be written with these options (protocol, extra, credentials, bucket).

    Writes and removes one small probe object beside the destination.

    Raises:
        FileExistsError: something is already at ``url``.
        StorageError: the URL cannot be used or written; the message says why.
    """
    fs, path = filesystem(url, storage_options)
    try:
        _refresh(fs, path)
        occupied = _occupied(fs, path)
    except StorageError:
        raise
    except Exception as exc:
        raise _fail(url, "check the save destination", exc) from None
    if occupied:
        raise FileExistsError(
            f"save path {url} is not empty; trainerkit never overwrites a saved model: choose "
            "another save_path, or pass save_with_id=True to save under the training id"
        )
    if _is_local(fs):
        from .module import check_writable

        check_writable(path)
        return
    parent = path.rsplit("/", 1)[0] if "/" in path else path
    probe = f"{parent}/.trainerkit-probe-{secrets.token_hex(6)}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:
        raise _fail(url, "write to", exc) from None


def check_readable(url: str, storage_options: StorageOptions = None) -> None:
    """Refuse, before a training runs, a URL this process cannot list.

    Raises:
        StorageError: the URL cannot be used or read; the message says why.
    """
    fs, path = filesystem(url, storage_options)
    try:
        _refresh(fs, path)
        fs.exists(path)
    except Exception as exc:
        raise _fail(url, "read", exc) from None


def _refresh(fs: Any, path: str) -> None:
    """Forget what ``fs`` cached about ``path`` (another process may have written)."""
    try:
        fs.invalidate_cache(path)
    except Exception:  # not every filesystem has a cache to invalidate
        pass


def _occupied(fs: Any, path: str) -> bool:
    if not fs.exists(path):
        return False
    if not fs.isdir(path):
        return True
    return bool(fs.ls(path, detail=False))


# -- the manifest ------------------------------------------------------------------------


def _hash_file(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def _local_files(directory: str) -> list[str]:
    """Every file under ``directory``, relative, with '/' separators, sorted."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            full = os.path.join(root, name)
            found.append(os.path.relpath(full, directory).replace(os.sep, "/"))
    return sorted(found)


def build_manifest(
    directory: str, *, root: str = "", each: Optional[Callable[[str, str], None]] = None
) -> dict[str, Any]:
    """The manifest of a model saved (with its metadata file) in ``directory``.

    ``each(relative path, full path)``, when given, runs for every file in a
    thread of its own beside the file's hashing (an upload overlaps the
    hashing of the other files: SHA-256 releases the GIL).
    """
    try:
        with open(os.path.join(directory, _METADATA_FILE), encoding="utf-8") as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot publish {directory}: its {_METADATA_FILE} is unreadable ({exc})") from None
    relatives = _local_files(directory)

    def one(relative: str) -> dict[str, Any]:
        full = os.path.join(directory, *relative.split("/"))
        if each is not None:
            each(relative, full)
        size, digest = _hash_file(full)
        return {"path": relative, "size": size, "sha256": digest}

    files = _in_threads(one, relatives)
    return {
        "format": MANIFEST_FORMAT,
        "module": metadata.get("module"),
        "training_id": metadata.get("training_id"),
        "saved_at": metadata.get("saved_at") or utcnow().isoformat(),
        "root": root,
        "files": files,
    }


def _in_threads(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[function(item) for item in items]``, run by a few threads (the first error is raised)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(_TRANSFER_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """Check a manifest's shape.

    Raises:
        ModelLoadError: naming ``where`` and what is wrong.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ModelLoadError(f"the manifest of {where} is not valid JSON ({exc}); the upload is damaged") from None
    files = data.get("files") if isinstance(data, dict) else None
    root = data.get("root", "") if isinstance(data, dict) else None
    if (
        not isinstance(files, list)
        or not isinstance(root, str)
        or not isinstance(data.get("module"), str)
        or data.get("format") != MANIFEST_FORMAT
        or not all(
            isinstance(item, dict) and isinstance(item.get("path"), str) and isinstance(item.get("size"), int)
            and isinstance(item.get("sha256"), str) and _safe_relative(item["path"])
            for item in files
        )
        or (root and not _safe_relative(root))
    ):
        raise ModelLoadError(
            f"the manifest of {where} is not one this trainerkit reads (format {MANIFEST_FORMAT}: "
            "module, root and files with path, size and sha256)"
        )
    return data


def _safe_relative(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(part not in ("", ".", "..") for part in parts) and "\\" not in path


def manifest_time(manifest: Mapping[str, Any]) -> datetime.datetime:
    """When the manifest's model was saved (timezone-aware; epoch if unreadable)."""
    try:
        time = datetime.datetime.fromisoformat(str(manifest.get("saved_at")))
    except ValueError:
        return datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    return time if time.tzinfo else time.replace(tzinfo=datetime.timezone.utc)


# -- publishing ----------------------------------------------------------------------------


def publish(
    directory: str,
    url: str,
    storage_options: StorageOptions = None,
    *,
    replace: bool = False,
    owner: Optional[str] = None,
) -> dict[str, Any]:
    """Upload the saved model in local ``directory`` to ``url``, manifest last.

    Without ``replace``, ``url`` must be empty and the files go right under it,
    trainerkit's metadata file first. ``owner`` (a training id) may find there
    what an earlier attempt of that same training left (a crash mid-upload, or
    after the upload): files whose metadata or manifest names ``owner``; they
    are removed and the upload goes ahead, so a retried training can save.
    With ``replace`` (checkpoints), they go under a fresh sub-prefix that the
    new manifest names, and the files of the version it replaced are removed
    once it is in place. On a failure the files uploaded so far are removed
    (a process that dies mid-upload leaves files but no manifest: never loadable).

    Returns the manifest written.

    Raises:
        FileExistsError: ``url`` is not empty (without ``replace``).
        StorageError: the upload failed; names the URL.
    """
    fs, path = filesystem(url, storage_options)
    root = f"v-{utcnow().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}" if replace else ""
    base = f"{path}/{root}" if root else path
    try:
        _refresh(fs, path)
        if not replace and _occupied(fs, path) and not _clear_own_leftovers(fs, path, owner, url):
            raise FileExistsError(
                f"cannot save the model to {url}: it is not empty; trainerkit never overwrites a "
                "saved model: choose another save_path, or use save_with_id=True"
            )
        old = _read_manifest(fs, path) if replace else None
    except FileExistsError:
        raise
    except ModelLoadError:
        old = None  # a damaged manifest is replaced
    except Exception as exc:
        raise _fail(url, "check", exc) from None
    remote = [f"{base}/{relative}" for relative in _local_files(directory)]
    manifest_path = f"{path}/{MANIFEST_FILE}"
    try:
        if _is_local(fs):
            manifest = build_manifest(directory, root=root)
            _place_locally(directory, base, manifest, manifest_path, fs)
        else:
            # The metadata file goes first (it names the training: a retry of it
            # recognises its own leftovers), then each file is uploaded while the
            # others are hashed; the manifest goes last.
            metadata = os.path.join(directory, _METADATA_FILE)
            if os.path.isfile(metadata):
                fs.put_file(metadata, f"{base}/{_METADATA_FILE}")

            def upload(relative: str, full: str) -> None:
                if relative != _METADATA_FILE:
                    fs.put_file(full, f"{base}/{relative}")

            manifest = build_manifest(directory, root=root, each=upload)
            fs.pipe_file(manifest_path, json.dumps(manifest, indent=1).encode("utf-8"))
    except BaseException as exc:
        _remove_quietly(fs, remote if not _is_local(fs) else [base])
        if isinstance(exc, Exception):
            raise _fail(url, "upload the model to", exc) from None
        raise
    if replace:
        _remove_other_versions(fs, path, keep=root, old=old)
    log.debug("published %d files to %s", len(remote), url)
    return manifest


def _clear_own_leftovers(fs: Any, path: str, owner: Optional[str], url: str) -> bool:
    """Remove what an earlier attempt of training ``owner`` left at ``path``
    (its metadata file or its manifest names ``owner``); True if it did."""
    if not owner:
        return False
    named = None
    for name in (MANIFEST_FILE, _METADATA_FILE):
        try:
            named = json.loads(fs.cat_file(f"{path}/{name}")).get("training_id")
        except (FileNotFoundError, ValueError, AttributeError):
            continue
        break
    if named != owner:
        return False
    log.warning("removing what an earlier attempt of training %s left at %s before saving again", owner, url)
    if fs.exists(f"{path}/{MANIFEST_FILE}"):
        fs.rm_file(f"{path}/{MANIFEST_FILE}")
    fs.rm(path, recursive=True)
    _refresh(fs, path)
    return True


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _place_locally(directory: str, base: str, manifest: Mapping[str, Any], manifest_path: str, fs: Any) -> None:
    """A local destination: move (or copy) the staged files, then write the
    manifest through a temporary file renamed into place."""
    os.makedirs(os.path.dirname(base), exist_ok=True)
    if os.path.lexists(base):
        if os.path.isdir(base) and not os.listdir(base):
            os.rmdir(base)
        else:
            raise FileExistsError(f"cannot save the model to {base}: it is not empty")
    try:
        os.rename(directory, base)
        os.makedirs(directory)  # the caller removes its staging directory
    except OSError:
        shutil.copytree(directory, base)
    tmp = f"{manifest_path}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, manifest_path)


def _remove_quietly(fs: Any, paths: Sequence[str]) -> None:
    for path in paths:
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception:
            log.debug("could not remove %s after a failed upload", path, exc_info=True)


def _remove_other_versions(fs: Any, path: str, *, keep: str, old: Optional[Mapping[str, Any]]) -> None:
    try:
        _refresh(fs, path)
        for entry in fs.ls(path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name in (keep, MANIFEST_FILE) or name.startswith(MANIFEST_FILE):
                continue
            fs.rm(entry, recursive=True)
    except Exception:
        log.warning("could not remove the replaced files under %s", path, exc_info=True)


# -- reading --------------------------------------------------------------------------------


def _read_manifest(fs: Any, path: str) -> Optional[dict[str, Any]]:
    try:
        raw = fs.cat_file(f"{path}/{MANIFEST_FILE}")
    except FileNotFoundError:
        return None
    return parse_manifest(raw, path)


def read_manifest(url: str, storage_options: StorageOptions = None) -> Optional[dict[str, Any]]:
    """The manifest at ``url`` (None when there is none).

    Raises:
        ModelLoadError: the manifest is damaged. StorageError: the URL cannot be read.
    """
    fs, path = filesystem(url, storage_options)
    try:
        return _read_manifest(fs, path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _fail(url, "read", exc) from None


def default_cache_dir() -> str:
    """``$TRAINERKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/trainerkit/models``, else
    ``~/.cache/trainerkit/models``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "trainerkit", "models")


def fetch(
    url: str,
    storage_options: StorageOptions = None,
    *,
    cache: bool = True,
    cache_dir: Optional[str] = None,
) -> tuple[str, dict[str, Any], Optional[str]]:
    """Bring the model at ``url`` to a local directory.

    Returns ``(directory, manifest, temporary)``: the directory to load from,
    and, when ``cache`` is False, the temporary directory to remove after loading.

    Raises:
        ModelLoadError: no complete model at ``url`` (no manifest: never
            uploaded, or the upload did not finish), or files that do not
            match the manifest. StorageError: the URL cannot be read.
    """
    fs, path = filesystem(url, storage_options)
    try:
        _refresh(fs, path)
        raw = fs.cat_file(f"{path}/{MANIFEST_FILE}")
    except FileNotFoundError:
        try:
            anything = fs.exists(path)
        except Exception:
            anything = False
        if anything:
            raise ModelLoadError(
                f"no complete model at {url}: it has no {MANIFEST_FILE}, so its upload never "
                "finished (a crash or a cancel mid-save) or it was not saved by trainerkit; save "
                "the model again"
            ) from None
        raise ModelLoadError(f"no model at {url}: nothing is there") from None
    except Exception as exc:
        raise _fail(url, "read", exc) from None
    manifest = parse_manifest(raw, url)
    key = hashlib.sha256(raw).hexdigest()[:40]
    root = manifest.get("root") or ""
    base = f"{path}/{root}" if root else path
    if _is_local(fs):  # read in place: nothing to download
        _check_local_files(base, manifest, url)
        return base, manifest, None
    if cache:
        if cache_dir is not None and is_url(cache_dir):
            raise ValueError(
                f"cache_dir {cache_dir!r} is not a directory of this machine: the load cache is local; "
                "give a path such as ~/.cache/trainerkit/models"
            )
        cache_root = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        target = os.path.join(cache_root, key)
        if os.path.isdir(target):
            log.debug("loading %s from the cache %s", url, target)
            return target, manifest, None
        try:
            os.makedirs(cache_root, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=cache_root)
        except OSError as exc:
            raise StorageError(
                f"cannot load {url}: the cache directory {cache_root} cannot be created or written "
                f"({exc.strerror or exc}); set cache_dir (or ${CACHE_DIR_ENV}) to a writable directory, "
                "or load with cache=False"
            ) from None
    else:
        staging = tempfile.mkdtemp(prefix="trainerkit-load-")
    try:
        _download(fs, base, manifest, staging, url)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not cache:
        return staging, manifest, staging
    try:
        os.rename(staging, target)
    except OSError:  # another process put the same files there first
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(target):
            raise StorageError(f"cannot load {url}: the cache entry {target} cannot be written") from None
    return target, manifest, None


def _download(fs: Any, base: str, manifest: Mapping[str, Any], staging: str, url: str) -> None:
    files = manifest["files"]
    remote = [f"{base}/{item['path']}" for item in files]
    local = [os.path.join(staging, *item["path"].split("/")) for item in files]
    for target in local:
        os.makedirs(os.path.dirname(target), exist_ok=True)

    def fetch_one(index: int) -> tuple[int, str]:
        """Download one file and hash it (the others download meanwhile)."""
        fs.get_file(remote[index], local[index])
        return _hash_file(local[index]) if os.path.isfile(local[index]) else (-1, "")

    try:
        found = _in_threads(fetch_one, range(len(files)))
    except FileNotFoundError:
        missing = [item["path"] for item, path in zip(files, remote) if not _exists_quietly(fs, path)]
        raise ModelLoadError(
            f"the model at {url} is incomplete: files its manifest lists are missing "
            f"({', '.join(missing) or 'one of them'}); they were removed after it was published"
        ) from None
    except Exception as exc:
        raise _fail(url, "download", exc) from None
    for item, (size, digest) in zip(files, found):
        if size != item["size"] or digest != item["sha256"]:
            raise ModelLoadError(
                f"the model at {url} does not match its manifest: {item['path']} has "
                f"{max(size, 0)} bytes (sha256 {digest[:12] or '-'}), the manifest says {item['size']} "
                f"(sha256 {item['sha256'][:12]}); it was changed after it was published"
            )


def _exists_quietly(fs: Any, path: str) -> bool:
    try:
        return bool(fs.exists(path))
    except Exception:
        return False


def _check_local_files(base: str, manifest: Mapping[str, Any], where: str) -> None:
    for item in manifest["files"]:
        full = os.path.join(base, *item["path"].split("/"))
        try:
            size = os.path.getsize(full)
        except OSError:
            size = -1
        if size != item["size"]:
            raise ModelLoadError(
                f"the model at {where} is incomplete: {item['path']} is "
                + ("missing" if size < 0 else f"{size} bytes, the manifest says {item['size']}")
            )


def remove(url: str, storage_options: StorageOptions = None) -> None:
    """Remove the model or directory at ``url``: the manifest first (so that a
    half-done removal is never loadable), then everything under it."""
    fs, path = filesystem(url, storage_options)
    try:
        _refresh(fs, path)
        if not fs.exists(path):
            return
        if fs.exists(f"{path}/{MANIFEST_FILE}"):
            fs.rm_file(f"{path}/{MANIFEST_FILE}")
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        return
    except Exception as exc:
        raise _fail(url, "remove", exc) from None


@dataclasses.dataclass(frozen=True)
class Listing:
    """An entry under a directory: its name and full URL or path."""

    name: str
    location: str


def list_dir(location: str, storage_options: StorageOptions = None) -> list[Listing]:
    """The entries right under ``location`` (a URL or a path); [] when it does not exist."""
    if not is_url(location):
        try:
            names = sorted(os.listdir(location))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {location}: {exc.strerror or exc}") from None
        return [Listing(name, os.path.join(location, name)) for name in names]
    fs, path = filesystem(location, storage_options)
    try:
        _refresh(fs, path)
        if not fs.exists(path):
            return []
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise _fail(location, "list", exc) from None
    names = sorted({entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries})
    return [Listing(name, join(location, name)) for name in names if name]
