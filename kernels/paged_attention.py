"""Paged KV-cache attention for the engine: store K/V, decode attention, prefill attention.

Cache layout (per layer): ``k_cache, v_cache [num_blocks, block_size, num_kv_heads, head_dim]``;
``slot = block_id * block_size + offset_in_block``. Backends: ``"torch"`` is the fp32 PyTorch
reference (``paged_attention_ref``; its decode and prefill through ``paged_attention_torch``, equal to it to fp32 rounding), ``"triton"`` our kernels (``paged_attention_triton``; CPU
tensors need ``TRITON_INTERPRET=1``), ``"auto"`` picks flash-attn's paged API when it is
installed and fits, else Triton on CUDA, else the reference.

Two ways in: the checked functions below (``store_kv``, ``paged_decode_attention``,
``paged_prefill_attention``) validate every call and choose the backend each time; a hot loop
(the engine runs them in every layer of every step) calls ``paged_attention_ops(...)`` once
and then the returned functions, which check nothing. Checks read only shapes and dtypes on
CUDA, so calls stay free of host syncs (CUDA-graph friendly); on the CPU the block tables and
lengths are checked too. The ``"torch"`` backend's decode and prefill are ``paged_attention_torch``
(decode sums the values from the cache in place, prefill runs torch's SDPA per sequence; both
equal the reference to fp32 rounding).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from judgefree.kernels._backend import BACKENDS, resolve_backend
from judgefree.kernels.paged_attention_ref import store_kv_ref
from judgefree.kernels.paged_attention_torch import paged_decode_attention_torch, paged_prefill_attention_torch

__all__ = ["store_kv", "paged_decode_attention", "paged_prefill_attention", "paged_attention_ops",
           "PagedAttentionOps", "BACKENDS"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INDEX_DTYPES = (torch.int32, torch.int64)
_FLASH_BLOCK_MULTIPLE = 256  # flash-attn 2.x pages KV only in blocks of a multiple of 256 tokens


class PagedAttentionOps(NamedTuple):
    """Unchecked implementations of one backend, with the checked functions' signatures:
    ``store_kv(k, v, k_cache, v_cache, slot_mapping)``,
    ``decode(q, k_cache, v_cache, block_tables, context_lens, scale)``,
    ``prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale)``."""

    name: str
    store_kv: Callable[..., None]
    decode: Callable[..., torch.Tensor]
    prefill: Callable[..., torch.Tensor]


# -- backends -----------------------------------------------------------------------------

@functools.cache
def _flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _flash_fits(backend: str, device: torch.device, dtype: torch.dtype, block_size: int, head_dim: int) -> bool:
    return (backend == "auto" and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            and block_size % _FLASH_BLOCK_MULTIPLE == 0 and head_dim <= 256 and _flash_attn_installed())


def _flash_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    from flash_attn import flash_attn_with_kvcache

    out = flash_attn_with_kvcache(q.unsqueeze(1), k_cache, v_cache, cache_seqlens=context_lens.int(),
                                  block_table=block_tables.int(), softmax_scale=scale, causal=True)
    return out.squeeze(1)


def _flash_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale):
    from flash_attn import flash_attn_varlen_func

    if block_tables.shape[0] == 0:
        return torch.empty_like(q)
    lens = context_lens.int()
    cu_seqlens_k = torch.nn.functional.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
    max_q, max_k = int(cu_seqlens_q.diff().max()), int(lens.max())  # host ints: prefill is not graph-captured
    return flash_attn_varlen_func(q, k_cache, v_cache, cu_seqlens_q.int(), cu_seqlens_k, max_q, max_k,
                                  softmax_scale=scale, causal=True, block_table=block_tables.int())


def _triton_ops(name: str) -> PagedAttentionOps:
    from judgefree.kernels.paged_attention_triton import (
        paged_decode_attention_triton,
        paged_prefill_attention_triton,
        store_kv_triton,
    )

    return PagedAttentionOps(name, store_kv_triton, paged_decode_attention_triton, paged_prefill_attention_triton)


# The "torch" backend: the reference's store_kv; decode (values read in place) and prefill (SDPA
# per sequence) from paged_attention_torch, equal to the reference to fp32 rounding and cheaper.
_REFERENCE = PagedAttentionOps("torch", store_kv_ref, paged_decode_attention_torch, paged_prefill_attention_torch)


def paged_attention_ops(backend: str, k_cache: torch.Tensor) -> PagedAttentionOps:
    """The implementations ``backend`` resolves to for caches like ``k_cache`` (choose once,
    call many times; see the module docstring)."""
    if resolve_backend(backend, k_cache) == "torch":
        return _REFERENCE
    if _flash_fits(backend, k_cache.device, k_cache.dtype, k_cache.shape[1], k_cache.shape[3]):
        # flash-attn writes nothing itself here: the cache is stored by our kernel first
        return PagedAttentionOps("flash-attn", _triton_ops("triton").store_kv, _flash_decode, _flash_prefill)
    return _triton_ops("triton")


# -- checks (messages are built only when a check fails) --------------------------------------

def _check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    shape = tuple(k_cache.shape)
    if k_cache.dim() != 4:
        raise ValueError(f"k_cache must be [num_blocks, block_size, kv_heads, head_dim], got {shape}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache shape {tuple(v_cache.shape)} != k_cache shape {shape}")
    if k_cache.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"k_cache dtype must be fp16/bf16/fp32, got {k_cache.dtype}")
    if v_cache.dtype != k_cache.dtype:
        raise ValueError(f"v_cache dtype {v_cache.dtype} != k_cache dtype {k_cache.dtype}")
    if v_cache.device != k_cache.device:
        raise ValueError("k_cache and v_cache must be on the same device")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("k_cache and v_cache must be contiguous in head_dim")


def _check_query(q: torch.Tensor, k_cache: torch.Tensor) -> None:
    if q.dim() != 3:
        raise ValueError(f"q must be 3-D [tokens, q_heads, head_dim], got shape {tuple(q.shape)}")
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    if q.dtype != k_cache.dtype:
        raise ValueError(f"q dtype {q.dtype} != k_cache dtype {k_cache.dtype}")
    if q.device != k_cache.device:
        raise ValueError(f"q is on {q.device} but k_cache on {k_cache.device}")
    if q.shape[2] != k_cache.shape[3]:
        raise ValueError(f"q head_dim {q.shape[2]} != k_cache head_dim {k_cache.shape[3]}")
    if heads % kv_heads:
        raise ValueError(f"q heads ({heads}) must be a multiple of kv heads ({kv_heads})")


def _check_index(tensor: torch.Tensor, name: str, shape: tuple[int, ...], device: torch.device) -> None:
    if tensor.dtype not in _INDEX_DTYPES:
        raise ValueError(f"{name} must be int32 or int64, got {tensor.dtype}")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but the cache on {device}")


def _check_tables(block_tables: torch.Tensor, context_lens: torch.Tensor, k_cache: torch.Tensor, batch: int) -> None:
    """Shapes always; contents only on the CPU (on CUDA reading them costs a host sync)."""
    if block_tables.dim() != 2:
        raise ValueError(f"block_tables must be 2-D [B, max_blocks_per_seq], got {tuple(block_tables.shape)}")
    width = block_tables.shape[1]
    _check_index(block_tables, "block_tables", (batch, width), k_cache.device)
    _check_index(context_lens, "context_lens", (batch,), k_cache.device)
    if k_cache.is_cuda:
        return
    num_blocks, block_size = k_cache.shape[0], k_cache.shape[1]
    if not bool((context_lens >= 0).all()):
        raise ValueError("context_lens must be >= 0")
    capacity = width * block_size
    if not bool((context_lens <= capacity).all()):
        raise ValueError(f"context_lens exceed the block tables' capacity ({capacity} tokens)")
    ids = block_tables[torch.arange(width) * block_size < context_lens[:, None]]
    if not bool(((ids >= 0) & (ids < num_blocks)).all()):
        raise ValueError(f"block_tables entries in use must lie in [0, {num_blocks})")


def _check_prefill_rows(q: torch.Tensor, cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor) -> None:
    """Row offsets against the queries and the lengths (CPU only: they are read on the host)."""
    if q.is_cuda:
        return
    new_tokens = cu_seqlens_q.diff()
    total = int(cu_seqlens_q[-1])
    if int(cu_seqlens_q[0]) != 0 or not bool((new_tokens >= 0).all()):
        raise ValueError("cu_seqlens_q must start at 0 and not decrease")
    if total != q.shape[0]:
        raise ValueError(f"cu_seqlens_q[-1] ({total}) must equal q's token count ({q.shape[0]})")
    if not bool((new_tokens <= context_lens).all()):
        raise ValueError("context_lens must include each sequence's new tokens (cu_seqlens_q[i+1] - cu_seqlens_q[i])")


def _resolve_scale(scale: float | None, head_dim: int) -> float:
    if scale is None:
        return head_dim**-0.5
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    return float(scale)


# -- the checked API ----------------------------------------------------------------------

def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    backend: str = "auto",
) -> None:
    """Write ``k, v [N, kv_heads, head_dim]`` into the paged caches in place at
    ``slot_mapping`` (int [N]; -1 skips the row, e.g. padding)."""
    _check_cache(k_cache, v_cache)
    expected = (k.shape[0],) + tuple(k_cache.shape[2:])
    if k.dim() != 3 or tuple(k.shape) != expected:
        raise ValueError(f"k must have shape {expected}, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    if not k.device == k_cache.device == v.device:
        raise ValueError("k, v and the caches must be on the same device")
    _check_index(slot_mapping, "slot_mapping", (k.shape[0],), k_cache.device)
    if not k_cache.is_cuda:
        slots = k_cache.shape[0] * k_cache.shape[1]
        if not bool(((slot_mapping >= -1) & (slot_mapping < slots)).all()):
            raise ValueError(f"slot_mapping entries must be -1 or lie in [0, {slots})")
    paged_attention_ops(backend, k_cache).store_kv(k, v, k_cache, v_cache, slot_mapping)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention of one new token per sequence (``q [B, q_heads, D]``, its K/V already stored)
    over ``context_lens[b]`` cached tokens; returns ``[B, q_heads, D]`` in q.dtype (zeros for a
    context of length 0, e.g. a padded batch row)."""
    _check_cache(k_cache, v_cache)
    _check_query(q, k_cache)
    _check_tables(block_tables, context_lens, k_cache, batch=q.shape[0])
    scale = _resolve_scale(scale, q.shape[2])
    return paged_attention_ops(backend, k_cache).decode(q, k_cache, v_cache, block_tables, context_lens, scale)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal attention of packed new tokens ``q [T, q_heads, D]`` (sequence i owns rows
    ``cu_seqlens_q[i]:cu_seqlens_q[i+1]``, the last positions of its ``context_lens[i]``) over
    the cached prefix and themselves; returns ``[T, q_heads, D]`` in q.dtype."""
    _check_cache(k_cache, v_cache)
    _check_query(q, k_cache)
    if block_tables.dim() != 2:
        raise ValueError(f"block_tables must be 2-D [B, max_blocks_per_seq], got {tuple(block_tables.shape)}")
    _check_tables(block_tables, context_lens, k_cache, batch=block_tables.shape[0])
    _check_index(cu_seqlens_q, "cu_seqlens_q", (block_tables.shape[0] + 1,), q.device)
    _check_prefill_rows(q, cu_seqlens_q, context_lens)
    scale = _resolve_scale(scale, q.shape[2])
    return paged_attention_ops(backend, k_cache).prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q,
                                                         context_lens, scale)
