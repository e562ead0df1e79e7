"""Runs one scheduled batch: builds the packed inputs and attention metadata, runs the
vision tower for images still to prefill, the language model over all rows (conditional and
unconditional together), the head on each sequence's last row, then ``mix_sample``."""

from __future__ import annotations

import torch
from judgefree.engine.config import EngineConfig
from judgefree.engine.kv_cache import allocate_kv_cache
from judgefree.engine.layers import AttentionMetadata
from judgefree.engine.scheduler import Batch
from judgefree.engine.sequence import SequenceGroup
from judgefree.kernels.mix_sample import mix_sample

def philox_key(seed: int) -> int:
    """A request seed (any Python int) as the signed 64-bit Philox key mix_sample takes."""
    return (seed + 2**63) % 2**64 - 2**63


class ModelRunner:
    def __init__(self, model: torch.nn.Module, kind: str, config: EngineConfig, max_model_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.kind, self.config = model, kind, config
        self.language_model = model.language_model if kind == "llava" else model
        self.device, self.dtype = device, dtype
        self.block_size = config.block_size
        self.max_blocks_per_seq = -(-max_model_len // config.block_size)
        self.kv_cache, self.num_blocks = allocate_kv_cache(
            self.language_model, config, max_model_len, device, dtype)
        self.graphs = None
        if device.type == "cuda" and not config.enforce_eager:
            from judgefree.engine.cuda_graph import DecodeGraphs

            self.graphs = DecodeGraphs(self.language_model, max_rows=2 * config.max_num_seqs,
                                       max_blocks=self.max_blocks_per_seq, device=device,
                                       backend=config.attention_backend)

    # -- inputs -----------------------------------------------------------------------------
    def _tensor(self, values, dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device="cpu").to(self.device, non_blocking=True)

    def _block_tables(self, seqs) -> torch.Tensor:
        width = max(len(seq.block_table) for seq in seqs)
        rows = [seq.block_table + [0] * (width - len(seq.block_table)) for seq in seqs]
        return self._tensor(rows, torch.int32)

    def _slot(self, seq, position: int) -> int:
        if position < seq.num_computed:
            return -1  # its K/V are cached already (a shared prompt's last token, recomputed)
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def _prepare(self, batch: Batch):
        ids, positions, slots, cu, lens, rows_seqs = [], [], [], [0], [], []
        image_rows, image_values = [], []
        last_row = {}
        for group in batch.groups:
            for seq in group.seqs:
                if not seq.num_scheduled:
                    continue
                start = seq.compute_start
                end = start + seq.num_scheduled
                row0 = len(ids)
                ids.extend(seq.tokens(start, end))
                positions.extend(range(start, end))
                slots.extend(self._slot(seq, p) for p in range(start, end))
                cu.append(len(ids))
                lens.append(end)
                rows_seqs.append(seq)
                last_row[id(seq)] = len(ids) - 1
                if batch.is_prefill and seq.touches_image(start, end):
                    lo, hi = max(start, seq.image_span[0]), min(end, seq.image_span[1])
                    features = group.image_features
                    image_rows.extend(range(row0 + lo - start, row0 + hi - start))
                    image_values.append(features[lo - seq.image_span[0]:hi - seq.image_span[0]])
        meta = AttentionMetadata(
            is_prefill=batch.is_prefill, slot_mapping=self._tensor(slots, torch.int64),
            block_tables=self._block_tables(rows_seqs), context_lens=self._tensor(lens, torch.int32),
            cu_seqlens_q=self._tensor(cu, torch.int32) if batch.is_prefill else None,
            backend=self.config.attention_backend)
        input_ids = self._tensor(ids, torch.int64)
        images = (self._tensor(image_rows, torch.int64), torch.cat(image_values)) if image_rows else None
        return input_ids, self._tensor(positions, torch.int64), meta, images, last_row

    def _encode_images(self, batch: Batch, chunk: int = 32) -> None:
        """Run the vision tower once for every image whose tokens this step prefills."""
        pending = []
        for group in batch.groups:
            cond = group.cond
            if (group.image_features is None and cond.num_scheduled
                    and cond.touches_image(cond.compute_start, cond.compute_start + cond.num_scheduled)):
                pending.append(group)
        for i in range(0, len(pending), chunk):
            part = pending[i:i + chunk]
            pixels = torch.cat([g.pixel_values for g in part]).to(self.device, self.dtype)
            for group, features in zip(part, self.model.encode_images(pixels).to(self.dtype)):
                group.image_features = features

    # -- forward + sampling -----------------------------------------------------------------
    @torch.inference_mode()
    def run(self, batch: Batch) -> tuple[list[int], list[float], list[float]]:
        """Tokens, logprobs and cond_logprobs for ``batch.sampling`` (in that order)."""
        if batch.copies:  # copy-on-write before anything writes the copies (one gather + scatter)
            src, dst = (self._tensor(ids, torch.int64) for ids in zip(*batch.copies))
            self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]
        if batch.is_prefill and self.kind == "llava":
            self._encode_images(batch)
        input_ids, positions, meta, images, last_row = self._prepare(batch)
        if not batch.is_prefill and self.graphs is not None and self.graphs.fits(len(batch.seqs), meta):
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
        if not batch.sampling:
            return [], [], []
        return self._sample(batch.sampling, hidden, last_row)

    def _sample(self, groups: list[SequenceGroup], hidden: torch.Tensor, last_row: dict):
        results: list[tuple[int, float, float] | None] = [None] * len(groups)
        partitions: dict[tuple, list[int]] = {}
        for i, group in enumerate(groups):
            partitions.setdefault((group.sampling.mode, group.sampling.beta), []).append(i)
        for (mode, beta), members in partitions.items():
            part = [groups[i] for i in members]
            cond_rows = [last_row[id(g.cond)] for g in part]
            has_uncond = any(g.uncond is not None for g in part)
            # Rows without an unconditional path get their own conditional row there: a
            # finite placeholder that mix_sample never reads (their weight is 0).
            uncond_rows = [last_row[id(g.uncond if g.uncond is not None else g.cond)] for g in part]
            rows = cond_rows + (uncond_rows if has_uncond else [])
            # In the model's dtype: mix_sample reads bf16 and accumulates in fp32 itself.
            logits = self.language_model.compute_logits(hidden[self._tensor(rows, torch.int64)])
            logits_c, logits_u = logits[: len(part)], (logits[len(part):] if has_uncond else None)
            params = [g.sampling for g in part]
            out = mix_sample(
                logits_c, logits_u,
                self._tensor([g.h if g.uncond is not None else 0.0 for g in part], torch.float32),
                temperature=self._tensor([p.temperature for p in params], torch.float32),
                top_k=self._tensor([p.top_k for p in params], torch.int32),
                top_p=self._tensor([p.top_p for p in params], torch.float32),
                seeds=self._tensor([philox_key(g.seed) for g in part], torch.int64),
                step=self._tensor([g.step for g in part], torch.int64), mode=mode,
                alpha=self._tensor([p.alpha if g.uncond is not None else 0.0 for p, g in zip(params, part)],
                                   torch.float32),
                beta=beta, backend=self.config.sampling_backend)
            for i, token, logprob, cond in zip(members, out.tokens.tolist(), out.logprobs.tolist(),
                                               out.cond_logprobs.tolist()):
                results[i] = (token, logprob, cond)
        tokens, logprobs, conds = zip(*results)
        return list(tokens), list(logprobs), list(conds)
