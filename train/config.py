"""DPO training settings (``TrainConfig``) and how "auto" choices resolve on this machine.

Plain Python: the CLI validates arguments before torch or a model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from judgefree.train.losses import DPO_LOSS_TYPES

FINETUNE_MODES = ("auto", "lora", "full")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# How the policy's response log-probs are computed (train/policy.py): "auto" is
# kernels.linear_logprobs (Triton on CUDA, chunked PyTorch elsewhere); "eager" materialises
# the [tokens, vocab] logits (the reference); "liger" is liger-kernel's fused linear cross-entropy.
LOGPROB_PATHS = ("auto", "triton", "torch", "eager", "liger")
UNFILTERED_PATHS = ("eager", "liger")  # they do not run kernels.linear_logprobs' backward

# The attention and MLP projections of a Llama language model; vision towers are never adapted.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def check_filter_path(path: str, filter_eps: float | None, name: str = "filter_eps") -> None:
    """Gradient filtering is the kernel's backward: refuse it on a path that does not run it."""
    if filter_eps is not None and path in UNFILTERED_PATHS:
        raise ValueError(f"{name} filters kernels.linear_logprobs' backward; path {path!r} does not run it "
                         f"(use auto or triton)")


@dataclass(slots=True)
class TrainConfig:
    """DPO on a curated pair store. ``batch_size`` counts pairs per optimizer step (all
    processes together), ``micro_batch_size`` pairs per forward on one process.
    ``learning_rate=None`` picks 5e-5 for LoRA and 5e-7 for full fine-tuning."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    finetune: str = "auto"  # auto: LoRA in one process, full fine-tuning under FSDP2
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    train_projector: bool = True  # full fine-tuning of LLaVA: the projector learns with the LM
    learning_rate: float | None = None
    weight_decay: float = 0.0
    adam_eps: float = 1e-8  # AdamW's epsilon
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    micro_batch_size: int = 2
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on the CPU
    gradient_checkpointing: bool | None = None  # None: on with CUDA, off on the CPU
    liger: bool | None = None  # None: liger-kernel's Llama kernels whenever on CUDA
    logprobs: str = "auto"  # one of LOGPROB_PATHS
    # Gradient filtering of the Triton log-prob kernel (kernels.linear_logprobs filter_eps: the
    # packed backward, every dropped d logit < this, documented bound); None: exact gradients.
    logprobs_filter_eps: float | None = None
    seed: int = 0
    save_every: int = 50
    keep_checkpoints: int = 2
    merge_lora: bool = True
    kept_only: bool = True
    # Ignore the store's recorded reference log-probs and compute them with the model being
    # trained (needed to train on pairs another model generated: their reference is that model's).
    recompute_reference: bool = False

    def __post_init__(self) -> None:
        self.lora_targets = tuple(self.lora_targets)
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {self.loss_type!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        # The ranges of losses.dpo_loss, checked here so that a bad value fails before any model loads.
        smoothing_ok = {"sigmoid": 0.0 <= self.label_smoothing <= 0.5, "robust": 0.0 <= self.label_smoothing < 0.5}
        if not smoothing_ok.get(self.loss_type, self.label_smoothing == 0.0):
            raise ValueError(f"label_smoothing {self.label_smoothing} is outside the range of loss_type "
                             f"{self.loss_type!r} (sigmoid: [0, 0.5], robust: [0, 0.5), ipo and hinge: 0)")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.logprobs not in LOGPROB_PATHS:
            raise ValueError(f"logprobs must be one of {LOGPROB_PATHS}, got {self.logprobs!r}")
        if self.logprobs_filter_eps is not None and not 0.0 < self.logprobs_filter_eps < 1.0:
            raise ValueError(f"logprobs_filter_eps must be None or in (0, 1), got {self.logprobs_filter_eps}")
        check_filter_path(self.logprobs, self.logprobs_filter_eps, "logprobs_filter_eps")
        positive = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "epochs": self.epochs,
                    "batch_size": self.batch_size, "micro_batch_size": self.micro_batch_size,
                    "save_every": self.save_every, "keep_checkpoints": self.keep_checkpoints}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None), got {self.max_steps}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {self.adam_eps}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module")

    def resolved_finetune(self, world_size: int) -> str:
        """"lora" or "full" ("auto": LoRA in one process, full fine-tuning across processes)."""
        if self.finetune != "auto":
            return self.finetune
        return "lora" if world_size == 1 else "full"

    def resolved_learning_rate(self, world_size: int) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-5 if self.resolved_finetune(world_size) == "lora" else 5e-7

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready settings; a resumed run compares them with the stored ones."""
        out = asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return out


# Settings that may change between a run and its resume without changing the result.
RESUME_FREE = frozenset({"save_every", "keep_checkpoints"})


# Settings added after runs were already stored, with the value every run stored before them
# used: a train.json without the key means that value (a resume of an older run is not a
# mismatch). The value is pinned here, not read from TrainConfig, so changing a default later
# cannot change what an old run is taken to have used.
ADDED_SETTINGS: dict[str, Any] = {
    "logprobs": "auto",  # before TrainConfig.logprobs, the policy always used kernels.linear_logprobs
    "recompute_reference": False,  # before it, the store's recorded reference was always used
    "logprobs_filter_eps": None,  # before it, the policy's log-prob gradients were never filtered
}


def resume_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the settings in which a resumed run differs from the stored one (a key in
    ``ADDED_SETTINGS`` that ``stored`` lacks counts as its pinned old value)."""
    stored = {**ADDED_SETTINGS, **stored}
    keys = (set(stored) | set(current)) - RESUME_FREE
    return sorted(k for k in keys if stored.get(k) != current.get(k))
