"""mix_sample's GPU-only wrong-token hazard (issue 13): confident rows at T != 1.

Pass 1 takes the max of the rounded l * (1/T); the GPU computes later passes' exponent as
fma(l, 1/T, -max), rounded once from the exact product, which can exceed 0 for the top
token. Its p then exceeded the search's upper bracket (1-h)/Z_c + h/Z_u and the search kept
nothing (token 0, NaN log-prob) whenever tau should be p_max: top_k = 1, or top-p with the
top token holding the mass. The interpreter rounds twice (as the reference does), so these
tests also run the kernel with ``emulate_fma`` (one rounding from float64, the GPU's
arithmetic) and check with a plain PyTorch emulation that the inputs do hit the hazard.
"""

import pytest
import torch

from judgefree.kernels.mix_sample import mix_sample
from judgefree.kernels.mix_sample_ref import log_beta_rows
from judgefree.kernels.mix_sample_triton import mix_sample_triton

TEMPERATURES = (0.5, 0.7, 1.3)
INEXACT_TEMPERATURES = (0.7, 1.3)  # 1/T is not a power of two: l * (1/T) rounds


def confident_rows(gen, batch, vocab, *, margin=16.0):
    """Logits with one dominant token per row (both paths agree on it), at random places."""
    c = torch.randn(batch, vocab, generator=gen)
    u = torch.randn(batch, vocab, generator=gen)
    top = torch.randint(0, vocab, (batch,), generator=gen)
    rows = torch.arange(batch)
    c[rows, top] += margin + 4 * torch.rand(batch, generator=gen)
    u[rows, top] += margin + 4 * torch.rand(batch, generator=gen)
    return c, u, top


def fused_top_p_exceeds_old_bracket(c, u, h, temperature):
    """bool [B], computed plainly in PyTorch: with the exponent rounded once from the exact
    product (what a fused multiply-add gives), is the top token's p above the old upper
    bracket (1-h)/Z_c + h/Z_u, i.e. would the old search have found an empty bucket?"""
    inv_t = 1.0 / torch.tensor(temperature, dtype=torch.float32)

    def path(x):
        scaled = x * inv_t  # fp32, rounded: what pass 1 takes the max of
        top = scaled.max(-1, keepdim=True).values
        z = torch.exp(scaled - top).sum(-1)
        fused = (x.double() * inv_t.double() - top.double()).float()  # one rounding
        return z, torch.exp(fused).max(-1).values

    z_c, e_c = path(c)
    z_u, e_u = path(u)
    scale_c, scale_u = (1 - h) / z_c, h / z_u
    bracket = scale_c + scale_u
    # per path as the kernel rounds it; the largest p is at the dominant token of both paths
    p_top = scale_c * e_c + scale_u * e_u
    return p_top.view(torch.int32) >= bracket.view(torch.int32) + 1


def run_kernel(c, u, h, temperature, *, top_k=0, top_p=1.0, emulate_fma, step=3):
    batch = c.shape[0]
    rows = lambda value, dtype: torch.full((batch,), value, dtype=dtype)  # noqa: E731
    weight = h if isinstance(h, torch.Tensor) else rows(h, torch.float32)
    tokens, logprobs, cond, flags = mix_sample_triton(
        c, u, weight, rows(temperature, torch.float32), rows(top_k, torch.int32), rows(top_p, torch.float32),
        torch.arange(batch, dtype=torch.int64) * 7 + 1, rows(step, torch.int32), rows(False, torch.bool),
        log_beta_rows(0.1, batch, c.device), has_contrast=False, emulate_fma=emulate_fma)
    assert (flags == 0).all()
    return tokens, logprobs, cond


def test_the_inputs_hit_the_hazard(fresh_seed):
    """The plain emulation shows that fused rounding puts the top p above the old bracket in
    a good share of confident h = 0 rows (the issue measured ~44% at T = 0.7): the tests below
    exercise the hazard rather than pass by luck."""
    gen = torch.Generator().manual_seed(fresh_seed)
    c, u, _ = confident_rows(gen, 400, 300)
    for temperature in INEXACT_TEMPERATURES:
        for h in (0.0, 0.3):
            hit = fused_top_p_exceeds_old_bracket(c, u, torch.full((400,), h), temperature)
            assert hit.float().mean() > 0.15, (temperature, h, hit.float().mean())
    # 1/T = 1 or 2: the product is exact, fused or not, so there is no hazard
    for temperature in (1.0, 0.5):
        assert not fused_top_p_exceeds_old_bracket(c, u, torch.zeros(400), temperature).any()


@pytest.mark.parametrize("emulate_fma", [False, True])
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("h", [0.0, 0.3])
def test_confident_rows_keep_the_top_token(h, temperature, emulate_fma, fresh_seed):
    """top_k = 1 and top-p 0.9 with the top token alone above the mass: the kept set is that
    token (log-prob exactly 0), matching the reference; with the GPU's fused rounding too."""
    gen = torch.Generator().manual_seed(fresh_seed)
    c, u, top = confident_rows(gen, 64, 257)
    if emulate_fma and temperature in INEXACT_TEMPERATURES:
        # 6 rows the old kernel got wrong (kept nothing) and 2 it got right
        hit = fused_top_p_exceeds_old_bracket(c, u, torch.full((64,), h), temperature)
        rows = torch.cat([hit.nonzero()[:6, 0], (~hit).nonzero()[:2, 0]])
        assert rows.numel() == 8
    else:
        rows = torch.arange(8)
    c, u, top = c[rows].contiguous(), u[rows].contiguous(), top[rows]
    batch = 8
    mixed = (1 - h) * torch.softmax(c.double() / temperature, -1) + h * torch.softmax(u.double() / temperature, -1)
    p_top = mixed.max(-1)
    assert (p_top.values > 0.9).all() and torch.equal(p_top.indices, top)  # the top token holds the mass
    for filters in (dict(top_k=1), dict(top_p=0.9), dict(top_k=1, top_p=0.5)):
        tokens, logprobs, cond = run_kernel(c, u, h, temperature, emulate_fma=emulate_fma, **filters)
        assert torch.equal(tokens, top), filters
        assert torch.equal(logprobs, torch.zeros(batch)), filters
        reference = mix_sample(c, u, h, temperature=temperature, seeds=torch.arange(batch) * 7 + 1, step=3,
                               backend="torch", **filters)
        assert torch.equal(reference.tokens, top) and torch.equal(reference.logprobs, torch.zeros(batch))
        torch.testing.assert_close(cond, reference.cond_logprobs, atol=2e-5, rtol=0)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_fused_rounding_keeps_the_reference_set_on_ordinary_rows(temperature, fresh_seed):
    """Random (not confident) rows with top-k: the fused-rounding kernel keeps the set the
    reference keeps, so it draws the reference's token (the noise is shared)."""
    gen = torch.Generator().manual_seed(fresh_seed)
    c = torch.randn(6, 301, generator=gen) * 2
    u = torch.randn(6, 301, generator=gen) * 2
    h = torch.tensor([0.0, 0.0, 0.2, 0.5, 0.9, 1.0])
    tokens, logprobs, _ = run_kernel(c, u, h, temperature, top_k=5, emulate_fma=True)
    reference = mix_sample(c, u, h, temperature=temperature, top_k=5, seeds=torch.arange(6) * 7 + 1, step=3,
                           backend="torch")
    assert torch.equal(tokens, reference.tokens)
    torch.testing.assert_close(logprobs, reference.logprobs, atol=2e-5, rtol=0)


@pytest.mark.parametrize("temperature", INEXACT_TEMPERATURES)
def test_confident_contrast_rows_with_fused_rounding(temperature, fresh_seed):
    """Contrast rows go through the same clamped exp (of (1+a) l_c - a l_u): with the GPU's
    rounding, top_k = 1 keeps exactly the top contrast token, as the reference does."""
    gen = torch.Generator().manual_seed(fresh_seed)
    c, _, top = confident_rows(gen, 8, 193)
    u = torch.randn(8, 193, generator=gen)  # no margin: the contrast keeps c's top token on top
    batch = 8
    rows = lambda value, dtype: torch.full((batch,), value, dtype=dtype)  # noqa: E731
    tokens, logprobs, _, flags = mix_sample_triton(
        c, u, rows(0.5, torch.float32), rows(temperature, torch.float32), rows(1, torch.int32),
        rows(1.0, torch.float32), torch.arange(batch, dtype=torch.int64), rows(0, torch.int32),
        rows(True, torch.bool), log_beta_rows(0.1, batch, c.device), has_contrast=True, emulate_fma=True)
    reference = mix_sample(c, u, 0.0, mode="contrast", alpha=0.5, beta=0.1, temperature=temperature, top_k=1,
                           seeds=torch.arange(batch), step=0, backend="torch")
    assert (flags == 0).all()
    assert torch.equal(tokens, top) and torch.equal(reference.tokens, top)
    assert torch.equal(logprobs, torch.zeros(batch)) and torch.equal(reference.logprobs, torch.zeros(batch))
