"""Splitting generation over processes started by torchrun.

Each rank runs its own engine on its own GPU (``LOCAL_RANK``) over a contiguous share of
the work and writes its own output shard; nothing is exchanged between ranks, so no process
group is needed. Because every response's seed derives from (seed, image hash, role), the
union of the shards equals what one process would have produced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def rank_info() -> RankInfo:
    """Rank, world size and local rank from torchrun's environment (1 process without it)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return RankInfo(rank, world, local)


def shard_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share; shares differ in size by at most one."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(items: Sequence[T], info: RankInfo | None = None) -> list[T]:
    """This rank's share of ``items`` (all of them outside torchrun)."""
    info = info or rank_info()
    start, stop = shard_bounds(len(items), info.rank, info.world_size)
    return list(items[start:stop])


def shard_name(stem: str, info: RankInfo | None = None, suffix: str = "") -> str:
    """``stem`` itself in a single process, else ``stem.rank{r}-of-{w}`` (+ suffix)."""
    info = info or rank_info()
    if info.world_size == 1:
        return stem + suffix
    return f"{stem}.rank{info.rank:05d}-of-{info.world_size:05d}{suffix}"
