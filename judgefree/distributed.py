"""Ranks of a torchrun job, for every stage: who am I, which share is mine, the job's identity.

One process (no torchrun) is rank 0 of 1 and every helper is a no-op. Under torchrun the
non-training stages (generate, curate, eval run) start a process group if none exists (gloo:
they only exchange small Python objects, so no GPU collective is needed; training starts its
own NCCL group, train/distributed.py) and split their work by ``strided``: item i goes to rank
``i % world``, so a slow run of neighbouring images (one folder of large photos) is spread over
every rank instead of landing on one.

The job: rank 0's ``judgefree.locks.job_id()`` (``JUDGEFREE_JOB_ID`` when set) is broadcast and
set as every rank's ``JUDGEFREE_JOB_ID``, so all ranks name the same job in the locks they take
or check (``JobLock``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from judgefree.errors import FolderLocked
from judgefree.locks import LOCK_FILE, FolderLock, describe_holder, holder_of, job_id

T = TypeVar("T")


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


def strided(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items ``rank, rank + world, ...``: shares differ by at most one item, and neighbours
    (similar cost) go to different ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    return list(items[rank::world_size])


class Ranks:
    """The ranks of this job; ``Ranks.start()`` joins (or starts) the process group."""

    def __init__(self, info: RankInfo, owns_group: bool = False):
        self.info = info
        self.owns_group = owns_group

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def distributed(self) -> bool:
        return self.info.world_size > 1

    @classmethod
    def single(cls) -> Ranks:
        """One process, whatever the environment says (a library call outside torchrun's stages)."""
        return cls(RankInfo(0, 1, 0))

    @classmethod
    def start(cls, timeout_minutes: float = 24 * 60) -> Ranks:
        """This process's ranks; under torchrun a gloo group (when none is running) and one job id.
        The timeout bounds how long a rank may wait at a barrier for a slower one: a whole stage."""
        info = rank_info()
        owns = False
        if info.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                import torch

                # Objects go over gloo; CUDA tensors (training in `improve`) over NCCL.
                backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
                dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
                owns = True
        ranks = cls(info, owns)
        if ranks.distributed:
            os.environ["JUDGEFREE_JOB_ID"] = ranks.broadcast(job_id())
        return ranks

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable[[], T]) -> T:
        """Rank 0 runs ``work``; every rank gets its result, or raises when it failed there
        (collective: the other ranks are not left waiting for a rank 0 that stopped)."""
        if not self.distributed:
            return work()
        result, problem, error = None, None, None
        if self.is_main:
            try:
                result = work()
            except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
                error, problem = err, f"{type(err).__name__}: {err}"
        problem, shared = self.broadcast((problem, result if problem is None else None))
        if error is not None:
            raise error
        if problem is not None:
            raise RuntimeError(f"rank 0 failed: {problem}")
        return shared

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> Ranks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rank_device(device: str | None, ranks: Ranks) -> str:
    """The device of this rank: ``--device`` as given (``cuda`` becomes ``cuda:LOCAL_RANK`` under
    torchrun, one GPU per rank), else its GPU when there is one, else the CPU."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and ranks.distributed:
        device = f"cuda:{ranks.info.local_rank}"
    return device


class JobLock:
    """The share of a folder's lock that a rank > 0 holds: rank 0 holds the OS lock for the
    job; this checks that the lock is held and names this job, and refuses otherwise (an
    unrelated job, or rank 0 gone). Releasing it does nothing: the lock is rank 0's."""

    def __init__(self, folder: str | os.PathLike, *, name: str = LOCK_FILE):
        self.folder = Path(folder)
        holder = holder_of(self.folder, name=name)
        mine = job_id()
        if holder is None:
            raise FolderLocked(f"{self.folder}: rank 0 of job {mine} does not hold the lock of this folder; "
                               "every rank of a job writes only while rank 0 holds it")
        if holder.get("job") != mine:
            raise FolderLocked(f"{self.folder} is being written by another job ({describe_holder(holder)}, "
                               f"job {holder.get('job')!r}, not {mine!r}); wait for it to finish")
        self.held = True

    def release(self) -> None:
        self.held = False


def lock_folder(folder: str | os.PathLike, ranks: Ranks, command: str | None = None, *,
                name: str = LOCK_FILE) -> FolderLock | JobLock:
    """The lock of ``folder`` for this job: rank 0 takes the OS lock, then the other ranks check
    that it names their job. Every rank raises the same ``FolderLocked`` when rank 0 could not
    take it (collective: every rank must call it)."""
    lock: FolderLock | JobLock | None = None
    problem = None
    if ranks.is_main:
        try:
            lock = FolderLock(folder, command, name=name).acquire()
        except FolderLocked as err:
            problem = str(err)
    problem = ranks.broadcast(problem)
    if problem is not None:
        raise FolderLocked(problem)
    if not ranks.is_main:
        try:
            lock = JobLock(folder, name=name)
        except FolderLocked as err:
            problem = f"rank {ranks.rank}: {err}"
    failures = [p for p in ranks.gather(problem) if p]
    if failures:  # every rank stops, not only the one that was refused
        if isinstance(lock, FolderLock):
            lock.release()
        raise FolderLocked(failures[0])
    return lock
