"""Two-path decoding written plainly on transformers: the engine's correctness reference
(greedy, h > 0) and the benchmark's baselines.

``generate``: per response, each path its own forward and its own KV cache, two forwards per
token, mixed in probability space. ``generate_batched``: one forward per token over both
paths of several responses (left-padded rows). Both feed the engine's exact prompt ids.
Sampled (temperature > 0) tokens use torch's generator, not the engine's Philox stream, so
only greedy outputs are comparable token for token. Every forward passes ``logits_to_keep=1``
as transformers' own ``generate`` does: the lm_head runs on the last position only, so a
prefill costs no [prompt, vocab] logits (the engine computes none either).
"""

from __future__ import annotations

import os
from collections.abc import Sequence as SequenceABC

import torch
from judgefree.engine.architectures import architecture_for
from judgefree.engine.loader import check_folder
from judgefree.generation.pairs import assemble_pairs, build_pair_requests
from judgefree.engine.prompts import PromptBuilder
from judgefree.engine.types import Completion, Pair, Request, SamplingParams


def mixed_probs(logits_c: torch.Tensor, logits_u: torch.Tensor | None, h: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """(1-h) softmax(l_c/T) + h softmax(l_u/T); T = 0 (greedy) mixes at T = 1."""
    t = temperature if temperature > 0 else 1.0
    p = torch.softmax(logits_c.float() / t, -1)
    if logits_u is None:
        return p
    return (1 - h[:, None]) * p + h[:, None] * torch.softmax(logits_u.float() / t, -1)


def pick(p: torch.Tensor, sampling: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    """Greedy argmax, or a draw after top-k / top-p filtering."""
    if sampling.temperature == 0:
        return p.argmax(-1)
    if sampling.top_k > 0:
        kth = p.topk(min(sampling.top_k, p.shape[-1]), -1).values[:, -1:]
        p = torch.where(p >= kth, p, 0.0)
    if sampling.top_p < 1.0:
        sorted_p, order = p.sort(-1, descending=True)
        cut = sorted_p.cumsum(-1) - sorted_p >= sampling.top_p * p.sum(-1, keepdim=True)
        p = p.scatter(-1, order, sorted_p.masked_fill(cut, 0.0))
    return torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator)[:, 0]


class TransformersBaseline:
    def __init__(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        from transformers import AutoConfig, GenerationConfig

        folder = check_folder(path)
        config = AutoConfig.from_pretrained(folder)
        self.architecture = architecture_for(config)
        self.device = torch.device(device)
        self.model = self.architecture.transformers_class().from_pretrained(folder, dtype=dtype).to(self.device).eval()
        self.prompts = PromptBuilder(folder, self.architecture.image_token_id(config))
        self.stop_ids = self.prompts.stop_ids(GenerationConfig.from_pretrained(folder).eos_token_id)
        self.pad_id = self.prompts.tokenizer.pad_token_id or 0

    def _stops(self, sampling: SamplingParams) -> set[int]:
        return set(sampling.stop_token_ids) | (set() if sampling.ignore_eos else set(self.stop_ids))

    def _check(self, request: Request) -> float:
        if request.sampling.mode != "mix":
            raise ValueError("the baseline implements mode='mix' only")
        return float(request.h)

    @torch.inference_mode()
    def generate(self, requests: SequenceABC[Request]) -> list[Completion]:
        """Two forwards per token per response, each path with its own cache."""
        return [self._one(i, r) for i, r in enumerate(requests)]

    def _one(self, index: int, request: Request) -> Completion:
        h = self._check(request)
        prompt = self.prompts.build(request.prompt, request.image, request.context)
        generator = torch.Generator().manual_seed(request.seed)
        h_t = torch.tensor([h], device=self.device)
        pixels = prompt.pixel_values.to(self.device, self.model.dtype) if prompt.pixel_values is not None else None
        cond_in = dict(input_ids=torch.tensor([prompt.cond_ids], device=self.device))
        if pixels is not None:
            cond_in["pixel_values"] = pixels
        uncond_in = dict(input_ids=torch.tensor([prompt.uncond_ids], device=self.device)) if h > 0 else None
        stops, tokens, conds, logprobs, reason = self._stops(request.sampling), [], [], [], "length"
        for _ in range(request.max_new_tokens):
            out_c = self.model(**cond_in, use_cache=True, logits_to_keep=1)
            logits_c = out_c.logits[:, -1]
            logits_u = None
            if uncond_in is not None:
                out_u = self.model(**uncond_in, use_cache=True, logits_to_keep=1)
                logits_u = out_u.logits[:, -1]
            p = mixed_probs(logits_c, logits_u, h_t, request.sampling.temperature)
            token = pick(p, request.sampling, generator)
            tokens.append(int(token))
            conds.append(float(torch.log_softmax(logits_c.float(), -1)[0, token]))
            logprobs.append(float(torch.log(p[0, token])))
            if tokens[-1] in stops:
                reason = "stop"
                break
            step = token.view(1, 1)
            cond_in = dict(input_ids=step, past_key_values=out_c.past_key_values)
            if uncond_in is not None:
                uncond_in = dict(input_ids=step, past_key_values=out_u.past_key_values)
        return Completion(request.request_id or str(index), request.prompt, tokens, self.prompts.decode(tokens),
                          h, reason, conds, logprobs, seed=request.seed, image_hash=prompt.image_hash,
                          prompt_token_ids=list(prompt.cond_ids))

    @torch.inference_mode()
    def generate_batched(self, requests: SequenceABC[Request], batch_size: int = 16) -> list[Completion]:
        """One forward per token over both paths of up to ``batch_size`` responses."""
        out: list[Completion] = []
        for start in range(0, len(requests), batch_size):
            out.extend(self._batch(list(requests[start:start + batch_size]), start))
        return out

    def _batch(self, requests: list[Request], offset: int) -> list[Completion]:
        hs = [self._check(r) for r in requests]
        prompts = [self.prompts.build(r.prompt, r.image, r.context) for r in requests]
        rows, owner, pixels = [], [], []
        for i, (prompt, h) in enumerate(zip(prompts, hs)):
            rows.append(prompt.cond_ids)
            owner.append((i, "c"))
            if prompt.pixel_values is not None:
                pixels.append(prompt.pixel_values)
            if h > 0:
                rows.append(prompt.uncond_ids)
                owner.append((i, "u"))
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        inputs = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        if pixels:
            inputs["pixel_values"] = torch.cat(pixels).to(self.device, self.model.dtype)
        cond_row = {i: r for r, (i, path) in enumerate(owner) if path == "c"}
        uncond_row = {i: r for r, (i, path) in enumerate(owner) if path == "u"}
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        results = [([], [], []) for _ in requests]
        reasons: list[str | None] = [None] * len(requests)
        positions = inputs["position_ids"][:, -1]
        for _ in range(max(r.max_new_tokens for r in requests)):
            logits = self.model(**inputs, use_cache=True, logits_to_keep=1)
            last = logits.logits[:, -1]
            next_tokens = torch.full((len(rows),), self.pad_id, device=self.device)
            for i, request in enumerate(requests):
                if reasons[i] is not None:
                    continue
                l_u = last[uncond_row[i]][None] if i in uncond_row else None
                p = mixed_probs(last[cond_row[i]][None], l_u, torch.tensor([hs[i]], device=self.device),
                                request.sampling.temperature)
                token = pick(p, request.sampling, generators[i])
                tokens, conds, logprobs = results[i]
                tokens.append(int(token))
                conds.append(float(torch.log_softmax(last[cond_row[i]].float(), -1)[token]))
                logprobs.append(float(torch.log(p[0, token])))
                if tokens[-1] in self._stops(request.sampling):
                    reasons[i] = "stop"
                elif len(tokens) >= request.max_new_tokens:
                    reasons[i] = "length"
                next_tokens[cond_row[i]] = token
                if i in uncond_row:
                    next_tokens[uncond_row[i]] = token
            if all(reason is not None for reason in reasons):
                break
            positions = positions + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            inputs = dict(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                          past_key_values=logits.past_key_values)
        return [Completion(r.request_id or str(offset + i), r.prompt, results[i][0],
                           self.prompts.decode(results[i][0]), hs[i], reasons[i] or "length", results[i][1],
                           results[i][2], seed=r.seed, image_hash=prompts[i].image_hash,
                           prompt_token_ids=list(prompts[i].cond_ids)) for i, r in enumerate(requests)]

    def generate_pairs(self, images, prompt: str, *, h_chosen="fixed:0", h_rejected="gaussian:0.5,0.15",
                       sampling: SamplingParams | None = None, max_new_tokens: int = 256, seed: int = 0,
                       batched: bool = False, batch_size: int = 16) -> list[Pair]:
        """Same pairing as ``Engine.generate_pairs`` (same seeds and h draws)."""
        plan = build_pair_requests(images, prompt, h_chosen, h_rejected, sampling or SamplingParams(),
                                   max_new_tokens, seed)
        completions = (self.generate_batched(plan.requests, batch_size) if batched
                       else self.generate(plan.requests))
        return assemble_pairs(plan, completions)
