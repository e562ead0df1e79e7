"""Loading a checkpoint for DPO: transformers model, LoRA through peft or full fine-tuning,
liger-kernel's Llama kernels on CUDA, gradient checkpointing, dropout off.

Precision: LoRA keeps the frozen base in the compute dtype (bf16 on CUDA) and the adapters
in fp32 (peft's default); full fine-tuning keeps fp32 master weights and computes in bf16
under autocast (one process) or FSDP2's mixed-precision policy (several).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from judgefree.engine.architectures import Architecture, architecture_for, unwrap
from judgefree.train.config import TrainConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True)
class LoadedPolicy:
    """The model to train and what the trainer needs beside it."""

    model: nn.Module  # a transformers model, or a peft model around one
    architecture: Architecture
    finetune: str  # "lora" or "full"
    compute_dtype: torch.dtype
    pad_id: int
    pixels: Callable[[str], torch.Tensor] | None  # image path -> [3, H, W] (LLaVA only)
    source: Path


def compute_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on CUDA, float32 elsewhere."""
    if config.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[config.dtype]


def load_policy(path: str | os.PathLike, config: TrainConfig, device: torch.device,
                world_size: int = 1) -> LoadedPolicy:
    """Load ``path`` (HF layout) for training on ``device``; under FSDP2 (``world_size > 1``)
    the model stays on the CPU until ``fully_shard`` moves its shards."""
    from transformers import AutoConfig, AutoTokenizer

    from judgefree.engine.loader import check_folder

    folder = check_folder(path)
    architecture = architecture_for(AutoConfig.from_pretrained(folder))
    finetune = config.resolved_finetune(world_size)
    dtype = compute_dtype(config, device)
    # LoRA freezes the base, so it may live in the compute dtype; full fine-tuning keeps fp32 masters.
    weight_dtype = dtype if finetune == "lora" else torch.float32
    try:
        model = architecture.transformers_class().from_pretrained(folder, dtype=weight_dtype,
                                                                  attn_implementation="sdpa")
    except RuntimeError as err:
        if "mismatched_sizes" not in str(err) and "size mismatch" not in str(err):
            raise
        raise ValueError(f"{folder}: the shapes config.json describes do not match the weights (a config and "
                         "weights of different models?); transformers' load report above lists them") from None
    if world_size == 1:
        model.to(device)
    model = prepare_for_training(model, architecture, config, device, finetune)
    pixels = None
    if architecture.has_vision:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(folder)
        tokenizer = processor.tokenizer
        pixels = _pixel_reader(processor.image_processor)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return LoadedPolicy(model, architecture, finetune, dtype, int(pad_id), pixels, folder)


def prepare_for_training(model: nn.Module, architecture: Architecture, config: TrainConfig, device: torch.device,
                         finetune: str) -> nn.Module:
    """Dropout off, liger kernels (CUDA), frozen base + LoRA or trainable language model,
    gradient checkpointing; returns the model to train (a peft model with LoRA)."""
    model.config.use_cache = False
    _disable_dropout(model)
    use_liger = config.liger if config.liger is not None else device.type == "cuda"
    if use_liger:
        from judgefree.kernels._backend import triton_interpreting

        if device.type != "cuda" and not triton_interpreting():
            raise ValueError("liger=True needs a CUDA device (or TRITON_INTERPRET=1 to run its kernels on the CPU)")
        apply_liger(architecture.decoder(model))
    model.requires_grad_(False)
    if finetune == "lora":
        model = _add_lora(model, config)
    else:
        architecture.decoder(model).requires_grad_(True)
        model.get_output_embeddings().requires_grad_(True)
        if config.train_projector:
            for module in architecture.trainable_extras(model):
                module.requires_grad_(True)
    use_checkpointing = config.gradient_checkpointing
    if use_checkpointing if use_checkpointing is not None else device.type == "cuda":
        base = unwrap(model)
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def lora_config(config: TrainConfig):
    """peft LoraConfig for the language model's projections (never the vision tower)."""
    from peft import LoraConfig

    names = "|".join(sorted(set(config.lora_targets)))
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      bias="none", target_modules=rf"^(?!.*vision_tower).*\.({names})$")


def _add_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(config))
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise ValueError(f"lora_targets {list(config.lora_targets)} match no module of the model: {err}") from None


def apply_liger(decoder: nn.Module) -> None:
    """liger-kernel's RoPE, RMSNorm and SwiGLU kernels on a Llama decoder stack (the log-probs
    come from our own lm_head kernel, so no fused cross-entropy)."""
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False, model=decoder)


def _disable_dropout(model: nn.Module) -> None:
    """DPO compares exact log-probs of the same sequences: no dropout anywhere (as TRL does)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _pixel_reader(image_processor) -> Callable[[str], torch.Tensor]:
    from judgefree.images import load_image

    def pixels(path: str) -> torch.Tensor:
        # The engine's PromptBuilder feeds the same processor the same RGB image.
        return image_processor(images=load_image(path), return_tensors="pt")["pixel_values"][0]

    return pixels
