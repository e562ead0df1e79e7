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

# Rank arithmetic is shared with the non-training stages (judgefree/distributed.py).
from judgefree.distributed import RankInfo, _env_int, rank_info, shard_bounds  # noqa: F401


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
