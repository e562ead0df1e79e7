"""Philox-4x32-10 in PyTorch, bit-identical to Triton's ``tl.randint4x``.

The sampling kernels draw their noise with ``tl.randint4x(seed, offset)``: one Philox call
gives four 32-bit words, used for four consecutive tokens; the 64-bit offset packs
(step, token index // 4). Reproducing that stream here lets the PyTorch reference
(and so the CPU path) pick the very same tokens as the kernel for the same seeds: results
do not depend on the device. uint32 arithmetic is emulated in int64.
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
    """High and low 32 bits of the 64-bit product of uint32 values (``a`` a constant).

    The product may exceed 2**63: int64 multiplication wraps, which keeps the exact low 64
    bits, and the masks recover both halves (the shift is arithmetic, the mask drops the sign).
    """
    product = b * a
    return (product >> 32) & _MASK32, product & _MASK32


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
