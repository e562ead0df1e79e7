"""linear_logprobs + sequence_logprobs + dpo_loss against liger-kernel's fused linear DPO loss.

``LigerFusedLinearDPOLoss(compiled=False)`` (pure PyTorch) takes the policy's hidden states
[2B, T, H] (chosen rows first), the lm_head weight and targets [2B, T]. It cannot take
precomputed reference log-probs: with ``use_ref_model=True`` it computes them itself from
``ref_input``/``ref_weight`` under no_grad, so our side computes the reference from those
same tensors with ``linear_logprobs``. ``average_log_prob=False`` (liger's DPO default) sums
the token log-probs, ``True`` averages them (our ``means``). Liger has no "ipo" (it raises
NotImplementedError) and its "sigmoid" ignores label_smoothing, so those are compared only
where liger defines them. float32, tolerance 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch

from judgefree.kernels.linear_logprobs import linear_logprobs
from judgefree.train import dpo_loss, sequence_logprobs

liger_dpo = pytest.importorskip("liger_kernel.chunked_loss")

IGNORE = -100
CONFIGS = [
    ("sigmoid", 0.0, False, 0.1),
    ("sigmoid", 0.0, True, 0.5),
    ("hinge", 0.0, False, 0.1),
    ("robust", 0.2, False, 0.3),
]


def _batch(seed: int, pairs=3, seq=9, hidden_size=40, vocab=301):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * pairs, seq, hidden_size, generator=gen)
    weight = torch.randn(vocab, hidden_size, generator=gen) / hidden_size**0.5
    ref_hidden = hidden + 0.3 * torch.randn(hidden.shape, generator=gen)
    ref_weight = weight + 0.05 * torch.randn(weight.shape, generator=gen)
    targets = torch.randint(0, vocab, (2 * pairs, seq), generator=gen)
    # Prompt positions and right padding of different lengths are ignored.
    for row in range(2 * pairs):
        prompt = int(torch.randint(1, 4, (1,), generator=gen))
        pad = int(torch.randint(0, 3, (1,), generator=gen))
        targets[row, :prompt] = IGNORE
        if pad:
            targets[row, seq - pad:] = IGNORE
    return hidden, weight, ref_hidden, ref_weight, targets


def _ours(hidden, weight, ref_hidden, ref_weight, targets, loss_type, eps, average, beta, backend):
    rows, seq, size = hidden.shape
    mask = targets != IGNORE

    def per_sequence(h, w):
        tokens = linear_logprobs(h.reshape(-1, size), w, targets.reshape(-1), backend=backend)
        seqs = sequence_logprobs(tokens.view(rows, seq), mask)
        return seqs.means if average else seqs.sums

    policy = per_sequence(hidden, weight)
    with torch.no_grad():
        ref = per_sequence(ref_hidden, ref_weight)
    pairs = rows // 2
    loss, chosen_rewards, rejected_rewards = dpo_loss(
        policy[:pairs], policy[pairs:], ref[:pairs], ref[pairs:], beta=beta, loss_type=loss_type,
        label_smoothing=eps)
    return loss, policy, chosen_rewards, rejected_rewards


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("loss_type, eps, average, beta", CONFIGS)
def test_matches_liger_fused_linear_dpo(loss_type, eps, average, beta, backend, fresh_seed):
    hidden, weight, ref_hidden, ref_weight, targets = _batch(fresh_seed)
    liger = liger_dpo.LigerFusedLinearDPOLoss(
        ignore_index=IGNORE, beta=beta, compiled=False, use_ref_model=True,
        average_log_prob=average, loss_type=loss_type, label_smoothing=eps)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    liger_loss, aux = liger(w1, h1, targets, ref_input=ref_hidden, ref_weight=ref_weight)
    liger_loss.backward()
    liger_chosen, liger_rejected, *_, liger_chosen_rewards, liger_rejected_rewards = aux

    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, policy, chosen_rewards, rejected_rewards = _ours(
        h2, w2, ref_hidden, ref_weight, targets, loss_type, eps, average, beta, backend)
    loss.backward()

    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, liger_loss.detach(), **close)
    torch.testing.assert_close(policy.detach(), torch.cat([liger_chosen, liger_rejected]).detach(), **close)
    torch.testing.assert_close(chosen_rewards, liger_chosen_rewards.detach(), **close)
    torch.testing.assert_close(rejected_rewards, liger_rejected_rewards.detach(), **close)
    torch.testing.assert_close(h2.grad, h1.grad, **close)
    torch.testing.assert_close(w2.grad, w1.grad, **close)
    assert h1.grad.abs().max() > 0  # the comparison is not between two zero gradients
