"""Philox-4x32-10 in PyTorch, bit-identical to Triton's ``tl.randint``.

The sampling kernels draw their noise with ``tl.randint4x(seed, offset)``: one Philox call
gives four 32-bit words, used for four consecutive tokens; the 64-bit offset packs
(step, token index // 4). Reproducing that stream here lets the PyTorch reference
(and so the CPU path) pick the very same tokens as the kernel for the same seeds: results
do not depend on the device. uint32 arithmetic is emulated in int64 with 16-bit halves.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
N_ROUNDS = 10


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of the 64-bit product of uint32 values (``a`` a constant)."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    b_hi, b_lo = b >> 16, b & 0xFFFF
    lo_part = a_lo * b_lo
    mid = a_hi * b_lo + a_lo * b_hi
    low64 = (mid << 16) + lo_part  # < 2**50: no int64 overflow
    hi = a_hi * b_hi + (low64 >> 32)
    return hi & _MASK32, low64 & _MASK32


def philox_uint32(seeds: torch.Tensor, counter_lo: torch.Tensor, counter_hi: torch.Tensor) -> torch.Tensor:
    """The four output words of Philox-4x32-10 as Triton's ``randint4x(seed, offset)``
    returns them, stacked on a new last dimension.

    ``seeds`` int64 (the 64-bit key), counters broadcast against it; result int64 in
    [0, 2**32).
    """
    k0 = seeds & _MASK32
    k1 = (seeds >> 32) & _MASK32
    c0 = counter_lo.to(torch.int64) & _MASK32
    c1 = counter_hi.to(torch.int64) & _MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    c0, c1, c2, c3, k0, k1 = torch.broadcast_tensors(c0, c1, c2, c3, k0, k1)
    for _ in range(N_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return torch.stack((c0, c1, c2, c3), dim=-1)


def uniform_noise(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """[B, V] float32 uniforms in (0, 1), the same numbers the sampling kernels draw.

    Token i of row b at decode step s takes word i % 4 of Philox at counter (i // 4, s)
    under key seeds[b]; the top 24 bits map to the open interval so that -log(u) is finite
    and positive.
    """
    quads = torch.arange((vocab_size + 3) // 4, dtype=torch.int64, device=seeds.device)
    step_t = torch.full((), step, dtype=torch.int64, device=seeds.device)
    words = philox_uint32(seeds.to(torch.int64)[:, None], quads[None, :], step_t)
    bits = words.reshape(seeds.shape[0], -1)[:, :vocab_size]
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)
