"""Directories and files that only this user can touch.

trainerkit trusts what it finds in its state and log directories: it reads the
records, unpickles a training's arguments, signals the worker a run file names
and appends to log files. So those directories must be this user's alone, as
OpenSSH's ``StrictModes`` demands of ``~/.ssh``:

* a directory trainerkit keeps state in must be owned by the effective user
  and writable by nobody else (no group or other write bit); it is created
  ``0700`` when missing, and an unsafe one is refused with the ``chmod`` or
  ``chown`` that fixes it (:func:`make_private_dir`);
* the files it creates there are ``0600`` and are opened without following a
  symbolic link (``O_NOFOLLOW``), so a link planted in place of a log or run
  file is never written through (:func:`open_private`).

Written by hand: it is a handful of ``os.stat``/``os.open`` calls with
trainerkit's own error messages; no library does just this.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional

from .errors import StoreError

#: Mode of the directories trainerkit creates for its state, logs and runs.
PRIVATE_DIR_MODE = 0o700
#: Mode of the files trainerkit creates there.
PRIVATE_FILE_MODE = 0o600


def unsafe_directory(path: str) -> Optional[str]:
    """Why the existing directory ``path`` must not hold trainerkit's state, or None."""
    info = os.stat(path)
    euid = os.geteuid()
    if info.st_uid != euid:
        return (
            f"{path} belongs to another user (uid {info.st_uid}; this process runs as uid "
            f"{euid}), who could plant or change the files trainerkit trusts there; use a "
            f"directory of your own, or take it over with: chown {euid} {path}"
        )
    writable_by = [who for who, bit in (("its group", stat.S_IWGRP), ("every user", stat.S_IWOTH)) if info.st_mode & bit]
    if writable_by:
        return (
            f"{path} is writable by {' and '.join(writable_by)} (mode {stat.S_IMODE(info.st_mode):04o}), "
            "who could plant or replace the files trainerkit trusts there; make it yours "
            f"alone with: chmod go-w {path} (or chmod 700 {path})"
        )
    return None


def make_private_dir(path: str, *, what: str, setting: str) -> None:
    """Create ``path`` (mode 0700) if it is missing; refuse it if it is unsafe.

    Args:
        what: what the directory is, for messages ("the state directory").
        setting: the config key or variable that chose it, for messages.

    Raises:
        StoreError: it cannot be created, or another user could write in it.
    """
    try:
        os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(
            f"cannot use {what} {path}: it, or one of its parents, is a file, not a directory; "
            f"set {setting} to a directory path"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(
                f"cannot create {what} {path}: the disk is full; free space there or set "
                f"{setting} to a directory on another file system"
            ) from exc
        raise StoreError(
            f"cannot create {what} {path}: {exc.strerror or exc}; create it with write access "
            f"for this user, or set {setting} to a writable directory"
        ) from exc
    problem = unsafe_directory(path)
    if problem is not None:
        raise StoreError(f"refusing to use {what}: {problem}; or set {setting} to another directory")


def open_private(path: str, flags: int, *, exclusive: bool = False) -> int:
    """``os.open`` a file trainerkit keeps: created 0600, never through a symbolic link.

    Args:
        flags: ``os.O_*`` flags; ``O_NOFOLLOW`` and ``O_CLOEXEC`` are added.
        exclusive: the file must not exist yet (``O_CREAT | O_EXCL``).

    Raises:
        OSError: as ``os.open`` does; a symbolic link at ``path`` gives one
            whose message says so.
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if exclusive:
        flags |= os.O_CREAT | os.O_EXCL
    try:
        return os.open(path, flags, PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EEXIST and os.path.islink(path)):
            raise OSError(
                exc.errno,
                f"{path} is a symbolic link, and trainerkit never writes through one in its "
                "state or log directory (someone may have planted it); remove it, and check who "
                "can write to that directory",
            ) from None
        raise
