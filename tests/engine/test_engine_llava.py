"""The engine on tiny random LLaVA checkpoints against transformers (fp32, CPU):
greedy h = 0 equals ``generate`` token for token, greedy h > 0 equals the two-forward
baseline, recorded cond_logprobs equal a full forward's log-softmax (1e-4)."""

import pytest
import torch
from judgefree.testing.material import GREEDY, LONG_PROMPT, PROMPT
from judgefree.engine import Request, SamplingParams

NEW = 10


def hf_greedy(hf, engine, completion, image, new_tokens):
    prompt = engine.prompts.build(completion.prompt, image)
    assert prompt.cond_ids == completion.prompt_token_ids
    ids = torch.tensor([prompt.cond_ids])
    out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=prompt.pixel_values,
                      max_new_tokens=new_tokens, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def full_forward_cond_logprobs(hf, engine, completion, image):
    prompt = engine.prompts.build(completion.prompt, image)
    ids = torch.tensor([completion.prompt_token_ids + completion.token_ids])
    with torch.no_grad():
        logits = hf(input_ids=ids, pixel_values=prompt.pixel_values).logits[0].float()
    n = len(completion.prompt_token_ids)
    targets = torch.tensor(completion.token_ids)
    return torch.log_softmax(logits, -1)[n - 1:-1].gather(1, targets[:, None])[:, 0]


@pytest.mark.parametrize("variant", ["gqa", "mha"])
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_h0_equals_transformers_generate(variant, batch, photos, request):
    engine = request.getfixturevalue("llava_engine" if variant == "gqa" else "llava_mha_engine")
    hf = request.getfixturevalue("llava_hf" if variant == "gqa" else "llava_mha_hf")
    prompts = [PROMPT, LONG_PROMPT, "Is there a person?"][:batch]
    images = photos[:batch] if batch > 1 else photos[3:4]
    requests = [Request(p, image=im, sampling=GREEDY, max_new_tokens=NEW) for p, im in zip(prompts, images)]
    completions = engine.generate(requests)
    for completion, image in zip(completions, images):
        assert completion.error is None and completion.h == 0.0
        assert completion.token_ids == hf_greedy(hf, engine, completion, image, NEW)


def test_two_path_greedy_equals_the_two_forward_baseline(llava_engine, llava_baseline, photos):
    requests = [Request(PROMPT, image=im, h=h, sampling=GREEDY, max_new_tokens=NEW)
                for im, h in zip(photos, [0.3, 0.8, 1.0, 0.5])]
    requests[3].prompt = LONG_PROMPT
    ours = llava_engine.generate(requests)
    theirs = llava_baseline.generate(requests)
    for a, b in zip(ours, theirs):
        assert a.h == b.h
        assert a.token_ids == b.token_ids
        assert a.finish_reason == b.finish_reason
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_recorded_cond_logprobs_equal_a_full_forward(llava_engine, llava_hf, photos, fresh_seed):
    # sampled at temperature 0.7: cond_logprobs must still be the temperature-1 log-softmax
    sampling = SamplingParams(temperature=0.7, top_k=50)
    requests = [Request(PROMPT, image=im, h=h, sampling=sampling, max_new_tokens=NEW, seed=fresh_seed + i)
                for i, (im, h) in enumerate(zip(photos[:3], [0.0, 0.6, 0.9]))]
    for completion, image in zip(llava_engine.generate(requests), photos):
        assert len(completion.cond_logprobs) == len(completion.token_ids) > 0
        expected = full_forward_cond_logprobs(llava_hf, llava_engine, completion, image)
        torch.testing.assert_close(torch.tensor(completion.cond_logprobs), expected, atol=1e-4, rtol=0)
        assert all(lp <= 1e-6 for lp in completion.logprobs)


def test_sampled_tokens_depend_on_seed_not_on_batch(llava_engine, photos, fresh_seed):
    sampling = SamplingParams(temperature=1.0)
    target = Request(PROMPT, image=photos[0], h=0.5, sampling=sampling, max_new_tokens=6, seed=fresh_seed)
    alone = llava_engine.generate([target])[0]
    others = [Request(LONG_PROMPT, image=im, h=0.4, sampling=sampling, max_new_tokens=3, seed=i)
              for i, im in enumerate(photos[1:])]
    crowded = llava_engine.generate(others[:1] + [target] + others[1:])[1]
    assert crowded.token_ids == alone.token_ids
    other_seed = Request(PROMPT, image=photos[0], h=0.5, sampling=sampling, max_new_tokens=6, seed=fresh_seed + 1)
    assert llava_engine.generate([other_seed])[0].token_ids != alone.token_ids


def test_bad_requests_fail_alone_with_a_clear_error(llava_engine, photos, tmp_path):
    garbage = tmp_path / "broken.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    good = Request(PROMPT, image=photos[0], h=0.5, sampling=GREEDY, max_new_tokens=4)
    requests = [
        Request(PROMPT, image=str(garbage), sampling=GREEDY),
        good,
        Request(PROMPT, image=str(tmp_path / "missing.png"), sampling=GREEDY),
        Request(" ".join(["word"] * 400), image=photos[1], sampling=GREEDY),  # longer than max_model_len
        Request(PROMPT, image=photos[1], h="gaussian:oops", sampling=GREEDY),
    ]
    out = llava_engine.generate(requests)
    assert [c.finish_reason for c in out] == ["error", "length", "error", "error", "error"]
    assert "broken.jpg" in out[0].error and "missing.png" in out[2].error
    assert "max_model_len" in out[3].error and "h must be a number in [0, 1]" in out[4].error
    assert out[1].error is None and out[1].token_ids == llava_engine.generate([good])[0].token_ids


def test_prefix_sharing_computes_each_distinct_prompt_once(llava_engine, make_engine, tiny_llava_dir, photos):
    # two pictures, each asked twice; two of the four responses have an unconditional path
    requests = [Request(PROMPT, image=photos[i % 2], h=h, sampling=GREEDY, max_new_tokens=3)
                for i, h in enumerate([0.0, 0.5, 0.7, 0.0])]
    cond_len = len(llava_engine.prompts.build(PROMPT, photos[0]).cond_ids)
    uncond_len = len(llava_engine.prompts.build(PROMPT, photos[0]).uncond_ids)
    before = llava_engine.stats["prefill_tokens"]
    shared = llava_engine.generate(requests)
    # each picture's prompt once, the instruction-only prompt once, and the last token of
    # each of the three fully cached prompts recomputed (its logits start the response)
    assert llava_engine.stats["prefill_tokens"] - before == 2 * cond_len + uncond_len + 3
    unshared_engine = make_engine(tiny_llava_dir, prefix_caching=False)
    unshared = unshared_engine.generate(requests)
    assert unshared_engine.stats["prefill_tokens"] == 4 * cond_len + 2 * uncond_len
    assert [c.token_ids for c in shared] == [c.token_ids for c in unshared]


def test_chunked_prefill_and_preemption_do_not_change_outputs(tiny_llava_dir, llava_engine, make_engine, photos):
    """A 7-token prefill budget (prompts computed in chunks) and a cache so small that
    decoding must preempt and recompute: both give the roomy engine's tokens, greedy and
    sampled (a resumed response draws from the same (seed, step) stream), and its
    cond_logprobs; responses that finish at different steps included."""
    sampled = SamplingParams(temperature=1.0, top_p=0.9)
    requests = [Request(PROMPT, image=photos[i % 2], h=h, sampling=GREEDY, max_new_tokens=12)
                for i, h in enumerate([0.0, 0.5, 0.7, 0.0])]
    requests += [Request(PROMPT, image=photos[i % 2], h=h, sampling=sampled, max_new_tokens=n, seed=i)
                 for i, (h, n) in enumerate([(0.6, 12), (0.0, 7), (0.3, 12)])]
    reference = llava_engine.generate(requests)
    # 4-token blocks, 18 of them: the least the engine accepts (two paths of max_model_len)
    tight = {"block_size": 4, "max_model_len": 36, "max_kv_blocks": 18}
    for options in ({"max_num_batched_tokens": 7}, tight):
        engine = make_engine(tiny_llava_dir, **options)
        out = engine.generate(requests)
        assert [c.token_ids for c in out] == [c.token_ids for c in reference], options
        assert [c.finish_reason for c in out] == [c.finish_reason for c in reference]
        for a, b in zip(out, reference):
            torch.testing.assert_close(torch.tensor(a.cond_logprobs), torch.tensor(b.cond_logprobs),
                                       atol=1e-4, rtol=0)
        if "max_kv_blocks" in options:
            assert engine.stats["preemptions"] > 0


def test_contrastive_mode_runs_the_unconditional_path_even_at_h0(llava_engine, llava_hf, photos):
    """mode="contrast" (VCD): token = argmax over {l_c >= max l_c + log beta} of
    (1 + alpha) l_c - alpha l_u, checked step by step against teacher-forced transformers."""
    sampling = SamplingParams(temperature=0.0, mode="contrast", alpha=1.0, beta=0.1)
    completion = llava_engine.generate([Request(PROMPT, image=photos[2], sampling=sampling, max_new_tokens=5)])[0]
    prompt = llava_engine.prompts.build(PROMPT, photos[2])
    tokens = completion.token_ids
    with torch.no_grad():
        cond = llava_hf(input_ids=torch.tensor([prompt.cond_ids + tokens]), pixel_values=prompt.pixel_values).logits[0]
        uncond = llava_hf(input_ids=torch.tensor([prompt.uncond_ids + tokens])).logits[0]
    for i, token in enumerate(tokens):
        l_c, l_u = cond[len(prompt.cond_ids) - 1 + i], uncond[len(prompt.uncond_ids) - 1 + i]
        kept = l_c >= l_c.max() + torch.log(torch.tensor(0.1))
        expected = torch.where(kept, 2 * l_c - l_u, -torch.inf).argmax()
        assert token == int(expected)


def test_cpu_attention_gives_the_references_tokens(llava_engine, photos):
    """The CPU attention (values read from the cache in place, SDPA prefill) is not bit-identical
    to the reference's gather + einsum; the tokens must still be the same. Sampled two-path
    pairs (h 0 and > 0, temperature 1), once with each; fixed seeds, so a pass is reproducible.
    This tiny random model's tokens hardly depend on attention (a 1.5x error in the scale left
    them unchanged), so the recorded log-probs carry the check: they differ by ~1e-6 between the
    two, and a 2% scale error moves them by ~1e-3."""
    from judgefree.kernels.paged_attention_ref import paged_decode_attention_ref, paged_prefill_attention_ref

    sampling = SamplingParams(temperature=1.0, ignore_eos=True)
    requests = [Request(PROMPT, image=im, h=h, sampling=sampling, max_new_tokens=12, seed=100 + i)
                for i, im in enumerate(photos) for h in (0.0, 0.6)]
    runner = llava_engine.runner
    ours = runner.attention_ops
    assert ours.decode.__module__.endswith("paged_attention_torch")
    out = llava_engine.generate(requests)
    runner.attention_ops = ours._replace(decode=paged_decode_attention_ref, prefill=paged_prefill_attention_ref)
    try:
        ref = llava_engine.generate(requests)
    finally:
        runner.attention_ops = ours
    for a, b in zip(out, ref):
        assert a.error is None and a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.cond_logprobs), torch.tensor(b.cond_logprobs), atol=1e-5, rtol=0)
