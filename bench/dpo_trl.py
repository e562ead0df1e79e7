"""bench/dpo.py's TRL baseline: trl.DPOTrainer on the same pre-tokenized pairs and LoRA, timed per
step by a callback, with or without ``precompute_ref_log_probs`` (see bench/dpo.py)."""

from __future__ import annotations

import time
from pathlib import Path

from dpo_systems import TensorPeak, _peak_mib, _reset_peak, _sync, build_model, dtype_for


def run_trl(system: str, args, pairs) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from judgefree.train.config import LORA_TARGETS

    device, dtype = torch.device(args.device), dtype_for(args)
    model, architecture, tokenizer, _ = build_model(args.shape, device, dtype)
    if architecture.has_vision:
        raise SystemExit("TRL is benchmarked on text shapes only (--shape llama-7b or smollm2)")
    if tokenizer is None:
        from transformers import AutoTokenizer

        from judgefree.assets.smollm import smollm2_path

        tokenizer = AutoTokenizer.from_pretrained(smollm2_path())  # only its pad/eos ids are used
    times, losses, marks, tensors = [], [], {"resting": 0.0, "peak": 0.0}, TensorPeak(device)
    timed_end = args.warmup + args.steps

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == timed_end:  # the untimed memory step
                marks["resting"] = _reset_peak(device)
                tensors.start()
            _sync(device)
            marks["start"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            _sync(device)
            times.append(time.perf_counter() - marks["start"])
            if len(times) == timed_end + 1:
                tensors.stop()
                marks["peak"] = _peak_mib(device)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    class PreTokenized(DPOTrainer):  # the pairs are already token ids: no re-tokenisation
        def _prepare_dataset(self, dataset, *unused, **kw):
            return dataset

    rows = [{"prompt_ids": p["prompt_ids"], "chosen_ids": p["chosen_ids"], "rejected_ids": p["rejected_ids"]}
            for p in pairs]
    config = DPOConfig(output_dir=str(Path(args.workdir) / system), per_device_train_batch_size=args.pairs,
                       max_steps=timed_end + 1, learning_rate=1e-5, lr_scheduler_type="constant",
                       logging_steps=1, report_to=[], save_strategy="no", use_cpu=device.type == "cpu",
                       bf16=device.type == "cuda", gradient_checkpointing=device.type == "cuda",
                       precompute_ref_log_probs=system == "trl-precomputed", max_length=None,
                       dataloader_num_workers=0, disable_tqdm=True, beta=0.1, seed=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
    trainer = PreTokenized(model=model, args=config, train_dataset=Dataset.from_list(rows * 4),
                           processing_class=tokenizer, peft_config=lora, callbacks=[Timer()])
    trainer.train()
    tokens = sum(2 * len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs[:args.pairs])
    return {"times": times[args.warmup:timed_end], "losses": losses, "tokens": tokens, "peak_mib": marks["peak"],
            "resting_mib": marks["resting"], "tensor_peak_mib": tensors.peak_mib}
