"""Trainable modules: their shape, their arguments, atomic saves and loading.

A trainable module is any class with a ``train(cls, ...)`` classmethod that
returns an instance, ``save(self, path)`` and a ``load(cls, path)`` classmethod.
caikit modules have this shape already; :class:`ModuleBase` is a ready-made one.

Every model trainerkit saves gets a small metadata file,
``.trainerkit-model.json``, that records the class that saved it, so
:func:`load` needs nothing but the path.
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
import io
import json
import logging
import math
import os
import pickle
import secrets
import shutil
import tempfile
import weakref
from typing import Any, Mapping, Optional, Sequence, TypeVar

from .errors import ModelLoadError
from .info import utcnow

log = logging.getLogger("trainerkit")

METADATA_FILE = ".trainerkit-model.json"
_TMP_MARKER = ".trainerkit-tmp-"

M = TypeVar("M", bound="ModuleBase")


class ModuleBase:
    """A ready-made trainable module.

    Subclasses implement :meth:`train`. :meth:`save` and :meth:`load` default to
    pickling the instance into ``model.pkl`` inside the model directory;
    override both to write your own format (the Iris example writes JSON).
    """

    #: The file that the default :meth:`save` writes inside the model directory.
    PICKLE_FILE = "model.pkl"

    @classmethod
    def train(cls: type[M], *args: Any, **kwargs: Any) -> M:
        """Train and return an instance. Subclasses must implement it."""
        raise NotImplementedError(
            f"{cls.__qualname__} must implement the classmethod train(cls, ...) that returns "
            "a trained instance"
        )

    def save(self, path: str) -> None:
        """Write the model into directory ``path`` (it exists and is empty)."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, self.PICKLE_FILE), "wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls: type[M], path: str) -> M:
        """Read a model written by :meth:`save`.

        Under :func:`trainerkit.load` with ``allowed_modules`` (or a trainer's
        ``load_allowed_modules``), the pickle may name only classes and
        functions of those modules and a few plain standard-library types.
        """
        with open(os.path.join(path, cls.PICKLE_FILE), "rb") as handle:
            model = unpickle(handle)
        if not isinstance(model, cls):
            raise ModelLoadError(
                f"{path} holds a {type(model).__qualname__}, not a {cls.__qualname__}"
            )
        return model


# -- what loading may import ---------------------------------------------------

#: The allow-list of the :func:`load` in progress in this context (None: any).
_allowed_modules: "contextvars.ContextVar[Optional[tuple[str, ...]]]" = contextvars.ContextVar(
    "trainerkit_allowed_modules", default=None
)

#: Standard-library names a restricted pickle may use whatever the allow-list:
#: plain data types and the reconstructor pickle itself uses for classes; none
#: of them runs code chosen by the file.
_PLAIN_GLOBALS = frozenset(
    [("builtins", name) for name in (
        "object", "set", "frozenset", "list", "dict", "tuple", "bytearray", "bytes", "str",
        "int", "float", "complex", "bool", "slice", "range",
    )]
    + [("copyreg", "_reconstructor"), ("_codecs", "encode")]
    + [("collections", name) for name in ("OrderedDict", "defaultdict", "deque", "Counter")]
    + [("datetime", name) for name in ("datetime", "date", "time", "timedelta", "timezone")]
    + [("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID")]
)


def check_allowed_modules(allowed: Any, what: str = "allowed_modules") -> Optional[tuple[str, ...]]:
    """Validate an allow-list of module names (``["mypkg", "sklearn"]``); None means any."""
    if allowed is None:
        return None
    if isinstance(allowed, str) or not isinstance(allowed, (list, tuple, set, frozenset)):
        raise TypeError(
            f"{what} must be a list of module names such as ['mypkg', 'sklearn'], got {allowed!r}"
        )
    names = []
    for name in allowed:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(
                f"{what}: {name!r} is not a module name; write dotted names such as 'mypkg' or "
                "'mypkg.models' (a name allows that module and every module under it)"
            )
        names.append(name)
    return tuple(names)


def module_allowed(module_name: str, allowed: Optional[Sequence[str]]) -> bool:
    """Whether ``module_name`` is one of ``allowed`` or inside one of them."""
    if allowed is None:
        return True
    return any(module_name == name or module_name.startswith(name + ".") for name in allowed)


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only globals of allowed modules (and plain data)."""

    def __init__(self, file: Any, allowed: Sequence[str]) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS or module_allowed(module, self._allowed):
            return super().find_class(module, name)
        raise ModelLoadError(
            f"the pickle names {module}.{name}, and module {module!r} is not in the allowed "
            f"modules {list(self._allowed)}; add it (allowed_modules= or the trainer's "
            "load_allowed_modules) if you trust it"
        )


def unpickle(handle: "io.BufferedIOBase | Any") -> Any:
    """``pickle.load(handle)``, restricted to the allow-list of the load in progress."""
    allowed = _allowed_modules.get()
    if allowed is None:
        return pickle.load(handle)
    return _RestrictedUnpickler(handle, allowed).load()


def class_path(cls: type) -> str:
    """``package.module:QualName`` of ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_object(path: str) -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``).

    Raises:
        ImportError: with a message that names ``path`` and what was missing.
    """
    if not isinstance(path, str) or not path.strip():
        raise ImportError(f"{path!r} is not an import path like 'package.module:Class'")
    path = path.strip()
    if ":" in path:
        module_name, _, attribute = path.partition(":")
        candidates = [(module_name, attribute)]
    else:
        parts = path.split(".")
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
        if not candidates:
            raise ImportError(
                f"{path!r} is not an import path: write 'package.module:Class' or "
                "'package.module.Class'"
            )
    last_error: Optional[BaseException] = None
    for module_name, attribute in candidates:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (
                module_name == exc.name or module_name.startswith(exc.name + ".")
            ):
                last_error = exc
                continue
            raise
        obj: Any = module
        try:
            for part in attribute.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(
                f"cannot import {path!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
        return obj
    raise ImportError(
        f"cannot import {path!r}: no module found ({last_error}); is the package installed "
        "in this Python environment, and is the path spelled right?"
    )


def check_module_class(module_class: Any) -> None:
    """Raise TypeError unless ``module_class`` has the trainable module shape."""
    if not inspect.isclass(module_class):
        raise TypeError(
            f"train() needs a module class, got {type(module_class).__name__} {module_class!r}"
        )
    missing = [
        name for name in ("train", "save", "load") if not callable(getattr(module_class, name, None))
    ]
    if missing:
        raise TypeError(
            f"{module_class.__qualname__} is not a trainable module: it lacks "
            + ", ".join(missing)
            + " (a module needs classmethods train(cls, ...) and load(cls, path) and a method "
            "save(self, path); subclass trainerkit.ModuleBase to get save/load)"
        )


_signatures: "weakref.WeakKeyDictionary[type, tuple[Any, inspect.Signature, _Shape]]" = weakref.WeakKeyDictionary()


def train_signature(module_class: type) -> inspect.Signature:
    """The signature of ``module_class.train`` as callers see it (without cls)."""
    train = module_class.__dict__.get("train", None) or module_class.train
    cached = _signatures.get(module_class)
    if cached is not None and cached[0] is train:
        return cached[1]
    try:  # show real annotations, not strings, for modules using postponed annotations
        signature = inspect.signature(module_class.train, eval_str=True)
    except Exception:
        signature = inspect.signature(module_class.train)
    try:
        _signatures[module_class] = (train, signature, _Shape(signature))
    except TypeError:  # not weak-referenceable: do not cache
        pass
    return signature


class _Shape:
    """A signature's parameters, for checking arguments quickly."""

    def __init__(self, signature: inspect.Signature) -> None:
        kinds = inspect.Parameter
        params = list(signature.parameters.values())
        self.simple = not any(p.kind is kinds.POSITIONAL_ONLY for p in params)
        self.positional = tuple(p.name for p in params if p.kind is kinds.POSITIONAL_OR_KEYWORD)
        self.names = frozenset(p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY))
        self.required_positional = tuple(
            (index, p.name) for index, p in enumerate(params)
            if p.kind is kinds.POSITIONAL_OR_KEYWORD and p.default is kinds.empty
        )
        self.required_keyword = tuple(p.name for p in params if p.kind is kinds.KEYWORD_ONLY and p.default is kinds.empty)
        self.var_positional = any(p.kind is kinds.VAR_POSITIONAL for p in params)
        self.var_keyword = any(p.kind is kinds.VAR_KEYWORD for p in params)
        self.params = params

    def accepts(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        """True when these arguments certainly bind; False: ask ``Signature.bind``."""
        if not self.simple or (len(args) > len(self.positional) and not self.var_positional):
            return False
        given = len(args)
        for name in kwargs:
            if name in self.positional[:given] or (name not in self.names and not self.var_keyword):
                return False
        for index, name in self.required_positional:
            if index >= given and name not in kwargs:
                return False
        return all(name in kwargs for name in self.required_keyword)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``Signature.bind(...).arguments`` with defaults applied, for
        arguments :meth:`accepts`: by parameter name, in signature order."""
        kinds = inspect.Parameter
        bound: dict[str, Any] = {}
        used = 0
        for param in self.params:
            if param.kind is kinds.POSITIONAL_OR_KEYWORD:
                if used < len(args):
                    bound[param.name] = args[used]
                    used += 1
                elif param.name in kwargs:
                    bound[param.name] = kwargs[param.name]
                else:
                    bound[param.name] = param.default
            elif param.kind is kinds.VAR_POSITIONAL:
                bound[param.name] = tuple(args[used:])
            elif param.kind is kinds.KEYWORD_ONLY:
                bound[param.name] = kwargs[param.name] if param.name in kwargs else param.default
            elif param.kind is kinds.VAR_KEYWORD:
                bound[param.name] = {key: value for key, value in kwargs.items() if key not in self.names}
        return bound


#: The classmethod a module may define to fill in or adjust its training parameters.
PARAMETERS_HOOK = "training_parameters"


def training_parameters(module_class: type, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments ``module_class.train`` will receive, by parameter name.

    Bound to its signature with defaults filled in, then passed through the
    module's optional classmethod ``training_parameters(cls, **params) ->
    Mapping``, which may fill in or adjust values.

    Raises:
        TypeError: the arguments do not fit ``train`` (naming what is wrong), or
            the hook returned something ``train`` does not accept (naming the hook).
    """
    train_signature(module_class)
    cached = _signatures.get(module_class)
    if cached is not None and cached[2].accepts(args, kwargs):
        params = cached[2].bind(args, kwargs)
    else:
        bound = bind_train_arguments(module_class, args, kwargs)
        bound.apply_defaults()
        params = dict(bound.arguments)
    hook = getattr(module_class, PARAMETERS_HOOK, None)
    if hook is None:
        return params
    where = f"{module_class.__qualname__}.{PARAMETERS_HOOK}"
    adjusted = hook(**params)
    if not isinstance(adjusted, Mapping):
        raise TypeError(f"{where} must return a mapping of parameter names to values, got {adjusted!r}")
    adjusted = dict(adjusted)
    try:
        call_arguments(module_class, adjusted)
    except TypeError as exc:
        raise TypeError(f"{where} returned parameters that train does not accept: {exc}") from None
    return adjusted


def call_arguments(module_class: type, params: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` that call ``train`` with exactly ``params`` (by name).

    Raises:
        TypeError: a name ``train`` does not have (and no ``**kwargs`` takes it),
            or values that do not bind.
    """
    signature = train_signature(module_class)
    kinds = inspect.Parameter
    names = signature.parameters
    takes_rest = any(p.kind is kinds.VAR_POSITIONAL for p in names.values())
    unknown = [name for name in params if name not in names]
    var_keyword = next((p.name for p in names.values() if p.kind is kinds.VAR_KEYWORD), None)
    if unknown and var_keyword is None:
        raise TypeError(f"{module_class.__qualname__}.train{signature} has no parameter " + ", ".join(map(repr, unknown)))
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in names.values():
        if param.name not in params:
            continue
        value = params[param.name]
        if param.kind is kinds.POSITIONAL_ONLY or (param.kind is kinds.POSITIONAL_OR_KEYWORD and takes_rest):
            args.append(value)
        elif param.kind is kinds.VAR_POSITIONAL:
            args.extend(value)
        elif param.kind is kinds.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[param.name] = value
    for name in unknown:
        kwargs[name] = params[name]
    bind_train_arguments(module_class, args, kwargs)
    return tuple(args), kwargs


def recordable_parameters(params: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``(JSON-ready parameters, names recorded by repr)`` for a training's record."""
    recorded: dict[str, Any] = {}
    by_repr: list[str] = []
    for name, value in params.items():
        if value is None or type(value) in (str, int, bool) or (type(value) is float and math.isfinite(value)):
            recorded[name] = value
            continue
        try:
            recorded[name] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError, RecursionError):
            recorded[name] = repr(value)
            by_repr.append(name)
    return recorded, tuple(by_repr)



def bind_train_arguments(
    module_class: type, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> inspect.BoundArguments:
    """Check ``args``/``kwargs`` against ``train``'s signature.

    Raises:
        TypeError: naming the missing or unexpected argument and showing the signature.
    """
    signature = train_signature(module_class)
    try:
        return signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"{module_class.__qualname__}.train{signature}: {exc}"
        ) from None


# -- saving -----------------------------------------------------------------


def read_metadata(path: str) -> Optional[dict[str, Any]]:
    """The metadata trainerkit wrote beside a saved model, or None."""
    try:
        with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {os.path.join(path, METADATA_FILE)}: {exc}") from exc
    return data if isinstance(data, dict) else None


def save_model(model: Any, path: str, *, training_id: Optional[str] = None) -> None:
    """Save ``model`` to directory ``path`` atomically.

    The model is written into a hidden sibling directory, its metadata file
    added, and the directory renamed onto ``path`` in one step: a crash leaves
    either no model or a whole one, never half of one. ``path`` must not exist
    or be an empty directory, or hold the model an earlier attempt of this
    same ``training_id`` saved (a retry whose earlier attempt died after its
    save): that one is replaced by the new one.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    earlier = training_id is not None and _holds_model_of(path, training_id)
    trash: Optional[str] = None
    if os.path.lexists(path) and not _is_empty_dir(path) and not earlier:
        raise FileExistsError(
            f"cannot save the model to {path}: it already exists and is not an empty "
            "directory; choose another save_path or use save_with_id=True"
        )
    tmp = os.path.join(parent, f".{os.path.basename(path)}{_TMP_MARKER}{secrets.token_hex(4)}")
    os.makedirs(tmp)
    try:
        try:
            model.save(tmp)
        except FileExistsError:
            # Some modules (several caikit-nlp ones) create their directory with
            # exist_ok=False: give them a path that does not exist yet.
            if not _is_empty_dir(tmp):
                raise
            os.rmdir(tmp)
            model.save(tmp)
            os.makedirs(tmp, exist_ok=True)
        metadata = {
            "module": class_path(type(model)),
            "training_id": training_id,
            "saved_at": utcnow().isoformat(),
            "format": 1,
        }
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if earlier:  # the earlier attempt's model steps aside, then goes
            trash = os.path.join(parent, f".{os.path.basename(path)}{_TMP_MARKER}{secrets.token_hex(4)}")
            os.rename(path, trash)
            log.warning("training %s replaces the model an earlier attempt saved to %s", training_id, path)
        elif os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)  # empty (checked above); rename cannot replace a directory otherwise
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None and os.path.isdir(trash) and not os.path.lexists(path):
            os.rename(trash, path)  # the earlier model back in place
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    _fsync_dir(parent)


def _holds_model_of(path: str, training_id: str) -> bool:
    """Whether directory ``path`` holds the model saved for ``training_id``."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    try:
        metadata = read_metadata(path)
    except ModelLoadError:
        return False
    return bool(metadata) and metadata.get("training_id") == training_id


def _is_empty_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_model_to(
    model: Any, path: str, *, training_id: Optional[str] = None, storage_options: Any = None
) -> None:
    """Save ``model`` to ``path``: a plain path (atomic rename, :func:`save_model`)
    or an fsspec URL (saved to a local staging directory, uploaded, manifest
    last: see :mod:`trainerkit.storage`)."""
    from . import storage

    if not storage.is_url(path):
        save_model(model, path, training_id=training_id)
        return
    staging = tempfile.mkdtemp(prefix="trainerkit-save-")
    try:
        inner = os.path.join(staging, "model")
        save_model(model, inner, training_id=training_id)
        storage.publish(inner, path, storage_options, owner=training_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_saved_metadata(path: str, storage_options: Any = None) -> Optional[dict[str, Any]]:
    """What trainerkit recorded about the model at ``path`` (a path or URL):
    the metadata (or the manifest) with ``module`` and ``training_id``, or None."""
    from . import storage

    if storage.is_url(path):
        return storage.read_manifest(path, storage_options)
    if not os.path.isdir(path):
        return None
    manifest = os.path.join(path, storage.MANIFEST_FILE)
    if os.path.isfile(manifest):
        with open(manifest, "rb") as handle:
            return storage.parse_manifest(handle.read(), path)
    return read_metadata(path)


def check_load_path(path: Any) -> str:
    """What :func:`load` takes: a non-empty path, or a URL that names something.

    Raises:
        TypeError: not a path. ValueError: empty, or a URL with nothing after the protocol.
    """
    from . import storage

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load() takes a model directory or URL, got {type(path).__name__}")
    raw = os.fspath(path)
    if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
        raise ValueError(
            f"load() takes a model directory or URL such as s3://bucket/models/run, got {raw!r}"
        )
    if storage.is_url(raw) and not raw.partition("://")[2].strip("/"):
        raise ValueError(
            f"load() got {raw!r}, which names no model: write protocol://bucket/prefix, such as "
            "s3://models/run"
        )
    return raw


def load(
    path: "str | os.PathLike[str]",
    *,
    allowed_modules: Optional[Sequence[str]] = None,
    storage_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    cache: bool = True,
    cache_dir: "str | os.PathLike[str] | None" = None,
) -> Any:
    """Load any model that trainerkit saved, without naming its class.

    Args:
        path: the model directory, or the URL of a model saved to any fsspec
            filesystem (``s3://bucket/models/run``, ``memory://...``). A URL is
            loaded only when its manifest is complete (see docs/storage.md).
        allowed_modules: module names (``["mypkg", "sklearn"]``; each allows
            itself and every module under it). When given, the class the
            metadata names must be in one of them, checked before anything is
            imported, and the default pickle format (:class:`ModuleBase`) may
            resolve only globals of those modules and plain data types. None
            (the default) trusts the directory: see docs/modules.md.
        storage_options: ``{protocol: {option: value}}`` for the URL's
            filesystem (endpoint, credentials), over its environment variables.
        cache: a URL's files are downloaded into the local cache
            (``<cache_dir>/<manifest hash>``) and reused while its manifest is
            unchanged; False downloads into a temporary directory removed
            after loading.
        cache_dir: the cache directory (default ``$TRAINERKIT_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/trainerkit/models``, else ``~/.cache/trainerkit/models``).

    Raises:
        ModelLoadError: nothing (or no complete model) is there, its class is
            not allowed, or it cannot be imported or fails to load it.
        StorageError: the URL cannot be read (protocol, package, credentials).
        TypeError, ValueError: ``path`` is empty or not a path, or ``allowed_modules``
            or ``storage_options`` are malformed.
    """
    from . import storage

    allowed = check_allowed_modules(allowed_modules)
    options = storage.check_storage_options(storage_options)
    raw = check_load_path(path)
    if storage.is_url(raw):
        directory, manifest, temporary = storage.fetch(
            raw, options, cache=cache, cache_dir=os.fspath(cache_dir) if cache_dir is not None else None
        )
        try:
            return _load_directory(directory, allowed, where=raw)
        finally:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
    local = os.path.abspath(os.path.expanduser(raw))  # '~/models/run', as save_path takes it
    manifest_path = os.path.join(local, storage.MANIFEST_FILE)
    if os.path.isfile(manifest_path):  # a checkpoint under a local checkpoint_dir
        directory, _, _ = storage.fetch(f"file://{local}", options)
        return _load_directory(directory, allowed, where=local)
    return _load_directory(local, allowed, where=local)


def _load_directory(path: str, allowed: Optional[Sequence[str]], *, where: str) -> Any:
    """Load the model saved in local directory ``path`` (``where``: what the caller named)."""
    if not os.path.isdir(path):
        raise ModelLoadError(
            f"no model at {where}: the directory does not exist"
            if not os.path.exists(path)
            else f"no model at {where}: it is a file, a saved model is a directory"
        )
    metadata = read_metadata(path)
    if metadata is None or not isinstance(metadata.get("module"), str):
        raise ModelLoadError(
            f"{where} was not saved by trainerkit (no {METADATA_FILE}); load it with the "
            "module class that saved it: MyModule.load(path)"
        )
    if not module_allowed(metadata["module"].partition(":")[0], allowed):
        raise ModelLoadError(
            f"refusing to load the model at {where}: its class {metadata['module']} is not in the "
            f"allowed modules {list(allowed or ())}; add its module to allowed_modules (or the "
            "trainer's load_allowed_modules) if you trust it"
        )
    try:
        module_class = import_object(metadata["module"])
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot load the model at {where}: its class {metadata['module']} cannot be imported "
            f"({exc})"
        ) from exc
    if allowed is not None and not module_allowed(getattr(module_class, "__module__", ""), allowed):
        # 'pkg.mod.Name' without a colon names a module prefix; the class must live there too.
        raise ModelLoadError(
            f"refusing to load the model at {where}: {metadata['module']} resolves to a class of "
            f"module {module_class.__module__!r}, which is not in the allowed modules {list(allowed)}"
        )
    token = _allowed_modules.set(allowed)
    try:
        return module_class.load(path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{metadata['module']}.load({where!r}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        _allowed_modules.reset(token)


# -- save paths ---------------------------------------------------------------


#: The longest file name (in bytes) that common filesystems accept (NAME_MAX).
_NAME_MAX = 255


def check_model_name(model_name: Any) -> Optional[str]:
    """Validate ``model_name`` as one safe path segment; return it."""
    if model_name is None:
        return None
    if not isinstance(model_name, str):
        raise TypeError(f"model_name must be a string, got {type(model_name).__name__}")
    bad = (
        not model_name
        or model_name in (".", "..")
        or any(sep in model_name for sep in ("/", "\\", "\0"))
        or model_name != model_name.strip()
    )
    if bad or any(ord(char) < 32 or ord(char) == 127 for char in model_name):
        raise ValueError(
            f"model_name {model_name!r} is not a safe directory name: it must be one path "
            "segment, without '/', '\\', control characters (a newline, a tab, NUL) or "
            "surrounding spaces, and not '.' or '..'"
        )
    size = len(model_name.encode("utf-8", "surrogatepass"))
    if size > _NAME_MAX:
        raise ValueError(
            f"model_name is {size} bytes long (UTF-8), more than the {_NAME_MAX} bytes a file "
            f"name may have; shorten it: {model_name[:40]!r}..."
        )
    return model_name


def check_writable(path: str) -> None:
    """Refuse, before a training runs, a save path this process could not create:
    the nearest existing directory above it must take a new directory.

    Raises:
        PermissionError: naming the path, the directory and why.
    """
    parent = os.path.dirname(path)
    while not os.path.isdir(parent):
        if os.path.lexists(parent) or os.path.dirname(parent) == parent:
            raise NotADirectoryError(
                f"cannot save to {path}: {parent} is not a directory; choose another save_path"
            )
        parent = os.path.dirname(parent)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".trainerkit-probe-", dir=parent))
    except OSError as exc:
        raise PermissionError(
            f"cannot save to {path}: no directory can be created in {parent} "
            f"({exc.strerror or exc}); choose a save_path this process can write"
        ) from None


def resolve_save_path(
    save_path: Any, *, save_with_id: bool, model_name: Optional[str], training_id: str
) -> Optional[str]:
    """The directory a training's model goes to: ``save_path[/id][/model_name]``.

    ``save_path`` is made absolute (``~`` expanded). ``model_name`` is checked to
    be a single path segment, so nothing escapes ``save_path``.
    """
    model_name = check_model_name(model_name)
    if save_path is None:
        if save_with_id or model_name:
            raise ValueError(
                "save_with_id and model_name shape the save path, so they need save_path too"
            )
        return None
    if not isinstance(save_path, (str, os.PathLike)):
        raise TypeError(f"save_path must be a path string, got {type(save_path).__name__}")
    raw = os.fspath(save_path)
    if not raw or "\0" in raw:
        raise ValueError(f"save_path {raw!r} is not a usable path")
    from . import storage

    if storage.is_url(raw):
        return _resolve_url(raw, save_with_id=save_with_id, model_name=model_name, training_id=training_id)
    path = os.path.abspath(os.path.expanduser(raw))
    if save_with_id:
        path = os.path.join(path, training_id)
    if model_name:
        path = os.path.join(path, model_name)
    if os.path.lexists(path) and not _is_empty_dir(path):
        what = "a file" if not os.path.isdir(path) else "a directory that is not empty"
        hint = (
            "choose another save_path or model_name"
            if save_with_id
            else "choose another save_path, or pass save_with_id=True to save under the training id"
        )
        raise FileExistsError(
            f"save path {path} is {what}; trainerkit never overwrites a saved model: {hint}"
        )
    return path


def _resolve_url(url: str, *, save_with_id: bool, model_name: Optional[str], training_id: str) -> str:
    """``url[/id][/model_name]`` for a URL save_path (checked by the storage layer later);
    a relative ``file://`` URL is made absolute, as a plain path is."""
    from . import storage

    protocol, _, rest = url.partition("://")
    rest = rest.rstrip("/")
    if not rest or any(part in (".", "..") for part in rest.split("/")[1:]) or any(
        ord(char) < 32 for char in rest
    ):
        raise ValueError(
            f"save_path {url!r} is not a usable URL: write protocol://bucket/prefix, such as "
            "s3://models/run (no '.' or '..' segments, no control characters)"
        )
    path = storage.absolute_file_url(f"{protocol.lower()}://{rest}")
    if save_with_id:
        path = f"{path}/{training_id}"
    if model_name:
        path = f"{path}/{model_name}"
    return path
