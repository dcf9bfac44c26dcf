"""What a training runs on: nodes, processes per node, GPUs per process.

``train(..., resources=trainerkit.Resources(procs_per_node=2))`` (or the
trainer config's ``resources:`` defaults) asks for more than one process or
for GPUs; a trainer type that cannot serve the request refuses it at
``train()`` time, before anything is recorded or started, naming the
capability it lacks (``multi_node``, ``multi_process``, ``gpus``).

Inside a multi-process training every rank sees the torchrun environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`distributed_env`
reads it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

#: Upper bounds that catch a typo (``procs_per_node=80000``) with a clear error.
MAX_NODES = 4096
MAX_PROCS_PER_NODE = 1024
MAX_GPUS_PER_PROC = 64


@dataclasses.dataclass(frozen=True)
class Resources:
    """Nodes, processes per node and GPUs per process of one training.

    Attributes:
        nodes: machines the training spans (1: one machine).
        procs_per_node: processes (ranks) per machine.
        gpus_per_proc: GPUs each process gets for itself (0: none).
    """

    nodes: int = 1
    procs_per_node: int = 1
    gpus_per_proc: int = 0

    def __post_init__(self) -> None:
        for name, least, most in (
            ("nodes", 1, MAX_NODES),
            ("procs_per_node", 1, MAX_PROCS_PER_NODE),
            ("gpus_per_proc", 0, MAX_GPUS_PER_PROC),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Resources {name} must be an integer, got {value!r}")
            if not least <= value <= most:
                raise ValueError(f"Resources {name} must be between {least} and {most}, got {value}")

    @classmethod
    def of(cls, value: "Resources | Mapping[str, Any] | None") -> "Resources":
        """A Resources from itself, a mapping with the same keys, or None (the defaults)."""
        if value is None:
            return ONE_PROCESS if cls is Resources else cls()
        if isinstance(value, Resources):
            return value
        if isinstance(value, Mapping):
            known = [field.name for field in dataclasses.fields(cls)]
            unknown = sorted(str(key) for key in value if key not in known)
            if unknown:
                raise ValueError(f"resources: unknown keys {unknown}; the keys are {', '.join(known)}")
            return cls(**dict(value))
        raise TypeError(
            "resources must be a trainerkit.Resources or a mapping such as "
            f"{{'procs_per_node': 2, 'gpus_per_proc': 1}}, got {value!r}"
        )

    @property
    def world_size(self) -> int:
        """All processes of the training."""
        return self.nodes * self.procs_per_node

    def needs(self) -> dict[str, str]:
        """The capabilities serving this takes (``{}`` for one process without GPUs)."""
        needed: dict[str, str] = {}
        if self.nodes > 1:
            needed["multi_node"] = "native"
        if self.procs_per_node > 1:
            needed["multi_process"] = "native"
        if self.gpus_per_proc > 0:
            needed["gpus"] = "native"
        return needed

    def describe(self) -> str:
        """``Resources(procs_per_node=2)``: only what differs from the defaults."""
        given = [f"{field.name}={getattr(self, field.name)}" for field in dataclasses.fields(self)
                 if getattr(self, field.name) != field.default]
        return f"Resources({', '.join(given)})"


#: The default: one process, no GPUs (built once; train() asks for it at every call).
ONE_PROCESS = Resources()


@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """The torchrun environment of one rank of a multi-process training."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int


def distributed_env(environ: Optional[Mapping[str, str]] = None) -> Optional[DistributedEnv]:
    """This rank's :class:`DistributedEnv`, or None outside a multi-process
    training (no ``WORLD_SIZE``, or a world of one process).

    Raises:
        ValueError: WORLD_SIZE says several processes but a variable is missing or
            malformed, or RANK is outside the world (names the variable).
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None

    def number(name: str, default: Optional[str] = None) -> int:
        text = env.get(name, default)
        if text is None:
            raise ValueError(
                f"the torchrun variable {name} is not set, but WORLD_SIZE={env['WORLD_SIZE']} says this "
                "is a multi-process training: set every one of RANK, WORLD_SIZE, MASTER_PORT (or none)"
            )
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"the torchrun variable {name}={text!r} is not an integer") from None

    world_size = number("WORLD_SIZE")
    if world_size <= 1:
        return None
    rank = number("RANK")
    if not 0 <= rank < world_size:
        raise ValueError(f"the torchrun variable RANK={rank} is not between 0 and WORLD_SIZE - 1 ({world_size - 1})")
    return DistributedEnv(
        rank=rank,
        world_size=world_size,
        local_rank=number("LOCAL_RANK", env.get("RANK")),
        local_world_size=number("LOCAL_WORLD_SIZE", str(world_size)),
        node_rank=number("NODE_RANK", "0"),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=number("MASTER_PORT"),
    )
