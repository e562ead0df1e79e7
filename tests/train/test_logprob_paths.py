"""The trainer's response log-prob paths (``TrainConfig.logprobs``): each against the eager
float64 formula ``linear_logprobs_eager`` (values 1e-5, gradients 1e-4 of their scale, float32
inputs), and DPO loss curves of the fused paths against the eager path's (CPU here, CUDA with
the Triton kernel and liger in the GPU-marked test)."""

from __future__ import annotations

import pytest
import torch

from judgefree.kernels.linear_logprobs_ref import linear_logprobs_eager
from judgefree.train.config import TrainConfig
from judgefree.train.policy import token_logprobs
from judgefree.train.trainer import train_dpo


@pytest.mark.parametrize("path", ["auto", "torch", "triton", "eager", "liger"])
def test_every_path_matches_the_float64_formula(path, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    hidden = torch.randn(13, 24, generator=gen)
    weight = torch.randn(301, 24, generator=gen) / 3
    targets = torch.randint(0, 301, (13,), generator=gen)
    grad_out = torch.randn(13, generator=gen)
    results = []
    for h, w in ((hidden, weight), (hidden.double(), weight.double())):
        h = h.clone().requires_grad_()
        w = w.clone().requires_grad_()
        out = token_logprobs(h, w, targets, path) if h.dtype == torch.float32 else linear_logprobs_eager(h, w, targets)
        out.backward(grad_out.to(out.dtype))
        results.append((out.detach(), h.grad, w.grad))
    (out, g_h, g_w), (ref, r_h, r_w) = results
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_h.double(), r_h, atol=1e-4 * float(r_h.abs().max()), rtol=1e-4)
    torch.testing.assert_close(g_w.double(), r_w, atol=1e-4 * float(r_w.abs().max()), rtol=1e-4)


def test_unknown_path_is_rejected():
    with pytest.raises(ValueError, match="logprobs must be one of"):
        TrainConfig(logprobs="fast")


def test_filter_eps_reaches_the_kernel_and_is_refused_where_no_kernel_runs(fresh_seed):
    """TrainConfig.logprobs_filter_eps: validated, refused for the eager / liger paths; through
    token_logprobs the Triton path's gradients move (a confident model: most pairs dropped) by no
    more than the documented per-entry bound of the float64 gradient, the values not at all."""
    for bad in (dict(logprobs_filter_eps=0.0), dict(logprobs_filter_eps=1.5),
                dict(logprobs="eager", logprobs_filter_eps=1e-3), dict(logprobs="liger", logprobs_filter_eps=1e-3)):
        with pytest.raises(ValueError, match="logprobs_filter_eps"):
            TrainConfig(**bad)
    assert TrainConfig(logprobs_filter_eps=2.0**-12).logprobs_filter_eps == 2.0**-12
    gen = torch.Generator().manual_seed(fresh_seed)
    weight = torch.randn(301, 24, generator=gen) / 3
    targets = torch.randint(0, 301, (13,), generator=gen)
    hidden = 0.1 * torch.randn(13, 24, generator=gen) + 8.0 * weight[targets]  # p(target) ~ 1
    grad_out = torch.randn(13, generator=gen)
    with pytest.raises(ValueError, match="filter_eps"):
        token_logprobs(hidden, weight, targets, "eager", 1e-3)
    runs = []
    for eps in (None, 1e-3):
        h = hidden.clone().requires_grad_()
        out = token_logprobs(h, weight, targets, "triton", eps)
        out.backward(grad_out)
        runs.append((out.detach(), h.grad))
    logits = hidden.double() @ weight.double().T
    delta = torch.nn.functional.one_hot(targets, 301).double() - torch.softmax(logits, 1)
    small = torch.where(delta.abs() < 1e-3 + 1e-5, delta.abs() + 1e-5, 0.0) * grad_out.double().abs()[:, None]
    bound = small.sum(1)[:, None] * weight.double().abs().amax(0)[None, :]
    assert torch.equal(runs[0][0], runs[1][0]) and not torch.equal(runs[0][1], runs[1][1])
    assert torch.all((runs[1][1] - runs[0][1]).double().abs() <= bound + 1e-6)


def _curve(model_dir, store, out, path, **settings):
    config = TrainConfig(finetune="lora", logprobs=path, learning_rate=1e-2, epochs=3, max_steps=3, batch_size=2,
                         micro_batch_size=1, warmup_ratio=0.0, scheduler="constant", **settings)
    return [m["loss"] for m in train_dpo(model_dir, store, out, config, progress=False).metrics]


def test_cpu_training_with_the_chunked_path_follows_the_eager_curve(train_llava_dir, llava_store, tmp_path):
    eager = _curve(train_llava_dir, llava_store, tmp_path / "eager", "eager")
    fused = _curve(train_llava_dir, llava_store, tmp_path / "auto", "auto")
    assert len(eager) == 3 and eager[-1] < eager[0]  # it learns, so the steps are not all alike
    assert fused == pytest.approx(eager, abs=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_cuda_training_with_the_kernel_follows_the_eager_curve(train_llava_dir, llava_store, tmp_path, finetune,
                                                               monkeypatch):
    """On CUDA "auto" is the Triton kernel (LoRA: frozen lm_head, no dW; full: with dW); bf16
    compute, so the curves agree to bf16 rounding of the gradients, not bit for bit."""
    from judgefree.kernels import linear_logprobs_triton as lt

    calls = []
    real = lt.linear_logprobs_triton
    monkeypatch.setattr(lt, "linear_logprobs_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    lr = 1e-3 if finetune == "lora" else 3e-4
    curves = {}
    import importlib.util

    paths = ("eager", "auto") + (("liger",) if importlib.util.find_spec("liger_kernel") else ())
    for path in paths:
        config = TrainConfig(finetune=finetune, logprobs=path, learning_rate=lr, epochs=4, max_steps=4, batch_size=4,
                             micro_batch_size=2, warmup_ratio=0.0, scheduler="constant")
        result = train_dpo(train_llava_dir, llava_store, tmp_path / path, config, progress=False)
        curves[path] = [m["loss"] for m in result.metrics]
    assert calls, "the Triton kernel did not run on CUDA"
    assert len(curves["eager"]) == 4 and curves["eager"][-1] < curves["eager"][0], curves
    for path in paths[1:]:
        assert curves[path] == pytest.approx(curves["eager"], abs=5e-3), curves
