"""Capabilities: what a trainer can do, what a training asks of it, and what it got.

A service that lets operators choose the trainer type in YAML states, per
training, which features its code relies on and how much
(``train(..., capabilities={"cancel": "native"})``); the trainer serves them
or refuses the training before anything is recorded or started, listing
every unmet request (the seed: Steamship's plugin capabilities, "so that
users are not billed for usage they can't incorporate").

* :class:`SupportLevel` (a flag) is what a trainer declares per capability:
  ``NATIVE`` (fully), ``BEST_EFFORT`` (partly; each name says how), and
  ``CAN_DISABLE`` (a training may turn it off); ``SupportLevel(0)`` means
  unsupported.
* :class:`RequestLevel` is what a training asks: ``NATIVE`` and
  ``BEST_EFFORT`` must be met (a BEST_EFFORT request is met by NATIVE
  support), ``OPTIONAL`` is served if available, ``DISABLE`` turns the
  feature off (met trivially where the trainer lacks it).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Optional

from .errors import TrainerkitError

#: Every capability name, in the order listings show them.
CAPABILITY_NAMES: tuple[str, ...] = (
    "cancel",
    "progress",
    "logs",
    "detach",
    "gpus",
    "multi_process",
    "multi_node",
    "remote_storage",
    "checkpoints",
    "retries",
)

#: What each name means, for listings and docs.
CAPABILITY_MEANINGS: Mapping[str, str] = {
    "cancel": "stop a running training (NATIVE: even inside C code; BEST_EFFORT: at its next Python-level check)",
    "progress": "report_progress reaches get_info()",
    "logs": "what the training prints is kept per training (future.logs())",
    "detach": "the training outlives the process that submitted it",
    "gpus": "the training gets GPUs of its own",
    "multi_process": "several processes per training on one machine",
    "multi_node": "processes on several machines per training",
    "remote_storage": "save_path may be a URL (s3://, gs://...)",
    "checkpoints": "save_checkpoint/latest_checkpoint inside train",
    "retries": "a crashed attempt is retried",
}


class SupportLevel(enum.Flag):
    """How a trainer supports a capability; ``SupportLevel(0)``: not at all."""

    NATIVE = enum.auto()
    BEST_EFFORT = enum.auto()
    CAN_DISABLE = enum.auto()

    def describe(self) -> str:
        """``native``, ``best-effort``, ``native, can disable``... or ``unsupported``."""
        if not self:
            return "unsupported"
        return ", ".join(
            text
            for member, text in (
                (SupportLevel.NATIVE, "native"),
                (SupportLevel.BEST_EFFORT, "best-effort"),
                (SupportLevel.CAN_DISABLE, "can disable"),
            )
            if member in self
        )

    @property
    def served_level(self) -> Optional["SupportLevel"]:
        """The level a training is served at: NATIVE, else BEST_EFFORT, else None."""
        if SupportLevel.NATIVE in self:
            return SupportLevel.NATIVE
        if SupportLevel.BEST_EFFORT in self:
            return SupportLevel.BEST_EFFORT
        return None


class RequestLevel(enum.Enum):
    """How much a training needs a capability."""

    NATIVE = "native"
    BEST_EFFORT = "best_effort"
    OPTIONAL = "optional"
    DISABLE = "disable"

    @classmethod
    def parse(cls, value: "RequestLevel | str") -> "RequestLevel":
        """A RequestLevel from itself or its name (any case; ``best-effort`` too)."""
        if isinstance(value, RequestLevel):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_")
            for level in cls:
                if level.value == key:
                    return level
        raise ValueError(
            f"{value!r} is not a capability request level; use one of "
            + ", ".join(level.value for level in cls)
            + " (or trainerkit.RequestLevel)"
        )


@dataclasses.dataclass(frozen=True)
class Unsupported:
    """One request a trainer cannot meet."""

    name: str
    requested: RequestLevel
    supported: SupportLevel

    def describe(self) -> str:
        has = f"has it {self.supported.describe()}" if self.supported else "does not have it"
        return f"{self.name}: requested {self.requested.value.replace('_', '-')}, the trainer {has}"


class UnsupportedCapabilityError(TrainerkitError, ValueError):
    """A training asked for capabilities its trainer cannot serve; nothing was started.

    Attributes:
        unsupported: each unmet request (name, requested, supported).
        hint: how this trainer could have them (a config key to set), or "".
    """

    def __init__(self, trainer: str, unsupported: "list[Unsupported]", needed_by: str = "", hint: str = "") -> None:
        self.unsupported = list(unsupported)
        #: What asked for them when it was not a capability request ("resources Resources(...)"), or "".
        self.needed_by = needed_by
        self.hint = hint
        lower = "ask for less" if needed_by else "lower the request to optional"
        super().__init__(
            f"trainer {trainer!r} cannot serve {len(self.unsupported)} requested "
            f"capabilit{'y' if len(self.unsupported) == 1 else 'ies'}"
            + (f" (needed by {needed_by})" if needed_by else "")
            + ": "
            + "; ".join(item.describe() for item in self.unsupported)
            + ". Nothing was recorded or started: choose a trainer that has them "
            f"(trainerkit trainers lists each trainer's capabilities), or {lower}"
            + (f"; {hint}" if hint else "")
        )


def normalize_requests(requests: Any, what: str = "capabilities") -> dict[str, RequestLevel]:
    """``{name: RequestLevel}`` from a mapping of names to levels (or level names).

    Raises:
        TypeError: not a mapping.
        ValueError: an unknown name (the message lists the known ones) or level.
    """
    if requests is None:
        return {}
    if not isinstance(requests, Mapping):
        raise TypeError(
            f"{what} must be a mapping of capability names to levels, such as "
            f"{{'cancel': 'native', 'gpus': 'optional'}}, got {requests!r}"
        )
    normalized: dict[str, RequestLevel] = {}
    for name, level in requests.items():
        if name not in CAPABILITY_NAMES:
            raise ValueError(
                f"{what}: unknown capability {name!r}; the known ones are " + ", ".join(CAPABILITY_NAMES)
            )
        try:
            normalized[name] = RequestLevel.parse(level)
        except ValueError as exc:
            raise ValueError(f"{what}: {name}: {exc}") from None
    return normalized


@dataclasses.dataclass(frozen=True)
class Served:
    """How a training's requests were served."""

    #: Each requested name and the level it was served at (None: not served).
    levels: Mapping[str, Optional[SupportLevel]]
    #: Names the training turned off (DISABLE requests for features the trainer has).
    disabled: frozenset[str]
    #: The requests, as given.
    requested: Mapping[str, RequestLevel] = dataclasses.field(default_factory=dict)


def serve(
    trainer: str,
    requests: Mapping[str, RequestLevel],
    supported: Mapping[str, SupportLevel],
    needed_by: str = "",
) -> Served:
    """Serve ``requests`` from ``supported``, or raise listing every unmet one.

    Raises:
        UnsupportedCapabilityError: a NATIVE or BEST_EFFORT request is not met,
            or a DISABLE request names a feature the trainer has but cannot turn off.
    """
    levels: dict[str, Optional[SupportLevel]] = {}
    disabled: set[str] = set()
    unmet: list[Unsupported] = []
    for name, requested in requests.items():
        support = supported.get(name, SupportLevel(0))
        if requested is RequestLevel.DISABLE:
            if support.served_level is None:
                levels[name] = None  # nothing to disable
            elif SupportLevel.CAN_DISABLE in support:
                levels[name] = None
                disabled.add(name)
            else:
                unmet.append(Unsupported(name, requested, support))
            continue
        level = support.served_level
        if requested is RequestLevel.NATIVE and level is not SupportLevel.NATIVE:
            unmet.append(Unsupported(name, requested, support))
        elif requested is RequestLevel.BEST_EFFORT and level is None:
            unmet.append(Unsupported(name, requested, support))
        else:
            levels[name] = level
    if unmet:
        raise UnsupportedCapabilityError(trainer, unmet, needed_by)
    return Served(levels=levels, disabled=frozenset(disabled), requested=dict(requests))


def levels_to_json(levels: Mapping[str, Optional[SupportLevel]]) -> dict[str, Optional[str]]:
    """``{name: "NATIVE" | "BEST_EFFORT" | None}`` for records."""
    return {name: (level.name if level is not None else None) for name, level in levels.items()}


def levels_from_json(data: Any) -> dict[str, Optional[SupportLevel]]:
    """The inverse of :func:`levels_to_json`; unknown values are dropped."""
    if not isinstance(data, Mapping):
        return {}
    levels: dict[str, Optional[SupportLevel]] = {}
    for name, value in data.items():
        if value is None:
            levels[str(name)] = None
        elif isinstance(value, str) and value in SupportLevel.__members__:
            levels[str(name)] = SupportLevel[value]
    return levels
