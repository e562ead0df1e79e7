"""The systems bench/dpo.py compares, each run in its own process: the pairs, the models (the
real SmolLM2-135M or random LLaVA-1.5-7B / Llama-7B shapes), judgefree's DPO step, the eager
full-logits step, TRL's DPOTrainer, and the memory probes. See bench/dpo.py for the protocol."""

from __future__ import annotations

import time

TEXT = ("A small boat drifts across a quiet lake at dawn while mist rises from the water and two herons "
        "stand in the reeds near the shore. On the far side a wooden cabin with a red door sits under tall "
        "pine trees, smoke curling from its chimney, and a dog sleeps on the porch beside a pair of boots. ")


# -- data ---------------------------------------------------------------------------------------
def make_pairs(tokenizer, n: int, prompt_len: int, response_len: int, vocab: int, image_tokens: int = 0,
               image_token_id: int | None = None) -> list[dict]:
    """``n`` pairs with fixed lengths (no padding differences between systems): a chat prompt cut
    or padded to ``prompt_len`` (plus ``image_tokens`` placeholders) and two responses of
    ``response_len`` tokens from real text (SmolLM2) or random ids (random-weight 7B shapes)."""
    import random

    rng = random.Random(0)
    if tokenizer is not None:
        text_ids = tokenizer(TEXT * 40)["input_ids"]
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Describe the scene in detail."}],
                                               add_generation_prompt=True, tokenize=True, return_dict=False)
        prompt = (list(prompt) * 4)[-prompt_len:]
    else:
        text_ids = [rng.randrange(3, min(vocab, 32000)) for _ in range(20_000)]  # never the image token
        prompt = [rng.randrange(3, min(vocab, 32000)) for _ in range(prompt_len)]
    if image_tokens:
        prompt = prompt[:2] + [image_token_id] * image_tokens + prompt[2:]
    pairs = []
    for i in range(n):
        a, b = rng.randrange(len(text_ids) - response_len), rng.randrange(len(text_ids) - response_len)
        pairs.append({"prompt_ids": prompt, "chosen_ids": text_ids[a:a + response_len],
                      "rejected_ids": text_ids[b:b + response_len],
                      "ref_chosen": -1.5 * response_len - i, "ref_rejected": -1.7 * response_len - i})
    return pairs


# -- models -------------------------------------------------------------------------------------
LLAVA_7B_TEXT = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768)
# The same architecture, small: a CPU smoke run of the GPU script's code path (not a benchmark).
TINY_TEXT = dict(LLAVA_7B_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4)
TINY_VISION = dict(CLIP_L_336, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def build_model(shape: str, device, dtype):
    """(model, architecture, tokenizer or None, image token id): the real SmolLM2 or random 7B shapes."""
    model, tokenizer, image_token = _build(shape, device, dtype)
    from judgefree.engine.architectures import architecture_for

    return model, architecture_for(model.config), tokenizer, image_token


def _build(shape: str, device, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if shape == "smollm2":
        from judgefree.assets.smollm import smollm2_path

        path = smollm2_path()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device)
        return model, AutoTokenizer.from_pretrained(path), None
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    tiny = shape.endswith("-tiny")
    text = LlamaConfig(**(TINY_TEXT if tiny else LLAVA_7B_TEXT))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if shape.startswith("llama"):
                return AutoModelForCausalLM.from_config(text, attn_implementation="sdpa"), None, None
            vision = CLIPVisionConfig(**(TINY_VISION if tiny else CLIP_L_336))
            config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                 image_token_id=32000, vision_feature_layer=-2,
                                 vision_feature_select_strategy="default", image_seq_length=576)
            return LlavaForConditionalGeneration(config), None, 32000
    finally:
        torch.set_default_dtype(previous)


# -- workers ------------------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device) -> float:
    """Start a new peak; returns the memory in use now (MiB), the resting level."""
    import gc

    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    gc.collect()
    try:  # hand freed heap pages back to the OS, so that RSS growth means new memory
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS
    return _proc_status("VmRSS")


class TensorPeak:
    """CPU: the peak of live tensor bytes allocated during one step, from the profiler's
    allocation and free events replayed in order (no allocator slack, unlike RSS)."""

    def __init__(self, device) -> None:
        self.device, self.profiler, self.peak_mib = device, None, None

    def start(self) -> None:
        if self.device.type == "cpu":
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.profiler.__enter__()

    def stop(self) -> None:
        if self.profiler is None:
            return
        import torch

        self.profiler.__exit__(None, None, None)
        events = [e for e in self.profiler.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
        live = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            live += event.nbytes()
            peak = max(peak, live)
        self.peak_mib, self.profiler = peak / 2**20, None


def _proc_status(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status("VmHWM")


def make_batches(pairs, size, device, architecture, pixel_shape):
    import torch

    from judgefree.train.data import DPOExample, collate

    examples = [DPOExample(str(i), p["prompt_ids"], p["chosen_ids"], p["rejected_ids"],
                           [p["ref_chosen"] / len(p["chosen_ids"])] * len(p["chosen_ids"]),
                           [p["ref_rejected"] / len(p["rejected_ids"])] * len(p["rejected_ids"]),
                           "image" if architecture.has_vision else None) for i, p in enumerate(pairs)]
    pixels = (lambda path: torch.randn(pixel_shape)) if architecture.has_vision else None
    return [collate(examples[i:i + size], 0, pixels).to(device) for i in range(0, len(examples), size)]


def run_ours_or_eager(system: str, args, pairs) -> dict:
    import torch

    from judgefree.train.config import TrainConfig
    from judgefree.train.model import prepare_for_training
    from judgefree.train.policy import ResponseLogprobs, batch_logprobs
    from judgefree.train.trainer import dpo_step

    device, dtype = torch.device(args.device), dtype_for(args)
    model, architecture, _, _ = build_model(args.shape, device, dtype)
    config = TrainConfig(finetune="lora", lora_r=16, lora_alpha=32, learning_rate=1e-5, batch_size=args.pairs,
                         micro_batch_size=args.pairs, gradient_checkpointing=device.type == "cuda",
                         liger=device.type == "cuda", dtype="auto" if device.type == "cuda" else "float32")
    model = prepare_for_training(model, architecture, config, device, "lora")
    policy = ResponseLogprobs(model, architecture) if system == "ours" else EagerLogprobs(model, architecture)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = make_batches(pairs, args.pairs, device, architecture, (3, 336, 336))
    with torch.no_grad():  # the reference: what the engine records while generating (untimed, as a store)
        reference = ResponseLogprobs(model, architecture)
        for batch in batches:
            chosen, rejected = batch_logprobs(reference, batch)
            batch.ref_chosen, batch.ref_rejected = chosen.sums.float(), rejected.sums.float()
    times, losses, resting, tensors = [], [], 0.0, TensorPeak(device)
    timed_end = args.warmup + args.steps
    for step in range(timed_end + 1):  # + one untimed step that measures memory
        if step == timed_end:
            resting = _reset_peak(device)
            tensors.start()
        batch = batches[step % len(batches)]
        _sync(device)
        start = time.perf_counter()
        stats = dpo_step(policy, optimizer, scheduler, [batch], 1, batch.num_pairs, config, params)
        _sync(device)
        times.append(time.perf_counter() - start)
        losses.append(float(stats.sums[0] / stats.sums[5]))
    tensors.stop()
    peak = _peak_mib(device)
    tokens = batches[0].num_tokens + 2 * args.pairs  # + the last response token TRL also feeds
    return {"times": times[args.warmup:timed_end], "losses": losses, "tokens": tokens, "peak_mib": peak,
            "resting_mib": resting, "tensor_peak_mib": tensors.peak_mib}


class EagerLogprobs:
    """The baseline: the model's own forward with full [rows, T, vocab] logits, then log_softmax."""

    def __init__(self, model, architecture):
        self.model, self.architecture = model, architecture

    def __call__(self, input_ids, attention_mask, targets, pixel_values=None):
        import torch

        kwargs = {}
        if self.architecture.has_vision:
            kwargs["pixel_values"] = torch.cat([pixel_values] * (input_ids.shape[0] // pixel_values.shape[0]))
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        mask = targets != -100
        picked = logprobs.gather(2, torch.where(mask, targets, 0)[..., None])[..., 0]
        return torch.where(mask, picked, 0.0)

    def parameters(self):
        return self.model.parameters()

    def train(self):
        self.model.train()


def dtype_for(args):
    import torch

    return torch.bfloat16 if args.device == "cuda" else torch.float32
