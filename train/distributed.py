"""Training across processes started by torchrun: process group, FSDP2 sharding, reductions.

One process (no torchrun) needs none of it: every helper here is a no-op then. Under
torchrun each rank takes ``batch_size / world_size`` pairs of every step; FSDP2
(``torch.distributed.fsdp.fully_shard``) shards each decoder layer and, as the root unit,
the ``ResponseLogprobs`` wrapper (embeddings, vision tower, projector, final norm, lm_head).
NCCL on CUDA, gloo on the CPU (how the tests run it). Checkpoints assume one node (a
filesystem every rank sees).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True, slots=True)
class RankInfo:
    """This process's place under torchrun (rank 0 of 1 without it)."""

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


@dataclass(slots=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # this module started the process group, so it ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device | None = None, timeout_minutes: float = 60.0) -> DistContext:
    """This process's rank and device; starts the process group under torchrun."""
    info = rank_info()
    if device is None:
        device = torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    owns = False
    if info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
        owns = True
    return DistContext(info.rank, info.world_size, device, owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum over ranks (in place; returned for chaining)."""
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_policy(policy: nn.Module, decoder_layers: nn.ModuleList, ctx: DistContext,
                 param_dtype: torch.dtype | None) -> nn.Module:
    """FSDP2: one unit per decoder layer, the wrapper as root; ``param_dtype`` (bf16) is the
    compute dtype of fp32 master weights, gradients are reduced in fp32."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for layer in decoder_layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp_policy)
    fully_shard(policy, mesh=mesh, mp_policy=mp_policy)
    return policy


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    """Peak memory so far and what it measures: CUDA allocations, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_peak_rss"
