"""mix_sample's semantics checked against a definition that shares no code with it.

``definition`` below is docs/mix_sample.md written out plainly in float64 Python (lists,
math.exp, a sorted list), not the reference's ``unfiltered_probs``/``filter_mask``; the
keep-sets of the small examples are worked out by hand in the comments. Both backends are
checked: the keep-set of a call shows in its outputs, since the log-prob is
log(p_token / kept mass) and every drawn token must lie in the set.
"""

import math

import pytest
import torch
from scipy.stats import chisquare

from judgefree.kernels.mix_sample import mix_sample
from judgefree.kernels.mix_sample_ref import final_distribution


def definition(c, u, h=0.0, temperature=1.0, top_k=0, top_p=1.0, mode="mix", alpha=0.0, beta=0.1):
    """The final distribution of one row (list of floats), straight from the definition."""
    t = temperature if temperature > 0 else 1.0
    vocab = len(c)

    def softmax(x):
        top = max(x)
        e = [math.exp(v - top) if v != -math.inf else 0.0 for v in x]
        return [v / sum(e) for v in e]

    if mode == "mix":
        pc = softmax([v / t for v in c])
        pu = softmax([v / t for v in u]) if h > 0 else [0.0] * vocab
        p = [(1 - h) * a + h * b for a, b in zip(pc, pu)]
    else:  # contrast: plausible tokens only
        cut = max(c) + math.log(beta)
        z = [((1 + alpha) * ci - alpha * ui) / t if ci >= cut else -math.inf for ci, ui in zip(c, u)]
        p = softmax(z)
    if 0 < top_k < vocab:
        kth = sorted(p, reverse=True)[top_k - 1]
        p = [v if v >= kth else 0.0 for v in p]  # ties with the k-th are kept
    if top_p < 1:
        target = top_p * sum(p)
        mass = 0.0
        for tau in sorted(p, reverse=True):  # the first value at which the mass is reached
            mass += tau
            if mass >= target:
                break
        p = [v if v >= tau else 0.0 for v in p]  # ties with tau are kept
    total = sum(p)
    return [v / total for v in p]


def logits_of(probs):
    """Logits whose softmax is ``probs`` (0 -> -inf)."""
    return [math.log(v) if v > 0 else -math.inf for v in probs]


def kept(p):
    return {i for i, v in enumerate(p) if v > 0}


# (probabilities of l_c, filters, the keep-set worked out by hand)
SINGLE_PATH = [
    # p = .4 .2 .2 .1 .05 .05 (tokens 1 and 2 tied, 4 and 5 tied)
    ([.4, .2, .2, .1, .05, .05], dict(top_k=1), {0}),
    ([.4, .2, .2, .1, .05, .05], dict(top_k=2), {0, 1, 2}),  # the 2nd largest is tied: both kept
    ([.4, .2, .2, .1, .05, .05], dict(top_k=5), {0, 1, 2, 3, 4, 5}),  # tie at the 5th: all six
    ([.4, .2, .2, .1, .05, .05], dict(top_p=0.35), {0}),  # .4 alone reaches .35
    ([.4, .2, .2, .1, .05, .05], dict(top_p=0.5), {0, 1, 2}),  # .4+.2 reaches .5 at a tied value
    ([.4, .2, .2, .1, .05, .05], dict(top_p=0.85), {0, 1, 2, 3}),  # .9 >= .85
    ([.4, .2, .2, .1, .05, .05], dict(top_p=0.92), {0, 1, 2, 3, 4, 5}),  # .95 >= .92 at a tied .05
    # top-k first, then top-p of the renormalised rest: top-4 mass .9, .7 of it is .63,
    # reached by .4+.2+.2 = .8 (tau = .2, both tied tokens)
    ([.4, .2, .2, .1, .05, .05], dict(top_k=4, top_p=0.7), {0, 1, 2}),
    # a -inf token is never kept, even when top-k would reach it
    ([.5, .3, .2, 0.0, 0.0], dict(top_k=5), {0, 1, 2}),
    ([.5, .3, .2, 0.0, 0.0], dict(top_p=0.75), {0, 1}),
    # eight tokens, four tied at the top: top_k = 2 keeps all four
    ([.2, .2, .2, .2, .08, .06, .04, .02], dict(top_k=2), {0, 1, 2, 3}),
    ([.2, .2, .2, .2, .08, .06, .04, .02], dict(top_p=0.3), {0, 1, 2, 3}),
    ([.2, .2, .2, .2, .08, .06, .04, .02], dict(top_p=0.85), {0, 1, 2, 3, 4}),
]


def check_backend(c, u, h, expected_p, backend, n=64, **kw):
    """Draws of ``backend`` lie in the expected set, their log-probs are log(p/kept mass)."""
    batch = torch.tensor([c], dtype=torch.float32).expand(n, -1).contiguous()
    ub = None if u is None else torch.tensor([u], dtype=torch.float32).expand(n, -1).contiguous()
    out = mix_sample(batch, ub, h, seeds=torch.arange(n) * 13 + 2, step=1, backend=backend, **kw)
    expected = torch.tensor(expected_p, dtype=torch.float64)
    assert (expected[out.tokens] > 0).all(), (out.tokens, expected_p)
    torch.testing.assert_close(out.logprobs.double(), expected[out.tokens].log(), atol=2e-6, rtol=0)
    return out.tokens


@pytest.mark.parametrize("probs,filters,keep", SINGLE_PATH)
def test_hand_computed_keep_sets(probs, filters, keep):
    c = logits_of(probs)
    p = definition(c, None, **filters)
    assert kept(p) == keep  # the definition agrees with the hand computation
    tokens = check_backend(c, None, 0.0, p, "torch", n=400, **filters)
    assert set(tokens.tolist()) == keep  # 400 fixed draws cover every kept token (each >= 1/18)
    check_backend(c, None, 0.0, p, "triton", n=12, **filters)


def test_hand_computed_mix_and_contrast():
    # mix, h = 0.5: p_c = .6 .2 .1 .1 0, p_u = 0 .2 .5 .1 .2 -> p = .3 .2 .3 .1 .1
    c, u = logits_of([.6, .2, .1, .1, 0.0]), logits_of([0.0, .2, .5, .1, .2])
    p = definition(c, u, 0.5)
    assert [round(v, 12) for v in p] == [.3, .2, .3, .1, .1]
    assert kept(definition(c, u, 0.5, top_p=0.55)) == {0, 2}  # .3 + .3 = .6 (0 and 2 not tied in fp32)
    assert kept(definition(c, u, 0.5, top_p=0.75)) == {0, 1, 2}  # .8
    assert kept(definition(c, u, 0.5, top_k=3)) == {0, 1, 2}
    for kw in (dict(top_p=0.55), dict(top_p=0.75), dict(top_k=3)):
        for backend in ("torch", "triton"):
            check_backend(c, u, 0.5, definition(c, u, 0.5, **kw), backend, n=12 if backend == "triton" else 64, **kw)
    # contrast, alpha = 1, beta = .25: l_c = log(.5 .3 .1 .1), cut = log(.5 * .25) = log(.125):
    # tokens 0, 1 plausible; z = 2 l_c - l_u with l_u = log(.25 each) -> weights .25/.25 = 1 and
    # .09/.25 = .36 -> p = 1/1.36, .36/1.36
    c, u = logits_of([.5, .3, .1, .1]), logits_of([.25] * 4)
    p = definition(c, u, mode="contrast", alpha=1.0, beta=0.25)
    assert p == pytest.approx([1 / 1.36, .36 / 1.36, 0, 0], abs=1e-12)
    for backend in ("torch", "triton"):
        check_backend(c, u, 0.0, p, backend, n=12 if backend == "triton" else 64, mode="contrast", alpha=1.0, beta=0.25)


def test_temperature_and_greedy():
    # T = 2 flattens .64 .32 .04 to sqrt: .8 .566 .2 / 1.566; greedy takes the argmax, log-prob
    # under the T = 1 filtered distribution
    c = logits_of([.64, .32, .04])
    p = definition(c, None, temperature=2.0)
    root = [math.sqrt(v) for v in (.64, .32, .04)]
    assert p == pytest.approx([v / sum(root) for v in root], abs=1e-12)
    for backend in ("torch", "triton"):
        check_backend(c, None, 0.0, p, backend, n=12 if backend == "triton" else 64, temperature=2.0)
        greedy = mix_sample(torch.tensor([c]), None, 0.0, temperature=0.0, top_k=2, seeds=0, step=0, backend=backend)
        assert greedy.tokens.tolist() == [0]
        assert greedy.logprobs.item() == pytest.approx(math.log(.64 / .96), abs=2e-6)


def random_tied_row(gen, vocab):
    """Small-integer logits: ties everywhere, including at the top-k and top-p edges."""
    return torch.randint(-3, 3, (vocab,), generator=gen).float().tolist()


def test_random_rows_match_the_definition(fresh_seed):
    """Random small rows with many ties, random filters, both modes: the reference's final
    distribution (and so its keep-set) equals the definition's."""
    gen = torch.Generator().manual_seed(fresh_seed)
    for _ in range(300):
        vocab = int(torch.randint(5, 9, (1,), generator=gen))
        c, u = random_tied_row(gen, vocab), random_tied_row(gen, vocab)
        mode = "contrast" if torch.rand(1, generator=gen) < 0.3 else "mix"
        h = float(torch.rand(1, generator=gen)) if torch.rand(1, generator=gen) < 0.7 else 0.0
        alpha, beta = float(torch.rand(1, generator=gen) * 2), float(torch.rand(1, generator=gen) * 0.9 + 0.05)
        kw = dict(temperature=float(torch.rand(1, generator=gen) * 1.5 + 0.3),
                  top_k=int(torch.randint(0, vocab + 1, (1,), generator=gen)),
                  top_p=float(torch.rand(1, generator=gen) * 0.95 + 0.05))
        want = definition(c, u, h, mode=mode, alpha=alpha, beta=beta, **kw)
        got = final_distribution(torch.tensor([c]), torch.tensor([u]), torch.tensor([h]),
                                 torch.tensor([kw["temperature"]]), torch.tensor([kw["top_k"]], dtype=torch.int32),
                                 torch.tensor([kw["top_p"]]), mode=mode, alpha=torch.tensor([alpha]), beta=beta)[0]
        assert kept(got.tolist()) == kept(want), (c, u, h, mode, alpha, beta, kw)
        torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode,kw", [("mix", dict(h=0.3, top_k=6, top_p=0.8, temperature=0.8)),
                                     ("contrast", dict(alpha=0.7, beta=0.05, top_p=0.9))])
def test_draws_follow_the_definition(mode, kw):
    """20,000 draws of the CPU path (the kernel's tokens, by the shared noise) against the
    definition's distribution: chi-square with a fixed seed set, so deterministic."""
    gen = torch.Generator().manual_seed(7)
    c, u = (torch.randn(8, generator=gen) * 1.5).tolist(), (torch.randn(8, generator=gen) * 1.5).tolist()
    n = 20000
    kw = dict(kw)
    h = kw.pop("h", 0.0)
    out = mix_sample(torch.tensor([c]).expand(n, 8), torch.tensor([u]).expand(n, 8), h, mode=mode,
                     seeds=torch.arange(n) + 5, step=2, backend="torch", **kw)
    p = definition(c, u, h, mode=mode, **kw)
    observed = torch.bincount(out.tokens, minlength=8).double()
    support = [i for i, v in enumerate(p) if v > 0]
    assert observed[[i for i in range(8) if p[i] == 0]].sum() == 0
    expected = torch.tensor([p[i] for i in support], dtype=torch.float64) * n
    assert expected.min() >= 5
    assert chisquare(observed[support].numpy(), expected.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("vocab", [1, 2, 3])
def test_tiny_vocabularies(vocab, fresh_seed):
    """Fewer tokens than one Philox call (4) or one search lane: both backends agree."""
    gen = torch.Generator().manual_seed(fresh_seed)
    c = torch.randn(6, vocab, generator=gen)
    u = torch.randn(6, vocab, generator=gen)
    for kw in (dict(), dict(top_p=0.5), dict(top_k=1), dict(temperature=0.0)):
        kernel = mix_sample(c, u, 0.4, seeds=torch.arange(6), step=1, backend="triton", **kw)
        reference = mix_sample(c, u, 0.4, seeds=torch.arange(6), step=1, backend="torch", **kw)
        assert torch.equal(kernel.tokens, reference.tokens), kw
        torch.testing.assert_close(kernel.logprobs, reference.logprobs, atol=2e-5, rtol=0)
        if vocab == 1:
            assert kernel.tokens.tolist() == [0] * 6 and torch.equal(kernel.logprobs, torch.zeros(6))
