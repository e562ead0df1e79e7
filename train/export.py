"""Saving the trained model as a Hugging Face checkpoint folder, atomically.

Merged (LoRA folded into the weights, or full fine-tuning) the folder is a complete
checkpoint that transformers and ``judgefree.engine.Engine`` both load; unmerged it is a
peft adapter folder (``PeftModel.from_pretrained(base, folder)``) that the Engine does not
take. Tokenizer, processor, chat template and generation config are copied from the source
checkpoint. Weights are saved in the compute dtype (bf16 on CUDA, fp32 on the CPU).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from judgefree.io import building_folder
from judgefree.train.config import TrainConfig
from judgefree.train.distributed import DistContext, barrier
from judgefree.train.model import LoadedPolicy, load_policy

COMPLETE = "export.json"
_WEIGHT_FILES = ("config.json", "model.safetensors.index.json")


def is_exported(folder: str | Path) -> bool:
    return (Path(folder) / COMPLETE).is_file()


def _copy_support_files(source: Path, target: Path) -> None:
    """Everything of the source checkpoint except its config and weights."""
    for entry in source.iterdir():
        if entry.is_file() and entry.suffix != ".safetensors" and entry.name not in _WEIGHT_FILES \
                and not entry.name.startswith("."):
            shutil.copy2(entry, target / entry.name)


def _save(model: nn.Module, loaded: LoadedPolicy, out: Path, merge_lora: bool) -> str:
    """Write ``model`` (a transformers or peft model) into ``out``; returns the folder's format."""
    lora = loaded.finetune == "lora"
    if lora and merge_lora:
        model = model.merge_and_unload()
    model = model.to(loaded.compute_dtype)
    config = model.config if not (lora and not merge_lora) else model.get_base_model().config
    config.use_cache = True  # training switched it off; generation wants it
    _copy_support_files(loaded.source, out)
    model.save_pretrained(out, safe_serialization=True)
    return "peft-adapter" if lora and not merge_lora else "hf-checkpoint"


def export_model(loaded: LoadedPolicy, policy: nn.Module, out: str | Path, config: TrainConfig,
                 ctx: DistContext, summary: dict | None = None) -> Path:
    """Save the trained policy to ``out`` (temp folder, fsync, rename); every rank calls it.

    Under FSDP2 rank 0 gathers the full state dict and rebuilds the model on the CPU to save it.
    """
    out = Path(out)
    if ctx.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if ctx.is_main:
        with building_folder(out) as tmp:
            if ctx.distributed:
                from judgefree.train.policy import ResponseLogprobs

                cpu_config = replace(config, finetune=loaded.finetune, liger=False, gradient_checkpointing=False)
                rebuilt = load_policy(loaded.source, cpu_config, torch.device("cpu"))
                rebuilt.compute_dtype = loaded.compute_dtype
                wrapper = ResponseLogprobs(rebuilt.model, rebuilt.architecture)
                result = wrapper.load_state_dict(full, strict=False)
                if result.unexpected_keys or result.missing_keys:  # every weight must come from training
                    raise RuntimeError(f"gathered weights do not fit the rebuilt model: unexpected "
                                       f"{result.unexpected_keys[:4]}, missing {result.missing_keys[:4]}")
                layout = _save(rebuilt.model, rebuilt, tmp, config.merge_lora)
            else:
                layout = _save(loaded.model, loaded, tmp, config.merge_lora)
            info = {"format": layout, "source": str(loaded.source), "finetune": loaded.finetune,
                    "dtype": str(loaded.compute_dtype).removeprefix("torch."), **(summary or {})}
            (tmp / COMPLETE).write_text(json.dumps(info, indent=1) + "\n")
    barrier(ctx)
    return out
