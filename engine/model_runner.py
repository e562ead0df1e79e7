"""Runs one scheduled batch: builds the packed inputs and attention metadata, runs the
vision tower for images still to prefill, the language model over all rows (conditional and
unconditional together), the head on each path's last row, then ``mix_sample``."""

from __future__ import annotations

import torch
from judgefree.engine.config import EngineConfig
from judgefree.engine.kv_cache import allocate_kv_cache
from judgefree.engine.layers import AttentionMetadata
from judgefree.engine.response import Response, StepResult
from judgefree.engine.scheduler import Batch
from judgefree.engine.staging import HostStager, ResultFetcher
from judgefree.kernels.mix_sample import mix_sample, raise_for_flags
from judgefree.kernels.paged_attention import paged_attention_ops


def philox_key(seed: int) -> int:
    """A request seed (any Python int) as the signed 64-bit Philox key mix_sample takes."""
    return (seed + 2**63) % 2**64 - 2**63


class ModelRunner:
    """``run(batch)`` -> the step's ``StepResult``. ``model`` follows the engine's model
    interface (``language_model``; ``encode_images`` when it sees images)."""

    def __init__(self, model: torch.nn.Module, config: EngineConfig, max_model_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.config = model, config
        self.language_model = model.language_model
        self.device, self.dtype = device, dtype
        self.block_size = config.block_size
        self.max_blocks_per_seq = -(-max_model_len // config.block_size)
        self.kv_cache, self.num_blocks = allocate_kv_cache(
            self.language_model, config, max_model_len, device, dtype)
        # The attention kernels are chosen once here: the layers call them unchecked.
        self.attention_ops = paged_attention_ops(config.attention_backend, self.kv_cache[0, 0])
        # one host-to-device copy for the forward's inputs, one for the sampling parameters,
        # one device-to-host copy for the results (pinned buffers on CUDA; plain tensors on CPU)
        self.input_stager, self.sampling_stager = HostStager(device), HostStager(device)
        self.results = ResultFetcher(device)
        self.graphs = None
        if device.type == "cuda" and not config.enforce_eager:
            from judgefree.engine.cuda_graph import DecodeGraphs

            self.graphs = DecodeGraphs(self.language_model, max_rows=2 * config.max_num_seqs,
                                       max_blocks=self.max_blocks_per_seq, device=device, ops=self.attention_ops)

    # -- inputs -----------------------------------------------------------------------------
    def _tensor(self, values, dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device="cpu").to(self.device, non_blocking=True)

    @staticmethod
    def _block_table_rows(paths) -> list[list[int]]:
        width = max(len(path.block_table) for path in paths)
        return [path.block_table + [0] * (width - len(path.block_table)) for path in paths]

    def _slot(self, path, position: int) -> int:
        if position < path.num_computed:
            return -1  # its K/V are cached already (a shared prompt's last token, recomputed)
        return path.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def _prepare(self, batch: Batch):
        """Packed inputs of ``batch.paths`` (each path's ``last_row`` is set here), the
        attention metadata, and the image-token rows with their features."""
        ids, positions, slots, cu, lens = [], [], [], [0], []
        image_rows, image_values = [], []
        for response in batch.responses:
            for path in response.paths:
                if not path.num_scheduled:
                    continue
                start = path.compute_start
                end = start + path.num_scheduled
                row0 = len(ids)
                ids.extend(path.tokens(start, end))
                positions.extend(range(start, end))
                slots.extend(self._slot(path, p) for p in range(start, end))
                cu.append(len(ids))
                lens.append(end)
                path.last_row = len(ids) - 1
                if batch.is_prefill and path.touches_image(start, end):
                    lo, hi = max(start, path.image_span[0]), min(end, path.image_span[1])
                    features = response.image_features
                    image_rows.extend(range(row0 + lo - start, row0 + hi - start))
                    image_values.append(features[lo - path.image_span[0]:hi - path.image_span[0]])
        slot_mapping, block_tables, context_lens, input_ids, positions, cu_seqlens, image_rows = (
            self.input_stager.stage(
                (slots, torch.int64), (self._block_table_rows(batch.paths), torch.int32), (lens, torch.int32),
                (ids, torch.int64), (positions, torch.int64), (cu if batch.is_prefill else [], torch.int32),
                (image_rows, torch.int64)))
        meta = AttentionMetadata(
            is_prefill=batch.is_prefill, slot_mapping=slot_mapping, block_tables=block_tables,
            context_lens=context_lens, cu_seqlens_q=cu_seqlens if batch.is_prefill else None,
            ops=self.attention_ops)
        images = (image_rows, torch.cat(image_values)) if image_values else None
        return input_ids, positions, meta, images

    def _encode_images(self, batch: Batch, chunk: int = 32) -> None:
        """Run the vision tower once for every image whose tokens this step prefills."""
        pending = []
        for response in batch.responses:
            cond = response.cond
            if (response.image_features is None and cond.num_scheduled
                    and cond.touches_image(cond.compute_start, cond.compute_start + cond.num_scheduled)):
                pending.append(response)
        for i in range(0, len(pending), chunk):
            part = pending[i:i + chunk]
            pixels = torch.cat([r.pixel_values for r in part]).to(self.device, self.dtype)
            for response, features in zip(part, self.model.encode_images(pixels).to(self.dtype)):
                response.image_features = features

    # -- forward + sampling -----------------------------------------------------------------
    @torch.inference_mode()
    def run(self, batch: Batch) -> StepResult:
        """One forward over ``batch``; the tokens of ``batch.sampled`` (empty when a chunked
        prefill samples nothing this step)."""
        if batch.copies:  # copy-on-write before anything writes the copies (one gather + scatter)
            src, dst = (self._tensor(ids, torch.int64) for ids in zip(*batch.copies))
            self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]
        if batch.is_prefill and self.model.image_token_id is not None:
            self._encode_images(batch)
        input_ids, positions, meta, images = self._prepare(batch)
        if not batch.is_prefill and self.graphs is not None and self.graphs.fits(len(batch.paths), meta):
            hidden = self.graphs.run(input_ids, positions, meta)
        else:
            if images is not None:
                rows, features = images
                input_ids = input_ids.clone()
                input_ids[rows] = 0  # placeholder ids may lie outside the vocabulary
            embeds = self.language_model.embed(input_ids)
            if images is not None:
                embeds[rows] = features
            hidden = self.language_model(embeds, positions, meta)
        if not batch.sampled:
            return StepResult([], [], [])
        return self._sample(batch.sampled, hidden)

    def _sample(self, responses: list[Response], hidden: torch.Tensor) -> StepResult:
        """One ``mix_sample`` over every sampled response: mix and contrast rows alike, each
        with its own parameters. The parameters were checked when the requests were admitted
        (SamplingParams, Engine._response), so mix_sample runs unvalidated (no host syncs);
        the bad-logits flags it sets come back with the tokens, in the one result copy."""
        uses_u = [r.uncond is not None for r in responses]
        cond_rows = [r.cond.last_row for r in responses]
        # Rows without an unconditional path get their own conditional row there: a finite
        # placeholder that mix_sample never reads (their unconditional weight is 0).
        uncond_rows = [(r.uncond or r.cond).last_row for r in responses] if any(uses_u) else []
        params = [r.sampling for r in responses]
        rows, h, temperature, top_p, alpha, beta, top_k, seeds, steps = self.sampling_stager.stage(
            (cond_rows + uncond_rows, torch.int64),
            ([r.h if u else 0.0 for r, u in zip(responses, uses_u)], torch.float32),
            ([p.temperature for p in params], torch.float32),
            ([p.top_p for p in params], torch.float32),
            ([p.alpha if u else 0.0 for p, u in zip(params, uses_u)], torch.float32),
            ([p.beta for p in params], torch.float32),
            ([p.top_k for p in params], torch.int32),
            ([philox_key(r.seed) for r in responses], torch.int64),
            ([r.step for r in responses], torch.int64))
        # In the model's dtype: mix_sample reads bf16 and accumulates in fp32 itself.
        logits = self.language_model.compute_logits(hidden[rows])
        n = len(responses)
        logits_c, logits_u = logits[:n], (logits[n:] if uncond_rows else None)
        modes = [p.mode for p in params]
        out = mix_sample(
            logits_c, logits_u, h, temperature=temperature, top_k=top_k, top_p=top_p, seeds=seeds, step=steps,
            mode=modes[0] if len(set(modes)) == 1 else modes,  # one string: no per-row mode copy
            alpha=alpha, beta=beta, validate=False, backend=self.config.sampling_backend,
            has_top_p=any(p.top_p < 1 for p in params))  # known here: no sync to skip the top-p launches
        tokens, logprobs, cond_logprobs, flags = self.results.fetch(
            out.tokens, out.logprobs, out.cond_logprobs, out.flags)
        if any(flags):  # NaN / inf / all -inf logits from the model: as mix_sample would raise
            raise_for_flags(flags)
        return StepResult(tokens, logprobs, cond_logprobs)
