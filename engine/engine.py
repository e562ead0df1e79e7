"""The public two-path generation engine.

    engine = Engine.from_pretrained(path, dtype="auto", device=None)
    engine.generate([Request(...), ...]) -> list[Completion]
    engine.generate_pairs(images, prompt, h_chosen="fixed:0", h_rejected="gaussian:0.5,0.15")

Requests become responses (``Response``, one or two ``ResponsePath``s each); the scheduler,
the model runner and the scheduler's postprocess take turns until every response is
finished (the data path of one token: docs/architecture.md). A request that cannot
run (unreadable image, prompt longer than the context) gets a Completion with ``error``;
the others are unaffected.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence as SequenceABC
from typing import Any

import torch
from judgefree.engine.architectures import Architecture, architecture_for
from judgefree.engine.config import EngineConfig
from judgefree.engine.loader import check_folder, iter_checkpoint, load_weights
from judgefree.engine.model_runner import ModelRunner
from judgefree.engine.prompts import PromptBuilder
from judgefree.engine.response import Response, ResponsePath, Status
from judgefree.engine.scheduler import Scheduler
from judgefree.engine.types import Completion, Pair, Request, SamplingParams
from tqdm.auto import tqdm

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None: this rank's GPU (LOCAL_RANK under torchrun) when CUDA is present, else the CPU."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_dtype(dtype: str | torch.dtype, config, device: torch.device) -> torch.dtype:
    """"auto": fp32 on the CPU, else the checkpoint's dtype (bf16 when it names none or fp32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        named = _DTYPES.get(str(named).removeprefix("torch."), None) if named is not None else None
        return named if named in (torch.float16, torch.bfloat16) else torch.bfloat16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


class Engine:
    """Two-path generation over a paged, prefix-shared KV cache (see the module docstring)."""

    def __init__(self, model, architecture: Architecture, prompts: PromptBuilder, config: EngineConfig,
                 max_model_len: int, device: torch.device, dtype: torch.dtype, stop_ids: frozenset[int]) -> None:
        self.model, self.architecture, self.prompts, self.config = model, architecture, prompts, config
        self.max_model_len, self.device, self.dtype, self.stop_ids = max_model_len, device, dtype, stop_ids
        self.runner = ModelRunner(model, config, max_model_len, device, dtype)
        self.stats = dict.fromkeys(("steps", "prefill_tokens", "prefill_seconds", "decode_steps", "decode_rows",
                                    "decode_context_tokens", "decode_seconds", "preemptions"), 0)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str | torch.dtype = "auto",
                        device: str | torch.device | None = None, **config_overrides: Any) -> Engine:
        """Load a LLaVA or Llama checkpoint folder (HF layout). ``config_overrides`` are
        ``EngineConfig`` fields (block_size, max_num_seqs, max_kv_blocks, ...)."""
        from transformers import AutoConfig, GenerationConfig

        folder = check_folder(path)
        try:
            hf_config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{folder}/config.json cannot be read: {err}") from None
        architecture = architecture_for(hf_config)
        known = set(EngineConfig.__dataclass_fields__)
        unknown = sorted(set(config_overrides) - known)
        if unknown:
            raise ValueError(f"unknown engine option(s) {unknown}; known: {sorted(known)}")
        config = EngineConfig(**config_overrides)
        device = resolve_device(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # Triton launches on the current device
        dtype = resolve_dtype(dtype, hf_config, device)
        text_config = architecture.text_config(hf_config)
        max_model_len = min(config.max_model_len or text_config.max_position_embeddings,
                            text_config.max_position_embeddings)
        model = build_model(architecture, hf_config, max_model_len, device, dtype)
        load_weights(model, iter_checkpoint(folder), str(folder))
        model.eval()
        prompts = PromptBuilder(folder, model.image_token_id)
        try:
            generation_eos = GenerationConfig.from_pretrained(folder).eos_token_id
        except OSError:
            generation_eos = getattr(text_config, "eos_token_id", None)
        return cls(model, architecture, prompts, config, max_model_len, device, dtype,
                   prompts.stop_ids(generation_eos))

    # -- requests -> responses --------------------------------------------------------------
    def _response(self, index: int, request: Request) -> Response:
        """A response for ``request``; raises ValueError when it cannot run."""
        sampling = request.sampling if request.sampling is not None else SamplingParams()
        if request.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        h = request.h
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0.0 <= h <= 1.0:
            raise ValueError(f"h must be a number in [0, 1], got {h!r} (distributions are drawn when "
                             "pairs are planned: judgefree.generation)")
        prompt = self.prompts.build(request.prompt, request.image, request.context)
        if len(prompt.cond_ids) >= self.max_model_len:
            raise ValueError(f"prompt is {len(prompt.cond_ids)} tokens; the context holds "
                             f"{self.max_model_len} (max_model_len), leaving no room to generate")
        needs_uncond = (sampling.alpha > 0) if sampling.mode == "contrast" else h > 0
        # No image / context: both paths would read the same prompt, and mixing a
        # distribution with itself changes nothing, so the unconditional path is skipped.
        needs_uncond = needs_uncond and prompt.uncond_ids != prompt.cond_ids
        outputs: list[int] = []
        cond = ResponsePath(prompt.cond_ids, outputs, prompt.image_hash, prompt.image_span)
        uncond = ResponsePath(prompt.uncond_ids, outputs) if needs_uncond else None
        stops = frozenset(sampling.stop_token_ids) | (frozenset() if sampling.ignore_eos else self.stop_ids)
        return Response(index, cond, uncond, float(h), request.seed, sampling, request.max_new_tokens, stops,
                        pixel_values=prompt.pixel_values, output_ids=outputs)

    def generate(self, requests: SequenceABC[Request], *, progress: bool = False) -> list[Completion]:
        """One Completion per request, in order (see the module docstring)."""
        requests = list(requests)
        for i, request in enumerate(requests):
            if not isinstance(request, Request):
                raise ValueError(f"requests[{i}] must be a Request, got {type(request).__name__}")
        scheduler = Scheduler(self.config, self.runner.num_blocks, self.max_model_len)
        responses: list[Response | None] = [None] * len(requests)
        errors: dict[int, str] = {}
        for i, request in enumerate(requests):
            try:
                response = self._response(i, request)
            except ValueError as err:
                errors[i] = str(err)
                continue
            responses[i] = response
            scheduler.add(response)
        bar = tqdm(total=len(requests), desc="generate", unit="resp", disable=not progress, dynamic_ncols=True)
        bar.update(len(errors))
        self._run(scheduler, bar)
        bar.close()
        self.stats["preemptions"] += scheduler.num_preemptions
        return [self._completion(i, requests[i], responses[i], errors.get(i)) for i in range(len(requests))]

    def _run(self, scheduler: Scheduler, bar) -> None:
        while scheduler.has_work():
            batch, failed = scheduler.schedule()
            bar.update(len(failed))
            if batch is None:
                if scheduler.has_work() and not failed:
                    raise RuntimeError("scheduler made no progress (KV cache too small for any waiting response)")
                continue
            num_tokens = batch.num_tokens
            context = 0 if batch.is_prefill else sum(len(path) for path in batch.paths)
            start = time.perf_counter()
            result = self.runner.run(batch)  # ends in a host sync (the tokens)
            elapsed = time.perf_counter() - start
            finished = scheduler.postprocess(batch, result)
            self.stats["steps"] += 1
            if batch.is_prefill:
                self.stats["prefill_tokens"] += num_tokens
                self.stats["prefill_seconds"] += elapsed
            else:
                self.stats["decode_steps"] += 1
                self.stats["decode_rows"] += len(batch.paths)
                self.stats["decode_context_tokens"] += context
                self.stats["decode_seconds"] += elapsed
            bar.update(len(finished))

    def _completion(self, index: int, request: Request, response: Response | None, error: str | None) -> Completion:
        request_id = request.request_id if request.request_id is not None else str(index)
        if response is None or response.status is not Status.FINISHED or response.finish_reason == "error":
            message = error or (response.error if response is not None else "not run")
            h = response.h if response is not None else _number_or_nan(request.h)
            return Completion(request_id, request.prompt, [], "", h, "error", [], [], seed=request.seed, error=message,
                              prompt_token_ids=list(response.cond.prompt_ids) if response is not None else [])
        return Completion(
            request_id=request_id, prompt=request.prompt, token_ids=list(response.output_ids),
            text=self.prompts.decode(response.output_ids), h=response.h, finish_reason=response.finish_reason,
            cond_logprobs=list(response.cond_logprobs), logprobs=list(response.logprobs), seed=request.seed,
            image_hash=response.cond.image_hash, prompt_token_ids=list(response.cond.prompt_ids))

    # -- pairs ------------------------------------------------------------------------------
    def generate_pairs(self, images: SequenceABC[Any], prompt: str, *, h_chosen: str | float = "fixed:0",
                       h_rejected: str | float = "gaussian:0.5,0.15", sampling: SamplingParams | None = None,
                       max_new_tokens: int = 256, seed: int = 0, progress: bool = False) -> list[Pair]:
        """One Pair per image, in order: two responses with h drawn from ``h_chosen`` and
        ``h_rejected``; the lower-h one is chosen (ties: the ``h_chosen`` one). Seeds derive
        from (seed, image content hash, role), so chunking does not change the result."""
        from judgefree.generation.pairs import assemble_pairs, build_pair_requests

        plan = build_pair_requests(images, prompt, h_chosen, h_rejected, sampling or SamplingParams(),
                                   max_new_tokens, seed)
        completions = self.generate(plan.requests, progress=progress)
        return assemble_pairs(plan, completions)


def _number_or_nan(h) -> float:
    return float(h) if isinstance(h, (int, float)) and not isinstance(h, bool) else float("nan")


def build_model(architecture: Architecture, hf_config, max_model_len: int, device: torch.device,
                dtype: torch.dtype):
    """Our model for ``hf_config``, with uninitialised weights, on ``device`` in ``dtype``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return architecture.engine_model(hf_config, max_model_len)
    finally:
        torch.set_default_dtype(previous)
