"""Per-step DPO statistics (TRL's names: ``rewards/margins``, ``rewards/accuracies``, ...)
summed over micro-batches and ranks, and ``metrics.jsonl``, one JSON line per step."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from judgefree.io import write_atomic
from judgefree.train.distributed import DistContext, all_reduce_sum, peak_memory_gib

METRICS_FILE = "metrics.jsonl"
# Summed quantities, in the order of StepStats.sums.
_SUMS = ("loss", "chosen", "rejected", "margin", "correct", "pairs", "tokens")


@dataclass(slots=True)
class StepStats:
    sums: torch.Tensor  # float64 [len(_SUMS)]
    grad_norm: float = 0.0
    seconds: float = 0.0
    grad_norm_tensor: Any = None  # what clip_grad_norm_ returned (a DTensor under FSDP2)

    @classmethod
    def zeros(cls, device: torch.device) -> StepStats:
        return cls(torch.zeros(len(_SUMS), dtype=torch.float64, device=device))

    def add(self, loss_sum: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
            tokens: int) -> None:
        margins = chosen_rewards - rejected_rewards
        values = torch.stack([loss_sum.double(), chosen_rewards.double().sum(), rejected_rewards.double().sum(),
                              margins.double().sum(), (margins > 0).double().sum(),
                              torch.tensor(float(margins.numel()), dtype=torch.float64, device=margins.device),
                              torch.tensor(float(tokens), dtype=torch.float64, device=margins.device)])
        self.sums += values

    def reduce(self, ctx: DistContext, grad_norm: torch.Tensor, seconds: float) -> None:
        """Sum over ranks; the step takes as long as its slowest rank."""
        all_reduce_sum(self.sums, ctx)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        self.grad_norm = float(grad_norm)
        slowest = torch.tensor([seconds], dtype=torch.float64, device=self.sums.device)
        if ctx.distributed:
            torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
        self.seconds = float(slowest)

    def record(self, step: int, epoch: float, lr: float, device: torch.device) -> dict[str, Any]:
        values = dict(zip(_SUMS, self.sums.tolist()))
        pairs = values["pairs"]
        peak, kind = peak_memory_gib(device)
        return {
            "step": step, "epoch": round(epoch, 4), "loss": values["loss"] / pairs,
            "rewards/chosen": values["chosen"] / pairs, "rewards/rejected": values["rejected"] / pairs,
            "rewards/margins": values["margin"] / pairs, "rewards/accuracies": values["correct"] / pairs,
            "grad_norm": self.grad_norm, "lr": lr, "pairs": int(pairs), "tokens": int(values["tokens"]),
            "step_seconds": self.seconds, "tokens_per_s": values["tokens"] / max(self.seconds, 1e-9),
            "peak_memory_gib": peak, "peak_memory_kind": kind,
        }


class MetricsLog:
    """``OUT/metrics.jsonl``: appended every step, rewritten on resume to the checkpoint's steps."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / METRICS_FILE

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
