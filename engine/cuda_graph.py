"""CUDA graphs for decode steps (CUDA only; the CPU path never builds them).

A decode step is dozens of small kernels per layer: replaying a captured graph removes their
launch cost. Graphs are captured once per batch-size bucket over static input buffers; a
step pads its rows up to the bucket (padding rows write nowhere and attend to one slot of
block 0, so they cannot disturb real rows) and copies its inputs in before the replay.
"""

from __future__ import annotations

import torch
from judgefree.engine.layers import AttentionMetadata
from judgefree.kernels.paged_attention import PagedAttentionOps


def bucket_sizes(max_rows: int) -> list[int]:
    sizes = [s for s in (1, 2, 4, 8) if s < max_rows] + list(range(16, max_rows, 16))
    return sorted(set(sizes + [max_rows]))


class DecodeGraphs:
    def __init__(self, language_model, *, max_rows: int, max_blocks: int, device: torch.device,
                 ops: PagedAttentionOps) -> None:
        self.model = language_model
        self.max_rows, self.max_blocks = max_rows, max_blocks
        hidden = language_model.config.hidden_size
        self.input_ids = torch.zeros(max_rows, dtype=torch.int64, device=device)
        self.positions = torch.zeros(max_rows, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((max_rows,), -1, dtype=torch.int64, device=device)
        self.block_tables = torch.zeros(max_rows, max_blocks, dtype=torch.int32, device=device)
        self.context_lens = torch.ones(max_rows, dtype=torch.int32, device=device)
        dtype = language_model.model.embed_tokens.weight.dtype
        self.output = torch.zeros(max_rows, hidden, dtype=dtype, device=device)
        self.ops = ops
        self.sizes = bucket_sizes(max_rows)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._capture()

    def _forward(self, rows: int) -> None:
        meta = AttentionMetadata(False, self.slot_mapping[:rows], self.block_tables[:rows],
                                 self.context_lens[:rows], None, self.ops)
        embeds = self.model.embed(self.input_ids[:rows])
        self.output[:rows] = self.model(embeds, self.positions[:rows], meta)

    @torch.inference_mode()
    def _capture(self) -> None:
        pool = None
        for rows in reversed(self.sizes):  # largest first, so smaller graphs reuse its pool
            self._forward(rows)  # warm-up (Triton compiles, allocator settles)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool):
                self._forward(rows)
            pool = graph.pool() if pool is None else pool
            self.graphs[rows] = graph
        torch.cuda.synchronize()

    def fits(self, rows: int, meta: AttentionMetadata) -> bool:
        return rows <= self.max_rows and meta.block_tables.shape[1] <= self.max_blocks

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        rows = input_ids.shape[0]
        size = next(s for s in self.sizes if s >= rows)
        width = meta.block_tables.shape[1]
        self.input_ids[:rows] = input_ids
        self.positions[:rows] = positions
        self.slot_mapping[:size].fill_(-1)
        self.slot_mapping[:rows] = meta.slot_mapping
        self.context_lens[:size].fill_(1)
        self.context_lens[:rows] = meta.context_lens
        self.block_tables[:size].zero_()
        self.block_tables[:rows, :width] = meta.block_tables
        self.graphs[size].replay()
        return self.output[:rows]
