"""The process's place in a ``torchrun`` launch: rank, world size, its device and its CPU threads.

``torchrun`` (``torch.distributed.run``) starts N copies of a command and tells each one who it is through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``TORCHELASTIC_RUN_ID``).
Per-image work needs no collective: each rank takes a strided shard of the sorted work list and writes its own
part file (see :mod:`ama.store.parts`), so reading these variables is all the kit does; no process group is made, and
one dead rank cannot hang the others. A plain ``python -m ama`` run is rank 0 of a world of 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """Who this process is: ``rank`` in ``[0, world)``, ``local_rank`` on its machine, the run's id."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    run_id: str = ""

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _int_env(env, name: str, default: int) -> int:
    value = env.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def launch_from_env(env=None) -> Launch:
    """The :class:`Launch` described by torchrun's environment variables (rank 0 of 1 without them). ``env``: a mapping
    in place of ``os.environ``."""
    env = os.environ if env is None else env
    world = _int_env(env, "WORLD_SIZE", 1)
    rank = _int_env(env, "RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent (need 0 <= RANK < WORLD_SIZE)")
    local_rank = _int_env(env, "LOCAL_RANK", 0)
    local_world = _int_env(env, "LOCAL_WORLD_SIZE", world)
    return Launch(rank, world, local_rank, local_world, env.get("TORCHELASTIC_RUN_ID", ""))


def shard(items: Sequence[T], launch: Launch) -> list[T]:
    """Rank r's strided share of ``items``: items r, r + world, r + 2 world, ... (no padding, no duplicates)."""
    return list(items[launch.rank::launch.world])


def cpu_threads(launch: Launch, cores: int | None = None) -> int:
    """Torch threads per process on the CPU: ``max(1, cores // processes on this machine)``. ``cores``: this machine's
    cores (default ``os.cpu_count()``)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, launch.local_world))


def rank_device(device: str, launch: Launch) -> str:
    """The device of this rank: under torchrun ``cuda``/``auto`` with GPUs -> ``cuda:LOCAL_RANK``.

    An explicit ``cuda:N`` is kept as given (the user chose it). On the CPU, torch's thread count is set to
    :func:`cpu_threads` so that N processes do not oversubscribe the cores."""
    import torch

    if not launch.distributed:
        return device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{launch.local_rank % torch.cuda.device_count()}"
    if device in ("auto", "cpu"):
        torch.set_num_threads(cpu_threads(launch))
        return "cpu"
    return device
