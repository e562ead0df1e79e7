"""Philox-4x32-10 in PyTorch, bit-identical to Triton's ``tl.randint4x``.

The sampling kernels draw their noise with ``tl.randint4x(seed, offset)``: one Philox call
gives four 32-bit words, used for four consecutive tokens; the 64-bit offset packs
(step, token index // 4). Reproducing that stream here lets the PyTorch reference
(and so the CPU path) pick the very same tokens as the kernel for the same seeds: results
do not depend on the device. On the CPU the rounds run in numpy's uint64; elsewhere uint32
arithmetic is emulated in torch's int64.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
N_ROUNDS = 10


def philox_uint32(seeds: torch.Tensor, counter_lo: torch.Tensor, counter_hi: torch.Tensor) -> torch.Tensor:
    """The four output words of Philox-4x32-10 as Triton's ``randint4x(seed, offset)``
    returns them, stacked on a new last dimension.

    ``seeds`` int64 (the 64-bit key), counters broadcast against it; result int64 in
    [0, 2**32).
    """
    if seeds.device.type == "cpu" and counter_lo.device.type == "cpu" and counter_hi.device.type == "cpu":
        return _philox_numpy(seeds, counter_lo, counter_hi)
    return _philox_torch(seeds, counter_lo, counter_hi)


def _philox_numpy(seeds: torch.Tensor, counter_lo: torch.Tensor, counter_hi: torch.Tensor) -> torch.Tensor:
    """CPU: numpy's native uint64, ~20x faster than torch's int64 emulation (the engine draws
    [rows, vocab] noise every sampled step). A 32x32-bit product fits uint64 exactly, so its
    high word is a logical shift and needs no mask; keys stay [rows, 1], not broadcast."""
    mask, shift = np.uint64(_MASK32), np.uint64(32)
    key = seeds.to(torch.int64).numpy().view(np.uint64)
    k0, k1 = key & mask, key >> shift
    c0 = counter_lo.to(torch.int64).numpy().view(np.uint64) & mask
    c1 = counter_hi.to(torch.int64).numpy().view(np.uint64) & mask
    shape = np.broadcast_shapes(c0.shape, c1.shape, k0.shape)
    c0, c1 = np.broadcast_to(c0, shape), np.broadcast_to(c1, shape)
    c2 = c3 = np.zeros(shape, np.uint64)
    round_a, round_b = np.uint64(_ROUND_A), np.uint64(_ROUND_B)
    key_a, key_b = np.uint64(_KEY_A), np.uint64(_KEY_B)
    for _ in range(N_ROUNDS):
        prod_b, prod_a = c2 * round_b, c0 * round_a
        new0 = prod_b >> shift
        new0 ^= c1
        new0 ^= k0
        new2 = prod_a >> shift
        new2 ^= c3
        new2 ^= k1
        prod_b &= mask
        prod_a &= mask
        c0, c1, c2, c3 = new0, prod_b, new2, prod_a
        k0 = (k0 + key_a) & mask
        k1 = (k1 + key_b) & mask
    return torch.from_numpy(np.stack((c0, c1, c2, c3), axis=-1).view(np.int64))


def _philox_torch(seeds: torch.Tensor, counter_lo: torch.Tensor, counter_hi: torch.Tensor) -> torch.Tensor:
    """Any device: uint32 arithmetic emulated in int64. The product may exceed 2**63: int64
    multiplication wraps, which keeps the exact low 64 bits, and the masks recover both halves
    (the shift is arithmetic, the mask drops the sign)."""
    k0 = seeds & _MASK32
    k1 = (seeds >> 32) & _MASK32
    c0 = counter_lo.to(torch.int64) & _MASK32
    c1 = counter_hi.to(torch.int64) & _MASK32
    shape = torch.broadcast_shapes(c0.shape, c1.shape, k0.shape)
    c0, c1 = c0.expand(shape), c1.expand(shape)
    c2 = c3 = torch.zeros(shape, dtype=torch.int64, device=seeds.device)
    for _ in range(N_ROUNDS):
        prod_b, prod_a = c2 * _ROUND_B, c0 * _ROUND_A
        new0 = (prod_b >> 32).bitwise_and_(_MASK32).bitwise_xor_(c1).bitwise_xor_(k0)
        new2 = (prod_a >> 32).bitwise_and_(_MASK32).bitwise_xor_(c3).bitwise_xor_(k1)
        c0, c1, c2, c3 = new0, prod_b.bitwise_and_(_MASK32), new2, prod_a.bitwise_and_(_MASK32)
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return torch.stack((c0, c1, c2, c3), dim=-1)


def uniform_noise(seeds: torch.Tensor, step: int | torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, V] float32 uniforms in (0, 1), the same numbers the sampling kernels draw.

    Token i of row b at decode step s (an int, or one step per row) takes word i % 4 of
    Philox at counter (i // 4, s) under key seeds[b]; the top 24 bits map to the open
    interval so that -log(u) is finite and positive.
    """
    quads = torch.arange((vocab_size + 3) // 4, dtype=torch.int64, device=seeds.device)
    steps = torch.as_tensor(step, dtype=torch.int64, device=seeds.device)
    if steps.dim() == 1:
        steps = steps[:, None]
    words = philox_uint32(seeds.to(torch.int64)[:, None], quads[None, :], steps)
    bits = words.reshape(seeds.shape[0], -1)[:, :vocab_size]
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


CHUNK_PICK_COUNTER = 0xFFFFFFFF  # counter word 0 of the chunk draw: above every token quad (i // 4 < 2**30)


def chunk_uniform(seeds: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """[B] float32 uniforms in (0, 1): the draw that picks a row's vocabulary chunk.

    Word 0 of Philox at counter (0xFFFFFFFF, step) under key seeds[b], mapped like the
    token noise; no token uses that counter, so it is independent of every token's noise.
    """
    steps = torch.as_tensor(step, dtype=torch.int64, device=seeds.device).expand(seeds.shape[0])
    lo = torch.full_like(steps, CHUNK_PICK_COUNTER)
    bits = philox_uint32(seeds.to(torch.int64), lo, steps)[:, 0]
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)
