"""linear_logprobs against the eager ground truth ``linear_logprobs_eager`` (float64).

Reference: ``log_softmax(hidden @ weight.T).gather(targets)`` computed in float64 from the
same (upcast) inputs. Tolerances: float32 1e-4 relative to the values' scale, bf16/fp16
gradients 2e-2 (they are returned in the input dtype). The Triton kernels run through the
interpreter on the CPU (bf16 is multiplied in float32 there, see ENVIRONMENT.md).
"""

from __future__ import annotations

import pytest
import torch

from judgefree.kernels.linear_logprobs import linear_logprobs
from judgefree.kernels.linear_logprobs_ref import linear_logprobs_eager
from judgefree.kernels.linear_logprobs_torch import linear_logprobs_chunked
from judgefree.kernels.linear_logprobs_triton import KernelConfig, linear_logprobs_triton
from judgefree.testing.grads import run_with_grads as _run

IGNORE = -100


def _inputs(n, h, v, *, seed, dtype=torch.float32, device="cpu", scale=1.0, n_ignored=2):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=gen) * scale).to(dtype).to(device)
    weight = (torch.randn(v, h, generator=gen) / h**0.5 * 3).to(dtype).to(device)
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[torch.randperm(n, generator=gen)[: min(n_ignored, n - 1)]] = IGNORE
    # Include the last vocab id (inside the ragged final tile) whenever a row is free.
    if n > 1 and targets[-1] != IGNORE:
        targets[-1] = v - 1
    grad_out = torch.randn(n, generator=gen).to(device)
    return hidden, weight, targets.to(device), grad_out


def _truth(hidden, weight, targets, grad_out, ignore_index=IGNORE):
    return _run(lambda h, w, t: linear_logprobs_eager(h, w, t, ignore_index),
                hidden.double(), weight.double(), targets, grad_out)


def _close(actual, expected, rel):
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual.double(), expected.double(), atol=rel * float(scale), rtol=rel)


IMPLS = {
    "torch": lambda h, w, t: linear_logprobs(h, w, t, backend="torch"),
    "torch-small-chunks": lambda h, w, t: linear_logprobs_chunked(h, w, t, token_chunk=16, vocab_chunk=300),
    "triton": lambda h, w, t: linear_logprobs(h, w, t, backend="triton"),
    # Small tiles: several hidden blocks, a ragged vocab tile, three vocab splits to combine.
    "triton-small-tiles": lambda h, w, t: linear_logprobs_triton(
        h, w, t, IGNORE, KernelConfig(block_n=16, block_v=128, block_h=32, vocab_splits=3)),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", [(37, 67, 1000), (1, 33, 517)], ids=["odd", "n1"])
def test_float32_values_and_grads_match_eager(impl, shape, fresh_seed, device):
    hidden, weight, targets, grad_out = _inputs(*shape, seed=fresh_seed, device=device)
    out, g_hidden, g_weight = _run(IMPLS[impl], hidden, weight, targets, grad_out)
    ref, r_hidden, r_weight = _truth(hidden, weight, targets, grad_out)
    assert out.dtype == torch.float32 and out.shape == (shape[0],)
    _close(out, ref, 1e-4)
    _close(g_hidden, r_hidden, 1e-4)
    _close(g_weight, r_weight, 1e-4)
    ignored = targets == IGNORE
    assert torch.all(out[ignored] == 0) and torch.all(g_hidden[ignored] == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_half_inputs_accumulate_in_float32(dtype, backend, fresh_seed, device):
    hidden, weight, targets, grad_out = _inputs(29, 96, 700, seed=fresh_seed, dtype=dtype, device=device)
    out, g_hidden, g_weight = _run(lambda h, w, t: linear_logprobs(h, w, t, backend=backend),
                                   hidden, weight, targets, grad_out)
    ref, r_hidden, r_weight = _truth(hidden, weight, targets, grad_out)
    assert out.dtype == torch.float32
    assert g_hidden.dtype == dtype and g_weight.dtype == dtype
    _close(out, ref, 1e-4)  # products of half values are exact in float32
    _close(g_hidden, r_hidden, 2e-2)
    _close(g_weight, r_weight, 2e-2)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_large_magnitude_logits_stay_finite_and_exact(backend, fresh_seed, device):
    # Logits in the thousands: exp overflows without a stable log-sum-exp, and the softmax
    # is one-hot up to float32 rounding.
    hidden, weight, targets, grad_out = _inputs(23, 40, 333, seed=fresh_seed, scale=400.0, device=device)
    targets[0] = torch.argmax(hidden[0].double() @ weight.double().T)  # a logp of ~0
    out, g_hidden, g_weight = _run(lambda h, w, t: linear_logprobs(h, w, t, backend=backend),
                                   hidden, weight, targets, grad_out)
    ref, r_hidden, r_weight = _truth(hidden, weight, targets, grad_out)
    assert ref.abs().max() > 1e3
    assert torch.isfinite(out).all() and torch.isfinite(g_hidden).all() and torch.isfinite(g_weight).all()
    _close(out, ref, 1e-5)
    assert out[0] <= 0  # lse >= the max logit, which is this target's
    bound_hidden, bound_weight = _float32_logit_rounding_bound(hidden, weight, targets, grad_out, r_hidden, r_weight)
    assert ((g_hidden.double() - r_hidden).abs() <= bound_hidden).all()
    assert ((g_weight.double() - r_weight).abs() <= bound_weight).all()


def _float32_logit_rounding_bound(hidden, weight, targets, grad_out, ref_hidden, ref_weight):
    """What float32 logits of this size allow in the gradient, per element. Logits in the
    thousands carry rounding errors of ~1e-3 (ulps of 4096 are 2.4e-4), so where two tokens
    nearly tie, p moves by p (1 - p) times that: no fixed relative tolerance holds (1e-4 of the
    largest gradient failed ~3 % of fresh seeds). d p_v = p_v (d l_v - sum_u p_u d l_u - d lse)
    with |d l| <= 2 ulps of max_v sum_h |x_h w_vh| (an fp32 dot of length 40) and |d lse| <= 2 ulps
    of the row's largest |logit|: |d p_v| <= 2 p_v (1 - p_v) d l + p_v d lse, plus 1e-6 of the
    largest gradient. Measured on 300 fresh seeds (torch) and 60 (triton): the worst error was
    0.27 of this bound, and for the median element the bound is 0.37 of the old tolerance."""
    x, w = hidden.double(), weight.double()
    g = (grad_out.double() * (targets != IGNORE).double()).abs()
    logits = x @ w.T
    p = torch.softmax(logits, dim=-1)
    d_logit = g * 2.0**-22 * (x.abs() @ w.abs().T).max(dim=1).values
    d_lse = g * 2.0**-22 * logits.abs().max(dim=1).values
    spread = 2 * d_logit[:, None] * p * (1 - p) + d_lse[:, None] * p  # [N, V]: |d p| times |g|
    floor = 1e-6  # of the largest gradient: the other roundings
    return (spread @ w.abs() + floor * ref_hidden.abs().max().clamp(min=1.0),
            spread.T @ x.abs() + floor * ref_weight.abs().max().clamp(min=1.0))


def test_gradcheck_float64_chunked_path(fresh_seed):
    hidden, weight, targets, _ = _inputs(7, 5, 11, seed=fresh_seed, dtype=torch.float64)
    hidden.requires_grad_()
    weight.requires_grad_()
    fn = lambda h, w: linear_logprobs_chunked(h, w, targets, IGNORE, token_chunk=3, vocab_chunk=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden, weight))
    assert linear_logprobs(hidden, weight, targets).dtype == torch.float64


def test_gradcheck_float64_frozen_weight(fresh_seed):
    """A frozen lm_head takes the forward-accumulated E[W] path: small chunks make the
    online softmax rescale across vocab chunks."""
    hidden, weight, targets, _ = _inputs(7, 5, 11, seed=fresh_seed, dtype=torch.float64)
    hidden.requires_grad_()
    fn = lambda h: linear_logprobs_chunked(h, weight, targets, IGNORE, token_chunk=3, vocab_chunk=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden,))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_custom_ignore_index_and_frozen_weight(backend, fresh_seed, device):
    # ignore_index may be a real vocab id; a frozen lm_head (LoRA) needs no weight grad.
    hidden, weight, targets, grad_out = _inputs(19, 48, 260, seed=fresh_seed, n_ignored=0, device=device)
    targets[::4] = 5
    h = hidden.clone().requires_grad_()
    out = linear_logprobs(h, weight, targets, ignore_index=5, backend=backend)
    out.backward(grad_out)
    ref, r_hidden, _ = _truth(hidden, weight, targets, grad_out, ignore_index=5)
    assert weight.grad is None
    assert torch.all(out[targets == 5] == 0)
    _close(out.detach(), ref, 1e-4)
    _close(h.grad, r_hidden, 1e-4)


def test_triton_skips_fully_ignored_token_blocks_exactly(fresh_seed, device):
    # Rows 16..31 form one whole ignored token block (prompt positions): its backward
    # tiles return early; the neighbouring blocks must be unaffected.
    hidden, weight, targets, grad_out = _inputs(40, 48, 200, seed=fresh_seed, n_ignored=0, device=device)
    targets[16:32] = IGNORE
    config = KernelConfig(block_n=16, block_v=256, block_h=64)
    out, g_hidden, g_weight = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config),
                                   hidden, weight, targets, grad_out)
    ref, r_hidden, r_weight = _truth(hidden, weight, targets, grad_out)
    assert torch.all(g_hidden[16:32] == 0) and torch.all(out[16:32] == 0)
    _close(out, ref, 1e-4)
    _close(g_hidden, r_hidden, 1e-4)
    _close(g_weight, r_weight, 1e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_strided_inputs_and_int32_targets(backend, fresh_seed, device):
    hidden, weight, targets, grad_out = _inputs(21, 40, 300, seed=fresh_seed, device=device)
    wide = torch.cat([hidden, torch.randn_like(hidden)], dim=1)[:, :40]  # row stride 80
    weight_t = weight.T.contiguous().T  # column-major storage
    out = linear_logprobs(wide, weight_t, targets.to(torch.int32), backend=backend)
    ref = linear_logprobs_eager(hidden.double(), weight.double(), targets)
    _close(out, ref, 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_tiles_several_splits_and_groups(dtype, fresh_seed):
    # The compiled kernels with their GPU tiles: many token blocks (grouped order), vocab
    # splits chosen from the SM count, a ragged last vocab tile, several hidden blocks.
    hidden, weight, targets, grad_out = _inputs(1100, 320, 7001, seed=fresh_seed, dtype=dtype, device="cuda")
    out, g_hidden, g_weight = _run(lambda h, w, t: linear_logprobs(h, w, t), hidden, weight, targets, grad_out)
    ref, r_hidden, r_weight = _truth(hidden, weight, targets, grad_out)
    rel = 1e-4 if dtype == torch.float32 else 2e-2
    _close(out, ref, 1e-4)
    _close(g_hidden, r_hidden, rel)
    _close(g_weight, r_weight, rel)


def test_empty_batch_returns_empty(device):
    hidden = torch.zeros(0, 8, device=device, requires_grad=True)
    weight = torch.randn(10, 8, device=device, requires_grad=True)
    out = linear_logprobs(hidden, weight, torch.zeros(0, dtype=torch.long, device=device))
    assert out.shape == (0,) and out.dtype == torch.float32
    out.sum().backward()
    assert weight.grad is not None and torch.all(weight.grad == 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h, w, t: (h[0], w, t), "hidden must be 2-D"),
        (lambda h, w, t: (h, w[:, :-1], t), "hidden size"),
        (lambda h, w, t: (h, w.double(), t), "weight dtype"),
        (lambda h, w, t: (h.long(), w.long(), t), "hidden must be a float"),
        (lambda h, w, t: (h, w, t[:-1]), "targets must be 1-D"),
        (lambda h, w, t: (h, w, t.float()), "integer token ids"),
        (lambda h, w, t: (h, w, torch.full_like(t, 10)), "outside \\[0, 10\\)"),
        (lambda h, w, t: (h, w, torch.full_like(t, -1)), "id -1"),
        (lambda h, w, t: (h, w[:0], t), "V >= 1"),
    ],
)
def test_bad_input_names_the_problem(change, message):
    hidden, weight, targets = torch.randn(4, 6), torch.randn(10, 6), torch.tensor([1, 2, 3, IGNORE])
    with pytest.raises(ValueError, match=message):
        linear_logprobs(*change(hidden, weight, targets))


def test_bad_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        linear_logprobs(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), backend="cuda")
    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        linear_logprobs(torch.randn(2, 3).double(), torch.randn(4, 3).double(), torch.tensor([0, 1]),
                        backend="triton")
