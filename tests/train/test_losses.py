"""sequence_logprobs and dpo_loss against the TRL DPOTrainer formulas, written out per pair
with the ``math`` module (float64, tolerance 1e-12)."""

from __future__ import annotations

import math

import pytest
import torch

from judgefree.train import DPO_LOSS_TYPES, dpo_loss, sequence_logprobs


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _trl_loss(margin: float, beta: float, loss_type: str, eps: float) -> float:
    """One pair's loss; margin = (pi_c - pi_r) - (ref_c - ref_r)."""
    z = beta * margin
    if loss_type == "sigmoid":
        return -_log_sigmoid(z) * (1 - eps) - _log_sigmoid(-z) * eps
    if loss_type == "robust":
        return (-_log_sigmoid(z) * (1 - eps) + _log_sigmoid(-z) * eps) / (1 - 2 * eps)
    if loss_type == "hinge":
        return max(0.0, 1 - z)
    return (margin - 1 / (2 * beta)) ** 2


def _logps(batch: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [-torch.rand(batch, generator=gen, dtype=torch.float64) * 40 for _ in range(4)]


@pytest.mark.parametrize(
    "loss_type, eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.0), ("robust", 0.3),
                       ("hinge", 0.0), ("ipo", 0.0)])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_trl_formulas(loss_type, eps, beta, fresh_seed):
    pc, pr, rc, rr = _logps(6, fresh_seed)
    loss, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type,
                                                      label_smoothing=eps)
    expected = [_trl_loss(float((pc[i] - pr[i]) - (rc[i] - rr[i])), beta, loss_type, eps) for i in range(6)]
    assert loss.dim() == 0
    assert float(loss) == pytest.approx(sum(expected) / 6, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(chosen_rewards, beta * (pc - rc), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rejected_rewards, beta * (pr - rr), rtol=1e-12, atol=1e-12)


def test_robust_without_smoothing_is_sigmoid_and_large_margins_stay_finite(fresh_seed):
    pc, pr, rc, rr = _logps(5, fresh_seed)
    pc = pc + 1e4  # margins of ~1e4: logsigmoid must not overflow
    sigmoid = dpo_loss(pc, pr, rc, rr, loss_type="sigmoid")[0]
    assert torch.isfinite(sigmoid)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, loss_type="robust")[0], sigmoid)
    reversed_loss = dpo_loss(pr, pc, rr, rc, loss_type="sigmoid", beta=0.1)[0]
    assert torch.isfinite(reversed_loss) and float(reversed_loss) > 900  # ~ beta * margin


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_gradient_raises_chosen_and_lowers_rejected(loss_type):
    # Margins below every loss's optimum, so each one still pushes the pair apart.
    pc = torch.tensor([-10.0, -12.0], dtype=torch.float64, requires_grad=True)
    pr = torch.tensor([-11.0, -12.5], dtype=torch.float64, requires_grad=True)
    rc, rr = torch.tensor([-10.0, -12.0]).double(), torch.tensor([-11.0, -12.5]).double()
    loss, chosen_rewards, _ = dpo_loss(pc, pr, rc, rr, loss_type=loss_type)
    loss.backward()
    assert torch.all(pc.grad < 0) and torch.all(pr.grad > 0)
    assert not chosen_rewards.requires_grad  # detached, as TRL logs them


def test_sequence_logprobs_sums_and_means(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    tokens = -torch.rand(3, 7, generator=gen)
    mask = torch.rand(3, 7, generator=gen) > 0.4
    mask[:, 0] = True
    tokens[~mask] = float("-inf")  # padding must not leak in
    seq = sequence_logprobs(tokens, mask)
    for row in range(3):
        picked = tokens[row][mask[row]]
        assert float(seq.sums[row]) == pytest.approx(float(picked.sum()), rel=1e-6)
        assert float(seq.means[row]) == pytest.approx(float(picked.mean()), rel=1e-6)
        assert int(seq.lengths[row]) == picked.numel()


def test_sequence_logprobs_gradient_reaches_only_masked_tokens():
    tokens = torch.full((2, 4), -1.0, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    seq = sequence_logprobs(tokens, mask)
    (seq.sums.sum() + seq.means.sum()).backward()
    expected = torch.tensor([[1.5, 1.5, 0, 0], [1.25, 1.25, 1.25, 1.25]])
    torch.testing.assert_close(tokens.grad, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_type": "kto"}, "loss_type must be one of"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"loss_type": "robust", "label_smoothing": 0.5}, "\\[0, 0.5\\) for loss_type='robust'"),
        ({"loss_type": "sigmoid", "label_smoothing": -0.1}, "\\[0, 0.5\\] for loss_type='sigmoid'"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "not defined for loss_type='ipo'"),
    ],
)
def test_dpo_loss_rejects_bad_parameters(kwargs, message):
    pc, pr, rc, rr = _logps(2, 0)
    with pytest.raises(ValueError, match=message):
        dpo_loss(pc, pr, rc, rr, **kwargs)


def test_dpo_loss_and_sequence_logprobs_reject_bad_shapes():
    pc, pr, rc, rr = _logps(3, 0)
    with pytest.raises(ValueError, match="ref_rejected shape"):
        dpo_loss(pc, pr, rc, rr[:2])
    with pytest.raises(ValueError, match="policy_chosen must be a non-empty 1-D"):
        dpo_loss(pc[None], pr, rc, rr)
    with pytest.raises(ValueError, match="mask row 1 selects no token"):
        sequence_logprobs(torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="mask shape"):
        sequence_logprobs(torch.zeros(2, 3), torch.ones(2, 4))
