"""Philox-4x32-10 (judgefree.kernels.philox): every draw the sampling step uses must stay the
same. Checked three ways: against words the previous implementation (torch int64 emulation,
before the numpy fast path) returned on fixed inputs, against a scalar Philox written here
from the definition (Salmon et al., SC'11) that itself passes Random123's known-answer
vectors, and against Triton's own ``tl.randint4x`` (the stream the kernel draws)."""

from __future__ import annotations

import hashlib

import pytest
import torch
import triton
import triton.language as tl

from judgefree.kernels.philox import _philox_torch, philox_uint32, uniform_noise

MASK = 0xFFFFFFFF


def philox_scalar(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]:
    """Philox-4x32-10 on Python ints, straight from the definition."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
        k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
    return c0, c1, c2, c3


# Random123 (kat_vectors): philox4x32 10 rounds, (counter, key) -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

SEEDS = [0, 1, 0x7FFFFFFFFFFFFFFF, -1, -0x8000000000000000, 0x123456789ABCDEF0, 2**32 - 1, 2**32]
LO = [0, 1, 2**32 - 1, 12345, 0x243F6A88, 7, 2**31, 99]
HI = [0, 0, 2**32 - 1, 3, 0x85A308D3, 2**31 - 1, 5, 2**32 + 3]  # the last one wraps to 3
# philox_uint32(SEEDS, LO, HI) as the int64-emulation implementation returned it (commit 90cbf29)
RECORDED = [[1713891541, 3781805453, 3159862348, 2600524760], [2886210587, 3754282174, 2042657351, 2817941651],
            [248861108, 3130286849, 1654393795, 3179789912], [2776526570, 692359311, 3125475458, 4178739632],
            [535375783, 2225976270, 61410036, 2609987277], [4251962847, 1306892049, 4254536616, 2322872067],
            [2939354109, 2322272077, 1657831620, 25539305], [2392817637, 2523242726, 526362514, 283033240]]
# sha256 of uniform_noise's float32 bytes, same implementation
RECORDED_NOISE = {
    (17, 1001): "e90ede14a67c3161834b0febfcc0fbb89e1e50f001b0eeb2e31d4f136fe1e4f4",
    ((0, 1, 2, 3, 2**31), 37): "1b4b5b1488bf54715e8e7e12e91f999cd4197b45baf720d5e4503bfc55f15daf",
}


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_scalar_philox_passes_random123_known_answers(counter, key, expected):
    assert philox_scalar(counter, key) == expected


def test_known_answer_through_the_tensor_api():
    assert philox_uint32(torch.tensor([0]), torch.tensor([0]), torch.tensor([0])).tolist() == [list(KAT[0][2])]


@pytest.mark.parametrize("impl", [philox_uint32, _philox_torch], ids=["dispatch", "torch-int64"])
def test_words_equal_the_recorded_ones(impl):
    words = impl(torch.tensor(SEEDS), torch.tensor(LO), torch.tensor(HI))
    assert words.dtype == torch.int64
    assert words.tolist() == RECORDED


@pytest.mark.parametrize("steps, vocab", list(RECORDED_NOISE))
def test_uniform_noise_equals_the_recorded_bytes(steps, vocab):
    step = torch.tensor(steps) if isinstance(steps, tuple) else steps
    noise = uniform_noise(torch.tensor(SEEDS[:5]), step, vocab)
    assert noise.shape == (5, vocab) and noise.dtype == torch.float32
    assert hashlib.sha256(noise.numpy().tobytes()).hexdigest() == RECORDED_NOISE[(steps, vocab)]


def test_fresh_random_inputs_match_the_scalar_definition(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    seeds = torch.randint(-2**63, 2**63 - 1, (5, 1), generator=g, dtype=torch.int64)
    lo = torch.randint(0, 2**32, (1, 7), generator=g, dtype=torch.int64)
    hi = torch.randint(0, 2**32, (5, 1), generator=g, dtype=torch.int64)
    for impl in (philox_uint32, _philox_torch):
        words = impl(seeds, lo, hi)
        assert words.shape == (5, 7, 4)
        for b in range(5):
            key = (int(seeds[b, 0]) & MASK, (int(seeds[b, 0]) >> 32) & MASK)
            for i in range(7):
                expected = philox_scalar((int(lo[0, i]), int(hi[b, 0]), 0, 0), key)
                assert tuple(words[b, i].tolist()) == expected, (impl.__name__, b, i)


def test_numpy_path_takes_int32_and_strided_inputs():
    seeds = torch.tensor(SEEDS)[::2]
    lo = torch.tensor(LO, dtype=torch.int64)[::2].to(torch.int32).clamp(min=0)
    hi = torch.tensor(HI)[::2]
    assert torch.equal(philox_uint32(seeds, lo, hi), _philox_torch(seeds, lo.long(), hi))


@triton.jit
def _randint4x_kernel(seed_ptr, out_ptr, step_hi, N: tl.constexpr):
    seed = tl.load(seed_ptr)
    i = tl.arange(0, N)
    a, b, c, d = tl.randint4x(seed, i.to(tl.int64) | step_hi)  # the offset as mix_sample builds it
    tl.store(out_ptr + 4 * i, a.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + 4 * i + 1, b.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + 4 * i + 2, c.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + 4 * i + 3, d.to(tl.uint32, bitcast=True).to(tl.int64))


@pytest.mark.parametrize("seed, step", [(0x123456789ABCDEF, 3), (2**40 + 17, 0)])
def test_equals_tritons_randint4x(seed, step):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = torch.zeros(16 * 4, dtype=torch.int64, device=device)
    _randint4x_kernel[(1,)](torch.tensor([seed], dtype=torch.int64, device=device), out, step << 32, N=16)
    ours = philox_uint32(torch.tensor([seed]), torch.arange(16)[None], torch.tensor([[step]]))
    assert out.cpu().view(16, 4).tolist() == ours[0].tolist()
