"""Building blocks of the language model's hot path: RMSNorm, rotary embedding, paged
attention (the unchecked kernels of ``judgefree.kernels.paged_attention``, chosen once by the
model runner), and the batch metadata it reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from judgefree.kernels.paged_attention import PagedAttentionOps
from torch import nn


@dataclass(slots=True)
class AttentionMetadata:
    """Where each row's K/V go and what each sequence attends to.

    ``slot_mapping`` [T] cache slot per token row (-1: already cached, do not write);
    ``block_tables`` [B, max_blocks] int32; ``context_lens`` [B] int32 (incl. new tokens);
    ``cu_seqlens_q`` [B+1] int32 row offsets per sequence (prefill only); ``ops`` the paged
    attention implementations to call (arguments are built by the runner, so unchecked).
    """

    is_prefill: bool
    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor | None
    ops: PagedAttentionOps


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 like transformers' LlamaRMSNorm; with ``residual`` it first
    adds it (the fused add + norm of a pre-norm block) and returns the new residual too."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x


class RotaryEmbedding(nn.Module):
    """cos/sin tables for all positions, from transformers' own RoPE initialisation (so
    every rope_type it knows, llama3 scaling included, matches it exactly)."""

    def __init__(self, config, max_positions: int) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        # transformers >= 5 names it rope_parameters["rope_type"], 4.x rope_scaling["rope_type" or "type"]
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type in ("dynamic", "longrope"):
            raise ValueError(f"rope_type {rope_type!r} depends on the sequence length; not supported")
        reference = LlamaRotaryEmbedding(config)
        inv_freq = reference.inv_freq.float()
        positions = torch.arange(max_positions, dtype=torch.float32, device=inv_freq.device)
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = reference.attention_scaling
        self.register_buffer("cos", emb.cos() * scale, persistent=False)
        self.register_buffer("sin", emb.sin() * scale, persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """Rotate q [T, Hq, D] and k [T, Hkv, D] by their positions (rotate-half layout)."""
        cos = self.cos[positions].to(q.dtype)[:, None, :]
        sin = self.sin[positions].to(q.dtype)[:, None, :]
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PagedAttention(nn.Module):
    """Stores the new K/V in this layer's paged cache, then attends through the block
    tables (prefill: packed causal rows; decode: one row per sequence)."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.scale = num_heads, num_kv_heads, head_dim, scale
        self.k_cache = self.v_cache = torch.empty(0)  # set by the model runner

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        ops = meta.ops
        ops.store_kv(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        if meta.is_prefill:
            return ops.prefill(q, self.k_cache, self.v_cache, meta.block_tables, meta.cu_seqlens_q,
                               meta.context_lens, self.scale)
        return ops.decode(q, self.k_cache, self.v_cache, meta.block_tables, meta.context_lens, self.scale)
