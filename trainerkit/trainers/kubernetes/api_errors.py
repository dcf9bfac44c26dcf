"""The answers of the API server that callers act upon, as exceptions.

They live apart from :mod:`.api` so that code which catches them (the watch,
the trainer) does not import the ``kubernetes`` client when it is imported.
Each is a :class:`~trainerkit.errors.ClusterError` with a clear message, so
one that is not caught still reads well.
"""

from __future__ import annotations

from ...errors import ClusterError


class NotFoundError(ClusterError):
    """The object does not exist (404)."""

    #: True when the request had been sent before (its answer lost): that attempt may have deleted it.
    after_resend: bool = False


class AlreadyExistsError(ClusterError):
    """An object with that name already exists (409 AlreadyExists)."""

    #: True when the request had been sent before (its answer lost): that attempt may have made it.
    after_resend: bool = False


class ConflictError(ClusterError):
    """The object changed since it was read (409 Conflict, a failed precondition)."""


class ExpiredError(ClusterError):
    """A watch's resourceVersion is too old (410 Gone): list again."""
